"""A live LocalRunner rides out a storage that refuses writes for a while, with no restart.

Another connection holds the SQLite file's write lock (as a long transaction,
a backup or a full disk would), so every write of the runner fails with
`database is locked` until it lets go. Every instance must then complete in
the same runner, each step completed once in its history.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from hephaestus import (
    Context,
    Done,
    Hephaestus,
    Instance,
    LocalRunner,
    Ok,
    SQLiteStorage,
    Status,
    Step,
    StorageError,
    Unique,
    Workflow,
)

RT_RUNS: list[tuple[str, str, int]] = []


class RtOutFirst(Step):
    events = ("ok",)
    key = "first"

    async def execute(
        self, instance: Instance, config: Mapping[str, Any] | None, context: Context
    ) -> Ok:
        RT_RUNS.append((instance.id, self.key, context.attempt))
        await asyncio.sleep(0.02)
        return Ok("ok", {"n": context.initial["n"]})


class RtOutSecond(Step):
    events = ("ok",)
    key = "second"

    def execute(self, instance: Instance, config: Mapping[str, Any] | None, context: Context) -> Ok:
        RT_RUNS.append((instance.id, self.key, context.attempt))
        return Ok("ok", {"twice": context.steps["first"]["n"] * 2})


class RtOutFlow(Workflow):
    unique = Unique(key="rtout")
    start = RtOutFirst
    transitions = {(RtOutFirst, "ok"): RtOutSecond, (RtOutSecond, "ok"): Done}


def hold_write_lock(path: Path, seconds: float, locked: threading.Event) -> threading.Thread:
    """Hold the database's write lock from another connection for `seconds`."""

    def hold() -> None:
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            locked.set()
            threading.Event().wait(seconds)
            conn.execute("COMMIT")
        finally:
            conn.close()

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize(
    ("lease", "outage"),
    [
        pytest.param(5.0, 1.5, id="shorter-than-the-lease"),
        pytest.param(0.6, 2.0, id="longer-than-the-lease"),
    ],
)
async def test_every_instance_completes_after_the_storage_refused_writes(
    tmp_path: Path, lease: float, outage: float
) -> None:
    RT_RUNS.clear()
    path = tmp_path / "outage.db"
    runner = LocalRunner(lease=lease, timer_poll_interval=0.2)
    async with Hephaestus(storage=SQLiteStorage(path, timeout=0.05), runner=runner) as app:
        ids = [await app.start_instance(RtOutFlow, {"n": n}, id=f"rtout::i{n}") for n in range(60)]
        locked = threading.Event()
        holder = hold_write_lock(path, outage, locked)
        await asyncio.to_thread(locked.wait, 5)

        # While the lock is held, a new start fails at once, with nothing stored.
        with pytest.raises(StorageError, match="database is locked"):
            await app.start_instance(RtOutFlow, {"n": -1}, id="rtout::during")

        await asyncio.to_thread(holder.join, 30)
        finals = [await app.wait(iid, timeout=30) for iid in ids]

    assert {f.status for f in finals} == {Status.COMPLETED}, [
        (f.id, f.status, f.error) for f in finals if f.status is not Status.COMPLETED
    ]
    for final in finals:
        assert [e.step for e in final.execution_history] == ["first", "second", "done"]
        assert final.context.steps["second"] == {"twice": final.context.initial["n"] * 2}
    # A step may run again when its result could not be stored (at least once), but
    # no attempt runs after its completion was stored: each (id, step) is in the history once.
    counts = Counter((iid, step) for iid, step, _ in RT_RUNS)
    assert {step for _, step in counts} == {"first", "second"}
    async with SQLiteStorage(path) as storage:
        assert await storage.runners() == []  # the runner deregistered on close
        with pytest.raises(Exception, match="rtout::during"):
            await storage.get("rtout::during")
