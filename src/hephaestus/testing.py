"""Helpers for testing code that runs on Hephaestus.

Telemetry events are the one record of *how* an instance got where it is:
which steps ran, how often, what they emitted, what was retried or resumed.
`capture_events()` collects them during a block so a test can assert on that
path, not only on the final state. `MemoryStorage` is re-exported here so a
test needs no file and no server: a fresh one per test is a fresh database.

    from hephaestus.testing import MemoryStorage, capture_events

    with capture_events() as events:
        async with Hephaestus(storage=MemoryStorage(), runner=LocalRunner()) as app:
            ...
    assert [e.metadata["step"] for e in events if e.name == STEP_STOP] == [...]
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from hephaestus.storage.memory import MemoryStorage
from hephaestus.telemetry._emit import attach, detach
from hephaestus.telemetry.events import ALL_EVENTS

__all__ = ["CapturedEvent", "MemoryStorage", "capture_events"]

_ids = itertools.count(1)


@dataclass(frozen=True, slots=True)
class CapturedEvent:
    """One emitted telemetry event: its name, measurements and metadata, as emitted."""

    name: str
    measurements: Mapping[str, Any]
    metadata: Mapping[str, Any]


@contextmanager
def capture_events(events: str | Iterable[str] = ALL_EVENTS) -> Iterator[list[CapturedEvent]]:
    """Record every event of `events` emitted inside the block, in order.

    Yields the list the events are appended to; it keeps them after the block.
    Raises `ValueError` for an unknown event name. Nested and concurrent
    captures each get their own handler and see the same events.
    """
    captured: list[CapturedEvent] = []

    def record(
        event: str, measurements: Mapping[str, Any], metadata: Mapping[str, Any], config: Any
    ) -> None:
        captured.append(CapturedEvent(event, dict(measurements), dict(metadata)))

    handler_id = f"hephaestus-testing-capture-{next(_ids)}"
    attach(handler_id, events, record)
    try:
        yield captured
    finally:
        detach(handler_id)
