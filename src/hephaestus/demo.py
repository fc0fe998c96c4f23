"""The demo: an order workflow with fan-out/fan-in, an external event and a durable timer.

Run it with `hephaestus demo` (or `python -m hephaestus.demo`). It stores
everything in a SQLite file, prints each step as it runs (through a telemetry
handler), delivers a "payment confirmed" event the way a webhook would, lets
a short durable timer fire, and prints the finished instance.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from hephaestus import (
    Context,
    Done,
    Instance,
    Ok,
    Step,
    Unique,
    Wait,
    WaitForEvent,
    Workflow,
    telemetry,
)
from hephaestus.app import Hephaestus
from hephaestus.runners.local import LocalRunner
from hephaestus.storage.sqlite import SQLiteStorage

__all__ = ["DemoOrder", "main", "run_demo"]


class ValidateOrder(Step):
    """Checks the order has items."""

    events = ("valid", "invalid")

    def execute(self, instance: Instance, config: Mapping[str, Any] | None, context: Context) -> Ok:
        items = context.initial.get("items", [])
        if not items:
            return Ok("invalid", {"reason": "no items"})
        total = sum(item["price"] * item["quantity"] for item in items)
        return Ok("valid", {"total": round(total, 2)})


class ChargePayment(Step):
    """Charges the card; runs in parallel with ReserveStock."""

    events = ("charged",)

    async def execute(
        self, instance: Instance, config: Mapping[str, Any] | None, context: Context
    ) -> Ok:
        await asyncio.sleep(0.05)  # a call to the payment provider
        total = context.steps["validate_order"]["total"]
        # The idempotency key lets the provider drop a repeated charge after a crash.
        return Ok("charged", {"amount": total, "charge_ref": context.idempotency_key})


class ReserveStock(Step):
    """Reserves every item; runs in parallel with ChargePayment."""

    events = ("reserved",)

    def execute(self, instance: Instance, config: Mapping[str, Any] | None, context: Context) -> Ok:
        skus = [item["sku"] for item in context.initial["items"]]
        return Ok("reserved", {"skus": skus})


class AwaitPaymentConfirmation(WaitForEvent):
    """Parks the order until the payment provider confirms (or 60 s pass)."""


class Ship(Step):
    """Runs once both branches are done and the payment is confirmed."""

    events = ("shipped",)

    def execute(self, instance: Instance, config: Mapping[str, Any] | None, context: Context) -> Ok:
        return Ok("shipped", {"carrier": "demo-post", "parcels": 1})


class CancelOrder(Step):
    """Gives up on an order that was never confirmed."""

    events = ("cancelled",)

    def execute(
        self, instance: Instance, config: Mapping[str, Any] | None, context: Context
    ) -> str:
        return "cancelled"


class RejectOrder(Step):
    """Tells the customer the order was empty."""

    events = ("rejected",)

    def execute(
        self, instance: Instance, config: Mapping[str, Any] | None, context: Context
    ) -> str:
        return "rejected"


class DemoOrder(Workflow):
    """Validate, then charge and reserve in parallel, wait for confirmation, ship, cool down."""

    unique = Unique(key="demoorder")
    start = ValidateOrder
    transitions = {
        (ValidateOrder, "valid"): [ChargePayment, ReserveStock],
        (ValidateOrder, "invalid"): RejectOrder,
        (ChargePayment, "charged"): (
            AwaitPaymentConfirmation,
            {"event_name": "payment_confirmed", "timeout_ms": 60_000},
        ),
        (ReserveStock, "reserved"): AwaitPaymentConfirmation,
        (AwaitPaymentConfirmation, "payment_confirmed"): Ship,
        (AwaitPaymentConfirmation, "timeout"): CancelOrder,
        (Ship, "shipped"): (Wait, {"duration": 1, "unit": "second"}),
        (Wait, "timeout"): Done,
        (CancelOrder, "cancelled"): Done,
        (RejectOrder, "rejected"): Done,
    }


def _printer(out: TextIO) -> telemetry.Handler:
    def handle(
        event: str, measurements: Mapping[str, Any], metadata: Mapping[str, Any], config: Any
    ) -> None:
        step = metadata.get("step")
        if event == telemetry.STEP_START:
            print(f"  ▶ {step} (attempt {metadata['attempt']})", file=out)
        elif event == telemetry.STEP_STOP:
            ms = measurements["duration"] * 1000
            print(f"  ✓ {step} -> {metadata['event']}  ({ms:.1f} ms)", file=out)
        elif event == telemetry.STEP_ASYNC:
            print(f"  ⏸ {step} is waiting", file=out)
        elif event == telemetry.STEP_RESUME:
            print(f"  ⏵ {step} resumed by {metadata['resume_event']!r}", file=out)
        elif event == telemetry.WORKFLOW_STOP:
            print(f"  ■ {metadata['instance_id']} completed", file=out)
        out.flush()

    return handle


async def run_demo(
    db_path: str | Path = "hephaestus-demo.db", out: TextIO = sys.stdout
) -> Instance:
    """Run one demo order to completion on the SQLite file `db_path`; returns the instance."""
    handler_id = f"hephaestus-demo-{secrets.token_hex(4)}"
    telemetry.attach(
        handler_id,
        [
            telemetry.STEP_START,
            telemetry.STEP_STOP,
            telemetry.STEP_ASYNC,
            telemetry.STEP_RESUME,
            telemetry.WORKFLOW_STOP,
        ],
        _printer(out),
    )
    try:
        app = Hephaestus(storage=SQLiteStorage(db_path), runner=LocalRunner())
        async with app:
            order = {
                "customer": "ada@example.com",
                "items": [
                    {"sku": "anvil", "price": 120.0, "quantity": 1},
                    {"sku": "hammer", "price": 35.5, "quantity": 2},
                ],
            }
            value = secrets.token_hex(6)
            print(f"Starting order {value} on {db_path}", file=out)
            instance_id = await DemoOrder.start_new(value, order)
            await _until(app, instance_id, lambda i: bool(i.waiting_steps))
            print("  … payment provider calls back: payment_confirmed", file=out)
            await DemoOrder.resume(value, "payment_confirmed")
            await _until(app, instance_id, lambda i: i.status.is_final)
            instance = await app.get(instance_id)
        print("\nFinal instance:", file=out)
        print(json.dumps(instance.to_dict(), indent=2), file=out)
        return instance
    finally:
        telemetry.detach(handler_id)


async def _until(app: Hephaestus, instance_id: str, ready: Any, timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not ready(await app.get(instance_id)):
            await asyncio.sleep(0.02)


def main(db_path: str = "hephaestus-demo.db") -> int:
    instance = asyncio.run(run_demo(db_path))
    return 0 if instance.status.value == "completed" else 1


if __name__ == "__main__":
    raise SystemExit(main())
