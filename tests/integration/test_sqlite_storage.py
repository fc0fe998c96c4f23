"""What only the SQLite adapter promises: a durable file, WAL, group commit, clear errors."""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from hephaestus import Context, Done, Ok, Step, Unique, Workflow
from hephaestus.core.engine import new_instance
from hephaestus.core.instance import Instance, Status, Timer
from hephaestus.errors import (
    AlreadyRunningError,
    ConcurrencyError,
    InstanceNotFoundError,
    StorageError,
)
from hephaestus.storage import Query, SQLiteStorage

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class Receive(Step):
    events = ("received",)

    def execute(self, instance: Any, config: Any, context: Any) -> Ok:
        return Ok("received")


class SQLiteFlow(Workflow):
    unique = Unique(key="order")
    start = Receive
    transitions = {(Receive, "received"): Done}


def make(instance_id: str, **changes: Any) -> Instance:
    instance = new_instance(
        SQLiteFlow.definition(),
        instance_id=instance_id,
        context=Context.new({"item_count": 1}),
        now=NOW,
    ).instance
    return instance.evolve(**changes)


def bump(instance: Instance, **changes: Any) -> Instance:
    return instance.evolve(revision=instance.revision + 1, **changes)


def read_pragma(path: Path, pragma: str) -> Any:
    with closing(sqlite3.connect(path)) as conn:
        return conn.execute(f"PRAGMA {pragma}").fetchone()[0]


async def test_data_survives_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    due = NOW + timedelta(minutes=5)
    waiting = make(
        "order::a1",
        status=Status.WAITING,
        timers=(Timer(id="t", step="receive", due_at=due, event="received"),),
    )
    async with SQLiteStorage(path) as storage:
        await storage.put(waiting, None)
        await storage.put(make("order::a2", status=Status.COMPLETED), None)

    async with SQLiteStorage(path) as reopened:
        assert await reopened.get("order::a1") == waiting
        assert [i.id for i in await reopened.query(Query())] == ["order::a1", "order::a2"]
        assert await reopened.next_timer_at() == due
        # The revision carries over: a stale writer is still refused after a restart.
        with pytest.raises(ConcurrencyError):
            await reopened.put(bump(waiting), waiting.revision - 1)


async def test_the_database_is_in_wal_mode_at_the_latest_schema(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    async with SQLiteStorage(path) as storage:
        await storage.put(make("order::a1"), None)
        assert read_pragma(path, "journal_mode") == "wal"

    assert read_pragma(path, "journal_mode") == "wal"
    assert read_pragma(path, "user_version") >= 1
    with closing(sqlite3.connect(path)) as conn:
        indexes = {
            name
            for (name,) in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'index' "
                "AND tbl_name = 'workflow_instances' AND sql IS NOT NULL"
            )
        }
    assert indexes == {
        "workflow_instances_status",
        "workflow_instances_workflow",
        "workflow_instances_next_timer_at",
        "workflow_instances_unowned_work",
        "workflow_instances_commands",
        "workflow_instances_updated",
        "workflow_instances_status_updated",
        "workflow_instances_counts",
    }


async def test_other_connections_can_read_while_it_is_open(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    async with SQLiteStorage(path) as storage:
        await storage.put(make("order::a1", status=Status.WAITING), None)
        with closing(sqlite3.connect(path)) as conn:
            rows = conn.execute("SELECT id, status, revision FROM workflow_instances").fetchall()
    assert rows == [("order::a1", "waiting", 1)]


async def test_concurrent_puts_share_transactions(tmp_path: Path) -> None:
    async with SQLiteStorage(tmp_path / "app.db", synchronous="NORMAL") as storage:
        await asyncio.gather(*(storage.put(make(f"order::n{i}"), None) for i in range(1000)))

        assert storage.stats.writes == 1000
        assert storage.stats.transactions <= 20
        assert len(await storage.query(Query())) == 1000


async def test_a_refused_write_fails_alone_and_the_rest_of_its_batch_commits(
    tmp_path: Path,
) -> None:
    async with SQLiteStorage(tmp_path / "app.db") as storage:
        active = make("order::busy", status=Status.RUNNING)
        await storage.put(active, None)
        transactions_before = storage.stats.transactions

        results = await asyncio.gather(
            storage.put(make("order::a1"), None),
            storage.put(bump(active), active.revision - 1),  # stale
            storage.put(make("order::busy", workflow_version=9), None),  # active id
            storage.put(make("order::ghost"), 4),  # never created
            storage.put(make("order::a2"), None),
            storage.put(bump(make("order::a2"), status=Status.WAITING), 1),  # after the create
            return_exceptions=True,
        )

        assert results[0] is None
        assert isinstance(results[1], ConcurrencyError)
        assert isinstance(results[2], AlreadyRunningError)
        assert isinstance(results[3], InstanceNotFoundError)
        assert results[4:] == [None, None]
        assert storage.stats.transactions == transactions_before + 1
        assert await storage.get("order::busy") == active
        assert (await storage.get("order::a2")).status is Status.WAITING
        assert [i.id for i in await storage.query(Query())] == [
            "order::a1",
            "order::a2",
            "order::busy",
        ]


async def test_a_write_blocked_by_another_process_fails_and_later_writes_succeed(
    tmp_path: Path,
) -> None:
    path = tmp_path / "app.db"
    async with SQLiteStorage(path, timeout=0.05) as storage:
        await storage.put(make("order::a1"), None)
        with closing(sqlite3.connect(path, isolation_level=None)) as other:
            other.execute("BEGIN IMMEDIATE")  # another program holds the write lock
            with pytest.raises(StorageError, match="locked"):
                await storage.put(make("order::a2"), None)
            other.execute("ROLLBACK")

        with pytest.raises(InstanceNotFoundError):
            await storage.get("order::a2")
        await storage.put(make("order::a2"), None)
        assert [i.id for i in await storage.query(Query())] == ["order::a1", "order::a2"]


async def test_close_commits_writes_still_queued(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    storage = SQLiteStorage(path)
    await storage.open()
    puts = [asyncio.create_task(storage.put(make(f"order::q{i}"), None)) for i in range(50)]
    await asyncio.sleep(0)  # let every put queue its write

    await storage.close()

    assert await asyncio.gather(*puts) == [None] * 50
    async with SQLiteStorage(path) as reopened:
        assert len(await reopened.query(Query())) == 50


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA user_version = 999")

    with pytest.raises(StorageError, match=r"schema version 999.*upgrade") as caught:
        await SQLiteStorage(path).open()

    assert str(path) in str(caught.value)
    assert read_pragma(path, "user_version") == 999


async def test_a_missing_directory_is_named(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "app.db"

    with pytest.raises(StorageError, match="does not exist") as caught:
        await SQLiteStorage(path).open()

    assert str(path) in str(caught.value)
    assert not path.parent.exists()


async def test_a_file_that_is_not_a_database_is_named(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("these are my notes, not a database\n" * 200)

    with pytest.raises(StorageError, match="not a SQLite database") as caught:
        await SQLiteStorage(path).open()

    assert str(path) in str(caught.value)
    assert path.read_text().startswith("these are my notes")


async def test_calls_after_close_raise_storage_error(tmp_path: Path) -> None:
    storage = SQLiteStorage(tmp_path / "app.db")
    async with storage:
        await storage.put(make("order::a1"), None)

    with pytest.raises(StorageError, match="closed"):
        await storage.put(make("order::a2"), None)
    with pytest.raises(StorageError, match="closed"):
        await storage.get("order::a1")


async def test_calls_before_open_raise_storage_error(tmp_path: Path) -> None:
    storage = SQLiteStorage(tmp_path / "app.db")

    with pytest.raises(StorageError, match="not open"):
        await storage.put(make("order::a1"), None)


async def test_a_closed_storage_can_be_opened_again(tmp_path: Path) -> None:
    storage = SQLiteStorage(tmp_path / "app.db")
    async with storage:
        await storage.put(make("order::a1"), None)

    async with storage:
        assert (await storage.get("order::a1")).id == "order::a1"


def test_an_unknown_synchronous_mode_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="FULL"):
        SQLiteStorage(tmp_path / "app.db", synchronous="OFF")  # type: ignore[arg-type]
