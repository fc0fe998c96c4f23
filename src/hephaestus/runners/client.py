"""`ClientRunner`: client mode, a runner that writes and never executes a step.

`Hephaestus(storage=..., runner=None)` uses it. A web process, the CLI or a
script validates its calls against the stored instance and writes; the
runners that share the storage do the work:

- `start_instance` stores the new instance with no owner; a runner claims it
  and runs its first step.
- `resume` appends the event (and its data) to the instance's inbox. The
  instance's owner, or whichever runner claims it, applies it: at once if a
  step waits for it, else when that step parks.
- `cancel` of an instance that runs nothing (it only waits) is applied here,
  since no step can be interrupted; otherwise a cancel request goes to the
  inbox and the owner stops its steps.
- `retry` of a failed instance writes it back as `running` with its failed
  steps at attempt 1 and no owner; a runner claims it and runs them.
- `schedule_resume` and `cancel_timer` change the stored timers; the runners'
  timer loops fire them.

Every write is conditional on the revision that was read, so a client and the
owner never overwrite each other: the loser reads again and decides again.
`LocalRunner` uses the same calls for instances another runner owns.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

from hephaestus.core import engine
from hephaestus.core.definition import BaseWorkflow
from hephaestus.core.facts import TimerScheduled
from hephaestus.core.instance import Instance
from hephaestus.core.keys import validate_id
from hephaestus.core.step import Step
from hephaestus.errors import ConcurrencyError, StorageError
from hephaestus.runners._shell import (
    Clock,
    DefinitionCache,
    check_event,
    new_instance,
    step_key,
    utc_now,
)
from hephaestus.runners.base import TimerHandle
from hephaestus.storage.base import Storage
from hephaestus.telemetry import lifecycle

__all__ = ["ClientRunner", "StorageWriter"]

#: How often a write is decided again after another process changed the instance first.
_CONFLICT_RETRIES = 50

#: A queued write: the decision to apply, and the caller waiting for the instance written.
_Pending = tuple[Callable[[Instance], Instance], "asyncio.Future[Instance]"]


class StorageWriter:
    """The client's writes on one storage, each decided by the pure engine and conditional."""

    def __init__(self, storage: Storage, definitions: DefinitionCache, clock: Clock) -> None:
        self.storage = storage
        self.definitions = definitions
        self.now = clock
        self._queues: dict[str, list[_Pending]] = {}
        self._drainers: set[asyncio.Task[None]] = set()

    async def create(self, instance: Instance) -> None:
        """Store a new instance for the runners to claim."""
        await self.storage.put(instance, None)

    async def send_event(
        self, id: str, event: str, step: str | None, data: Mapping[str, Any] | None
    ) -> None:
        """Validate `event` against the stored instance and put it in the inbox."""

        def decide(instance: Instance) -> Instance:
            engine.check_active(instance, event)  # before its workflow is looked up
            definition = self.definitions.get(instance)
            return engine.accept_event(
                definition, instance, event, now=self.now(), step=step, data=data
            ).instance

        await self._write(id, decide)

    async def cancel(self, id: str) -> Instance:
        """Cancel now if nothing runs, else ask the owner to; returns the instance written."""

        def decide(instance: Instance) -> Instance:
            if instance.active_steps:
                return engine.request_cancel(instance, now=self.now()).instance
            return engine.cancel(instance, now=self.now()).instance

        return await self._write(id, decide)

    async def retry(self, id: str) -> Instance:
        """Write the failed instance back as running (`engine.retry`); returns it as written."""

        def decide(instance: Instance) -> Instance:
            engine.check_failed(instance)  # before its workflow is looked up
            definition = self.definitions.get(instance)
            return engine.retry(definition, instance, now=self.now()).instance

        return await self._write(id, decide)

    async def add_timer(self, id: str, step: str, delay: float, event: str | None) -> TimerHandle:
        made: list[TimerHandle] = []

        def decide(instance: Instance) -> Instance:
            definition = self.definitions.get(instance)
            advance = engine.add_timer(
                definition, instance, step, delay, now=self.now(), event=event
            )
            [scheduled] = advance.facts_of(TimerScheduled)
            timer = scheduled.timer
            made[:] = [TimerHandle(id, timer.id, timer.step, timer.due_at)]
            return advance.instance

        await self._write(id, decide)
        return made[0]

    async def cancel_timer(self, id: str, timer_id: str) -> None:
        await self._write(
            id, lambda instance: engine.cancel_timer(instance, timer_id, now=self.now()).instance
        )

    async def _write(self, id: str, decide: Callable[[Instance], Instance]) -> Instance:
        """Apply `decide` to the stored instance and write the result; the instance written.

        Concurrent writes to one instance from this process are coalesced: they
        queue, and one task applies every queued decision in arrival order to
        one read of the instance and stores them all in one conditional write.
        A burst of a thousand events for one instance is a handful of writes,
        never a thousand connections waiting for a row.
        """
        done: asyncio.Future[Instance] = asyncio.get_running_loop().create_future()
        queue = self._queues.get(id)
        if queue is None:
            queue = self._queues[id] = []
            task = asyncio.create_task(self._drain(id, queue), name=f"hephaestus:write:{id}")
            self._drainers.add(task)
            task.add_done_callback(self._drainers.discard)
        queue.append((decide, done))
        return await done

    async def _drain(self, id: str, queue: list[_Pending]) -> None:
        try:
            while queue:
                batch = queue[:]
                del queue[:]
                try:
                    await self._write_batch(id, batch)
                except BaseException as exc:
                    for _, done in batch:
                        if not done.done():
                            done.set_exception(exc)
                    if not isinstance(exc, Exception):
                        raise
        finally:
            del self._queues[id]
            for _, done in queue:  # only if cancelled while calls were queued
                if not done.done():
                    done.set_exception(StorageError(f"instance {id}: the client was closed"))

    async def _write_batch(self, id: str, batch: list[_Pending]) -> None:
        for attempt in range(_CONFLICT_RETRIES):
            before = current = await self.storage.get(id)
            outcomes: list[Instance | Exception] = []
            for decide, _ in batch:
                try:
                    current = decide(current)
                except Exception as exc:  # refused: this caller's error, the others go on
                    outcomes.append(exc)
                else:
                    outcomes.append(current)
            if current is not before:
                try:
                    await self.storage.put(current, before.revision)
                except ConcurrencyError:
                    # The owner (or another process) wrote first: read again, decide again.
                    await asyncio.sleep(min(0.001 * 2**attempt, 0.05))
                    continue
            for (_, done), outcome in zip(batch, outcomes, strict=True):
                if done.done():
                    continue
                if isinstance(outcome, Exception):
                    done.set_exception(outcome)
                else:
                    done.set_result(outcome)
            return
        raise ConcurrencyError(
            f"instance {id} changed {_CONFLICT_RETRIES} times while this write was decided; "
            "it is being written to very often by other processes: try again"
        )


class ClientRunner:
    """**Client mode**: validates and writes through the storage; runners elsewhere execute.

    Satisfies the `Runner` protocol, so `Hephaestus(storage=..., runner=None)`
    offers every call of the runtime, and none of them runs a step.
    """

    def __init__(self, *, clock: Clock = utc_now) -> None:
        self._now = clock
        self._writer: StorageWriter | None = None

    async def open(self, storage: Storage) -> None:
        if self._writer is not None:
            raise StorageError("this ClientRunner is already open; one runner serves one app")
        self._writer = StorageWriter(storage, DefinitionCache(), self._now)

    async def close(self) -> None:
        self._writer = None

    async def start_instance(
        self,
        workflow: type[BaseWorkflow],
        context: Mapping[str, Any] | None,
        *,
        id: str,
        version: int | None = None,
        telemetry_metadata: Mapping[str, Any] | None = None,
    ) -> str:
        writer = self._writer_or_raise()
        advance = new_instance(
            workflow,
            context,
            id=id,
            version=version,
            telemetry_metadata=telemetry_metadata,
            now=self._now(),
        )
        await writer.create(advance.instance)
        lifecycle.workflow_start(advance.instance, runner=type(self).__name__)
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
        await self._writer_or_raise().send_event(id, event, step_key(step), checked)

    async def schedule_resume(
        self, id: str, step: str | type[Step], delay: float, *, event: str | None = None
    ) -> TimerHandle:
        validate_id(id)
        engine.check_delay(delay)
        key = step_key(step)
        assert key is not None
        return await self._writer_or_raise().add_timer(id, key, delay, event)

    async def cancel_timer(self, handle: TimerHandle) -> None:
        await self._writer_or_raise().cancel_timer(handle.instance_id, handle.timer_id)

    async def cancel(self, id: str) -> None:
        validate_id(id)
        await self._writer_or_raise().cancel(id)

    async def retry(self, id: str) -> None:
        """Write the failed instance back as running; a runner claims it and runs its steps."""
        validate_id(id)
        await self._writer_or_raise().retry(id)

    def _writer_or_raise(self) -> StorageWriter:
        if self._writer is None:
            raise StorageError(
                "the client is not open; use it through `async with Hephaestus(...)`"
            )
        return self._writer
