"""Draw a workflow's graph as Mermaid, Graphviz DOT or plain text.

A workflow is a graph, and a graph is easier to review when you can see it:
`hephaestus graph` prints these drawings for docs and code review, and
`hephaestus instances show` passes `marks` to show where one instance is.
Rendering only reads the frozen `WorkflowDefinition`, so it is pure: no I/O,
and the same definition always gives the same text.

Every drawing shows the same things:

- each step, labelled with its class name and, compactly, its config
  (`Wait {"duration": 2, "unit": "day"}`); node ids are the step keys;
- the start step, marked `▶` (and drawn with a thick border);
- every transition, labelled with its event; a fan-out (one event starting
  several branches) reads `event (parallel)` and is drawn bold (`==>` in
  Mermaid); a dynamic route reads `event (route: function_name)` and is
  dashed, with one edge to each target it may pick;
- join steps (more than one predecessor) as hexagons marked `(join)`;
- `Done` as a circle (it waits for every live branch like a join, but is
  drawn as the end).

Steps are listed in a stable topological order that follows the declared
transitions depth first, so the main path reads top to bottom and `Done`
comes last.

`marks` maps a step key to where an instance is at that step:

| mark | Mermaid | DOT | ASCII |
| --- | --- | --- | --- |
| `completed` | green `classDef` | green fill | `[completed]` |
| `active` | blue `classDef` | blue fill | `[active]` |
| `waiting` | amber `classDef` | amber fill | `[waiting]` |
| `failed` | red `classDef` | red fill | `[failed]` |

Mermaid and DOT also add the `[mark]` text to the node label, so a mark
reads the same without colour. An unknown mark, or a key that is not a step
of the workflow, raises `ValueError`.
"""

from __future__ import annotations

import heapq
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

from hephaestus.core.definition import BaseWorkflow, WorkflowDefinition
from hephaestus.core.step import snake_case

__all__ = ["FORMATS", "MARKS", "render", "to_ascii", "to_dot", "to_mermaid"]

#: What `render` can draw.
FORMATS: tuple[str, ...] = ("mermaid", "dot", "ascii")
#: Where an instance can be at a step, as passed in `marks`.
MARKS: tuple[str, ...] = ("completed", "active", "waiting", "failed")

Renderable: TypeAlias = type[BaseWorkflow] | WorkflowDefinition

# (fill, border) per mark; light fills keep black labels readable.
_COLOURS: Mapping[str, tuple[str, str]] = {
    "completed": ("#d4edda", "#2e7d32"),
    "active": ("#cce5ff", "#1565c0"),
    "waiting": ("#fff3cd", "#b8860b"),
    "failed": ("#f8d7da", "#c62828"),
}
_MAX_CONFIG = 60


@dataclass(frozen=True, slots=True)
class _Edge:
    """The transition(s) for one `(source, event)`: static, fan-out or dynamic route."""

    source: str
    event: str
    targets: tuple[str, ...]
    #: The route function's name for a dynamic route, else `None`.
    route: str | None = None

    @property
    def parallel(self) -> bool:
        return self.route is None and len(self.targets) > 1

    @property
    def label(self) -> str:
        if self.route is not None:
            return f"{self.event} (route: {self.route})"
        if self.parallel:
            return f"{self.event} (parallel)"
        return self.event


@dataclass(frozen=True, slots=True)
class _View:
    """What every renderer draws: steps in display order, their edges, names and marks."""

    definition: WorkflowDefinition
    order: tuple[str, ...]
    outgoing: Mapping[str, tuple[_Edge, ...]]
    names: Mapping[str, str]
    marks: Mapping[str, str]

    @property
    def title(self) -> str:
        short = self.definition.name.rsplit(".", 1)[-1]
        return f"{short} v{self.definition.version}"

    def edges(self) -> list[_Edge]:
        return [edge for key in self.order for edge in self.outgoing[key]]

    def is_done(self, key: str) -> bool:
        return self.definition.nodes[key].step.terminal

    def is_join(self, key: str) -> bool:
        # `Done` after several branches is a join too, but drawing it as the end says more.
        return key in self.definition.joins and not self.is_done(key)

    def config(self, key: str) -> str | None:
        return _compact(self.definition.nodes[key].config)

    def label_lines(self, key: str) -> list[str]:
        """The node label of the Mermaid and DOT drawings, one entry per line."""
        first = self.names[key]
        if key == self.definition.start:
            first = f"▶ {first}"
        lines = [first]
        config = self.config(key)
        if config is not None:
            lines.append(config)
        if self.is_join(key):
            lines.append("(join)")
        mark = self.marks.get(key)
        if mark is not None:
            lines.append(f"[{mark}]")
        return lines


def _definition_of(workflow: Renderable) -> WorkflowDefinition:
    if isinstance(workflow, WorkflowDefinition):
        return workflow
    if isinstance(workflow, type) and issubclass(workflow, BaseWorkflow):
        if workflow.is_umbrella():
            assert workflow.current is not None  # checked when the umbrella class was created
            return workflow.versions[workflow.current].definition()
        return workflow.definition()
    raise TypeError(
        f"cannot draw {workflow!r}: pass a workflow class or a WorkflowDefinition "
        "(e.g. OrderFlow or OrderFlow.definition())"
    )


def _compact(config: Mapping[str, Any] | None) -> str | None:
    """A config as one short line of JSON, cut with `…` when too long."""
    if config is None:
        return None
    try:
        text = json.dumps(dict(config), ensure_ascii=False, default=repr)
    except (TypeError, ValueError):
        text = repr(dict(config))
    if len(text) > _MAX_CONFIG:
        text = text[: _MAX_CONFIG - 1] + "…"
    return text


def _outgoing(definition: WorkflowDefinition, key: str) -> tuple[_Edge, ...]:
    """The edges leaving `key`, in the order its step declares its events."""
    events = definition.nodes[key].events
    found: list[_Edge] = [
        _Edge(source, event, targets)
        for (source, event), targets in definition.edges.items()
        if source == key
    ]
    found.extend(
        _Edge(source, event, spec.targets, spec.function_name)
        for (source, event), spec in definition.routes.items()
        if source == key
    )

    def position(edge: _Edge) -> tuple[int, str]:
        return (events.index(edge.event) if edge.event in events else len(events), edge.event)

    return tuple(sorted(found, key=position))


def _display_order(
    definition: WorkflowDefinition, outgoing: Mapping[str, tuple[_Edge, ...]]
) -> tuple[str, ...]:
    """A topological order that prefers the depth-first order of the declared transitions."""
    successors = {
        key: list(dict.fromkeys(t for edge in outgoing[key] for t in edge.targets))
        for key in definition.nodes
    }
    rank: dict[str, int] = {}
    stack = [definition.start]
    while stack:
        key = stack.pop()
        if key in rank or key not in successors:
            continue
        rank[key] = len(rank)
        stack.extend(reversed(successors[key]))
    for key in (*definition.order, *definition.nodes):
        rank.setdefault(key, len(rank))

    indegree = dict.fromkeys(definition.nodes, 0)
    for succs in successors.values():
        for succ in succs:
            if succ in indegree:
                indegree[succ] += 1
    ready = [(rank[key], key) for key, degree in indegree.items() if degree == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        _, key = heapq.heappop(ready)
        order.append(key)
        for succ in successors[key]:
            if succ in indegree:
                indegree[succ] -= 1
                if indegree[succ] == 0:
                    heapq.heappush(ready, (rank[succ], succ))
    # A hand-built definition with a cycle still draws: the rest follow by rank.
    order.extend(
        sorted((key for key in definition.nodes if key not in order), key=rank.__getitem__)
    )
    return tuple(order)


def _display_names(definition: WorkflowDefinition) -> dict[str, str]:
    """Class names, with the key added where two steps share a class name."""
    counts: dict[str, int] = {}
    for node in definition.nodes.values():
        counts[node.name] = counts.get(node.name, 0) + 1
    return {
        key: node.name if counts[node.name] == 1 else f"{node.name} ({key})"
        for key, node in definition.nodes.items()
    }


def _check_marks(definition: WorkflowDefinition, marks: Mapping[str, str] | None) -> dict[str, str]:
    if marks is None:
        return {}
    for key, mark in marks.items():
        if mark not in MARKS:
            raise ValueError(
                f"unknown mark {mark!r} for step {key!r}; use one of {', '.join(MARKS)}"
            )
        if key not in definition.nodes:
            raise ValueError(
                f"cannot mark step {key!r}: workflow {definition.name} has no step with that "
                f"key; its steps are {', '.join(sorted(definition.nodes))}"
            )
    return dict(marks)


def _view(workflow: Renderable, marks: Mapping[str, str] | None) -> _View:
    definition = _definition_of(workflow)
    checked = _check_marks(definition, marks)
    outgoing = {key: _outgoing(definition, key) for key in definition.nodes}
    return _View(
        definition=definition,
        order=_display_order(definition, outgoing),
        outgoing=outgoing,
        names=_display_names(definition),
        marks=checked,
    )


# --- Mermaid -------------------------------------------------------------------------------

# Words Mermaid's flowchart grammar reads as keywords, so they cannot be node ids.
_MERMAID_KEYWORDS = frozenset(
    {
        "accdescr",
        "acctitle",
        "call",
        "class",
        "classdef",
        "click",
        "default",
        "direction",
        "end",
        "flowchart",
        "graph",
        "href",
        "interpolate",
        "linkstyle",
        "style",
        "subgraph",
    }
)
# Mermaid decodes `#name;` and `#code;` entities in labels; everything that could end a
# quoted label or start markup is written as one.
_MERMAID_ESCAPES = str.maketrans(
    {
        '"': "#quot;",
        "#": "#35;",
        "&": "#amp;",
        "<": "#lt;",
        ">": "#gt;",
        "|": "#124;",
        "`": "#96;",
        "\n": " ",
        "\r": " ",
    }
)


def _mermaid_text(text: str) -> str:
    return text.translate(_MERMAID_ESCAPES)


def _mermaid_ids(keys: tuple[str, ...]) -> dict[str, str]:
    """Step keys as Mermaid node ids: `[A-Za-z0-9_]`, no keywords, no collisions."""
    ids: dict[str, str] = {}
    used: set[str] = set()
    for key in keys:
        base = re.sub(r"[^A-Za-z0-9_]", "_", key)
        if base.lower() in _MERMAID_KEYWORDS:
            base = f"step_{base}"
        candidate, n = base, 1
        while candidate in used:
            n += 1
            candidate = f"{base}_{n}"
        used.add(candidate)
        ids[key] = candidate
    return ids


def to_mermaid(workflow: Renderable, *, marks: Mapping[str, str] | None = None) -> str:
    """The workflow as a Mermaid `flowchart TD`, one line per node and per edge."""
    view = _view(workflow, marks)
    ids = _mermaid_ids(view.order)
    lines = ["flowchart TD", f"    %% {view.definition.name} v{view.definition.version}"]
    for key in view.order:
        label = "<br/>".join(_mermaid_text(line) for line in view.label_lines(key))
        if view.is_done(key):
            shape = f'(("{label}"))'
        elif view.is_join(key):
            shape = f'{{{{"{label}"}}}}'
        else:
            shape = f'["{label}"]'
        lines.append(f"    {ids[key]}{shape}")
    for edge in view.edges():
        arrow = "-.->" if edge.route is not None else "==>" if edge.parallel else "-->"
        label = _mermaid_text(edge.label)
        lines.extend(
            f'    {ids[edge.source]} {arrow}|"{label}"| {ids[target]}' for target in edge.targets
        )
    lines.append("    classDef start stroke-width:3px")
    lines.append(f"    class {ids[view.definition.start]} start")
    for mark in MARKS:
        marked = [ids[key] for key in view.order if view.marks.get(key) == mark]
        if marked:
            fill, border = _COLOURS[mark]
            lines.append(f"    classDef {mark} fill:{fill},stroke:{border},color:#000")
            lines.append(f"    class {','.join(marked)} {mark}")
    return "\n".join(lines) + "\n"


# --- Graphviz DOT ---------------------------------------------------------------------------


def _dot_quote(text: str) -> str:
    """A DOT double-quoted string; backslashes are escaped so `\\n` in data stays literal."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("\r", "").replace("\n", " ") + '"'


def _dot_label(lines: list[str]) -> str:
    """Several lines as one quoted DOT label, joined by DOT's centred line break `\\n`."""
    inner = "\\n".join(_dot_quote(line)[1:-1] for line in lines)
    return f'"{inner}"'


def to_dot(workflow: Renderable, *, marks: Mapping[str, str] | None = None) -> str:
    """The workflow as a Graphviz `digraph`, one statement per node and per edge."""
    view = _view(workflow, marks)
    lines = [
        f"digraph {_dot_quote(view.definition.name)} {{",
        f"    graph [label={_dot_quote(view.title)}, labelloc=t, rankdir=TB, "
        'fontname="Helvetica"];',
        '    node [fontname="Helvetica"];',
        '    edge [fontname="Helvetica", fontsize=10];',
    ]
    for key in view.order:
        attrs = [f"label={_dot_label(view.label_lines(key))}"]
        styles: list[str] = []
        if view.is_done(key):
            attrs.append("shape=doublecircle")
        elif view.is_join(key):
            attrs.append("shape=hexagon")
        else:
            attrs.append("shape=box")
            styles.append("rounded")
        if key == view.definition.start:
            attrs.append("penwidth=2.5")
        mark = view.marks.get(key)
        if mark is not None:
            fill, border = _COLOURS[mark]
            styles.append("filled")
            attrs.append(f'fillcolor="{fill}", color="{border}"')
        if styles:
            attrs.append(f'style="{",".join(styles)}"')
        lines.append(f"    {_dot_quote(key)} [{', '.join(attrs)}];")
    for edge in view.edges():
        attrs = [f"label={_dot_quote(edge.label)}"]
        if edge.route is not None:
            attrs.append("style=dashed")
        elif edge.parallel:
            attrs.append("style=bold")
        lines.extend(
            f"    {_dot_quote(edge.source)} -> {_dot_quote(target)} [{', '.join(attrs)}];"
            for target in edge.targets
        )
    lines.append("}")
    return "\n".join(lines) + "\n"


# --- Plain text -----------------------------------------------------------------------------


def _ascii_arrow(edge: _Edge) -> str:
    if edge.route is not None:
        return "┄┄▶"
    return "══▶" if edge.parallel else "──▶"


def to_ascii(workflow: Renderable, *, marks: Mapping[str, str] | None = None) -> str:
    """The workflow as text for a terminal: one block per step, with its transitions.

    Each block's header names the step (`▶` for the start, `■` for `Done`,
    `○` otherwise), its config, its key if that is not the default, and the
    `[mark]`; a join adds a `join: waits for ...` line; each transition reads
    `event ──▶ target`, `event ══▶ a, b  (parallel)` for a fan-out, or
    `event ┄┄▶ a | b  (route: fn)` for a dynamic route.
    """
    view = _view(workflow, marks)
    definition = view.definition
    lines = [f"{view.title}  ({definition.name})"]
    for key in view.order:
        node = definition.nodes[key]
        symbol = "▶" if key == definition.start else "■" if view.is_done(key) else "○"
        header = f"{symbol} {view.names[key]}"
        config = view.config(key)
        if config is not None:
            header += f" {config}"
        if key != snake_case(node.name):
            header += f"  (key: {key})"
        if key == definition.start:
            header += "  (start)"
        elif view.is_done(key):
            header += "  (end)"
        mark = view.marks.get(key)
        if mark is not None:
            header += f"  [{mark}]"
        lines.extend(["", header])
        if view.is_join(key):
            waits = ", ".join(
                view.names[p] for p in view.order if p in definition.predecessors[key]
            )
            lines.append(f"  ┆ join: waits for {waits}")
        edges = view.outgoing[key]
        for index, edge in enumerate(edges):
            branch = "└─" if index == len(edges) - 1 else "├─"
            separator = " | " if edge.route is not None else ", "
            targets = separator.join(view.names[t] for t in edge.targets)
            line = f"  {branch} {edge.event} {_ascii_arrow(edge)} {targets}"
            if edge.route is not None:
                line += f"  (route: {edge.route})"
            elif edge.parallel:
                line += "  (parallel)"
            lines.append(line)
    return "\n".join(lines) + "\n"


_RENDERERS: Mapping[str, Callable[..., str]] = {
    "mermaid": to_mermaid,
    "dot": to_dot,
    "ascii": to_ascii,
}


def render(workflow: Renderable, fmt: str, *, marks: Mapping[str, str] | None = None) -> str:
    """The workflow drawn in `fmt`: `"mermaid"`, `"dot"` or `"ascii"`."""
    renderer = _RENDERERS.get(fmt)
    if renderer is None:
        raise ValueError(f"unknown graph format {fmt!r}; use one of {', '.join(FORMATS)}")
    return renderer(workflow, marks=marks)
