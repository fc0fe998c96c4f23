"""The stalled-job sweep of the distributed runner takes a dead worker's job over exactly once.

Every worker sweeps for jobs of workers that stopped sending heartbeats. Two
sweeps at the same moment must not both take the same job over (it would run
on two workers at once): one worker sweeps, the other skips that round.
"""

from __future__ import annotations

import asyncio
import logging

import psycopg
import pytest

from hephaestus import Hephaestus
from hephaestus.runners.procrastinate import ProcrastinateRunner
from hephaestus.storage.postgres import PostgresStorage


async def test_two_workers_sweeping_at_once_take_a_stalled_job_over_once(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    first = Hephaestus(
        PostgresStorage(postgres_url), ProcrastinateRunner(stalled_after=1.0, heartbeat=0.5)
    )
    second = Hephaestus(
        PostgresStorage(postgres_url), ProcrastinateRunner(stalled_after=1.0, heartbeat=0.5)
    )
    async with first, second:
        runner_a, runner_b = first.runner, second.runner
        assert isinstance(runner_a, ProcrastinateRunner)
        assert isinstance(runner_b, ProcrastinateRunner)
        stalled = []
        for n in range(3):
            job_id = await runner_a._run_step.defer_async(
                instance_id=f"sweep::gone{n}", step="work", attempt=1
            )
            stalled.append(job_id)
        # A worker that died an hour ago, in the middle of these jobs.
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            row = conn.execute(
                "INSERT INTO procrastinate_workers (last_heartbeat) "
                "VALUES (now() - interval '1 hour') RETURNING id"
            ).fetchone()
            assert row is not None
            conn.execute(
                "UPDATE procrastinate_jobs SET status = 'doing', worker_id = %s WHERE id = ANY(%s)",
                (row[0], stalled),
            )

        caplog.set_level(logging.WARNING, logger="hephaestus")
        taken = await asyncio.gather(runner_a.sweep_once(), runner_b.sweep_once())

        assert sorted(taken) == [0, 3]  # one worker took all three over, the other none
        takeovers = [r for r in caplog.records if "taking over job" in r.getMessage()]
        assert len(takeovers) == 3
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            statuses = conn.execute(
                "SELECT status FROM procrastinate_jobs WHERE id = ANY(%s)", (stalled,)
            ).fetchall()
        assert [status for (status,) in statuses] == ["todo"] * 3  # queued again, once

        # Nothing stalled is left: a later sweep takes nothing over.
        assert await runner_b.sweep_once() == 0
