"""The documented usage, written as a typed application would: mypy --strict must accept it.

Not a test module: `test_typing.py` type-checks this file. Every call here is
one the README and docs show; the body of `main` is never run.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hephaestus import (
    Async,
    Context,
    Done,
    Error,
    Hephaestus,
    Instance,
    LocalRunner,
    MemoryStorage,
    Ok,
    Outcome,
    Retry,
    Status,
    Step,
    Unique,
    Wait,
    WaitForEvent,
    Workflow,
)


class ValidateOrder(Step):
    events = ("valid", "invalid")
    retry = Retry(max_attempts=3, backoff="exponential", base=0.5)

    def execute(
        self, instance: Instance, config: Mapping[str, Any] | None, context: Context
    ) -> Outcome:
        count: int = context.initial["item_count"]
        if count > 0:
            return Ok("valid", {"count": count})
        return "invalid"


class ChargePayment(Step):
    events = ("charged", "declined")

    async def execute(
        self, instance: Instance, config: Mapping[str, Any] | None, context: Context
    ) -> Outcome:
        if context.attempt > 2:
            return Error("the provider keeps failing")
        return Ok("charged", {"charge_ref": context.idempotency_key})


class AwaitApproval(Step):
    events = ("approved", "timeout")

    def execute(
        self, instance: Instance, config: Mapping[str, Any] | None, context: Context
    ) -> Outcome:
        return Async(resume_after=3600, timeout_event="timeout")


class OrderFlow(Workflow):
    unique = Unique(key="orderid", scope="workflow")
    start = ValidateOrder
    transitions = {
        (ValidateOrder, "valid"): ChargePayment,
        (ValidateOrder, "invalid"): Done,
        (ChargePayment, "charged"): (WaitForEvent, {"event_name": "shipped"}),
        (ChargePayment, "declined"): Done,
        (WaitForEvent, "shipped"): (Wait, {"duration": 1, "unit": "second"}),
        (Wait, "timeout"): Done,
    }


class ApprovalFlow(Workflow):
    unique = Unique(key="approval")
    start = (AwaitApproval, {"reviewer": "ops"})
    transitions = {(AwaitApproval, "approved"): Done, (AwaitApproval, "timeout"): Done}


async def main() -> None:
    app = Hephaestus(storage=MemoryStorage(), runner=LocalRunner())
    async with app:
        order_id: str = await OrderFlow.start("abc123", {"item_count": 3})
        same: str = await OrderFlow.start_new("abc124", {"item_count": 1}, hephaestus=app)
        other: str = await ApprovalFlow.start("r1", version=1, telemetry_metadata={"t": 1})
        await OrderFlow.resume("abc123", "shipped", data={"ref": "B-77"})
        waited: Instance = await OrderFlow.wait("abc123", timeout=30)
        got: Instance = await OrderFlow.get("abc123")
        listed: list[Instance] = await OrderFlow.list(status=Status.COMPLETED)
        await OrderFlow.cancel("abc124")
        done: Instance = await app.wait(order_id, timeout=30)
        is_done: bool = done.status is Status.COMPLETED
        initial: Mapping[str, Any] = done.context.initial
        updates: Mapping[str, Any] = done.context.steps["validate_order"]
        history = [(entry.step, entry.event) for entry in done.execution_history]
        print(same, other, waited, got, listed, is_done, initial, updates, history)
