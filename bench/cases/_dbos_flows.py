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
import sqlite3
import time
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


async def _run(url: str, shape: str, instances: int) -> dict[str, Any]:
    DBOS(config={"name": "hephaestus-bench", "system_database_url": url, "log_level": "WARNING"})
    DBOS.launch()
    try:
        workflow = _SHAPES[shape]
        warm = await asyncio.gather(
            *(DBOS.start_workflow_async(workflow) for _ in range(min(instances, 20)))
        )
        await asyncio.gather(*(handle.get_result() for handle in warm))
        started = time.perf_counter()
        handles = await asyncio.gather(
            *(DBOS.start_workflow_async(workflow) for _ in range(instances))
        )
        await asyncio.gather(*(handle.get_result() for handle in handles))
        seconds = time.perf_counter() - started
    finally:
        DBOS.destroy()
    return {"seconds": seconds, "instances": instances, "dbos": version("dbos")}


def measure(args: dict[str, Any]) -> dict[str, Any]:
    """Run `args["instances"]` of `args["shape"]` at once on `args["url"]`; seconds taken."""
    url = str(args["url"])
    if url.startswith("sqlite:///"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        try:
            conn.execute("PRAGMA journal_mode = WAL").fetchone()
        finally:
            conn.close()
    return asyncio.run(_run(url, str(args["shape"]), int(args["instances"])))
