"""The distributed runner spends Procrastinate jobs per wake-up of an instance, not per step.

A worker that takes an instance runs its consecutive steps and its fan-out
branches itself, so a linear instance costs one job from start to finish;
timers due in the same slot share one wake-up job; starts made at once share
one transaction without one refused start failing the others; the job queue's
connections are autocommit; and the sweep drives a running instance that no
job holds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from hephaestus import (
    AlreadyRunningError,
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
from hephaestus.runners.procrastinate import ProcrastinateRunner
from hephaestus.storage.postgres import PostgresStorage
from hephaestus.testing import VirtualClock

DR_SEEN: list[tuple[str, str, int]] = []


class _Noted(Step):
    events = ("ok",)

    async def execute(
        self, instance: Instance, config: Mapping[str, Any] | None, context: Context
    ) -> Ok:
        DR_SEEN.append((instance.id, type(self).__name__, context.attempt))
        return Ok("ok", {"by": type(self).__name__})


class DrOne(_Noted):
    pass


class DrTwo(_Noted):
    pass


class DrThree(_Noted):
    pass


class DrLeft(_Noted):
    pass


class DrRight(_Noted):
    pass


class DrLinear(Workflow):
    unique = Unique(key="drlinear")
    start = DrOne
    transitions = {(DrOne, "ok"): DrTwo, (DrTwo, "ok"): DrThree, (DrThree, "ok"): Done}


class DrFan(Workflow):
    unique = Unique(key="drfan")
    start = DrOne
    transitions = {
        (DrOne, "ok"): [DrLeft, DrRight],
        (DrLeft, "ok"): DrThree,
        (DrRight, "ok"): DrThree,
        (DrThree, "ok"): Done,
    }


class DrPause(WaitForEvent):
    pass


class DrTimed(Workflow):
    unique = Unique(key="drtimed")
    start = DrOne
    transitions = {
        (DrOne, "ok"): (DrPause, {"event_name": "go", "timeout_ms": 60_000}),
        (DrPause, "go"): Done,
        (DrPause, "timeout"): Done,
    }


@pytest.fixture(autouse=True)
def _forget_seen() -> None:
    DR_SEEN.clear()


def _runner(*, worker: bool, clock: VirtualClock | None = None) -> ProcrastinateRunner:
    options: dict[str, Any] = {} if clock is None else {"clock": clock}
    return ProcrastinateRunner(
        worker=worker, heartbeat=0.5, stalled_after=2.0, poll_interval=0.05, **options
    )


def _jobs_deferred(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT last_value FROM procrastinate_jobs_id_seq").fetchone()
        called = conn.execute("SELECT is_called FROM procrastinate_jobs_id_seq").fetchone()
    assert row is not None
    assert called is not None
    return int(row[0]) if called[0] else 0


def _queued(url: str, task: str) -> list[tuple[list[str], str]]:
    """The task's jobs: the instance ids each carries (or its lock) and its status."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT args, lock, status FROM procrastinate_jobs WHERE task_name = %s ORDER BY id",
            (task,),
        ).fetchall()
    return [(args.get("instance_ids") or [lock], status) for args, lock, status in rows]


async def _final(app: Hephaestus, instance_id: str) -> Instance:
    async with asyncio.timeout(20):
        while not (instance := await app.get(instance_id)).status.is_final:
            await asyncio.sleep(0.02)
    return instance


async def test_a_linear_instance_costs_one_job_from_start_to_finish(postgres_url: str) -> None:
    async with Hephaestus(PostgresStorage(postgres_url), _runner(worker=True)) as app:
        before = _jobs_deferred(postgres_url)
        iid = await app.start_instance(DrLinear, {}, id="drlinear::one")
        done = await _final(app, iid)

    assert done.status is Status.COMPLETED
    assert [entry.step for entry in done.execution_history] == [
        "dr_one",
        "dr_two",
        "dr_three",
        "done",
    ]
    assert _jobs_deferred(postgres_url) - before == 1  # one drive, no job per step
    assert [(step, attempt) for _, step, attempt in DR_SEEN] == [
        ("DrOne", 1),
        ("DrTwo", 1),
        ("DrThree", 1),
    ]


async def test_fan_out_branches_run_in_the_worker_that_holds_the_instance(
    postgres_url: str,
) -> None:
    async with Hephaestus(PostgresStorage(postgres_url), _runner(worker=True)) as app:
        before = _jobs_deferred(postgres_url)
        iid = await app.start_instance(DrFan, {}, id="drfan::one")
        done = await _final(app, iid)

    assert done.status is Status.COMPLETED
    assert sorted(done.completed_steps) == ["done", "dr_left", "dr_one", "dr_right", "dr_three"]
    assert _jobs_deferred(postgres_url) - before == 1
    assert sorted(step for _, step, _ in DR_SEEN) == ["DrLeft", "DrOne", "DrRight", "DrThree"]


async def test_timers_due_in_one_slot_share_one_wake_up_job(postgres_url: str) -> None:
    clock = VirtualClock(datetime.now(UTC).replace(microsecond=0))
    runner = _runner(worker=True, clock=clock)
    async with Hephaestus(PostgresStorage(postgres_url), runner) as app:
        ids = await asyncio.gather(
            *(app.start_instance(DrTimed, {}, id=f"drtimed::t{n}") for n in range(20))
        )
        async with asyncio.timeout(20):
            while [i for i in ids if (await app.get(i)).status is not Status.WAITING]:
                await asyncio.sleep(0.02)

        # Every timer is due at the same virtual moment: one wake-up job for all twenty.
        assert [status for _, status in _queued(postgres_url, "hephaestus.wake")] == ["todo"]

        clock.advance(61)
        finished = [await _final(app, iid) for iid in ids]

    assert {instance.status for instance in finished} == {Status.COMPLETED}
    assert all(i.execution_history[-2].event == "timeout" for i in finished)


async def test_starts_made_at_once_share_a_transaction_and_a_refused_one_fails_alone(
    postgres_url: str,
) -> None:
    storage = PostgresStorage(postgres_url)
    async with Hephaestus(storage, _runner(worker=False)) as app:
        transactions = storage.stats.transactions
        results = await asyncio.gather(
            *(app.start_instance(DrLinear, {}, id=f"drlinear::s{n % 30}") for n in range(31)),
            return_exceptions=True,
        )
        refused = [r for r in results if isinstance(r, BaseException)]
        assert len(refused) == 1
        assert isinstance(refused[0], AlreadyRunningError)
        assert storage.stats.transactions - transactions < 31
        # Each started instance is stored with its drive, the refused one with none;
        # drives go `drive_batch` instances to a job.
        drives = _queued(postgres_url, "hephaestus.drive")
        assert sorted(iid for ids, _ in drives for iid in ids) == sorted(
            f"drlinear::s{n}" for n in range(30)
        )
        assert app.runner.drive_batch == 5  # type: ignore[attr-defined]
        assert len(drives) == 6
        for n in range(30):
            assert (await app.get(f"drlinear::s{n}")).status is Status.RUNNING


async def test_the_job_queue_pool_is_autocommit(postgres_url: str) -> None:
    runner = _runner(worker=False)
    async with Hephaestus(PostgresStorage(postgres_url), runner):
        pool = runner._queue_pool
        assert pool is not None
        async with pool.connection() as conn:
            assert conn.autocommit


async def test_the_sweep_drives_a_running_instance_no_job_holds(postgres_url: str) -> None:
    runner = _runner(worker=False)
    async with Hephaestus(PostgresStorage(postgres_url), runner) as app:
        iid = await app.start_instance(DrLinear, {}, id="drlinear::lost")
        # Its drive is gone (a drive that gave up), and it was last written long ago.
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute("DELETE FROM procrastinate_jobs WHERE args->'instance_ids' ? %s", (iid,))
            conn.execute(
                "UPDATE workflow_instances SET updated_at = now() - interval '1 hour' "
                "WHERE id = %s",
                (iid,),
            )
        assert _queued(postgres_url, "hephaestus.drive") == []

        await runner.sweep_once()
        assert _queued(postgres_url, "hephaestus.drive") == [([iid], "todo")]

        # A drive is queued now: the next sweep leaves the instance alone.
        await runner.sweep_once()
        assert _queued(postgres_url, "hephaestus.drive") == [([iid], "todo")]


async def test_a_result_recorded_by_the_earlier_design_is_applied_and_the_rest_is_driven(
    postgres_url: str,
) -> None:
    runner = _runner(worker=False)
    storage = PostgresStorage(postgres_url)
    async with Hephaestus(storage, runner) as app:
        iid = await app.start_instance(DrLinear, {}, id="drlinear::old")
        # A queue left by the one-job-per-step design: DrOne's result, recorded, not applied.
        async with storage.transaction() as tx:
            outcome = {"kind": "ok", "event": "ok", "updates": {"by": "old"}, "metadata": {}}
            await tx.record_step_result(iid, "dr_one", 1, outcome, 0.01)

        await runner._advance_job(iid)

        stored = await app.get(iid)
        assert stored.context.steps["dr_one"] == {"by": "old"}
        assert stored.active_steps == frozenset({"dr_two"})
        assert DR_SEEN == []  # dr_one did not run again
        async with storage.transaction() as tx:
            assert await tx.step_results(iid) == []
        # The start's drive, and the advance's for the next step.
        assert [ids for ids, _ in _queued(postgres_url, "hephaestus.drive")] == [[iid], [iid]]
