"""What the engine asks its runner to do. The engine decides; the runner carries out.

Durable timers are not commands: they are stored in `Instance.timers`, and a
runner arms them from there after the instance is persisted.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Command", "RunStep", "StopSteps"]


@dataclass(frozen=True, slots=True)
class RunStep:
    """Execute attempt `attempt` of the step with key `step`, then report its outcome."""

    step: str
    attempt: int


@dataclass(frozen=True, slots=True)
class StopSteps:
    """Stop running these steps: the instance failed or was cancelled; their results are void."""

    steps: frozenset[str]


Command = RunStep | StopSteps
