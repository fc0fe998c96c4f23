"""timer-storm: N durable timers due at the same moment, fired by a runner that just started.

N instances park on a one-hour `Wait` (durable timer) under one runner, which
then stops: the instances are in storage only, with no owner. The clock
(virtual) moves past their due time and a new runner opens: it must find
every due timer, take the instances over and fire it, which completes the
instance. Another connection counts the completed instances every 20 ms;
lateness is how long after the runner opened an instance was seen completed.

The baseline is what the database does at best for the same rows: read them
and write each back, 1,000 per transaction (`read-and-rewrite floor`), on the
same file or database, with the same durability.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from datetime import UTC, datetime, timedelta

from bench._harness import Bench, Row, Target, percentile
from bench.cases.durable_throughput import backend_problem, open_storage
from hephaestus import Done, Hephaestus, LocalRunner, Status, Unique, Wait, Workflow
from hephaestus.storage.base import Query
from hephaestus.testing import VirtualClock

__all__ = ["BASELINE", "NAME", "SUMMARY", "run"]

NAME = "timer-storm"
SUMMARY = "timers fired per second when N are due at once, and their lateness"
BASELINE = "read-and-rewrite floor: the same rows read and written back, 1,000 per commit"

INSTANCES = {"tiny": 200, "quick": 10_000, "full": 100_000}
#: Fired per second against the floor.
TARGET_RATIO = 0.5
_BATCH = 1_000

#: How often the completed instances are counted while the timers fire.
_SAMPLE = 0.02


class StormPause(Wait):
    """A one-hour durable timer."""


class Storm(Workflow):
    unique = Unique(key="storm", scope="workflow")
    start = (StormPause, {"duration": 1, "unit": "hour"})
    transitions = {(StormPause, "timeout"): Done}


def _completed(backend: str, where: str) -> int:
    sql = "SELECT count(*) FROM workflow_instances WHERE status = 'completed'"
    if backend == "sqlite":
        with sqlite3.connect(where) as conn:
            count = int(conn.execute(sql).fetchone()[0])
        conn.close()
        return count
    import psycopg

    with psycopg.connect(where) as conn:
        row = conn.execute(sql).fetchone()
        return 0 if row is None else int(row[0])


async def _measure(bench: Bench, backend: str, instances: int) -> tuple[float, list[float], str]:
    clock = VirtualClock(datetime(2026, 1, 1, tzinfo=UTC))
    storage, where = await open_storage(bench, backend, "timer-storm")
    parking = LocalRunner(clock=clock)
    async with Hephaestus(storage=storage, runner=parking) as app:
        for first in range(0, instances, _BATCH):
            ids = [f"storm::n{i}" for i in range(first, min(first + _BATCH, instances))]
            await asyncio.gather(*(app.start_instance(Storm, None, id=iid) for iid in ids))
        await parking.wait_idle(timeout=1800)
    clock.advance(timedelta(hours=2).total_seconds())
    firing = LocalRunner(clock=clock, timer_poll_interval=0.2)
    storage, _ = await open_storage(bench, backend, "timer-storm", where=where)
    lateness: list[float] = []
    async with Hephaestus(storage=storage, runner=firing):
        opened = time.perf_counter()
        deadline = opened + 1800
        # Counted in a thread: the runner's event loop is what is measured.
        while len(lateness) < instances and time.perf_counter() < deadline:
            await asyncio.sleep(_SAMPLE)
            count = await asyncio.to_thread(_completed, backend, where)
            lateness += [time.perf_counter() - opened] * (count - len(lateness))
        await firing.wait_idle(timeout=600)
        done = await storage.query(Query(status=Status.COMPLETED, limit=instances + 1))
    if len(done) != instances:
        raise RuntimeError(f"{backend}: {len(done)} of {instances} instances completed")
    return lateness[-1], lateness, where


def _sqlite_floor(path: str, instances: int) -> float:
    """Rows read and written back per second, `_BATCH` per transaction."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous = FULL")
        ids = [f"storm::n{i}" for i in range(instances)]
        started = time.perf_counter()
        for first in range(0, instances, _BATCH):
            batch = ids[first : first + _BATCH]
            conn.execute("BEGIN IMMEDIATE")
            marks = ", ".join("?" * len(batch))
            rows = conn.execute(
                f"SELECT id, document FROM workflow_instances WHERE id IN ({marks})", batch
            ).fetchall()
            conn.executemany(
                "UPDATE workflow_instances SET document = ?, revision = revision + 1 WHERE id = ?",
                [(document, row_id) for row_id, document in rows],
            )
            conn.execute("COMMIT")
        return instances / (time.perf_counter() - started)
    finally:
        conn.close()


def _postgres_floor(url: str, instances: int) -> float:
    import psycopg

    ids = [f"storm::n{i}" for i in range(instances)]
    with psycopg.connect(url) as conn:
        conn.execute("SET synchronous_commit = on")
        conn.commit()
        started = time.perf_counter()
        for first in range(0, instances, _BATCH):
            batch = ids[first : first + _BATCH]
            with conn.transaction(), conn.cursor() as cursor:
                cursor.execute(
                    "SELECT id, document::text FROM workflow_instances WHERE id = ANY(%s) "
                    "ORDER BY id FOR UPDATE",
                    [batch],
                )
                rows = cursor.fetchall()
                cursor.executemany(
                    "UPDATE workflow_instances SET document = %s::jsonb, revision = revision + 1 "
                    "WHERE id = %s",
                    [(document, row_id) for row_id, document in rows],
                )
        return instances / (time.perf_counter() - started)


def run(bench: Bench) -> list[Row]:
    rows: list[Row] = []
    instances = INSTANCES[bench.mode]
    for backend in bench.backends:
        problem = backend_problem(bench, backend)
        if problem is not None:
            rows.append(Row(NAME, f"{backend}: timers fired/s", backend=backend, skipped=problem))
            continue
        seconds, lateness, where = asyncio.run(_measure(bench, backend, instances))
        floor = (
            _sqlite_floor(where, instances)
            if backend == "sqlite"
            else _postgres_floor(where, instances)
        )
        rows.append(
            Row(
                NAME,
                f"{backend}: timers fired/s, {instances} due at once",
                ours=instances / seconds,
                baseline=floor,
                baseline_label=f"read-and-rewrite floor, {_BATCH} rows per commit",
                target=Target(">=", TARGET_RATIO, on="ratio"),
                backend=backend,
                details={"instances": instances, "seconds": seconds},
            )
        )
        rows.append(
            Row(
                NAME,
                f"{backend}: lateness p99, {instances} due at once",
                unit="s",
                ours=percentile(lateness, 99),
                baseline=instances / floor,
                baseline_label="the floor's time for all N rows",
                backend=backend,
                details={"p50": percentile(lateness, 50), "max": max(lateness)},
            )
        )
    return rows
