"""Workflows and the app the distributed acceptance tests run in worker subprocesses.

`app` reads its database from `HEPHAESTUS_DIST_URL`; every step execution is
appended (and fsynced) to the file named by `DIST_LOG`, so a SIGKILL cannot
hide one.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hephaestus import (
    Context,
    Done,
    Hephaestus,
    Instance,
    Ok,
    Step,
    Unique,
    WaitForEvent,
    Workflow,
)
from hephaestus.runners.procrastinate import ProcrastinateRunner
from hephaestus.storage.postgres import PostgresStorage

# The shared execution log lives one folder up, beside the tests.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import execution_log


def record(context: Context, step: str) -> None:
    execution_log.record(os.environ.get("DIST_LOG"), context, step)


class DistSplit(Step):
    events = ("split",)

    def execute(self, instance: Instance, config: Mapping[str, Any] | None, context: Context) -> Ok:
        record(context, "dist_split")
        return Ok("split", {"n": context.initial["n"]})


class DistLeft(Step):
    events = ("left_done",)

    async def execute(
        self, instance: Instance, config: Mapping[str, Any] | None, context: Context
    ) -> Ok:
        record(context, "dist_left")
        await asyncio.sleep(0.01)
        return Ok("left_done", {"value": context.initial["n"] * 2})


class DistRight(Step):
    events = ("right_done",)

    def execute(self, instance: Instance, config: Mapping[str, Any] | None, context: Context) -> Ok:
        record(context, "dist_right")
        time.sleep(0.01)
        return Ok("right_done", {"value": context.initial["n"] + 1})


class DistJoin(Step):
    events = ("joined",)

    def execute(self, instance: Instance, config: Mapping[str, Any] | None, context: Context) -> Ok:
        record(context, "dist_join")
        total = context.steps["dist_left"]["value"] + context.steps["dist_right"]["value"]
        return Ok("joined", {"total": total})


class DistPause(WaitForEvent):
    """Waits for `go`, or times out after 300 ms on a durable timer."""


class DistFinish(Step):
    events = ("finished",)

    def execute(
        self, instance: Instance, config: Mapping[str, Any] | None, context: Context
    ) -> str:
        record(context, "dist_finish")
        return "finished"


class DistFlow(Workflow):
    unique = Unique(key="dist")
    start = DistSplit
    transitions = {
        (DistSplit, "split"): [DistLeft, DistRight],
        (DistLeft, "left_done"): DistJoin,
        (DistRight, "right_done"): DistJoin,
        (DistJoin, "joined"): (DistPause, {"event_name": "go", "timeout_ms": 300}),
        (DistPause, "go"): DistFinish,
        (DistPause, "timeout"): DistFinish,
        (DistFinish, "finished"): Done,
    }


GATES = 8


def _gate(number: int) -> type[WaitForEvent]:
    return type(f"DistGate{number}", (WaitForEvent,), {"__module__": __name__})


class DistOpen(Step):
    events = ("open",)

    def execute(
        self, instance: Instance, config: Mapping[str, Any] | None, context: Context
    ) -> str:
        return "open"


class DistAllIn(Step):
    events = ("all_in",)

    def execute(
        self, instance: Instance, config: Mapping[str, Any] | None, context: Context
    ) -> str:
        return "all_in"


DIST_GATES = [_gate(number) for number in range(GATES)]
for _number, _gate_class in enumerate(DIST_GATES):
    globals()[_gate_class.__name__] = _gate_class


class DistBurst(Workflow):
    """Eight parallel branches, each waiting for its own event: a target for bursts of resumes."""

    unique = Unique(key="burst")
    start = DistOpen
    transitions = {
        (DistOpen, "open"): [
            (gate, {"event_name": f"signal{number}"}) for number, gate in enumerate(DIST_GATES)
        ],
        **{(gate, f"signal{number}"): DistAllIn for number, gate in enumerate(DIST_GATES)},
        (DistAllIn, "all_in"): Done,
    }


def make_app(url: str, *, worker: bool = False) -> Hephaestus:
    return Hephaestus(
        storage=PostgresStorage(url),
        runner=ProcrastinateRunner(worker=worker, concurrency=20, heartbeat=0.5, stalled_after=2.0),
    )


app = make_app(os.environ.get("HEPHAESTUS_DIST_URL", "postgresql://postgres@127.0.0.1/postgres"))
