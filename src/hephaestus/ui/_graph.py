"""The instance graph as SVG: every step coloured by where the instance is, with its timers.

From the workflow's definition when the dashboard knows the workflow (the
drawing of `hephaestus.core.render`, laid out in layers), otherwise from what
the instance itself recorded: the steps of its history, where their
transitions led, and the steps still active or waiting. Pure: no I/O, the
same instance always gives the same SVG. Text is XML-escaped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from xml.sax.saxutils import escape, quoteattr

from hephaestus.core.definition import WorkflowDefinition
from hephaestus.core.instance import Instance, Status
from hephaestus.core.render import _view

__all__ = ["MARKS", "GraphNode", "graph_svg", "instance_marks"]

#: Where an instance can be at a step; `None` (no mark) is a step still to come.
MARKS: tuple[str, ...] = ("completed", "active", "waiting", "failed", "not-taken")

_NODE_W = 176
_NODE_H = 48
_GAP_X = 28
_GAP_Y = 64
_PAD = 16


@dataclass(frozen=True, slots=True)
class GraphNode:
    key: str
    label: str
    mark: str | None
    note: str | None = None


def instance_marks(instance: Instance, definition: WorkflowDefinition | None) -> dict[str, str]:
    """The mark of each step: completed, active, waiting, failed, or not taken.

    When the instance failed, the steps that were active are `failed` (the
    one its error names, if several were). A step that no live step can still
    reach, and that did not run, is `not-taken` (a branch the instance did not
    take, or everything after a failure).
    """
    marks = dict.fromkeys(instance.completed_steps, "completed")
    marks.update(dict.fromkeys(instance.waiting_steps, "waiting"))
    if instance.status is Status.FAILED:
        names = {} if definition is None else {k: n.name for k, n in definition.nodes.items()}
        culprits = [
            key
            for key in instance.active_steps
            if (instance.error or "").startswith(f"step {names.get(key, key)} ")
        ]
        marks.update(dict.fromkeys(culprits or instance.active_steps, "failed"))
    else:
        marks.update(dict.fromkeys(instance.active_steps, "active"))
    if definition is not None:
        live = set() if instance.status.is_final else instance.active_steps | instance.waiting_steps
        reachable = set(live)
        for key in live:
            reachable.update(definition.descendants.get(key, ()))
        for key in definition.nodes:
            if key not in marks and key not in reachable:
                marks[key] = "not-taken"
    return marks


def _timer_notes(instance: Instance, now: datetime) -> dict[str, str]:
    notes: dict[str, str] = {}
    for timer in sorted(instance.timers, key=lambda t: t.due_at):
        seconds = (timer.due_at - now).total_seconds()
        when = f"in {_span(seconds)}" if seconds >= 0 else f"overdue {_span(-seconds)}"
        what = "retry" if timer.kind == "retry" else (timer.event or "timeout")
        notes.setdefault(timer.step, f"⏱ {what} {when}")
    return notes


def _span(seconds: float) -> str:
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole // 60 % 60:02d}m"
    return f"{whole // 86400}d{whole // 3600 % 24}h"


def graph_svg(instance: Instance, definition: WorkflowDefinition | None, *, now: datetime) -> str:
    """The instance's graph as an `<svg>` element (from its history if `definition` is None)."""
    marks = instance_marks(instance, definition)
    notes = _timer_notes(instance, now)
    if definition is not None:
        view = _view(definition, None)
        order = list(view.order)
        labels = {key: view.names[key] for key in order}
        edges = [
            (edge.source, target, edge.label) for edge in view.edges() for target in edge.targets
        ]
    else:
        order, labels, edges = _from_history(instance)
    nodes = [GraphNode(key, labels[key], marks.get(key), notes.get(key)) for key in order]
    return _draw(nodes, edges, start=order[0] if order else None)


def _from_history(
    instance: Instance,
) -> tuple[list[str], dict[str, str], list[tuple[str, str, str]]]:
    order: list[str] = []
    edges: list[tuple[str, str, str]] = []
    for entry in instance.execution_history:
        if entry.step not in order:
            order.append(entry.step)
        for target in entry.targets:
            if (entry.step, target, entry.event) not in edges:
                edges.append((entry.step, target, entry.event))
            if target not in order:
                order.append(target)
    for key in sorted(instance.active_steps | instance.waiting_steps):
        if key not in order:
            order.append(key)
    return order, {key: key for key in order}, edges


def _layers(order: Sequence[str], edges: Iterable[tuple[str, str, str]]) -> dict[str, int]:
    """Each step's row: one below the lowest of its predecessors (longest path from the top)."""
    position = {key: index for index, key in enumerate(order)}
    preds: dict[str, list[str]] = {key: [] for key in order}
    for source, target, _ in edges:
        if source in position and target in position and position[source] < position[target]:
            preds[target].append(source)
    layer: dict[str, int] = {}
    for key in order:
        layer[key] = max((layer[p] + 1 for p in preds[key] if p in layer), default=0)
    return layer


def _draw(
    nodes: Sequence[GraphNode], edges: Sequence[tuple[str, str, str]], *, start: str | None
) -> str:
    layer = _layers([n.key for n in nodes], edges)
    rows: dict[int, list[GraphNode]] = {}
    for node in nodes:
        rows.setdefault(layer[node.key], []).append(node)
    widest = max((len(row) for row in rows.values()), default=1)
    width = _PAD * 2 + widest * _NODE_W + (widest - 1) * _GAP_X
    height = _PAD * 2 + len(rows) * _NODE_H + max(len(rows) - 1, 0) * _GAP_Y
    centre: dict[str, tuple[float, float]] = {}
    for number, row in rows.items():
        row_width = len(row) * _NODE_W + (len(row) - 1) * _GAP_X
        left = (width - row_width) / 2
        for index, node in enumerate(row):
            x = left + index * (_NODE_W + _GAP_X) + _NODE_W / 2
            y = _PAD + number * (_NODE_H + _GAP_Y) + _NODE_H / 2
            centre[node.key] = (x, y)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="graph" width="{width:.0f}" '
        f'height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" role="img" '
        'aria-label="workflow graph">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" '
        'class="arrowhead"/></marker></defs>',
    ]
    for source, target, label in edges:
        if source not in centre or target not in centre:
            continue
        (x1, y1), (x2, y2) = centre[source], centre[target]
        y1 += _NODE_H / 2
        y2 -= _NODE_H / 2
        if y2 <= y1:  # drawn upwards only for a history that loops; keep it visible
            y2 = y1 + 4
        parts.append(
            f'<line class="edge" x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" '
            'marker-end="url(#arrow)"/>'
        )
        mx, my = (x1 + x2) / 2, (y1 + y2) / 2
        parts.append(
            f'<text class="edge-label" x="{mx + 4:.1f}" y="{my:.1f}">{escape(label)}</text>'
        )
    for node in nodes:
        x, y = centre[node.key]
        mark = node.mark or "pending"
        title = f"{node.key}: {mark.replace('-', ' ')}" + (f" ({node.note})" if node.note else "")
        parts.append(
            f'<g class="node {mark}" data-step={quoteattr(node.key)} data-mark="{mark}">'
            f"<title>{escape(title)}</title>"
            f'<rect x="{x - _NODE_W / 2:.1f}" y="{y - _NODE_H / 2:.1f}" width="{_NODE_W}" '
            f'height="{_NODE_H}" rx="8"/>'
        )
        label = ("▶ " if node.key == start else "") + node.label
        second = node.note or (mark.replace("-", " ") if node.mark else "")
        parts.append(
            f'<text class="node-label" x="{x:.1f}" y="{y - 4:.1f}">{escape(_fit(label))}</text>'
        )
        if second:
            note = escape(_fit(second))
            parts.append(f'<text class="node-note" x="{x:.1f}" y="{y + 13:.1f}">{note}</text>')
        parts.append("</g>")
    parts.append("</svg>")
    return "".join(parts)


def _fit(text: str, limit: int = 24) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def legend() -> Mapping[str, str]:
    """The marks and how the legend names them."""
    return {mark: mark.replace("-", " ") for mark in MARKS}
