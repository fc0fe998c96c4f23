"""Timers on a `VirtualClock`: they fire when the test moves the clock, never by real waiting.

Each "nothing fired" check is made after a *sentinel* timer has fired, one
due no earlier than the time the check is about: the runner has then looked
at that time, so the check cannot pass just because the machine was slow.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from hephaestus import (
    Context,
    Done,
    Error,
    Instance,
    LocalRunner,
    Ok,
    Retry,
    Status,
    Step,
    Unique,
    Wait,
    WaitForEvent,
    Workflow,
)
from hephaestus.app import Hephaestus
from hephaestus.testing import VirtualClock

RT_RUNS: Counter[tuple[str, str]] = Counter()
START = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)


class RtVcBegin(Step):
    events = ("ready",)
    key = "begin"

    def execute(
        self, instance: Instance, config: Mapping[str, Any] | None, context: Context
    ) -> str:
        RT_RUNS[instance.id, self.key] += 1
        return "ready"


class RtVcAfter(Step):
    events = ("woke",)
    key = "after"

    async def execute(
        self, instance: Instance, config: Mapping[str, Any] | None, context: Context
    ) -> str:
        RT_RUNS[instance.id, self.key] += 1
        return "woke"


class RtVcDayFlow(Workflow):
    unique = Unique(key="rtvcday")
    start = RtVcBegin
    transitions = {
        (RtVcBegin, "ready"): (Wait, {"duration": 1, "unit": "day"}),
        (Wait, "timeout"): RtVcAfter,
        (RtVcAfter, "woke"): Done,
    }


class RtVcHourFlow(Workflow):
    """The sentinel: a one-hour `Wait`."""

    unique = Unique(key="rtvchour")
    start = RtVcBegin
    transitions = {
        (RtVcBegin, "ready"): (Wait, {"duration": 1, "unit": "hour"}),
        (Wait, "timeout"): RtVcAfter,
        (RtVcAfter, "woke"): Done,
    }


class RtVcApproval(WaitForEvent):
    key = "approval"


class RtVcApprovalFlow(Workflow):
    unique = Unique(key="rtvcapproval")
    start = (RtVcApproval, {"event_name": "approved", "timeout_ms": 30 * 60 * 1000})
    transitions = {(RtVcApproval, "approved"): Done, (RtVcApproval, "timeout"): Done}


class RtVcHold(WaitForEvent):
    key = "hold"


class RtVcHoldFlow(Workflow):
    unique = Unique(key="rtvchold")
    start = (RtVcHold, {"event_name": "release"})
    transitions = {(RtVcHold, "release"): Done}


class RtVcFlaky(Step):
    events = ("done",)
    key = "flaky"
    retry = Retry(max_attempts=2, backoff="constant", base=600, max_backoff=600)

    def execute(
        self, instance: Instance, config: Mapping[str, Any] | None, context: Context
    ) -> Ok | Error:
        RT_RUNS[instance.id, self.key] += 1
        return Error("busy") if context.attempt == 1 else Ok("done")


class RtVcFlakyFlow(Workflow):
    unique = Unique(key="rtvcflaky")
    start = RtVcFlaky
    transitions = {(RtVcFlaky, "done"): Done}


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(START)


@pytest.fixture
async def vapp(open_app: Any, db_path: Path, clock: VirtualClock) -> Hephaestus:
    app: Hephaestus = await open_app(db_path, runner=LocalRunner(clock=clock))
    return app


def test_the_clock_moves_only_forward_and_only_when_told() -> None:
    clock = VirtualClock(START)

    assert clock.now() == clock() == START
    assert clock.advance(90) == START + timedelta(seconds=90)
    assert clock.advance(minutes=1, hours=1) == START + timedelta(seconds=90, minutes=61)
    assert clock.now() == START + timedelta(seconds=90, minutes=61)
    with pytest.raises(ValueError, match="only moves forward"):
        clock.advance(-1)
    with pytest.raises(ValueError, match="aware"):
        VirtualClock(datetime(2026, 1, 1))


async def test_a_day_long_wait_fires_when_the_clock_passes_it_and_not_before(
    vapp: Hephaestus, clock: VirtualClock, wait_for: Any
) -> None:
    day = await RtVcDayFlow.start("d1")
    hour = await RtVcHourFlow.start("h1")
    parked = await wait_for(vapp, day, lambda i: i.status is Status.WAITING)
    await wait_for(vapp, hour, lambda i: i.status is Status.WAITING)
    (timer,) = parked.timers
    assert timer.due_at == START + timedelta(days=1)

    clock.advance(hours=2)
    await wait_for(vapp, hour, lambda i: i.status is Status.COMPLETED)
    assert (await vapp.get(day)).to_json() == parked.to_json()

    clock.advance(days=1)
    done = await wait_for(vapp, day, lambda i: i.status.is_final)
    assert done.status is Status.COMPLETED, done.error
    assert [e.step for e in done.execution_history] == ["begin", "wait", "after", "done"]
    assert RT_RUNS[day, "after"] == 1
    # Every timestamp is virtual time.
    assert done.updated_at == START + timedelta(days=1, hours=2)


async def test_wait_for_event_times_out_on_the_virtual_clock(
    vapp: Hephaestus, clock: VirtualClock, wait_for: Any
) -> None:
    iid = await RtVcApprovalFlow.start("late")
    await wait_for(vapp, iid, lambda i: i.status is Status.WAITING)

    clock.advance(minutes=31)
    done = await wait_for(vapp, iid, lambda i: i.status.is_final)

    assert [(e.step, e.event) for e in done.execution_history] == [
        ("approval", "timeout"),
        ("done", "done"),
    ]


async def test_an_event_before_the_timeout_wins_and_its_timer_never_fires(
    vapp: Hephaestus, clock: VirtualClock, wait_for: Any
) -> None:
    iid = await RtVcApprovalFlow.start("ontime")
    await wait_for(vapp, iid, lambda i: i.status is Status.WAITING)
    await RtVcApprovalFlow.resume("ontime", "approved")
    done = await wait_for(vapp, iid, lambda i: i.status.is_final)
    sentinel = await RtVcHourFlow.start("h2")
    await wait_for(vapp, sentinel, lambda i: i.status is Status.WAITING)

    clock.advance(hours=2)
    await wait_for(vapp, sentinel, lambda i: i.status is Status.COMPLETED)

    assert (await vapp.get(iid)).to_json() == done.to_json()
    assert [e.event for e in done.execution_history] == ["approved", "done"]


async def test_a_cancelled_resume_never_fires(
    vapp: Hephaestus, clock: VirtualClock, wait_for: Any
) -> None:
    iid = await RtVcHoldFlow.start("c1")
    await wait_for(vapp, iid, lambda i: i.status is Status.WAITING)
    handle = await vapp.schedule_resume(iid, "hold", 60)
    await vapp.cancel_timer(handle)
    kept = await vapp.schedule_resume(await RtVcHoldFlow.start("c2"), "hold", 120)
    sentinel = kept.instance_id

    clock.advance(minutes=5)
    await wait_for(vapp, sentinel, lambda i: i.status is Status.COMPLETED)

    still = await vapp.get(iid)
    assert still.status is Status.WAITING
    assert still.execution_history == ()


async def test_retry_backoff_waits_for_the_clock(
    vapp: Hephaestus, clock: VirtualClock, wait_for: Any
) -> None:
    iid = await RtVcFlakyFlow.start("r1")
    first = await wait_for(vapp, iid, lambda i: any(t.kind == "retry" for t in i.timers))
    assert first.timers[0].due_at == START + timedelta(minutes=10)
    sentinel = await RtVcHoldFlow.start("r1-sentinel")
    await wait_for(vapp, sentinel, lambda i: i.status is Status.WAITING)
    await vapp.schedule_resume(sentinel, "hold", 9 * 60)

    clock.advance(minutes=9)
    await wait_for(vapp, sentinel, lambda i: i.status is Status.COMPLETED)
    assert RT_RUNS[iid, "flaky"] == 1  # its retry is due a minute later

    clock.advance(minutes=1)
    done = await wait_for(vapp, iid, lambda i: i.status.is_final)
    assert done.status is Status.COMPLETED, done.error
    assert RT_RUNS[iid, "flaky"] == 2


async def test_a_timer_set_before_a_restart_fires_after_it_on_the_same_clock(
    open_app: Any, db_path: Path, clock: VirtualClock, wait_for: Any
) -> None:
    first = await open_app(db_path, runner=LocalRunner(clock=clock))
    iid = await RtVcDayFlow.start("restart", hephaestus=first)
    await wait_for(first, iid, lambda i: i.status is Status.WAITING)
    await first.close()

    second = await open_app(db_path, runner=LocalRunner(clock=clock))
    clock.advance(days=2)
    done = await wait_for(second, iid, lambda i: i.status.is_final)

    assert done.status is Status.COMPLETED, done.error
    assert RT_RUNS[iid, "after"] == 1
