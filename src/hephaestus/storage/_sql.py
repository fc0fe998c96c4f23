"""SQL kept as package data: schema migrations as numbered files, queries as named blocks.

A database's directory under `hephaestus/storage/sql/` holds
`NNNN_name.sql` migrations, applied in number order and recorded as the
schema version, and a `queries.sql` file whose blocks each start with a
`-- name: <name>` line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

__all__ = ["Migration", "load_migrations", "load_queries"]

_MIGRATION_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_NAME_LINE = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$")


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema step: after it runs, the schema is at `version`."""

    version: int
    name: str
    sql: str


def load_migrations(package: str) -> tuple[Migration, ...]:
    """The migrations in `package`, in number order.

    Numbers are distinct and start at 1; gaps are allowed (a number may be
    reserved by a change that lands later). A database records the number of
    the last migration applied and gets every later one, in order.
    """
    found: list[Migration] = []
    for entry in resources.files(package).iterdir():
        match = _MIGRATION_FILE.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda migration: migration.version)
    versions = [migration.version for migration in found]
    if not versions or versions[0] != 1 or len(set(versions)) != len(versions):
        raise RuntimeError(
            f"migrations of {package} must have distinct numbers starting at 1, found {versions}"
        )
    return tuple(found)


def load_queries(package: str) -> dict[str, str]:
    """The named queries of `package`'s `queries.sql`, by name."""
    text = resources.files(package).joinpath("queries.sql").read_text(encoding="utf-8")
    queries: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        match = _NAME_LINE.match(line.strip())
        if match:
            current = queries.setdefault(match[1], [])
        elif current is not None and not line.lstrip().startswith("--"):
            current.append(line)
    return {name: "\n".join(lines).strip() for name, lines in queries.items()}
