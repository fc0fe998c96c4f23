"""Fixtures shared by every test directory: the PostgreSQL server the postgres tests use.

The server is `HEPHAESTUS_TEST_POSTGRES_URL`, or a local one at
`postgresql://postgres@127.0.0.1:5432/postgres`. When none answers, the
postgres tests are skipped with a message saying how to run them, except
under `CI=true`, where they fail: CI must not pass without them.

Each test run creates its own throwaway database on that server, migrates it,
and drops it at the end, so the tests never touch other data; every test that
asks for `postgres_url` starts with an empty `workflow_instances` table.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from hephaestus.storage.postgres import migrate

POSTGRES_URL_VAR = "HEPHAESTUS_TEST_POSTGRES_URL"
LOCAL_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def database_url(server_url: str, database: str) -> str:
    """`server_url` pointing at another database on the same server."""
    return urlunsplit(urlsplit(server_url)._replace(path=f"/{database}"))


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    """The URL of a reachable PostgreSQL server; skips (or fails under CI) without one."""
    url = os.environ.get(POSTGRES_URL_VAR) or LOCAL_POSTGRES_URL
    try:
        with psycopg.connect(url, connect_timeout=3, autocommit=True):
            return url
    except psycopg.Error as exc:
        reason = " ".join(str(exc).split())
    parts = urlsplit(url)
    where = f"{parts.hostname}:{parts.port or 5432}"  # never the password
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(
            f"PostgreSQL tests cannot run: no server at {where} ({reason}); CI must run "
            f"them: start PostgreSQL or set {POSTGRES_URL_VAR} to a reachable server",
            pytrace=False,
        )
    pytest.skip(
        f"no PostgreSQL server at {where} ({reason}); to run the PostgreSQL tests, start "
        f"a local server on 127.0.0.1:5432 or set {POSTGRES_URL_VAR}="
        "postgresql://user:password@host:port/database (a user that may create databases)"
    )


@pytest.fixture(scope="session")
def postgres_database(postgres_server_url: str) -> Iterator[str]:
    """A fresh, migrated database for this test run; dropped when the run ends."""
    name = f"hephaestus_test_{secrets.token_hex(6)}"
    with psycopg.connect(postgres_server_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = database_url(postgres_server_url, name)
    try:
        # In a thread of its own: no test's event loop is disturbed.
        with ThreadPoolExecutor(max_workers=1) as thread:
            thread.submit(lambda: asyncio.run(migrate(url))).result()
        yield url
    finally:
        with psycopg.connect(postgres_server_url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture
def postgres_url(postgres_database: str) -> str:
    """The URL of the run's database, its tables (and job queue) emptied for this test."""
    with psycopg.connect(postgres_database, autocommit=True) as conn:
        conn.execute("TRUNCATE workflow_instances, hephaestus_step_results")
        # The distributed runner's job queue, when its extra is installed.
        if conn.execute("SELECT to_regclass('procrastinate_jobs')").fetchone() != (None,):
            conn.execute(
                "TRUNCATE procrastinate_jobs, procrastinate_events, procrastinate_workers CASCADE"
            )
    return postgres_database
