"""The workflow of the database-outage acceptance test; every step logs its executions.

`OutageFlow`: a sync step, then two branches (one async, one sync) and an async
join, each taking 0.2 to 0.5 s (by the instance's `n`), so that when the
database goes away hundreds of steps are in flight.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

from hephaestus import Context, Done, Instance, Ok, Step, Unique, Workflow
from many.sideeffects import recorded


def _seconds(context: Context) -> float:
    """0.2 to 0.5 s, by the instance's `n`."""
    return 0.2 + int(context.initial["n"]) % 4 * 0.1


class OutagePrepare(Step):
    events = ("ready",)

    def execute(self, instance: Instance, config: Mapping[str, Any] | None, context: Context) -> Ok:
        with recorded(context, "outage_prepare"):
            time.sleep(_seconds(context))
            return Ok("ready", {"n": context.initial["n"]})


class OutageLeft(Step):
    events = ("left_done",)

    async def execute(
        self, instance: Instance, config: Mapping[str, Any] | None, context: Context
    ) -> Ok:
        with recorded(context, "outage_left"):
            await asyncio.sleep(0.7 - _seconds(context))  # 0.5 to 0.2 s
            return Ok("left_done", {"left": context.initial["n"] * 2})


class OutageRight(Step):
    events = ("right_done",)

    def execute(self, instance: Instance, config: Mapping[str, Any] | None, context: Context) -> Ok:
        with recorded(context, "outage_right"):
            time.sleep(_seconds(context))
            return Ok("right_done", {"right": context.initial["n"] + 1})


class OutageJoin(Step):
    events = ("joined",)

    async def execute(
        self, instance: Instance, config: Mapping[str, Any] | None, context: Context
    ) -> Ok:
        with recorded(context, "outage_join"):
            await asyncio.sleep(0.2)
            total = context.steps["outage_left"]["left"] + context.steps["outage_right"]["right"]
            return Ok("joined", {"total": total})


class OutageFlow(Workflow):
    unique = Unique(key="outage")
    start = OutagePrepare
    transitions = {
        (OutagePrepare, "ready"): [OutageLeft, OutageRight],
        (OutageLeft, "left_done"): OutageJoin,
        (OutageRight, "right_done"): OutageJoin,
        (OutageJoin, "joined"): Done,
    }


#: The steps of a completed `OutageFlow`, and those that log nothing (built-ins).
OUTAGE_STEPS = ("outage_prepare", "outage_left", "outage_right", "outage_join", "done")
BUILT_IN = ("done",)
