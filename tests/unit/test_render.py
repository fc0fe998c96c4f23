"""Drawing workflows as Mermaid, DOT and text: what a reader of the drawing must be able to see."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from typing import Any

import pytest

from hephaestus import Done, Ok, Step, Unique, Wait, WaitForEvent, Workflow, route
from hephaestus.core.render import FORMATS, MARKS, render, to_ascii, to_dot, to_mermaid

# --- the README order example -------------------------------------------------------------


class ValidateOrder(Step):
    events = ("valid", "invalid")

    def execute(self, instance: Any, config: Any, context: Any) -> Ok:
        return Ok("valid" if context.initial["item_count"] > 0 else "invalid")


class ChargePayment(Step):
    events = ("charged",)


class ReserveStock(Step):
    events = ("reserved",)


class Ship(Step):
    events = ("shipped",)


class RejectOrder(Step):
    events = ("rejected",)


class OrderFlow(Workflow):
    unique = Unique(key="orderid", scope="workflow")
    start = ValidateOrder
    transitions = {
        (ValidateOrder, "valid"): [ChargePayment, ReserveStock],
        (ValidateOrder, "invalid"): RejectOrder,
        (ChargePayment, "charged"): Ship,
        (ReserveStock, "reserved"): Ship,
        (Ship, "shipped"): (Wait, {"duration": 2, "unit": "day"}),
        (Wait, "timeout"): Done,
        (RejectOrder, "rejected"): Done,
    }


ORDER_EDGES = {
    ("validate_order", "charge_payment", "valid (parallel)"),
    ("validate_order", "reserve_stock", "valid (parallel)"),
    ("validate_order", "reject_order", "invalid"),
    ("charge_payment", "ship", "charged"),
    ("reserve_stock", "ship", "reserved"),
    ("ship", "wait", "shipped"),
    ("wait", "done", "timeout"),
    ("reject_order", "done", "rejected"),
}

# --- a dynamic route, a WaitForEvent and a config that needs escaping ----------------------


class Triage(Step):
    events = ("routed",)
    key = "triage-step"


class FastTrack(Step):
    events = ("tracked",)


class Standard(Step):
    events = ("handled",)


class AwaitApproval(WaitForEvent):
    pass


class TicketFlow(Workflow):
    unique = Unique(key="ticket")
    version = 3
    start = (Triage, {"queue": 'say "hi" {x} <b> #1 | `a`'})
    transitions = {
        (FastTrack, "tracked"): (AwaitApproval, {"event_name": "approved", "timeout_ms": 5000}),
        (AwaitApproval, "approved"): Done,
        (AwaitApproval, "timeout"): Done,
        (Standard, "handled"): Done,
    }

    @route(Triage, "routed", targets=[FastTrack, Standard])
    def pick_lane(context: Any) -> type[Step]:
        return FastTrack if context.initial.get("priority") == "high" else Standard


TICKET_EDGES = {
    ("triage-step", "fast_track", "routed (route: pick_lane)"),
    ("triage-step", "standard", "routed (route: pick_lane)"),
    ("fast_track", "await_approval", "tracked"),
    ("await_approval", "done", "approved"),
    ("await_approval", "done", "timeout"),
    ("standard", "done", "handled"),
}

# --- keys that are not valid Mermaid ids as they are ----------------------------------------


class Finish(Step):
    events = ("finished",)
    key = "end"


class Audit(Step):
    events = ("logged",)
    key = "audit.log"


class AwkwardKeysFlow(Workflow):
    unique = Unique(key="awkward")
    start = Audit
    transitions = {(Audit, "logged"): Finish, (Finish, "finished"): Done}


# --- versions -------------------------------------------------------------------------------


class Greet(Step):
    events = ("greeted",)


class Follow(Step):
    events = ("followed",)


class SignupV1(Workflow):
    unique = Unique(key="user")
    version = 1
    start = Greet
    transitions = {(Greet, "greeted"): Done}


class SignupV2(Workflow):
    unique = Unique(key="user")
    version = 2
    start = Greet
    transitions = {(Greet, "greeted"): Follow, (Follow, "followed"): Done}


class Signup(Workflow):
    unique = Unique(key="user")
    versions = {1: SignupV1, 2: SignupV2}
    current = 2


# --- helpers: read the drawings back the way Mermaid and Graphviz would ---------------------

_QUOTED = r'"(?:[^"\\]|\\.)*"'
_DOT_EDGE = re.compile(rf"^\s*({_QUOTED}) -> ({_QUOTED}) \[(.*)\];$")
_DOT_NODE = re.compile(rf"^\s*({_QUOTED}) \[(.*)\];$")
_MERMAID_EDGE = re.compile(r'^\s*(\w+) (-->|==>|-\.->)\|"([^"]*)"\| (\w+)$')
_MERMAID_NODE = re.compile(r"^\s*(\w+)(\[|\{\{|\(\()\"([^\"]*)\"(\]|\}\}|\)\))$")


def _unquote(text: str) -> str:
    # A DOT quoted string using only the escapes \" \\ and \n (a line break) reads as JSON.
    value: str = json.loads(text)
    return value


def _dot_attr(attrs: str, name: str) -> str | None:
    match = re.search(rf"(?:^|, ){name}=({_QUOTED}|[^,]+)", attrs)
    if match is None:
        return None
    value = match.group(1)
    return value[1:-1] if value.startswith('"') else value


def dot_edges(text: str) -> list[tuple[str, str, str, str | None]]:
    """(source, target, label, style) of every edge statement."""
    edges = []
    for line in text.splitlines():
        match = _DOT_EDGE.match(line)
        if match:
            attrs = match.group(3)
            label = re.search(rf"label=({_QUOTED})", attrs)
            assert label is not None, line
            edges.append(
                (
                    _unquote(match.group(1)),
                    _unquote(match.group(2)),
                    _unquote(label.group(1)),
                    _dot_attr(attrs, "style"),
                )
            )
    return edges


def dot_nodes(text: str) -> dict[str, str]:
    """Node id -> its attribute list."""
    return {
        _unquote(match.group(1)): match.group(2)
        for line in text.splitlines()
        if (match := _DOT_NODE.match(line)) and " -> " not in line
    }


def mermaid_edges(text: str) -> list[tuple[str, str, str, str]]:
    """(source, target, label, arrow) of every edge line."""
    edges = []
    for line in text.splitlines():
        match = _MERMAID_EDGE.match(line)
        if match:
            source, arrow, label, target = match.groups()
            edges.append((source, target, label, arrow))
    return edges


def mermaid_nodes(text: str) -> dict[str, tuple[str, str]]:
    """Node id -> (opening bracket of its shape, label)."""
    return {
        match.group(1): (match.group(2), match.group(3))
        for line in text.splitlines()
        if (match := _MERMAID_NODE.match(line))
    }


def ascii_blocks(text: str) -> dict[str, list[str]]:
    """Step name -> the lines of its block, keyed by the name after the block's symbol."""
    blocks: dict[str, list[str]] = {}
    for block in text.split("\n\n")[1:]:
        lines = block.rstrip("\n").splitlines()
        name = lines[0].split()[1]
        blocks[name] = lines
    return blocks


# --- every format ---------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_step_and_event_of_the_order_flow_is_drawn(fmt: str) -> None:
    text = render(OrderFlow, fmt)
    for name in ("ValidateOrder", "ChargePayment", "ReserveStock", "Ship", "RejectOrder"):
        assert name in text
    assert "Wait" in text
    assert "Done" in text
    for event in ("valid", "invalid", "charged", "reserved", "shipped", "timeout", "rejected"):
        assert re.search(rf"\b{event}\b", text), event


@pytest.mark.parametrize("fmt", FORMATS)
def test_step_configs_are_shown(fmt: str) -> None:
    order = render(OrderFlow, fmt)
    ticket = render(TicketFlow, fmt)
    if fmt == "mermaid":
        assert "{#quot;duration#quot;: 2, #quot;unit#quot;: #quot;day#quot;}" in order
        assert "#quot;event_name#quot;: #quot;approved#quot;" in ticket
    elif fmt == "dot":
        assert r"{\"duration\": 2, \"unit\": \"day\"}" in order
        assert r"\"timeout_ms\": 5000" in ticket
    else:
        assert 'Wait {"duration": 2, "unit": "day"}' in order
        assert 'AwaitApproval {"event_name": "approved", "timeout_ms": 5000}' in ticket


@pytest.mark.parametrize("fmt", FORMATS)
def test_drawing_is_deterministic_and_the_same_for_class_and_definition(fmt: str) -> None:
    first = render(OrderFlow, fmt, marks={"ship": "active"})
    assert render(OrderFlow, fmt, marks={"ship": "active"}) == first
    assert render(OrderFlow.definition(), fmt, marks={"ship": "active"}) == first


@pytest.mark.parametrize(
    ("fmt", "draw"), [("mermaid", to_mermaid), ("dot", to_dot), ("ascii", to_ascii)]
)
def test_render_dispatches_on_the_format(fmt: str, draw: Any) -> None:
    assert render(TicketFlow, fmt) == draw(TicketFlow)


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_umbrella_workflow_draws_its_current_version(fmt: str) -> None:
    text = render(Signup, fmt)
    assert text == render(SignupV2, fmt)
    assert "Follow" in text


def test_an_unknown_format_is_rejected_naming_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"'svg'.*mermaid, dot, ascii"):
        render(OrderFlow, "svg")


@pytest.mark.parametrize("draw", [to_mermaid, to_dot, to_ascii])
def test_an_unknown_mark_is_rejected(draw: Any) -> None:
    with pytest.raises(ValueError, match=r"'done'.*completed, active, waiting, failed"):
        draw(OrderFlow, marks={"ship": "done"})


def test_a_mark_for_a_step_the_workflow_does_not_have_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"'Ship'.*charge_payment"):
        to_ascii(OrderFlow, marks={"Ship": "active"})


def test_something_that_is_not_a_workflow_is_rejected() -> None:
    with pytest.raises(TypeError, match="workflow class"):
        render(ValidateOrder, "ascii")  # type: ignore[arg-type]


# --- Mermaid --------------------------------------------------------------------------------


def test_mermaid_is_a_top_down_flowchart_with_one_line_per_edge() -> None:
    text = to_mermaid(OrderFlow)
    assert text.splitlines()[0] == "flowchart TD"
    edges = mermaid_edges(text)
    assert {(s, t, label) for s, t, label, _ in edges} == ORDER_EDGES
    assert len(edges) == len(ORDER_EDGES)
    arrows = (" -->|", " ==>|", " -.->|")
    assert sum(any(a in line for a in arrows) for line in text.splitlines()) == len(edges)


def test_mermaid_shows_fan_out_joins_done_and_the_start() -> None:
    text = to_mermaid(OrderFlow)
    arrows = {(s, t): arrow for s, t, _, arrow in mermaid_edges(text)}
    assert arrows["validate_order", "charge_payment"] == "==>"
    assert arrows["validate_order", "reserve_stock"] == "==>"
    assert arrows["validate_order", "reject_order"] == "-->"
    nodes = mermaid_nodes(text)
    assert nodes["ship"] == ("{{", "Ship<br/>(join)")
    assert nodes["done"] == ("((", "Done")
    assert nodes["charge_payment"] == ("[", "ChargePayment")
    assert nodes["validate_order"] == ("[", "▶ ValidateOrder")
    assert "    class validate_order start" in text.splitlines()


def test_mermaid_draws_a_route_dashed_with_its_function_name() -> None:
    text = to_mermaid(TicketFlow)
    edges = mermaid_edges(text)
    routed = [(s, t, label) for s, t, label, arrow in edges if arrow == "-.->"]
    assert routed == [
        ("triage_step", "fast_track", "routed (route: pick_lane)"),
        ("triage_step", "standard", "routed (route: pick_lane)"),
    ]
    assert len(edges) == len(TICKET_EDGES)


def test_mermaid_escapes_quotes_and_markup_in_labels() -> None:
    nodes = mermaid_nodes(to_mermaid(TicketFlow))
    shape, label = nodes["triage_step"]
    assert shape == "["
    assert '"' not in label
    assert "|" not in label
    assert "<b>" not in label
    assert "#quot;say \\#quot;hi\\#quot; {x} #lt;b#gt; #35;1 #124; #96;a#96;#quot;" in label


def test_mermaid_ids_are_sanitised_step_keys() -> None:
    text = to_mermaid(AwkwardKeysFlow)
    nodes = mermaid_nodes(text)
    assert set(nodes) == {"audit_log", "step_end", "done"}
    assert {(s, t) for s, t, _, _ in mermaid_edges(text)} == {
        ("audit_log", "step_end"),
        ("step_end", "done"),
    }


def test_mermaid_marks_steps_with_class_definitions() -> None:
    marks = {
        "validate_order": "completed",
        "charge_payment": "completed",
        "reserve_stock": "active",
        "ship": "waiting",
        "wait": "failed",
    }
    lines = to_mermaid(OrderFlow, marks=marks).splitlines()
    for mark in MARKS:
        assert any(line.startswith(f"    classDef {mark} fill:") for line in lines), mark
    assert "    class validate_order,charge_payment completed" in lines
    assert "    class reserve_stock active" in lines
    assert "    class ship waiting" in lines
    assert "    class wait failed" in lines
    assert mermaid_nodes("\n".join(lines))["ship"] == ("{{", "Ship<br/>(join)<br/>[waiting]")


def test_mermaid_without_marks_defines_no_mark_styles() -> None:
    text = to_mermaid(OrderFlow)
    assert "classDef completed" not in text
    assert "[completed]" not in text


# --- DOT ------------------------------------------------------------------------------------


def test_dot_is_a_digraph_with_one_labelled_edge_per_transition_target() -> None:
    text = to_dot(OrderFlow)
    lines = text.splitlines()
    assert lines[0].startswith('digraph "')
    assert lines[0].endswith('OrderFlow" {')
    assert lines[-1] == "}"
    edges = dot_edges(text)
    assert {(s, t, label) for s, t, label, _ in edges} == ORDER_EDGES
    assert text.count(" -> ") == len(ORDER_EDGES)
    assert set(dot_nodes(text)) == {s for s, _, _ in ORDER_EDGES} | {"done"}


def test_dot_shows_fan_out_joins_routes_done_and_the_start() -> None:
    order = to_dot(OrderFlow)
    styles = {(s, t): style for s, t, _, style in dot_edges(order)}
    assert styles["validate_order", "charge_payment"] == "bold"
    assert styles["validate_order", "reserve_stock"] == "bold"
    assert styles["validate_order", "reject_order"] is None
    nodes = dot_nodes(order)
    assert _dot_attr(nodes["ship"], "shape") == "hexagon"
    assert _dot_attr(nodes["done"], "shape") == "doublecircle"
    assert _dot_attr(nodes["wait"], "shape") == "box"
    assert _dot_attr(nodes["validate_order"], "penwidth") == "2.5"
    assert _dot_attr(nodes["charge_payment"], "penwidth") is None

    ticket = to_dot(TicketFlow)
    routed = [(s, t, label) for s, t, label, style in dot_edges(ticket) if style == "dashed"]
    assert routed == [
        ("triage-step", "fast_track", "routed (route: pick_lane)"),
        ("triage-step", "standard", "routed (route: pick_lane)"),
    ]
    assert len(dot_edges(ticket)) == len(TICKET_EDGES)


def test_dot_quotes_labels_so_configs_read_back_exactly() -> None:
    nodes = dot_nodes(to_dot(TicketFlow))
    label = re.search(rf"label=({_QUOTED})", nodes["triage-step"])
    assert label is not None
    lines = _unquote(label.group(1)).splitlines()
    assert lines[0] == "▶ Triage"
    assert json.loads(lines[1]) == {"queue": 'say "hi" {x} <b> #1 | `a`'}


def test_dot_fills_marked_steps() -> None:
    marks = {"validate_order": "completed", "ship": "active", "wait": "waiting", "done": "failed"}
    nodes = dot_nodes(to_dot(OrderFlow, marks=marks))
    fills = {key: _dot_attr(attrs, "fillcolor") for key, attrs in nodes.items()}
    assert fills["charge_payment"] is None
    assert len({fills[key] for key in marks}) == 4
    for key, mark in marks.items():
        assert "filled" in (_dot_attr(nodes[key], "style") or ""), key
        assert f"[{mark}]" in nodes[key]


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz is not installed")
def test_graphviz_reads_the_dot_output() -> None:
    for workflow, expected in ((OrderFlow, ORDER_EDGES), (TicketFlow, TICKET_EDGES)):
        result = subprocess.run(
            ["dot", "-Tjson"],
            input=to_dot(workflow, marks={"done": "completed"}),
            capture_output=True,
            text=True,
            check=True,
        )
        assert result.stderr == ""
        graph = json.loads(result.stdout)
        names = {obj["_gvid"]: obj["name"] for obj in graph["objects"]}
        drawn = {(names[e["tail"]], names[e["head"]], e["label"]) for e in graph["edges"]}
        assert drawn == expected


# --- text -----------------------------------------------------------------------------------


def test_ascii_starts_with_the_workflow_name_and_version() -> None:
    header = to_ascii(TicketFlow).splitlines()[0]
    assert header.startswith("TicketFlow v3  (")
    assert header.endswith("TicketFlow)")


def test_ascii_lists_steps_in_topological_order_with_their_transitions() -> None:
    blocks = ascii_blocks(to_ascii(OrderFlow))
    order = list(blocks)
    assert order[0] == "ValidateOrder"
    assert order[-1] == "Done"
    for source, target in [
        ("ValidateOrder", "ChargePayment"),
        ("ChargePayment", "Ship"),
        ("ReserveStock", "Ship"),
        ("Ship", "Wait"),
        ("Wait", "Done"),
        ("RejectOrder", "Done"),
    ]:
        assert order.index(source) < order.index(target)
    assert blocks["ValidateOrder"] == [
        "▶ ValidateOrder  (start)",
        "  ├─ valid ══▶ ChargePayment, ReserveStock  (parallel)",
        "  └─ invalid ──▶ RejectOrder",
    ]
    assert blocks["Ship"] == [
        "○ Ship",
        "  ┆ join: waits for ChargePayment, ReserveStock",
        "  └─ shipped ──▶ Wait",
    ]
    assert blocks["Done"] == ["■ Done  (end)"]


def test_ascii_shows_routes_and_keys_that_differ_from_the_class_name() -> None:
    blocks = ascii_blocks(to_ascii(TicketFlow))
    assert blocks["Triage"][0].endswith("(key: triage-step)  (start)")
    assert blocks["Triage"][1] == "  └─ routed ┄┄▶ FastTrack | Standard  (route: pick_lane)"
    assert blocks["AwaitApproval"][1:] == [
        "  ├─ approved ──▶ Done",
        "  └─ timeout ──▶ Done",
    ]


def test_ascii_marks_each_step_with_a_suffix() -> None:
    marks = {
        "validate_order": "completed",
        "charge_payment": "active",
        "reserve_stock": "waiting",
        "reject_order": "failed",
    }
    blocks = ascii_blocks(to_ascii(OrderFlow, marks=marks))
    assert blocks["ValidateOrder"][0] == "▶ ValidateOrder  (start)  [completed]"
    assert blocks["ChargePayment"][0] == "○ ChargePayment  [active]"
    assert blocks["ReserveStock"][0] == "○ ReserveStock  [waiting]"
    assert blocks["RejectOrder"][0] == "○ RejectOrder  [failed]"
    assert blocks["Ship"][0] == "○ Ship"
