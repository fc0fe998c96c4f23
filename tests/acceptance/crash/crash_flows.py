"""The workflow the crash tests run in a subprocess, and a log of every step execution.

Each execution appends `instance step attempt started_at` to the file named by
the environment variable `CRASH_LOG`, flushed and fsynced before the step's
work, so a SIGKILL cannot hide an execution.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hephaestus import Context, Done, Instance, Ok, Step, Unique, Wait, Workflow

# The shared execution log lives one folder up, beside the tests.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import execution_log


def record(context: Context, step: str) -> None:
    execution_log.record(os.environ.get("CRASH_LOG"), context, step)


class CrashPrepare(Step):
    events = ("ready",)

    def execute(self, instance: Instance, config: Mapping[str, Any] | None, context: Context) -> Ok:
        record(context, "crash_prepare")
        time.sleep(0.01)
        return Ok("ready", {"prepared": True})


class CrashLeft(Step):
    events = ("done_left",)

    async def execute(
        self, instance: Instance, config: Mapping[str, Any] | None, context: Context
    ) -> Ok:
        record(context, "crash_left")
        await asyncio.sleep(0.02)
        return Ok("done_left", {"left": context.initial["n"] * 2})


class CrashRight(Step):
    events = ("done_right",)

    def execute(self, instance: Instance, config: Mapping[str, Any] | None, context: Context) -> Ok:
        record(context, "crash_right")
        time.sleep(0.02)
        return Ok("done_right", {"right": context.initial["n"] + 1})


class CrashJoin(Step):
    events = ("joined",)

    def execute(self, instance: Instance, config: Mapping[str, Any] | None, context: Context) -> Ok:
        record(context, "crash_join")
        total = context.steps["crash_left"]["left"] + context.steps["crash_right"]["right"]
        return Ok("joined", {"total": total})


class CrashAfterTimer(Step):
    events = ("finished",)

    def execute(
        self, instance: Instance, config: Mapping[str, Any] | None, context: Context
    ) -> str:
        record(context, "crash_after_timer")
        return "finished"


class CrashFlow(Workflow):
    unique = Unique(key="crash")
    start = CrashPrepare
    transitions = {
        (CrashPrepare, "ready"): [CrashLeft, CrashRight],
        (CrashLeft, "done_left"): CrashJoin,
        (CrashRight, "done_right"): CrashJoin,
        (CrashJoin, "joined"): (Wait, {"duration": 0.4, "unit": "second"}),
        (Wait, "timeout"): CrashAfterTimer,
        (CrashAfterTimer, "finished"): Done,
    }
