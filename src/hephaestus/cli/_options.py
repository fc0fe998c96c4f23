"""Options several commands share: where the storage is, how much to log."""

from __future__ import annotations

import logging
from collections.abc import Callable

import click
from click.decorators import FC

from hephaestus.cli._storage_url import DEFAULT_URL, ENV_VAR

__all__ = ["LOG_LEVELS", "configure_logging", "log_level_option", "storage_option"]

#: The levels `--log-level` accepts.
LOG_LEVELS = ("debug", "info", "warning", "error")


def storage_option(help: str) -> Callable[[FC], FC]:
    """`--storage URL` (or the environment variable), into the `storage_url` argument."""
    return click.option(
        "--storage",
        "storage_url",
        envvar=ENV_VAR,
        default=DEFAULT_URL,
        show_default=True,
        show_envvar=True,
        metavar="URL",
        help=help,
    )


def log_level_option(function: FC) -> FC:
    return click.option(
        "--log-level",
        type=click.Choice(LOG_LEVELS, case_sensitive=False),
        default="warning",
        show_default=True,
        help="Log messages of this level and above to stderr (info: every start and stop).",
    )(function)


def configure_logging(level: str) -> None:
    """Log to stderr at `level`: the `hephaestus` loggers and the libraries' alike."""
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("hephaestus").setLevel(level.upper())
