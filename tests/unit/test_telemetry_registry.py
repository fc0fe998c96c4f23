"""The telemetry handler registry: attaching, detaching, and handlers that fail."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from hephaestus import telemetry
from hephaestus.telemetry import STEP_START, STEP_STOP, WORKFLOW_START
from hephaestus.testing import CapturedEvent, capture_events

Call = tuple[str, dict[str, Any], dict[str, Any], Any]


@pytest.fixture(autouse=True)
def _clean_registry() -> Iterator[None]:
    """Every handler a test attaches is gone afterwards, whatever the test did."""
    before = telemetry.attached()
    yield
    for handler_id in telemetry.attached() - before:
        telemetry.detach(handler_id)


def _recorder(calls: list[Call]) -> telemetry.Handler:
    def handler(
        event: str, measurements: Mapping[str, Any], metadata: Mapping[str, Any], config: Any
    ) -> None:
        calls.append((event, dict(measurements), dict(metadata), config))

    return handler


def test_an_attached_handler_receives_its_events_with_its_config() -> None:
    calls: list[Call] = []
    telemetry.attach("rec", [STEP_START, STEP_STOP], _recorder(calls), config={"k": 1})

    telemetry.emit(STEP_START, {"system_time": 1.0}, {"step": "a"})
    telemetry.emit(WORKFLOW_START, {"system_time": 2.0}, {})  # not subscribed
    telemetry.emit(STEP_STOP, {"duration": 0.5}, {"step": "a", "event": "ok"})

    assert calls == [
        (STEP_START, {"system_time": 1.0}, {"step": "a"}, {"k": 1}),
        (STEP_STOP, {"duration": 0.5}, {"step": "a", "event": "ok"}, {"k": 1}),
    ]


def test_a_single_event_name_can_be_passed_as_a_string() -> None:
    calls: list[Call] = []
    telemetry.attach("rec", STEP_STOP, _recorder(calls))

    telemetry.emit(STEP_STOP, {"duration": 0.1}, {})

    assert [call[0] for call in calls] == [STEP_STOP]


def test_detach_stops_delivery_and_says_whether_it_was_attached() -> None:
    calls: list[Call] = []
    telemetry.attach("rec", STEP_STOP, _recorder(calls))

    assert telemetry.detach("rec") is True
    telemetry.emit(STEP_STOP, {"duration": 0.1}, {})

    assert calls == []
    assert "rec" not in telemetry.attached()
    assert telemetry.detach("rec") is False


def test_an_unknown_event_name_is_rejected_and_nothing_is_attached() -> None:
    with pytest.raises(ValueError, match=r"hephaestus\.step\.finish"):
        telemetry.attach("rec", [STEP_STOP, "hephaestus.step.finish"], _recorder([]))

    assert "rec" not in telemetry.attached()
    assert not telemetry.enabled(STEP_STOP)


def test_attaching_the_same_id_twice_is_rejected() -> None:
    first: list[Call] = []
    telemetry.attach("rec", STEP_STOP, _recorder(first))

    with pytest.raises(ValueError, match="already attached"):
        telemetry.attach("rec", STEP_START, _recorder([]))

    telemetry.emit(STEP_STOP, {"duration": 0.1}, {})
    assert len(first) == 1
    assert not telemetry.enabled(STEP_START)


def test_enabled_says_whether_anyone_listens_to_an_event() -> None:
    assert not telemetry.enabled(STEP_STOP)

    telemetry.attach("one", STEP_STOP, _recorder([]))
    telemetry.attach("two", STEP_STOP, _recorder([]))
    assert telemetry.enabled(STEP_STOP)
    assert not telemetry.enabled(STEP_START)

    telemetry.detach("one")
    assert telemetry.enabled(STEP_STOP)
    telemetry.detach("two")
    assert not telemetry.enabled(STEP_STOP)


def test_a_raising_handler_is_detached_and_logged_and_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(
        event: str, measurements: Mapping[str, Any], metadata: Mapping[str, Any], config: Any
    ) -> None:
        raise RuntimeError("handler bug")

    calls: list[Call] = []
    telemetry.attach("broken", STEP_STOP, broken)
    telemetry.attach("rec", STEP_STOP, _recorder(calls))

    with caplog.at_level(logging.ERROR, logger="hephaestus.telemetry"):
        telemetry.emit(STEP_STOP, {"duration": 0.1}, {"step": "a"})
        telemetry.emit(STEP_STOP, {"duration": 0.2}, {"step": "b"})

    assert [call[2]["step"] for call in calls] == ["a", "b"]
    assert "broken" not in telemetry.attached()
    [record] = [r for r in caplog.records if "broken" in r.getMessage()]
    assert STEP_STOP in record.getMessage()
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], RuntimeError)


def test_capture_events_records_in_order_and_detaches_on_exit() -> None:
    with capture_events([STEP_START, STEP_STOP]) as events:
        assert telemetry.enabled(STEP_STOP)
        telemetry.emit(STEP_START, {"system_time": 1.0}, {"step": "a"})
        telemetry.emit(WORKFLOW_START, {"system_time": 1.0}, {})
        telemetry.emit(STEP_STOP, {"duration": 0.5}, {"step": "a"})

    assert [(e.name, e.metadata["step"]) for e in events] == [(STEP_START, "a"), (STEP_STOP, "a")]
    assert events[1].measurements == {"duration": 0.5}
    assert not telemetry.enabled(STEP_STOP)


def test_capture_events_detaches_when_the_block_raises() -> None:
    before = telemetry.attached()
    seen: list[list[CapturedEvent]] = []

    def work() -> None:
        with capture_events() as events:
            seen.append(events)
            telemetry.emit(STEP_STOP, {"duration": 0.5}, {"step": "a"})
            raise KeyError("boom")

    with pytest.raises(KeyError):
        work()

    assert len(seen[0]) == 1
    assert telemetry.attached() == before


def test_nested_captures_each_see_the_events() -> None:
    with capture_events(STEP_STOP) as outer:
        with capture_events(STEP_STOP) as inner:
            telemetry.emit(STEP_STOP, {"duration": 0.1}, {"step": "a"})
        telemetry.emit(STEP_STOP, {"duration": 0.1}, {"step": "b"})

    assert [e.metadata["step"] for e in inner] == ["a"]
    assert [e.metadata["step"] for e in outer] == ["a", "b"]
