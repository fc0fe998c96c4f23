"""`hephaestus instances list|show|resume|cancel`: inspect and steer stored instances.

`list` and `show` only read the storage. `resume` and `cancel` change an
instance the same way the application does, through a `Hephaestus` app with a
`LocalRunner` opened on the storage: the event is durably recorded and the
instance advanced by the engine, never patched by hand. The command is a
short-lived runner: like any runner it recovers the storage's `running`
instances when it opens, runs the resumed instance until it parks or finishes
(or `--wait` seconds pass), then closes; work it leaves unfinished continues
when a runner next opens the storage.

Bad input is checked before the app is opened (unknown instance, malformed
id, an event no waiting step declares, a workflow that cannot be imported),
so a rejected command has no side effects at all.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.text import Text

from hephaestus import telemetry
from hephaestus.app import Hephaestus, make_query
from hephaestus.cli._loading import (
    CliError,
    describe_error,
    import_modules,
    instance_definition,
    one_line,
)
from hephaestus.cli._output import (
    duration,
    instance_view,
    instances_table,
    make_console,
    progress,
    status_text,
)
from hephaestus.cli._storage_url import DEFAULT_URL, ENV_VAR, redact, storage_from_url
from hephaestus.core import engine
from hephaestus.core.definition import WorkflowDefinition
from hephaestus.core.instance import Instance, Status
from hephaestus.core.keys import validate_id
from hephaestus.errors import InstanceNotFoundError, InstanceNotWaitingError
from hephaestus.runners.local import LocalRunner
from hephaestus.storage.base import Query, Storage

__all__ = ["instances"]

_F = TypeVar("_F", bound=Callable[..., Any])
_T = TypeVar("_T")
_PAGE = 500
_POLL = 0.05


def _common_options(function: _F) -> _F:
    """`--storage URL` and `--import MODULE`, on every subcommand."""
    function = click.option(
        "--import",
        "imports",
        multiple=True,
        metavar="MODULE",
        help="Import this module first (repeatable), so the workflows it defines are known.",
    )(function)
    return click.option(
        "--storage",
        "storage_url",
        envvar=ENV_VAR,
        default=DEFAULT_URL,
        show_default=True,
        show_envvar=True,
        metavar="URL",
        help="Where instances live: sqlite:///rel.db, sqlite:////abs.db, memory://, "
        "postgresql://...",
    )(function)


@click.group(short_help="List, show, resume and cancel stored instances.")
def instances() -> None:
    """List, show, resume and cancel the workflow instances in a storage.

    Every subcommand takes --storage URL (default: the SQLite file
    hephaestus.db in the current directory, or $HEPHAESTUS_STORAGE) and
    --import MODULE, for modules to import before the workflows of stored
    instances are looked up. The current directory is on the import path.

    resume and cancel act as a short-lived runner on the storage: like any
    runner, they recover its running instances while they run, and the
    instance they change runs until it parks or finishes (or --wait passes).
    """


# --- list ------------------------------------------------------------------------------------


@instances.command("list", short_help="List instances with their status and steps.")
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice([s.value for s in Status], case_sensitive=False),
    help="Only instances with this status (repeatable).",
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
@click.option("--after", metavar="ID", help="Start after this id (instances are sorted by id).")
@click.option("--json", "as_json", is_flag=True, help="Print the instances as JSON.")
@_common_options
def list_instances(
    statuses: tuple[str, ...],
    workflow: str | None,
    limit: int,
    after: str | None,
    as_json: bool,
    storage_url: str,
    imports: tuple[str, ...],
) -> None:
    """List stored instances in id order, with their status and where they are."""
    import_modules(imports)
    storage = storage_from_url(storage_url, must_exist=True)
    console = make_console()
    with progress(make_console(stderr=True), f"Reading instances from {redact(storage_url)}"):
        found, more = _run(storage, lambda: _list(storage, statuses, workflow, limit, after))
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


async def _list(
    storage: Storage,
    statuses: Sequence[str],
    workflow: str | None,
    limit: int,
    after: str | None,
) -> tuple[list[Instance], bool]:
    """Up to `limit` matching instances, and whether there are more."""
    status_in = tuple(s.lower() for s in statuses) or None
    if workflow is None or "." in workflow:
        query = make_query(
            status_in=status_in, workflow=workflow, after=after, limit=limit + 1 if limit else None
        )
        found = await storage.query(query)
        return (found[:limit], len(found) > limit) if limit else (found, False)
    # A class name: compare it with the last part of each stored import path.
    matches: list[Instance] = []
    cursor = after
    while True:
        page = await storage.query(make_query(status_in=status_in, after=cursor, limit=_PAGE))
        matches += [i for i in page if i.workflow.rpartition(".")[2] == workflow]
        if (limit and len(matches) > limit) or len(page) < _PAGE:
            break
        cursor = page[-1].id
    return (matches[:limit], len(matches) > limit) if limit else (matches, False)


# --- show ------------------------------------------------------------------------------------


@instances.command("show", short_help="Show one instance, its history and its graph.")
@click.argument("instance_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print the stored instance as JSON.")
@_common_options
def show_instance(
    instance_id: str, as_json: bool, storage_url: str, imports: tuple[str, ...]
) -> None:
    """Show one instance: status, error, context, history, pending steps and timers, graph."""
    validate_id(instance_id)
    import_modules(imports)
    storage = storage_from_url(storage_url, must_exist=True)
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


# --- resume and cancel ------------------------------------------------------------------------


@instances.command("resume", short_help="Deliver an event to a waiting instance.")
@click.argument("instance_id", metavar="ID")
@click.argument("event")
@click.option("--step", metavar="KEY", help="The waiting step to resume, if several await EVENT.")
@click.option(
    "--wait",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    metavar="SECONDS",
    help="Run the instance for up to this long, until it parks or finishes.",
)
@_common_options
def resume_instance(
    instance_id: str,
    event: str,
    step: str | None,
    wait: float,
    storage_url: str,
    imports: tuple[str, ...],
) -> None:
    """Deliver EVENT to the instance's waiting step, then run it until it parks or finishes.

    The event is durably recorded before anything else happens. This command
    acts as a short-lived runner on the storage (see hephaestus instances
    --help); steps it leaves unfinished after --wait continue when a runner
    next opens the storage.
    """
    validate_id(instance_id)
    import_modules(imports)
    checked = storage_from_url(storage_url, must_exist=True)
    instance, others = _run(checked, lambda: _precheck(checked, instance_id, storage_url))
    if instance.status.is_final or not instance.waiting_steps:
        # Said before the workflow is loaded: a finished instance needs no import to refuse.
        state = instance.status.value if instance.status.is_final else "not waiting"
        raise InstanceNotWaitingError(
            f"instance {instance_id} is {state}; only an instance with a waiting step accepts "
            f"events, so {event!r} was not delivered"
        )
    definition = instance_definition(instance)
    target = engine.resume_target(definition, instance, event, step)

    console = make_console()
    _note_recovery(others)
    with _runner_logs():
        final = asyncio.run(_resume(storage_url, instance_id, event, target, wait, console))
    _report_final(console, final, wait)


@instances.command("cancel", short_help="Cancel a running or waiting instance.")
@click.argument("instance_id", metavar="ID")
@_common_options
def cancel_instance(instance_id: str, storage_url: str, imports: tuple[str, ...]) -> None:
    """Cancel a running or waiting instance: its timers are dropped and its steps stopped."""
    validate_id(instance_id)
    import_modules(imports)
    checked = storage_from_url(storage_url, must_exist=True)
    instance, others = _run(checked, lambda: _precheck(checked, instance_id, storage_url))
    engine.cancel(instance, now=datetime.now(UTC))  # raises for a finished instance
    instance_definition(instance)  # the runner needs it to apply the cancel

    _note_recovery(others)
    with _runner_logs():
        asyncio.run(_cancel(storage_url, instance_id))
    was = ", ".join(sorted(instance.active_steps | instance.waiting_steps)) or "no step"
    message = Text("Cancelled ", style="bold")
    message.append(instance_id, style="cyan")
    message.append(f" (it was {instance.status.value} at {was})")
    make_console().print(message, soft_wrap=True)


async def _get(storage: Storage, instance_id: str, storage_url: str) -> Instance:
    try:
        return await storage.get(instance_id)
    except InstanceNotFoundError:
        raise CliError(
            f"no instance {instance_id} in {redact(storage_url)}; "
            "see `hephaestus instances list` for the ids it holds"
        ) from None


async def _precheck(storage: Storage, instance_id: str, storage_url: str) -> tuple[Instance, int]:
    """The instance, and how many *other* instances are running (the runner will recover them)."""
    instance = await _get(storage, instance_id, storage_url)
    running = await storage.query(Query(status=Status.RUNNING, limit=1001))
    return instance, len([i for i in running if i.id != instance_id])


def _note_recovery(others: int) -> None:
    if others:
        more = "more than 1000" if others > 1000 else str(others)
        make_console(stderr=True).print(
            Text(
                f"note: as a runner on this storage, this command also recovers its {more} "
                "other running instance(s) while it runs",
                style="dim",
            ),
            soft_wrap=True,
        )


async def _resume(
    storage_url: str, instance_id: str, event: str, step: str, wait: float, console: Console
) -> Instance:
    app = Hephaestus(storage=storage_from_url(storage_url), runner=LocalRunner())
    with _step_printer(console, instance_id):
        async with app:
            header = Text(f"Delivering {event} to step {step} of ")
            header.append(instance_id, style="cyan")
            console.print(header, soft_wrap=True)
            await app.resume(instance_id, event, step=step)
            with progress(console, f"Running {instance_id}"):
                return await _until_settled(app, instance_id, wait)


async def _cancel(storage_url: str, instance_id: str) -> None:
    app = Hephaestus(storage=storage_from_url(storage_url), runner=LocalRunner())
    async with app:
        await app.cancel(instance_id)


async def _until_settled(app: Hephaestus, instance_id: str, wait: float) -> Instance:
    """The instance once it is no longer running, or as it is after `wait` seconds."""
    deadline = time.monotonic() + wait
    while True:
        instance = await app.get(instance_id)
        if instance.status is not Status.RUNNING or time.monotonic() >= deadline:
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


@contextmanager
def _step_printer(console: Console, instance_id: str) -> Iterator[None]:
    """Print the steps of `instance_id` as the runner reports them."""

    def handle(
        event: str, measurements: Mapping[str, Any], metadata: Mapping[str, Any], config: Any
    ) -> None:
        if metadata.get("instance_id") != instance_id:
            return
        step = metadata.get("step")
        line: Text | None = None
        if event == telemetry.STEP_START:
            line = Text(f"  ▶ {step} (attempt {metadata.get('attempt')})")
        elif event == telemetry.STEP_STOP:
            took = duration(float(measurements.get("duration", 0.0)))
            line = Text(f"  ✓ {step} -> {metadata.get('event')}  ({took})", style="green")
        elif event == telemetry.STEP_ASYNC:
            line = Text(f"  ⏸ {step} is waiting", style="yellow")
        elif event == telemetry.STEP_RESUME:
            line = Text(f"  ⏵ {step} resumed by {metadata.get('resume_event')}")
        elif event == telemetry.STEP_EXCEPTION:
            retry = " (will retry)" if metadata.get("will_retry") else ""
            line = Text(f"  ✗ {step} failed: {metadata.get('reason')}{retry}", style="red")
        if line is not None:
            console.print(line, soft_wrap=True)

    handler_id = f"hephaestus-cli-{secrets.token_hex(4)}"
    telemetry.attach(
        handler_id,
        [
            telemetry.STEP_START,
            telemetry.STEP_STOP,
            telemetry.STEP_ASYNC,
            telemetry.STEP_RESUME,
            telemetry.STEP_EXCEPTION,
        ],
        handle,
    )
    try:
        yield
    finally:
        telemetry.detach(handler_id)


# --- helpers ---------------------------------------------------------------------------------


class _OnceHandler(logging.Handler):
    """Shows each distinct log message of the runner once, as one line on stderr."""

    def __init__(self, console: Console) -> None:
        super().__init__(logging.WARNING)
        self.console = console
        self.seen: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = one_line(record.getMessage())
        except Exception:
            self.handleError(record)
            return
        if message in self.seen:
            return
        self.seen.add(message)
        line = Text(f"{record.levelname.lower()}: {message}", style="yellow")
        self.console.print(line, soft_wrap=True)


@contextmanager
def _runner_logs() -> Iterator[None]:
    """While a short-lived runner works, show its warnings once each, without tracebacks."""
    logger = logging.getLogger("hephaestus")
    handler = _OnceHandler(make_console(stderr=True))
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


def _run(storage: Storage, read: Callable[[], Awaitable[_T]]) -> _T:
    """Open `storage`, await `read()`, close it; all in one event loop."""

    async def go() -> _T:
        await storage.open()
        try:
            return await read()
        finally:
            await storage.close()

    return asyncio.run(go())
