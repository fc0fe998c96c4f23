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
storage what is due and tells the actors. On open, the runner recovers every
`running` instance from storage and runs its active steps again (steps run at
least once).
"""

from __future__ import annotations

import asyncio
import logging
import os
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
from hephaestus.core.instance import Instance, Status
from hephaestus.core.keys import validate_id
from hephaestus.core.step import Step
from hephaestus.errors import (
    AlreadyRunningError,
    ConcurrencyError,
    HephaestusError,
    StorageError,
    WorkflowDefinitionError,
)
from hephaestus.runners._shell import (
    Clock,
    DefinitionCache,
    StepRun,
    check_event,
    new_instance,
    report_advance,
    run_attempt,
    step_key,
    utc_now,
)
from hephaestus.runners.base import TimerHandle
from hephaestus.storage.base import Query, Storage
from hephaestus.telemetry import lifecycle

__all__ = ["LocalRunner"]

logger = logging.getLogger("hephaestus.runner.local")

#: How often an actor re-reads and re-applies a message after another writer got there first.
_CONFLICT_RETRIES = 5
#: How often an actor that crashed in runner code is restarted before its instance is failed.
_MAX_RESTARTS = 3


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
    pass


_Message = (
    _Begin | _StepDone | _Resume | _Cancel | _Schedule | _CancelTimer | _FireTimers | _Recover
)


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
    restarts: int = 0
    definition: WorkflowDefinition = field(init=False)
    #: A step the actor runs itself, right after the current message (see `_carry_out`).
    inline: RunStep | None = None
    #: The step running inline, while it runs.
    running_inline: str | None = None
    interrupted: bool = False

    def tell(self, message: _Message) -> None:
        self.mailbox.append(message)
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        elif self.running_inline is not None and isinstance(message, _Cancel):
            # The actor is busy running a step itself: interrupt it so the cancel applies now.
            self.interrupted = True
            assert self.task is not None
            self.task.cancel()

    async def run(self) -> None:
        runner = self.runner
        try:
            while True:
                try:
                    await self._loop()
                    return
                except asyncio.CancelledError:
                    raise
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
            if self.instance is None:
                self.instance = await runner._storage_or_raise().get(self.id)
            self.definition = runner._definitions.get(self.instance)
        except (HephaestusError, OSError) as exc:
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
        try:
            self.instance = await self.runner._storage_or_raise().get(self.id)
        except Exception as load_error:
            self._fail_replies(load_error)
            return False
        if self.restarts > _MAX_RESTARTS:
            reason = f"the runner failed {self.restarts} times on this instance: {exc!r}"
            try:
                await self._apply(lambda inst: engine.fail(inst, reason, now=self.runner._now()))
            finally:
                self._fail_replies(
                    StorageError(f"instance {self.id} failed in the runner: {exc!r}")
                )
            return False
        self.mailbox.appendleft(_Recover())
        return True

    # -- applying messages --

    async def _apply(self, decide: Callable[[Instance], Advance]) -> Advance:
        """Decide with the engine, persist, then carry out the commands.

        If another writer changed the instance first, re-read it and decide again.
        """
        storage = self.runner._storage_or_raise()
        for _ in range(_CONFLICT_RETRIES):
            assert self.instance is not None
            before = self.instance
            advance = decide(before)
            if advance.instance is before:
                return advance
            try:
                await storage.put(advance.instance, before.revision)
            except ConcurrencyError:
                self.instance = await storage.get(self.id)
                continue
            self.instance = advance.instance
            self.runner._note_timers(advance.instance)
            self._carry_out(advance.commands)
            return advance
        raise ConcurrencyError(
            f"instance {self.id} kept changing under this runner; is another runner "
            "using the same storage? Use one LocalRunner per storage."
        )

    def _carry_out(self, commands: list[Command]) -> None:
        instance = self.instance
        assert instance is not None
        if (
            len(commands) == 1
            and isinstance(commands[0], RunStep)
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

    def _start_step(self, step: str, attempt: int) -> None:
        if step in self.running:
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
        now = self.runner._now
        definition = self.definition
        if isinstance(message, _StepDone):
            self.running.pop(message.step, None)
            before = self.instance
            assert before is not None
            advance = await self._apply(
                lambda inst: engine.complete_step(
                    definition,
                    inst,
                    message.step,
                    message.run.outcome,
                    attempt=message.attempt,
                    now=now(),
                    duration=message.run.duration,
                )
            )
            if advance.instance is not before:
                report_advance(
                    before,
                    advance.instance,
                    step=message.step,
                    attempt=message.attempt,
                    run=message.run,
                )
        elif isinstance(message, _Resume):
            await self._reply(message.reply, self._resume(message))
        elif isinstance(message, _FireTimers):
            try:
                before = self.instance
                assert before is not None
                advance = await self._apply(
                    lambda inst: engine.fire_timers(definition, inst, now())
                )
                self._report_timer_resumes(before, advance.instance)
            finally:
                self.runner._timer_fired(self.id)
        elif isinstance(message, _Begin):
            self._carry_out(message.commands)
        elif isinstance(message, _Recover):
            assert self.instance is not None
            self._carry_out(engine.recover(self.instance))
        elif isinstance(message, _Cancel):
            before = self.instance
            await self._reply(
                message.reply, self._apply(lambda inst: engine.cancel(inst, now=now()))
            )
            if before is not None and self.instance is not None and self.instance is not before:
                report_advance(before, self.instance)
        elif isinstance(message, _Schedule):
            await self._reply(message.reply, self._schedule(message))
        elif isinstance(message, _CancelTimer):
            await self._reply(
                message.reply,
                self._apply(
                    lambda inst: Advance(engine.cancel_timer(inst, message.timer_id, now=now()))
                ),
            )

    async def _reply(self, reply: asyncio.Future[Any], work: Any) -> None:
        """Run `work`; caller errors (bad event, finished instance) go back to the caller."""
        try:
            result = await work
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
        before = self.instance
        assert before is not None
        definition = self.definition
        target: list[str] = []

        def decide(inst: Instance) -> Advance:
            target[:] = [engine.resume_target(definition, inst, message.event, message.step)]
            return engine.resume(
                definition, inst, message.event, now=self.runner._now(), step=message.step
            )

        advance = await self._apply(decide)
        report_advance(before, advance.instance, step=target[0], resumed_with=message.event)

    async def _schedule(self, message: _Schedule) -> TimerHandle:
        made: list[Any] = []

        def decide(inst: Instance) -> Advance:
            updated, timer = engine.add_timer(
                self.definition,
                inst,
                message.step,
                message.delay,
                now=self.runner._now(),
                event=message.event,
            )
            made[:] = [timer]
            return Advance(updated)

        await self._apply(decide)
        timer = made[0]
        return TimerHandle(self.id, timer.id, timer.step, timer.due_at)

    def _report_timer_resumes(self, before: Instance, after: Instance) -> None:
        if after is before:
            return
        resumed = (before.waiting_steps - after.waiting_steps) & after.completed_steps
        for step in sorted(resumed):
            event = next(
                (e.event for e in reversed(after.execution_history) if e.step == step), "timeout"
            )
            report_advance(before, after, step=step, resumed_with=event, source="timer")
        if not resumed:
            report_advance(before, after)


# --- the runner --------------------------------------------------------------------------


class LocalRunner:
    """Runs workflow instances in this process, on asyncio, durably.

    - `step_threads`: size of the thread pool for sync `execute` methods.
    - `timer_poll_interval`: seconds between looks at storage for timers set by
      other processes; timers set here wake the loop at once.
    - `clock`: returns the current UTC time (tests may pass their own).
    """

    def __init__(
        self,
        *,
        step_threads: int | None = None,
        timer_poll_interval: float = 1.0,
        clock: Clock = utc_now,
    ) -> None:
        if timer_poll_interval <= 0:
            raise ValueError("timer_poll_interval must be > 0 seconds")
        self._step_threads = step_threads or min(32, (os.cpu_count() or 1) + 4)
        self._poll = timer_poll_interval
        self._now = clock
        self._storage: Storage | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._actors: dict[str, _Actor] = {}
        self._definitions = DefinitionCache()
        self._timer_task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._next_wake: datetime | None = None
        self._firing: set[str] = set()

    # -- lifecycle --

    async def open(self, storage: Storage) -> None:
        if self._storage is not None:
            raise StorageError("this LocalRunner is already open; one runner serves one app")
        self._storage = storage
        self._wake = asyncio.Event()
        self._pool = ThreadPoolExecutor(self._step_threads, thread_name_prefix="hephaestus-step")
        await self._recover_running()
        self._timer_task = asyncio.create_task(self._timer_loop(), name="hephaestus:timers")
        lifecycle.runner_init(type(self).__name__, type(storage).__name__)

    async def close(self) -> None:
        if self._timer_task is not None:
            self._timer_task.cancel()
            await asyncio.gather(self._timer_task, return_exceptions=True)
            self._timer_task = None
        tasks = [actor.task for actor in list(self._actors.values()) if actor.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._actors.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        self._storage = None

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
        await storage.put(advance.instance, None)
        lifecycle.workflow_start(advance.instance)
        self._spawn(id, advance.instance).tell(_Begin(advance.commands))
        if advance.instance.status is Status.COMPLETED:
            lifecycle.workflow_stop(advance.instance)
        return id

    async def resume(self, id: str, event: str, *, step: str | type[Step] | None = None) -> None:
        validate_id(id)
        check_event(id, event)
        reply: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._tell(id, _Resume(event, step_key(step), reply))
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

    # -- internals --

    def _storage_or_raise(self) -> Storage:
        if self._storage is None:
            raise StorageError(
                "the runner is not open; use it through `async with Hephaestus(...)`"
            )
        return self._storage

    def _spawn(self, instance_id: str, instance: Instance | None = None) -> _Actor:
        actor = _Actor(instance_id, self, instance)
        self._actors[instance_id] = actor
        actor.task = asyncio.create_task(actor.run(), name=f"hephaestus:{instance_id}")
        return actor

    def _tell(self, instance_id: str, message: _Message) -> None:
        self._storage_or_raise()
        actor = self._actors.get(instance_id)
        if actor is None:
            actor = self._spawn(instance_id)
        actor.tell(message)

    async def _recover_running(self) -> None:
        storage = self._storage_or_raise()
        after: str | None = None
        while True:
            page = await storage.query(Query(status=Status.RUNNING, limit=1000, after=after))
            for instance in page:
                if instance.id not in self._actors:
                    self._spawn(instance.id, instance).tell(_Recover())
            if len(page) < 1000:
                return
            after = page[-1].id

    def _note_timers(self, instance: Instance) -> None:
        """Wake the timer loop early if `instance` now has a timer due before its next look."""
        due = instance.next_timer_at if instance.status.is_active else None
        if due is not None and (self._next_wake is None or due < self._next_wake):
            self._next_wake = due
            self._wake.set()

    def _timer_fired(self, instance_id: str, *, wake: bool = True) -> None:
        self._firing.discard(instance_id)
        if wake:
            self._wake.set()

    async def _timer_loop(self) -> None:
        storage = self._storage_or_raise()
        batch = 500
        while True:
            # Cleared before looking, not after: a timer set while storage is being asked
            # (and perhaps missed by the answer) must still wake the next sleep at once.
            self._wake.clear()
            self._next_wake = None
            try:
                now = self._now()
                due = await storage.due_timers(now, batch)
                for instance_id in due:
                    if instance_id not in self._firing:
                        self._firing.add(instance_id)
                        self._tell(instance_id, _FireTimers())
                upcoming = await storage.next_timer_at()
                delay = self._poll
                if upcoming is not None and upcoming > now:
                    delay = min(delay, (upcoming - now).total_seconds())
                self._next_wake = now + timedelta(seconds=delay)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("the timer loop failed; trying again in %.1fs", self._poll)
                delay = self._poll
            try:
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            except TimeoutError:
                pass
