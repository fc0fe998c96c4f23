"""The peer's side: the two throughput shapes written as DBOS Transact workflows.

Imported only in a child process (`bench._child`), so the bench runs without
DBOS installed. Steps are async no-ops, like ours. The fan-out starts its 10
steps as tasks in a fixed order and gathers them, which is how DBOS's
documentation runs steps in parallel in an async workflow.

DBOS keeps its state in its system database: `system_database_url` is a
fresh SQLite file or a fresh PostgreSQL database per measurement. A new
SQLite file is switched to WAL before DBOS opens it (WAL is a property of the
file), so both engines run with WAL and SQLite's default `synchronous=FULL`.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Iterator
from importlib.metadata import version
from typing import Any

from dbos import DBOS

__all__ = ["measure"]


@DBOS.step()
async def first() -> None:
    return None


@DBOS.step()
async def second() -> None:
    return None


@DBOS.step()
async def third() -> None:
    return None


@DBOS.step()
async def branch(index: int) -> int:
    return index


@DBOS.workflow()
async def linear_3() -> None:
    await first()
    await second()
    await third()


@DBOS.workflow()
async def fan_out_10() -> None:
    await first()
    branches = [asyncio.create_task(branch(i)) for i in range(10)]
    await asyncio.gather(*branches)
    await third()


_SHAPES = {"linear-3": linear_3, "fan-out-10": fan_out_10}


@contextlib.contextmanager
def _launched(url: str, *, one_at_a_time: bool = False) -> Iterator[None]:
    """DBOS launched on a fresh system database at `url` (SQLite switched to WAL first)."""
    _wal(url)
    config: dict[str, Any] = {
        "name": "hephaestus-bench",
        "system_database_url": url,
        "log_level": "WARNING",
    }
    if one_at_a_time:
        # Its best mode on SQLite: one connection, no liveness check before each use.
        config.update(sys_db_pool_size=1, db_engine_kwargs={"pool_pre_ping": False})
    DBOS(config=config)  # type: ignore[arg-type]
    DBOS.launch()
    try:
        yield
    finally:
        DBOS.destroy()


async def _all_at_once(workflow: Any, instances: int, *args: Any) -> None:
    """Start `instances` runs of `workflow` at once and wait for every result."""
    handles = await asyncio.gather(
        *(DBOS.start_workflow_async(workflow, *args) for _ in range(instances))
    )
    await asyncio.gather(*(handle.get_result() for handle in handles))


async def _run(url: str, shape: str, instances: int, one_at_a_time: bool) -> dict[str, Any]:
    with _launched(url, one_at_a_time=one_at_a_time):
        workflow = _SHAPES[shape]
        await _all_at_once(workflow, min(instances, 20))
        started = time.perf_counter()
        if one_at_a_time:
            for _ in range(instances):
                await (await DBOS.start_workflow_async(workflow)).get_result()
        else:
            await _all_at_once(workflow, instances)
        seconds = time.perf_counter() - started
    return {"seconds": seconds, "instances": instances, "dbos": version("dbos")}


def measure(args: dict[str, Any]) -> dict[str, Any]:
    """Run `args["instances"]` of `args["shape"]` on `args["url"]`; seconds taken.

    All at once, or with `args["one_at_a_time"]` one after another on a pool of one.
    """
    one_at_a_time = bool(args.get("one_at_a_time", False))
    return asyncio.run(
        _run(str(args["url"]), str(args["shape"]), int(args["instances"]), one_at_a_time)
    )


def _wal(url: str) -> None:
    """Switch a new SQLite file to WAL before DBOS opens it, as ours runs."""
    if url.startswith("sqlite:///"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        try:
            conn.execute("PRAGMA journal_mode = WAL").fetchone()
        finally:
            conn.close()


@DBOS.step()
async def payload_step(size: int) -> str:
    return "x" * size


@DBOS.workflow()
async def payload_20(size: int) -> None:
    for _ in range(20):
        await payload_step(size)


async def _run_payload(url: str, size: int, instances: int) -> dict[str, Any]:
    with _launched(url):
        await _all_at_once(payload_20, 1, size)
        started = time.perf_counter()
        await _all_at_once(payload_20, instances, size)
        seconds = time.perf_counter() - started
    return {"seconds": seconds, "instances": instances, "dbos": version("dbos")}


def measure_payload(args: dict[str, Any]) -> dict[str, Any]:
    """Run `args["instances"]` 20-step workflows whose steps return `args["size"]` bytes."""
    return asyncio.run(_run_payload(str(args["url"]), int(args["size"]), int(args["instances"])))
