"""What only the PostgreSQL adapter promises: migrations, clear errors, group commit, many nodes."""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime, timedelta
from time import monotonic
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from hephaestus import Context, Done, Ok, Step, Unique, Workflow
from hephaestus.core.engine import complete_step, new_instance
from hephaestus.core.instance import ExecutionEntry, Instance, Status, Timer
from hephaestus.errors import (
    AlreadyRunningError,
    ConcurrencyError,
    InstanceNotFoundError,
    OwnershipError,
    StorageError,
)
from hephaestus.storage import Query
from hephaestus.storage.postgres import PostgresStorage, migrate

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
UNREACHABLE = "postgresql://postgres@127.0.0.1:1/hephaestus"


class Receive(Step):
    events = ("received",)

    def execute(self, instance: Any, config: Any, context: Any) -> Ok:
        return Ok("received")


class PostgresFlow(Workflow):
    unique = Unique(key="order")
    start = Receive
    transitions = {(Receive, "received"): Done}


def make(instance_id: str, initial: dict[str, Any] | None = None, **changes: Any) -> Instance:
    instance = new_instance(
        PostgresFlow.definition(),
        instance_id=instance_id,
        context=Context.new(initial if initial is not None else {"item_count": 1}),
        now=NOW,
    ).instance
    return instance.evolve(**changes)


def bump(instance: Instance, **changes: Any) -> Instance:
    return instance.evolve(revision=instance.revision + 1, **changes)


def fresh_schema() -> str:
    return f"tenant_{secrets.token_hex(4)}"


async def fetch(url: str, statement: Any, params: Any = None) -> list[tuple[Any, ...]]:
    """Rows of one statement run on a connection of its own, as another program would."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cursor = await conn.execute(statement, params)
        return await cursor.fetchall() if cursor.description else []


async def ids(storage: PostgresStorage) -> list[str]:
    return [instance.id for instance in await storage.query(Query())]


# -- migrations --------------------------------------------------------------------------------


async def test_migrate_applies_each_migration_once(postgres_url: str) -> None:
    schema = fresh_schema()

    applied = await migrate(postgres_url, schema=schema)

    assert applied[0] == "0001_initial"
    assert await migrate(postgres_url, schema=schema) == []
    recorded = await fetch(
        postgres_url,
        sql.SQL("SELECT version, name FROM {}.hephaestus_schema_version ORDER BY version").format(
            sql.Identifier(schema)
        ),
    )
    assert [name for _, name in recorded] == applied
    async with PostgresStorage(postgres_url, schema=schema) as storage:
        await storage.put(make("order::a1"), None)
        assert await ids(storage) == ["order::a1"]
    async with PostgresStorage(postgres_url) as public:
        assert await ids(public) == []  # each schema has its own instances


async def test_concurrent_migrations_apply_each_migration_once(postgres_url: str) -> None:
    schema = fresh_schema()

    results = await asyncio.gather(*(migrate(postgres_url, schema=schema) for _ in range(5)))

    applied = [result for result in results if result]
    assert len(applied) == 1
    assert applied[0][0] == "0001_initial"
    assert results.count([]) == 4
    recorded = await fetch(
        postgres_url,
        sql.SQL("SELECT name FROM {}.hephaestus_schema_version").format(sql.Identifier(schema)),
    )
    assert sorted(name for (name,) in recorded) == applied[0]


async def test_open_without_migration_says_how_to_create_the_schema(postgres_url: str) -> None:
    schema = fresh_schema()
    storage = PostgresStorage(postgres_url, schema=schema)

    with pytest.raises(
        StorageError, match="hephaestus db migrate --storage postgresql://"
    ) as caught:
        await storage.open()
    assert f"?schema={schema}`" in str(caught.value)

    with pytest.raises(StorageError, match="not open"):
        await storage.get("order::a1")


async def test_a_schema_from_a_newer_version_is_refused(postgres_url: str) -> None:
    schema = fresh_schema()
    await migrate(postgres_url, schema=schema)
    await fetch(
        postgres_url,
        sql.SQL(
            "INSERT INTO {}.hephaestus_schema_version (version, name) VALUES (999, '0999_future')"
        ).format(sql.Identifier(schema)),
    )

    with pytest.raises(StorageError, match=r"schema version 999.*upgrade hephaestus-workflows"):
        await PostgresStorage(postgres_url, schema=schema).open()
    with pytest.raises(StorageError, match="schema version 999"):
        await migrate(postgres_url, schema=schema)


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "mysql://app:s3cret@db.example.com/orders",
        "sqlite:///hephaestus.db",
        "db.example.com:5432/orders",
        "postgresql:/db.example.com/orders",
        "postgresql://app:s3cret@db.example.com:port/orders",
        "postgresql://app:s3cret@db.example.com/orders?no_such_option=1",
        "",
    ],
)
async def test_a_malformed_url_is_refused_naming_the_format(url: str) -> None:
    with pytest.raises(StorageError, match="postgresql://") as caught:
        PostgresStorage(url)
    assert "s3cret" not in str(caught.value)

    with pytest.raises(StorageError, match="postgresql://"):
        await migrate(url)


async def test_an_unreachable_server_is_named_quickly() -> None:
    started = monotonic()

    with pytest.raises(StorageError, match=r"127\.0\.0\.1 port 1\b") as caught:
        await PostgresStorage(UNREACHABLE).open()
    with pytest.raises(StorageError, match=r"127\.0\.0\.1 port 1\b"):
        await migrate(UNREACHABLE)

    assert monotonic() - started < 5
    assert "check that the server is running" in str(caught.value)


async def test_calls_outside_open_and_close_raise_storage_error(postgres_url: str) -> None:
    storage = PostgresStorage(postgres_url)
    with pytest.raises(StorageError, match="not open"):
        await storage.put(make("order::a1"), None)

    async with storage:
        await storage.put(make("order::a1"), None)

    with pytest.raises(StorageError, match="closed"):
        await storage.put(make("order::a2"), None)
    with pytest.raises(StorageError, match="closed"):
        await storage.query(Query())


# -- durability ----------------------------------------------------------------------------------


async def test_data_survives_close_and_reopen(postgres_url: str) -> None:
    due = NOW + timedelta(minutes=5)
    waiting = make(
        "order::a1",
        status=Status.WAITING,
        timers=(Timer(id="t", step="receive", due_at=due, event="received"),),
    )
    storage = PostgresStorage(postgres_url)
    async with storage:
        await storage.put(waiting, None)
        await storage.put(make("order::a2", status=Status.COMPLETED), None)

    async with PostgresStorage(postgres_url) as reopened:
        assert await reopened.get("order::a1") == waiting
        assert await ids(reopened) == ["order::a1", "order::a2"]
        assert await reopened.next_timer_at() == due
        # The revision carries over: a stale writer is still refused after a restart.
        with pytest.raises(ConcurrencyError):
            await reopened.put(bump(waiting), waiting.revision - 1)
    async with storage:  # the same object opens again
        assert (await storage.get("order::a2")).status is Status.COMPLETED


async def drop_connections(url: str) -> int:
    """What a server restart or a failover does to every open connection of the storages."""
    dropped = await fetch(
        url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = current_database() AND application_name = 'hephaestus'",
    )
    return len(dropped)


async def test_the_storage_reconnects_after_the_server_drops_its_connections(
    postgres_url: str,
) -> None:
    async with PostgresStorage(postgres_url, min_size=3) as storage:
        created = make("order::a1")
        await storage.put(created, None)
        assert await ids(storage) == ["order::a1"]

        assert await drop_connections(postgres_url) >= 3
        updated = bump(created, status=Status.WAITING)
        await storage.put(updated, created.revision)
        await storage.put(make("order::a2"), None)

        assert await drop_connections(postgres_url) >= 1
        assert await storage.get("order::a1") == updated
        assert await ids(storage) == ["order::a1", "order::a2"]


async def test_rows_are_readable_with_plain_sql(postgres_url: str) -> None:
    due = NOW + timedelta(hours=2)
    async with PostgresStorage(postgres_url) as storage:
        await storage.put(
            make(
                "order::a1",
                status=Status.WAITING,
                timers=(Timer(id="t", step="receive", due_at=due, event="received"),),
            ),
            None,
        )

    rows = await fetch(
        postgres_url,
        "SELECT id, workflow_version, status, revision, next_timer_at, document->>'id' "
        "FROM workflow_instances",
    )
    assert rows == [("order::a1", 1, "waiting", 1, due, "order::a1")]


async def test_close_commits_writes_still_queued(postgres_url: str) -> None:
    storage = PostgresStorage(postgres_url)
    await storage.open()
    puts = [asyncio.create_task(storage.put(make(f"order::q{i}"), None)) for i in range(50)]
    await asyncio.sleep(0)  # let every put queue its write

    await storage.close()

    assert await asyncio.gather(*puts) == [None] * 50
    assert await fetch(postgres_url, "SELECT count(*) FROM workflow_instances") == [(50,)]


# -- group commit --------------------------------------------------------------------------------


async def test_concurrent_puts_share_transactions(postgres_url: str) -> None:
    async with PostgresStorage(postgres_url) as storage:
        await asyncio.gather(*(storage.put(make(f"order::n{i}"), None) for i in range(1000)))

        assert storage.stats.writes == 1000
        assert storage.stats.transactions <= 20
        assert len(await storage.query(Query())) == 1000


async def test_a_refused_write_fails_alone_and_the_rest_of_its_batch_commits(
    postgres_url: str,
) -> None:
    async with PostgresStorage(postgres_url) as storage:
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
        assert await ids(storage) == ["order::a1", "order::a2", "order::busy"]


async def test_creates_written_together_land_and_an_id_in_use_is_decided_alone(
    postgres_url: str,
) -> None:
    # Creates of new ids go out as one statement (`write_creates`); one over a finished
    # instance (a new run) and one over an active instance (refused) are decided alone.
    async with PostgresStorage(postgres_url) as storage:
        finished = make("order::k-finished", status=Status.COMPLETED)
        active = make("order::k-active", status=Status.RUNNING)
        await storage.put(finished, None)
        await storage.put(active, None)
        fresh = [make(f"order::k{i:02d}", {"n": i, "text": TRICKY}) for i in range(20)]
        again = make("order::k-finished", {"run": 2})
        clash = make("order::k-active", {"clash": True})

        results = await asyncio.gather(
            *(storage.put(instance, None, owner="runner-a") for instance in fresh[:10]),
            storage.put(again, None),
            storage.put(clash, None),
            *(storage.put(instance, None) for instance in fresh[10:]),
            return_exceptions=True,
        )

        assert results[:10] == [None] * 10
        assert results[10] is None
        assert isinstance(results[11], AlreadyRunningError)
        assert "order::k-active" in str(results[11])
        assert results[12:] == [None] * 10
        async with PostgresStorage(postgres_url) as reader:
            for instance in fresh:
                assert await reader.get(instance.id) == instance
            assert await reader.get("order::k-finished") == again
            assert await reader.runs("order::k-finished") == [finished]
            assert await reader.get("order::k-active") == active
        owners = await fetch(
            postgres_url,
            "SELECT id, owner, run, needs_runner FROM workflow_instances "
            "WHERE id LIKE 'order::k%' ORDER BY id",
        )
        assert owners == sorted(
            [(i.id, "runner-a", 1, True) for i in fresh[:10]]
            + [(i.id, None, 1, True) for i in fresh[10:]]
            + [("order::k-active", None, 1, True), ("order::k-finished", None, 2, True)]
        )


TRICKY = 'é\\u0000 "quoted" \U0001f600'


async def test_updates_written_together_land_exactly_and_a_refused_one_fails_alone(
    postgres_url: str,
) -> None:
    # Updates of many instances this storage wrote before go out as one statement
    # (`write_updates`): each must land exactly as if written alone.
    definition = PostgresFlow.definition()
    async with PostgresStorage(postgres_url) as storage:
        created = [make(f"order::t{i:02d}", {"n": i}) for i in range(30)]
        await asyncio.gather(
            *(storage.put(instance, None, owner="runner-a") for instance in created)
        )
        due = NOW + timedelta(minutes=5)
        received = [
            # Even ones complete (two log rows), odd ones stay running with a timer (none).
            complete_step(
                definition,
                instance,
                "receive",
                Ok("received", {"n": index, "text": TRICKY, "at": [1.5, None]}),
                attempt=1,
                now=NOW + timedelta(seconds=index),
            ).instance
            if index % 2 == 0
            else bump(instance, timers=(Timer(id="t", step="receive", due_at=due),))
            for index, instance in enumerate(created)
        ]
        stale = bump(received[3], error="stale")
        results = await asyncio.gather(
            *(
                storage.put(after, before.revision, owner="runner-a")
                for before, after in zip(created, received, strict=True)
                if after.id != received[3].id
            ),
            storage.put(stale, created[3].revision - 1, owner="runner-a"),
            storage.put(received[5], created[5].revision, owner="runner-b"),  # not its owner
            return_exceptions=True,
        )

        assert isinstance(results[-2], ConcurrencyError)
        assert "order::t03" in str(results[-2])
        assert isinstance(results[-1], OwnershipError)
        assert "order::t05" in str(results[-1])
        assert results[:-2] == [None] * 29
        async with PostgresStorage(postgres_url) as reader:  # reads what is stored, not a cache
            for index, instance in enumerate(received):
                stored = await reader.get(instance.id)
                assert stored == (created[3] if index == 3 else instance)
            for instance in received[::2]:
                stored = await reader.get(instance.id)
                assert stored.context.steps["receive"]["text"] == TRICKY
                assert [e.step for e in stored.execution_history] == ["receive", "done"]
        columns = await fetch(
            postgres_url,
            "SELECT id, status, revision, owner, needs_runner, has_commands, history_length, "
            "next_timer_at, updated_at FROM workflow_instances WHERE id LIKE 'order::t%' "
            "ORDER BY id",
        )
        expected = [
            (
                i.id,
                i.status.value,
                i.revision,
                "runner-a" if i.status.is_active else None,
                i.needs_runner,
                i.has_new_commands,
                len(i.execution_history),
                i.next_timer_at,
                i.updated_at,
            )
            for i in [*received[:3], created[3], *received[4:]]
        ]
        assert columns == expected


async def test_writes_with_large_outputs_among_small_ones_land_exactly(postgres_url: str) -> None:
    # A write with large log rows goes out as a statement of its own, the small ones
    # together: read back, every instance is what was written.
    definition = PostgresFlow.definition()
    async with PostgresStorage(postgres_url) as storage:
        created = [make(f"order::p{i}", {"n": i}) for i in range(8)]
        await asyncio.gather(*(storage.put(instance, None) for instance in created))
        received = [
            complete_step(
                definition,
                instance,
                "receive",
                Ok(
                    "received",
                    {"data": ("é" if index % 3 else "x") * (20_000 if index % 2 else 10)},
                ),
                attempt=1,
                now=NOW,
            ).instance
            for index, instance in enumerate(created)
        ]

        await asyncio.gather(
            *(
                storage.put(after, before.revision)
                for before, after in zip(created, received, strict=True)
            )
        )

        async with PostgresStorage(postgres_url) as reader:
            assert [await reader.get(i.id) for i in received] == received


async def test_a_document_postgres_cannot_hold_fails_alone(postgres_url: str) -> None:
    async with PostgresStorage(postgres_url) as storage:
        created = make("order::a1")
        await storage.put(created, None)

        results = await asyncio.gather(
            storage.put(make("order::a0"), None),
            # Built around the engine's checks (which refuse a NUL up front), to prove the
            # storage refuses such a write alone if one ever gets that far: the head is
            # jsonb (log rows are text, where JSON writes a NUL as the escape \u0000).
            storage.put(make("order::nul", error="before\x00after"), None),
            storage.put(bump(created, status=Status.WAITING), created.revision),
            storage.put(bump(created, status=Status.FAILED), created.revision),  # stale
            return_exceptions=True,
        )

        assert results[0] is None
        assert isinstance(results[1], StorageError)
        assert "order::nul" in str(results[1])
        assert "NUL character" in str(results[1])
        assert results[2] is None
        assert isinstance(results[3], ConcurrencyError)
        assert await ids(storage) == ["order::a0", "order::a1"]
        assert (await storage.get("order::a1")).status is Status.WAITING


# -- several nodes on one database ---------------------------------------------------------------


async def test_two_nodes_creating_the_same_ids_store_each_once(postgres_url: str) -> None:
    instance_ids = [f"order::r{i:02d}" for i in range(40)]
    async with PostgresStorage(postgres_url) as left, PostgresStorage(postgres_url) as right:
        attempts = [
            (node, make(instance_id, workflow_version=version))
            for instance_id in instance_ids
            for node, version in ((left, 1), (right, 2))
        ]
        results = await asyncio.gather(
            *(node.put(instance, None) for node, instance in attempts), return_exceptions=True
        )

        for index, instance_id in enumerate(instance_ids):
            pair = results[2 * index : 2 * index + 2]
            assert pair.count(None) == 1, (instance_id, pair)
            [refusal] = [result for result in pair if result is not None]
            assert isinstance(refusal, AlreadyRunningError)
            assert instance_id in str(refusal)
            winner = attempts[2 * index + pair.index(None)][1]
            assert await left.get(instance_id) == winner
        assert await ids(right) == instance_ids


async def test_two_nodes_updating_the_same_instances_never_deadlock(postgres_url: str) -> None:
    originals = [make(f"order::u{i:03d}", status=Status.RUNNING) for i in range(200)]
    async with PostgresStorage(postgres_url) as left, PostgresStorage(postgres_url) as right:
        await asyncio.gather(*(left.put(instance, None) for instance in originals))

        # Each node writes every instance, in opposite orders, from the same revision.
        results = await asyncio.gather(
            *(left.put(bump(instance, error="left"), 1) for instance in originals),
            *(right.put(bump(instance, error="right"), 1) for instance in reversed(originals)),
            return_exceptions=True,
        )

        from_left = results[: len(originals)]
        from_right = list(reversed(results[len(originals) :]))
        for instance, mine, theirs in zip(originals, from_left, from_right, strict=True):
            assert [mine, theirs].count(None) == 1, (instance.id, mine, theirs)
            loser = mine if mine is not None else theirs
            assert isinstance(loser, ConcurrencyError)
            expected = "left" if mine is None else "right"
            assert (await right.get(instance.id)).error == expected


# -- ordering ------------------------------------------------------------------------------------


async def test_ids_are_ordered_as_by_every_storage_whatever_the_locale(
    postgres_server_url: str,
) -> None:
    # A database whose default collation sorts `B` after `ab` and ignores punctuation.
    name = f"hephaestus_test_icu_{secrets.token_hex(4)}"
    create = sql.SQL(
        "CREATE DATABASE {} TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' "
        "LOCALE 'C.UTF-8'"
    ).format(sql.Identifier(name))
    try:
        await fetch(postgres_server_url, create)
    except (psycopg.errors.SyntaxError, psycopg.errors.FeatureNotSupported) as exc:
        pytest.skip(f"needs PostgreSQL 15 or newer built with ICU ({exc})")
    url = urlunsplit(urlsplit(postgres_server_url)._replace(path=f"/{name}"))
    instance_ids = ["order::B", "order::a-b", "order::a_c", "order::aa", "order::ab"]
    try:
        await migrate(url)
        async with PostgresStorage(url) as storage:
            for instance_id in reversed(instance_ids):
                await storage.put(make(instance_id), None)

            assert await ids(storage) == sorted(instance_ids) == instance_ids
            page = await storage.query(Query(after="order::a-b", limit=2))
            assert [instance.id for instance in page] == ["order::a_c", "order::aa"]
    finally:
        drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        await fetch(postgres_server_url, drop)


# -- indexes and JSON queries --------------------------------------------------------------------


async def test_heads_are_indexed_and_inputs_are_found_by_containment(postgres_url: str) -> None:
    async with PostgresStorage(postgres_url) as storage:
        await storage.put(make("order::a1", {"customer": {"name": "ada"}, "items": 3}), None)
        await storage.put(make("order::b2", {"customer": {"name": "bob"}, "items": 3}), None)

    indexes = dict(
        await fetch(
            postgres_url,
            "SELECT indexname, indexdef FROM pg_indexes "
            "WHERE schemaname = 'public' AND tablename = 'workflow_instances'",
        )
    )
    assert "workflow_instances_document" not in indexes  # no GIN on the head any more
    assert "(status, id)" in indexes["workflow_instances_status"]
    assert "workflow_instances_workflow_status" not in indexes
    assert "(workflow, id)" in indexes["workflow_instances_workflow"]
    assert "(updated_at)" in indexes["workflow_instances_updated_at"]
    assert "(next_timer_at, id)" in indexes["workflow_instances_next_timer_at"]
    assert "WHERE (next_timer_at IS NOT NULL)" in indexes["workflow_instances_next_timer_at"]

    # The query and the opt-in index of docs/postgres.md: a run's input is log row -1.
    containment = (
        "SELECT instance_id FROM workflow_log WHERE seq = -1 AND entry::jsonb @> %s "
        "ORDER BY instance_id"
    )
    ada = Jsonb({"customer": {"name": "ada"}})
    assert await fetch(postgres_url, containment, [ada]) == [("order::a1",)]
    both = Jsonb({"items": 3})
    assert await fetch(postgres_url, containment, [both]) == [("order::a1",), ("order::b2",)]
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        await conn.execute(
            "CREATE INDEX workflow_log_inputs ON workflow_log "
            "USING gin ((entry::jsonb) jsonb_path_ops) WHERE seq = -1"
        )
        await conn.execute("SET enable_seqscan = off")
        cursor = await conn.execute("EXPLAIN " + containment, [ada])
        plan = "\n".join(line for (line,) in await cursor.fetchall())
        await conn.execute("DROP INDEX workflow_log_inputs")
    assert "workflow_log_inputs" in plan


async def test_a_locking_read_that_waited_for_a_writer_sees_its_whole_write(
    postgres_url: str,
) -> None:
    # Under READ COMMITTED a row lock that waited returns the row as the writer committed
    # it; the history read with it must be of that moment too, not of the statement's
    # older snapshot (a head counting an entry whose log row it cannot see).
    async with PostgresStorage(postgres_url) as writer, PostgresStorage(postgres_url) as reader:
        created = make("order::locked")
        await writer.put(created, None)

        async def read_locked() -> Instance:
            async with reader.transaction() as tx:
                return await tx.get(created.id, for_update=True)

        async with writer.transaction() as tx:
            before = await tx.get(created.id, for_update=True)
            entry = ExecutionEntry("receive", "received", NOW, {"ok": True}, targets=("done",))
            longer = bump(
                before,
                context=before.context.with_updates("receive", {"ok": True}),
                completed_steps=before.completed_steps | {"receive"},
                execution_history=(*before.execution_history, entry),
            )
            await tx.put(longer, before.revision)
            waiting = asyncio.create_task(read_locked())
            await asyncio.sleep(0.3)
            assert not waiting.done()  # it waits for the writer's lock
        assert await waiting == longer
        assert await reader.quarantined() == []
