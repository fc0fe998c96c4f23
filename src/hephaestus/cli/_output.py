"""How the CLI shows things: rich consoles, instance tables, the instance detail view.

Colour and spinners appear only on a terminal (rich turns them off when the
output is piped, and honours `NO_COLOR` and `FORCE_COLOR`). Piped output is
not wrapped at 80 columns, so ids and names stay whole for `grep` and `awk`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime

from rich import box
from rich.console import Console, Group, RenderableType
from rich.json import JSON
from rich.table import Table
from rich.text import Text

from hephaestus.core.definition import WorkflowDefinition
from hephaestus.core.instance import Instance, Status, Timer
from hephaestus.core.render import to_ascii

__all__ = [
    "STATUS_STYLES",
    "duration",
    "instance_marks",
    "instance_view",
    "instances_table",
    "make_console",
    "progress",
    "runs_table",
    "status_text",
    "timestamp",
]

STATUS_STYLES: Mapping[Status, str] = {
    Status.PENDING: "dim",
    Status.RUNNING: "bold blue",
    Status.WAITING: "bold yellow",
    Status.COMPLETED: "bold green",
    Status.FAILED: "bold red",
    Status.CANCELLED: "magenta",
}
_MARK_STYLES: Mapping[str, str] = {
    "completed": "green",
    "active": "bold blue",
    "waiting": "bold yellow",
    "failed": "bold red",
}
# Wide enough that piped tables keep ids and names on one line.
_PIPE_WIDTH = 200


def make_console(*, stderr: bool = False) -> Console:
    """A console for stdout (or stderr) that does not guess highlights in plain text."""
    width = None
    stream_is_tty = Console(stderr=stderr).is_terminal
    if not stream_is_tty and "COLUMNS" not in os.environ:
        width = _PIPE_WIDTH
    return Console(stderr=stderr, highlight=False, width=width)


@contextlib.contextmanager
def progress(console: Console, message: str) -> Iterator[None]:
    """A spinner with `message` while the block runs, on a terminal only.

    The message is shown as is: ids and URLs are not Rich markup or `:emoji:` codes.
    """
    if not console.is_terminal:
        yield
        return
    with console.status(Text(message)):
        yield


def status_text(status: Status) -> Text:
    return Text(status.value, style=STATUS_STYLES[status])


def timestamp(moment: datetime, *, millis: bool = False) -> str:
    """`2026-01-01 12:00:03` (UTC), with `.123` milliseconds if asked."""
    utc = moment.astimezone(UTC) if moment.tzinfo is not None else moment
    text = utc.strftime("%Y-%m-%d %H:%M:%S")
    if millis:
        text += f".{utc.microsecond // 1000:03d}"
    return text


def duration(seconds: float) -> str:
    """A step duration for people: `0.4 ms`, `51.5 ms`, `1.20 s`, `2m 03s`."""
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms"
    if seconds < 60:
        return f"{seconds:.2f} s"
    return _span(seconds)


def _span(seconds: float) -> str:
    whole = round(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def _relative(due: datetime, now: datetime) -> str:
    delta = (due - now).total_seconds()
    return f"in {_span(delta)}" if delta >= 0 else f"overdue by {_span(-delta)}"


def _steps_cell(instance: Instance) -> Text:
    stopped = sorted(instance.active_steps | instance.waiting_steps)
    if instance.status.is_final:
        if not stopped or instance.status is Status.COMPLETED:
            return Text("-", style="dim")
        text = Text(f"{instance.status.value} at: ", style=STATUS_STYLES[instance.status])
        return text.append(", ".join(stopped))
    text = Text()
    if instance.active_steps:
        text.append("active: ", style="blue")
        text.append(", ".join(sorted(instance.active_steps)))
    if instance.waiting_steps:
        if text:
            text.append("\n")
        text.append("waiting: ", style="yellow")
        text.append(", ".join(sorted(instance.waiting_steps)))
    return text if text else Text("-", style="dim")


def instances_table(instances: Sequence[Instance]) -> Table:
    """One row per instance: id, workflow, version, status, active/waiting steps, updated.

    Every column is kept however narrow the terminal: values wrap within their
    column (ids and names fold at any character), never a column is dropped.
    """
    table = Table(box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False, show_edge=False)
    table.add_column("ID", style="cyan", overflow="fold", min_width=4, ratio=3)
    table.add_column("WORKFLOW", overflow="fold", min_width=4, ratio=3)
    table.add_column("VERSION", justify="right", overflow="fold", min_width=1)
    table.add_column("STATUS", overflow="fold", min_width=4)
    table.add_column("STEPS", overflow="fold", min_width=4, ratio=2)
    table.add_column("UPDATED (UTC)", overflow="fold", min_width=5)
    for instance in instances:
        table.add_row(
            Text(instance.id),  # as is: a str cell would turn `urn:x:1` into an emoji
            instance.workflow,
            str(instance.workflow_version),
            status_text(instance.status),
            _steps_cell(instance),
            timestamp(instance.updated_at),
        )
    return table


def runs_table(runs: Sequence[Instance]) -> Table:
    """One row per run of an id, newest first: the current run, then the earlier ones."""
    table = Table(box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False, show_edge=False)
    table.add_column("RUN", justify="right", style="dim")
    table.add_column("STATUS", no_wrap=True)
    table.add_column("VERSION", justify="right")
    table.add_column("STARTED (UTC)", no_wrap=True)
    table.add_column("UPDATED (UTC)", no_wrap=True)
    table.add_column("ERROR", overflow="fold")
    for number, run in enumerate(runs):
        error = (run.error or "").partition("\n")[0]
        table.add_row(
            "current" if number == 0 else f"-{number}",
            status_text(run.status),
            str(run.workflow_version),
            timestamp(run.created_at),
            timestamp(run.updated_at),
            Text(error, style="red") if error else Text("-", style="dim"),
        )
    return table


def instance_marks(instance: Instance, definition: WorkflowDefinition) -> dict[str, str]:
    """Where `instance` is on its graph, as `marks` for `render`.

    Completed steps are `completed`, waiting ones `waiting`, active ones
    `active`; when the instance failed, the step that was active at the
    failure is `failed` (the one the error names, if several were active).
    """
    marks = dict.fromkeys(instance.completed_steps, "completed")
    marks.update(dict.fromkeys(instance.waiting_steps, "waiting"))
    if instance.status is Status.FAILED:
        culprits = [
            key
            for key in instance.active_steps
            if key in definition.nodes
            and (instance.error or "").startswith(f"step {definition.nodes[key].name} ")
        ]
        marks.update(dict.fromkeys(culprits or instance.active_steps, "failed"))
    else:
        marks.update(dict.fromkeys(instance.active_steps, "active"))
    # A step the definition no longer has cannot be drawn; the tables still list it.
    return {key: mark for key, mark in marks.items() if key in definition.nodes}


def instance_view(
    instance: Instance,
    definition: WorkflowDefinition | None,
    *,
    graph_problem: str | None,
    now: datetime,
) -> RenderableType:
    """Everything about one instance: summary, context, history, pending steps, graph."""
    parts: list[RenderableType] = [_summary(instance)]
    parts += [_heading("Context"), JSON.from_data(instance.context.to_dict(), indent=2)]
    parts += [_heading("History"), _history(instance)]
    pending = _pending(instance, definition, now)
    if pending is not None:
        parts += [_heading("Pending steps"), pending]
    parts.append(_heading("Graph"))
    if definition is not None:
        parts.append(_graph(instance, definition))
    else:
        parts.append(Text(graph_problem or "the graph is not available", style="yellow"))
    return Group(*parts)


def _heading(title: str) -> Text:
    return Text(f"\n{title}", style="bold underline")


def _summary(instance: Instance) -> Text:
    rows: list[tuple[str, str | Text]] = [
        ("instance", Text(instance.id, style="cyan")),
        ("workflow", f"{instance.workflow} (version {instance.workflow_version})"),
        ("status", status_text(instance.status)),
    ]
    if instance.error:
        rows.append(("error", Text(instance.error, style="red")))
    rows += [
        ("created", f"{timestamp(instance.created_at, millis=True)} UTC"),
        ("updated", f"{timestamp(instance.updated_at, millis=True)} UTC"),
        ("revision", str(instance.revision)),
    ]
    if instance.runtime_metadata:
        rows.append(("metadata", json.dumps(dict(instance.runtime_metadata), default=repr)))
    # Plain lines rather than a grid, so piped output has no trailing padding.
    text = Text()
    for index, (label, value) in enumerate(rows):
        if index:
            text.append("\n")
        text.append(f"{label:<10}", style="bold")
        text.append(value)
    return text


def _history(instance: Instance) -> RenderableType:
    if not instance.execution_history:
        return Text("no step has completed yet", style="dim")
    table = Table(box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False, show_edge=False)
    table.add_column("#", justify="right", style="dim")
    table.add_column("STEP", style="cyan", no_wrap=True)
    table.add_column("EVENT", no_wrap=True)
    table.add_column("ATTEMPT", justify="right")
    table.add_column("DURATION", justify="right", no_wrap=True)
    table.add_column("AT (UTC)", no_wrap=True)
    table.add_column("ELAPSED", justify="right", style="dim", no_wrap=True)
    for number, entry in enumerate(instance.execution_history, start=1):
        elapsed = (entry.timestamp - instance.created_at).total_seconds()
        table.add_row(
            str(number),
            entry.step,
            entry.event,
            str(entry.attempt),
            duration(entry.duration),
            timestamp(entry.timestamp, millis=True),
            f"+{elapsed:.3f} s",
        )
    return table


def _timer_text(timer: Timer, now: datetime) -> str:
    if timer.kind == "retry":
        attempt = timer.id.rpartition("#")[2]
        what = f"retry (attempt {attempt})" if attempt.isdigit() else "retry"
    else:
        what = f"emits {timer.event or 'timeout'}"
    return f"{what} at {timestamp(timer.due_at)} ({_relative(timer.due_at, now)})"


def _pending(
    instance: Instance, definition: WorkflowDefinition | None, now: datetime
) -> Table | None:
    steps = sorted(instance.active_steps | instance.waiting_steps)
    if not steps or instance.status.is_final:
        return None
    table = Table(box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False, show_edge=False)
    table.add_column("STEP", style="cyan", no_wrap=True)
    table.add_column("STATE", no_wrap=True)
    table.add_column("ATTEMPT", justify="right")
    table.add_column("AWAITS")
    table.add_column("TIMER (UTC)")
    for key in steps:
        waiting = key in instance.waiting_steps
        awaits = ""
        if waiting and definition is not None and key in definition.nodes:
            awaits = ", ".join(definition.nodes[key].events)
        timers = "\n".join(_timer_text(t, now) for t in instance.timers if t.step == key)
        table.add_row(
            key,
            Text("waiting", style="yellow") if waiting else Text("active", style="blue"),
            str(instance.attempts.get(key, 1)),
            awaits,
            timers or Text("-", style="dim"),
        )
    return table


def _graph(instance: Instance, definition: WorkflowDefinition) -> Text:
    text = Text(to_ascii(definition, marks=instance_marks(instance, definition)).rstrip("\n"))
    for mark, style in _MARK_STYLES.items():
        text.highlight_regex(re.escape(f"[{mark}]"), style)
    return text
