"""`close()` never hangs on a step, and never hands over an instance whose step still runs.

A step that swallows its cancellation keeps running after `close()` cancels it.
`close()` waits `shutdown_grace` for it, then returns anyway; the runner stays
registered, so its instance is taken over only when its lease lapses, never
while the step still runs in this process.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hephaestus import (
    Context,
    Done,
    Hephaestus,
    Instance,
    LocalRunner,
    Ok,
    SQLiteStorage,
    Step,
    Unique,
    Workflow,
)

RT_RELEASE = asyncio.Event()
RT_STARTED: list[str] = []


class RtStubborn(Step):
    """Ignores cancellation until the test releases it."""

    events = ("done",)
    key = "stubborn"

    async def execute(
        self, instance: Instance, config: Mapping[str, Any] | None, context: Context
    ) -> Ok:
        RT_STARTED.append(instance.id)
        while not RT_RELEASE.is_set():
            try:
                await RT_RELEASE.wait()
            except asyncio.CancelledError:
                continue  # swallowed: exactly what a step must not do
        return Ok("done")


class RtStubbornFlow(Workflow):
    unique = Unique(key="rtstubborn")
    start = RtStubborn
    transitions = {(RtStubborn, "done"): Done}


async def test_close_returns_after_its_grace_and_keeps_the_lease_of_a_step_that_still_runs(
    tmp_path: Path,
) -> None:
    global RT_RELEASE
    RT_RELEASE = asyncio.Event()
    RT_STARTED.clear()
    path = tmp_path / "shutdown.db"
    runner = LocalRunner(shutdown_grace=0.2, lease=30.0)
    app = Hephaestus(storage=SQLiteStorage(path), runner=runner)
    await app.open()
    iid = await app.start_instance(RtStubbornFlow, {}, id="rtstubborn::one")
    while not RT_STARTED:
        await asyncio.sleep(0.005)
    runner_id = runner.id
    try:
        async with asyncio.timeout(10):  # would hang for ever without the grace
            await app.close()
        async with SQLiteStorage(path) as storage:
            # Still registered (the step still runs here): nobody may take the instance yet.
            assert [r.id for r in await storage.runners()] == [runner_id]
            assert await storage.owner_of(iid) == runner_id
    finally:
        RT_RELEASE.set()
        await asyncio.sleep(0.05)


async def test_close_hands_over_at_once_when_every_step_stopped(tmp_path: Path) -> None:
    global RT_RELEASE
    RT_RELEASE = asyncio.Event()
    path = tmp_path / "shutdown.db"
    async with Hephaestus(storage=SQLiteStorage(path), runner=LocalRunner()) as app:
        iid = await app.start_instance(RtStubbornFlow, {}, id="rtstubborn::two")
        RT_RELEASE.set()
        await app.wait(iid, timeout=10)
    async with SQLiteStorage(path) as storage:
        assert await storage.runners() == []  # deregistered on close
