"""Attaching handlers to telemetry events, and emitting them cheaply.

Runners call `emit` only after `enabled(event)` says someone listens, so with
no handler attached an event costs one dict lookup. A handler that raises is
detached and logged: observability never breaks a workflow.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from hephaestus.telemetry.events import ALL_EVENTS

__all__ = ["Handler", "any_listener", "attach", "attached", "detach", "emit", "enabled"]

Handler = Callable[[str, Mapping[str, Any], Mapping[str, Any], Any], None]
"""`handler(event, measurements, metadata, config)`."""

logger = logging.getLogger("hephaestus.telemetry")

# event name -> tuple of (handler id, function, config); tuples so emit iterates a snapshot.
_by_event: dict[str, tuple[tuple[str, Handler, Any], ...]] = {}


def attach(
    handler_id: str, events: str | Iterable[str], handler: Handler, config: Any = None
) -> None:
    """Call `handler(event, measurements, metadata, config)` for each of `events`.

    Raises `ValueError` if `handler_id` is already attached or an event name is unknown.
    """
    names = (events,) if isinstance(events, str) else tuple(events)
    unknown = [name for name in names if name not in ALL_EVENTS]
    if unknown:
        raise ValueError(f"unknown telemetry event(s) {unknown}; known: {list(ALL_EVENTS)}")
    if handler_id in attached():
        raise ValueError(f"a telemetry handler with id {handler_id!r} is already attached")
    for name in names:
        _by_event[name] = (*_by_event.get(name, ()), (handler_id, handler, config))


def detach(handler_id: str) -> bool:
    """Detach the handler; returns whether it was attached."""
    found = False
    for name, entries in list(_by_event.items()):
        kept = tuple(entry for entry in entries if entry[0] != handler_id)
        if len(kept) != len(entries):
            found = True
            if kept:
                _by_event[name] = kept
            else:
                del _by_event[name]
    return found


def attached() -> set[str]:
    """Ids of every attached handler."""
    return {entry[0] for entries in _by_event.values() for entry in entries}


def any_listener() -> bool:
    """Whether any handler is attached at all (lets runners skip telemetry work wholesale)."""
    return bool(_by_event)


def enabled(event: str) -> bool:
    """Whether any handler listens to `event`; check it before building measurements."""
    return event in _by_event


def emit(event: str, measurements: Mapping[str, Any], metadata: Mapping[str, Any]) -> None:
    """Call every handler of `event`; a handler that raises is detached and logged."""
    for handler_id, handler, config in _by_event.get(event, ()):
        try:
            handler(event, measurements, metadata, config)
        except Exception:
            detach(handler_id)
            logger.exception(
                "telemetry handler %r raised on %s and was detached", handler_id, event
            )
