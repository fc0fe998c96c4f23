"""Helpers for testing code that runs on Hephaestus.

Telemetry events are the one record of *how* an instance got where it is:
which steps ran, how often, what they emitted, what was retried or resumed.
`capture_events()` collects them during a block so a test can assert on that
path, not only on the final state. `MemoryStorage` is re-exported here so a
test needs no file and no server: a fresh one per test is a fresh database.
`VirtualClock` is a clock the test moves: timers, `Wait` steps, event
timeouts and retry backoff fire when it is advanced, never by real waiting.

    from hephaestus.testing import MemoryStorage, capture_events

    with capture_events() as events:
        async with Hephaestus(storage=MemoryStorage(), runner=LocalRunner()) as app:
            ...
    assert [e.metadata["step"] for e in events if e.name == STEP_STOP] == [...]
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from hephaestus.storage.memory import MemoryStorage
from hephaestus.telemetry._emit import attach, detach
from hephaestus.telemetry.events import ALL_EVENTS

__all__ = ["CapturedEvent", "MemoryStorage", "VirtualClock", "capture_events"]

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


class VirtualClock:
    """A clock that moves only when the test says so: `LocalRunner(clock=...)`.

        clock = VirtualClock()
        async with Hephaestus(storage=MemoryStorage(), runner=LocalRunner(clock=clock)) as app:
            await app.start_instance(Reminder, {}, id="r::1")   # parks on a 1-day Wait
            clock.advance(days=1)                               # its timer fires at once
            done = await app.wait("r::1", timeout=5)

    The engine reads it for every timestamp and due time; `advance()` moves it
    forward and wakes every runner built with it (the distributed runner
    takes one too), so timers that are now due fire at once, however long
    they were. A timer not yet due never fires:
    a test cannot pass just because the machine was slow. Leases and
    `app.wait(timeout=...)` still use the real time. Use one clock per test;
    several runners (a restart) may share it.
    """

    def __init__(self, start: datetime | None = None) -> None:
        moment = start or datetime(2026, 1, 1, tzinfo=UTC)
        if moment.tzinfo is None:
            raise ValueError("VirtualClock needs an aware datetime (UTC)")
        self._now = moment.astimezone(UTC)
        self._wakers: list[Callable[[], None]] = []

    def __call__(self) -> datetime:
        return self._now

    def now(self) -> datetime:
        """The current virtual time (UTC)."""
        return self._now

    def advance(self, seconds: float = 0.0, **delta: float) -> datetime:
        """Move forward by `seconds` (and/or `timedelta` keywords: `minutes=5`, `days=1`).

        Wakes the runners using this clock so due timers fire now; returns the new time.
        Call it from the event loop the runners run on.
        """
        step = timedelta(seconds=seconds, **delta)
        if step < timedelta(0):
            raise ValueError("a VirtualClock only moves forward")
        self._now += step
        for wake in self._wakers:
            wake()
        return self._now

    def bind(self, wake: Callable[[], None]) -> None:
        """Called by a runner built with this clock: `wake` makes it look for due timers."""
        self._wakers.append(wake)
