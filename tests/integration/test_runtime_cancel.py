"""Cancelling instances: waiting ones lose their timers, running ones have their steps stopped."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from hephaestus import (
    Context,
    Done,
    Instance,
    InstanceNotWaitingError,
    Ok,
    Status,
    Step,
    Unique,
    WaitForEvent,
    Workflow,
)
from hephaestus.app import Hephaestus
from hephaestus.runners.local import LocalRunner

# How often each (instance id, step key) started, and which slow steps reached their finally.
RT_CANCEL_RUNS: Counter[tuple[str, str]] = Counter()
RT_CANCEL_FINALLY: set[str] = set()
# Sync steps block on these until the test lets them return: instance id -> event.
RT_RELEASE: dict[str, threading.Event] = {}
RT_RETURNED: set[str] = set()


pytestmark = pytest.mark.both_runners


class RtCanGate(WaitForEvent):
    key = "can_gate"


class RtCanAfter(Step):
    events = ("after_done",)
    key = "can_after"

    def execute(
        self, instance: Instance, config: Mapping[str, Any] | None, context: Context
    ) -> str:
        RT_CANCEL_RUNS[instance.id, self.key] += 1
        return "after_done"


class RtCanWaitingFlow(Workflow):
    unique = Unique(key="rtcanwait")
    start = (RtCanGate, {"event_name": "approved", "timeout_ms": 60_000})
    transitions = {
        (RtCanGate, "approved"): RtCanAfter,
        (RtCanGate, "timeout"): RtCanAfter,
        (RtCanAfter, "after_done"): Done,
    }


class RtCanSlow(Step):
    events = ("slow_done",)
    key = "can_slow"

    async def execute(
        self, instance: Instance, config: Mapping[str, Any] | None, context: Context
    ) -> Ok:
        RT_CANCEL_RUNS[instance.id, self.key] += 1
        try:
            await asyncio.sleep(30)
        finally:
            RT_CANCEL_FINALLY.add(instance.id)
        return Ok("slow_done")


class RtCanRunningFlow(Workflow):
    unique = Unique(key="rtcanrun")
    start = RtCanSlow
    transitions = {(RtCanSlow, "slow_done"): RtCanAfter, (RtCanAfter, "after_done"): Done}


class RtCanBlocking(Step):
    """A sync step: its thread cannot be stopped, so it returns after the cancel."""

    events = ("blocking_done",)
    key = "can_blocking"

    def execute(self, instance: Instance, config: Mapping[str, Any] | None, context: Context) -> Ok:
        RT_CANCEL_RUNS[instance.id, self.key] += 1
        RT_RELEASE[instance.id].wait(10)
        RT_RETURNED.add(instance.id)
        return Ok("blocking_done", {"late": True})


class RtCanBlockingFlow(Workflow):
    unique = Unique(key="rtcanblock")
    start = RtCanBlocking
    transitions = {(RtCanBlocking, "blocking_done"): RtCanAfter, (RtCanAfter, "after_done"): Done}


async def _until(condition: Any, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def test_cancelling_a_waiting_instance_drops_its_timers(
    app: Hephaestus, wait_for: Any
) -> None:
    iid = await app.start_instance(RtCanWaitingFlow, {}, id="rtcanwait::w1")
    parked = await wait_for(app, iid, lambda i: i.status is Status.WAITING)
    assert len(parked.timers) == 1

    await app.cancel(iid)

    cancelled = await app.get(iid)
    assert cancelled.status is Status.CANCELLED
    assert cancelled.timers == ()
    assert cancelled.execution_history == ()
    assert await app.storage.next_timer_at() is None
    with pytest.raises(InstanceNotWaitingError, match="cancelled"):
        await app.resume(iid, "approved")
    await app.runner.wait_idle(5)  # type: ignore[attr-defined]
    if isinstance(app.runner, LocalRunner):
        assert app.runner.active_instance_ids == frozenset()
    assert RT_CANCEL_RUNS[iid, "can_after"] == 0
    assert (await app.get(iid)).to_json() == cancelled.to_json()


async def test_cancelling_a_running_instance_stops_its_async_step(
    open_app: Any, db_path: Path, wait_for: Any
) -> None:
    app = await open_app(db_path)
    iid = await app.start_instance(RtCanRunningFlow, {}, id="rtcanrun::r1")
    await _until(lambda: RT_CANCEL_RUNS[iid, "can_slow"] == 1)

    await app.cancel(iid)

    await _until(lambda: iid in RT_CANCEL_FINALLY)
    cancelled = await app.get(iid)
    assert cancelled.status is Status.CANCELLED
    assert cancelled.execution_history == ()
    assert "can_slow" not in cancelled.context.steps
    await app.runner.wait_idle(5)
    assert app.runner.active_instance_ids == frozenset()

    # A cancelled instance is not recovered: the next app leaves it alone.
    await app.close()
    reopened = await open_app(db_path)
    await reopened.runner.wait_idle(5)
    assert (await reopened.get(iid)).to_json() == cancelled.to_json()
    assert RT_CANCEL_RUNS[iid, "can_slow"] == 1
    assert RT_CANCEL_RUNS[iid, "can_after"] == 0


async def test_a_sync_step_finishing_after_the_cancel_changes_nothing(
    app: Hephaestus, wait_for: Any
) -> None:
    iid = "rtcanblock::b1"
    RT_RELEASE[iid] = threading.Event()
    await app.start_instance(RtCanBlockingFlow, {}, id=iid)
    await _until(lambda: RT_CANCEL_RUNS[iid, "can_blocking"] == 1)

    await app.cancel(iid)
    cancelled = await app.get(iid)
    RT_RELEASE[iid].set()
    await _until(lambda: iid in RT_RETURNED)
    await asyncio.sleep(0.05)  # let the thread's late result reach the loop, if it would
    await app.runner.wait_idle(5)

    assert (await app.get(iid)).to_json() == cancelled.to_json()
    assert cancelled.status is Status.CANCELLED
    assert cancelled.execution_history == ()
    assert RT_CANCEL_RUNS[iid, "can_after"] == 0


RT_RESTART_RUNS: list[str] = []


class RtCanRestartSlow(Step):
    events = ("ok",)

    async def execute(
        self, instance: Instance, config: Mapping[str, Any] | None, context: Context
    ) -> Ok:
        RT_RESTART_RUNS.append(context.initial["tag"])
        # The cancelled run finishes first, while the new run of the same id still works.
        await asyncio.sleep(0.6 if len(RT_RESTART_RUNS) == 1 else 1.5)
        return Ok("ok", {"tag": context.initial["tag"]})


class RtCanRestartFlow(Workflow):
    unique = Unique(key="rtcanrestart")
    start = RtCanRestartSlow
    transitions = {(RtCanRestartSlow, "ok"): Done}


async def test_a_cancelled_runs_late_result_never_reaches_a_new_instance_of_its_id(
    app: Hephaestus, wait_for: Any
) -> None:
    iid = await app.start_instance(RtCanRestartFlow, {"tag": "old"}, id="rtcanrestart::r1")
    await wait_for(app, iid, lambda i: RT_RESTART_RUNS == ["old"])
    await app.cancel(iid)
    await app.start_instance(RtCanRestartFlow, {"tag": "new"}, id="rtcanrestart::r1")

    done = await wait_for(app, iid, lambda i: i.status is Status.COMPLETED)

    assert done.context.initial["tag"] == "new"
    assert done.context.steps["rt_can_restart_slow"]["tag"] == "new"
