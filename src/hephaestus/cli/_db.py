"""`hephaestus db migrate`: create or upgrade the schema of a storage.

PostgreSQL databases are migrated only by this command (or `migrate(url)` in
Python): `PostgresStorage.open()` refuses a database that is not migrated.
SQLite files bring themselves up to date whenever they are opened, so for
them the command creates the file if needed and reports its schema version.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import click
from rich.console import Console
from rich.text import Text

from hephaestus.cli._options import storage_option
from hephaestus.cli._output import make_console, progress
from hephaestus.cli._storage_url import (
    is_postgres,
    postgres_module,
    postgres_target,
    redact,
    storage_from_url,
)
from hephaestus.storage.sqlite import MIGRATIONS, SQLiteStorage

__all__ = ["db"]


@click.group(short_help="Create or upgrade a storage's schema.")
def db() -> None:
    """Manage the database behind a storage."""


@db.command(short_help="Create or upgrade the schema of a storage.")
@storage_option("The storage to migrate: sqlite:///rel.db, sqlite:////abs.db, postgresql://...")
def migrate(storage_url: str) -> None:
    """Create the storage's tables, or bring them up to this version of Hephaestus.

    Safe to run again, and from several processes at once. Run it for a
    PostgreSQL database before the first app opens it and after each upgrade
    of hephaestus-workflows; a SQLite file also migrates itself when opened.
    """
    console = make_console()
    shown = redact(storage_url)
    if is_postgres(storage_url):
        url, schema = postgres_target(storage_url)
        module = postgres_module()
        with progress(make_console(stderr=True), f"Migrating {shown}"):
            applied: list[str] = asyncio.run(module.migrate(url, schema=schema))
        where = f"PostgreSQL database {shown} (schema {schema})"
        _report(console, where, applied)
        return
    storage = storage_from_url(storage_url)
    if not isinstance(storage, SQLiteStorage):
        console.print(f"{shown} keeps no schema: nothing to migrate")
        return
    before = _sqlite_version(storage.path)
    asyncio.run(_open_and_close(storage))
    applied = [f"{m.version:04d}_{m.name}" for m in MIGRATIONS if m.version > before]
    _report(console, f"SQLite database {storage.path}", applied)


def _report(console: Console, where: str, applied: list[str]) -> None:
    if applied:
        line = Text("Migrated ", style="bold green")
        line.append(f"{where}: applied {', '.join(applied)}")
    else:
        line = Text(f"{where} is up to date")
    console.print(line, soft_wrap=True)


def _sqlite_version(path: str) -> int:
    """The schema version of the SQLite file at `path`: 0 if there is none yet."""
    if path == ":memory:" or not Path(path).is_file():
        return 0
    try:
        conn = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True)
        try:
            return int(conn.execute("PRAGMA user_version").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error:
        return 0  # opening it below says what is wrong with the file


async def _open_and_close(storage: SQLiteStorage) -> None:
    await storage.open()
    await storage.close()
