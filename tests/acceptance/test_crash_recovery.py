"""A runner process killed with SIGKILL loses nothing and repeats no completed step.

A subprocess starts instances of `CrashFlow` (fan-out, join, a durable 0.4 s
timer) on a SQLite file and is killed mid-flight, twice; a third process
recovers the file. Every instance must complete, every durable timer must
fire exactly once, and no step may run again after its completion was stored.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from execution_log import assert_all_completed_once, executions

from hephaestus import Instance, Status
from hephaestus.storage.base import Query
from hephaestus.storage.sqlite import SQLiteStorage

WORKER = Path(__file__).parent / "crash" / "worker.py"
INSTANCES = 150


def _spawn(db: Path, log: Path, output: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "CRASH_LOG": str(log)}
    # Output goes to a file: a pipe nobody reads until the end could fill and block the runner.
    with output.open("w") as sink:
        return subprocess.Popen(
            [sys.executable, str(WORKER), str(db), *args],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            text=True,
        )


def _kill_when(process: subprocess.Popen[str], ready: Callable[[], bool]) -> None:
    """SIGKILL `process` as soon as `ready()` says so."""
    deadline = time.monotonic() + 60
    while not ready():
        assert process.poll() is None, f"the runner exited early ({process.returncode})"
        assert time.monotonic() < deadline, "the worker made no progress"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    assert process.returncode == -signal.SIGKILL


def _stored(db: Path) -> list[Instance]:
    async def read() -> list[Instance]:
        async with SQLiteStorage(db) as storage:
            return await storage.query(Query())

    return asyncio.run(read())


@pytest.mark.slow
def test_sigkilled_runner_recovers_every_instance_without_repeating_completed_steps(
    tmp_path: Path,
) -> None:
    db, log = tmp_path / "crash.db", tmp_path / "executions.log"

    first = _spawn(db, log, tmp_path / "first.out", "start", str(INSTANCES))
    # Mid-flight: steps have started, few instances got far.
    _kill_when(first, lambda: len(executions(log)) >= INSTANCES)
    after_first = _stored(db)
    assert len(after_first) == INSTANCES, "every acknowledged start must survive the kill"
    assert any(i.status is not Status.COMPLETED for i in after_first)

    # Second kill while durable timers are pending.
    second = _spawn(db, log, tmp_path / "second.out", "recover")
    _kill_when(second, lambda: any(i.timers for i in _stored(db)))
    assert any(i.status is not Status.COMPLETED for i in _stored(db))

    third = _spawn(db, log, tmp_path / "third.out", "recover")
    third.wait(timeout=120)
    output = (tmp_path / "third.out").read_text()
    assert third.returncode == 0, output
    assert "all finished" in output

    instances = _stored(db)
    assert len(instances) == INSTANCES

    # Every step ran and is once in the history; the durable timer fired exactly once.
    assert_all_completed_once(
        instances,
        log,
        steps=[
            "crash_prepare",
            "crash_left",
            "crash_right",
            "crash_join",
            "wait",
            "crash_after_timer",
            "done",
        ],
        not_logged=["wait", "done"],
    )
    for instance in instances:
        n = instance.context.initial["n"]
        assert instance.context.steps["crash_join"]["total"] == n * 2 + n + 1
