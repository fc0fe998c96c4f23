"""The distributed peer: the two throughput shapes on DBOS Transact *queues*, N worker processes.

DBOS's way to spread workflows over processes is a queue: any process that
launched DBOS and registered the queue dequeues and runs its workflows. Here
`workers` processes do that (`python -m bench.cases._dbos_queues URL`), and
this process enqueues the instances with a `DBOSClient` (which runs nothing,
from 16 threads)
and counts finished workflows in DBOS's `workflow_status` table until all are
done. The queue polls every 0.1 s (DBOS's default is 1 s); no concurrency
limit. The workflows are those of the single-process peer (`_dbos_flows`).

Imported only in a child process (`bench._child`), so the bench runs without
DBOS installed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import version
from pathlib import Path
from typing import Any

from bench._harness import stop_processes

__all__ = ["measure"]

QUEUE = "hephaestus-bench"
POLL = 0.1
_READY = "dbos worker ready"


async def _work(url: str) -> None:
    from dbos import DBOS

    from bench.cases import _dbos_flows  # noqa: F401  (registers the workflows)

    DBOS(config={"name": "hephaestus-bench", "system_database_url": url, "log_level": "WARNING"})
    DBOS.launch()
    await DBOS.register_queue_async(QUEUE, polling_interval_sec=POLL)
    print(_READY, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    DBOS.destroy()


def _finished(url: str) -> int:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM dbos.workflow_status WHERE status IN ('SUCCESS', 'ERROR')"
        ).fetchone()
    return int(row[0]) if row else 0


def _commits(url: str) -> int:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    return int(row[0]) if row else 0


def measure(args: dict[str, Any]) -> dict[str, Any]:
    """Run `instances` of `shape` on `workers` DBOS queue workers at `url`; seconds taken."""
    from dbos import DBOSClient

    url, shape = str(args["url"]), str(args["shape"])
    instances, workers = int(args["instances"]), int(args["workers"])
    root = Path(__file__).resolve().parents[2]
    command = [sys.executable, "-m", "bench.cases._dbos_queues", url]
    processes = [
        subprocess.Popen(command, cwd=root, stdout=subprocess.PIPE, text=True, env=os.environ)
        for _ in range(workers)
    ]
    try:
        for process in processes:
            assert process.stdout is not None
            line = process.stdout.readline()
            if _READY not in line:
                raise RuntimeError(f"a DBOS worker did not start: {line!r}")
        client = DBOSClient(system_database_url=url)
        workflow = {"linear-3": "linear_3", "fan-out-10": "fan_out_10"}[shape]
        options: Any = {"queue_name": QUEUE, "workflow_name": workflow}
        time.sleep(1.0)
        commits_before = _commits(url)
        started = time.perf_counter()
        # Enqueued from 16 threads at once, as our client starts 100 instances at once.
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda _: client.enqueue(options), range(instances)))
        while _finished(url) < instances:
            time.sleep(0.05)
        seconds = time.perf_counter() - started
        client.destroy()
    finally:
        stop_processes(processes)
    time.sleep(0.5)
    return {
        "seconds": seconds,
        "instances": instances,
        "commits": _commits(url) - commits_before,
        "dbos": version("dbos"),
    }


if __name__ == "__main__":
    asyncio.run(_work(sys.argv[1]))
