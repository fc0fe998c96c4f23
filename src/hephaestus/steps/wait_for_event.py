"""`WaitForEvent`: park until `resume(id, event_name)`, or until an optional timeout."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from hephaestus.core.outcomes import Async
from hephaestus.core.step import NAME_PATTERN, Step

if TYPE_CHECKING:
    from hephaestus.core.context import Context
    from hephaestus.core.instance import Instance

__all__ = ["WaitForEvent"]


class WaitForEvent(Step):
    """Waits for the event named in `{"event_name": ..., "timeout_ms": ...}`.

    It declares `event_name`, plus `timeout` when `timeout_ms` is set: a durable
    timer then emits `timeout` unless the event came first. To wait for two
    different events in one workflow, subclass it (each step class is one node).
    """

    events = ()
    blocking = False  # computes its outcome from its config: no thread needed

    @classmethod
    def validate_config(cls, config: Mapping[str, Any] | None) -> None:
        if not isinstance(config, Mapping) or not isinstance(config.get("event_name"), str):
            raise ValueError('WaitForEvent needs a config like {"event_name": "approved"}')
        if not NAME_PATTERN.match(config["event_name"]):
            raise ValueError(f"event_name {config['event_name']!r} is not a valid event name")
        timeout = config.get("timeout_ms")
        if timeout is not None and (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not math.isfinite(timeout)
            or timeout < 0
        ):
            raise ValueError(f"timeout_ms must be a number of milliseconds >= 0, got {timeout!r}")
        if timeout is not None and config["event_name"] == "timeout":
            raise ValueError(
                "event_name 'timeout' clashes with the event the timeout_ms timer emits; "
                "name the awaited event differently"
            )

    @classmethod
    def events_for(cls, config: Mapping[str, Any] | None) -> tuple[str, ...]:
        if not isinstance(config, Mapping) or "event_name" not in config:
            return cls.events
        if config.get("timeout_ms") is not None:
            return (config["event_name"], "timeout")
        return (config["event_name"],)

    def execute(
        self, instance: Instance, config: Mapping[str, Any] | None, context: Context
    ) -> Async:
        timeout_ms = (config or {}).get("timeout_ms")
        return Async(resume_after=None if timeout_ms is None else timeout_ms / 1000.0)
