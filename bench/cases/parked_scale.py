"""parked-scale: what waiting instances cost the runner process, and how fast they wake.

N instances (100,000; 10,000 with --quick) park in a `WaitForEvent` on
SQLite, started 1,000 at a time. A waiting instance should hold no task and
no memory in the runner, only its row: the runner's RSS growth is measured
in a fresh process, after `gc.collect()`, once with the app open and empty
and once when all N are parked and `active_instance_ids` is empty. To give
the figure a scale, the baseline is the RSS growth of a fresh process that
keeps N small JSON dicts in a list, as a runner holding its parked
instances in memory would at the very least.

Then all N are resumed, 1,000 at a time (each resume reads the instance
back, writes the event, and the instance completes). Its rate, and the rate
of parking, are compared with the storage floor on the same file.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

from bench._child import ChildFailed, run_child
from bench._floor import sqlite_floor
from bench._harness import Bench, Row, Target, settle_memory, stopwatch

__all__ = ["BASELINE", "NAME", "SUMMARY", "measure_dicts", "measure_parked", "run"]

NAME = "parked-scale"
SUMMARY = "runner RSS with N parked instances; time to resume them all, SQLite"
BASELINE = "RSS of N small JSON dicts in a list; the storage floor for rates"

#: The RSS growth we allow for 100,000 parked instances, in MB.
TARGET_GROWTH_MB = 50.0

_MB = 1e6


async def _park_and_resume(path: str, instances: int, batch: int) -> dict[str, Any]:
    from bench.workflows import Parked
    from hephaestus import Hephaestus, LocalRunner, SQLiteStorage

    storage = SQLiteStorage(path, synchronous="FULL")
    runner = LocalRunner()
    async with Hephaestus(storage=storage, runner=runner) as app:
        await app.start_instance(Parked, None, id="parked::warm")  # imports, caches, pool
        await runner.wait_idle(timeout=60)
        await app.resume("parked::warm", "go")
        await runner.wait_idle(timeout=60)
        rss_before = settle_memory()
        ids = [f"parked::n{i}" for i in range(instances)]
        writes = storage.stats.writes
        with stopwatch() as park:
            for start in range(0, instances, batch):
                chunk = ids[start : start + batch]
                await asyncio.gather(*(app.start_instance(Parked, None, id=i) for i in chunk))
                await runner.wait_idle(timeout=300)
        park_writes = storage.stats.writes - writes
        rss_parked = settle_memory()
        holding = len(runner.active_instance_ids)
        document = (await app.get(ids[0])).to_json()
        waiting = _count(path, "waiting")
        writes = storage.stats.writes
        with stopwatch() as wake:
            for start in range(0, instances, batch):
                chunk = ids[start : start + batch]
                await asyncio.gather(*(app.resume(i, "go") for i in chunk))
            await runner.wait_idle(timeout=300)
        resume_writes = storage.stats.writes - writes
    return {
        "instances": instances,
        "rss_before": rss_before,
        "rss_parked": rss_parked,
        "actors_while_parked": holding,
        "waiting": waiting,
        "completed": _count(path, "completed") - 1,
        "park_seconds": park[0],
        "park_writes": park_writes,
        "resume_seconds": wake[0],
        "resume_writes": resume_writes,
        "document": document,
    }


def measure_parked(args: dict[str, Any]) -> dict[str, Any]:
    """Child process: park N instances, measure RSS, resume them all."""
    return asyncio.run(_park_and_resume(str(args["path"]), int(args["instances"]), args["batch"]))


def measure_dicts(args: dict[str, Any]) -> dict[str, Any]:
    """Child process: the RSS growth of N small JSON dicts kept in a list."""
    instances = int(args["instances"])
    before = settle_memory()
    kept = [
        json.loads(json.dumps({"id": f"parked::n{i}", "status": "waiting", "step": "park_here"}))
        for i in range(instances)
    ]
    after = settle_memory()
    return {"instances": len(kept), "rss_before": before, "rss_after": after}


def _count(path: str, status: str) -> int:
    conn = sqlite3.connect(path)
    try:
        found = conn.execute(
            "SELECT count(*) FROM workflow_instances WHERE status = ?", (status,)
        ).fetchone()
        return int(found[0])
    finally:
        conn.close()


def run(bench: Bench) -> list[Row]:
    sizes = bench.sizes
    n = sizes.parked_instances
    path = bench.scratch("parked-scale.db")
    env = bench.child_env()
    try:
        ours = run_child(
            "parked",
            {"path": str(path), "instances": n, "batch": sizes.parked_batch},
            timeout=900,
            env=env,
        )
        dicts = run_child("dicts", {"instances": n}, timeout=300, env=env)
    except ChildFailed as exc:
        return [Row(NAME, f"{n} parked instances", backend="sqlite", skipped=f"failed: {exc}")]
    if ours["waiting"] != n or ours["completed"] != n or ours["actors_while_parked"] != 0:
        raise RuntimeError(
            f"parked-scale: {ours['waiting']} of {n} parked, {ours['completed']} completed, "
            f"{ours['actors_while_parked']} actors held while parked"
        )
    floor = sqlite_floor(Path(path), ours["document"], min(n, sizes.floor_cap), n)
    growth = (ours["rss_parked"] - ours["rss_before"]) / _MB
    dict_growth = (dicts["rss_after"] - dicts["rss_before"]) / _MB
    park_rate = n / ours["park_seconds"]
    resume_rate = n / ours["resume_seconds"]
    park_commits = ours["park_writes"] / n
    details = {key: value for key, value in ours.items() if key != "document"} | {
        "floor": floor.to_json(),
        "dicts": dicts,
    }
    return [
        Row(
            NAME,
            f"runner RSS growth, {n:,} parked",
            unit="MB",
            ours=growth,
            baseline=dict_growth,
            baseline_label=f"{n:,} small dicts in a list",
            target=Target("<", TARGET_GROWTH_MB),
            backend="sqlite",
            details=details,
        ),
        Row(
            NAME,
            f"park rate ({sizes.parked_batch:,} at a time)",
            unit="/s",
            ours=park_rate,
            baseline=floor.per_second / park_commits,
            baseline_label=f"floor / {park_commits:g} commits per parked instance",
            backend="sqlite",
        ),
        Row(
            NAME,
            f"resume all {n:,}",
            unit="s",
            ours=ours["resume_seconds"],
            baseline=n / floor.per_second,
            baseline_label="floor: 1 commit per resume",
            backend="sqlite",
        ),
        Row(
            NAME,
            f"resume rate ({sizes.parked_batch:,} at a time)",
            unit="/s",
            ours=resume_rate,
            baseline=floor.per_second,
            baseline_label="floor: 1 commit per resume",
            backend="sqlite",
        ),
    ]
