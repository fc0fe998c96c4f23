"""client-handoff: how soon a runner process starts what a client process wrote.

A runner process (a `LocalRunner` on the storage, nothing else) sits idle. The
bench process, in client mode (`runner=None`), starts `Handoff` instances one
at a time and resumes each once it parks. The steps store the machine-wide
monotonic time they started at, so two delays are measured across processes:

- *client start -> first step started*: the client's `start_instance` call to
  the runner's first step (the runner notices the new row, claims it, runs it);
- *client resume -> next step started*: `resume(id, "go")` to the step after
  the wait (the event goes through the instance's inbox to its owner).

An idle runner notices another process's write through the storage's change
signal: `PRAGMA data_version` on SQLite, `LISTEN/NOTIFY` on PostgreSQL.

The baseline is the same path inside one process: a `LocalRunner` app starts
and resumes the same workflow on the same kind of storage, in the same run;
the ratio is what handing the work to another process costs.

Run as `python -m bench.cases.client_handoff serve BACKEND WHERE`, this module
is the runner process.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench._harness import Bench, Row, Target, percentile
from bench.cases.durable_throughput import backend_problem, open_storage
from bench.workflows import Handoff
from hephaestus import Hephaestus, LocalRunner
from hephaestus.storage.base import Storage

__all__ = ["BASELINE", "NAME", "SUMMARY", "run"]

NAME = "client-handoff"
SUMMARY = "ms from a client's start/resume to the step starting in a runner process"
BASELINE = "the same start/resume with the runner in the caller's process"

#: The p50 we aim for from a client's write to the step starting on an idle runner, in ms.
TARGET_P50_MS = 50.0
_ROOT = Path(__file__).resolve().parent.parent.parent


async def _handoffs(app: Hephaestus, count: int, label: str) -> tuple[list[float], list[float]]:
    """(start -> first step, resume -> next step) delays in seconds, one instance at a time."""
    starts: list[float] = []
    resumes: list[float] = []
    for n in range(count):
        instance_id = f"handoff::{label}{n}"
        called = time.monotonic()
        await app.start_instance(Handoff, None, id=instance_id)
        parked = await app.wait(instance_id, timeout=60, status="waiting")
        starts.append(parked.context.steps["stamp_start"]["at"] - called)
        called = time.monotonic()
        await app.resume(instance_id, "go")
        done = await app.wait(instance_id, timeout=60)
        resumes.append(done.context.steps["stamp_resumed"]["at"] - called)
    return starts, resumes


def _storage_for(backend: str, where: str) -> Storage:
    if backend == "sqlite":
        from hephaestus import SQLiteStorage

        return SQLiteStorage(where, synchronous="FULL")
    from hephaestus.storage.postgres import PostgresStorage

    return PostgresStorage(where)


def _spawn_runner(backend: str, where: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "bench.cases.client_handoff", "serve", backend, where],
            cwd=_ROOT,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(_ROOT)},
        )


async def _across_processes(
    bench: Bench, backend: str, count: int
) -> tuple[list[float], list[float]]:
    storage, where = await open_storage(bench, backend, "client-handoff")
    log = bench.scratch("client-handoff-runner.log")
    runner = _spawn_runner(backend, where, log)
    try:
        async with Hephaestus(storage=storage, runner=None) as client:
            deadline = time.monotonic() + 60
            while not await client.runners():  # the runner process has registered
                if runner.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the runner process did not start: {log.read_text()}")
                await asyncio.sleep(0.05)
            await _handoffs(client, 3, "warm")
            return await _handoffs(client, count, "n")
    finally:
        runner.send_signal(signal.SIGTERM)
        runner.wait(timeout=30)


async def _in_process(bench: Bench, backend: str, count: int) -> tuple[list[float], list[float]]:
    storage, _ = await open_storage(bench, backend, "client-handoff-local")
    async with Hephaestus(storage=storage, runner=LocalRunner()) as app:
        await _handoffs(app, 3, "warm")
        return await _handoffs(app, count, "n")


def run(bench: Bench) -> list[Row]:
    count = min(bench.sizes.resume_instances, 300)
    rows: list[Row] = []
    for backend in bench.backends:
        problem = backend_problem(bench, backend)
        if problem is not None:
            rows.append(Row(NAME, f"{backend}: handoff", backend=backend, skipped=problem))
            continue
        ours = asyncio.run(_across_processes(bench, backend, count))
        local = asyncio.run(_in_process(bench, backend, count))
        for index, what in enumerate(("client start -> first step", "client resume -> next step")):
            for p in (50, 99):
                rows.append(
                    Row(
                        NAME,
                        f"{backend}: p{p} {what} ({count} instances)",
                        unit="ms",
                        ours=percentile(ours[index], p) * 1e3,
                        baseline=percentile(local[index], p) * 1e3,
                        baseline_label=f"runner in the same process, p{p}",
                        target=Target("<", TARGET_P50_MS) if p == 50 else None,
                        backend=backend,
                        details={"max_ms": max(ours[index]) * 1e3},
                    )
                )
    return rows


async def _serve(backend: str, where: str) -> None:
    """The runner process: a LocalRunner on the storage until SIGTERM."""
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with Hephaestus(storage=_storage_for(backend, where), runner=LocalRunner()):
        await stop.wait()


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        asyncio.run(_serve(sys.argv[2], sys.argv[3]))
