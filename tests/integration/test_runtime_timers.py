"""Durable timers: `Wait`, `WaitForEvent` timeouts, `schedule_resume`, restarts."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from hephaestus import (
    Async,
    Context,
    Done,
    Instance,
    Ok,
    Status,
    Step,
    TimerNotFoundError,
    Unique,
    Wait,
    WaitForEvent,
    Workflow,
)
from hephaestus.app import Hephaestus
from hephaestus.core import engine
from hephaestus.storage import MemoryStorage, SQLiteStorage
from hephaestus.testing import VirtualClock

# How often each (instance id, step key) ran.
RT_TIMER_RUNS: Counter[tuple[str, str]] = Counter()


pytestmark = pytest.mark.both_runners


async def _move_past(app: Hephaestus, clock: VirtualClock, moment: datetime, wait_for: Any) -> None:
    """Move `clock` a second past `moment`, and return once the runner has looked then.

    A sentinel instance's resume, due at the new time, must fire first; then the
    runner is idle. A check that nothing else fired cannot pass because it came early.
    """
    target = moment + timedelta(seconds=1)
    sentinel = await app.start_instance(RtHoldFlow, {}, id=f"rthold::sentinel-{target:%H%M%S%f}")
    await wait_for(app, sentinel, lambda i: i.status is Status.WAITING)
    await app.schedule_resume(sentinel, "hold", (target - clock.now()).total_seconds())
    clock.advance((target - clock.now()).total_seconds())
    await wait_for(app, sentinel, lambda i: i.status is Status.COMPLETED)
    runner: Any = app.runner
    await runner.wait_idle(timeout=10)


def _events_of(instance: Instance, step: str) -> list[str]:
    return [entry.event for entry in instance.execution_history if entry.step == step]


class RtNapStart(Step):
    events = ("ready",)
    key = "nap_start"

    def execute(
        self, instance: Instance, config: Mapping[str, Any] | None, context: Context
    ) -> str:
        RT_TIMER_RUNS[instance.id, self.key] += 1
        return "ready"


class RtNapAfter(Step):
    events = ("woke",)
    key = "nap_after"

    async def execute(
        self, instance: Instance, config: Mapping[str, Any] | None, context: Context
    ) -> Ok:
        RT_TIMER_RUNS[instance.id, self.key] += 1
        return Ok("woke", {"at": datetime.now(UTC).isoformat()})


class RtNapFlow(Workflow):
    unique = Unique(key="rtnap")
    start = RtNapStart
    transitions = {
        (RtNapStart, "ready"): (Wait, {"duration": 0.1, "unit": "second"}),
        (Wait, "timeout"): RtNapAfter,
        (RtNapAfter, "woke"): Done,
    }


class RtLongNapFlow(Workflow):
    unique = Unique(key="rtlongnap")
    start = RtNapStart
    transitions = {
        (RtNapStart, "ready"): (Wait, {"duration": 0.5, "unit": "second"}),
        (Wait, "timeout"): RtNapAfter,
        (RtNapAfter, "woke"): Done,
    }


async def test_wait_fires_once_and_the_instance_completes(app: Hephaestus, wait_for: Any) -> None:
    iid = await app.start_instance(RtNapFlow, {}, id="rtnap::once1")
    parked = await wait_for(app, iid, lambda i: i.status is Status.WAITING)
    assert parked.waiting_steps == {"wait"}
    assert len(parked.timers) == 1

    done = await wait_for(app, iid, lambda i: i.status.is_final)

    assert done.status is Status.COMPLETED, done.error
    assert _events_of(done, "wait") == ["timeout"]
    assert [e.step for e in done.execution_history] == ["nap_start", "wait", "nap_after", "done"]
    assert RT_TIMER_RUNS[iid, "nap_after"] == 1
    assert done.timers == ()


class RtDayNapFlow(Workflow):
    unique = Unique(key="rtdaynap")
    start = RtNapStart
    transitions = {
        (RtNapStart, "ready"): (Wait, {"duration": 1, "unit": "day"}),
        (Wait, "timeout"): RtNapAfter,
        (RtNapAfter, "woke"): Done,
    }


async def test_a_day_long_wait_fires_as_soon_as_the_virtual_clock_passes_it(
    app: Hephaestus, clock: VirtualClock, wait_for: Any
) -> None:
    iid = await app.start_instance(RtDayNapFlow, {}, id="rtdaynap::v1")
    parked = await wait_for(app, iid, lambda i: i.status is Status.WAITING)
    (timer,) = parked.timers
    assert timer.due_at == parked.updated_at + timedelta(days=1)

    await _move_past(app, clock, timer.due_at - timedelta(seconds=2), wait_for)
    assert (await app.get(iid)).status is Status.WAITING  # a second early: not yet

    clock.advance(2)
    done = await wait_for(app, iid, lambda i: i.status.is_final)
    assert done.status is Status.COMPLETED, done.error
    assert RT_TIMER_RUNS[iid, "nap_after"] == 1


# --- WaitForEvent with a timeout ---------------------------------------------------------


class RtApproval(WaitForEvent):
    key = "approval"


class RtPickup(WaitForEvent):
    key = "pickup"


class RtExpire(Step):
    events = ("expired",)
    key = "expire"

    def execute(
        self, instance: Instance, config: Mapping[str, Any] | None, context: Context
    ) -> str:
        RT_TIMER_RUNS[instance.id, self.key] += 1
        return "expired"


class RtApprovalFlow(Workflow):
    unique = Unique(key="rtapproval")
    start = (RtApproval, {"event_name": "approved", "timeout_ms": 200})
    transitions = {
        (RtApproval, "approved"): (RtPickup, {"event_name": "picked_up"}),
        (RtApproval, "timeout"): RtExpire,
        (RtPickup, "picked_up"): Done,
        (RtExpire, "expired"): Done,
    }


async def test_wait_for_event_times_out_when_no_event_comes(app: Hephaestus, wait_for: Any) -> None:
    iid = await app.start_instance(RtApprovalFlow, {}, id="rtapproval::late1")
    done = await wait_for(app, iid, lambda i: i.status.is_final)

    assert done.status is Status.COMPLETED, done.error
    assert _events_of(done, "approval") == ["timeout"]
    assert [e.step for e in done.execution_history] == ["approval", "expire", "done"]
    assert RT_TIMER_RUNS[iid, "expire"] == 1


async def test_an_event_before_the_timeout_wins_and_the_timer_never_fires(
    app: Hephaestus, clock: VirtualClock, wait_for: Any
) -> None:
    iid = await app.start_instance(RtApprovalFlow, {}, id="rtapproval::ontime1")
    parked = await wait_for(app, iid, lambda i: i.status is Status.WAITING)
    (timer,) = parked.timers

    await app.resume(iid, "approved")
    at_pickup = await wait_for(app, iid, lambda i: i.waiting_steps == {"pickup"})
    assert at_pickup.timers == ()

    # Past the time the approval's timer was due, nothing has happened to the instance.
    await _move_past(app, clock, timer.due_at, wait_for)
    later = await app.get(iid)
    assert later.to_json() == at_pickup.to_json()
    assert _events_of(later, "approval") == ["approved"]
    assert RT_TIMER_RUNS[iid, "expire"] == 0

    await app.resume(iid, "picked_up")
    done = await wait_for(app, iid, lambda i: i.status.is_final)
    assert done.status is Status.COMPLETED
    assert [e.step for e in done.execution_history] == ["approval", "pickup", "done"]


# --- schedule_resume and cancel_timer -----------------------------------------------------


class RtHold(WaitForEvent):
    key = "hold"


class RtHoldFlow(Workflow):
    unique = Unique(key="rthold")
    start = (RtHold, {"event_name": "release"})
    transitions = {(RtHold, "release"): Done}


async def test_schedule_resume_resumes_a_waiting_step(app: Hephaestus, wait_for: Any) -> None:
    iid = await app.start_instance(RtHoldFlow, {}, id="rthold::sched1")
    await wait_for(app, iid, lambda i: i.status is Status.WAITING)

    handle = await app.schedule_resume(iid, "hold", 0.1)

    assert handle.instance_id == iid
    assert handle.step == "hold"
    stored = await app.get(iid)
    assert [t.id for t in stored.timers] == [handle.timer_id]
    done = await wait_for(app, iid, lambda i: i.status.is_final)
    assert done.status is Status.COMPLETED
    assert _events_of(done, "hold") == ["release"]


async def test_schedule_resume_accepts_the_step_class_and_an_explicit_event(
    app: Hephaestus, wait_for: Any
) -> None:
    iid = await app.start_instance(RtHoldFlow, {}, id="rthold::sched2")
    await wait_for(app, iid, lambda i: i.status is Status.WAITING)

    await app.schedule_resume(iid, RtHold, 0.05, event="release")

    done = await wait_for(app, iid, lambda i: i.status.is_final)
    assert _events_of(done, "hold") == ["release"]


async def test_cancel_timer_stops_the_resume_and_a_second_cancel_fails(
    app: Hephaestus, clock: VirtualClock, wait_for: Any
) -> None:
    iid = await app.start_instance(RtHoldFlow, {}, id="rthold::cancel1")
    await wait_for(app, iid, lambda i: i.status is Status.WAITING)
    handle = await app.schedule_resume(iid, "hold", 0.2)

    await app.cancel_timer(handle)

    stored = await app.get(iid)
    assert stored.timers == ()
    await _move_past(app, clock, handle.due_at, wait_for)
    still = await app.get(iid)
    assert still.status is Status.WAITING
    assert still.waiting_steps == {"hold"}
    assert still.execution_history == ()

    with pytest.raises(TimerNotFoundError, match=handle.timer_id):
        await app.cancel_timer(handle)
    assert (await app.get(iid)).to_json() == still.to_json()


async def test_a_fired_timer_cannot_be_cancelled(app: Hephaestus, wait_for: Any) -> None:
    iid = await app.start_instance(RtHoldFlow, {}, id="rthold::fired1")
    await wait_for(app, iid, lambda i: i.status is Status.WAITING)
    handle = await app.schedule_resume(iid, "hold", 0.01)
    await wait_for(app, iid, lambda i: i.status.is_final)

    before = await app.get(iid)

    with pytest.raises(TimerNotFoundError, match="fired, was cancelled"):
        await app.cancel_timer(handle)

    assert (await app.get(iid)).to_json() == before.to_json()


# --- timers survive a restart ------------------------------------------------------------


async def test_a_durable_timer_fires_once_after_a_restart(
    open_app: Any, db_path: Path, clock: VirtualClock, wait_for: Any
) -> None:
    first = await open_app(db_path, clock=clock)
    iid = await first.start_instance(RtLongNapFlow, {}, id="rtlongnap::restart1")
    parked = await wait_for(first, iid, lambda i: i.status is Status.WAITING)
    await first.close()
    (timer,) = parked.timers

    # The process is gone while the timer comes due.
    clock.advance((timer.due_at - clock.now()).total_seconds())
    second = await open_app(db_path, clock=clock)
    done = await wait_for(second, iid, lambda i: i.status.is_final)

    assert done.status is Status.COMPLETED, done.error
    assert _events_of(done, "wait") == ["timeout"]
    assert [e.step for e in done.execution_history] == ["nap_start", "wait", "nap_after", "done"]
    assert RT_TIMER_RUNS[iid, "nap_start"] == 1
    assert RT_TIMER_RUNS[iid, "nap_after"] == 1


async def test_a_durable_timer_set_before_a_restart_fires_on_time_after_it(
    open_app: Any, db_path: Path, wait_for: Any
) -> None:
    first = await open_app(db_path)
    iid = await first.start_instance(RtLongNapFlow, {}, id="rtlongnap::restart2")
    await wait_for(first, iid, lambda i: i.status is Status.WAITING)
    await first.close()

    # Reopened before the timer is due: the new runner arms it from storage.
    second = await open_app(db_path)
    assert (await second.get(iid)).status is Status.WAITING
    done = await wait_for(second, iid, lambda i: i.status.is_final)

    assert done.status is Status.COMPLETED, done.error
    assert _events_of(done, "wait") == ["timeout"]
    assert RT_TIMER_RUNS[iid, "nap_after"] == 1


# --- a timer that cannot fire -------------------------------------------------------------


class RtCountingSQLiteStorage(SQLiteStorage):
    """The real SQLite adapter, counting how often the runner looks for due timers."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.due_timer_queries = 0

    async def due_timers(
        self, now: datetime, limit: int = 1000, *, runner_id: str | None = None
    ) -> list[str]:
        self.due_timer_queries += 1
        return await super().due_timers(now, limit, runner_id=runner_id)


async def test_a_due_timer_of_a_workflow_that_cannot_be_loaded_does_not_spin(
    open_app: Any, db_path: Path, wait_for: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # An instance parked with a due timer, stored under a workflow name that no longer imports
    # (the class was renamed or removed by a deploy).
    definition = RtHoldFlow.definition()
    now = datetime.now(UTC)
    started = engine.new_instance(
        definition, instance_id="rthold::orphan1", context=Context.new({}), now=now
    ).instance
    parked = engine.complete_step(
        definition,
        started,
        "hold",
        Async(resume_after=0, timeout_event="release"),
        attempt=1,
        now=now,
    ).instance
    async with SQLiteStorage(db_path) as storage:
        await storage.put(parked.evolve(workflow="nowhere.RtVanishedFlow"), None)

    counting = RtCountingSQLiteStorage(db_path)
    app = await open_app(counting, timer_poll_interval=0.2)
    healthy = await app.start_instance(RtHoldFlow, {}, id="rthold::healthy1")
    await wait_for(app, healthy, lambda i: i.status is Status.WAITING)
    await app.schedule_resume(healthy, "hold", 0.3)
    done = await wait_for(app, healthy, lambda i: i.status.is_final)

    assert done.status is Status.COMPLETED
    orphan = await app.get("rthold::orphan1")
    assert orphan.status is Status.WAITING
    assert len(orphan.timers) == 1
    # Over about half a second, a 0.2 s poll looks a handful of times, not thousands.
    assert counting.due_timer_queries < 50
    errors = [r for r in caplog.records if "rthold::orphan1" in r.getMessage()]
    assert 0 < len(errors) < 50


class RtSlowTimerStorage(MemoryStorage):
    """Memory storage whose `next_timer_at` answers late, like a remote database."""

    async def next_timer_at(self) -> datetime | None:
        answer = await super().next_timer_at()
        await asyncio.sleep(0.1)
        return answer


class RtParkSoon(Step):
    events = ("timeout",)

    async def execute(
        self, instance: Instance, config: Mapping[str, Any] | None, context: Context
    ) -> Async:
        await asyncio.sleep(context.initial["delay"])
        return Async(resume_after=0.2)


class RtParkSoonFlow(Workflow):
    unique = Unique(key="rtparksoon")
    start = RtParkSoon
    transitions = {(RtParkSoon, "timeout"): Done}


async def test_a_timer_set_while_the_timer_loop_asks_storage_is_not_delayed_to_the_next_poll(
    open_app: Any, wait_for: Any
) -> None:
    # Polling for foreign timers only every 30 s: a timer of this process must not wait that.
    app = await open_app(RtSlowTimerStorage(), timer_poll_interval=30)
    await app.start_instance(RtParkSoonFlow, {"delay": 0.0}, id="rtparksoon::a")
    # This one parks while the loop is inside its slow `next_timer_at` call.
    late = await app.start_instance(RtParkSoonFlow, {"delay": 0.05}, id="rtparksoon::b")

    done = await wait_for(app, late, lambda i: i.status is Status.COMPLETED, timeout=10)

    assert [entry.event for entry in done.execution_history] == ["timeout", "done"]
