"""`LocalRunner`: runs instances in one asyncio process, durably.

One *actor* (a task with a mailbox) per instance that has work to do, found
through a registry by id. Everything that changes an instance — a step's
result, an event, a timer, a cancel — is a message to its actor, applied one
at a time, in order: engine decision, then the write to storage, then the
commands (start steps, stop steps). Nothing runs before the state that
caused it is stored.

An actor ends as soon as its instance has nothing running: waiting instances
hold no task and no memory, only their stored record. A message for an
instance without an actor starts one, which reads the instance back from
storage. Durable timers live in the stored instances; one timer loop asks the
storage what is due and tells the actors.

**Ownership.** Several runners (processes) may share one storage. Each
registers in it and renews a lease; an actor first *claims* its instance (an
atomic update that succeeds only if no live runner owns it), and every write
it makes is conditional on still owning it. A work loop claims instances
that need a runner and have no owner (new ones written by clients, those of
runners that died) and picks up events and cancel requests that clients
wrote for instances this runner owns; it wakes when the storage reports
another process's write. A heartbeat loop renews the lease and reaps runners
whose lease lapsed (or, on this host, whose process is gone), which releases
their instances to be claimed again, so their active steps run again here
(steps run at least once). A runner that cannot renew its lease in time
stops every actor before another runner may take its instances over.
Messages for an instance that another live runner owns are written as a
client would (`StorageWriter`) and left to that runner.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from hephaestus.core import engine
from hephaestus.core.commands import Command, RunStep, StopSteps
from hephaestus.core.definition import (
    BaseWorkflow,
    WorkflowDefinition,
)
from hephaestus.core.engine import Advance
from hephaestus.core.facts import TimerScheduled
from hephaestus.core.instance import Instance
from hephaestus.core.keys import validate_id
from hephaestus.core.step import Step
from hephaestus.errors import (
    AlreadyRunningError,
    ConcurrencyError,
    HephaestusError,
    OwnershipError,
    StorageError,
    WorkflowDefinitionError,
)
from hephaestus.runners._shell import (
    Clock,
    DefinitionCache,
    StepRun,
    check_event,
    new_instance,
    report,
    run_attempt,
    step_key,
    utc_now,
)
from hephaestus.runners.base import TimerHandle
from hephaestus.runners.client import StorageWriter
from hephaestus.storage.base import RunnerRecord, Storage
from hephaestus.telemetry import lifecycle

__all__ = ["LocalRunner"]

logger = logging.getLogger("hephaestus.runner.local")

#: How often an actor re-reads and re-applies a message after another writer got there first.
_CONFLICT_RETRIES = 5
#: How often an actor that crashed in runner code is restarted before its instance is failed.
_MAX_RESTARTS = 3
#: How long an actor first waits after a storage failure, and at most, in seconds.
_OUTAGE_FIRST_DELAY = 0.05
_OUTAGE_MAX_DELAY = 2.0
#: How many instances one claim takes.
_CLAIM_BATCH = 100
#: Due instances one timer batch claims and fires, and how many batches fire at once.
_FIRE_BATCH = 500
_FIRE_IN_FLIGHT = 2
#: Every how many heartbeats a runner releases instances of owners that are not registered.
_ORPHAN_SWEEP_BEATS = 30
#: The least time between two looks for work written by other processes, in seconds.
_WORK_LOOK_GAP = 0.002


def _runner_id(host: str) -> str:
    """A runner's id: its host and process, and a random part that no restart repeats."""
    return f"{host}:{os.getpid()}:{secrets.token_hex(3)}"


def _alive(pid: int) -> bool:
    """Whether a process with this id runs on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True


# --- messages ----------------------------------------------------------------------------


@dataclass(slots=True)
class _Begin:
    commands: list[Command]


@dataclass(slots=True)
class _StepDone:
    step: str
    attempt: int
    run: StepRun


@dataclass(slots=True)
class _Resume:
    event: str
    step: str | None
    data: dict[str, Any] | None
    reply: asyncio.Future[None]


@dataclass(slots=True)
class _Cancel:
    reply: asyncio.Future[None]


@dataclass(slots=True)
class _Schedule:
    step: str
    delay: float
    event: str | None
    reply: asyncio.Future[TimerHandle]


@dataclass(slots=True)
class _CancelTimer:
    timer_id: str
    reply: asyncio.Future[None]


@dataclass(slots=True)
class _FireTimers:
    pass


@dataclass(slots=True)
class _Recover:
    """Run the active steps of an instance just claimed, and apply its new inbox items."""


@dataclass(slots=True)
class _Drain:
    """Apply what clients wrote to the inbox of an instance this runner owns."""


_Message = (
    _Begin
    | _StepDone
    | _Resume
    | _Cancel
    | _Schedule
    | _CancelTimer
    | _FireTimers
    | _Recover
    | _Drain
)


class _Lost(Exception):
    """Another runner owns the instance now: this actor must stop and hand over."""


def _replies(message: _Message) -> asyncio.Future[Any] | None:
    return getattr(message, "reply", None)


# --- the actor ---------------------------------------------------------------------------


@dataclass(eq=False)
class _Actor:
    """Owns one instance while it has work; applies its messages one at a time."""

    id: str
    runner: LocalRunner
    instance: Instance | None = None
    mailbox: deque[_Message] = field(default_factory=deque)
    running: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    waiter: asyncio.Future[None] | None = None
    task: asyncio.Task[None] | None = None
    #: Whether this runner owns the instance (claimed, or created it); an actor claims first.
    owned: bool = False
    restarts: int = 0
    #: Storage failures in a row; each waits longer before the next try.
    outages: int = 0
    definition: WorkflowDefinition = field(init=False)
    #: A step the actor runs itself, right after the current message (see `_carry_out`).
    inline: RunStep | None = None
    #: The step running inline, while it runs.
    running_inline: str | None = None
    interrupted: bool = False
    #: Looks at the stored inbox for a cancel request, while a step runs inline.
    peeks: set[asyncio.Task[None]] = field(default_factory=set)

    def tell(self, message: _Message) -> None:
        self.mailbox.append(message)
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        elif self.running_inline is not None and isinstance(message, _Cancel):
            self._interrupt()
        elif self.running_inline is not None and isinstance(message, _Drain):
            # A client wrote to the inbox; if it asks for a cancel, the step stops now too.
            peek = asyncio.create_task(self._interrupt_if_cancel_requested())
            self.peeks.add(peek)
            peek.add_done_callback(self.peeks.discard)

    def _interrupt(self) -> None:
        """Stop the step the actor runs itself, so that a cancel applies now."""
        if not self.interrupted:
            self.interrupted = True
            assert self.task is not None
            self.task.cancel()

    async def _interrupt_if_cancel_requested(self) -> None:
        try:
            stored = await self.runner._storage_or_raise().get(self.id)
        except Exception:
            return  # the drain itself applies the request after the step
        if self.running_inline is not None and any(i.kind == "cancel" for i in stored.inbox):
            self._interrupt()

    async def run(self) -> None:
        runner = self.runner
        try:
            while True:
                try:
                    await self._loop()
                    return
                except asyncio.CancelledError:
                    raise
                except _Lost:
                    logger.warning(
                        "instance %s is owned by another runner now; runner %s stops running it",
                        self.id,
                        runner.id,
                    )
                    self._stop_steps(frozenset(self.running))
                    self.inline = None
                    self.owned = False
                    await self._hand_over()
                    return
                except (StorageError, OSError) as exc:
                    if not await self._ride_out(exc):
                        return
                except Exception as exc:
                    if not await self._restart_after(exc):
                        return
        finally:
            self._stop_steps(frozenset(self.running))
            if runner._actors.get(self.id) is self:
                del runner._actors[self.id]
            for message in self.mailbox:
                reply = _replies(message)
                if reply is not None and not reply.done():
                    reply.set_exception(
                        StorageError(f"instance {self.id}: the runner stopped before replying")
                    )
            self.mailbox.clear()

    async def _loop(self) -> None:
        runner = self.runner
        try:
            if not self.owned:
                claimed = await runner._storage_or_raise().claim(runner.id, instance_id=self.id)
                if not claimed:
                    await self._hand_over()  # finished, or another live runner owns it
                    return
                self.instance, self.owned = claimed[0], True
                self.mailbox.appendleft(_Recover())
            assert self.instance is not None
            self.definition = runner._definitions.get(self.instance)
        except StorageError:
            raise  # ridden out by `run`
        except HephaestusError as exc:
            self._fail_replies(exc)
            return
        while True:
            if self.inline is not None:
                await self._run_inline(self.inline)
                continue
            if not self.mailbox:
                if not self.running:
                    return  # nothing to do: the instance lives on in storage only
                self.waiter = asyncio.get_running_loop().create_future()
                await self.waiter
                self.waiter = None
                continue
            await self._handle(self.mailbox.popleft())

    async def _run_inline(self, command: RunStep) -> None:
        """Run a lone step in the actor's own task: no task to create, no message to wake for.

        Only a step that is all the instance is doing runs here (see
        `_carry_out`); a cancel arriving meanwhile interrupts it.
        """
        self.inline = None
        assert self.instance is not None
        if not self.runner._lease_holds():
            self.runner._rejoin_soon()
            raise _Lost
        self.running_inline = command.step
        try:
            run = await run_attempt(
                self.definition, self.instance, command.step, command.attempt, self.runner._pool
            )
        except asyncio.CancelledError:
            if not self.interrupted:
                raise
            return  # cancelled by `cancel`: the step's result is void
        finally:
            self.running_inline = None
            if self.interrupted:
                self.interrupted = False
                assert self.task is not None
                self.task.uncancel()
        self.mailbox.append(_StepDone(command.step, command.attempt, run))

    def _fail_replies(self, exc: BaseException) -> None:
        if isinstance(exc, WorkflowDefinitionError):
            logger.error("instance %s cannot run: %s", self.id, exc)
        while self.mailbox:
            message = self.mailbox.popleft()
            reply = _replies(message)
            if reply is not None and not reply.done():
                reply.set_exception(exc)
            if isinstance(message, _FireTimers):
                self.runner._timer_fired(self.id, wake=False)  # try again at the next poll

    async def _restart_after(self, exc: Exception) -> bool:
        """Recover from a bug in runner code: reload from storage and go on, or give up."""
        self.restarts += 1
        logger.exception("actor of instance %s crashed (restart %d)", self.id, self.restarts)
        self._stop_steps(frozenset(self.running))
        self.inline = None
        if self.restarts > _MAX_RESTARTS:
            try:
                self.instance = await self.runner._storage_or_raise().get(self.id)
            except Exception as load_error:
                self._fail_replies(load_error)
                return False
            reason = f"the runner failed {self.restarts} times on this instance: {exc!r}"
            try:
                await self._apply(lambda inst: engine.fail(inst, reason, now=self.runner._now()))
            finally:
                self._fail_replies(
                    StorageError(f"instance {self.id} failed in the runner: {exc!r}")
                )
            return False
        self.owned = False  # claim (and so read) it again, then run its active steps again
        return True

    async def _ride_out(self, exc: Exception) -> bool:
        """The storage failed: answer waiting callers now, then retry until it answers.

        A write that failed may still have committed, so the actor forgets what
        it knew: it claims (and so reads) the instance again and runs its active
        steps that are not running here, exactly as after a crash.
        """
        self.outages += 1
        failure = exc if isinstance(exc, StorageError) else StorageError(str(exc))
        kept: deque[_Message] = deque()
        for message in self.mailbox:
            reply = _replies(message)
            if reply is None:
                kept.append(message)
            elif not reply.done():
                reply.set_exception(failure)
        self.mailbox = kept
        if self.instance is None and not self.mailbox:
            return False  # it never held the instance and has nothing left to do
        delay = min(_OUTAGE_FIRST_DELAY * 2 ** min(self.outages - 1, 10), _OUTAGE_MAX_DELAY)
        logger.warning(
            "instance %s: the storage failed (%s); trying again in %.2fs", self.id, exc, delay
        )
        await asyncio.sleep(delay)
        self.inline = None
        self.owned = False
        return True

    async def _hand_over(self) -> None:
        """Serve the queued messages as a client would: the instance's owner does the rest."""
        writer = self.runner._writer
        while self.mailbox:
            message = self.mailbox.popleft()
            if isinstance(message, _Resume):
                await self._serve(
                    message.reply,
                    writer.send_event(self.id, message.event, message.step, message.data),
                )
            elif isinstance(message, _Cancel):
                await self._serve(message.reply, writer.cancel(self.id))
            elif isinstance(message, _Schedule):
                await self._serve(
                    message.reply,
                    writer.add_timer(self.id, message.step, message.delay, message.event),
                )
            elif isinstance(message, _CancelTimer):
                await self._serve(message.reply, writer.cancel_timer(self.id, message.timer_id))
            elif isinstance(message, _FireTimers):
                self.runner._timer_fired(self.id, wake=False)
            elif isinstance(message, _Drain):
                self.runner._draining.discard(self.id)

    async def _serve(self, reply: asyncio.Future[Any], work: Any) -> None:
        try:
            result = await work
        except Exception as exc:
            if not reply.done():
                reply.set_exception(exc)
            return
        if not reply.done():
            reply.set_result(result)

    # -- applying messages --

    async def _apply(
        self,
        decide: Callable[[Instance], Advance],
        *,
        exception: BaseException | None = None,
    ) -> Advance:
        """Decide with the engine, persist, carry out the commands, then report the facts.

        If another writer changed the instance first, re-read it and decide again.
        `exception` is what the attempt whose result is applied raised, if it did.
        """
        storage = self.runner._storage_or_raise()
        for _ in range(_CONFLICT_RETRIES):
            assert self.instance is not None
            before = self.instance
            advance = decide(before)
            if advance.instance is before:
                return advance
            try:
                await storage.put(advance.instance, before.revision, owner=self.runner.id)
                self.outages = 0
            except OwnershipError:
                raise _Lost from None
            except ConcurrencyError:
                # A client wrote (an event, a cancel request): read it and decide again.
                self.instance = await storage.get(self.id)
                continue
            self.instance = advance.instance
            self.runner._note_timers(advance.instance)
            self._carry_out(advance.commands)
            report(advance, since=before.updated_at, exception=exception)
            return advance
        raise ConcurrencyError(
            f"instance {self.id} kept changing while runner {self.runner.id} applied a "
            f"change {_CONFLICT_RETRIES} times in a row; it is retried from storage"
        )

    def _carry_out(self, commands: list[Command]) -> None:
        instance = self.instance
        assert instance is not None
        if any(isinstance(c, RunStep) for c in commands) and not self.runner._lease_holds():
            # Its lease may have lapsed (a starved or paused process): another runner may
            # take the instance over now, so no step starts here; the runner rejoins.
            self.runner._rejoin_soon()
            raise _Lost
        if (
            len(commands) == 1
            and isinstance(commands[0], RunStep)
            and self.inline is None
            and not self.running
            and len(instance.active_steps) == 1
            and not instance.waiting_steps
            and not instance.timers
        ):
            # The common linear case: the next step is all the instance does, so nothing
            # else can need the actor meanwhile except a cancel (which interrupts it).
            self.inline = commands[0]
            return
        for command in commands:
            if isinstance(command, RunStep):
                self._start_step(command.step, command.attempt)
            elif isinstance(command, StopSteps):
                self._stop_steps(command.steps)
                if self.inline is not None and self.inline.step in command.steps:
                    self.inline = None  # not started yet: it never will be

    def _start_step(self, step: str, attempt: int) -> None:
        if step in self.running or (self.inline is not None and self.inline.step == step):
            return
        assert self.instance is not None
        self.running[step] = asyncio.create_task(
            self._run_step(self.instance, step, attempt), name=f"hephaestus:{self.id}:{step}"
        )

    async def _run_step(self, instance: Instance, step: str, attempt: int) -> None:
        run = await run_attempt(self.definition, instance, step, attempt, self.runner._pool)
        self.tell(_StepDone(step, attempt, run))

    def _stop_steps(self, steps: frozenset[str]) -> None:
        for step in steps:
            task = self.running.pop(step, None)
            if task is not None:
                task.cancel()

    async def _handle(self, message: _Message) -> None:
        try:
            await self._handle_owned(message)
        except _Lost:
            if _replies(message) is not None:
                self.mailbox.appendleft(message)  # answered by `_hand_over`, as a client
            raise

    async def _handle_owned(self, message: _Message) -> None:
        now = self.runner._now
        definition = self.definition
        if isinstance(message, _StepDone):
            self.running.pop(message.step, None)
            await self._apply(
                lambda inst: engine.complete_step(
                    definition,
                    inst,
                    message.step,
                    message.run.outcome,
                    attempt=message.attempt,
                    now=now(),
                    duration=message.run.duration,
                ),
                exception=message.run.exception,
            )
        elif isinstance(message, _Resume):
            await self._reply(message.reply, self._resume(message))
        elif isinstance(message, _FireTimers):
            try:
                await self._apply(lambda inst: engine.fire_timers(definition, inst, now()))
            finally:
                self.runner._timer_fired(self.id)
        elif isinstance(message, _Begin):
            self._carry_out(message.commands)
        elif isinstance(message, _Recover):
            assert self.instance is not None
            self._carry_out(engine.recover(self.instance))
            if self.instance.has_new_commands:
                await self._drain()
        elif isinstance(message, _Drain):
            self.runner._draining.discard(self.id)
            # The client wrote after this actor last read: read first, or nothing is new.
            self.instance = await self.runner._storage_or_raise().get(self.id)
            await self._drain()
        elif isinstance(message, _Cancel):
            await self._reply(
                message.reply, self._apply(lambda inst: engine.cancel(inst, now=now()))
            )
        elif isinstance(message, _Schedule):
            await self._reply(message.reply, self._schedule(message))
        elif isinstance(message, _CancelTimer):
            await self._reply(
                message.reply,
                self._apply(lambda inst: engine.cancel_timer(inst, message.timer_id, now=now())),
            )

    async def _drain(self) -> None:
        definition = self.definition
        await self._apply(lambda inst: engine.drain_inbox(definition, inst, self.runner._now()))

    async def _reply(self, reply: asyncio.Future[Any], work: Any) -> None:
        """Run `work`; caller errors (bad event, finished instance) go back to the caller."""
        try:
            result = await work
        except _Lost:
            raise  # the message is handed over with the rest (see `_handle`)
        except StorageError as exc:
            if not reply.done():
                reply.set_exception(exc)
            raise  # the actor rides the outage out (see `run`)
        except HephaestusError as exc:
            if not reply.done():
                reply.set_exception(exc)
            return
        except Exception as exc:
            if not reply.done():
                reply.set_exception(
                    StorageError(f"instance {self.id}: the runner failed to apply this: {exc!r}")
                )
            raise
        except BaseException:
            if not reply.done():
                reply.cancel()
            raise
        if not reply.done():
            reply.set_result(None if isinstance(result, Advance) else result)

    async def _resume(self, message: _Resume) -> None:
        definition = self.definition
        await self._apply(
            lambda inst: engine.deliver(
                definition,
                inst,
                message.event,
                now=self.runner._now(),
                step=message.step,
                data=message.data,
            )
        )

    async def _schedule(self, message: _Schedule) -> TimerHandle:
        advance = await self._apply(
            lambda inst: engine.add_timer(
                self.definition,
                inst,
                message.step,
                message.delay,
                now=self.runner._now(),
                event=message.event,
            )
        )
        [scheduled] = advance.facts_of(TimerScheduled)
        timer = scheduled.timer
        return TimerHandle(self.id, timer.id, timer.step, timer.due_at)


# --- the runner --------------------------------------------------------------------------


class LocalRunner:
    """Runs workflow instances in this process, on asyncio, durably.

    - `step_threads`: size of the thread pool for sync `execute` methods.
    - `timer_poll_interval`: seconds between looks at storage for timers set by
      other processes; timers set here wake the loop at once.
    - `clock`: returns the current UTC time for the engine and timers. Tests
      pass a `hephaestus.testing.VirtualClock`, whose `advance()` also wakes
      this runner's timer loop. Leases always use the real time.
    - `lease`: seconds a runner owns its instances without renewing; renewed
      every third of it. A runner that dies is replaced within about one
      lease (at once, on the same host, when its process is gone).
    - `work_poll_interval`: the longest time work written by another process
      waits to be noticed when the storage's change signal is lost; usually
      it is noticed within milliseconds.
    - `shutdown_grace`: how long `close()` waits for steps still running: sync
      steps in threads (a thread cannot be stopped), and async steps that
      ignore their cancellation. When they end in time, the runner
      deregisters and its instances are taken over at once; otherwise
      `close()` returns anyway (it never hangs longer) and they are taken over
      when its lease lapses, so no attempt runs in two processes at once.
    """

    def __init__(
        self,
        *,
        step_threads: int | None = None,
        timer_poll_interval: float = 1.0,
        clock: Clock = utc_now,
        lease: float = 5.0,
        work_poll_interval: float = 1.0,
        shutdown_grace: float = 10.0,
    ) -> None:
        if timer_poll_interval <= 0:
            raise ValueError("timer_poll_interval must be > 0 seconds")
        if not lease > 0 or not work_poll_interval > 0:
            raise ValueError("lease and work_poll_interval must be > 0 seconds")
        self._step_threads = step_threads or min(32, (os.cpu_count() or 1) + 4)
        self._poll = timer_poll_interval
        self._now = clock
        bind = getattr(clock, "bind", None)
        if callable(bind):
            bind(self.wake_timers)
        self._lease = lease
        self._work_poll = work_poll_interval
        self._shutdown_grace = shutdown_grace
        self._host = socket.gethostname()
        self.id = _runner_id(self._host)
        self._storage: Storage | None = None
        self._writer: StorageWriter = None  # type: ignore[assignment]  # set by open()
        self._pool: ThreadPoolExecutor | None = None
        self._actors: dict[str, _Actor] = {}
        self._definitions = DefinitionCache()
        self._loops: list[asyncio.Task[None]] = []
        self._heartbeat: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._work = asyncio.Event()
        self._next_wake: datetime | None = None
        self._firing: set[str] = set()
        self._draining: set[str] = set()
        self._rejoin_asked = asyncio.Event()
        self._started = 0.0
        #: Real time until which this runner's lease surely holds (renewal sent before it).
        self._lease_holds_until = 0.0

    # -- lifecycle --

    async def open(self, storage: Storage) -> None:
        if self._storage is not None:
            raise StorageError("this LocalRunner is already open; one runner serves one app")
        self._storage = storage
        self._writer = StorageWriter(storage, self._definitions, self._now)
        self._wake = asyncio.Event()
        self._work = asyncio.Event()
        self._rejoin_asked = asyncio.Event()
        self._pool = ThreadPoolExecutor(self._step_threads, thread_name_prefix="hephaestus-step")
        self._started = time.time()
        await self._register()
        await self._reap()
        claimed = await self._claim_work()
        if claimed:
            logger.info("runner %s took over %d instance(s) at open", self.id, claimed)
        self._loops = [
            asyncio.create_task(self._timer_loop(), name="hephaestus:timers"),
            asyncio.create_task(self._work_loop(), name="hephaestus:work"),
        ]
        self._heartbeat = asyncio.create_task(self._heartbeat_loop(), name="hephaestus:heartbeat")
        lifecycle.runner_init(type(self).__name__, type(storage).__name__)

    async def close(self) -> None:
        # The heartbeat goes on until the steps' threads are done: the lease must hold
        # while they still run, or another runner would run the same attempts meanwhile.
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        self._loops = []
        actors_done = await self._stop_actors()
        threads_done = await self._stop_threads() and actors_done
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            await asyncio.gather(self._heartbeat, return_exceptions=True)
            self._heartbeat = None
        storage, self._storage = self._storage, None
        if storage is not None and not threads_done:
            logger.warning(
                "runner %s closes with steps still running after %.1fs; its instances "
                "are taken over when its lease lapses (in %.1fs), not before",
                self.id,
                self._shutdown_grace,
                self._lease,
            )
        elif storage is not None:
            try:
                await storage.remove_runner(self.id)  # hand its instances over at once
            except (HephaestusError, OSError) as exc:
                logger.warning(
                    "runner %s could not deregister (%s); its lease lapses in %.1fs",
                    self.id,
                    exc,
                    self._lease,
                )

    @property
    def active_instance_ids(self) -> frozenset[str]:
        """Ids of instances that currently hold an actor (waiting instances never do)."""
        return frozenset(self._actors)

    async def wait_idle(self, timeout: float | None = None) -> None:
        """Wait until no instance has an actor (everything finished or parked)."""
        async with asyncio.timeout(timeout):
            while self._actors:
                await asyncio.gather(
                    *(a.task for a in list(self._actors.values()) if a.task is not None),
                    return_exceptions=True,
                )

    # -- the runner protocol --

    async def start_instance(
        self,
        workflow: type[BaseWorkflow],
        context: Mapping[str, Any] | None,
        *,
        id: str,
        version: int | None = None,
        telemetry_metadata: Mapping[str, Any] | None = None,
    ) -> str:
        storage = self._storage_or_raise()
        advance = new_instance(
            workflow,
            context,
            id=id,
            version=version,
            telemetry_metadata=telemetry_metadata,
            now=self._now(),
        )
        existing = self._actors.get(id)
        if existing is not None and existing.task is not None:
            if existing.instance is not None and existing.instance.status.is_active:
                raise AlreadyRunningError(
                    f"instance {id} is already {existing.instance.status.value}; wait for it "
                    "to finish or cancel it before starting it again"
                )
            await asyncio.gather(existing.task, return_exceptions=True)
        await storage.put(advance.instance, None, owner=self.id)
        lifecycle.workflow_start(advance.instance, runner=type(self).__name__)
        self._spawn(id, advance.instance).tell(_Begin(advance.commands))
        report(advance)
        return id

    async def resume(
        self,
        id: str,
        event: str,
        *,
        step: str | type[Step] | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> None:
        validate_id(id)
        check_event(id, event)
        checked = engine.check_event_data(id, event, data)
        reply: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._tell(id, _Resume(event, step_key(step), checked, reply))
        await reply

    async def schedule_resume(
        self, id: str, step: str | type[Step], delay: float, *, event: str | None = None
    ) -> TimerHandle:
        validate_id(id)
        engine.check_delay(delay)
        key = step_key(step)
        assert key is not None
        reply: asyncio.Future[TimerHandle] = asyncio.get_running_loop().create_future()
        self._tell(id, _Schedule(key, delay, event, reply))
        return await reply

    async def cancel_timer(self, handle: TimerHandle) -> None:
        reply: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._tell(handle.instance_id, _CancelTimer(handle.timer_id, reply))
        await reply

    async def cancel(self, id: str) -> None:
        validate_id(id)
        reply: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._tell(id, _Cancel(reply))
        await reply

    async def retry(self, id: str) -> None:
        """Run a failed instance again from its failed steps (see `engine.retry`).

        The retried instance is written like a client writes it, then claimed
        here and its steps start at once; another runner may claim it first.
        """
        validate_id(id)
        storage = self._storage_or_raise()
        existing = self._actors.get(id)
        finished = existing is not None and (
            existing.instance is None or existing.instance.status.is_final
        )
        if existing is not None and existing.task is not None and finished:
            # The actor of the failed run is on its way out: let it go before claiming.
            await asyncio.gather(existing.task, return_exceptions=True)
        await self._writer.retry(id)  # refuses an active instance, whatever its actor does
        for instance in await storage.claim(self.id, instance_id=id):
            if instance.id not in self._actors:
                self._spawn(instance.id, instance).tell(_Recover())

    # -- internals --

    def _storage_or_raise(self) -> Storage:
        if self._storage is None:
            raise StorageError(
                "the runner is not open; use it through `async with Hephaestus(...)`"
            )
        return self._storage

    def _spawn(self, instance_id: str, instance: Instance | None = None) -> _Actor:
        """An actor for the instance; given `instance`, this runner owns it already."""
        actor = _Actor(instance_id, self, instance, owned=instance is not None)
        self._actors[instance_id] = actor
        actor.task = asyncio.create_task(actor.run(), name=f"hephaestus:{instance_id}")
        return actor

    def _tell(self, instance_id: str, message: _Message) -> None:
        self._storage_or_raise()
        actor = self._actors.get(instance_id)
        if actor is None:
            actor = self._spawn(instance_id)
        actor.tell(message)

    # -- ownership --

    async def _register(self) -> None:
        now = time.time()
        record = RunnerRecord(
            self.id, self._host, os.getpid(), self._started, now, now + self._lease
        )
        await self._storage_or_raise().register_runner(record)
        self._lease_holds_until = now + self._lease

    async def _reap(self, *, orphans: bool = False) -> None:
        """Remove runners whose lease lapsed, or whose process on this host is gone."""
        storage = self._storage_or_raise()
        reaped = await storage.reap_runners(time.time(), orphans=orphans)
        for record in await storage.runners():
            if record.id != self.id and record.host == self._host and not _alive(record.pid):
                await storage.remove_runner(record.id)
                reaped.append(record.id)
        if reaped:
            logger.warning(
                "runner(s) %s stopped renewing their lease; their instances are released",
                ", ".join(reaped),
            )
            self._work.set()

    async def _heartbeat_loop(self) -> None:
        """Renew the lease; stop every actor before the lease could lapse unrenewed.

        A renewal waits at most a sixth of the lease; one that fails is tried
        again a twelfth of the lease later. Before each try, a runner whose
        lease would lapse before that try could answer stops its actors and
        rejoins under a new id (so a hung database cannot keep it running steps
        past its lease): with the default timings, after two failed renewals.
        """
        storage = self._storage_or_raise()
        every = self._lease / 3
        patience = every / 2
        next_try = time.time() + every
        beats = 0
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, next_try - time.time())):
                    await self._rejoin_asked.wait()
            if self._rejoin_asked.is_set() or (
                self._actors and time.time() + patience >= self._lease_holds_until
            ):
                self._rejoin_asked.clear()
                await self._rejoin_or_log("its lease would lapse before it could be renewed")
            sent = time.time()
            next_try = sent + every / 4  # unless the renewal below goes through
            try:
                async with asyncio.timeout(patience):
                    renewed = await storage.renew_runner(self.id, sent, sent + self._lease)
            except TimeoutError:
                logger.warning("runner %s: renewing its lease took over %.2fs", self.id, patience)
                continue
            except Exception as exc:
                logger.warning("runner %s could not renew its lease: %s", self.id, exc)
                continue
            next_try = sent + every
            if renewed:
                self._lease_holds_until = sent + self._lease
            else:  # reaped while it could not renew: others may run its instances
                await self._rejoin_or_log("another runner found its lease lapsed")
            beats += 1
            try:
                await self._reap(orphans=beats % _ORPHAN_SWEEP_BEATS == 0)
            except Exception as exc:
                logger.warning("runner %s could not reap lapsed runners: %s", self.id, exc)

    def _lease_holds(self) -> bool:
        """Whether this runner's lease surely still holds: then it may start a step."""
        return time.time() < self._lease_holds_until

    def _rejoin_soon(self) -> None:
        """An actor found the lease over: the heartbeat rejoins at once."""
        self._rejoin_asked.set()

    async def _rejoin_or_log(self, why: str) -> None:
        try:
            await self._rejoin(why)
        except Exception as exc:
            logger.warning("runner %s could not register again: %s", self.id, exc)

    async def _rejoin(self, why: str) -> None:
        """Stop every actor and register under a new id.

        The old registration is left to lapse, not removed: a sync step's
        thread cannot be stopped, and releasing its instance at once would let
        another runner run the same attempt while that thread still does.
        """
        logger.error(
            "runner %s stops all %d of its actors: %s; their instances run again "
            "where they are claimed next",
            self.id,
            len(self._actors),
            why,
        )
        await self._stop_actors()
        self.id = _runner_id(self._host)
        self._lease_holds_until = 0.0
        await self._register()

    async def _stop_threads(self) -> bool:
        """Let sync steps still running in threads end (up to `shutdown_grace`); all ended?"""
        pool, self._pool = self._pool, None
        if pool is None:
            return True
        pool.shutdown(wait=False, cancel_futures=True)
        # A thread cannot be stopped: wait for it, in a thread, so that the loop does not.
        waiter = threading.Thread(target=pool.shutdown, name="hephaestus:close", daemon=True)
        waiter.start()
        deadline = time.monotonic() + self._shutdown_grace
        while waiter.is_alive() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return not waiter.is_alive()

    async def _stop_actors(self) -> bool:
        """Cancel every actor; wait for them up to `shutdown_grace`. Did they all stop?

        An async step that swallows its cancellation keeps its actor busy: it is
        left behind (and named in the log) rather than waited for forever.
        """
        tasks = {actor.task for actor in list(self._actors.values()) if actor.task is not None}
        for task in tasks:
            task.cancel()
        stuck: set[asyncio.Task[None]] = set()
        if tasks:
            _, stuck = await asyncio.wait(tasks, timeout=self._shutdown_grace)
        for task in stuck:
            logger.warning(
                "%s still runs %.1fs after it was cancelled (a step ignores cancellation); "
                "it is left behind",
                task.get_name(),
                self._shutdown_grace,
            )
        self._actors.clear()
        self._firing.clear()
        self._draining.clear()
        return not stuck

    async def _claim_work(self) -> int:
        """Take unowned instances that need a runner; tell actors of inbox news. How many taken."""
        storage = self._storage_or_raise()
        taken = 0
        while True:
            claimed = await storage.claim(self.id, limit=_CLAIM_BATCH)
            for instance in claimed:
                if instance.id in self._actors:
                    continue
                self._spawn(instance.id, instance).tell(_Recover())
            taken += len(claimed)
            if len(claimed) < _CLAIM_BATCH:
                break
        for instance_id in await storage.commands_for(self.id, _CLAIM_BATCH):
            if instance_id not in self._draining:
                self._draining.add(instance_id)
                self._tell(instance_id, _Drain())
        return taken

    async def _work_loop(self) -> None:
        """Claim work written by other processes as soon as the storage says something changed."""
        storage = self._storage_or_raise()
        while True:
            self._work.clear()
            try:
                await self._claim_work()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if isinstance(exc, StorageError):  # an outage: one line, not a traceback
                    logger.warning("runner %s could not look for work: %s", self.id, exc)
                else:
                    logger.exception("runner %s could not look for work; trying again", self.id)
                await asyncio.sleep(min(self._work_poll, 1.0))
                continue
            changed = asyncio.ensure_future(storage.wait_for_changes(self._work_poll))
            poked = asyncio.ensure_future(self._work.wait())
            try:
                await asyncio.wait((changed, poked), return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in (changed, poked):
                    waiter.cancel()
                await asyncio.gather(changed, poked, return_exceptions=True)
            # At most one look per few milliseconds, however busy the other processes are.
            await asyncio.sleep(_WORK_LOOK_GAP)

    def _note_timers(self, instance: Instance) -> None:
        """Wake the timer loop early if `instance` now has a timer due before its next look."""
        due = instance.next_timer_at if instance.status.is_active else None
        if due is not None and (self._next_wake is None or due < self._next_wake):
            self._next_wake = due
            self._wake.set()

    def wake_timers(self) -> None:
        """Look for due timers now, not at the next poll (the clock moved, say)."""
        self._wake.set()

    def _timer_fired(self, instance_id: str, *, wake: bool = True) -> None:
        self._firing.discard(instance_id)
        if wake:
            self._wake.set()

    async def _fire(self, due: list[str]) -> None:
        """Fire the timers of `due` instances (already in `_firing`): those without an actor
        are read (and claimed, if no runner owns them) in one transaction, not one each, and
        fired here in a batch (see `_fire_taken`); the others through their actors. An id
        this call could not hand on leaves `_firing`, so the next look fires it."""
        handed: set[str] = set()
        try:
            idle = [instance_id for instance_id in due if instance_id not in self._actors]
            storage = self._storage_or_raise()
            taken = await storage.claim(self.id, instance_ids=idle) if idle else []
            handed = await self._fire_taken([i for i in taken if i.id not in self._actors])
            for instance in taken:
                if instance.id not in self._actors and instance.id not in handed:
                    self._spawn(instance.id, instance).tell(_Recover())
            for instance_id in due:
                if instance_id not in handed:
                    self._tell(instance_id, _FireTimers())  # an actor claims any not taken
                    handed.add(instance_id)
        finally:
            for instance_id in due:
                if instance_id not in handed:
                    self._firing.discard(instance_id)

    async def _fire_logged(self, due: list[str]) -> None:
        try:
            await self._fire(due)
        except StorageError as exc:
            logger.warning("the timer loop could not fire timers (%s); trying again", exc)
        except Exception:
            logger.exception("the timer loop failed to fire timers; trying again")

    async def _fire_taken(self, taken: list[Instance]) -> set[str]:
        """Fire the due timers of instances just claimed, without an actor each: decide with
        the engine, write them all at once (they share the storage's group commit), and
        start an actor only for those that now run a step. Which ones were fired here.

        An instance with anything else to do (steps to run again after a crash, inbox
        news) is left to an actor, as is one whose write fails: its actor claims it
        and reads it again.
        """
        now = self._now()
        batch: list[tuple[Instance, Advance]] = []
        for instance in taken:
            if instance.has_new_commands or engine.recover(instance):
                continue
            try:
                definition = self._definitions.get(instance)
            except HephaestusError:
                continue  # the actor reports it
            advance = engine.fire_timers(definition, instance, now)
            if advance.instance is not instance:
                batch.append((instance, advance))
        if not batch:
            return set()
        storage = self._storage_or_raise()
        written = await asyncio.gather(
            *(storage.put(a.instance, i.revision, owner=self.id) for i, a in batch),
            return_exceptions=True,
        )
        fired: set[str] = set()
        for (before, advance), failure in zip(batch, written, strict=True):
            if isinstance(failure, BaseException):
                if not isinstance(failure, Exception):
                    raise failure
                continue  # its actor tries again from storage
            instance_id = before.id
            fired.add(instance_id)
            self._firing.discard(instance_id)
            self._note_timers(advance.instance)
            report(advance, since=before.updated_at)
            if advance.commands and instance_id not in self._actors:
                self._spawn(instance_id, advance.instance).tell(_Begin(advance.commands))
        self._wake.set()  # more may be due: look again at once
        return fired

    async def _timer_loop(self) -> None:
        """Look for due timers and fire them, a batch at a time, until cancelled.

        Up to `_FIRE_IN_FLIGHT` batches fire at once: while one is written, the next is
        read and decided, so the database and this process work at the same time.
        """
        batches: set[asyncio.Task[None]] = set()
        try:
            await self._look_for_timers(batches)
        finally:
            for task in batches:
                task.cancel()
            await asyncio.gather(*batches, return_exceptions=True)

    async def _look_for_timers(self, batches: set[asyncio.Task[None]]) -> None:
        storage = self._storage_or_raise()
        while True:
            # Cleared before looking, not after: a timer set while storage is being asked
            # (and perhaps missed by the answer) must still wake the next sleep at once.
            self._wake.clear()
            self._next_wake = None
            try:
                now = self._now()
                # Those being fired are due until written: ask for enough besides them.
                limit = _FIRE_BATCH + len(self._firing)
                due = await storage.due_timers(now, limit, runner_id=self.id)
                fresh = [i for i in due if i not in self._firing][:_FIRE_BATCH]
                if fresh:
                    self._firing.update(fresh)
                    task = asyncio.create_task(self._fire_logged(fresh), name="hephaestus:fire")
                    batches.add(task)
                    task.add_done_callback(batches.discard)
                if len(fresh) == _FIRE_BATCH:  # more are due: read them while these fire
                    if len(batches) >= _FIRE_IN_FLIGHT:
                        await asyncio.wait(batches, return_when=asyncio.FIRST_COMPLETED)
                    continue
                upcoming = await storage.next_timer_at()
                delay = self._poll
                if upcoming is not None and upcoming > now:
                    delay = min(delay, (upcoming - now).total_seconds())
                self._next_wake = now + timedelta(seconds=delay)
            except asyncio.CancelledError:
                raise
            except StorageError as exc:
                logger.warning("the timer loop could not read timers (%s); trying again", exc)
                delay = self._poll
            except Exception:
                logger.exception("the timer loop failed; trying again in %.1fs", self._poll)
                delay = self._poll
            try:
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            except TimeoutError:
                pass
