"""Databases written by the whole-document schema are migrated to the append-only layout.

Each test builds a database exactly as the previous schema left it (its own
migration files, rows holding whole `Instance.to_json()` documents of
instances made by real runs, one of them unreadable), migrates it, and checks
that every instance reads back equal, the unreadable one is quarantined, and
the unfinished ones run to completion on the new layout.
"""

from __future__ import annotations

import secrets
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from hephaestus import (
    Done,
    Hephaestus,
    LocalRunner,
    MemoryStorage,
    Ok,
    SQLiteStorage,
    Status,
    Step,
    Unique,
    WaitForEvent,
    Workflow,
)
from hephaestus.core.instance import Instance
from hephaestus.storage import postgres, sqlite
from hephaestus.storage.base import timer_due, timer_epoch


class MigPrepare(Step):
    events = ("ok",)

    def execute(self, instance: Any, config: Any, context: Any) -> Ok:
        return Ok("ok", {"prepared": context.initial["n"], "blob": "x" * 2000})


class MigApprove(WaitForEvent):
    key = "mig_approve"


class MigFinish(Step):
    events = ("ok",)

    def execute(self, instance: Any, config: Any, context: Any) -> Ok:
        return Ok("ok", {"total": context.steps["mig_prepare"]["prepared"] * 10})


class MigFlow(Workflow):
    unique = Unique(key="mig")
    start = MigPrepare
    transitions = {
        (MigPrepare, "ok"): (MigApprove, {"event_name": "approved", "timeout_ms": 3_600_000}),
        (MigApprove, "approved"): MigFinish,
        (MigApprove, "timeout"): MigFinish,
        (MigFinish, "ok"): Done,
    }


def hephaestus_db_migrate(url: str) -> str:
    """Run `hephaestus db migrate --storage URL` as a user would; what it printed."""
    done = subprocess.run(
        [sys.executable, "-m", "hephaestus.cli", "db", "migrate", "--storage", url],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


async def old_instances() -> list[Instance]:
    """Instances made by real runs: completed, waiting (with its timer), running."""
    async with Hephaestus(storage=MemoryStorage(), runner=LocalRunner()) as app:
        for n in range(3):
            await app.start_instance(MigFlow, {"n": n}, id=f"mig::{n}")
        for n in range(3):
            await app.wait(f"mig::{n}", status=Status.WAITING, timeout=10)
        await app.resume("mig::0", "approved")
        await app.wait("mig::0", timeout=10)
        found = [await app.get(f"mig::{n}") for n in range(3)]
    running = found[2].evolve(id="mig::3", status=Status.RUNNING, waiting_steps=frozenset())
    return [*found, running]


async def check_migrated(storage: Any, originals: list[Instance]) -> None:
    async with Hephaestus(storage=storage, runner=None) as client:
        for original in originals:
            assert await client.get(original.id) == original
        assert [row_id for row_id, _ in await storage.quarantined()] == ["mig::broken"]


async def resume_on_new_layout(storage: Any) -> None:
    async with Hephaestus(storage=storage, runner=LocalRunner()) as app:
        await app.resume("mig::1", "approved")
        done = await app.wait("mig::1", timeout=10)
        assert done.status is Status.COMPLETED
        assert done.context.steps["mig_finish"] == {"total": 10}
        assert len(done.execution_history) == 4
        assert (await app.get("mig::0")).status is Status.COMPLETED


async def test_a_sqlite_file_of_the_previous_schema_is_migrated(tmp_path: Path) -> None:
    originals = await old_instances()
    path = tmp_path / "old.db"
    with sqlite3.connect(path, isolation_level=None) as conn:
        for migration in sqlite.MIGRATIONS[:2]:  # the whole-document schema
            for statement in sqlite._statements(migration.sql):
                conn.execute(statement)
        conn.execute("PRAGMA user_version = 2")
        for instance in originals:
            conn.execute(
                "INSERT INTO workflow_instances (id, workflow, workflow_version, status, "
                "revision, next_timer_at, created_at, updated_at, document, needs_runner) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    instance.id,
                    instance.workflow,
                    instance.workflow_version,
                    instance.status.value,
                    instance.revision,
                    timer_epoch(instance),
                    instance.created_at.isoformat(),
                    instance.updated_at.isoformat(),
                    instance.to_json(),
                    int(instance.needs_runner),
                ),
            )
        conn.execute(
            "INSERT INTO workflow_instances (id, workflow, workflow_version, status, revision, "
            "document) VALUES ('mig::broken', 'x', 1, 'running', 1, '{\"id\": 1')"
        )
    conn.close()

    migrated = hephaestus_db_migrate(f"sqlite:///{path}")
    assert "0003_append_log" in migrated, migrated
    await check_migrated(SQLiteStorage(path), originals)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == sqlite.SCHEMA_VERSION
        # The outputs now live once, in the log; the heads are small.
        heads = conn.execute("SELECT max(length(document)) FROM workflow_instances").fetchone()
        assert heads[0] < 1500
        # One row per history entry plus the input: 4 + 1 (completed), 1 + 1 (the others).
        assert conn.execute("SELECT count(*) FROM workflow_log").fetchone()[0] == 5 + 2 + 2 + 2
    conn.close()
    await resume_on_new_layout(SQLiteStorage(path))


async def test_a_postgres_schema_of_the_previous_version_is_migrated(postgres_url: str) -> None:
    originals = await old_instances()
    schema = f"old_{secrets.token_hex(4)}"
    queries = postgres._render(schema)
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        await conn.execute(queries["create_schema"])
        await conn.execute(queries["create_version_table"])
        for migration in postgres.MIGRATIONS[:3]:  # the whole-document schema
            async with conn.transaction():
                await conn.execute(queries["use_schema"])
                await conn.execute(migration.sql)  # type: ignore[arg-type]
                await conn.execute(
                    queries["record_migration"],
                    {"version": migration.version, "name": migration.name},
                )
        table = sql.Identifier(schema, "workflow_instances")
        for instance in originals:
            await conn.execute(
                sql.SQL(
                    "INSERT INTO {} (id, workflow, workflow_version, status, revision, "
                    "next_timer_at, created_at, updated_at, document, needs_runner) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s)"
                ).format(table),
                (
                    instance.id,
                    instance.workflow,
                    instance.workflow_version,
                    instance.status.value,
                    instance.revision,
                    timer_due(instance),
                    instance.created_at,
                    instance.updated_at,
                    instance.to_json(),
                    instance.needs_runner,
                ),
            )
        await conn.execute(
            sql.SQL(
                "INSERT INTO {} (id, workflow, workflow_version, status, revision, created_at, "
                "updated_at, document) VALUES ('mig::broken', 'x', 1, 'running', 1, now(), "
                "now(), '{{\"id\": 1}}')"
            ).format(table)
        )

    url = f"{postgres_url}{'&' if '?' in postgres_url else '?'}schema={schema}"
    migrated = hephaestus_db_migrate(url)
    assert "0004_append_log" in migrated, migrated
    await check_migrated(postgres.PostgresStorage(postgres_url, schema=schema), originals)
    await resume_on_new_layout(postgres.PostgresStorage(postgres_url, schema=schema))
