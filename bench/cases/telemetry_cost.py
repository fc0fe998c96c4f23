"""telemetry-cost: what a telemetry event costs a runner when no handler listens.

Runners emit every lifecycle event unconditionally through
`hephaestus.telemetry.lifecycle`; with nothing attached each call must return
at once. The case times a `step_stop` emission (the most frequent event) with
no handler, against the baseline of calling an empty Python function with the
same arguments: the floor of any call at all.
"""

from __future__ import annotations

import statistics
import timeit
from datetime import UTC, datetime
from typing import Any

from bench._harness import Bench, Row, Target
from hephaestus import Context, Instance, Status
from hephaestus.telemetry import attached, lifecycle

__all__ = ["BASELINE", "NAME", "SUMMARY", "run"]

NAME = "telemetry-cost"
SUMMARY = "ns per step.stop event with no handler attached"
BASELINE = "a call of an empty function with the same arguments"

#: "Well under a microsecond" per event.
TARGET_NS = 250.0


def _empty(instance: Instance, step: str, attempt: int, duration: float, event: str) -> None:
    pass


def run(bench: Bench) -> list[Row]:
    if attached():
        return [Row(NAME, "step.stop with no handler", skipped=f"handlers attached: {attached()}")]
    now = datetime.now(UTC)
    instance = Instance(
        id="bench::telemetry",
        workflow="bench.Telemetry",
        workflow_version=1,
        status=Status.RUNNING,
        context=Context.new({}),
        created_at=now,
        updated_at=now,
    )
    number = 20_000 if bench.mode == "tiny" else 200_000
    emit: Any = lifecycle.step_stop
    ours = [
        timeit.timeit(lambda: emit(instance, "step", 1, 0.001, "done"), number=number) / number
        for _ in range(5)
    ]
    floor = [
        timeit.timeit(lambda: _empty(instance, "step", 1, 0.001, "done"), number=number) / number
        for _ in range(5)
    ]
    return [
        Row(
            NAME,
            "step.stop event, no handler attached",
            unit="ns",
            ours=statistics.median(ours) * 1e9,
            baseline=statistics.median(floor) * 1e9,
            baseline_label="empty call",
            target=Target("<", TARGET_NS),
            details={"calls": number},
        )
    ]
