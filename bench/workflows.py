"""The workflows the cases run, built from no-op steps so that only the engine is measured.

- `Linear20`: 20 async no-op steps in a row (engine-overhead).
- `Linear3`: 3 async no-op steps in a row (durable-throughput, peer).
- `FanOut10`: a step that fans out to 10 parallel no-op steps, joined by a last
  one: 12 steps (durable-throughput, peer).
- `Parked`: a `WaitForEvent` resumed by `go` (parked-scale).
- `ResumeThenMark`: a `WaitForEvent`, then `Mark`, a step that calls `mark_hook`
  with the instance id and `time.perf_counter()` the moment it starts
  (resume-latency).
- `Handoff`: `StampStart`, a `WaitForEvent`, then `StampResumed`; the two steps
  store `time.monotonic()` when they start, for a client in another process
  (client-handoff).

The steps are made in loops; each class gets its own name, so its own key.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from hephaestus import Done, Ok, Step, Unique, WaitForEvent, Workflow

__all__ = [
    "SHAPES",
    "FanOut10",
    "Handoff",
    "Linear3",
    "Linear20",
    "Parked",
    "ResumeThenMark",
    "Shape",
    "mark_hook",
]


class _Noop(Step):
    events = ("ok",)

    async def execute(self, instance: Any, config: Mapping[str, Any] | None, context: Any) -> str:
        return "ok"


def _noops(prefix: str, count: int) -> list[type[Step]]:
    names = [f"{prefix}{i:02d}" for i in range(count)]
    return [type(name, (_Noop,), {"__module__": __name__, "__qualname__": name}) for name in names]


def _chain(steps: list[type[Step]]) -> dict[tuple[type[Step], str], Any]:
    transitions: dict[tuple[type[Step], str], Any] = {
        (step, "ok"): following for step, following in pairwise(steps)
    }
    transitions[(steps[-1], "ok")] = Done
    return transitions


_LINEAR20 = _noops("Linear20Step", 20)
_LINEAR3 = _noops("Linear3Step", 3)
_FAN = _noops("FanOutStep", 12)  # split, 10 branches, join
_SPLIT, _BRANCHES, _JOIN = _FAN[0], _FAN[1:11], _FAN[11]


class Linear20(Workflow):
    unique = Unique(key="lin", scope="workflow")
    start = _LINEAR20[0]
    transitions = _chain(_LINEAR20)


class Linear3(Workflow):
    unique = Unique(key="three", scope="workflow")
    start = _LINEAR3[0]
    transitions = _chain(_LINEAR3)


class FanOut10(Workflow):
    unique = Unique(key="fan", scope="workflow")
    start = _SPLIT
    transitions = {
        (_SPLIT, "ok"): _BRANCHES,
        **{(branch, "ok"): _JOIN for branch in _BRANCHES},
        (_JOIN, "ok"): Done,
    }


class ParkHere(WaitForEvent):
    """Parks until `resume(id, "go")`."""


class Parked(Workflow):
    unique = Unique(key="parked", scope="workflow")
    start = (ParkHere, {"event_name": "go"})
    transitions = {(ParkHere, "go"): Done}


#: Called by `Mark` with the instance id and `time.perf_counter()` when the step starts.
mark_hook: Callable[[str, float], None] | None = None


class Mark(Step):
    events = ("ok",)

    async def execute(self, instance: Any, config: Mapping[str, Any] | None, context: Any) -> str:
        started = time.perf_counter()
        if mark_hook is not None:
            mark_hook(instance.id, started)
        return "ok"


class AwaitGo(WaitForEvent):
    """Parks until `resume(id, "go")`."""


class ResumeThenMark(Workflow):
    unique = Unique(key="latency", scope="workflow")
    start = (AwaitGo, {"event_name": "go"})
    transitions = {(AwaitGo, "go"): Mark, (Mark, "ok"): Done}


class StampStart(Step):
    """Records when it started, on the machine-wide monotonic clock (comparable across
    processes): the moment a runner picked the instance up."""

    events = ("stamped",)

    async def execute(self, instance: Any, config: Mapping[str, Any] | None, context: Any) -> Ok:
        return Ok("stamped", {"at": time.monotonic()})


class AwaitHandoff(WaitForEvent):
    """Parks until `resume(id, "go")`."""


class StampResumed(StampStart):
    """Records when it started after the resume."""


class Handoff(Workflow):
    """Started and resumed by a client; the steps say when a runner process ran them."""

    unique = Unique(key="handoff", scope="workflow")
    start = StampStart
    transitions = {
        (StampStart, "stamped"): (AwaitHandoff, {"event_name": "go"}),
        (AwaitHandoff, "go"): StampResumed,
        (StampResumed, "stamped"): Done,
    }


@dataclass(frozen=True, slots=True)
class Shape:
    """A workflow shape of the throughput cases: its name, its class, its step count."""

    name: str
    workflow: type[Workflow]
    steps: int  # steps that run per instance; Done is completed by the engine itself


SHAPES = (Shape("linear-3", Linear3, 3), Shape("fan-out-10", FanOut10, 12))
