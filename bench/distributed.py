"""The distributed runner against DBOS queues and one LocalRunner, on the same PostgreSQL.

    python -m bench.distributed                      # linear-3 and fan-out-10, 1 and 2 workers
    python -m bench.distributed --instances 2000 --workers 1 2 3 --shapes linear-3

For each shape (`bench.workflows`: `Linear3`, three async no-op steps;
`FanOut10`, a step, ten parallel no-op steps and a join: 12 steps) and each
worker count, in one run, each on a fresh database of the same server:

- **ours**: `hephaestus worker` processes (`ProcrastinateRunner`, concurrency
  `--concurrency`); this process starts the instances as a client (100
  `start` calls at once) and polls until none is active;
- **DBOS queues**: the same shapes as DBOS Transact workflows on a DBOS queue,
  the same number of worker processes, enqueued by a `DBOSClient`
  (`bench.cases._dbos_queues`);
- **local**: one `LocalRunner` on `PostgresStorage` in this process (once per
  shape: it has no workers).

Throughput is instances over the time from the first start to the last
instance finished. Per step it reports commits (the server's
`pg_stat_database.xact_commit` delta for the database: every transaction
block and every autocommit statement counts one; it includes the client's
polling) and, for our engine, statements (each process counts the statements
it sends through psycopg: `bench._sqlcount`; BEGIN/COMMIT are not in it) and
Procrastinate jobs (the job id sequence's delta). Not part of `make bench`: it
needs a PostgreSQL server and takes a few minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

from bench import _postgres, _sqlcount
from bench._child import ChildFailed, run_child
from bench._harness import stop_processes
from bench.workflows import SHAPES, Shape
from hephaestus import Hephaestus

ROOT = Path(__file__).resolve().parent.parent
DATABASE = "hephaestus_bench_distributed"
DBOS_DATABASE = "hephaestus_bench_dbos_queues"
ACTIVE = ["pending", "running", "waiting"]


@dataclass(frozen=True, slots=True)
class Result:
    """One measurement: instances finished per second, and what it cost the database."""

    instances: int
    seconds: float
    steps: int
    commits: int
    statements: int | None = None
    jobs: int | None = None

    @property
    def rate(self) -> float:
        return self.instances / self.seconds

    def per_step(self, value: int | None) -> str:
        if value is None:
            return "-"
        return f"{value / (self.instances * self.steps):.1f}"


def _counter(url: str, statement: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(statement).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def _commits(url: str) -> int:
    return _counter(
        url, "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
    )


def _jobs(url: str) -> int:
    return _counter(url, "SELECT last_value FROM procrastinate_jobs_id_seq")


async def _start_all(app: Hephaestus, shape: Shape, instances: int, tag: str) -> None:
    workflow = shape.workflow
    for first in range(0, instances, 100):
        last = min(instances, first + 100)
        await asyncio.gather(*(workflow.start(f"{tag}{n}", {"n": n}) for n in range(first, last)))


async def _until_done(app: Hephaestus) -> None:
    while await app.list(status_in=ACTIVE, limit=1):
        await asyncio.sleep(0.05)


async def measure_ours(
    server: str, shape: Shape, workers: int, instances: int, concurrency: int
) -> Result:
    from bench._dist_app import make_app

    url = _postgres.fresh_database(server, DATABASE)
    await _postgres.migrate(url)
    counts = tempfile.mkdtemp(prefix="hephaestus-bench-sql-")
    count_path = str(Path(counts) / "statements")
    env = {
        **os.environ,
        "HEPHAESTUS_BENCH_DIST_URL": url,
        "HEPHAESTUS_BENCH_DIST_CONCURRENCY": str(concurrency),
        "HEPHAESTUS_BENCH_SQL_COUNT": count_path,
    }
    command = [sys.executable, "-m", "hephaestus.cli", "worker", "--app", "bench._dist_app:app"]
    processes = [
        subprocess.Popen(command, env=env, cwd=ROOT, stderr=subprocess.DEVNULL)
        for _ in range(workers)
    ]
    try:
        await asyncio.sleep(3)  # let the workers connect
        async with make_app(url, concurrency) as app:
            commits, jobs, statements = _commits(url), _jobs(url), _sqlcount.count()
            started = time.perf_counter()
            await _start_all(app, shape, instances, "d")
            await _until_done(app)
            seconds = time.perf_counter() - started
            statements = _sqlcount.count() - statements
            jobs = _jobs(url) - jobs
    finally:
        stop_processes(processes)
    await asyncio.sleep(0.5)  # exited backends have flushed their statistics
    commits = _commits(url) - commits
    statements += _sqlcount.read_all(count_path)
    _postgres.drop_database(server, DATABASE)
    return Result(instances, seconds, shape.steps, commits, statements, jobs)


async def measure_local(server: str, shape: Shape, instances: int) -> Result:
    from hephaestus import Hephaestus, LocalRunner
    from hephaestus.storage.postgres import PostgresStorage

    url = _postgres.fresh_database(server, DATABASE)
    await _postgres.migrate(url)
    async with Hephaestus(storage=PostgresStorage(url), runner=LocalRunner()) as app:
        commits, statements = _commits(url), _sqlcount.count()
        started = time.perf_counter()
        await _start_all(app, shape, instances, "l")
        await _until_done(app)
        seconds = time.perf_counter() - started
        statements = _sqlcount.count() - statements
    await asyncio.sleep(0.5)
    commits = _commits(url) - commits
    _postgres.drop_database(server, DATABASE)
    return Result(instances, seconds, shape.steps, commits, statements)


def measure_dbos(server: str, shape: Shape, workers: int, instances: int) -> Result | str:
    url = _postgres.fresh_database(server, DBOS_DATABASE)
    try:
        peer = run_child(
            "dbos-queues",
            {"url": url, "shape": shape.name, "instances": instances, "workers": workers},
            timeout=900,
            env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])},
        )
    except ChildFailed as exc:
        return f"DBOS failed: {exc}"
    finally:
        _postgres.drop_database(server, DBOS_DATABASE)
    return Result(int(peer["instances"]), float(peer["seconds"]), shape.steps, int(peer["commits"]))


async def run(args: argparse.Namespace) -> None:
    problem = _postgres.server_problem(args.pg_url)
    if problem is not None:
        raise SystemExit(problem)
    _sqlcount.install(None)
    shapes = [shape for shape in SHAPES if shape.name in args.shapes]
    print(
        f"{args.instances} instances per measurement; our workers run "
        f"{args.concurrency} instances at once each"
    )
    header = (
        f"{'shape':<11} {'workers':>7} {'ours wf/s':>10} {'DBOS q wf/s':>12} {'x DBOS':>7} "
        f"{'local wf/s':>11} {'x local':>8} {'commits/step':>13} {'stmts/step':>11} "
        f"{'jobs/inst':>10} {'DBOS commits/step':>18}"
    )
    print(header)
    for shape in shapes:
        local = await measure_local(args.pg_url, shape, args.instances)
        print(
            f"{shape.name:<11} {'local':>7} {local.rate:>10.0f} {'':>12} {'':>7} "
            f"{local.rate:>11.0f} {'':>8} {local.per_step(local.commits):>13} "
            f"{local.per_step(local.statements):>11}",
            flush=True,
        )
        for workers in args.workers:
            ours = await measure_ours(args.pg_url, shape, workers, args.instances, args.concurrency)
            peer = (
                "skipped"
                if args.no_dbos
                else measure_dbos(args.pg_url, shape, workers, args.instances)
            )
            peer_rate = f"{peer.rate:.0f}" if isinstance(peer, Result) else "-"
            versus = f"{ours.rate / peer.rate:.1f}" if isinstance(peer, Result) else "-"
            peer_commits = peer.per_step(peer.commits) if isinstance(peer, Result) else "-"
            jobs = f"{(ours.jobs or 0) / ours.instances:.1f}"
            print(
                f"{shape.name:<11} {workers:>7} {ours.rate:>10.0f} {peer_rate:>12} {versus:>7} "
                f"{local.rate:>11.0f} {ours.rate / local.rate:>8.2f} "
                f"{ours.per_step(ours.commits):>13} {ours.per_step(ours.statements):>11} "
                f"{jobs:>10} {peer_commits:>18}",
                flush=True,
            )
            if isinstance(peer, str):
                print(f"  ({peer})")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--shapes",
        nargs="+",
        default=[shape.name for shape in SHAPES],
        choices=[s.name for s in SHAPES],
    )
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--no-dbos", action="store_true", help="skip the DBOS queues peer")
    parser.add_argument(
        "--pg-url",
        default=os.environ.get(
            "HEPHAESTUS_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
