"""What happened in one engine call, as the engine decided it: its facts.

The engine returns them with the next instance (`Advance.facts`), in the
order they happened, so a runner reports what happened without comparing
the instance before and after. A call that changes nothing has none. Every
timer the engine creates appears in a fact (`StepParked`, `AttemptFailed`,
`TimerScheduled`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from hephaestus.core.instance import Timer

__all__ = [
    "AttemptFailed",
    "CancelRequested",
    "Completion",
    "EventAccepted",
    "Fact",
    "InstanceCancelled",
    "InstanceCompleted",
    "InstanceFailed",
    "InstanceRetried",
    "Resumption",
    "StepCompleted",
    "StepParked",
    "StepResumed",
    "TimerCancelled",
    "TimerScheduled",
]

Resumption = Literal["event", "timer"]
"""What resumed a waiting step: a delivered event, or its timer."""

Completion = Literal["attempt", "event", "timer", "engine"]
"""What completed a step: its attempt returned `Ok`, it was resumed, or (for `Done`) the engine."""


@dataclass(frozen=True, slots=True)
class StepCompleted:
    """`step` completed with `event`, and its transition was taken.

    `targets` is where the transition led (a route's choice included), as in
    the history; `started` the steps that started because of it, in order: a
    join only once it is ready, `Done` included (the engine completes it at
    once, in a fact of its own that follows). `attempt` and `duration` are the
    attempt's (`duration` is 0 unless `source` is `"attempt"`); `has_updates`
    and `has_metadata` say whether it changed the context or the runtime
    metadata.
    """

    step: str
    event: str
    source: Completion
    attempt: int
    duration: float
    targets: tuple[str, ...]
    started: tuple[str, ...]
    has_updates: bool = False
    has_metadata: bool = False


@dataclass(frozen=True, slots=True)
class StepParked:
    """Attempt `attempt` of `step` returned `Async`: the step waits, with its `timer` if any."""

    step: str
    attempt: int
    duration: float
    timer: Timer | None = None


@dataclass(frozen=True, slots=True)
class StepResumed:
    """The waiting `step` was resumed with `event` (it completes with it next)."""

    step: str
    event: str
    source: Resumption


@dataclass(frozen=True, slots=True)
class AttemptFailed:
    """Attempt `attempt` of `step` failed with `reason`; `retry` is the timer of the next one.

    Without a retry the instance fails too (an `InstanceFailed` follows).
    """

    step: str
    attempt: int
    reason: str
    duration: float
    retry: Timer | None = None

    @property
    def will_retry(self) -> bool:
        return self.retry is not None


@dataclass(frozen=True, slots=True)
class TimerScheduled:
    """A durable resume was scheduled (`add_timer`)."""

    timer: Timer


@dataclass(frozen=True, slots=True)
class TimerCancelled:
    """A pending timer was called off (`cancel_timer`)."""

    timer: Timer


@dataclass(frozen=True, slots=True)
class EventAccepted:
    """`event` was recorded in the inbox for the owner to apply (`held`: not applicable yet)."""

    event: str
    step: str | None
    held: bool


@dataclass(frozen=True, slots=True)
class CancelRequested:
    """A cancel request was recorded in the inbox; the owner stops the steps and cancels."""


@dataclass(frozen=True, slots=True)
class InstanceCompleted:
    """The instance reached `Done`: status `completed`."""


@dataclass(frozen=True, slots=True)
class InstanceFailed:
    """The instance failed with `reason` (its `error`); what still ran was told to stop.

    `step` is the step whose result failed it (an attempt out of retries, an
    undeclared event, updates that are not JSON, a route that failed), or
    `None` when the runner failed the instance for another reason.
    """

    reason: str
    step: str | None = None


@dataclass(frozen=True, slots=True)
class InstanceCancelled:
    """The instance was cancelled; what still ran was told to stop."""


@dataclass(frozen=True, slots=True)
class InstanceRetried:
    """A failed instance was retried: `steps` run again from attempt 1, after `error`."""

    steps: tuple[str, ...]
    error: str | None


Fact = (
    StepCompleted
    | StepParked
    | StepResumed
    | AttemptFailed
    | TimerScheduled
    | TimerCancelled
    | EventAccepted
    | CancelRequested
    | InstanceCompleted
    | InstanceFailed
    | InstanceCancelled
    | InstanceRetried
)
