"""What a step's `execute` returns, and how a failed step is retried.

A step reports its result as a value, never by calling back into the engine:
`Ok` to finish with an event, `Async` to park until an event or timer resumes
it, `Error` to fail (a raised exception means the same). `Retry` says how
often a failed step is tried again and how long to wait in between.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["Async", "Error", "Ok", "Outcome", "Retry", "as_outcome"]

Backoff = Literal["exponential", "linear", "constant"]
_BACKOFFS = ("exponential", "linear", "constant")
# 2.0 ** 1100 overflows; any exponent past this already exceeds every sensible cap.
_MAX_EXPONENT = 1000


@dataclass(frozen=True, slots=True)
class Ok:
    """The step is done and emits `event`.

    `updates` (a JSON-serialisable dict) is stored at `context.steps[step.key]`;
    `metadata` is merged into `instance.runtime_metadata`.
    """

    event: str
    updates: Mapping[str, Any] | None = None
    metadata: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Async:
    """The step waits: the instance parks until `resume` (or a timer) delivers an event.

    With `resume_after` (seconds), a durable timer delivers `timeout_event`
    when it elapses, unless an event resumed the step first.
    """

    resume_after: float | None = None
    timeout_event: str = "timeout"


@dataclass(frozen=True, slots=True)
class Error:
    """The step failed with `reason`: retried per the step's `retry`, then the instance fails.

    `traceback` is set by the runner when the step raised: the end of the
    formatted traceback, kept in the instance's `error` if it fails for good.
    """

    reason: str
    traceback: str | None = None


Outcome = Ok | Async | Error | str


def as_outcome(returned: object) -> object:
    """What a step returned, with a bare event name read as `Ok(event)`; anything else as is."""
    return Ok(returned) if isinstance(returned, str) else returned


@dataclass(frozen=True, slots=True)
class Retry:
    """How many times a failing step is tried, and how long to wait between attempts.

    `max_attempts` counts the first attempt too: `Retry(max_attempts=1)` never
    retries. The wait before attempt n+1 is `base` (constant), `base * n`
    (linear) or `base * 2**(n-1)` (exponential), capped at `max_backoff` seconds.
    """

    max_attempts: int = 1
    backoff: Backoff = "exponential"
    base: float = 0.5
    max_backoff: float = 30.0

    def __post_init__(self) -> None:
        if (
            isinstance(self.max_attempts, bool)
            or not isinstance(self.max_attempts, int)
            or self.max_attempts < 1
        ):
            raise ValueError(f"Retry.max_attempts must be an int >= 1, got {self.max_attempts!r}")
        if self.backoff not in _BACKOFFS:
            raise ValueError(f"Retry.backoff must be one of {_BACKOFFS}, got {self.backoff!r}")
        for name, value in (("base", self.base), ("max_backoff", self.max_backoff)):
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or math.isnan(value)
                or value < 0
            ):
                raise ValueError(f"Retry.{name} must be a number of seconds >= 0, got {value!r}")
        if math.isinf(self.base):
            raise ValueError("Retry.base must be finite; use max_backoff to cap the wait")

    def delay(self, failed_attempt: int) -> float:
        """Seconds to wait after attempt number `failed_attempt` (1-based) failed."""
        if self.backoff == "constant":
            wait = self.base
        elif self.backoff == "linear":
            wait = self.base * failed_attempt
        else:
            wait = self.base * 2.0 ** min(failed_attempt - 1, _MAX_EXPONENT)
        return min(wait, self.max_backoff)
