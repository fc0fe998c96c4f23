"""One drive of one instance by the distributed runner: its steps run here until it parks.

A worker that takes a `hephaestus.drive(instance_ids=[...])` job first claims
those instances (a claim record in storage: the instance's owner is the
worker's registered runner id; see `hephaestus.runners.procrastinate`), then
drives each claimed instance at once, as a `Drive`: it fires the instance's
due timers and runs every step that can run now in this process (fan-out
branches at once, as tasks; sync steps on the runner's thread pool). Each
result goes through the pure engine and the new state is written with
optimistic concurrency *as the owner* through the storage's group commit, so
the writes of every instance this worker drives share transactions and a
write of a worker that lost its claim (its lease lapsed and it was reaped) is
refused with `OwnershipError`: that drive stops at once. Steps the new state
starts run at once, in the same drive. The drive ends when nothing runs any
more: the instance finished, or it parked on an event or a timer. No step
starts once the worker's lease may have lapsed.

A client (a web process) may write the instance while it is driven: an
event, a cancel. The driver's next write then fails on the revision; it reads
the instance again and applies its results to what is stored (the engine
ignores a result the instance no longer expects), so neither write is lost.
What a client writes after the driver's last write is caught when the driver
releases the instance (the release is refused at a revision it did not write).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from datetime import datetime

from hephaestus.core import engine
from hephaestus.core.commands import RunStep, StopSteps
from hephaestus.core.definition import WorkflowDefinition
from hephaestus.core.engine import Advance
from hephaestus.core.instance import Instance
from hephaestus.errors import ConcurrencyError, InstanceNotFoundError, OwnershipError
from hephaestus.runners._shell import StepRun, report, run_attempt
from hephaestus.storage.base import Storage

__all__ = ["Drive"]

logger = logging.getLogger("hephaestus.runner.procrastinate")

#: How often in a row a driver re-reads an instance that clients keep changing.
_CONFLICT_RETRIES = 50

#: `(instance before, instance written)`: what the runner does after each write (timers).
Written = Callable[[Instance, Instance], Awaitable[None]]

_Result = tuple[str, int, StepRun]
#: An engine decision and the attempt whose result it applied, if any.
_Decision = tuple[Advance, StepRun | None]


class Drive:
    """Runs one claimed instance's steps until it parks or finishes.

    After `run()`: `gone` if the instance finished (its last write, or a
    client's cancel, left it without an owner), was deleted or replaced, or if
    this worker may not hold it any more (a write was refused to it as owner
    while the instance is active, or `lapsed`: its lease may have lapsed, so it
    started no more steps): then it must not release it either. Otherwise it
    parked at `instance.revision`.
    """

    def __init__(
        self,
        storage: Storage,
        definition_of: Callable[[Instance], WorkflowDefinition],
        instance: Instance,
        now: Callable[[], datetime],
        executor: Executor | None,
        written: Written,
        *,
        owner: str,
        may_start: Callable[[], bool],
    ) -> None:
        self.storage = storage
        self.owner = owner
        self.may_start = may_start
        self.definition_of = definition_of
        self.instance = instance
        self.now = now
        self.executor = executor
        self.written = written
        #: Steps running in this drive, by step key: the attempt and its task.
        self.running: dict[str, tuple[int, asyncio.Task[StepRun]]] = {}
        self.gone = False
        self.lapsed = False

    async def run(self) -> None:
        try:
            await self._fire_due_timers()
            self._start_runnable()
            while self.running and not self.gone:
                tasks = {task for _, task in self.running.values()}
                # A timer of this instance that comes due while its steps run (a branch's
                # wait, a retry's backoff) fires then, not when the next step ends.
                done, _ = await asyncio.wait(
                    tasks, timeout=self._until_next_timer(), return_when=asyncio.FIRST_COMPLETED
                )
                results: list[_Result] = []
                for step, (attempt, task) in list(self.running.items()):
                    if task in done:
                        del self.running[step]
                        if not task.cancelled():
                            results.append((step, attempt, task.result()))
                if results:
                    await self._apply_results(results)
                await self._fire_due_timers()
                self._start_runnable()
        finally:
            for _, task in self.running.values():
                task.cancel()
            for _, task in self.running.values():
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    def _until_next_timer(self) -> float | None:
        """Seconds until the instance's earliest timer is due (`None` without one)."""
        timers = self.instance.timers
        if not timers or not self.instance.status.is_active:
            return None
        due = min(timer.due_at for timer in timers)
        return max((due - self.now()).total_seconds(), 0.0)

    def _start_runnable(self) -> None:
        """Start every step that can run now and is not running here yet."""
        if self.gone:
            return
        definition = self.definition_of(self.instance)
        for command in engine.recover(self.instance):
            if not isinstance(command, RunStep):
                continue
            current = self.running.get(command.step)
            if current is not None and current[0] == command.attempt:
                continue
            if not self.may_start():
                # This worker's lease may have lapsed: another may hold the instance soon.
                self.gone = self.lapsed = True
                return
            if current is not None:
                current[1].cancel()  # an older attempt: its result is stale anyway
            task = asyncio.create_task(
                run_attempt(
                    definition, self.instance, command.step, command.attempt, self.executor
                ),
                name=f"hephaestus:{self.instance.id}:{command.step}",
            )
            self.running[command.step] = (command.attempt, task)

    async def _fire_due_timers(self) -> None:
        instance = self.instance
        if self.gone or not instance.timers or not instance.status.is_active:
            return
        if min(timer.due_at for timer in instance.timers) > self.now():
            return

        def decide(current: Instance) -> list[_Decision]:
            definition = self.definition_of(current)
            return [(engine.fire_timers(definition, current, self.now()), None)]

        await self._write(decide)

    async def _apply_results(self, results: list[_Result]) -> None:
        def decide(current: Instance) -> list[_Decision]:
            definition = self.definition_of(current)
            decisions: list[_Decision] = []
            for step, attempt, run in results:
                decision = engine.complete_step(
                    definition,
                    current,
                    step,
                    run.outcome,
                    attempt=attempt,
                    now=self.now(),
                    duration=run.duration,
                )
                decisions.append((decision, run))
                current = decision.instance
            # Timers due meanwhile (a retry's backoff) fire in the same write.
            decisions.append((engine.fire_timers(definition, current, self.now()), None))
            return decisions

        await self._write(decide)

    async def _write(self, decide: Callable[[Instance], list[_Decision]]) -> None:
        """Decide on the current instance and store the result; on a conflict, read and redo."""
        for _ in range(_CONFLICT_RETRIES):
            before = self.instance
            decisions = decide(before)
            after = decisions[-1][0].instance if decisions else before
            if after is before:
                return
            try:
                await self.storage.put(after, before.revision, owner=self.owner)
            except OwnershipError:
                # Finished (a cancel leaves no owner), replaced or deleted meanwhile: gone.
                # Still active: this worker's claim was taken (its lease lapsed): stop.
                if await self._reload():
                    self.gone = True
                return
            except ConcurrencyError:
                if not await self._reload():
                    return
                continue
            self.instance = after
            await self.written(before, after)
            since = before.updated_at
            for decision, run in decisions:
                if decision.status_before is not None:  # the call changed something
                    report(decision, since=since, exception=run.exception if run else None)
                    self._stop(decision)
            if not after.status.is_active:
                self.gone = True
            return
        raise ConcurrencyError(
            f"instance {before.id} kept changing while a worker applied a change "
            f"{_CONFLICT_RETRIES} times in a row; its drive is retried"
        )

    async def _reload(self) -> bool:
        """Read the instance again after another writer changed it; whether to go on."""
        try:
            current = await self.storage.get(self.instance.id)
        except InstanceNotFoundError:
            self.gone = True
            return False
        if current.created_at != self.instance.created_at:
            self.gone = True  # replaced by a new instance with the same id: its own drive runs it
            return False
        self.instance = current
        if not current.status.is_active:
            self.gone = True
        return True

    def _stop(self, decision: Advance) -> None:
        for command in decision.commands:
            if isinstance(command, StopSteps):
                for step in command.steps:
                    entry = self.running.pop(step, None)
                    if entry is not None:
                        entry[1].cancel()
