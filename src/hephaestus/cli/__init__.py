"""The `hephaestus` command line; it needs the `cli` extra (click and rich)."""

from __future__ import annotations

import sys

__all__ = ["main"]


def main() -> None:
    """Entry point of the `hephaestus` command."""
    try:
        from hephaestus.cli._commands import cli
    except ImportError as exc:  # click or rich missing
        print(
            "The hephaestus command needs its extra: "
            f"pip install 'hephaestus-workflows[cli]' ({exc})",
            file=sys.stderr,
        )
        raise SystemExit(2) from exc
    cli(prog_name="hephaestus")
