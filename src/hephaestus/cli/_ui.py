"""`hephaestus ui`: serve the operator dashboard (needs the `ui` extra).

The dashboard is a client of the storage: it reads, and writes resume,
cancel and retry for the runners to carry out; it never runs a step. It binds
to 127.0.0.1 unless told otherwise, and is read-only unless started with a
token (`--token` or `HEPHAESTUS_UI_TOKEN`) that a browser must present.
"""

from __future__ import annotations

import importlib

import click

from hephaestus.cli._loading import CliError, ensure_cwd_on_path
from hephaestus.cli._options import configure_logging, log_level_option, storage_option
from hephaestus.cli._storage_url import redact, storage_from_url

__all__ = ["ui"]

#: Where the token can come from instead of `--token` (which shows in the process list).
TOKEN_ENV = "HEPHAESTUS_UI_TOKEN"


@click.command(short_help="Serve the operator dashboard (instances, graphs, runners).")
@storage_option("The storage to show: sqlite:///rel.db, sqlite:////abs.db, postgresql://...")
@click.option(
    "--app",
    "app_spec",
    metavar="MODULE[:APP]",
    help="Import this module first, so that its workflows are drawn from their definitions "
    "(without it, each graph is drawn from the instance's history).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True)
@click.option(
    "--token",
    envvar=TOKEN_ENV,
    show_envvar=True,
    default=None,
    help="Enable the actions (resume, cancel, retry) for browsers that present this token; "
    "without it the dashboard is read-only.",
)
@log_level_option
def ui(
    storage_url: str,
    app_spec: str | None,
    host: str,
    port: int,
    token: str | None,
    log_level: str,
) -> None:
    """Serve the dashboard on http://HOST:PORT until interrupted."""
    try:
        import uvicorn

        from hephaestus.ui import create_app
    except ImportError as exc:
        raise CliError(
            f"the dashboard needs its extra: pip install 'hephaestus-workflows[ui]' ({exc})"
        ) from None
    configure_logging(log_level)
    if app_spec:
        ensure_cwd_on_path()
        module = app_spec.partition(":")[0]
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise CliError(f"--app {app_spec}: cannot import {module} ({exc})") from None
    storage = storage_from_url(storage_url, must_exist=True)
    web = create_app(storage, token=token)
    mode = "actions need the token" if token else "read-only (no token)"
    click.echo(f"dashboard for {redact(storage_url)} on http://{host}:{port} ({mode})", err=True)
    uvicorn.run(web, host=host, port=port, log_level=log_level.lower(), access_log=False)
