"""query-scale: reading one instance and listing pages when the storage holds a million.

The tables are filled directly, in bulk, with rows exactly as the storage
writes them (the head and log rows of a real instance, under new ids): 70%
completed, 20% waiting, 9% running, 1% failed, over three workflows. Then each
query a user or the dashboard runs is timed, 20 times, and its p95 reported:
`get`, the first page, a status page, a workflow page, a workflow+status page,
a keyset page from the middle, and filters that match nothing. Every page is
100 instances, whole (heads and histories), as `list()` returns them.

The baseline is `get` of one instance: a page should cost little more than
reading the instances on it.
"""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import time
from collections.abc import Iterator
from typing import Any

from bench._harness import Bench, Row, Target, percentile
from bench.cases.durable_throughput import backend_problem, open_storage
from bench.workflows import Linear3
from hephaestus import Hephaestus, MemoryStorage, Status
from hephaestus.storage._layout import full
from hephaestus.storage.base import Query, Storage

__all__ = ["BASELINE", "NAME", "SUMMARY", "run"]

NAME = "query-scale"
SUMMARY = "get and list pages at 1,000,000 stored instances"
BASELINE = "get of one instance, same storage"

INSTANCES = {"tiny": 2_000, "quick": 100_000, "full": 1_000_000}
#: Every page, filtered or not, in at most this many milliseconds (p95).
TARGET_MS = 20.0
REPEATS = 20
PAGE = 100
WORKFLOWS = ("shop.Checkout", "billing.Invoice", "mail.Digest")
_STATUSES = [Status.COMPLETED] * 70 + [Status.WAITING] * 20 + [Status.RUNNING] * 9 + [Status.FAILED]


async def _template() -> tuple[str, list[tuple[int, str]]]:
    """The head and log rows of a real completed `Linear3` instance."""
    async with Hephaestus(storage=MemoryStorage()) as app:
        iid = await app.start_instance(Linear3, {"customer": "ada"}, id="three::template")
        done = await app.wait(iid, timeout=30)
    rows = full(done)
    return rows.head, rows.entries


def _rows(count: int, head: str, log: list[tuple[int, str]]) -> Iterator[tuple[Any, ...]]:
    """`(id, workflow, status, head document, log rows)` of `count` instances."""
    data = json.loads(head)
    chooser = random.Random(42)
    for n in range(count):
        instance_id = f"order::{n:07d}"
        workflow = WORKFLOWS[n % len(WORKFLOWS)]
        status = chooser.choice(_STATUSES)
        document = json.dumps({**data, "id": instance_id, "workflow": workflow, "status": status})
        yield instance_id, workflow, status.value, document, log


def _fill_sqlite(path: str, count: int, head: str, log: list[tuple[int, str]]) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN")
        for instance_id, workflow, status, document, entries in _rows(count, head, log):
            conn.execute(
                "INSERT INTO workflow_instances (id, workflow, workflow_version, status, "
                "revision, created_at, updated_at, document, history_length) "
                "VALUES (?, ?, 1, ?, 5, '2026-01-01T00:00:00+00:00', "
                "'2026-01-01T00:00:00+00:00', ?, ?)",
                (instance_id, workflow, status, document, len(entries) - 1),
            )
            conn.executemany(
                "INSERT INTO workflow_log (instance_id, run, seq, entry) VALUES (?, 1, ?, ?)",
                [(instance_id, seq, entry) for seq, entry in entries],
            )
        conn.execute("COMMIT")
        conn.execute("ANALYZE")
    finally:
        conn.close()


def _fill_postgres(url: str, count: int, head: str, log: list[tuple[int, str]]) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn, conn.cursor() as cursor:
        with cursor.copy(
            "COPY workflow_instances (id, workflow, workflow_version, status, revision, "
            "created_at, updated_at, document, history_length) FROM STDIN"
        ) as copy:
            for instance_id, workflow, status, document, entries in _rows(count, head, log):
                copy.write_row(
                    (
                        instance_id,
                        workflow,
                        1,
                        status,
                        5,
                        "2026-01-01",
                        "2026-01-01",
                        document,
                        len(entries) - 1,
                    )
                )
        with cursor.copy("COPY workflow_log (instance_id, run, seq, entry) FROM STDIN") as copy:
            for instance_id, _, _, _, entries in _rows(count, head, log):
                for seq, entry in entries:
                    copy.write_row((instance_id, 1, seq, entry))
        cursor.execute("ANALYZE")


async def _timed(repeats: int, call: Any) -> list[float]:
    await call(-1)  # untimed: the first read of a page brings its index pages into the cache
    times = []
    for n in range(repeats):
        started = time.perf_counter()
        await call(n)
        times.append((time.perf_counter() - started) * 1e3)
    return times


async def _measure(storage: Storage, count: int) -> dict[str, list[float]]:
    chooser = random.Random(7)
    middle = f"order::{count // 2:07d}"

    def page(**filters: Any) -> Any:
        async def call(_: int) -> None:
            await storage.query(Query(limit=PAGE, **filters))

        return call

    async def get(_: int) -> None:
        await storage.get(f"order::{chooser.randrange(count):07d}")

    checks = {
        "get": get,
        "first page": page(),
        "status page (waiting)": page(status=Status.WAITING),
        "workflow page": page(workflow=WORKFLOWS[1]),
        "workflow + status page (failed)": page(workflow=WORKFLOWS[2], status=Status.FAILED),
        "keyset page from the middle, running": page(status=Status.RUNNING, after=middle),
        "no match: status cancelled": page(status=Status.CANCELLED),
        "no match: unknown workflow": page(workflow="nowhere.Nothing"),
    }
    async with storage:
        return {name: await _timed(REPEATS, call) for name, call in checks.items()}


async def _prepare(bench: Bench, backend: str) -> str:
    """A new, empty storage with its tables, and where it is."""
    storage, where = await open_storage(bench, backend, "query-scale")
    async with storage:
        pass  # opening creates (SQLite) or checks (PostgreSQL, migrated) the tables
    return where


def run(bench: Bench) -> list[Row]:
    rows: list[Row] = []
    count = INSTANCES[bench.mode]
    head, log = asyncio.run(_template())
    for backend in bench.backends:
        problem = backend_problem(bench, backend)
        if problem is not None:
            rows.append(Row(NAME, f"{backend}: pages", backend=backend, skipped=problem))
            continue

        where = asyncio.run(_prepare(bench, backend))
        filled = time.perf_counter()
        if backend == "sqlite":
            _fill_sqlite(where, count, head, log)
        else:
            _fill_postgres(where, count, head, log)
        filled = time.perf_counter() - filled
        storage, _ = asyncio.run(open_storage(bench, backend, "query-scale", where=where))
        times = asyncio.run(_measure(storage, count))
        baseline = percentile(times["get"], 95)
        for name, values in times.items():
            rows.append(
                Row(
                    NAME,
                    f"{backend}: {name}, p95 at {count:,} instances",
                    unit="ms",
                    ours=percentile(values, 95),
                    baseline=baseline,
                    baseline_label="get, p95",
                    target=None if name == "get" else Target("<=", TARGET_MS),
                    backend=backend,
                    details={"p50": percentile(values, 50), "fill_seconds": filled},
                )
            )
    return rows
