"""Throughput of the distributed runner with N worker processes, on PostgreSQL.

    python -m bench.distributed --workers 1 --instances 1000
    python -m bench.distributed --workers 2 --instances 1000

Creates a scratch database, migrates it, starts `hephaestus worker`
processes, starts the instances (the acceptance tests' `DistFlow`: a fan-out
of two, a join, a `WaitForEvent` with a 300 ms durable timeout, a last step),
waits until every one finished, and prints workflows/s and steps/s. Not part
of `make bench`: it needs a PostgreSQL server and takes about a minute.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

FLOWS = Path(__file__).resolve().parent.parent / "tests" / "acceptance" / "distributed"
DATABASE = "hephaestus_bench_distributed"
STEPS_PER_INSTANCE = 6  # split, left, right, join, pause, finish


async def measure(server: str, workers: int, instances: int) -> tuple[float, float]:
    from hephaestus.storage.postgres import migrate

    url = urlunsplit(urlsplit(server)._replace(path=f"/{DATABASE}"))
    _drop(server)
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
    await migrate(url)
    sys.path.insert(0, str(FLOWS))
    from dist_flows import DistFlow, make_app

    env = {**os.environ, "HEPHAESTUS_DIST_URL": url, "PYTHONPATH": str(FLOWS)}
    command = [sys.executable, "-m", "hephaestus.cli", "worker", "--app", "dist_flows:app"]
    processes = [
        subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL) for _ in range(workers)
    ]
    try:
        await asyncio.sleep(2)  # let the workers connect
        async with make_app(url) as app:
            started = time.perf_counter()
            for first in range(0, instances, 100):
                last = min(instances, first + 100)
                await asyncio.gather(
                    *(DistFlow.start(f"i{n}", {"n": n}) for n in range(first, last))
                )
            while await app.list(status_in=["pending", "running", "waiting"], limit=1):
                await asyncio.sleep(0.1)
            elapsed = time.perf_counter() - started
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)
        _drop(server)
    return instances / elapsed, instances * STEPS_PER_INSTANCE / elapsed


def _drop(server: str) -> None:
    with psycopg.connect(server, autocommit=True) as admin:
        drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
        admin.execute(drop.format(sql.Identifier(DATABASE)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument(
        "--pg-url",
        default=os.environ.get(
            "HEPHAESTUS_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    args = parser.parse_args()
    workflows, steps = asyncio.run(measure(args.pg_url, args.workers, args.instances))
    print(
        f"{args.instances} instances, {args.workers} worker(s): "
        f"{workflows:.1f} workflows/s, {steps:.0f} steps/s"
    )


if __name__ == "__main__":
    main()
