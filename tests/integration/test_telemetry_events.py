"""The telemetry events a real workflow run emits, with their measurements and metadata.

Each test runs workflows through `Hephaestus` with `MemoryStorage` and the
`LocalRunner`, records every event with `capture_events()`, and checks the
story they tell: fan-out, a retried step, a wait resumed by an event, a
durable timer, a failure. Tests on the shared `app` fixture run on both
runners: what one engine call did is reported once, the same way, by each.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from hephaestus import (
    Context,
    Done,
    Instance,
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
from hephaestus.runners.local import LocalRunner
from hephaestus.telemetry import (
    ALL_EVENTS,
    ENGINE_ADVANCE,
    RUNNER_INIT,
    STEP_ASYNC,
    STEP_EXCEPTION,
    STEP_RESUME,
    STEP_START,
    STEP_STOP,
    WORKFLOW_EXCEPTION,
    WORKFLOW_START,
    WORKFLOW_STOP,
    WORKFLOW_TRANSITION,
)
from hephaestus.telemetry.otel import _STANDARD_KEYS as otel_standard_keys
from hephaestus.testing import CapturedEvent, MemoryStorage, capture_events


class TelValidate(Step):
    events = ("valid",)

    def execute(self, instance: Instance, config: Mapping[str, Any] | None, context: Context) -> Ok:
        return Ok("valid", {"total": 42})


class TelCharge(Step):
    """Fails its first attempt, succeeds on the retry."""

    events = ("charged",)
    retry = Retry(max_attempts=2, backoff="constant", base=0.01)

    def execute(self, instance: Instance, config: Mapping[str, Any] | None, context: Context) -> Ok:
        if context.attempt == 1:
            raise ConnectionError("payment provider unreachable")
        return Ok("charged")


class TelReserve(Step):
    events = ("reserved",)

    async def execute(
        self, instance: Instance, config: Mapping[str, Any] | None, context: Context
    ) -> Ok:
        return Ok("reserved")


class TelAwaitConfirmation(WaitForEvent):
    pass


class TelCoolDown(Wait):
    pass


class TelOrderFlow(Workflow):
    unique = Unique(key="telorder")
    start = TelValidate
    transitions = {
        (TelValidate, "valid"): [TelCharge, TelReserve],
        (TelCharge, "charged"): (TelAwaitConfirmation, {"event_name": "confirmed"}),
        (TelReserve, "reserved"): TelAwaitConfirmation,
        (TelAwaitConfirmation, "confirmed"): (TelCoolDown, {"duration": 0.02, "unit": "second"}),
        (TelCoolDown, "timeout"): Done,
    }


class TelExplode(Step):
    events = ("never",)

    def execute(self, instance: Instance, config: Mapping[str, Any] | None, context: Context) -> Ok:
        raise ValueError("the ledger is closed")


class TelFailingFlow(Workflow):
    unique = Unique(key="telfail")
    start = TelExplode
    transitions = {(TelExplode, "never"): Done}


async def _until(check: Callable[[], Any], what: str, timeout: float = 10.0) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not await check():
                await asyncio.sleep(0.01)
    except TimeoutError:
        pytest.fail(f"timed out waiting for {what}")


async def _stored(app: Hephaestus, instance_id: str, ready: Callable[[Instance], bool]) -> Instance:
    async def check() -> bool:
        return ready(await app.get(instance_id))

    await _until(check, f"instance {instance_id}")
    return await app.get(instance_id)


async def _emitted(events: list[CapturedEvent], name: str) -> None:
    async def check() -> bool:
        return any(e.name == name for e in events)

    await _until(check, f"event {name}")


def _named(events: list[CapturedEvent], name: str, **metadata: Any) -> list[CapturedEvent]:
    return [
        e
        for e in events
        if e.name == name and all(e.metadata.get(k) == v for k, v in metadata.items())
    ]


async def _run_order(value: str) -> tuple[list[CapturedEvent], Instance]:
    """Run one TelOrderFlow to completion, confirming it when it waits."""
    with capture_events() as events:
        async with Hephaestus(storage=MemoryStorage(), runner=LocalRunner()) as app:
            instance_id = await app.start_instance(
                TelOrderFlow, {}, id=f"telorder::{value}", telemetry_metadata={"tenant": "t1"}
            )
            await _stored(app, instance_id, lambda i: "tel_await_confirmation" in i.waiting_steps)
            await app.resume(instance_id, "confirmed")
            final = await _stored(app, instance_id, lambda i: i.status.is_final)
            await _emitted(events, WORKFLOW_STOP)
    return events, final


ORDER_FLOW = f"{TelOrderFlow.__module__}.{TelOrderFlow.__qualname__}"


async def test_every_instance_event_carries_the_instance_and_the_callers_metadata() -> None:
    events, final = await _run_order("meta")

    instance_events = [e for e in events if e.name != RUNNER_INIT]
    assert {e.name for e in instance_events} >= {
        WORKFLOW_START,
        WORKFLOW_STOP,
        WORKFLOW_TRANSITION,
        STEP_START,
        STEP_STOP,
        STEP_EXCEPTION,
        STEP_ASYNC,
        STEP_RESUME,
        ENGINE_ADVANCE,
    }
    for event in instance_events:
        assert event.metadata["instance_id"] == final.id, event
        assert event.metadata["workflow"] == ORDER_FLOW, event
        assert event.metadata["workflow_version"] == 1, event
        assert event.metadata["tenant"] == "t1", event


async def test_the_runner_announces_itself_when_the_app_opens() -> None:
    events, _ = await _run_order("init")

    [init] = _named(events, RUNNER_INIT)
    assert init.metadata == {"runner": "LocalRunner", "storage": "MemoryStorage"}
    assert init.measurements["system_time"] > 0
    assert events[0] is init


async def test_the_instance_starts_at_its_first_step_and_stops_completed() -> None:
    events, final = await _run_order("life")
    mine = [e for e in events if e.name != RUNNER_INIT]

    assert mine[0].name == WORKFLOW_START
    assert mine[0].metadata["initial_step"] == ["tel_validate"]
    assert mine[-1].name == WORKFLOW_STOP
    stop = mine[-1]
    assert stop.metadata["status"] == "completed"
    assert stop.measurements["step_count"] == len(final.completed_steps)
    assert stop.measurements["duration"] > 0
    assert final.status is Status.COMPLETED
    assert _named(events, WORKFLOW_EXCEPTION) == []


async def test_each_step_attempt_starts_and_stops_with_its_attempt_number() -> None:
    events, _ = await _run_order("steps")

    starts = {(e.metadata["step"], e.metadata["attempt"]) for e in _named(events, STEP_START)}
    assert starts == {
        ("tel_validate", 1),
        ("tel_charge", 1),
        ("tel_charge", 2),
        ("tel_reserve", 1),
        ("tel_await_confirmation", 1),
        ("tel_cool_down", 1),
    }
    stops = {
        (e.metadata["step"], e.metadata["attempt"], e.metadata["event"])
        for e in _named(events, STEP_STOP)
    }
    assert stops == {
        ("tel_validate", 1, "valid"),
        ("tel_charge", 2, "charged"),
        ("tel_reserve", 1, "reserved"),
    }
    for stop in _named(events, STEP_STOP):
        assert isinstance(stop.measurements["duration"], float)
        assert stop.measurements["duration"] >= 0


async def test_a_failed_attempt_reports_the_retry_then_the_retry_stops() -> None:
    events, final = await _run_order("retry")

    [failure] = _named(events, STEP_EXCEPTION)
    assert failure.metadata["step"] == "tel_charge"
    assert failure.metadata["attempt"] == 1
    assert failure.metadata["will_retry"] is True
    assert failure.metadata["kind"] == "exception"
    assert isinstance(failure.metadata["exception"], ConnectionError)
    assert "payment provider unreachable" in failure.metadata["reason"]

    charge = [e for e in events if e.metadata.get("step") == "tel_charge"]
    assert [(e.name, e.metadata["attempt"]) for e in charge] == [
        (STEP_START, 1),
        (STEP_EXCEPTION, 1),
        (STEP_START, 2),
        (STEP_STOP, 2),
    ]
    [entry] = [h for h in final.execution_history if h.step == "tel_charge"]
    assert entry.attempt == 2


async def test_the_fan_out_transition_names_both_targets() -> None:
    events, _ = await _run_order("fanout")

    [fan_out] = _named(events, WORKFLOW_TRANSITION, from_step="tel_validate")
    assert fan_out.metadata["event"] == "valid"
    assert fan_out.metadata["targets"] == ["tel_charge", "tel_reserve"]
    assert fan_out.metadata["fan_out"] is True
    assert fan_out.measurements["targets_count"] == 2

    [single] = _named(events, WORKFLOW_TRANSITION, from_step="tel_await_confirmation")
    assert single.metadata["targets"] == ["tel_cool_down"]
    assert single.metadata["fan_out"] is False


async def test_a_waiting_step_reports_async_then_its_resume_by_event() -> None:
    events, _ = await _run_order("wait")

    [parked] = _named(events, STEP_ASYNC, step="tel_await_confirmation")
    assert parked.metadata["attempt"] == 1
    assert parked.metadata["instance_status"] == "waiting"
    [resumed] = _named(events, STEP_RESUME, step="tel_await_confirmation")
    assert resumed.metadata["source"] == "event"
    assert resumed.metadata["resume_event"] == "confirmed"
    assert resumed.measurements["wait_duration"] >= 0
    assert events.index(parked) < events.index(resumed)


async def test_a_durable_timer_resume_reports_source_timer() -> None:
    events, _ = await _run_order("timer")

    [parked] = _named(events, STEP_ASYNC, step="tel_cool_down")
    [resumed] = _named(events, STEP_RESUME, step="tel_cool_down")
    assert resumed.metadata["source"] == "timer"
    assert resumed.metadata["resume_event"] == "timeout"
    assert events.index(parked) < events.index(resumed)


async def test_engine_advance_reports_each_step_that_completed() -> None:
    events, final = await _run_order("advance")

    advances = _named(events, ENGINE_ADVANCE)
    assert sum(e.measurements["completed_in_advance"] for e in advances) == len(
        final.completed_steps
    )
    assert advances[-1].metadata["status_after"] == "completed"
    assert advances[-1].measurements["active_steps_count"] == 0


async def test_a_failing_step_without_retries_fails_the_workflow() -> None:
    with capture_events() as events:
        async with Hephaestus(storage=MemoryStorage(), runner=LocalRunner()) as app:
            instance_id = await app.start_instance(
                TelFailingFlow, {}, id="telfail::one", telemetry_metadata={"tenant": "t1"}
            )
            final = await _stored(app, instance_id, lambda i: i.status.is_final)
            await _emitted(events, WORKFLOW_EXCEPTION)

    assert final.status is Status.FAILED
    [failure] = _named(events, STEP_EXCEPTION)
    assert failure.metadata["step"] == "tel_explode"
    assert failure.metadata["will_retry"] is False
    assert isinstance(failure.metadata["exception"], ValueError)
    [failed] = _named(events, WORKFLOW_EXCEPTION)
    assert failed.metadata["status"] == "failed"
    assert "the ledger is closed" in failed.metadata["reason"]
    assert failed.metadata["tenant"] == "t1"
    assert failed.measurements["duration"] > 0
    assert _named(events, WORKFLOW_STOP) == []
    assert events.index(failure) < events.index(failed)


async def test_nothing_is_captured_outside_the_block() -> None:
    with capture_events() as events:
        pass
    async with Hephaestus(storage=MemoryStorage(), runner=LocalRunner()) as app:
        instance_id = await app.start_instance(TelFailingFlow, {}, id="telfail::quiet")
        await _stored(app, instance_id, lambda i: i.status.is_final)

    assert events == []


async def test_every_instance_event_carries_the_creation_time_and_cancel_stops() -> None:
    async with Hephaestus(storage=MemoryStorage(), runner=LocalRunner()) as app:
        with capture_events() as events:
            iid = await app.start_instance(TelOrderFlow, {"items": 2}, id="telorder::cancelme")
            await _stored(app, iid, lambda i: bool(i.waiting_steps))
            await app.cancel(iid)
        final = await app.get(iid)
    instance_events = [e for e in events if e.name != RUNNER_INIT]
    assert instance_events
    assert {e.metadata["instance_created_at"] for e in instance_events} == {
        final.created_at.isoformat()
    }
    stops = [e for e in events if e.name == WORKFLOW_STOP]
    assert [e.metadata["status"] for e in stops] == ["cancelled"]


# --- two timers fired by one engine call, on both runners ----------------------------------


class _HeldClock:
    """The current UTC time, or a moment held still while `held` is set."""

    def __init__(self) -> None:
        self.held: datetime | None = None

    def __call__(self) -> datetime:
        return self.held or datetime.now(UTC)


TEL_CLOCK = _HeldClock()


class TelSplit(Step):
    events = ("split",)

    def execute(self, instance: Instance, config: Mapping[str, Any] | None, context: Context) -> Ok:
        return Ok("split")


class TelNapLeft(Wait):
    pass


class TelNapRight(Wait):
    pass


class TelAfterLeft(WaitForEvent):
    pass


class TelAfterRight(WaitForEvent):
    pass


class TelMeet(Step):
    events = ("met",)

    def execute(self, instance: Instance, config: Mapping[str, Any] | None, context: Context) -> Ok:
        return Ok("met")


NAP = {"duration": 1, "unit": "second"}


class TelTwinTimersFlow(Workflow):
    unique = Unique(key="teltwins")
    start = TelSplit
    transitions = {
        (TelSplit, "split"): [(TelNapLeft, NAP), (TelNapRight, NAP)],
        (TelNapLeft, "timeout"): (TelAfterLeft, {"event_name": "go"}),
        (TelNapRight, "timeout"): (TelAfterRight, {"event_name": "go"}),
        (TelAfterLeft, "go"): TelMeet,
        (TelAfterRight, "go"): TelMeet,
        (TelMeet, "met"): Done,
    }


@pytest.mark.both_runners
@pytest.mark.runner_options(clock=TEL_CLOCK)
async def test_two_timers_fired_by_one_engine_call_are_each_reported_once(
    app: Hephaestus, wait_for: Any
) -> None:
    # Both naps park at one held moment, so their timers are due together and the
    # runner fires them in one engine call.
    TEL_CLOCK.held = datetime.now(UTC)
    try:
        iid = await app.start_instance(TelTwinTimersFlow, {}, id="teltwins::one")
        parked = await wait_for(
            app, iid, lambda i: i.waiting_steps == {"tel_nap_left", "tel_nap_right"}
        )
        assert len({timer.due_at for timer in parked.timers}) == 1
        with capture_events() as events:
            TEL_CLOCK.held = None
            await wait_for(
                app, iid, lambda i: i.waiting_steps == {"tel_after_left", "tel_after_right"}
            )

            async def after_steps_parked() -> bool:
                parked_steps = {e.metadata["step"] for e in _named(events, STEP_ASYNC)}
                return parked_steps >= {"tel_after_left", "tel_after_right"}

            # Reported after the naps' resumes: everything the timers' engine call did is in.
            await _until(after_steps_parked, "the steps after the naps to park")
    finally:
        TEL_CLOCK.held = None

    resumes = _named(events, STEP_RESUME)
    assert sorted((e.metadata["step"], e.metadata["source"]) for e in resumes) == [
        ("tel_nap_left", "timer"),
        ("tel_nap_right", "timer"),
    ]
    assert {e.metadata["resume_event"] for e in resumes} == {"timeout"}
    assert all(e.measurements["wait_duration"] >= 1.0 for e in resumes)
    transitions = _named(events, WORKFLOW_TRANSITION)
    assert sorted((e.metadata["from_step"], tuple(e.metadata["targets"])) for e in transitions) == [
        ("tel_nap_left", ("tel_after_left",)),
        ("tel_nap_right", ("tel_after_right",)),
    ]
    [advance] = _named(events, ENGINE_ADVANCE)
    assert advance.measurements["completed_in_advance"] == 2
    assert advance.metadata["status_after"] == "running"


# --- the original's measurements and metadata, on both runners ----------------------------


class TelTag(Step):
    events = ("tagged",)

    def execute(self, instance: Instance, config: Mapping[str, Any] | None, context: Context) -> Ok:
        return Ok("tagged", metadata={"channel": "web"})


class TelLeft(Step):
    events = ("left",)

    def execute(self, instance: Instance, config: Mapping[str, Any] | None, context: Context) -> Ok:
        return Ok("left", {"side": "left"})


class TelRight(Step):
    events = ("right",)

    async def execute(
        self, instance: Instance, config: Mapping[str, Any] | None, context: Context
    ) -> Ok:
        return Ok("right")


class TelJoin(Step):
    events = ("joined",)

    def execute(self, instance: Instance, config: Mapping[str, Any] | None, context: Context) -> Ok:
        return Ok("joined")


class TelAwaitGo(WaitForEvent):
    pass


class TelParityFlow(Workflow):
    unique = Unique(key="telparity")
    start = TelTag
    transitions = {
        (TelTag, "tagged"): [TelLeft, TelRight],
        (TelLeft, "left"): TelJoin,
        (TelRight, "right"): TelJoin,
        (TelJoin, "joined"): (TelAwaitGo, {"event_name": "go"}),
        (TelAwaitGo, "go"): Done,
    }


@pytest.mark.both_runners
async def test_events_carry_the_originals_measurements_and_metadata(
    app: Hephaestus, wait_for: Any
) -> None:
    with capture_events() as events:
        iid = await app.start_instance(
            TelParityFlow, {"tenant": "t1", "amount": 3}, id="telparity::one"
        )
        await wait_for(app, iid, lambda i: i.status is Status.WAITING)
        await app.resume(iid, "go")
        final = await wait_for(app, iid, lambda i: i.status.is_final)
        await _emitted(events, WORKFLOW_STOP)

    [start] = _named(events, WORKFLOW_START)
    assert start.metadata["context_keys"] == ["amount", "tenant"]
    assert start.metadata["runner"] == type(app.runner).__name__

    starts = {e.metadata["step"]: e for e in _named(events, STEP_START)}
    assert starts["tel_tag"].measurements["active_steps_count"] == 1
    assert starts["tel_tag"].metadata["concurrent"] is False
    # The branches of the fan-out run together: the first to start sees both active.
    branches = [starts["tel_left"], starts["tel_right"]]
    assert max(e.measurements["active_steps_count"] for e in branches) == 2
    assert any(e.metadata["concurrent"] is True for e in branches)

    stops = {e.metadata["step"]: e.metadata for e in _named(events, STEP_STOP)}
    flags = {
        step: (stop["has_context_updates"], stop["has_metadata_updates"])
        for step, stop in stops.items()
    }
    assert flags["tel_tag"] == (False, True)
    assert flags["tel_left"] == (True, False)
    assert stops["tel_right"]["has_context_updates"] is False

    advances = _named(events, ENGINE_ADVANCE)
    iterations = [e.measurements["iteration"] for e in advances]
    assert iterations == sorted(set(iterations))  # one per stored decision, in order
    assert all(e.metadata["status_before"] in ("running", "waiting") for e in advances)
    assert advances[-1].metadata["status_before"] == "waiting"  # the resume completed it
    assert advances[-1].measurements["iteration"] == final.revision

    [stop] = _named(events, WORKFLOW_STOP)
    assert stop.measurements["advance_count"] == final.revision
    assert stop.metadata["completed_steps"] == sorted(final.completed_steps)
    assert "tel_await_go" in stop.metadata["completed_steps"]


@pytest.mark.both_runners
async def test_the_workflow_exception_names_the_failed_step(app: Hephaestus, wait_for: Any) -> None:
    with capture_events() as events:
        iid = await app.start_instance(TelFailingFlow, {}, id="telfail::named")
        await wait_for(app, iid, lambda i: i.status.is_final)
        await _emitted(events, WORKFLOW_EXCEPTION)

    [failed] = _named(events, WORKFLOW_EXCEPTION)
    assert failed.metadata["failed_step"] == "tel_explode"


# --- docs/telemetry.md lists every field -------------------------------------------------------

_DOCS = Path(__file__).resolve().parents[2] / "docs" / "telemetry.md"
_INSTANCE_KEYS = {"instance_id", "workflow", "workflow_version", "instance_created_at"}


def _documented() -> dict[str, tuple[set[str], set[str]]]:
    """The events table of docs/telemetry.md: event -> (measurements, metadata) field names."""
    fields: dict[str, tuple[set[str], set[str]]] = {}
    for line in _DOCS.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 4 or not cells[0].startswith("`hephaestus."):
            continue
        names = [
            {name for name in re.findall(r"`([^`]*)`", cell) if re.fullmatch(r"[a-z_]+", name)}
            for cell in cells[2:]
        ]
        fields[cells[0].strip("`")] = (names[0], names[1])
    return fields


async def test_docs_list_every_field_of_every_event() -> None:
    with capture_events() as events:
        async with Hephaestus(storage=MemoryStorage(), runner=LocalRunner()) as app:
            order = await app.start_instance(TelOrderFlow, {"items": 1}, id="telorder::docs")
            await _stored(app, order, lambda i: "tel_await_confirmation" in i.waiting_steps)
            await app.resume(order, "confirmed")
            await _stored(app, order, lambda i: i.status.is_final)
            failing = await app.start_instance(TelFailingFlow, {}, id="telfail::docs")
            await _stored(app, failing, lambda i: i.status.is_final)
            await _emitted(events, WORKFLOW_EXCEPTION)
            await _emitted(events, WORKFLOW_STOP)

    documented = _documented()
    assert set(documented) == set(ALL_EVENTS)
    seen = {e.name for e in events}
    assert seen == set(ALL_EVENTS)
    for event in events:
        measurements, metadata = documented[event.name]
        assert set(event.measurements) == measurements, event.name
        extra = _INSTANCE_KEYS if event.name != RUNNER_INIT else set()
        assert set(event.metadata) == metadata | extra, event.name
        # The OpenTelemetry handler tells the runner's keys from the caller's by this list.
        assert metadata <= otel_standard_keys, event.name
