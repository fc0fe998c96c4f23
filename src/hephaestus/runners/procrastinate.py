"""`ProcrastinateRunner`: run instances on many workers and machines, on Procrastinate.

Procrastinate is a PostgreSQL job queue; this runner keeps no scheduler of its
own. It distributes *instances that have work*, not steps, on one queue:

- `hephaestus.drive(instance_ids=[...])` — one job for up to `drive_batch`
  instances that were started or woken together. The worker that takes it
  *claims* them: a claim record in storage (the instance's `owner`, set in
  one statement) says which worker holds an instance; each worker registers
  as a runner with a lease that it renews every `heartbeat` seconds. The
  job ends there; the worker drives every instance it claimed at once, each
  in a task of its own (at most `concurrency`), until each parks or
  finishes: consecutive steps one after the other, fan-out branches
  at once (see `hephaestus.runners._drive`). Each new state is written as
  the owner with the storage's group commit, so the writes of every instance
  a worker drives share transactions, and a worker that lost its claim is
  refused and stops. An instance it could not claim is held by another
  worker, which drives it. A parked instance is released with one
  conditional statement: only at the revision its drive last wrote and with
  no timer due; otherwise (a client wrote it meanwhile, and that write's own
  drive job found it claimed) the worker drives it again. Jobs carry no
  Procrastinate lock: a duplicate drive is harmless, only the claim holder
  runs steps. (A `drive(instance_id=...)` job queued by an earlier version,
  locked by its instance, is still served.)
- `hephaestus.wake()` — a small job scheduled when timers come due. One wake
  job serves every timer due in the same `timer_resolution` slot: it reads
  the instances with due timers and queues their drives in one batch.
- `hephaestus.advance(instance_id)` and `hephaestus.run_step(...)` — the jobs of
  the earlier one-job-per-step design, kept so that a queue left by it drains:
  an advance applies stored step results, a run_step queues a drive.

`start_instance`, `resume`, `cancel`, `schedule_resume` and `cancel_timer`
apply their change in the caller's process, under a row lock on the instance,
and queue the drive the new state needs in the same transaction: the event is
validated against the stored state and written before the call returns, and
no state that needs a worker is stored without its job.

A worker killed mid-drive stops renewing its lease. The sweep (one worker at
a time) forgets runners whose lease lapsed, which releases their instances,
retries the jobs of workers that stopped sending Procrastinate heartbeats,
and queues drives for running instances that nobody owns and no drive job
covers: another worker drives them from their last stored state. A step
whose result was stored never runs again; one that was running runs again
with the same attempt number and idempotency key (steps run at least once).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import math
import os
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, LiteralString, cast

from hephaestus.core import engine
from hephaestus.core.commands import RunStep
from hephaestus.core.definition import BaseWorkflow
from hephaestus.core.engine import Advance
from hephaestus.core.facts import TimerScheduled
from hephaestus.core.instance import Instance
from hephaestus.core.keys import validate_id
from hephaestus.core.step import Step
from hephaestus.errors import (
    ConcurrencyError,
    HephaestusError,
    InstanceNotFoundError,
    StorageError,
)
from hephaestus.runners._drive import Drive
from hephaestus.runners._recorded import apply_recorded
from hephaestus.runners._shell import (
    Clock,
    DefinitionCache,
    KeyedLocks,
    check_event,
    new_instance,
    report,
    step_key,
    utc_now,
)
from hephaestus.runners.base import TimerHandle
from hephaestus.storage._group_commit import GroupCommit
from hephaestus.storage.base import RunnerRecord, Storage
from hephaestus.telemetry import lifecycle

try:
    import procrastinate
    import psycopg_pool
    from procrastinate import exceptions as procrastinate_errors
    from psycopg import sql
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "the distributed runner needs its extra: pip install 'hephaestus-workflows[distributed]'"
    ) from exc

if TYPE_CHECKING:
    from procrastinate.types import JSONValue

    from hephaestus.storage.postgres import PostgresStorage, PostgresTransaction

__all__ = ["ProcrastinateRunner"]

logger = logging.getLogger("hephaestus.runner.procrastinate")

DRIVE = "hephaestus.drive"
WAKE = "hephaestus.wake"
ADVANCE = "hephaestus.advance"
RUN_STEP = "hephaestus.run_step"


class ProcrastinateRunner:
    """Runs instances on any number of worker processes, one Procrastinate job per batch of
    instances started or woken together.

    - `queue`: the Procrastinate queue the jobs go to.
    - `worker`: also run a worker inside this process while the app is open
      (handy for tests and single-machine deployments); otherwise start workers
      with `hephaestus worker --app MODULE:app`.
    - `concurrency`: instances one worker drives at once (each with all of
      its running branches; at least one job's worth). A job ends once its
      instances are claimed, each then driven by a task of its own, so a long
      step holds room for its instance, not a job slot of the worker.
    - `drive_batch`: instances one drive job carries at most; by default
      `max(1, min(50, concurrency // 2))`: big enough that Procrastinate's
      per-job cost is shared by many instances, small enough that a worker
      fills its `concurrency` with at least two jobs, so a burst is cut into
      jobs that spread over every worker (see docs/distributed.md).
    - `stalled_after`: seconds without a heartbeat after which a worker's jobs
      are retried elsewhere and its claims lapse (its lease); `heartbeat` is
      how often workers send one and renew their lease.
    - `step_threads`: threads a worker runs sync steps on.
    - `poll_interval`: how often an idle worker looks for jobs that became due
      (timers); new jobs wake workers at once through LISTEN/NOTIFY.
    - `timer_resolution`: timers due within the same slot of this many seconds
      share one wake-up job (a timer fires at most this much later).
    """

    def __init__(
        self,
        *,
        queue: str = "hephaestus",
        worker: bool = False,
        concurrency: int = 10,
        drive_batch: int | None = None,
        stalled_after: float = 30.0,
        heartbeat: float = 10.0,
        step_threads: int = 16,
        poll_interval: float = 0.2,
        timer_resolution: float = 0.1,
        clock: Clock = utc_now,
    ) -> None:
        if heartbeat >= stalled_after:
            raise ValueError("heartbeat must be shorter than stalled_after")
        if timer_resolution <= 0:
            raise ValueError("timer_resolution must be positive")
        self.queue = queue
        self._embedded_worker = worker
        self.concurrency = concurrency
        if drive_batch is not None and drive_batch < 1:
            raise ValueError("drive_batch must be at least 1")
        self.drive_batch = drive_batch or max(1, min(50, concurrency // 2))
        self.stalled_after = stalled_after
        self.heartbeat = heartbeat
        self.poll_interval = poll_interval
        self.timer_resolution = timer_resolution
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
        self._queue_pool: _QueuePool | None = None
        #: This worker's runner id in storage (the owner of what it claims), once it joined.
        self._runner_id: str | None = None
        self._runner_started = time.time()
        #: Real time until which the lease of `_runner_id` surely holds (renewal sent before it).
        self._lease_holds_until = 0.0
        self._joining = asyncio.Lock()
        self._lease_task: asyncio.Task[None] | None = None
        #: Instances (id, created_at) a drive of this worker runs now: a second job skips
        #: them, and sets their flag so that the drive claims them again when it ends.
        self._driving: dict[tuple[str, datetime], bool] = {}
        #: A worker's drives, each of one claimed instance, run apart from the job that
        #: claimed it (the job ends once its instances are claimed). `_room` (set by
        #: `run_worker`) bounds how many at once.
        self._drives: set[asyncio.Task[None]] = set()
        self._room: _Room | None = None
        self._sweeps = 0
        #: Releases of parked instances at the same moment share one statement.
        self._releases: GroupCommit[_Release] = GroupCommit(
            self._write_releases,
            name="hephaestus releases",
            interrupted="the runner closed before this release was stored",
        )
        #: Wake-up slots this process queued a wake job for (slot -> due time): skip them.
        self._wake_slots: dict[int, float] = {}
        #: Starts made at the same moment share one transaction (and one batch of drives).
        self._starts: GroupCommit[_Start] = GroupCommit(
            self._write_starts,
            name="hephaestus starts",
            interrupted="the runner closed before this start was stored; it was not",
        )
        self.procrastinate = procrastinate.App(connector=procrastinate.PsycopgConnector())
        retry = procrastinate.RetryStrategy(max_attempts=20, wait=1)
        task = self.procrastinate.task
        # Drives have no queueing lock, so a retried drive never collides with a queued
        # one (Procrastinate #1543); a drive with nothing to do is cheap.
        self._drive = task(name=DRIVE, queue=queue, retry=retry)(self._drive_job)
        # No retry for wake-ups and advances: a retry could collide with a newer queued
        # job on its queueing lock (Procrastinate #1543); the sweep covers what they miss.
        self._wake = task(name=WAKE, queue=queue)(self._wake_job)
        self._advance = task(name=ADVANCE, queue=queue)(self._advance_job)
        self._run_step = task(name=RUN_STEP, queue=queue, retry=retry)(self._run_step_job)

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
        self._queue_pool = await self._open_queue_pool(storage)
        self._storage = storage
        self._pool = ThreadPoolExecutor(self._step_threads, thread_name_prefix="hephaestus-step")
        await self.procrastinate.open_async(self._queue_pool)
        lifecycle.runner_init(type(self).__name__, type(storage).__name__, queue=self.queue)
        if self._embedded_worker:
            self._worker_task = asyncio.create_task(
                self.run_worker(install_signal_handlers=False), name="hephaestus:worker"
            )

    async def _open_queue_pool(
        self, storage: PostgresStorage
    ) -> psycopg_pool.AsyncConnectionPool[Any]:
        """Procrastinate's own pool: autocommit, no check on checkout.

        Each queue query is one statement, so autocommit spares a BEGIN and a
        COMMIT round trip around it, and a connection is not pinged before
        every use (a broken one fails its query, is discarded by the pool, and
        the job or call is retried). Procrastinate's LISTEN connection takes
        the same settings.
        """
        pool: _QueuePool = psycopg_pool.AsyncConnectionPool(
            storage.url,
            min_size=1,
            max_size=min(self.concurrency, 16) + 4,
            open=False,
            # Not `kwargs`: Procrastinate opens its LISTEN connection with the pool's
            # kwargs plus its own `autocommit=True`, and refuses a second one.
            configure=_autocommit,
            name=f"hephaestus jobs {storage.where}",
        )
        await pool.open(wait=True, timeout=storage.connect_timeout)
        return pool

    async def close(self) -> None:
        await self._starts.drain()
        if self._worker_task is not None:
            self._worker_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker_task
            self._worker_task = None
        await self._leave()
        for task in list(self._waking):
            task.cancel()
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

        The worker registers as a runner in storage first (its claims are
        recorded under that id) and renews its lease every `heartbeat`
        seconds; on a clean exit it hands its instances back (released, with
        a drive queued for each) and deregisters. Alongside, it sweeps for
        the work of dead workers (see `sweep_once`).
        """
        await self._runner()
        self._room = _Room(concurrency or self.concurrency)
        stalled = asyncio.create_task(self._retry_stalled_jobs(), name="hephaestus:stalled")
        try:
            await self.procrastinate.run_worker_async(
                queues=[self.queue],
                # `concurrency` counts instances; a job drives up to `drive_batch` of them.
                concurrency=-(-(concurrency or self.concurrency) // self.drive_batch),
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
            await self._stop_drives()
            await self._leave()

    async def _stop_drives(self) -> None:
        """Let the drives running here go on for a while (their steps may end and be
        stored), then cancel the rest: each hands its instance back."""
        if self._drives:
            _, running = await asyncio.wait(set(self._drives), timeout=self.stalled_after / 2)
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)

    async def _recover_stalled(self, job: procrastinate.jobs.Job) -> None:
        """Take over a job of a dead worker.

        A drive (or a step job of the earlier design) is retried as it is: the
        instance is driven again from its last stored state. A stalled advance
        is closed and a fresh advance queued instead: retrying it could collide
        with an advance queued meanwhile on the queueing lock (Procrastinate
        #1543), and while it stays `doing` its lock would block the instance.
        """
        manager = self.procrastinate.job_manager
        logger.warning("taking over job %s of a stalled worker: %s", job.id, job.task_name)
        if job.task_name == WAKE:
            # Its queueing lock may be taken by a newer wake-up: close it; the sweep
            # queues the drives of the timers it would have fired.
            await manager.finish_job(job, procrastinate.jobs.Status.FAILED, delete_job=True)
            return
        if job.task_name != ADVANCE:
            await manager.retry_job(job)
            return
        await manager.finish_job(job, procrastinate.jobs.Status.FAILED, delete_job=True)
        await self._enqueue_advance(str(job.task_kwargs["instance_id"]))

    async def wait_idle(self, timeout: float | None = None) -> None:
        """Wait until this runner's queue has no job to do now (timers due later aside)
        and the worker in this process, if any, drives nothing."""
        storage = self._storage_or_raise()
        async with asyncio.timeout(timeout):
            while self._drives or await storage.pending_jobs(self.queue):
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

        - Runners whose lease lapsed (killed workers) are forgotten, which
          releases the instances they held.
        - Jobs of workers that stopped sending heartbeats (killed) are retried.
        - Instances with step results or due timers that nobody applied for
          `stalled_after` seconds (a wake-up or an advance failed, or its
          process died before queueing it) get an advance.
        - Running instances that nobody owns, with no drive queued, that were
          not written for `stalled_after` seconds (their worker died, or a
          drive gave up: the database was down longer than its retries) get a
          drive.

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
            self._sweeps += 1
            reaped = await storage.reap_runners(
                time.time(), orphans=self._sweeps % _ORPHAN_SWEEPS == 1
            )
            if reaped:
                logger.warning(
                    "worker(s) %s stopped renewing their lease; their instances are released",
                    ", ".join(reaped),
                )
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
            undriven_query = sql.SQL(_UNDRIVEN).format(schema=sql.Identifier(storage.schema))
            cursor = await conn.execute(
                undriven_query, {"seconds": self.stalled_after, "queue": self.queue}
            )
            undriven = [str(row[0]) for row in await cursor.fetchall()]
            if undriven:
                logger.warning("driving %d running instances nobody drives", len(undriven))
                await self._defer_drives(undriven)
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
        self._storage_or_raise()
        advance = new_instance(
            workflow,
            context,
            id=id,
            version=version,
            telemetry_metadata=telemetry_metadata,
            now=self._now(),
        )
        start = _Start(advance)
        await self._starts.submit(start)
        advance = start.advance
        await self._schedule_wakes(None, advance.instance)
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
            # drive's engine call that parks it.
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
        """Run a failed instance again from its failed steps, with a drive queued for it."""
        validate_id(id)

        def decide(instance: Instance) -> Advance:
            engine.check_failed(instance)  # before its workflow is looked up
            definition = self._definitions.get(instance)
            return engine.retry(definition, instance, now=self._now())

        await self._apply(id, decide)

    # -- jobs --

    async def _drive_job(
        self, instance_ids: list[str] | None = None, instance_id: str | None = None
    ) -> None:
        """Claim the job's instances and drive each one this worker claimed, at once.

        (`instance_id` is what drive jobs of the earlier one-instance-per-job
        design carry.) An instance not claimed is held by another worker,
        which drives it and catches, when it releases it, any change that
        this job was queued for.
        """
        ids = list(instance_ids or ())
        if instance_id is not None:
            ids.append(instance_id)
        storage = self._storage_or_raise()
        runner_id = await self._runner()
        if not self._lease_holds(runner_id):
            raise StorageError("this worker's lease may have lapsed; the drive is retried")
        room = self._room
        if room is not None and not await room.take(len(ids), _ROOM_WAIT):
            # This worker drives all it may (long steps, say): the job goes back to the queue
            # for a worker with room, rather than holding a slot of this one for longer.
            await self._defer_drives(ids, delay=_FULL_DELAY)
            return
        try:
            claimed, owned = await storage.claim_for_drive(runner_id, ids)
        except BaseException:  # a cancel (an aborted job) too: the claim may have committed
            if room is not None:
                room.give(len(ids))
            # Whether the claim was stored is unknown: give this id up, so that what it may
            # hold is released when its lease lapses; the job is retried under a new one.
            self._abandon(runner_id)
            raise
        mine: dict[str, Instance] = {}
        for instance in claimed:
            key = (instance.id, instance.created_at)
            if key in self._driving:
                # A drive of this worker runs it (an earlier instance with the same id does
                # not count): it claims it again once it ends, in case its release came
                # before this claim.
                self._driving[key] = True
            elif instance.id not in mine:
                # One this worker owned already was read as of the claim's snapshot, maybe
                # before a drive of it here wrote and ended: claimed (and read) again first.
                self._driving[key] = instance.id in owned
                mine[instance.id] = instance
        if room is None:  # not a worker (a test, say): the job drives them itself
            await asyncio.gather(*(self._drive_held(runner_id, i) for i in mine.values()))
            return
        room.give(len(ids) - len(mine))
        for instance in mine.values():
            # Driven apart from this job, which ends now: a long step holds room for one
            # instance, not a job slot of the worker (wake-ups and other drives get one).
            task = asyncio.create_task(
                self._drive_in_room(room, runner_id, instance),
                name=f"hephaestus:drive:{instance.id}",
            )
            self._drives.add(task)
            task.add_done_callback(self._drives.discard)

    async def _drive_in_room(self, room: _Room, runner_id: str, instance: Instance) -> None:
        try:
            await self._drive_held(runner_id, instance)
        finally:
            room.give(1)

    async def _drive_held(self, runner_id: str, instance: Instance) -> None:
        """Drive an instance this worker claimed; again while other jobs claimed it meanwhile.

        While its key is in `_driving`, no other drive of it starts in this
        worker; a claim read after that (`reread_owned`) sees every write of
        this worker's earlier drives of it.
        """
        key = (instance.id, instance.created_at)
        try:
            while True:
                if self._driving.get(key):
                    self._driving[key] = False
                    if not self._lease_holds(runner_id):
                        # This id was given up: a new claim under it would lapse unrenewed.
                        await self._defer_drives([instance.id])
                        return
                    current = await self._claim_again(runner_id, instance)
                    if current is None:
                        return  # finished, or another worker holds it now
                    instance = current
                await self._drive_claimed(runner_id, instance)
                if not self._driving.get(key):
                    return
        except Exception:
            logger.exception("could not claim %s again; its claim lapses", instance.id)
            self._abandon(runner_id)
        finally:
            self._driving.pop(key, None)

    async def _drive_claimed(self, runner_id: str, instance: Instance) -> None:
        """Drive a claimed instance until it parks or finishes, then release it.

        A release refused (a client wrote the instance after this drive's last
        write, or a timer came due) drives it again from what is stored. A
        drive that fails, or that keeps being woken, hands the instance back:
        released with a drive job queued, in one transaction.
        """
        storage = self._storage_or_raise()
        try:
            for _ in range(_REDRIVES):
                run = Drive(
                    storage,
                    self._definitions.get,
                    instance,
                    self._now,
                    self._pool,
                    self._schedule_wakes,
                    owner=runner_id,
                    may_start=lambda: self._lease_holds(runner_id),
                )
                await run.run()
                if run.lapsed:
                    # Its lease may lapse: it gives this id up (a renewal that comes late
                    # must not keep it alive), so it is reaped and what it held released.
                    self._abandon(runner_id)
                    return
                if run.gone:
                    return  # finished, replaced or deleted; or another worker holds it now
                try:
                    release = _Release(instance.id, runner_id, run.instance.revision)
                    await self._releases.submit(release)
                    return
                except ConcurrencyError:
                    pass  # kept: changed since, or a timer is due; drive it again
                current = await self._claim_again(runner_id, instance)
                if current is None:
                    return
                instance = current
        except asyncio.CancelledError:
            # The job was aborted, or the worker stops: hand the instance back before going,
            # or it would stay owned by a worker that goes on renewing its lease.
            await asyncio.shield(self._hand_back(runner_id, instance.id))
            raise
        except Exception:
            logger.exception("the drive of %s failed; it is queued again", instance.id)
        await self._hand_back(runner_id, instance.id)

    async def _claim_again(self, runner_id: str, instance: Instance) -> Instance | None:
        """`instance` as stored now, claimed (or still held) by this worker; `None` if it
        finished, another worker holds it, or another start replaced it (same id)."""
        again, _ = await self._storage_or_raise().claim_for_drive(
            runner_id, [instance.id], reread_owned=True
        )
        return next((i for i in again if i.created_at == instance.created_at), None)

    async def _write_releases(self, batch: list[_Release]) -> list[HephaestusError | None]:
        storage = self._storage_or_raise()
        kept = set(
            await storage.release_driven(
                [(r.instance_id, r.owner, r.revision) for r in batch], self._now()
            )
        )
        return [
            ConcurrencyError(f"instance {r.instance_id} changed while it was driven")
            if r.instance_id in kept
            else None
            for r in batch
        ]

    async def _hand_back(self, runner_id: str, instance_id: str) -> None:
        """Release the instance and queue a drive of it, in one transaction.

        If even that fails (the database is unreachable), this worker gives up
        its runner id: its lease lapses, the sweep releases everything it held
        and queues the drives (a new id claims from now on).
        """
        storage = self._storage_or_raise()
        try:
            async with storage.transaction() as tx:
                await tx.release(instance_id, runner_id)
                # Not at once: a drive that fails every time (a workflow this worker does
                # not know) is tried again every second, not in a busy loop.
                await self._defer_drives([instance_id], tx.connection, delay=_HAND_BACK_DELAY)
        except Exception:
            logger.exception(
                "could not hand %s back; its claim lapses with this lease", instance_id
            )
            self._abandon(runner_id)

    # -- this worker as a runner in storage --

    async def _runner(self) -> str:
        """This worker's runner id, registered (with a lease being renewed) on first use."""
        async with self._joining:
            if self._runner_id is None:
                storage = self._storage_or_raise()
                host = socket.gethostname()
                runner_id = f"procrastinate:{host}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
                now = time.time()
                await storage.register_runner(
                    RunnerRecord(
                        runner_id,
                        host,
                        os.getpid(),
                        self._runner_started,
                        now,
                        now + self.stalled_after,
                    )
                )
                self._runner_id = runner_id
                self._lease_holds_until = now + self.stalled_after
            if self._lease_task is None:
                self._lease_task = asyncio.create_task(self._keep_lease(), name="hephaestus:lease")
            return self._runner_id

    def _lease_holds(self, runner_id: str) -> bool:
        """Whether `runner_id` is this worker's current id and its lease surely holds."""
        return runner_id == self._runner_id and time.time() < self._lease_holds_until

    def _abandon(self, runner_id: str) -> None:
        """Stop renewing `runner_id` (if it is the current id): the next drive joins anew."""
        if self._runner_id == runner_id:
            logger.warning("worker %s gives its runner id up; its claims lapse", runner_id)
            self._runner_id = None
            self._lease_holds_until = 0.0

    async def _keep_lease(self) -> None:
        """Renew the lease every `heartbeat` seconds (a failed renewal is tried again after a
        twelfth of the lease, each try bounded by a heartbeat); join anew if it was reaped."""
        storage = self._storage_or_raise()
        delay = self.heartbeat
        while True:
            await asyncio.sleep(delay)
            delay = self.heartbeat
            runner_id = self._runner_id
            if runner_id is None:
                continue  # abandoned: the next drive job joins anew
            sent = time.time()
            try:
                async with asyncio.timeout(self.heartbeat):
                    renewed = await storage.renew_runner(runner_id, sent, sent + self.stalled_after)
            except Exception as exc:
                logger.warning("worker %s could not renew its lease: %s", runner_id, exc)
                # One lost renewal must not cost the lease: try again well before it lapses.
                delay = min(self.heartbeat, self.stalled_after / 12)
                continue
            if runner_id != self._runner_id:
                continue
            if renewed:
                self._lease_holds_until = sent + self.stalled_after
            else:  # reaped: its instances were released and may be claimed by others
                self._abandon(runner_id)

    async def _leave(self) -> None:
        """Stop renewing; hand every instance this worker holds back and deregister."""
        if self._lease_task is not None:
            self._lease_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._lease_task
            self._lease_task = None
        runner_id, self._runner_id = self._runner_id, None
        storage = self._storage
        if runner_id is None or storage is None:
            return
        try:
            await self._releases.drain()
            async with storage.transaction() as tx:
                query = sql.SQL(_HAND_OVER).format(schema=sql.Identifier(storage.schema))
                cursor = await tx.connection.execute(query, {"runner": runner_id})
                held = [str(row[0]) for row in await cursor.fetchall()]
                await self._defer_drives(held, tx.connection)
            await storage.remove_runner(runner_id)
        except Exception as exc:
            logger.warning(
                "worker %s could not deregister (%s); its lease lapses in %.1fs",
                runner_id,
                exc,
                self.stalled_after,
            )

    async def _wake_job(self, instance_id: str | None = None) -> None:
        """Queue a drive, in one batch, for every instance whose timer is due now.

        (`instance_id` is what wake jobs of the earlier design carry; every due
        timer is served either way.)
        """
        await self._advance_due()

    async def _run_step_job(self, instance_id: str, step: str, attempt: int) -> None:
        """A step job of the earlier design, left in the queue: the instance's drive runs it."""
        await self._defer_drives([instance_id])

    async def _advance_job(self, instance_id: str) -> None:
        """Apply step results recorded by the earlier design and due timers, then queue a drive."""
        storage = self._storage_or_raise()
        async with storage.transaction() as tx:
            before = await tx.get(instance_id, for_update=True)
            rows = await tx.step_results(instance_id)
            advance, decisions = apply_recorded(
                self._definitions.get(before), before, rows, self._now()
            )
            await tx.delete_step_results([row["id"] for row in rows])
            if advance.instance is not before:
                await tx.put(advance.instance, before.revision)
                await self._dispatch(tx, advance)
            elif engine.recover(before):
                await self._dispatch(tx, Advance(before, engine.recover(before)))
        await self._schedule_wakes(before, advance.instance)
        for decision in decisions:
            report(decision, since=before.updated_at)

    def wake_timers(self) -> None:
        """Queue a drive now for every instance with a due timer (the clock moved, say).

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
        """Queue drives, in one batch, for the instances with due timers and no drive queued.

        One batch reads at most `_WAKE_BATCH` instances; if there were that many,
        another wake-up is queued for the next slot, to read the next ones once
        these drives have fired theirs.
        """
        storage = self._storage_or_raise()
        due = await storage.due_timers(self._now(), _WAKE_BATCH)
        if not due:
            return
        async with self._queue_pool_or_raise().connection() as conn:
            cursor = await conn.execute(
                _QUEUED_DRIVES, {"queue": self.queue, "task": DRIVE, "ids": due}
            )
            queued = {str(row[0]) for row in await cursor.fetchall()}
        await self._defer_drives([iid for iid in due if iid not in queued])
        if len(due) >= _WAKE_BATCH:
            await self._queue_wake(math.ceil(time.time() / self.timer_resolution) + 1)

    async def _enqueue_advance(self, instance_id: str) -> None:
        """Queue an advance of the instance, unless one is queued already."""
        # An AlreadyEnqueued advance will apply what is stored now.
        with contextlib.suppress(procrastinate_errors.AlreadyEnqueued):
            await self._advance.configure(lock=instance_id, queueing_lock=instance_id).defer_async(
                instance_id=instance_id
            )

    async def _defer_drives(
        self, instance_ids: list[str], connection: Any = None, *, delay: float | None = None
    ) -> None:
        """Queue drives of the instances, `drive_batch` per job, all in one statement (on
        `connection`, if given; `delay` seconds from now, if given). No Procrastinate
        lock: the claim says who drives."""
        if not instance_ids:
            return
        size = self.drive_batch
        timing: dict[str, Any] = {} if delay is None else {"schedule_in": {"seconds": delay}}
        jobs = [
            self._drive.configure(**timing).make_new_job(
                instance_ids=cast("list[JSONValue]", instance_ids[at : at + size])
            )
            for at in range(0, len(instance_ids), size)
        ]
        try:
            await self.procrastinate.job_manager.batch_defer_jobs_async(jobs, connection=connection)
        except procrastinate_errors.ConnectorException as exc:
            raise StorageError(f"could not queue {len(jobs)} drive job(s): {exc}") from exc

    # -- internals --

    def _queue_pool_or_raise(self) -> _QueuePool:
        if self._queue_pool is None:
            raise StorageError(
                "the runner is not open; use it through `async with Hephaestus(...)`"
            )
        return self._queue_pool

    def _storage_or_raise(self) -> PostgresStorage:
        if self._storage is None:
            raise StorageError(
                "the runner is not open; use it through `async with Hephaestus(...)`"
            )
        return self._storage

    async def _apply(self, instance_id: str, decide: Callable[[Instance], Advance]) -> Advance:
        """Apply a caller's change under the instance's row lock, with the drive it implies,
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
                await self._dispatch(tx, advance)
        if advance.instance is not before:
            await self._schedule_wakes(before, advance.instance)
        report(advance, since=before.updated_at)
        return advance

    async def _write_starts(self, batch: list[_Start]) -> list[HephaestusError | None]:
        """Store new instances started at the same moment in one transaction, with their drives.

        A start the storage refuses (an instance with its id is running) fails
        alone. If the transaction itself fails, each start is tried again in a
        transaction of its own, so one bad start never fails the others.
        """
        storage = self._storage_or_raise()
        try:
            async with storage.transaction() as tx:
                outcomes = [await self._store_start(tx, start) for start in batch]
                started = [s.advance for s, outcome in zip(batch, outcomes, strict=True)]
                await self._defer_drives(
                    [
                        advance.instance.id
                        for advance, outcome in zip(started, outcomes, strict=True)
                        if outcome is None and _runs_steps(advance)
                    ],
                    tx.connection,
                )
            return outcomes
        except Exception:
            if len(batch) == 1:
                raise
        alone: list[HephaestusError | None] = []
        for start in batch:
            try:
                [outcome] = await self._write_starts([start])
            except HephaestusError as exc:
                outcome = exc
            alone.append(outcome)
        return alone

    async def _store_start(self, tx: PostgresTransaction, start: _Start) -> HephaestusError | None:
        try:
            start.advance, replaces = await _after_previous(tx, start.advance)
            await tx.put(start.advance.instance, None)
        except HephaestusError as exc:
            return exc  # refused before anything of it was written
        if replaces:
            # Results an earlier instance with this id left unapplied are not this one's.
            await tx.forget_step_results(start.advance.instance.id)
        return None

    async def _dispatch(self, tx: PostgresTransaction, advance: Advance) -> None:
        """Queue, in the state's own transaction, the drive its new steps need.

        Stopping steps needs no job: a driver that runs them learns of the new
        state at its next write, and the engine ignores their results.
        """
        if _runs_steps(advance):
            await self._defer_drives([advance.instance.id], tx.connection)

    async def _schedule_wakes(self, before: Instance | None, instance: Instance) -> None:
        """Queue the wake-up jobs of the instance's new timers, one per `timer_resolution` slot.

        Queued after the state is committed: if this process dies first, the
        sweep finds the overdue timer. A slot's wake job serves every timer
        due in it (its queueing lock keeps one per slot across workers).
        """
        if not instance.status.is_active or not instance.timers:
            return
        known = set() if before is None else {timer.id for timer in before.timers}
        now = time.time()
        for slot, due in list(self._wake_slots.items()):
            if due < now - 1.0:
                del self._wake_slots[slot]
        for timer in instance.timers:
            if timer.id in known:
                continue
            slot = math.ceil(timer.due_at.timestamp() / self.timer_resolution)
            due_at = slot * self.timer_resolution
            # A slot already past may have had its wake-up run: queue one again.
            if slot in self._wake_slots and due_at > now + self.timer_resolution:
                continue
            self._wake_slots[slot] = due_at
            await self._queue_wake(slot)

    async def _queue_wake(self, slot: int) -> None:
        """Queue the wake-up job of a `timer_resolution` slot, unless one is queued."""
        due_at = slot * self.timer_resolution
        with contextlib.suppress(procrastinate_errors.AlreadyEnqueued):
            try:
                await self._wake.configure(
                    schedule_at=datetime.fromtimestamp(due_at, UTC) + timedelta(milliseconds=5),
                    queueing_lock=f"{self.queue}:wake:{slot}",
                ).defer_async()
            except procrastinate_errors.ConnectorException as exc:
                self._wake_slots.pop(slot, None)
                raise StorageError(f"could not queue a timer wake-up: {exc}") from exc


_QueuePool = psycopg_pool.AsyncConnectionPool[Any]


async def _autocommit(connection: Any) -> None:
    await connection.set_autocommit(True)


#: Timers one wake-up reads per query.
_WAKE_BATCH = 1000

#: Held (for one transaction) by the worker that sweeps a queue for stalled work.
_TRY_SWEEP_LOCK: LiteralString = "SELECT pg_try_advisory_xact_lock(%(key)s::bigint)"

#: Drives a job of this worker retries in-process when its release is refused, at most.
_REDRIVES = 5

#: Seconds after which the drive of an instance handed back after a failure runs.
_HAND_BACK_DELAY = 1.0

#: Seconds a drive job waits for room in a full worker, and after which, put back on the
#: queue, it runs again.
_ROOM_WAIT = 1.0
_FULL_DELAY = 0.05

#: Every how many sweeps the sweep also releases instances of unregistered owners.
_ORPHAN_SWEEPS = 20

#: Of the given instance ids, those with a drive queued and not started (it will read them):
#: in a job's `instance_ids`, or the lock of a drive of the earlier design.
_QUEUED_DRIVES: LiteralString = """
SELECT x.id FROM procrastinate_jobs j,
    jsonb_array_elements_text(j.args->'instance_ids') AS x(id)
WHERE j.queue_name = %(queue)s AND j.task_name = %(task)s AND j.status = 'todo'
    AND j.args->'instance_ids' ?| %(ids)s::text[] AND x.id = ANY(%(ids)s::text[])
UNION
SELECT lock FROM procrastinate_jobs
WHERE queue_name = %(queue)s AND task_name = %(task)s AND status = 'todo'
    AND lock = ANY(%(ids)s::text[])
"""

#: Running instances nobody owns, not written for a while, that no drive covers: a queued
#: one, or a running one of the earlier design (locked by the instance). A running batch
#: drive does not cover an instance nobody owns: it never claimed it, or released it.
_UNDRIVEN: LiteralString = """
SELECT i.id FROM {schema}.workflow_instances i
WHERE i.status = 'running' AND i.owner IS NULL AND i.problem IS NULL
    AND i.updated_at < now() - make_interval(secs => %(seconds)s)
    AND NOT EXISTS (
        SELECT 1 FROM procrastinate_jobs j
        WHERE j.queue_name = %(queue)s
            AND (
                (j.status = 'todo' AND j.args->'instance_ids' ? i.id)
                OR (j.status IN ('todo', 'doing') AND j.lock = i.id)
            )
    )
LIMIT 1000
"""

#: A worker leaving: release what it holds; the active ones get a drive.
_HAND_OVER: LiteralString = """
UPDATE {schema}.workflow_instances SET owner = NULL
WHERE owner = %(runner)s
RETURNING id
"""


class _Room:
    """How many more instances a worker may drive: `concurrency` at most, but always one
    job's worth when it drives nothing (a job may carry more than `concurrency`)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.driving = 0
        self._freed = asyncio.Event()

    async def take(self, count: int, timeout: float) -> bool:
        """Make room for `count` more, waiting at most `timeout` seconds; whether it did."""
        try:
            async with asyncio.timeout(timeout):
                while self.driving and self.driving + count > self.limit:
                    self._freed.clear()
                    await self._freed.wait()
        except TimeoutError:
            return False
        self.driving += count
        return True

    def give(self, count: int) -> None:
        """Give room for `count` back (no wait: safe in a `finally` of a cancelled task)."""
        self.driving -= count
        self._freed.set()


class _Release:
    """A parked instance whose drive ended, to release at the revision it last wrote."""

    __slots__ = ("instance_id", "owner", "revision")

    def __init__(self, instance_id: str, owner: str, revision: int) -> None:
        self.instance_id = instance_id
        self.owner = owner
        self.revision = revision


class _Start:
    """One `start_instance` waiting for the batch that stores it (its advance may be renumbered)."""

    __slots__ = ("advance",)

    def __init__(self, advance: Advance) -> None:
        self.advance = advance


def _runs_steps(advance: Advance) -> bool:
    return any(isinstance(command, RunStep) for command in advance.commands)


async def _after_previous(tx: PostgresTransaction, advance: Advance) -> tuple[Advance, bool]:
    """A new instance numbered past the finished instance it replaces (same id), if any;
    and whether there is one.

    A worker may still run a step of a cancelled instance when a new instance
    takes its id; its write expects the old instance's revision, so the new
    instance's revisions must never meet the old ones.
    """
    try:
        previous = await tx.get(advance.instance.id, for_update=True)
    except InstanceNotFoundError:
        return advance, False
    if previous.revision < advance.instance.revision:
        return advance, True
    renumbered = advance.instance.evolve(revision=previous.revision + 1)
    return dataclasses.replace(advance, instance=renumbered), True


def _sweep_key(queue: str) -> int:
    """The advisory lock key of `queue`'s sweep: a stable signed 64-bit hash of its name."""
    digest = hashlib.blake2b(f"hephaestus-sweep:{queue}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)
