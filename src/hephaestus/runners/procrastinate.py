"""`ProcrastinateRunner`: run instances on many workers and machines, on Procrastinate.

Procrastinate is a PostgreSQL job queue; this runner keeps no scheduler of its
own. Three jobs, all on one queue:

- `hephaestus.advance(instance_id)` — *locked* by the instance id, so two
  workers never advance one instance at once. It applies the step results
  recorded for the instance and fires its due timers, through the pure engine,
  and writes the new state.
- `hephaestus.run_step(instance_id, step, attempt)` — not locked: fan-out
  branches run in parallel on any worker. It runs one attempt and records the
  result in `hephaestus_step_results`, then enqueues an advance.
- `hephaestus.wake(instance_id)` — a small *unlocked* job scheduled at a
  timer's due time that only enqueues an advance. Timers, retry backoff and
  `schedule_resume` are never locked future jobs: a locked job waiting for its
  `scheduled_at` would block every job of its lock until then.

Every state write happens in one PostgreSQL transaction with the jobs it
implies (`configure(connection=...)`): a step result is stored together with
its advance job, a new state together with the run_step and wake jobs it
needs. So no event is lost and no job points at a state that was not stored.
Each job is idempotent — Procrastinate marks a job finished in a separate
transaction, so a job may run twice: a result is recorded once per attempt
(unique key) and applied once (the engine ignores results for steps no longer
active at that attempt), an advance with nothing to apply changes nothing.

`resume`, `cancel`, `schedule_resume` and `start_instance` apply their change
directly, in the caller's process, under a row lock on the instance: the
event is validated against the stored state and written before the call
returns. A worker killed mid-step leaves its job `doing`; every worker checks
for jobs of stalled workers and retries them, so the step runs again on
another worker with the same attempt number and idempotency key (steps run at
least once).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import TYPE_CHECKING, Any, LiteralString

from hephaestus.core import engine
from hephaestus.core.commands import Command, RunStep
from hephaestus.core.context import to_json_value
from hephaestus.core.definition import BaseWorkflow
from hephaestus.core.engine import Advance, expects_result
from hephaestus.core.facts import TimerScheduled
from hephaestus.core.instance import Instance
from hephaestus.core.keys import validate_id
from hephaestus.core.outcomes import Async, Error, Ok, as_outcome
from hephaestus.core.step import Step
from hephaestus.errors import (
    ContextSerializationError,
    StorageError,
)
from hephaestus.runners._shell import (
    Clock,
    DefinitionCache,
    KeyedLocks,
    StepRun,
    check_event,
    new_instance,
    report,
    run_attempt,
    step_key,
    utc_now,
)
from hephaestus.runners.base import TimerHandle
from hephaestus.storage.base import Storage
from hephaestus.telemetry import lifecycle

try:
    import procrastinate
    import psycopg_pool
    from procrastinate import exceptions as procrastinate_errors
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "the distributed runner needs its extra: pip install 'hephaestus-workflows[distributed]'"
    ) from exc

if TYPE_CHECKING:
    from hephaestus.storage.postgres import PostgresStorage, PostgresTransaction

__all__ = ["ProcrastinateRunner"]

logger = logging.getLogger("hephaestus.runner.procrastinate")

ADVANCE = "hephaestus.advance"
RUN_STEP = "hephaestus.run_step"
WAKE = "hephaestus.wake"


def _encode(run: StepRun, step_name: str) -> dict[str, Any]:
    """A step's outcome as JSON for `hephaestus_step_results`.

    What the engine would refuse is recorded so that it fails the instance with
    the same message as on the local runner.
    """
    outcome = as_outcome(run.outcome)
    try:
        if isinstance(outcome, Ok):
            return {
                "kind": "ok",
                "event": outcome.event,
                "updates": to_json_value(outcome.updates, what=f"updates of step {step_name}"),
                "metadata": to_json_value(outcome.metadata, what=f"metadata of step {step_name}"),
            }
    except ContextSerializationError as exc:
        return {"kind": "invalid", "message": f"ContextSerializationError: {exc}"}
    if isinstance(outcome, Async):
        return {
            "kind": "async",
            "resume_after": outcome.resume_after,
            "timeout_event": outcome.timeout_event,
        }
    if isinstance(outcome, Error):
        return {"kind": "error", "reason": outcome.reason, "traceback": outcome.traceback}
    return {"kind": "unknown", "repr": repr(outcome)}


def _decode(data: Mapping[str, Any]) -> Any:
    kind = data["kind"]
    if kind == "ok":
        return Ok(data["event"], data.get("updates"), data.get("metadata"))
    if kind == "async":
        return Async(data.get("resume_after"), data.get("timeout_event", "timeout"))
    if kind == "error":
        return Error(data["reason"], data.get("traceback"))
    if kind == "unknown":
        return _Returned(data["repr"])
    return _Invalid(data["message"])


class _Invalid:
    """An outcome the engine would refuse; the instance fails with `message`."""

    def __init__(self, message: str) -> None:
        self.message = message


class _Returned:
    """Something a step returned that is no outcome, as the engine will name it."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


class ProcrastinateRunner:
    """Runs instances as Procrastinate jobs on any number of worker processes.

    - `queue`: the Procrastinate queue the jobs go to.
    - `worker`: also run a worker inside this process while the app is open
      (handy for tests and single-machine deployments); otherwise start workers
      with `hephaestus worker --app MODULE:app`.
    - `concurrency`: jobs one worker runs at once.
    - `stalled_after`: seconds without a heartbeat after which a worker's jobs
      are retried elsewhere; `heartbeat` is how often workers send one.
    - `poll_interval`: how often an idle worker looks for jobs that became due
      (timers); new jobs wake workers at once through LISTEN/NOTIFY.
    """

    def __init__(
        self,
        *,
        queue: str = "hephaestus",
        worker: bool = False,
        concurrency: int = 10,
        stalled_after: float = 30.0,
        heartbeat: float = 10.0,
        step_threads: int = 16,
        poll_interval: float = 0.2,
        clock: Clock = utc_now,
    ) -> None:
        if heartbeat >= stalled_after:
            raise ValueError("heartbeat must be shorter than stalled_after")
        self.queue = queue
        self._embedded_worker = worker
        self.concurrency = concurrency
        self.stalled_after = stalled_after
        self.heartbeat = heartbeat
        self.poll_interval = poll_interval
        self._now = clock
        bind = getattr(clock, "bind", None)
        if callable(bind):
            bind(self.wake_timers)
        self._waking: set[asyncio.Task[None]] = set()
        self._step_threads = step_threads
        self._storage: PostgresStorage | None = None
        self._definitions = DefinitionCache()
        self._instance_locks = KeyedLocks()
        self._pool: ThreadPoolExecutor | None = None
        self._worker_task: asyncio.Task[None] | None = None
        self._queue_pool: psycopg_pool.AsyncConnectionPool[Any] | None = None
        self.procrastinate = procrastinate.App(connector=procrastinate.PsycopgConnector())
        retry = procrastinate.RetryStrategy(max_attempts=20, wait=1)
        task = self.procrastinate.task
        # No retry for advances: a retried job could collide with a newer queued advance
        # on the queueing lock (Procrastinate #1543); the sweep below re-enqueues instead.
        self._advance = task(name=ADVANCE, queue=queue)(self._advance_job)
        self._run_step = task(name=RUN_STEP, queue=queue, retry=retry)(self._run_step_job)
        self._wake = task(name=WAKE, queue=queue, retry=retry)(self._wake_job)

    # -- lifecycle --

    async def open(self, storage: Storage) -> None:
        from hephaestus.storage.postgres import PostgresStorage

        if not isinstance(storage, PostgresStorage):
            raise StorageError(
                "ProcrastinateRunner needs a PostgresStorage (its jobs live in the same "
                f"database), got {type(storage).__name__}"
            )
        if self._storage is not None:
            raise StorageError("this ProcrastinateRunner is already open")
        await storage.check_job_queue_schema()
        # Procrastinate gets a pool of its own: it opens its LISTEN connection with the
        # pool's settings plus autocommit, which the storage's pool already sets.
        queue_pool: psycopg_pool.AsyncConnectionPool[Any] = psycopg_pool.AsyncConnectionPool(
            storage.url,
            min_size=1,
            max_size=self.concurrency + 2,
            open=False,
            check=psycopg_pool.AsyncConnectionPool.check_connection,
            name=f"hephaestus jobs {storage.where}",
        )
        await queue_pool.open(wait=True, timeout=storage.connect_timeout)
        self._queue_pool = queue_pool
        self._storage = storage
        self._pool = ThreadPoolExecutor(self._step_threads, thread_name_prefix="hephaestus-step")
        await self.procrastinate.open_async(queue_pool)
        lifecycle.runner_init(type(self).__name__, type(storage).__name__, queue=self.queue)
        if self._embedded_worker:
            self._worker_task = asyncio.create_task(
                self.run_worker(install_signal_handlers=False), name="hephaestus:worker"
            )

    async def close(self) -> None:
        if self._worker_task is not None:
            self._worker_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker_task
            self._worker_task = None
        if self._storage is not None:
            await self.procrastinate.close_async()
            self._storage = None
        if self._queue_pool is not None:
            await self._queue_pool.close()
            self._queue_pool = None
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    async def run_worker(
        self, *, concurrency: int | None = None, install_signal_handlers: bool = True
    ) -> None:
        """Work the queue until cancelled (or stopped by SIGINT/SIGTERM).

        Alongside, retry the jobs of workers that stopped sending heartbeats.
        """
        stalled = asyncio.create_task(self._retry_stalled_jobs(), name="hephaestus:stalled")
        try:
            await self.procrastinate.run_worker_async(
                queues=[self.queue],
                concurrency=concurrency or self.concurrency,
                wait=True,
                install_signal_handlers=install_signal_handlers,
                update_heartbeat_interval=self.heartbeat,
                stalled_worker_timeout=self.stalled_after,
                # New jobs arrive by LISTEN/NOTIFY; polling finds jobs whose
                # scheduled time came (timers), so it bounds how late a timer fires.
                fetch_job_polling_interval=self.poll_interval,
                delete_jobs="successful",
            )
        finally:
            stalled.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stalled

    async def _recover_stalled(self, job: procrastinate.jobs.Job) -> None:
        """Take over a job of a dead worker.

        A step job is retried as it is. A stalled advance is closed and a fresh
        advance queued instead: retrying it could collide with an advance queued
        meanwhile on the queueing lock (Procrastinate #1543), and while it stays
        `doing` its lock would block every advance of the instance.
        """
        manager = self.procrastinate.job_manager
        logger.warning("taking over job %s of a stalled worker: %s", job.id, job.task_name)
        if job.task_name != ADVANCE:
            await manager.retry_job(job)
            return
        await manager.finish_job(job, procrastinate.jobs.Status.FAILED, delete_job=True)
        await self._enqueue_advance(str(job.task_kwargs["instance_id"]))

    async def wait_idle(self, timeout: float | None = None) -> None:
        """Wait until this runner's queue has no job to do now (timers due later aside)."""
        storage = self._storage_or_raise()
        async with asyncio.timeout(timeout):
            while await storage.pending_jobs(self.queue):
                await asyncio.sleep(0.02)

    async def _retry_stalled_jobs(self) -> None:
        """Every worker's safety net, run every `heartbeat` seconds (see `sweep_once`)."""
        while True:
            await asyncio.sleep(self.heartbeat)
            try:
                await self.sweep_once()
            except Exception:
                logger.exception("could not look for stalled work; trying again later")

    async def sweep_once(self) -> int:
        """Take over what dead workers left; how many stalled jobs this worker took over.

        - Jobs of workers that stopped sending heartbeats (killed) are retried.
        - Instances with step results or due timers that nobody applied for
          `stalled_after` seconds (their advance failed, or its process died
          between storing a result and queueing the advance) get an advance.

        One worker of the queue sweeps at a time: the sweep holds a PostgreSQL
        advisory lock (taken without waiting: a worker that finds it held skips
        this round), so a stalled job is taken over once, never by two workers.
        """
        storage = self._storage_or_raise()
        manager = self.procrastinate.job_manager
        taken = 0
        async with storage.pool.connection() as conn, conn.transaction():
            cursor = await conn.execute(_TRY_SWEEP_LOCK, {"key": _sweep_key(self.queue)})
            locked = await cursor.fetchone()
            if not (locked and locked[0]):
                return 0  # another worker is sweeping right now
            for job in await manager.get_stalled_jobs(
                queue=self.queue, seconds_since_heartbeat=self.stalled_after
            ):
                try:
                    await self._recover_stalled(job)
                    taken += 1
                except Exception:
                    logger.exception("could not take over stalled job %s", job.id)
            for instance_id in await storage.unattended_instances(self.stalled_after):
                await self._enqueue_advance(instance_id)
        return taken

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
        async with storage.transaction() as tx:
            await tx.put(advance.instance, None)
            # Results an earlier instance with this id left unapplied are not this one's.
            await tx.forget_step_results(id)
            await self._dispatch(tx, None, advance)
        lifecycle.workflow_start(advance.instance, runner=type(self).__name__)
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
        key = step_key(step)

        def decide(instance: Instance) -> Advance:
            # An event held for a step that has not parked yet is consumed by the
            # advance job's engine call that parks it.
            definition = self._definitions.get(instance)
            return engine.deliver(
                definition, instance, event, now=self._now(), step=key, data=checked
            )

        await self._apply(id, decide)

    async def schedule_resume(
        self, id: str, step: str | type[Step], delay: float, *, event: str | None = None
    ) -> TimerHandle:
        validate_id(id)
        engine.check_delay(delay)
        key = step_key(step)
        assert key is not None

        def decide(instance: Instance) -> Advance:
            definition = self._definitions.get(instance)
            return engine.add_timer(definition, instance, key, delay, now=self._now(), event=event)

        [scheduled] = (await self._apply(id, decide)).facts_of(TimerScheduled)
        timer = scheduled.timer
        return TimerHandle(id, timer.id, timer.step, timer.due_at)

    async def cancel_timer(self, handle: TimerHandle) -> None:
        await self._apply(
            handle.instance_id,
            lambda inst: engine.cancel_timer(inst, handle.timer_id, now=self._now()),
        )

    async def cancel(self, id: str) -> None:
        validate_id(id)
        await self._apply(id, lambda inst: engine.cancel(inst, now=self._now()))

    async def retry(self, id: str) -> None:
        """Run a failed instance again from its failed steps, with their run_step jobs."""
        validate_id(id)

        def decide(instance: Instance) -> Advance:
            engine.check_failed(instance)  # before its workflow is looked up
            definition = self._definitions.get(instance)
            return engine.retry(definition, instance, now=self._now())

        await self._apply(id, decide)

    # -- jobs --

    async def _run_step_job(self, instance_id: str, step: str, attempt: int) -> None:
        storage = self._storage_or_raise()
        instance = await storage.get(instance_id)
        if not expects_result(instance, step, attempt):
            return  # stale: finished, already applied, or failed with its retry pending
        definition = self._definitions.get(instance)
        run = await run_attempt(definition, instance, step, attempt, self._pool)
        async with storage.transaction() as tx:
            # Checked again under the row lock: the instance may have been cancelled, or
            # even replaced by a new instance with the same id, while the step ran.
            current = await tx.get(instance_id, for_update=True)
            if current.created_at != instance.created_at or not expects_result(
                current, step, attempt
            ):
                return
            outcome = _encode(run, definition.nodes[step].name)
            await tx.record_step_result(instance_id, step, attempt, outcome, run.duration)
        # Enqueued after the result is committed: an advance that is still queued (and
        # so makes this one redundant) is sure to read the result when it runs.
        await self._enqueue_advance(instance_id)

    async def _advance_job(self, instance_id: str) -> None:
        storage = self._storage_or_raise()
        async with storage.transaction() as tx:
            before = await tx.get(instance_id, for_update=True)
            definition = self._definitions.get(before)
            results = await tx.step_results(instance_id)
            instance = before
            commands: list[Command] = []
            decisions: list[Advance] = []
            for row in results:
                outcome = _decode(row["outcome"])
                now = self._now()
                if isinstance(outcome, _Invalid):
                    if not expects_result(instance, row["step"], row["attempt"]):
                        continue  # stale, like any result the engine would ignore
                    decision = engine.fail(instance, outcome.message, now=now)
                else:
                    decision = engine.complete_step(
                        definition,
                        instance,
                        row["step"],
                        outcome,
                        attempt=row["attempt"],
                        now=now,
                        duration=row["duration"],
                    )
                decisions.append(decision)
                instance = decision.instance
                commands.extend(decision.commands)
            decisions.append(engine.fire_timers(definition, instance, self._now()))
            instance = decisions[-1].instance
            commands.extend(decisions[-1].commands)
            await tx.delete_step_results([row["id"] for row in results])
            if instance is not before:
                await tx.put(instance, before.revision)
                await self._dispatch(tx, before, Advance(instance, commands))
        for decision in decisions:
            report(decision, since=before.updated_at)

    async def _wake_job(self, instance_id: str) -> None:
        await self._enqueue_advance(instance_id)

    def wake_timers(self) -> None:
        """Queue an advance now for every instance with a due timer (the clock moved, say).

        A timer's wake-up job is scheduled at its due time by the real clock;
        a test's `VirtualClock` calls this when it moves so that the timers
        then due fire at once. Call it from the loop the runner runs on.
        """
        if self._storage is None:
            return
        task = asyncio.get_running_loop().create_task(self._advance_due())
        self._waking.add(task)
        task.add_done_callback(self._waking.discard)

    async def _advance_due(self) -> None:
        storage = self._storage_or_raise()
        for instance_id in await storage.due_timers(self._now()):
            await self._enqueue_advance(instance_id)

    async def _enqueue_advance(self, instance_id: str) -> None:
        """Queue an advance of the instance, unless one is queued already.

        The lock serialises advances of one instance; the queueing lock keeps at
        most one waiting, so a burst of results does not pile up advances.
        """
        # An AlreadyEnqueued advance will apply what is stored now.
        with contextlib.suppress(procrastinate_errors.AlreadyEnqueued):
            await self._advance.configure(lock=instance_id, queueing_lock=instance_id).defer_async(
                instance_id=instance_id
            )

    # -- internals --

    def _storage_or_raise(self) -> PostgresStorage:
        if self._storage is None:
            raise StorageError(
                "the runner is not open; use it through `async with Hephaestus(...)`"
            )
        return self._storage

    async def _apply(self, instance_id: str, decide: Callable[[Instance], Advance]) -> Advance:
        """Apply a caller's change under the instance's row lock, with the jobs it implies,
        then report its facts.

        Calls for one instance from this process queue here, one at a time: a
        burst of them then holds one pooled connection, never the whole pool
        waiting for the same row lock.
        """
        storage = self._storage_or_raise()
        async with self._instance_locks.hold(instance_id), storage.transaction() as tx:
            before = await tx.get(instance_id, for_update=True)
            advance = decide(before)
            if advance.instance is not before:
                await tx.put(advance.instance, before.revision)
                await self._dispatch(tx, before, advance)
        report(advance, since=before.updated_at)
        return advance

    async def _dispatch(
        self, tx: PostgresTransaction, before: Instance | None, advance: Advance
    ) -> None:
        """Enqueue, in the state's own transaction, the step runs and timer wake-ups it needs.

        Stopping steps needs no job: their results arrive at an instance that no
        longer expects them and are ignored.
        """
        instance = advance.instance
        for command in advance.commands:
            if isinstance(command, RunStep):
                await self._defer(
                    tx,
                    self._run_step,
                    instance_id=instance.id,
                    step=command.step,
                    attempt=command.attempt,
                )
        known = set() if before is None else {timer.id for timer in before.timers}
        for timer in instance.timers:
            if timer.id not in known and instance.status.is_active:
                await self._defer(
                    tx,
                    self._wake,
                    schedule_at=timer.due_at + timedelta(milliseconds=5),
                    instance_id=instance.id,
                )

    async def _defer(
        self,
        tx: PostgresTransaction,
        task: Any,
        *,
        lock: str | None = None,
        schedule_at: Any = None,
        **kwargs: Any,
    ) -> None:
        options: dict[str, Any] = {"connection": tx.connection}
        if lock is not None:
            options["lock"] = lock
        if schedule_at is not None:
            options["schedule_at"] = schedule_at
        try:
            await task.configure(**options).defer_async(**kwargs)
        except procrastinate_errors.ConnectorException as exc:
            raise StorageError(f"could not enqueue {task.name}: {exc}") from exc


#: Held (for one transaction) by the worker that sweeps a queue for stalled work.
_TRY_SWEEP_LOCK: LiteralString = "SELECT pg_try_advisory_xact_lock(%(key)s::bigint)"


def _sweep_key(queue: str) -> int:
    """The advisory lock key of `queue`'s sweep: a stable signed 64-bit hash of its name."""
    digest = hashlib.blake2b(f"hephaestus-sweep:{queue}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)
