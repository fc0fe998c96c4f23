"""A crash between appending a step's log rows and updating its head loses and repeats nothing.

The runner process kills itself (SIGKILL) inside a write: after the new history
rows were sent to the database and before the head is updated and the
transaction committed. The stored instance must be the state before that write
(no stray log row counted, nothing half-written), and a recovering runner
completes every instance with each step once in its history and no step run
again after its completion was stored.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from execution_log import assert_all_completed_once

from hephaestus import Instance
from hephaestus.storage.base import Query, Storage
from hephaestus.storage.postgres import PostgresStorage
from hephaestus.storage.sqlite import SQLiteStorage

WORKER = Path(__file__).parent / "crash" / "worker.py"
INSTANCES = 40
STEPS = [
    "crash_prepare",
    "crash_left",
    "crash_right",
    "crash_join",
    "wait",
    "crash_after_timer",
    "done",
]


def run_worker(where: str, log: Path, output: Path, *args: str, crash_at: int = 0) -> int:
    env = {**os.environ, "CRASH_LOG": str(log)}
    if crash_at:
        env["CRASH_IN_WINDOW"] = str(crash_at)
    with output.open("w") as sink:
        done = subprocess.run(
            [sys.executable, str(WORKER), where, *args],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            timeout=120,
            check=False,
        )
    return done.returncode


def stored(make: Storage) -> list[Instance]:
    async def read() -> list[Instance]:
        async with make as storage:
            return await storage.query(Query())

    return asyncio.run(read())


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_crash_inside_a_write_loses_nothing_and_applies_nothing_twice(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    if backend == "sqlite":
        where = str(tmp_path / "window.db")

        def storage() -> Storage:
            return SQLiteStorage(where)
    else:
        where = request.getfixturevalue("postgres_url")

        def storage() -> Storage:
            return PostgresStorage(where)

    log = tmp_path / "executions.log"

    # Dies in the 60th write that appends history (about half-way through the instances).
    code = run_worker(where, log, tmp_path / "first.out", "start", str(INSTANCES), crash_at=60)
    assert code == -signal.SIGKILL, (tmp_path / "first.out").read_text()
    after_crash = stored(storage())
    assert len(after_crash) == INSTANCES
    assert any(instance.status.is_active for instance in after_crash)
    # What the torn write appended was never committed: every log row is counted by a head.
    assert stray_log_rows(backend, where) == 0

    code = run_worker(where, log, tmp_path / "second.out", "recover")
    assert code == 0, (tmp_path / "second.out").read_text()
    assert_all_completed_once(stored(storage()), log, steps=STEPS, not_logged=["wait", "done"])
    assert stray_log_rows(backend, where) == 0


STRAY = (
    "SELECT count(*) FROM workflow_log l JOIN workflow_instances h "
    "ON h.id = l.instance_id AND h.run = l.run WHERE l.seq >= h.history_length"
)


def stray_log_rows(backend: str, where: str) -> int:
    if backend == "sqlite":
        import sqlite3

        with sqlite3.connect(where) as conn:
            count = int(conn.execute(STRAY).fetchone()[0])
        conn.close()
        return count
    import psycopg

    with psycopg.connect(where) as conn:
        row = conn.execute(STRAY).fetchone()
        assert row is not None
        return int(row[0])
