"""durable-throughput: workflows and steps per second with every state change committed.

N instances of each shape (3 steps in a row; a fan-out to 10 parallel steps
joined by a 12th) are started at once and run to the end, on SQLite (a fresh
file, WAL, `synchronous=FULL`) and on PostgreSQL (a fresh database). The
storage's own counters give how many rows it wrote and in how many
transactions.

The baseline is the storage floor (`bench._floor`): single-row JSON upserts,
one transaction each, on the same database. An engine that commits each
state change alone can do at most that many changes per second; group
commit is how we can do more.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import _postgres
from bench._floor import BATCH, Floor, postgres_floor, sqlite_floor
from bench._harness import Bench, Row, Target, stopwatch
from bench.workflows import SHAPES, Shape
from hephaestus import Hephaestus, Instance, LocalRunner, SQLiteStorage, Status
from hephaestus.storage._layout import full
from hephaestus.storage.base import Query, Storage

__all__ = [
    "BASELINE",
    "NAME",
    "SUMMARY",
    "Throughput",
    "open_storage",
    "our_throughput",
    "run",
    "run_ours",
]

NAME = "durable-throughput"
SUMMARY = "workflows/s and steps/s, every state change durably committed"
BASELINE = "storage floor: 1-row JSON upserts, one transaction each, same database"

BENCH_DATABASE = "hephaestus_bench"

#: Workflows/s against the one-commit-per-change floor must not fall below what the
#: whole-document layout reached (SQLite 2.3x, PostgreSQL 2.5x on linear-3).
FLOOR_RATIOS = {("sqlite", "linear-3"): 2.3, ("postgres", "linear-3"): 2.5}


@dataclass(frozen=True, slots=True)
class Throughput:
    """One measured run of our engine: N instances of one shape on one backend."""

    backend: str
    shape: str
    instances: int
    steps: int  # steps run in all
    seconds: float
    writes: int | None
    transactions: int | None
    document: str  # what one step writes (the head and a history row), for the floor's rows
    where: str  # the SQLite file or PostgreSQL URL it ran on

    @property
    def workflows_per_second(self) -> float:
        return self.instances / self.seconds

    @property
    def steps_per_second(self) -> float:
        return self.steps / self.seconds

    def to_json(self) -> dict[str, Any]:
        return {
            "instances": self.instances,
            "steps": self.steps,
            "seconds": self.seconds,
            "writes": self.writes,
            "transactions": self.transactions,
            "workflows_per_second": self.workflows_per_second,
            "steps_per_second": self.steps_per_second,
        }


def backend_problem(bench: Bench, backend: str) -> str | None:
    """Why our engine cannot run on `backend` in this run, or `None`."""
    if backend != "postgres":
        return None
    return _postgres.storage_problem() or _postgres.server_problem(bench.pg_url)


async def open_storage(
    bench: Bench, backend: str, label: str, *, where: str | None = None
) -> tuple[Storage, str]:
    """A fresh, empty storage on `backend` (not yet opened) and where it lives; given
    `where`, a storage on that file or database again."""
    if backend == "sqlite":
        path = where or str(bench.scratch(f"{label}.db"))
        return SQLiteStorage(path, synchronous="FULL"), path
    from hephaestus.storage.postgres import PostgresStorage

    if where is None:
        where = _postgres.fresh_database(bench.pg_url, BENCH_DATABASE)
        await _postgres.migrate(where)
    return PostgresStorage(where), where


async def run_ours(
    bench: Bench, backend: str, shape: Shape, instances: int, runner: LocalRunner | None = None
) -> Throughput:
    """Run `instances` of `shape` at once on a fresh storage of `backend`, after a warm-up."""
    storage, where = await open_storage(bench, backend, f"throughput-{shape.name}")
    workflow = shape.workflow
    key = workflow.unique.key if workflow.unique is not None else "wf"
    runner = runner or LocalRunner()
    async with Hephaestus(storage=storage, runner=runner) as app:
        warm = [f"{key}::warm{i}" for i in range(min(instances, 20))]
        await asyncio.gather(*(app.start_instance(workflow, None, id=iid) for iid in warm))
        await runner.wait_idle(timeout=120)
        stats = getattr(storage, "stats", None)
        before = (stats.writes, stats.transactions) if stats is not None else None
        ids = [f"{key}::n{i}" for i in range(instances)]
        with stopwatch() as elapsed:
            await asyncio.gather(*(app.start_instance(workflow, None, id=iid) for iid in ids))
            await runner.wait_idle(timeout=900)
        writes = transactions = None
        if stats is not None and before is not None:
            writes = stats.writes - before[0]
            transactions = stats.transactions - before[1]
        finished = len(await storage.query(Query(status=Status.COMPLETED)))
        if finished != instances + len(warm):
            raise RuntimeError(
                f"{backend} {shape.name}: {finished} of {instances + len(warm)} instances completed"
            )
        document = _written_per_step(await app.get(ids[0]))
    return Throughput(
        backend,
        shape.name,
        instances,
        instances * shape.steps,
        elapsed[0],
        writes,
        transactions,
        document,
        where,
    )


def _written_per_step(instance: Instance) -> str:
    """What a step of `instance` writes, as one JSON document: its head and one history row."""
    rows = full(instance)
    return json.dumps({"head": json.loads(rows.head), "entry": json.loads(rows.entries[-1][1])})


def our_throughput(bench: Bench, backend: str, shape: Shape) -> Throughput:
    """Our run of `shape` on `backend`, measured once per bench run and then reused."""
    key = ("throughput", backend, shape.name)
    if key not in bench.shared:
        instances = bench.sizes.throughput_instances
        bench.shared[key] = asyncio.run(run_ours(bench, backend, shape, instances))
    result: Throughput = bench.shared[key]
    return result


def measure_floor(bench: Bench, ours: Throughput) -> Floor:
    """The storage floor on the database `ours` ran on, with as many upserts (capped)."""
    upserts = min(ours.writes or ours.steps, bench.sizes.floor_cap)
    if ours.backend == "sqlite":
        return sqlite_floor(Path(ours.where), ours.document, upserts, ours.instances)
    return postgres_floor(ours.where, ours.document, upserts, ours.instances)


def measure_batched_floor(bench: Bench, ours: Throughput) -> Floor:
    """The batched floor (`BATCH` upserts per commit) on the database `ours` ran on."""
    upserts = max(ours.writes or ours.steps, bench.sizes.floor_cap)
    if ours.backend == "sqlite":
        return sqlite_floor(Path(ours.where), ours.document, upserts, ours.instances, BATCH)
    return postgres_floor(ours.where, ours.document, upserts, ours.instances, BATCH)


def run(bench: Bench) -> list[Row]:
    rows: list[Row] = []
    for backend in bench.backends:
        problem = backend_problem(bench, backend)
        if problem is not None:
            rows.append(Row(NAME, f"{backend}: both shapes", backend=backend, skipped=problem))
            continue
        for shape in SHAPES:
            ours = our_throughput(bench, backend, shape)
            floor = measure_floor(bench, ours)
            batched = measure_batched_floor(bench, ours)
            rows.extend(_rows(backend, shape, ours, floor, batched))
    return rows


def _rows(backend: str, shape: Shape, ours: Throughput, floor: Floor, batched: Floor) -> list[Row]:
    label = f"{backend} {shape.name}"
    commits = shape.steps + 1  # one to create the instance, one per step
    details = {"ours": ours.to_json(), "floor": floor.to_json(), "batched": batched.to_json()}
    minimum = FLOOR_RATIOS.get((backend, shape.name))
    rows = [
        Row(
            NAME,
            f"{label}: workflows/s ({ours.instances} at once)",
            ours=ours.workflows_per_second,
            baseline=floor.per_second / commits,
            baseline_label=f"floor / {commits} commits per workflow",
            target=None if minimum is None else Target(">=", minimum, on="ratio"),
            backend=backend,
            details=details,
        ),
        Row(
            NAME,
            f"{label}: steps/s",
            ours=ours.steps_per_second,
            baseline=floor.per_second,
            baseline_label="floor: 1 commit per step",
            backend=backend,
        ),
    ]
    if ours.writes is not None:
        rows.append(
            Row(
                NAME,
                f"{label}: rows written/s",
                ours=ours.writes / ours.seconds,
                baseline=batched.per_second,
                baseline_label=f"batched floor: {BATCH} upserts per commit",
                target=Target(">=", 0.5, on="ratio"),
                backend=backend,
            )
        )
    if ours.writes is None or ours.transactions is None:
        rows.append(
            Row(NAME, f"{label}: writes, transactions", backend=backend, skipped="no storage.stats")
        )
        return rows
    rows += [
        Row(
            NAME,
            f"{label}: storage writes per step",
            ours=ours.writes / ours.steps,
            baseline=1.0,
            baseline_label="floor: 1 write per step",
            target=Target("<=", 4 / 3),  # one create and one write per step of linear-3
            backend=backend,
        ),
        Row(
            NAME,
            f"{label}: transactions per step",
            ours=ours.transactions / ours.steps,
            baseline=1.0,
            baseline_label="floor: 1 transaction per step",
            backend=backend,
        ),
    ]
    return rows
