"""The distributed runner drives batches of instances under claims recorded in storage.

One drive job carries several instances; the worker that takes it claims
them in one statement and drives those it claimed, leaving alone those
another live worker holds. A client's event written while a worker holds an
instance, after that worker's last write, is not lost: the worker's release
is refused at the new revision and it drives the instance again. A worker
that dies holding instances stops renewing its lease; the sweep forgets it,
which releases them, and another worker drives them on without running a
step whose completion was stored again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

import psycopg

from hephaestus import (
    Context,
    Done,
    Hephaestus,
    Instance,
    Ok,
    Status,
    Step,
    Unique,
    WaitForEvent,
    Workflow,
)
from hephaestus.errors import StorageError
from hephaestus.runners.procrastinate import ProcrastinateRunner
from hephaestus.storage.base import RunnerRecord
from hephaestus.storage.postgres import PostgresStorage

CL_SEEN: list[tuple[str, str, int]] = []
#: Set to let `ClHold` finish; until then it blocks (a worker "dies" while it runs).
CL_GATE: dict[str, asyncio.Event] = {}


class _Noted(Step):
    events = ("ok",)

    async def execute(
        self, instance: Instance, config: Mapping[str, Any] | None, context: Context
    ) -> Ok:
        CL_SEEN.append((instance.id, type(self).__name__, context.attempt))
        return Ok("ok", {})


class ClOne(_Noted):
    pass


class ClTwo(_Noted):
    pass


class ClHold(_Noted):
    async def execute(
        self, instance: Instance, config: Mapping[str, Any] | None, context: Context
    ) -> Ok:
        CL_SEEN.append((instance.id, type(self).__name__, context.attempt))
        gate = CL_GATE.get(instance.id)
        if gate is not None:
            await gate.wait()
        return Ok("ok", {})


class ClPause(WaitForEvent):
    pass


class ClLinear(Workflow):
    unique = Unique(key="cllinear")
    start = ClOne
    transitions = {(ClOne, "ok"): ClTwo, (ClTwo, "ok"): Done}


class ClParked(Workflow):
    unique = Unique(key="clparked")
    start = ClOne
    transitions = {
        (ClOne, "ok"): (ClPause, {"event_name": "go"}),
        (ClPause, "go"): ClTwo,
        (ClTwo, "ok"): Done,
    }


class ClHeld(Workflow):
    unique = Unique(key="clheld")
    start = ClOne
    transitions = {(ClOne, "ok"): ClHold, (ClHold, "ok"): ClTwo, (ClTwo, "ok"): Done}


def _runner(*, worker: bool = False, **options: Any) -> ProcrastinateRunner:
    return ProcrastinateRunner(
        worker=worker, heartbeat=0.5, stalled_after=2.0, poll_interval=0.05, **options
    )


def _drive_jobs(url: str) -> list[list[str]]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT args FROM procrastinate_jobs WHERE task_name = 'hephaestus.drive' ORDER BY id"
        ).fetchall()
    return [list(args["instance_ids"]) for (args,) in rows]


def _forget_jobs(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DELETE FROM procrastinate_jobs")


def _owners(url: str, ids: list[str]) -> dict[str, str | None]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT id, owner FROM workflow_instances WHERE id = ANY(%s)", (ids,)
        ).fetchall()
    return {str(iid): owner for iid, owner in rows}


async def _final(app: Hephaestus, instance_id: str, timeout: float = 20) -> Instance:
    async with asyncio.timeout(timeout):
        while not (instance := await app.get(instance_id)).status.is_final:
            await asyncio.sleep(0.02)
    return instance


def _seen(instance_id: str) -> list[tuple[str, int]]:
    return [(step, attempt) for iid, step, attempt in CL_SEEN if iid == instance_id]


async def test_one_job_claims_its_batch_and_leaves_what_a_live_worker_holds(
    postgres_url: str,
) -> None:
    CL_SEEN.clear()
    storage = PostgresStorage(postgres_url)
    runner = _runner(drive_batch=4)
    async with Hephaestus(storage, runner) as app:
        ids = [f"cllinear::b{n}" for n in range(8)]
        for iid in ids:
            await app.start_instance(ClLinear, {}, id=iid)
        # Started one at a time: a job each. Started at once: `drive_batch` to a job.
        _forget_jobs(postgres_url)
        await asyncio.gather(
            *(app.start_instance(ClLinear, {}, id=f"cllinear::g{n}") for n in range(8))
        )
        assert all(len(job) <= 4 for job in _drive_jobs(postgres_url))
        assert sorted(i for job in _drive_jobs(postgres_url) for i in job) == sorted(
            f"cllinear::g{n}" for n in range(8)
        )

        # Another worker, alive, holds two of the first eight.
        now = time.time()
        await storage.register_runner(RunnerRecord("other", "elsewhere", 1, now, now, now + 60))
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(
                "UPDATE workflow_instances SET owner = 'other' WHERE id = ANY(%s)", (ids[:2],)
            )

        await runner._drive_job(instance_ids=ids)

        for iid in ids[2:]:
            assert (await app.get(iid)).status is Status.COMPLETED
            assert _seen(iid) == [("ClOne", 1), ("ClTwo", 1)]
        for iid in ids[:2]:
            assert (await app.get(iid)).status is Status.RUNNING
            assert _seen(iid) == []
        # Finished instances have no owner; the held ones are still the other worker's.
        assert _owners(postgres_url, ids) == {
            **dict.fromkeys(ids[2:]),
            **dict.fromkeys(ids[:2], "other"),
        }

        # A drive job of the earlier design (one instance, `instance_id=`) is served too.
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute("UPDATE workflow_instances SET owner = NULL WHERE id = %s", (ids[0],))
        await runner._drive_job(instance_id=ids[0])
        assert (await app.get(ids[0])).status is Status.COMPLETED
        await storage.remove_runner("other")


async def test_a_job_for_an_instance_its_worker_owns_already_reads_it_again_first(
    postgres_url: str,
) -> None:
    CL_SEEN.clear()
    storage = PostgresStorage(postgres_url)
    runner = _runner()
    async with Hephaestus(storage, runner) as app:
        iid = await app.start_instance(ClParked, {}, id="clparked::mine")
        started = await app.get(iid)
        _forget_jobs(postgres_url)
        await runner._drive_job(instance_ids=[iid])
        assert (await app.get(iid)).status is Status.WAITING
        assert _seen(iid) == [("ClOne", 1)]
        runner_id = runner._runner_id
        assert runner_id is not None
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute("UPDATE workflow_instances SET owner = %s WHERE id = %s", (runner_id, iid))

        # The claim of a later job finds it this worker's already, and read it as of a
        # snapshot older than the earlier drive's writes (here: as it was started).
        claim = storage.claim_for_drive

        async def stale_claim(
            runner: str, ids: Any, *, reread_owned: bool = False
        ) -> tuple[list[Instance], set[str]]:
            if reread_owned:
                return await claim(runner, ids, reread_owned=True)
            return [started], {iid}

        storage.claim_for_drive = stale_claim  # type: ignore[method-assign]
        await runner._drive_job(instance_ids=[iid])

        # ClOne, whose completion is stored, did not run again; the instance was read
        # again, found parked, and released.
        assert _seen(iid) == [("ClOne", 1)]
        assert _owners(postgres_url, [iid]) == {iid: None}
        assert (await app.get(iid)).status is Status.WAITING


async def test_an_event_written_after_the_drives_last_write_is_not_lost(
    postgres_url: str,
) -> None:
    CL_SEEN.clear()
    first, second = _runner(), _runner()
    async with (
        Hephaestus(PostgresStorage(postgres_url), first) as app,
        Hephaestus(PostgresStorage(postgres_url), second) as client,
    ):
        iid = await app.start_instance(ClParked, {}, id="clparked::race")
        _forget_jobs(postgres_url)
        write_releases = first._write_releases
        raced: list[int] = []

        async def event_then_release(batch: list[Any]) -> list[Any]:
            # The drive parked the instance and wrote its last state; before its release,
            # a client delivers the event. The drive job that event queued runs on
            # another worker, finds the instance claimed, and does nothing.
            if not raced:
                parked = await client.get(iid)
                assert parked.status is Status.WAITING
                await client.resume(iid, "go")
                assert _drive_jobs(postgres_url) == [[iid]]
                await second._drive_job(instance_ids=[iid])
                _forget_jobs(postgres_url)
                assert _seen(iid) == [("ClOne", 1)]
                raced.append(parked.revision)
            return await write_releases(batch)

        first._releases._write_batch = event_then_release
        await first._drive_job(instance_ids=[iid])

        done = await app.get(iid)
        assert raced
        assert done.status is Status.COMPLETED  # driven again by the first worker
        assert _seen(iid) == [("ClOne", 1), ("ClTwo", 1)]
        assert _drive_jobs(postgres_url) == []
        assert _owners(postgres_url, [iid]) == {iid: None}


async def test_a_parked_instance_is_released_and_the_next_event_drives_it(
    postgres_url: str,
) -> None:
    CL_SEEN.clear()
    runner = _runner(worker=True)
    async with Hephaestus(PostgresStorage(postgres_url), runner) as app:
        iid = await app.start_instance(ClParked, {}, id="clparked::plain")
        async with asyncio.timeout(20):
            while (await app.get(iid)).status is not Status.WAITING or _owners(postgres_url, [iid])[
                iid
            ]:
                await asyncio.sleep(0.02)
        await app.resume(iid, "go")
        done = await _final(app, iid)
    assert done.status is Status.COMPLETED
    assert _seen(iid) == [("ClOne", 1), ("ClTwo", 1)]


async def test_a_dead_workers_instances_are_taken_over_without_rerunning_stored_steps(
    postgres_url: str,
) -> None:
    CL_SEEN.clear()
    ids = [f"clheld::d{n}" for n in range(3)]
    for iid in ids:
        CL_GATE[iid] = asyncio.Event()
    dying = _runner()
    async with Hephaestus(PostgresStorage(postgres_url), dying) as app:
        for iid in ids:
            await app.start_instance(ClHeld, {}, id=iid)
        _forget_jobs(postgres_url)
        drive = asyncio.create_task(dying._drive_job(instance_ids=ids))
        async with asyncio.timeout(20):
            while len([s for s in CL_SEEN if s[1] == "ClHold"]) < len(ids):
                await asyncio.sleep(0.02)
        dead_id = dying._runner_id
        assert dead_id is not None
        assert set(_owners(postgres_url, ids).values()) == {dead_id}
        # The worker dies: its drive stops mid-step, its lease is not renewed any more,
        # and it hands nothing back.
        drive.cancel()
        lease = dying._lease_task
        assert lease is not None
        lease.cancel()
        dying._lease_task = None
        dying._runner_id = None

    for gate in CL_GATE.values():
        gate.set()
    async with Hephaestus(PostgresStorage(postgres_url), _runner(worker=True)) as app:
        finished = [await _final(app, iid, timeout=30) for iid in ids]
        async with PostgresStorage(postgres_url) as storage:
            assert dead_id not in {r.id for r in await storage.runners()}

    assert {i.status for i in finished} == {Status.COMPLETED}
    for iid in ids:
        # ClOne's completion was stored: never again. ClHold was running: again, same attempt.
        assert _seen(iid) == [("ClOne", 1), ("ClHold", 1), ("ClHold", 1), ("ClTwo", 1)]
    CL_GATE.clear()


async def test_a_drive_that_fails_hands_its_instance_back_with_a_drive_a_second_later(
    postgres_url: str,
) -> None:
    CL_SEEN.clear()
    runner = _runner()
    async with Hephaestus(PostgresStorage(postgres_url), runner) as app:
        iid = await app.start_instance(ClLinear, {}, id="cllinear::fails")
        _forget_jobs(postgres_url)

        def unknown(instance: Instance) -> Any:
            raise LookupError("a workflow this worker does not know")

        known = runner._definitions.get
        runner._definitions.get = unknown  # type: ignore[method-assign]
        await runner._drive_job(instance_ids=[iid])
        runner._definitions.get = known  # type: ignore[method-assign]

        assert _seen(iid) == []
        assert _owners(postgres_url, [iid]) == {iid: None}
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT args, scheduled_at > now() FROM procrastinate_jobs "
                "WHERE task_name = 'hephaestus.drive'"
            ).fetchall()
        assert rows == [({"instance_ids": [iid]}, True)]

        await runner._drive_job(instance_ids=[iid])
        assert (await app.get(iid)).status is Status.COMPLETED


async def test_an_aborted_drive_job_hands_its_instance_back(postgres_url: str) -> None:
    # Procrastinate cancels the task of an aborted job. The worker goes on living (and
    # renewing its lease), so the instance must not stay claimed by it: it is released
    # and driven again, by another worker here.
    CL_SEEN.clear()
    iid = "clheld::aborted"
    CL_GATE[iid] = asyncio.Event()
    holder = _runner()
    async with Hephaestus(PostgresStorage(postgres_url), holder) as app:
        await app.start_instance(ClHeld, {}, id=iid)
        _forget_jobs(postgres_url)
        job = asyncio.create_task(holder._drive_job(instance_ids=[iid]))
        async with asyncio.timeout(10):
            while ("ClHold", 1) not in _seen(iid):
                await asyncio.sleep(0.02)
        job.cancel()
        await asyncio.gather(job, return_exceptions=True)
        CL_GATE[iid].set()
        assert _owners(postgres_url, [iid]) == {iid: None}
        async with Hephaestus(PostgresStorage(postgres_url), _runner(worker=True)) as other:
            done = await _final(other, iid)

    assert done.status is Status.COMPLETED
    assert [e.step for e in done.execution_history] == ["cl_one", "cl_hold", "cl_two", "done"]
    CL_GATE.clear()


async def test_a_running_batch_job_does_not_hide_an_instance_nobody_drives(
    postgres_url: str,
) -> None:
    # A batch job still running (a sibling's long step) lists an instance that nobody
    # owns and nobody wrote for a while (its claim went to a worker that died since): the
    # sweep must queue a drive of it, not take the running job for one.
    runner = _runner()
    async with Hephaestus(PostgresStorage(postgres_url), runner) as app:
        await app.start_instance(ClLinear, {}, id="cllinear::hidden")
        _forget_jobs(postgres_url)
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(
                "UPDATE workflow_instances SET owner = NULL, "
                "updated_at = now() - interval '1 hour' WHERE id = 'cllinear::hidden'"
            )
            row = conn.execute("INSERT INTO procrastinate_workers DEFAULT VALUES RETURNING id")
            worker_id = row.fetchone()
            conn.execute(
                "INSERT INTO procrastinate_jobs (queue_name, task_name, args, status, worker_id) "
                "VALUES ('hephaestus', 'hephaestus.drive', "
                '\'{"instance_ids": ["cllinear::hidden", "cllinear::sibling"]}\', \'doing\', %s)',
                worker_id,
            )

        await runner.sweep_once()

        queued = [ids for ids in _drive_jobs(postgres_url) if "cllinear::hidden" in ids]
        assert len(queued) == 2  # the running batch, and the drive the sweep queued
        _forget_jobs(postgres_url)


class _RenewFailsOnce(PostgresStorage):
    """PostgreSQL storage whose first lease renewal fails (the database blinked)."""

    renewals = 0

    async def renew_runner(self, runner_id: str, now: float, lease_until: float) -> bool:
        self.renewals += 1
        if self.renewals == 1:
            raise StorageError("the database is away for a moment")
        return await super().renew_runner(runner_id, now, lease_until)


async def test_one_failed_lease_renewal_does_not_cost_the_lease(postgres_url: str) -> None:
    # Renewed every 0.9 s for a 1 s lease: after one failed renewal, waiting a whole
    # heartbeat to try again would let the lease lapse (and the worker give its id up).
    storage = _RenewFailsOnce(postgres_url)
    runner = ProcrastinateRunner(heartbeat=0.9, stalled_after=1.0, poll_interval=0.05)
    async with Hephaestus(storage, runner):
        runner_id = await runner._runner()
        async with asyncio.timeout(10):
            while storage.renewals < 1:
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)  # past the first lease: renewed since, not at the next beat

        assert runner._lease_holds(runner_id)
        assert runner._runner_id == runner_id


async def test_long_steps_hold_room_for_their_instances_not_the_worker(
    postgres_url: str,
) -> None:
    # Two jobs' slots (concurrency 4, two instances a job): two instances blocked in a long
    # step, one per job, must not keep the worker from a third instance it has room for.
    CL_SEEN.clear()
    runner = _runner(worker=True, concurrency=4, drive_batch=2)
    long = ("clheld::long1", "clheld::long2")
    async with Hephaestus(PostgresStorage(postgres_url), runner) as app:
        try:
            for iid in long:
                CL_GATE[iid] = asyncio.Event()
                await app.start_instance(ClHeld, {}, id=iid)
            async with asyncio.timeout(10):
                while not all(("ClHold", 1) in _seen(i) for i in long):
                    await asyncio.sleep(0.02)

            await app.start_instance(ClLinear, {}, id="cllinear::meanwhile")
            done = await _final(app, "cllinear::meanwhile", timeout=10)

            assert done.status is Status.COMPLETED
            assert (await app.get(long[0])).status is Status.RUNNING
        finally:
            for gate in CL_GATE.values():
                gate.set()
        assert [(await _final(app, iid)).status for iid in long] == [Status.COMPLETED] * 2
    CL_GATE.clear()


async def test_a_full_worker_makes_room_when_a_drive_ends_and_only_then() -> None:
    from hephaestus.runners.procrastinate import _Room

    room = _Room(limit=3)
    assert await room.take(2, timeout=0.01)
    assert not await room.take(2, timeout=0.05)  # 4 > 3: no room, after waiting
    waiting = asyncio.create_task(room.take(2, timeout=5))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    room.give(1)  # a drive ended: 1 + 2 fits now
    assert await waiting
    assert room.driving == 3
    room.give(3)
    assert await room.take(7, timeout=0.01)  # an idle worker takes one job, however big
