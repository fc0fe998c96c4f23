"""`hephaestus instances list|show|start|resume|cancel|retry`: inspect and steer stored instances.

`list` and `show` only read the storage. `start`, `resume`, `cancel` and `retry` are
clients: they write through a `Hephaestus` app in client mode (`runner=None`),
which validates against the stored instance with the engine and writes, and
never runs a step. The runners on the storage (`hephaestus worker`, or an
application's LocalRunner) pick the work up; `--wait` follows the instance
until they have it parked or finished.

Bad input is refused before anything is written (unknown instance, malformed
id, an event no step can take, data that is not a JSON object), so a rejected
command has no side effects at all.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.text import Text

from hephaestus.app import Hephaestus, make_query
from hephaestus.cli._loading import (
    CliError,
    describe_error,
    import_modules,
    instance_definition,
    load_targets,
)
from hephaestus.cli._options import storage_option
from hephaestus.cli._output import (
    instance_view,
    instances_table,
    make_console,
    progress,
    runs_table,
    status_text,
)
from hephaestus.cli._storage_url import redact, storage_from_url
from hephaestus.core import engine
from hephaestus.core.definition import WorkflowDefinition
from hephaestus.core.instance import Instance, Status
from hephaestus.core.keys import validate_id
from hephaestus.errors import InstanceNotFoundError
from hephaestus.storage.base import Query, Storage

__all__ = ["instances"]

_F = TypeVar("_F", bound=Callable[..., Any])
_T = TypeVar("_T")
_POLL = 0.05


def _wait_option(function: _F) -> _F:
    return click.option(
        "--wait",
        type=click.FloatRange(min=0),
        default=0.0,
        show_default=True,
        metavar="SECONDS",
        help="Then wait up to this long for a runner to run the instance until it parks or "
        "finishes, and show where it is.",
    )(function)


def _common_options(function: _F) -> _F:
    """`--storage URL` and `--import MODULE`, on every subcommand."""
    function = click.option(
        "--import",
        "imports",
        multiple=True,
        metavar="MODULE",
        help="Import this module first (repeatable), so the workflows it defines are known.",
    )(function)
    return storage_option(
        "Where instances live: sqlite:///rel.db, sqlite:////abs.db, memory://, postgresql://..."
    )(function)


@click.group(short_help="List, show, start, resume and cancel stored instances.")
def instances() -> None:
    """List, show, start, resume and cancel the workflow instances in a storage.

    Every subcommand takes --storage URL (default: the SQLite file
    hephaestus.db in the current directory, or $HEPHAESTUS_STORAGE) and
    --import MODULE, for modules to import before the workflows of stored
    instances are looked up. The current directory is on the import path.

    start, resume and cancel only write (client mode): the runners on the
    storage execute the steps. They never run a step in this process.
    """


# --- list ------------------------------------------------------------------------------------


@instances.command("list", short_help="List instances with their status and steps.")
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice([*(s.value for s in Status), "corrupt"], case_sensitive=False),
    help="Only instances with this status (repeatable). `corrupt` lists the rows set aside "
    "because they cannot be read, with the reason.",
)
@click.option(
    "--workflow",
    metavar="NAME",
    help="Only this workflow: its import path (an umbrella matches all its versions) "
    "or its class name.",
)
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    metavar="N",
    default=100,
    show_default=True,
    help="Show at most this many instances (0: all).",
)
@click.option(
    "--after",
    metavar="ID",
    help="Start after this instance: list those changed before it (the next page).",
)
@click.option(
    "--updated-since",
    "updated_since",
    metavar="TIME",
    help="Only instances changed at or after TIME: ISO 8601, e.g. 2026-05-01 or "
    "2026-05-01T08:00 (UTC unless it has an offset).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the instances as JSON.")
@_common_options
def list_instances(
    statuses: tuple[str, ...],
    workflow: str | None,
    limit: int,
    after: str | None,
    updated_since: str | None,
    as_json: bool,
    storage_url: str,
    imports: tuple[str, ...],
) -> None:
    """List stored instances, the last changed first, with their status and where they are."""
    import_modules(imports)
    since = None if updated_since is None else _since(updated_since)
    storage = storage_from_url(storage_url, must_exist=True)
    console = make_console()
    if "corrupt" in (status.lower() for status in statuses):
        if len(statuses) > 1:
            raise CliError("list corrupt rows on their own: --status corrupt with no other status")
        _list_quarantined(storage, limit, as_json)
        return
    with progress(make_console(stderr=True), f"Reading instances from {redact(storage_url)}"):
        found, more = _run(
            storage, lambda: _list(storage, statuses, workflow, limit, after, since, storage_url)
        )
    if as_json:
        click.echo(json.dumps([i.to_dict() for i in found], indent=2, ensure_ascii=False))
        return
    if not found:
        console.print(Text("No instances match.", style="dim"))
        return
    console.print(instances_table(found))
    count = f"{len(found)} instance" + ("" if len(found) == 1 else "s")
    if more:
        console.print(
            Text(f"{count} shown; more after --after {found[-1].id}", style="dim"), soft_wrap=True
        )
    else:
        console.print(Text(count, style="dim"))


def _since(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise CliError(
            f"--updated-since {text!r} is not a date and time; write ISO 8601, "
            "e.g. 2026-05-01 or 2026-05-01T08:00:00+02:00"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _list_quarantined(storage: Storage, limit: int, as_json: bool) -> None:
    """The rows quarantined because they cannot be read as instances, and why."""
    rows = _run(storage, lambda: storage.quarantined(limit or 1_000_000))
    if as_json:
        click.echo(json.dumps([{"id": i, "problem": p} for i, p in rows], indent=2))
        return
    console = make_console()
    if not rows:
        console.print(Text("No corrupt rows.", style="dim"))
        return
    for row_id, problem in rows:
        line = Text(row_id, style="cyan")
        line.append(f"  {problem}", style="red")
        console.print(line, soft_wrap=True)
    console.print(
        Text(f"{len(rows)} corrupt row(s), quarantined: no runner touches them", style="dim")
    )


async def _list(
    storage: Storage,
    statuses: Sequence[str],
    workflow: str | None,
    limit: int,
    after: str | None,
    since: datetime | None,
    storage_url: str,
) -> tuple[list[Instance], bool]:
    """Up to `limit` matching instances, the last changed first, and whether there are more."""
    status_in = tuple(s.lower() for s in statuses) or None
    cursor = None
    if after is not None:
        validate_id(after)
        last = await _get(storage, after, storage_url)
        cursor = (last.updated_at, last.id)

    def query(**filters: Any) -> Query:
        # The app's filter checks (statuses, workflow names), then the order and the cursor.
        base = make_query(status_in=status_in, **filters)
        return replace(base, order="updated", cursor=cursor, updated_since=since)

    if workflow is None or "." in workflow:
        found = await storage.query(query(workflow=workflow, limit=limit + 1 if limit else None))
        return (found[:limit], len(found) > limit) if limit else (found, False)
    # A class name: the stored import paths that end with it (found by index), one query.
    names = tuple(name for name in await storage.workflows() if name.rpartition(".")[2] == workflow)
    if not names:
        return [], False
    found = await storage.query(
        replace(query(limit=limit + 1 if limit else None), workflow_in=names)
    )
    return (found[:limit], len(found) > limit) if limit else (found, False)


# --- show ------------------------------------------------------------------------------------


@instances.command("show", short_help="Show one instance, its history and its graph.")
@click.argument("instance_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print the stored instance as JSON.")
@click.option(
    "--runs",
    "show_runs",
    is_flag=True,
    help="List the runs of this id instead: the current one, then the earlier finished ones.",
)
@_common_options
def show_instance(
    instance_id: str, as_json: bool, show_runs: bool, storage_url: str, imports: tuple[str, ...]
) -> None:
    """Show one instance: status, error, context, history, pending steps and timers, graph.

    With --runs, list the runs of the id (newest first): starting an id again
    after its instance finished starts a new run, and storages that keep
    earlier runs list them here.
    """
    validate_id(instance_id)
    import_modules(imports)
    storage = storage_from_url(storage_url, must_exist=True)
    if show_runs:
        runs = _run(storage, lambda: _runs(storage, instance_id, storage_url))
        if as_json:
            click.echo(json.dumps([run.to_dict() for run in runs], indent=2, ensure_ascii=False))
        else:
            make_console().print(runs_table(runs))
        return
    instance = _run(storage, lambda: _get(storage, instance_id, storage_url))
    if as_json:
        click.echo(json.dumps(instance.to_dict(), indent=2, ensure_ascii=False))
        return
    definition: WorkflowDefinition | None = None
    problem: str | None = None
    try:
        definition = instance_definition(instance)
    except CliError as exc:
        problem = describe_error(exc)
    view = instance_view(instance, definition, graph_problem=problem, now=datetime.now(UTC))
    make_console().print(view)


# --- start, resume and cancel (client mode) --------------------------------------------------


@instances.command("start", short_help="Start an instance of a workflow (a runner runs it).")
@click.argument("workflow_ref", metavar="MODULE:WORKFLOW")
@click.argument("value")
@click.option(
    "--context",
    "context_json",
    default="{}",
    show_default=True,
    metavar="JSON",
    help="The instance's initial context, a JSON object.",
)
@click.option("--version", type=int, default=None, help="Start this version of an umbrella.")
@_wait_option
@_common_options
def start_instance(
    workflow_ref: str,
    value: str,
    context_json: str,
    version: int | None,
    wait: float,
    storage_url: str,
    imports: tuple[str, ...],
) -> None:
    """Start WORKFLOW for business value VALUE; prints the new instance's id.

    The instance is written to the storage and started by a runner on it
    (`hephaestus worker`, or an application's LocalRunner); this command
    never runs a step itself.
    """
    import_modules(imports)
    if ":" not in workflow_ref:
        raise CliError(
            f"{workflow_ref!r} names no workflow class: write MODULE:Class, "
            "e.g. myapp.flows:OrderFlow"
        )
    (target,) = load_targets(workflow_ref)
    context = _json_object(context_json, "--context")
    console = make_console()

    async def start(app: Hephaestus) -> Instance:
        instance_id = await app.start_business(target.workflow, value, context, version=version)
        return await app.get(instance_id)

    instance = _client(storage_url, start)
    line = Text("Started ")
    line.append(instance.id, style="cyan")
    console.print(line, soft_wrap=True)
    _settle_and_report(console, storage_url, instance.id, wait)


@instances.command("resume", short_help="Deliver an event (with data) to an instance.")
@click.argument("instance_id", metavar="ID")
@click.argument("event")
@click.option("--step", metavar="KEY", help="The waiting step to resume, if several await EVENT.")
@click.option(
    "--data",
    "data_json",
    default=None,
    metavar="JSON",
    help="JSON object sent with the event; it becomes the resumed step's output.",
)
@_wait_option
@_common_options
def resume_instance(
    instance_id: str,
    event: str,
    step: str | None,
    data_json: str | None,
    wait: float,
    storage_url: str,
    imports: tuple[str, ...],
) -> None:
    """Deliver EVENT to the instance; the runner that owns it applies it.

    The event is validated against the stored instance and durably recorded
    in its inbox before the command returns; it never runs a step. An event
    whose step has not parked yet is held until it does.
    """
    validate_id(instance_id)
    import_modules(imports)
    data = None if data_json is None else _json_object(data_json, "--data")
    checked = storage_from_url(storage_url, must_exist=True)
    instance = _run(checked, lambda: _get(checked, instance_id, storage_url))
    engine.check_active(instance, event)  # a finished instance needs no import to refuse
    instance_definition(instance)  # one line naming --import when its workflow is unknown
    console = make_console()

    async def resume(app: Hephaestus) -> None:
        await app.resume(instance_id, event, step=step, data=data)

    _client(storage_url, resume)
    line = Text(f"Recorded {event} for ")
    line.append(instance_id, style="cyan")
    console.print(line, soft_wrap=True)
    _settle_and_report(console, storage_url, instance_id, wait)


@instances.command("cancel", short_help="Cancel a running or waiting instance.")
@click.argument("instance_id", metavar="ID")
@_wait_option
@_common_options
def cancel_instance(
    instance_id: str, wait: float, storage_url: str, imports: tuple[str, ...]
) -> None:
    """Cancel a running or waiting instance: its timers are dropped and its steps stopped.

    An instance that only waits is cancelled at once. One that runs steps is
    sent a cancel request, which the runner that owns it applies by stopping
    those steps; this command never runs or stops a step itself.
    """
    validate_id(instance_id)
    import_modules(imports)

    async def cancel(app: Hephaestus) -> tuple[Instance, Instance]:
        before = await app.get(instance_id)
        await app.cancel(instance_id)
        return before, await app.get(instance_id)

    before, after = _client(storage_url, cancel)
    was = ", ".join(sorted(before.active_steps | before.waiting_steps)) or "no step"
    console = make_console()
    if after.status is Status.CANCELLED:
        message = Text("Cancelled ", style="bold")
    else:
        message = Text("Cancel requested for ", style="bold")
    message.append(instance_id, style="cyan")
    message.append(f" (it was {before.status.value} at {was})")
    console.print(message, soft_wrap=True)
    if after.status is not Status.CANCELLED:
        _settle_and_report(console, storage_url, instance_id, wait)


@instances.command("retry", short_help="Run a failed instance again from its failed steps.")
@click.argument("instance_id", metavar="ID")
@_wait_option
@_common_options
def retry_instance(
    instance_id: str, wait: float, storage_url: str, imports: tuple[str, ...]
) -> None:
    """Run a failed instance again from the step(s) that failed.

    It goes back to running with its context and history kept; those steps
    start again at attempt 1, and the retry is an entry of its history. A
    runner on the storage runs them; this command never runs a step itself.
    """
    validate_id(instance_id)
    import_modules(imports)
    checked = storage_from_url(storage_url, must_exist=True)
    stored = _run(checked, lambda: _get(checked, instance_id, storage_url))
    engine.check_failed(stored)  # a wrong status needs no import to refuse
    instance_definition(stored)  # one line naming --import when its workflow is unknown

    async def retry(app: Hephaestus) -> Instance:
        await app.retry(instance_id)
        return await app.get(instance_id)

    after = _client(storage_url, retry)
    console = make_console()
    line = Text("Retrying ", style="bold")
    line.append(instance_id, style="cyan")
    line.append(f" from {', '.join(sorted(after.active_steps))}")
    console.print(line, soft_wrap=True)
    _settle_and_report(console, storage_url, instance_id, wait)


async def _runs(storage: Storage, instance_id: str, storage_url: str) -> list[Instance]:
    current = await _get(storage, instance_id, storage_url)
    return [current, *await storage.runs(instance_id)]


async def _get(storage: Storage, instance_id: str, storage_url: str) -> Instance:
    try:
        return await storage.get(instance_id)
    except InstanceNotFoundError:
        raise CliError(
            f"no instance {instance_id} in {redact(storage_url)}; "
            "see `hephaestus instances list` for the ids it holds"
        ) from None


def _client(storage_url: str, work: Callable[[Hephaestus], Awaitable[_T]]) -> _T:
    """Run `work` with a client-mode app on the storage: it writes, it never runs a step."""

    async def go() -> _T:
        async with Hephaestus(
            storage=storage_from_url(storage_url, must_exist=True), runner=None
        ) as app:
            return await work(app)

    try:
        return asyncio.run(go())
    except InstanceNotFoundError as exc:
        raise CliError(
            f"{exc}; see `hephaestus instances list --storage {redact(storage_url)}`"
        ) from None


def _settle_and_report(console: Console, storage_url: str, instance_id: str, wait: float) -> None:
    """With --wait: follow the instance until a runner has it parked or finished."""

    async def follow(app: Hephaestus) -> tuple[Instance, bool]:
        live = [r for r in await app.runners() if r.is_live(time.time())]
        if wait <= 0:
            return await app.get(instance_id), bool(live)
        with progress(console, f"Waiting for a runner to run {instance_id}"):
            return await _until_settled(app, instance_id, wait), bool(live)

    instance, runner_live = _client(storage_url, follow)
    if not runner_live:
        console.print(
            Text(
                "note: no runner is running on this storage; it applies this when one starts "
                "(`hephaestus worker`, or an application with a LocalRunner)",
                style="yellow",
            ),
            soft_wrap=True,
        )
    if wait > 0:
        _report_final(console, instance, wait)


def _json_object(text: str, option: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"{option} is not valid JSON ({exc}); pass an object like '{{}}'") from None
    if not isinstance(value, dict):
        raise CliError(f"{option} must be a JSON object like '{{\"key\": 1}}', got {text}")
    return value


async def _until_settled(app: Hephaestus, instance_id: str, wait: float) -> Instance:
    """The instance once it runs nothing and its inbox is applied, or as it is after `wait` s."""
    deadline = time.monotonic() + wait
    while True:
        instance = await app.get(instance_id)
        settled = instance.status is not Status.RUNNING and not instance.has_new_commands
        if settled or time.monotonic() >= deadline:
            return instance
        await asyncio.sleep(_POLL)


def _report_final(console: Console, instance: Instance, wait: float) -> None:
    line = Text()
    line.append(instance.id, style="cyan")
    line.append(" is now ")
    line.append_text(status_text(instance.status))
    if instance.status is Status.WAITING:
        line.append(f" (at {', '.join(sorted(instance.waiting_steps))})")
    elif instance.status is Status.FAILED and instance.error:
        line.append(f": {instance.error}", style="red")
    elif instance.status is Status.RUNNING:
        line.append(
            f" after {wait:g} s (at {', '.join(sorted(instance.active_steps))}); its steps "
            "continue when a runner next opens this storage"
        )
    console.print(line, soft_wrap=True)


# --- helpers ---------------------------------------------------------------------------------


def _run(storage: Storage, read: Callable[[], Awaitable[_T]]) -> _T:
    """Open `storage`, await `read()`, close it; all in one event loop."""

    async def go() -> _T:
        await storage.open()
        try:
            return await read()
        finally:
            await storage.close()

    return asyncio.run(go())
