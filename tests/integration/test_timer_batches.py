"""LocalRunner fires due timers in batches: many due at once, a batch that fails, a restart."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from hephaestus import Done, Instance, Status, Unique, Wait, Workflow
from hephaestus.errors import StorageError
from hephaestus.storage import SQLiteStorage
from hephaestus.testing import VirtualClock

#: More than two batches of the runner's timer loop (500 each).
MANY = 1_100


class RtBatchPause(Wait):
    """A one-hour durable timer."""


class RtBatchFlow(Workflow):
    unique = Unique(key="rtbatch")
    start = (RtBatchPause, {"duration": 1, "unit": "hour"})
    transitions = {(RtBatchPause, "timeout"): Done}


class RtFlakyClaims(SQLiteStorage):
    """The real SQLite adapter, whose first claim of due instances fails (the database
    went away for a moment)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.failed = 0

    async def claim(
        self,
        runner_id: str,
        *,
        instance_id: str | None = None,
        instance_ids: Sequence[str] | None = None,
        limit: int = 100,
    ) -> list[Instance]:
        if instance_ids is not None and not self.failed:
            self.failed += 1
            raise StorageError("the database is away for a moment")
        return await super().claim(
            runner_id, instance_id=instance_id, instance_ids=instance_ids, limit=limit
        )


async def _park(open_app: Any, db_path: Path, clock: VirtualClock) -> list[str]:
    parking = await open_app(db_path, clock=clock)
    ids = [f"rtbatch::n{i:04d}" for i in range(MANY)]
    await asyncio.gather(*(parking.start_instance(RtBatchFlow, None, id=iid) for iid in ids))
    await parking.runner.wait_idle(timeout=60)
    await parking.close()
    return ids


async def test_many_timers_due_at_once_each_fire_once_after_a_failed_batch(
    open_app: Any, db_path: Path, clock: VirtualClock
) -> None:
    ids = await _park(open_app, db_path, clock)
    clock.advance(timedelta(hours=2).total_seconds())

    storage = RtFlakyClaims(db_path)
    app = await open_app(storage, clock=clock, timer_poll_interval=0.05)
    async with asyncio.timeout(60):
        while len(await app.list(status=Status.COMPLETED, limit=MANY + 1)) != MANY:
            await asyncio.sleep(0.05)
    done = await app.list(status=Status.COMPLETED, limit=MANY + 1)

    assert storage.failed == 1
    assert sorted(i.id for i in done) == ids
    for instance in done:
        assert [(e.step, e.event) for e in instance.execution_history] == [
            ("rt_batch_pause", "timeout"),
            ("done", "done"),
        ]
