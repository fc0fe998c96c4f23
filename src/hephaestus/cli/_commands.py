"""The commands of the `hephaestus` CLI, on click."""

from __future__ import annotations

import click

__all__ = ["cli"]


@click.group()
@click.version_option(package_name="hephaestus-workflows")
def cli() -> None:
    """Hephaestus: validated, durable workflows."""


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

    raise SystemExit(main(db))
