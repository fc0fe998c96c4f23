"""The dashboard's SVG graph: pure, well-formed, every step drawn with its mark and timers."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

import pytest

pytest.importorskip("starlette")

from hephaestus import Async, Context, Ok
from hephaestus.core import engine
from hephaestus.core.instance import Instance
from hephaestus.demo import DemoOrder
from hephaestus.ui._graph import graph_svg, instance_marks

T0 = datetime(2026, 2, 1, tzinfo=UTC)
SVG = "{http://www.w3.org/2000/svg}"
DEFINITION = DemoOrder.definition()


def parked() -> Instance:
    """Validated, charged and reserved; waiting for the payment confirmation, with its timer."""
    instance = engine.new_instance(
        DEFINITION, instance_id="demoorder::1", context=Context.new({"item_count": 2}), now=T0
    ).instance
    for step, outcome in (
        ("validate_order", Ok("valid")),
        ("charge_payment", Ok("charged")),
        ("reserve_stock", Ok("reserved")),
        ("await_payment_confirmation", Async(resume_after=60, timeout_event="timeout")),
    ):
        instance = engine.complete_step(
            DEFINITION, instance, step, outcome, attempt=1, now=T0
        ).instance
    return instance


def nodes(svg: str) -> dict[str, str]:
    root = ET.fromstring(svg)
    return {
        g.attrib["data-step"]: g.attrib["data-mark"]
        for g in root.iter(f"{SVG}g")
        if "data-step" in g.attrib
    }


def test_every_step_is_drawn_with_where_the_instance_is() -> None:
    instance = parked()
    assert instance.waiting_steps == {"await_payment_confirmation"}
    svg = graph_svg(instance, DEFINITION, now=T0 + timedelta(seconds=30))
    marks = nodes(svg)
    assert set(marks) == set(DEFINITION.nodes)
    assert marks["validate_order"] == "completed"
    assert marks["charge_payment"] == "completed"
    assert marks["await_payment_confirmation"] == "waiting"
    assert marks["reject_order"] == "not-taken"  # the invalid branch was not taken
    assert marks["ship"] == "pending"  # still to come
    assert "⏱ timeout in 30s" in svg
    assert svg == graph_svg(instance, DEFINITION, now=T0 + timedelta(seconds=30))  # pure


def test_without_the_definition_the_graph_comes_from_the_history() -> None:
    instance = parked()
    marks = nodes(graph_svg(instance, None, now=T0))
    assert marks["validate_order"] == "completed"
    assert marks["await_payment_confirmation"] == "waiting"
    assert "reject_order" not in marks  # never reached: the history does not know it


def test_text_from_the_history_is_escaped() -> None:
    instance = parked()
    entry = instance.execution_history[0]
    odd = instance.evolve(
        execution_history=(
            type(entry)(step="<b>&", event='"x"', timestamp=T0, targets=("validate_order",)),
            *instance.execution_history,
        )
    )
    svg = graph_svg(odd, None, now=T0)
    ET.fromstring(svg)  # well-formed whatever the stored data holds
    assert "<b>" not in svg


def test_a_failed_step_is_marked_failed_and_what_follows_not_taken() -> None:
    instance = engine.fail(parked(), "step Ship failed", now=T0).instance
    marks = instance_marks(instance, DEFINITION)
    assert marks["await_payment_confirmation"] == "waiting"
    assert marks["ship"] == "not-taken"
