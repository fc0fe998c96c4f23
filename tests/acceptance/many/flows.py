"""The workflows the many-processes tests run; every step logs its executions (`sideeffects`).

- `ManyFlow`: fan-out to two branches and a join, a step that fails its first
  attempt and is retried after 50 ms, a durable 0.3 s timer (`Wait`), a last step.
- `SlowFlow`: a step that takes `seconds` (default 3), async, so the runner can stop it.
- `ThreadFlow`: a step that takes 2 s in a thread (a sync step: it cannot be interrupted).
- `ParkFlow`: parks on a `WaitForEvent` until `go`, then one more step.
- `NapFlow`: one step, then a durable 4 s timer (`Wait`), then one more step.
- `EarlyFlow`: a step that waits until the file `context.initial["gate"]` exists (at
  most 10 s) or for `context.initial["pause"]` seconds, then parks for `approved`;
  the next step returns what the event brought.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hephaestus import (
    Async,
    Context,
    Done,
    Instance,
    Ok,
    Retry,
    Step,
    Unique,
    Wait,
    WaitForEvent,
    Workflow,
)
from many.sideeffects import recorded

# --- ManyFlow ----------------------------------------------------------------------------


class ManyPrepare(Step):
    events = ("ready",)

    def execute(self, instance: Instance, config: Mapping[str, Any] | None, context: Context) -> Ok:
        with recorded(context, "many_prepare"):
            time.sleep(0.005)
            return Ok("ready", {"n": context.initial["n"]})


class ManyLeft(Step):
    events = ("left_done",)

    async def execute(
        self, instance: Instance, config: Mapping[str, Any] | None, context: Context
    ) -> Ok:
        with recorded(context, "many_left"):
            await asyncio.sleep(0.02)
            return Ok("left_done", {"left": context.initial["n"] * 2})


class ManyRight(Step):
    events = ("right_done",)

    def execute(self, instance: Instance, config: Mapping[str, Any] | None, context: Context) -> Ok:
        with recorded(context, "many_right"):
            time.sleep(0.02)
            return Ok("right_done", {"right": context.initial["n"] + 1})


class ManyJoin(Step):
    events = ("joined",)

    def execute(self, instance: Instance, config: Mapping[str, Any] | None, context: Context) -> Ok:
        with recorded(context, "many_join"):
            total = context.steps["many_left"]["left"] + context.steps["many_right"]["right"]
            return Ok("joined", {"total": total})


class ManyFlaky(Step):
    """Fails its first attempt; the retry 50 ms later succeeds."""

    events = ("charged",)
    retry = Retry(max_attempts=3, backoff="constant", base=0.05)

    async def execute(
        self, instance: Instance, config: Mapping[str, Any] | None, context: Context
    ) -> Ok:
        with recorded(context, "many_flaky"):
            await asyncio.sleep(0.005)
            if context.attempt == 1:
                raise RuntimeError("the payment service is not ready yet")
            return Ok("charged", {"attempt": context.attempt})


class ManyAfter(Step):
    events = ("finished",)

    def execute(self, instance: Instance, config: Mapping[str, Any] | None, context: Context) -> Ok:
        with recorded(context, "many_after"):
            return Ok("finished", {"total": context.steps["many_join"]["total"]})


class ManyFlow(Workflow):
    unique = Unique(key="many")
    start = ManyPrepare
    transitions = {
        (ManyPrepare, "ready"): [ManyLeft, ManyRight],
        (ManyLeft, "left_done"): ManyJoin,
        (ManyRight, "right_done"): ManyJoin,
        (ManyJoin, "joined"): ManyFlaky,
        (ManyFlaky, "charged"): (Wait, {"duration": 0.3, "unit": "second"}),
        (Wait, "timeout"): ManyAfter,
        (ManyAfter, "finished"): Done,
    }


#: The steps of a completed `ManyFlow`, and those that log nothing (built-ins).
MANY_STEPS = (
    "many_prepare",
    "many_left",
    "many_right",
    "many_join",
    "many_flaky",
    "wait",
    "many_after",
    "done",
)
BUILT_IN = ("wait", "done")


# --- SlowFlow ----------------------------------------------------------------------------


class SlowBegin(Step):
    events = ("begun",)

    def execute(
        self, instance: Instance, config: Mapping[str, Any] | None, context: Context
    ) -> str:
        with recorded(context, "slow_begin"):
            return "begun"


class SlowWork(Step):
    events = ("worked",)

    async def execute(
        self, instance: Instance, config: Mapping[str, Any] | None, context: Context
    ) -> str:
        with recorded(context, "slow_work"):
            await asyncio.sleep(context.initial.get("seconds", 3.0))
            return "worked"


class SlowAfter(Step):
    events = ("finished",)

    def execute(
        self, instance: Instance, config: Mapping[str, Any] | None, context: Context
    ) -> str:
        with recorded(context, "slow_after"):
            return "finished"


class SlowFlow(Workflow):
    unique = Unique(key="slow")
    start = SlowBegin
    transitions = {
        (SlowBegin, "begun"): SlowWork,
        (SlowWork, "worked"): SlowAfter,
        (SlowAfter, "finished"): Done,
    }


# --- ThreadFlow --------------------------------------------------------------------------


class ThreadWork(Step):
    events = ("worked",)

    def execute(
        self, instance: Instance, config: Mapping[str, Any] | None, context: Context
    ) -> str:
        with recorded(context, "thread_work"):
            time.sleep(2.0)
            return "worked"


class ThreadFlow(Workflow):
    unique = Unique(key="thread")
    start = ThreadWork
    transitions = {(ThreadWork, "worked"): Done}


# --- ParkFlow ----------------------------------------------------------------------------


class ParkSubmit(Step):
    events = ("submitted",)

    def execute(
        self, instance: Instance, config: Mapping[str, Any] | None, context: Context
    ) -> str:
        with recorded(context, "park_submit"):
            return "submitted"


class ParkGate(WaitForEvent):
    """Parks until `go`."""


class ParkAfter(Step):
    events = ("finished",)

    def execute(self, instance: Instance, config: Mapping[str, Any] | None, context: Context) -> Ok:
        with recorded(context, "park_after"):
            return Ok("finished", {"got": context.steps["park_gate"]})


class ParkFlow(Workflow):
    unique = Unique(key="park")
    start = ParkSubmit
    transitions = {
        (ParkSubmit, "submitted"): (ParkGate, {"event_name": "go"}),
        (ParkGate, "go"): ParkAfter,
        (ParkAfter, "finished"): Done,
    }


# --- NapFlow -----------------------------------------------------------------------------


class NapBegin(Step):
    events = ("begun",)

    def execute(
        self, instance: Instance, config: Mapping[str, Any] | None, context: Context
    ) -> str:
        with recorded(context, "nap_begin"):
            return "begun"


class NapAfter(Step):
    events = ("finished",)

    def execute(
        self, instance: Instance, config: Mapping[str, Any] | None, context: Context
    ) -> str:
        with recorded(context, "nap_after"):
            return "finished"


class NapFlow(Workflow):
    unique = Unique(key="nap")
    start = NapBegin
    transitions = {
        (NapBegin, "begun"): (Wait, {"duration": 4, "unit": "second"}),
        (Wait, "timeout"): NapAfter,
        (NapAfter, "finished"): Done,
    }


# --- EarlyFlow ---------------------------------------------------------------------------


class EarlyAwait(Step):
    """Does some work, then parks for `approved`; the event may come while it works."""

    events = ("approved",)

    async def execute(
        self, instance: Instance, config: Mapping[str, Any] | None, context: Context
    ) -> Async:
        with recorded(context, "early_await") as execution:
            gate = context.initial.get("gate")
            if gate is not None:
                deadline = time.monotonic() + 10
                while not Path(gate).exists() and time.monotonic() < deadline:
                    await asyncio.sleep(0.005)
            else:
                await asyncio.sleep(context.initial.get("pause", 0.5))
            execution.outcome = "parked"
            return Async()


class EarlyNext(Step):
    events = ("finished",)

    def execute(self, instance: Instance, config: Mapping[str, Any] | None, context: Context) -> Ok:
        with recorded(context, "early_next"):
            return Ok("finished", {"seen": context.steps.get("early_await")})


class EarlyFlow(Workflow):
    unique = Unique(key="early")
    start = EarlyAwait
    transitions = {
        (EarlyAwait, "approved"): EarlyNext,
        (EarlyNext, "finished"): Done,
    }
