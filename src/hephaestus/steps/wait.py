"""`Wait`: park the instance for a fixed time, on a durable timer."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from hephaestus.core.outcomes import Async
from hephaestus.core.step import Step

if TYPE_CHECKING:
    from hephaestus.core.context import Context
    from hephaestus.core.instance import Instance

__all__ = ["UNIT_SECONDS", "Wait", "delay_seconds"]

UNIT_SECONDS = {"second": 1.0, "minute": 60.0, "hour": 3600.0, "day": 86400.0}


def delay_seconds(config: Mapping[str, Any] | None) -> float:
    """`{"duration": 2, "unit": "day"}` -> 172800.0. Raises `ValueError` if malformed."""
    if not isinstance(config, Mapping):
        raise ValueError('Wait needs a config like {"duration": 5, "unit": "minute"}')
    duration = config.get("duration")
    unit = config.get("unit", "second")
    if (
        isinstance(duration, bool)
        or not isinstance(duration, int | float)
        or not math.isfinite(duration)
        or duration < 0
    ):
        raise ValueError(f"Wait duration must be a finite number >= 0, got {duration!r}")
    if unit not in UNIT_SECONDS:
        raise ValueError(f"Wait unit must be one of {sorted(UNIT_SECONDS)}, got {unit!r}")
    return float(duration) * UNIT_SECONDS[unit]


class Wait(Step):
    """Waits `{"duration": n, "unit": "second"|"minute"|"hour"|"day"}`, then emits `timeout`.

    The wake-up time is stored with the instance, so the wait survives restarts:
    after a crash it fires late, never twice, never not at all.
    """

    events = ("timeout",)
    blocking = False  # computes its outcome from its config: no thread needed

    @classmethod
    def validate_config(cls, config: Mapping[str, Any] | None) -> None:
        delay_seconds(config)

    def execute(
        self, instance: Instance, config: Mapping[str, Any] | None, context: Context
    ) -> Async:
        return Async(resume_after=delay_seconds(config))
