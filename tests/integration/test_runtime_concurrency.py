"""Concurrent callers: parallel resumes, racing starts, and many parked instances."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

from hephaestus import (
    AlreadyRunningError,
    Async,
    Context,
    Done,
    InvalidEventError,
    Ok,
    Status,
    Step,
    Unique,
    WaitForEvent,
    Workflow,
)
from hephaestus.app import Hephaestus
from hephaestus.core.instance import Instance
from hephaestus.runners.local import LocalRunner


class RtTwinSplit(Step):
    events = ("split",)
    key = "split"

    def execute(
        self, instance: Instance, config: Mapping[str, Any] | None, context: Context
    ) -> str:
        return "split"


class RtTwinLeft(WaitForEvent):
    key = "left"


class RtTwinRight(WaitForEvent):
    key = "right"


class RtTwinJoin(Step):
    events = ("joined",)
    key = "twin_join"

    def execute(self, instance: Instance, config: Mapping[str, Any] | None, context: Context) -> Ok:
        return Ok("joined", {"after": sorted(e.step for e in instance.execution_history)})


class RtTwinFlow(Workflow):
    unique = Unique(key="rttwin")
    start = RtTwinSplit
    transitions = {
        (RtTwinSplit, "split"): [
            (RtTwinLeft, {"event_name": "left_ok"}),
            (RtTwinRight, {"event_name": "right_ok"}),
        ],
        (RtTwinLeft, "left_ok"): RtTwinJoin,
        (RtTwinRight, "right_ok"): RtTwinJoin,
        (RtTwinJoin, "joined"): Done,
    }


async def test_two_concurrent_resumes_of_one_instance_are_both_applied(
    app: Hephaestus, wait_for: Any
) -> None:
    iid = await app.start_instance(RtTwinFlow, {}, id="rttwin::both1")
    await wait_for(app, iid, lambda i: i.waiting_steps == {"left", "right"})

    results = await asyncio.gather(app.resume(iid, "left_ok"), app.resume(iid, "right_ok"))

    assert results == [None, None]
    done = await wait_for(app, iid, lambda i: i.status.is_final)
    assert done.status is Status.COMPLETED, done.error
    events = {e.step: e.event for e in done.execution_history}
    assert events["left"] == "left_ok"
    assert events["right"] == "right_ok"
    assert [e.step for e in done.execution_history].count("twin_join") == 1
    assert done.context.steps["twin_join"] == {"after": ["left", "right", "split"]}


async def test_resume_returns_after_the_event_is_stored(app: Hephaestus, wait_for: Any) -> None:
    iid = await app.start_instance(RtTwinFlow, {}, id="rttwin::durable1")
    await wait_for(app, iid, lambda i: i.waiting_steps == {"left", "right"})

    await app.resume(iid, "left_ok")

    # No polling: the event is in storage by the time resume returns.
    stored = await app.storage.get(iid)
    assert stored.waiting_steps == {"right"}
    assert "left" in stored.completed_steps


async def test_the_same_event_sent_twice_at_once_is_delivered_once(
    app: Hephaestus, wait_for: Any
) -> None:
    iid = await app.start_instance(RtTwinFlow, {}, id="rttwin::dup1")
    await wait_for(app, iid, lambda i: i.waiting_steps == {"left", "right"})

    results = await asyncio.gather(
        app.resume(iid, "left_ok"), app.resume(iid, "left_ok"), return_exceptions=True
    )

    assert results.count(None) == 1
    (rejected,) = [r for r in results if r is not None]
    assert isinstance(rejected, InvalidEventError)
    stored = await app.get(iid)
    assert [e.step for e in stored.execution_history] == ["split", "left"]
    assert stored.waiting_steps == {"right"}


# --- racing starts of one business key ---------------------------------------------------


class RtRaceGate(WaitForEvent):
    key = "race_gate"


class RtRaceFlow(Workflow):
    unique = Unique(key="rtrace")
    start = (RtRaceGate, {"event_name": "go"})
    transitions = {(RtRaceGate, "go"): Done}


async def test_two_concurrent_starts_of_one_key_make_one_instance(
    app: Hephaestus, wait_for: Any
) -> None:
    results = await asyncio.gather(
        RtRaceFlow.start("same", {"n": 1}),
        RtRaceFlow.start("same", {"n": 2}),
        return_exceptions=True,
    )

    assert results.count("rtrace::same") == 1
    (refused,) = [r for r in results if r != "rtrace::same"]
    assert isinstance(refused, AlreadyRunningError)
    assert "rtrace::same" in str(refused)
    stored = await app.list()
    assert [i.id for i in stored] == ["rtrace::same"]
    winner = 1 if results[0] == "rtrace::same" else 2
    assert stored[0].context.initial == {"n": winner}


async def test_a_key_can_be_started_again_once_its_instance_finished(
    app: Hephaestus, wait_for: Any
) -> None:
    iid = await RtRaceFlow.start("again", {"round": 1})
    await wait_for(app, iid, lambda i: i.status is Status.WAITING)
    with pytest.raises(AlreadyRunningError):
        await RtRaceFlow.start("again", {"round": 2})
    await RtRaceFlow.resume("again", "go")
    first = await wait_for(app, iid, lambda i: i.status.is_final)
    assert first.status is Status.COMPLETED

    assert await RtRaceFlow.start("again", {"round": 2}) == iid

    second = await wait_for(app, iid, lambda i: i.status is Status.WAITING)
    assert second.context.initial == {"round": 2}
    assert second.execution_history == ()
    assert second.revision < first.revision
    assert [i.id for i in await app.list()] == [iid]
    await RtRaceFlow.resume("again", "go")
    done = await wait_for(app, iid, lambda i: i.status.is_final)
    assert done.status is Status.COMPLETED


# --- many parked instances ----------------------------------------------------------------


class RtParkGate(Step):
    """Parks at once, on the event loop (no thread hop), until `go`."""

    events = ("go",)
    key = "park_gate"

    async def execute(
        self, instance: Instance, config: Mapping[str, Any] | None, context: Context
    ) -> Async:
        return Async()


class RtParkFlow(Workflow):
    unique = Unique(key="rtpark")
    start = RtParkGate
    transitions = {(RtParkGate, "go"): Done}


PARKED = 10_000


async def test_ten_thousand_parked_instances_hold_no_actors_and_all_complete(
    app: Hephaestus,
) -> None:
    runner = app.runner
    assert isinstance(runner, LocalRunner)
    ids = [f"rtpark::p{n}" for n in range(PARKED)]

    for chunk in range(0, PARKED, 1000):
        await asyncio.gather(
            *(app.start_instance(RtParkFlow, None, id=iid) for iid in ids[chunk : chunk + 1000])
        )
    await runner.wait_idle(30)

    assert runner.active_instance_ids == frozenset()
    waiting = await app.list(status="waiting")
    assert len(waiting) == PARKED
    assert all(i.waiting_steps == {"park_gate"} for i in waiting)

    for chunk in range(0, PARKED, 1000):
        await asyncio.gather(*(app.resume(iid, "go") for iid in ids[chunk : chunk + 1000]))
    await runner.wait_idle(30)

    assert runner.active_instance_ids == frozenset()
    completed = await app.list(status="completed")
    assert len(completed) == PARKED
    assert await app.list(status_in=["running", "waiting", "failed"]) == []
