"""Step results recorded in `hephaestus_step_results`, applied to their instance.

The earlier one-job-per-step design ran each attempt as its own job and
recorded what it returned in that table for the instance's advance job. The
distributed runner no longer records results (a worker applies them at once),
but it still applies any a queue left by that design, and every due timer,
in its `hephaestus.advance` job: `apply_recorded` is that job's engine work.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from hephaestus.core import engine
from hephaestus.core.commands import Command
from hephaestus.core.definition import WorkflowDefinition
from hephaestus.core.engine import Advance, expects_result
from hephaestus.core.instance import Instance
from hephaestus.core.outcomes import Async, Error, Ok

__all__ = ["apply_recorded"]


def apply_recorded(
    definition: WorkflowDefinition,
    before: Instance,
    rows: list[dict[str, Any]],
    now: datetime,
) -> tuple[Advance, list[Advance]]:
    """The instance after its recorded results (`rows`, oldest first) and its due timers.

    Returns the combined advance (the final instance, every command) and each
    engine decision, to report. A result the instance no longer expects
    changes nothing, like any stale result.
    """
    instance = before
    commands: list[Command] = []
    decisions: list[Advance] = []
    for row in rows:
        outcome = _decode(row["outcome"])
        if isinstance(outcome, _Invalid):
            if not expects_result(instance, row["step"], row["attempt"]):
                continue
            decision = engine.fail(instance, outcome.message, now=now)
        else:
            decision = engine.complete_step(
                definition,
                instance,
                row["step"],
                outcome,
                attempt=row["attempt"],
                now=now,
                duration=row["duration"],
            )
        decisions.append(decision)
        instance = decision.instance
        commands.extend(decision.commands)
    decisions.append(engine.fire_timers(definition, instance, now))
    commands.extend(decisions[-1].commands)
    return Advance(decisions[-1].instance, commands), decisions


def _decode(data: Mapping[str, Any]) -> Any:
    kind = data["kind"]
    if kind == "ok":
        return Ok(data["event"], data.get("updates"), data.get("metadata"))
    if kind == "async":
        return Async(data.get("resume_after"), data.get("timeout_event", "timeout"))
    if kind == "error":
        return Error(data["reason"], data.get("traceback"))
    if kind == "unknown":
        return _Returned(data["repr"])
    return _Invalid(data["message"])


class _Invalid:
    """An outcome the engine would refuse; the instance fails with `message`."""

    def __init__(self, message: str) -> None:
        self.message = message


class _Returned:
    """Something a step returned that is no outcome, as the engine will name it."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text
