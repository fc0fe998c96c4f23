"""PostgreSQL for the benchmarks: is it there, and a fresh database for each measurement.

The server is given by one URL (`--pg-url`, default the local `postgres`
database); the bench creates its own databases next to it, dropping any left
by an earlier run, so every measurement starts on an empty database.
"""

from __future__ import annotations

import inspect
from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "database_url",
    "drop_database",
    "fresh_database",
    "migrate",
    "server_problem",
    "storage_problem",
]


def server_problem(url: str) -> str | None:
    """Why the PostgreSQL server at `url` cannot be used, or `None` when it can."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install -e '.[bench]')"
    try:
        with psycopg.connect(url, connect_timeout=3, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"PostgreSQL not reachable ({first_line})"
    return None


def storage_problem() -> str | None:
    """Why `hephaestus.storage.postgres` cannot be used, or `None` when it can."""
    try:
        from hephaestus.storage import postgres
    except ImportError as exc:
        return f"hephaestus.storage.postgres is not importable ({exc})"
    if not hasattr(postgres, "PostgresStorage") or not hasattr(postgres, "migrate"):
        return "hephaestus.storage.postgres has no PostgresStorage and migrate"
    return None


def database_url(url: str, database: str) -> str:
    """`url` pointing at `database` instead of its own database."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}"))


def fresh_database(url: str, database: str) -> str:
    """Drop `database` if an earlier run left it, create it empty; its URL."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(url, connect_timeout=5, autocommit=True) as conn:
        name = sql.Identifier(database)
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(name))
    return database_url(url, database)


def drop_database(url: str, database: str) -> None:
    """Remove a database the bench made (best effort: a leftover is dropped by the next run)."""
    import psycopg
    from psycopg import sql

    try:
        with psycopg.connect(url, connect_timeout=5, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
            )
    except psycopg.Error:
        pass


async def migrate(url: str) -> None:
    """Create Hephaestus's schema in the database at `url`."""
    from hephaestus.storage import postgres

    result = postgres.migrate(url)
    if inspect.isawaitable(result):
        await result
