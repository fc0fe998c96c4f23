"""The commands of the `hephaestus` CLI, on click.

Every error a user can cause (a module that does not import, a class that
is not a workflow, an unknown instance, a malformed URL or id, an event no
step awaits) ends the command with one line `Error: ...` on stderr and exit
status 1, never a traceback; `--traceback` shows it anyway.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.text import Text

from hephaestus.cli._db import db
from hephaestus.cli._instances import instances
from hephaestus.cli._loading import CliError, Target, describe_error, load_targets
from hephaestus.cli._output import make_console, progress
from hephaestus.cli._runners import runners
from hephaestus.cli._ui import ui
from hephaestus.cli._worker import worker
from hephaestus.core.definition import WorkflowDefinition, resolve_version, workflow_name
from hephaestus.core.render import FORMATS, render

__all__ = ["cli"]


class _Cli(click.Group):
    """The command group; turns any error of a command into one `Error: ...` line."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            if ctx.params.get("show_traceback"):
                raise
            raise click.ClickException(describe_error(exc)) from exc


@click.group(cls=_Cli)
@click.version_option(package_name="hephaestus-workflows")
@click.option(
    "--traceback",
    "show_traceback",
    is_flag=True,
    help="On an error, show the full traceback instead of one line.",
)
def cli(show_traceback: bool) -> None:
    """Hephaestus: validated, durable workflows."""


cli.add_command(instances)
cli.add_command(db)
cli.add_command(worker)
cli.add_command(runners)
cli.add_command(ui)


# --- validate --------------------------------------------------------------------------------


@cli.command(short_help="Import workflows, which validates them, and report.")
@click.argument("targets", nargs=-1, required=True, metavar="MODULE[:Class]...")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print one JSON object per target instead: its workflows, or its error.",
)
def validate(targets: tuple[str, ...], as_json: bool) -> None:
    """Import workflow classes, which validates them, and report each one.

    MODULE:Class names one workflow; MODULE alone checks every workflow it
    defines. An umbrella workflow is reported with each of its versions. Exits
    with status 1 if any target fails to import or is not a workflow.

    With --json the report is a JSON list, one entry per target:
    `{"target", "ok", "workflows": [...]}` or `{"target", "ok": false,
    "error", "error_type"}`; a workflow is `{"name", "version", "steps",
    "transitions", "shape"}` (an umbrella also lists its `versions`).
    """
    out = make_console()
    failed = 0
    report: list[dict[str, Any]] = []
    for spec in targets:
        try:
            with progress(make_console(stderr=True), f"Importing {spec}"):
                found = load_targets(spec)
        except Exception as exc:
            failed += 1
            if as_json:
                report.append(
                    {
                        "target": spec,
                        "ok": False,
                        "error": describe_error(exc),
                        "error_type": type(exc.__cause__ or exc).__name__,
                    }
                )
            else:
                click.echo(f"Error: {describe_error(exc)}", err=True)
            continue
        if as_json:
            workflows = [_describe_workflow(target) for target in found]
            report.append({"target": spec, "ok": True, "workflows": workflows})
        else:
            for target in found:
                _print_valid(out, target)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    if failed:
        raise click.exceptions.Exit(1)


def _describe_definition(definition: WorkflowDefinition) -> dict[str, Any]:
    return {
        "name": definition.name,
        "version": definition.version,
        "steps": sorted(definition.nodes),
        "transitions": len(definition.edges) + len(definition.routes),
        "shape": _shape(definition),
    }


def _describe_workflow(target: Target) -> dict[str, Any]:
    workflow = target.workflow
    if workflow.is_umbrella():
        return {
            "spec": target.spec,
            "name": workflow_name(workflow),
            "umbrella": True,
            "current": workflow.current,
            "versions": [
                _describe_definition(workflow.versions[n].definition())
                for n in sorted(workflow.versions)
            ],
        }
    return {"spec": target.spec, "umbrella": False, **_describe_definition(workflow.definition())}


def _print_valid(out: Console, target: Target) -> None:
    workflow = target.workflow
    line = Text("OK", style="bold green")
    line.append(f"  {target.spec}  ")
    if workflow.is_umbrella():
        numbers = sorted(workflow.versions)
        line.append(
            f"umbrella: versions {', '.join(map(str, numbers))}, current {workflow.current}",
            style="dim",
        )
        out.print(line, soft_wrap=True)
        for number in numbers:
            version = workflow.versions[number]
            out.print(
                f"    v{number}  {workflow_name(version)}  {_shape(version.definition())}",
                soft_wrap=True,
            )
        return
    definition = workflow.definition()
    line.append(f"v{definition.version}  {_shape(definition)}", style="dim")
    out.print(line, soft_wrap=True)


def _shape(definition: WorkflowDefinition) -> str:
    """`6 steps, 7 transitions (1 fan-out, 1 join)`."""
    steps = len(definition.nodes)
    transitions = len(definition.edges) + len(definition.routes)
    text = f"{steps} step{'s' * (steps != 1)}, {transitions} transition{'s' * (transitions != 1)}"
    fan_outs = sum(1 for targets in definition.edges.values() if len(targets) > 1)
    joins = sum(1 for key in definition.joins if not definition.nodes[key].step.terminal)
    extras = [
        f"{count} {name}{'s' * (count != 1)}"
        for count, name in (
            (fan_outs, "fan-out"),
            (joins, "join"),
            (len(definition.routes), "dynamic route"),
        )
        if count
    ]
    return f"{text} ({', '.join(extras)})" if extras else text


# --- graph -----------------------------------------------------------------------------------


@cli.command(short_help="Draw a workflow as Mermaid, DOT or text.")
@click.argument("target", metavar="MODULE:Class")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="ascii",
    show_default=True,
    help="Mermaid flowchart, Graphviz DOT, or text for the terminal.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the drawing to this file instead of printing it.",
)
@click.option(
    "--version",
    "version",
    type=click.IntRange(min=1),
    metavar="N",
    help="For an umbrella workflow: draw this version (default: the one new instances get).",
)
def graph(target: str, fmt: str, output: Path | None, version: int | None) -> None:
    """Draw a workflow's graph: its steps, the events between them, joins and routes."""
    found = load_targets(target)
    if len(found) != 1:
        names = ", ".join(t.spec for t in found)
        raise CliError(f"{target} defines several workflows ({names}); name one of them")
    workflow = resolve_version(found[0].workflow, version)
    definition = workflow.definition()
    drawing = render(workflow, fmt)
    if output is None:
        click.echo(drawing, nl=False)
        return
    output.write_text(drawing, encoding="utf-8")
    short = definition.name.rpartition(".")[2]
    make_console().print(
        f"Wrote the {fmt} graph of {short} v{definition.version} to {output}", soft_wrap=True
    )


# --- demo ------------------------------------------------------------------------------------


@cli.command()
@click.option(
    "--db",
    default="hephaestus-demo.db",
    show_default=True,
    help="SQLite file the demo stores its instances in.",
)
def demo(db: str) -> None:
    """Run the demo order workflow on SQLite and print each step."""
    from hephaestus.demo import main

    status = main(db)
    url = f"sqlite:///{db}"
    make_console().print(f"\nInspect it: hephaestus instances list --storage {url}", soft_wrap=True)
    raise SystemExit(status)
