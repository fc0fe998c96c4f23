"""`hephaestus worker --app MODULE:app`: a runner process for the app's storage.

The app object is a `Hephaestus`; importing its module also imports the
workflows it runs. With a `ProcrastinateRunner`, the worker works the job
queue. With a `LocalRunner`, the worker is one more runner on the storage: it
registers, claims instances that need a runner, and shares the work with
every other runner there (web processes in client mode only write). Start as
many as the load needs; SIGINT or SIGTERM stops one (a LocalRunner hands its
instances over as it stops).
"""

from __future__ import annotations

import asyncio
import importlib
import signal

import click

from hephaestus.app import Hephaestus
from hephaestus.cli._loading import CliError, ensure_cwd_on_path
from hephaestus.cli._options import configure_logging, log_level_option

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
    from hephaestus.runners.local import LocalRunner

    if app.is_client:
        raise CliError(
            f"{spec} is in client mode (runner=None): it never runs steps; give the worker an "
            "app with a LocalRunner or a ProcrastinateRunner"
        )
    if not isinstance(app.runner, LocalRunner):
        from hephaestus.runners.procrastinate import ProcrastinateRunner

        if not isinstance(app.runner, ProcrastinateRunner):
            raise CliError(
                f"{spec} runs on {type(app.runner).__name__}; `hephaestus worker` serves apps "
                "whose runner is a LocalRunner or a ProcrastinateRunner"
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
@log_level_option
def worker(app_spec: str, concurrency: int | None, log_level: str) -> None:
    """Run the app's runner until SIGINT/SIGTERM."""
    configure_logging(log_level)
    app = load_app(app_spec)

    async def serve() -> None:
        from hephaestus.runners.local import LocalRunner

        async with app:
            runner = app.runner
            if isinstance(runner, LocalRunner):
                click.echo(f"runner {runner.id} ready", err=True)
                await _until_stopped()
                return
            from hephaestus.runners.procrastinate import ProcrastinateRunner

            assert isinstance(runner, ProcrastinateRunner)
            click.echo(f"worker ready on queue {runner.queue!r}", err=True)
            await runner.run_worker(concurrency=concurrency)

    asyncio.run(serve())


async def _until_stopped() -> None:
    """Return on SIGINT or SIGTERM, so that the app closes and hands its instances over."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
