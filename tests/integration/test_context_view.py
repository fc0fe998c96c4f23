"""What a step sees: a read-only context, and the event (and data) that led to it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from hephaestus import (
    Context,
    Done,
    Instance,
    Ok,
    Status,
    Step,
    Trigger,
    Unique,
    WaitForEvent,
    Workflow,
)
from hephaestus.app import Hephaestus

# What each step saw as its trigger: (instance id, step key) -> trigger.
RT_TRIGGERS: dict[tuple[str, str], Trigger | None] = {}

pytestmark = pytest.mark.both_runners


def _seen(instance: Instance, key: str, context: Context) -> None:
    RT_TRIGGERS[(instance.id, key)] = context.trigger


class RtTakeOrder(Step):
    events = ("taken",)
    key = "take"

    def execute(self, instance: Instance, config: Mapping[str, Any] | None, context: Context) -> Ok:
        _seen(instance, self.key, context)
        return Ok("taken", {"lines": [1, 2]})


class RtAwaitPayment(WaitForEvent):
    key = "payment"


class RtShip(Step):
    events = ("shipped",)
    key = "ship"

    async def execute(
        self, instance: Instance, config: Mapping[str, Any] | None, context: Context
    ) -> str:
        _seen(instance, self.key, context)
        return "shipped"


class RtTriggerFlow(Workflow):
    unique = Unique(key="rttrigger")
    start = RtTakeOrder
    transitions = {
        (RtTakeOrder, "taken"): (RtAwaitPayment, {"event_name": "paid"}),
        (RtAwaitPayment, "paid"): RtShip,
        (RtShip, "shipped"): Done,
    }


class RtMutates(Step):
    events = ("done",)
    key = "mutates"

    def execute(
        self, instance: Instance, config: Mapping[str, Any] | None, context: Context
    ) -> str:
        context.initial["items"].append("sneaked in")
        return "done"


class RtMutatesFlow(Workflow):
    unique = Unique(key="rtmutates")
    start = RtMutates
    transitions = {(RtMutates, "done"): Done}


async def test_a_step_sees_the_event_and_data_that_led_to_it(app: Hephaestus) -> None:
    await RtTriggerFlow.start("o1")
    await RtTriggerFlow.wait("o1", status="waiting", timeout=20)
    await RtTriggerFlow.resume("o1", "paid", data={"bank_ref": "B-77"})
    done = await RtTriggerFlow.wait("o1", timeout=20)

    assert done.status is Status.COMPLETED
    assert RT_TRIGGERS[("rttrigger::o1", "take")] is None  # the start step
    assert RT_TRIGGERS[("rttrigger::o1", "ship")] == Trigger(
        "payment", "paid", {"bank_ref": "B-77"}
    )
    # Not persisted: the stored context is the same as without it.
    assert set(done.context.to_dict()) == {"initial", "steps"}


async def test_changing_the_context_in_place_fails_the_step_and_changes_nothing(
    app: Hephaestus,
) -> None:
    await RtMutatesFlow.start("m1", {"items": ["lamp"]})
    failed = await RtMutatesFlow.wait("m1", timeout=20)

    assert failed.status is Status.FAILED
    assert failed.error is not None
    assert failed.error.startswith(
        "step RtMutates failed after 1 attempt: TypeError: cannot change a FrozenList: "
        "the context is read-only"
    )
    assert failed.context.initial == {"items": ["lamp"]}
