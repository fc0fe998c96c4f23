"""`hephaestus worker --app MODULE:app`: work the distributed runner's job queue.

The app object is a `Hephaestus` whose runner is a `ProcrastinateRunner`;
importing its module also imports the workflows it runs. Start as many
workers, on as many machines, as the load needs; SIGINT or SIGTERM stops one
after its running jobs finish.
"""

from __future__ import annotations

import asyncio
import importlib

import click

from hephaestus.app import Hephaestus
from hephaestus.cli._loading import CliError, ensure_cwd_on_path

__all__ = ["worker"]


def load_app(spec: str) -> Hephaestus:
    """The `Hephaestus` object `spec` (`module:attribute`) names."""
    module_name, colon, attribute = spec.partition(":")
    if not module_name or not colon or not attribute:
        raise CliError(f"--app {spec!r} must be MODULE:ATTRIBUTE, e.g. myapp.workflows:app")
    ensure_cwd_on_path()
    module = importlib.import_module(module_name)
    app = getattr(module, attribute, None)
    if not isinstance(app, Hephaestus):
        raise CliError(f"{spec} is {app!r}, not a Hephaestus app")
    from hephaestus.runners.procrastinate import ProcrastinateRunner

    if not isinstance(app.runner, ProcrastinateRunner):
        raise CliError(
            f"{spec} runs on {type(app.runner).__name__}; `hephaestus worker` serves apps whose "
            "runner is a ProcrastinateRunner (a LocalRunner runs inside your own process)"
        )
    return app


@click.command(short_help="Run a worker of the distributed runner.")
@click.option("--app", "app_spec", required=True, metavar="MODULE:APP", help="The Hephaestus app.")
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=None,
    help="Jobs this worker runs at once (default: the runner's `concurrency`).",
)
def worker(app_spec: str, concurrency: int | None) -> None:
    """Run jobs of the app's ProcrastinateRunner until SIGINT/SIGTERM."""
    app = load_app(app_spec)

    async def serve() -> None:
        from hephaestus.runners.procrastinate import ProcrastinateRunner

        async with app:
            runner = app.runner
            assert isinstance(runner, ProcrastinateRunner)
            click.echo(f"worker ready on queue {runner.queue!r}", err=True)
            await runner.run_worker(concurrency=concurrency)

    asyncio.run(serve())
