"""Fixtures shared by every test directory: the PostgreSQL server the postgres tests use.

The server is `HEPHAESTUS_TEST_POSTGRES_URL`, or a local one at
`postgresql://postgres@127.0.0.1:5432/postgres`, or else a throwaway cluster
started from installed PostgreSQL binaries (`initdb`, not as root). When none
of these works, the postgres tests are skipped with a message saying how to
run them, except under `CI=true`, where they fail: CI must not pass without them.

Each test run creates its own throwaway database on that server, migrates it,
and drops it at the end, so the tests never touch other data; every test that
asks for `postgres_url` starts with an empty `workflow_instances` table.
"""

from __future__ import annotations

import asyncio
import getpass
import os
import secrets
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
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


def _postgres_binaries() -> Path | None:
    """The directory of installed `initdb` and `pg_ctl`, if any."""
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), reverse=True)
    return candidates[0].parent if candidates else None


def _throwaway_cluster(tmp: Path) -> tuple[str, Callable[[], None]] | None:
    """Start a private cluster from installed binaries; its URL and how to stop it.

    PostgreSQL refuses to run as root, so this is for developers' own accounts.
    """
    binaries = _postgres_binaries()
    if binaries is None or os.geteuid() == 0:
        return None
    data, socket_dir = tmp / "data", tmp / "socket"
    socket_dir.mkdir()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    user = getpass.getuser()
    subprocess.run(
        [binaries / "initdb", "-D", data, "-U", user, "--auth=trust", "-E", "UTF8"],
        check=True,
        capture_output=True,
    )
    options = f"-p {port} -k {socket_dir} -c listen_addresses=127.0.0.1 -c fsync=off"
    pg_ctl = [binaries / "pg_ctl", "-D", data, "-w", "-s"]
    subprocess.run([*pg_ctl, "-o", options, "-l", tmp / "log", "start"], check=True)

    def stop() -> None:
        subprocess.run([*pg_ctl, "-m", "immediate", "stop"], check=False)

    return f"postgresql://{user}@127.0.0.1:{port}/postgres", stop


@pytest.fixture(scope="session")
def postgres_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a reachable PostgreSQL server; skips (or fails under CI) without one.

    Without `HEPHAESTUS_TEST_POSTGRES_URL` and a server on 127.0.0.1:5432, a
    throwaway cluster is started from installed PostgreSQL binaries if there are any.
    """
    configured = os.environ.get(POSTGRES_URL_VAR)
    url = configured or LOCAL_POSTGRES_URL
    try:
        with psycopg.connect(url, connect_timeout=3, autocommit=True):
            pass
        yield url
        return
    except psycopg.Error as exc:
        reason = " ".join(str(exc).split())
    cluster = None if configured else _throwaway_cluster(tmp_path_factory.mktemp("postgres"))
    if cluster is not None:
        cluster_url, stop = cluster
        try:
            yield cluster_url
        finally:
            stop()
        return
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
        conn.execute(
            "TRUNCATE workflow_instances, workflow_log, workflow_runs, hephaestus_step_results"
        )
        # The distributed runner's job queue, when its extra is installed.
        if conn.execute("SELECT to_regclass('procrastinate_jobs')").fetchone() != (None,):
            conn.execute(
                "TRUNCATE procrastinate_jobs, procrastinate_events, procrastinate_workers CASCADE"
            )
    return postgres_database
