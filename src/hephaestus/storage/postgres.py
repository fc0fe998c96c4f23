"""`PostgresStorage`: instances in PostgreSQL, shared by every process that points at the database.

**Durability.** A `put` returns only after PostgreSQL has answered the COMMIT
that holds its write. The storage's connections never run with
`synchronous_commit = off` (a server or role default of `off` is raised to
`on` for them), so an acknowledged write is in the server's write-ahead log on
disk and survives a crash of this process *and* of the database server.

**Group commit.** Concurrent writes share transactions, as in `SQLiteStorage`:
each `put` queues its instance and waits; one writer task takes everything
queued, sends it to the server in one pipelined batch inside one transaction,
then answers every waiting `put`. While a batch is being committed the next
one gathers. The batch's creates are one statement (`write_creates`), its
updates of instances this process knows another (`write_updates`), the rest
one statement each. Each write is checked on its own by the statement that
makes it
(`UPDATE ... WHERE revision = expected`, `INSERT ... ON CONFLICT DO UPDATE
... WHERE` the stored instance is finished), so a stale revision
(`ConcurrencyError`), a create over an active instance (`AlreadyRunningError`)
or an update of a missing one (`InstanceNotFoundError`) fails that `put` alone
while the rest of the batch commits. A write the server refuses (a NUL
character in the JSON, which `jsonb` cannot hold) sends the batch through
again one savepoint per write, so it too fails alone. Writes for the same id
in one batch are applied in the order they were made; rows are written in id
order, so two processes' batches never deadlock on each other. No `put`
returns before the commit that holds its write has returned.

**Many nodes.** Creation is decided by the database, not by a read before the
write: when two processes create the same id at once, PostgreSQL's unique
index makes one insert wait for the other, and exactly one of them succeeds;
the other gets `AlreadyRunningError`.

**Lost connections.** When the server restarts or drops connections, the
pool replaces them: reads are tried again on a fresh connection, and a batch
of writes checks its connection before sending anything, so neither fails
because of a connection that broke while it sat idle in the pool.

**Many processes.** A client's write of work for the runners (a new
instance, an event, a cancel request) sends `NOTIFY hephaestus_work` in its
transaction; `wait_for_changes` listens on one connection of its own, so an
idle runner wakes when the write commits. Runners also poll, in case a
notification is lost with a broken connection.

**Schema.** Append-only (docs/storage.md): table `workflow_instances` holds
each instance's small head as `jsonb` plus the columns queries filter on,
B-tree indexed, and the runner that owns it, rewritten on every change;
`workflow_log` one text row per history entry with the step's output, and
the run's input, each written once (a write sends its new rows with its head,
in one statement); `workflow_runs` the heads of earlier runs of an id. Table
`hephaestus_runners` holds the runner processes and their leases.
Migrations are the numbered files in `hephaestus/storage/sql/postgres/`;
`migrate(url)` (the `hephaestus db migrate` command) applies them under an
advisory lock and records them in `hephaestus_schema_version`. `open()`
never changes the schema: it checks the version and refuses a database that
is not migrated, or migrated by another version of Hephaestus.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, LiteralString, cast
from urllib.parse import urlsplit, urlunsplit

try:
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict
    from psycopg.rows import TupleRow
    from psycopg_pool import AsyncConnectionPool, PoolTimeout
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "PostgresStorage needs the postgres extra: pip install 'hephaestus-workflows[postgres]'"
    ) from exc

from hephaestus.core.instance import Instance, Status
from hephaestus.errors import (
    AlreadyRunningError,
    ConcurrencyError,
    HephaestusError,
    InstanceNotFoundError,
    StorageError,
)
from hephaestus.storage._group_commit import GroupCommit
from hephaestus.storage._layout import Known, KnownStates, RowWrite, full
from hephaestus.storage._sql import Migration, load_migrations, load_queries
from hephaestus.storage.base import (
    PROBLEM_LIMIT,
    AsyncContext,
    Query,
    RunnerRecord,
    StorageStats,
    as_utc,
    check_keep_runs,
    check_put,
    decode,
    decode_rows,
    decode_stored,
    log_quarantined,
    not_found,
    prefix_range,
    timer_due,
)

__all__ = ["PostgresStorage", "PostgresTransaction", "migrate"]

_SQL_PACKAGE = "hephaestus.storage.sql.postgres"
MIGRATIONS: tuple[Migration, ...] = load_migrations(_SQL_PACKAGE)
SCHEMA_VERSION = MIGRATIONS[-1].version
_QUERIES = load_queries(_SQL_PACKAGE)

_Connection = psycopg.AsyncConnection[TupleRow]

_SCHEMES = ("postgresql", "postgres")
_URL_FORMAT = "postgresql://user:password@host:5432/database"
_ACTIVE = [status.value for status in Status if status.is_active]
# Advisory locks taken by `migrate` are (this class, a hash of the schema name).
_LOCK_CLASS = 0x48455048
# Serialization failure and deadlock: nothing was written, the batch is sent again.
_TRANSIENT = ("40001", "40P01")

#: Characters of log rows past which a write is sent as a statement of its own.
_LARGE_LOG_ROWS = 8_192
_ATTEMPTS = 3
# An update of a state this process does not know rewrites the whole log of an instance
# with at most this many history entries; a longer one is first looked up, so that only
# the entries it lacks are sent (one more round trip, rare: readers and writers know).
_REWRITE_AT_MOST = 16
# PostgreSQL's jsonb cannot hold a NUL character (\u0000).
_UNTRANSLATABLE_CHARACTER = "22P05"


@dataclass(slots=True)
class _Write:
    """A `put` to make: the statement, its parameters and the instance."""

    instance: Instance
    expected_revision: int | None
    owner: str | None
    params: dict[str, Any]
    rows: RowWrite
    #: The state stored by the commit (for the known states).
    written: Known | None = None

    @property
    def statement(self) -> str:
        return "write_create" if self.expected_revision is None else "write_update"

    @property
    def large(self) -> bool:
        """Whether its log rows are large (a step output of many kilobytes)."""
        return sum(len(entry) for _, entry in self.rows.entries) > _LARGE_LOG_ROWS


class PostgresStorage(AsyncContext):
    """Instances in a PostgreSQL database; see the module docstring for the guarantees.

    `url` is `postgresql://user:password@host:port/database` (or
    `postgres://...`, with any libpq parameters as query string). Create the
    schema first with `hephaestus db migrate --storage URL` or `await
    migrate(url)`. `schema` is the PostgreSQL schema holding the table;
    `min_size` and `max_size` bound the connection pool; `connect_timeout` is
    how many seconds opening a connection may take, and `timeout` how many
    seconds a call waits for a free connection of the pool; `keep_runs` how
    many earlier runs of an id are kept (`runs()`).
    """

    def __init__(
        self,
        url: str,
        *,
        schema: str = "public",
        min_size: int = 1,
        max_size: int = 10,
        connect_timeout: float = 5.0,
        timeout: float = 10.0,
        keep_runs: int = 10,
    ) -> None:
        self._params = _parse_url(url)
        _check_schema_name(schema)
        if isinstance(min_size, bool) or min_size < 0:
            raise ValueError(f"min_size must be an int >= 0, got {min_size!r}")
        if isinstance(max_size, bool) or max_size < max(min_size, 1):
            raise ValueError(
                f"max_size must be an int >= 1 and >= min_size ({min_size}), got {max_size!r}"
            )
        if not connect_timeout > 0 or not timeout > 0:
            raise ValueError(
                f"connect_timeout and timeout must be seconds > 0, got {connect_timeout!r} "
                f"and {timeout!r}"
            )
        self.url = url
        #: How many earlier runs of an id are kept when it is started again (`runs()`).
        self.keep_runs = check_keep_runs(keep_runs)
        self._known = KnownStates()
        self.schema = schema
        self.min_size = min_size
        self.max_size = max_size
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self.where = _describe(self._params)
        self.stats = StorageStats()
        self._q = _render(schema)
        self._pool: AsyncConnectionPool[_Connection] | None = None
        self._listener: _Connection | None = None
        self._state: Literal["new", "open", "closing", "closed"] = "new"
        self._commits = GroupCommit(
            self._write_batch, name=repr(self), interrupted=_INTERRUPTED.format(where=self.where)
        )

    def __repr__(self) -> str:
        return f"PostgresStorage({_redact(self.url)!r}, schema={self.schema!r})"

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect, check that the schema is migrated to this version, and start the pool."""
        if self._pool is not None:
            return
        async with await _connect(self.url, self._params, self.connect_timeout) as conn:
            await self._check_schema(conn)
        kwargs: dict[str, Any] = {"autocommit": True}
        if "connect_timeout" not in self._params:
            kwargs["connect_timeout"] = _whole_seconds(self.connect_timeout)
        if "application_name" not in self._params:
            kwargs["application_name"] = "hephaestus"
        pool: AsyncConnectionPool[_Connection] = AsyncConnectionPool(
            self.url,
            min_size=self.min_size,
            max_size=self.max_size,
            open=False,
            kwargs=kwargs,
            configure=self._configure,
            timeout=self.timeout,
            name=f"hephaestus {self.where}",
        )
        try:
            await pool.open(wait=True, timeout=self.connect_timeout)
        except BaseException as exc:
            await pool.close()
            if isinstance(exc, PoolTimeout):
                raise StorageError(
                    f"cannot open {self.min_size} connection(s) to PostgreSQL at {self.where} "
                    f"within {self.connect_timeout}s; check that the server accepts that many "
                    "more connections (max_connections) and lower min_size if needed"
                ) from exc
            raise
        self._pool = pool
        self._state = "open"

    async def close(self) -> None:
        """Commit every queued write, then close the pool's connections."""
        pool = self._pool
        if pool is None:
            return
        self._state = "closing"
        await self._commits.drain()
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(psycopg.Error):
                await listener.close()
        try:
            await pool.close()
        finally:
            self._pool = None
            self._state = "closed"

    # -- the contract ------------------------------------------------------------------------

    async def get(self, instance_id: str) -> Instance:
        rows = await self._fetch(self._q["get_instance"], {"id": instance_id})
        if not rows:
            raise not_found(instance_id)
        _, head, seqs, entries, run, problem = rows[0]
        known = await decode_stored(
            instance_id, head, _log(seqs, entries), run, problem, self._quarantine
        )
        self._known.remember(known)
        return known.instance

    async def put(
        self, instance: Instance, expected_revision: int | None, *, owner: str | None = None
    ) -> None:
        self._check_open()
        write = self._prepare(instance, expected_revision, owner)
        if (
            write.params["run"] is None
            and expected_revision is not None
            and len(instance.execution_history) > _REWRITE_AT_MOST
        ):
            write = await self._extending(write)
        try:
            await self._commits.submit(write)
        except BaseException:
            self._known.forget(instance.id)
            raise
        if write.written is not None:
            self._known.remember(write.written, written=True)

    async def workflows(self) -> list[str]:
        return [str(row[0]) for row in await self._fetch(self._q["workflows"], {})]

    async def runs(self, instance_id: str, limit: int = 20) -> list[Instance]:
        if limit <= 0:
            return []
        rows = await self._fetch(self._q["list_runs"], {"id": instance_id, "limit": limit})
        return [known.instance for known in decode_rows(_rows(rows))[0]]

    def _prepare(
        self,
        instance: Instance,
        expected_revision: int | None,
        owner: str | None,
        known: tuple[RowWrite, int | None] | None = None,
    ) -> _Write:
        rows, run = known or self._known.write_for(instance, expected_revision)
        params = _write_params(instance, expected_revision, owner, rows, run, self.keep_runs)
        return _Write(instance, expected_revision, owner, params, rows)

    async def _extending(self, write: _Write) -> _Write:
        """An update of a state this process does not know: look up how long the stored
        history is, and write only the entries it lacks (the statement checks it still is)."""
        rows = await self._fetch(self._q["log_position"], {"id": write.instance.id})
        if not rows:
            return write  # the statement reports the missing instance
        run, length = rows[0]
        if length > len(write.instance.execution_history):
            return write  # not an extension: every row is written again
        extended = (full(write.instance, length), int(run))
        return self._prepare(write.instance, write.expected_revision, write.owner, extended)

    @property
    def pool(self) -> AsyncConnectionPool[_Connection]:
        """The connection pool (for a job queue that shares the database, like Procrastinate)."""
        self._check_open()
        assert self._pool is not None
        return self._pool

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[PostgresTransaction]:
        """One transaction on one connection, for writes that must commit with other rows.

        The distributed runner stores a new state together with the jobs it
        implies. These writes bypass group commit; they are durable when the
        block exits, and nothing of them is stored if it raises.
        """
        self._check_open()
        try:
            async with self._connection(checked=True) as conn, conn.transaction():
                tx = PostgresTransaction(self, conn)
                yield tx
        except psycopg.Error as exc:
            raise self._error(exc) from exc
        if tx.writes:
            self.stats.transactions += 1
            self.stats.writes += tx.writes

    async def unattended_instances(self, older_than: float) -> list[str]:
        """Ids of instances with step results or due timers waiting for `older_than` seconds."""
        rows = await self._fetch(self._q["unattended_instances"], {"seconds": older_than})
        return [str(row[0]) for row in rows]

    async def pending_jobs(self, queue: str) -> int:
        """Jobs of `queue` that are running or due now (the distributed runner's backlog)."""
        rows = await self._fetch(self._q["pending_jobs"], {"queue": queue})
        return int(rows[0][0]) if rows else 0

    async def check_job_queue_schema(self) -> None:
        """Refuse to run jobs on a database where `hephaestus db migrate` did not add the queue."""
        rows = await self._fetch(self._q["job_queue_exists"], {})
        if not (rows and rows[0][0]):
            raise StorageError(
                f"PostgreSQL database {self.where} has no job queue tables; create them with "
                f"`hephaestus db migrate --storage {_redact(self.url)}` (with the `distributed` "
                "extra installed)"
            )

    async def delete(self, instance_id: str) -> None:
        self._check_open()
        self._known.forget(instance_id)
        try:
            async with self._connection(checked=True) as conn:
                cursor = await conn.execute(self._q["delete"], {"id": instance_id})
                deleted = cursor.rowcount
        except psycopg.Error as exc:
            raise self._error(exc) from exc
        if not deleted:
            raise not_found(instance_id)
        self.stats.transactions += 1
        self.stats.writes += 1

    async def query(self, query: Query) -> list[Instance]:
        select = self._select(query)
        if select is None:
            return []
        return [known.instance for known in await self._decoded(await self._fetch(*select))]

    async def due_timers(
        self, now: datetime, limit: int = 1000, *, runner_id: str | None = None
    ) -> list[str]:
        if limit <= 0:
            return []
        params = {"now": as_utc(now), "limit": limit, "runner": runner_id}
        query = self._q["due_timers" if runner_id is None else "due_timers_for"]
        return [str(row[0]) for row in await self._fetch(query, params)]

    async def next_timer_at(self) -> datetime | None:
        rows = await self._fetch(self._q["next_timer_at"], {})
        earliest = rows[0][0] if rows else None
        return None if earliest is None else cast(datetime, earliest).astimezone(UTC)

    # -- ownership -------------------------------------------------------------------------

    async def register_runner(self, runner: RunnerRecord) -> None:
        await self._modify(
            self._q["register_runner"],
            {
                "id": runner.id,
                "host": runner.host,
                "pid": runner.pid,
                "started_at": runner.started_at,
                "heartbeat_at": runner.heartbeat_at,
                "lease_until": runner.lease_until,
            },
        )

    async def renew_runner(self, runner_id: str, now: float, lease_until: float) -> bool:
        changed, _ = await self._modify(
            self._q["renew_runner"], {"id": runner_id, "now": now, "lease_until": lease_until}
        )
        return changed > 0

    async def remove_runner(self, runner_id: str) -> None:
        await self._modify(self._q["remove_runner"], {"id": runner_id})

    async def runners(self) -> list[RunnerRecord]:
        rows = await self._fetch(self._q["list_runners"], {})
        return [RunnerRecord(*row) for row in rows]

    async def reap_runners(self, now: float, *, orphans: bool = False) -> list[str]:
        _, rows = await self._modify(self._q["reap_runners"], {"now": now})
        if orphans:
            await self._modify(self._q["release_orphans"], {})
        return [str(row[0]) for row in rows]

    async def claim(
        self,
        runner_id: str,
        *,
        instance_id: str | None = None,
        instance_ids: Sequence[str] | None = None,
        limit: int = 100,
    ) -> list[Instance]:
        params: dict[str, Any]
        if instance_id is not None:
            query, params = self._q["claim_one"], {"runner": runner_id, "id": instance_id}
        elif instance_ids is not None:
            if not instance_ids:
                return []
            query = self._q["claim_ids"]
            params = {"runner": runner_id, "ids": list(dict.fromkeys(instance_ids))}
        elif limit <= 0:
            return []
        else:
            query, params = self._q["claim_unowned"], {"runner": runner_id, "limit": limit}
        _, rows = await self._modify(query, params)
        claimed = await self._decoded(rows)
        for known in claimed:
            self._known.remember(known)
        return [known.instance for known in claimed]

    async def claim_for_drive(
        self, runner_id: str, instance_ids: Sequence[str], *, reread_owned: bool = False
    ) -> tuple[list[Instance], set[str]]:
        """Claim, for a drive job of the distributed runner, those of `instance_ids` that have
        no owner or are `runner_id`'s already; waits for rows other transactions hold
        (`claim(instance_ids=...)` skips them). PostgreSQL only, not part of `Storage`.

        Returns the instances and the ids of those that `runner_id` owned already. A
        newly claimed instance is as stored (read again if the statement's snapshot was
        older than the row it claimed). One owned already is as of the statement's
        snapshot, which may be older than its owner's own latest write: with
        `reread_owned` it is read again (call it so once no drive of it runs)."""
        if not instance_ids:
            return [], set()
        params = {"runner": runner_id, "ids": list(dict.fromkeys(instance_ids))}
        _, rows = await self._modify(self._q["claim_drive"], params)
        found: dict[str, int | None] = {}
        for row in rows:
            iid = str(row[0])
            found[iid] = None if iid in found else row[5]
        owned = {iid for iid, revision in found.items() if revision is None}
        claimed: list[Instance] = []
        seen: set[str] = set()
        for known in await self._decoded(rows):
            instance = known.instance
            if instance.id in seen:
                continue
            seen.add(instance.id)
            if instance.id in owned and not reread_owned:
                claimed.append(instance)
            elif found.get(instance.id) == instance.revision:
                self._known.remember(known)
                claimed.append(instance)
            else:
                # The head read is older than the row (a writer committed in between, a
                # step's completion perhaps): read it again, now that this runner holds it.
                with contextlib.suppress(InstanceNotFoundError):
                    claimed.append(await self.get(instance.id))
        return claimed, owned

    async def release_driven(
        self, drives: Sequence[tuple[str, str, int]], now: datetime
    ) -> list[str]:
        """Release instances whose drive ended, each `(id, owner, revision)`: only where
        the owner still holds it at that revision and no timer is due by `now`. Returns
        the ids kept (owned by that owner still): they changed meanwhile, or a timer is
        due; their owner drives them again. PostgreSQL only, not part of `Storage`."""
        if not drives:
            return []
        payload = _dumps(
            [{"id": iid, "owner": owner, "revision": revision} for iid, owner, revision in drives]
        )
        _, rows = await self._modify(
            self._q["release_driven"], {"drives": payload, "now": as_utc(now)}
        )
        return [str(row[0]) for row in rows]

    async def quarantined(self, limit: int = 100) -> list[tuple[str, str]]:
        rows = await self._fetch(self._q["quarantined"], {"limit": limit})
        return [(str(row_id), str(problem)) for row_id, problem in rows]

    async def _decoded(self, rows: list[TupleRow]) -> list[Known]:
        """The instances of `(id, head, seqs, entries)` rows; corrupt ones are quarantined
        and left out."""
        instances, bad = decode_rows(_rows(rows))
        if bad:
            await self._quarantine(bad)
        return instances

    async def _quarantine(self, bad: list[tuple[str, str]]) -> None:
        log_quarantined(self, bad)
        for row_id, problem in bad:
            await self._modify(self._q["quarantine"], {"id": row_id, "problem": problem})

    async def commands_for(self, runner_id: str, limit: int = 100) -> list[str]:
        rows = await self._fetch(self._q["commands_for"], {"runner": runner_id, "limit": limit})
        return [str(row[0]) for row in rows]

    async def owner_of(self, instance_id: str) -> str | None:
        rows = await self._fetch(self._q["owner_of"], {"id": instance_id})
        if not rows:
            raise not_found(instance_id)
        return None if rows[0][0] is None else str(rows[0][0])

    async def wait_for_changes(self, timeout: float) -> None:
        self._check_open()
        try:
            if self._listener is None or self._listener.closed:
                self._listener = await _connect(self.url, self._params, self.connect_timeout)
                await self._listener.execute(self._q["listen_work"])
            async for _ in self._listener.notifies(timeout=timeout, stop_after=1):
                pass
        except (psycopg.Error, StorageError):
            # No listener now (the server is away): wait out the timeout, runners poll anyway.
            listener, self._listener = self._listener, None
            if listener is not None:
                with contextlib.suppress(psycopg.Error):
                    await listener.close()
            await asyncio.sleep(timeout)

    async def _modify(
        self, statement: LiteralString, params: dict[str, Any]
    ) -> tuple[int, list[TupleRow]]:
        """Run one writing statement (its own transaction); rows changed and rows returned."""
        self._check_open()
        try:
            async with self._connection(checked=True) as conn:
                cursor = await conn.execute(statement, params)
                rows = await cursor.fetchall() if cursor.description is not None else []
                return cursor.rowcount, rows
        except psycopg.Error as exc:
            raise self._error(exc) from exc

    # -- group commit ----------------------------------------------------------------------------

    async def _write_batch(self, batch: list[_Write]) -> list[HephaestusError | None]:
        """Apply `batch` in one transaction; a refused write fails alone and writes nothing."""
        # Rows are locked in id order on every node, so two batches never deadlock; the
        # sort is stable, so the writes of one id keep the order they were made in.
        order = sorted(range(len(batch)), key=lambda index: batch[index].instance.id)
        writes = [batch[index] for index in order]
        isolate = False
        attempt = 1
        while True:
            try:
                async with self._connection(checked=True) as conn:
                    if isolate:
                        outcomes = await self._apply_each(conn, writes)
                    else:
                        outcomes = await self._apply_all(conn, writes)
                break
            except psycopg.Error as exc:
                if exc.sqlstate in _TRANSIENT and attempt < _ATTEMPTS:
                    attempt += 1
                elif not isolate and not isinstance(exc, psycopg.OperationalError):
                    # One write was refused and took the transaction with it: nothing is
                    # stored yet, so send the batch again with a savepoint per write.
                    isolate = True
                else:
                    raise StorageError(self._batch_failed(len(batch), exc)) from exc
        written = sum(outcome is None for outcome in outcomes)
        if written:
            self.stats.transactions += 1
            self.stats.writes += written
        results: list[HephaestusError | None] = [None] * len(batch)
        for index, outcome in zip(order, outcomes, strict=True):
            results[index] = outcome
        return results

    async def _apply_all(
        self, conn: _Connection, writes: list[_Write]
    ) -> list[HephaestusError | None]:
        """Every write in one transaction, sent in one pipeline: the creates of distinct new
        ids in one statement (`write_creates`), the updates that extend a known run of
        distinct instances in another (`write_updates`), the others one statement each.
        A create whose id turned out to hold a row is made after, on its own."""
        creates, updates, alone = _grouped(writes)
        async with conn.transaction():
            cursors = []
            async with conn.pipeline():
                if creates:
                    created = conn.cursor()
                    await created.execute(self._q["write_creates"], _batch_params(creates))
                if updates:
                    updated = conn.cursor()
                    await updated.execute(self._q["write_updates"], _batch_params(updates))
                for write in alone:
                    cursor = conn.cursor()
                    await cursor.execute(self._q[write.statement], write.params)
                    cursors.append(cursor)
            rows: dict[int, TupleRow | None] = {}
            if updates:
                by_id = {row[0]: row[1:] for row in await updated.fetchall()}
                rows.update((id(write), by_id.get(write.instance.id)) for write in updates)
            for write, cursor in zip(alone, cursors, strict=True):
                rows[id(write)] = await cursor.fetchone()
            if creates:
                made = {row[0] for row in await created.fetchall()}
                for write in creates:
                    if write.instance.id in made:
                        rows[id(write)] = _CREATED
                    else:  # its id holds a row: archive a finished run, or refuse
                        cursor = await conn.execute(self._q["write_create"], write.params)
                        rows[id(write)] = await cursor.fetchone()
            return [await self._outcome(conn, write, rows[id(write)]) for write in writes]

    async def _apply_each(
        self, conn: _Connection, writes: list[_Write]
    ) -> list[HephaestusError | None]:
        """Every write in one transaction, each in a savepoint, so a refused one fails alone."""
        outcomes: list[HephaestusError | None] = []
        async with conn.transaction():
            for write in writes:
                try:
                    async with conn.transaction():
                        cursor = await conn.execute(self._q[write.statement], write.params)
                        row = await cursor.fetchone()
                except psycopg.OperationalError:
                    raise
                except psycopg.Error as exc:
                    outcomes.append(self._refused(write, exc))
                    continue
                outcomes.append(await self._outcome(conn, write, row))
        return outcomes

    async def _outcome(
        self, conn: _Connection, write: _Write, row: TupleRow | None
    ) -> HephaestusError | None:
        """`None` if the write was made, else the error that explains why it was not."""
        assert row is not None  # the statement always returns one row
        written, status, revision, owner, run, _ = row
        if written:
            write.written = Known(write.instance, int(run), write.rows.overrides)
            return None
        refusal = _refusal(write, status, revision, owner)
        if refusal is None:
            # Another process changed the row after this statement's snapshot: read it again.
            cursor = await conn.execute(self._q["get_version"], {"id": write.instance.id})
            current = await cursor.fetchone()
            refusal = _refusal(write, *(current or (None, None, None)))
        if refusal is not None:
            return refusal
        if write.expected_revision is None:
            return AlreadyRunningError(
                f"instance {write.instance.id} was created by another writer at the same time; "
                "wait for it to finish or cancel it before starting another with the same id"
            )
        return ConcurrencyError(
            f"instance {write.instance.id} was changed by another writer while this write "
            "waited; read it again and retry"
        )

    def _refused(self, write: _Write, exc: psycopg.Error) -> StorageError:
        if exc.sqlstate == _UNTRANSLATABLE_CHARACTER:
            message = (
                f"PostgreSQL cannot store instance {write.instance.id}: its JSON holds a NUL "
                "character (\\u0000), which the jsonb type refuses; remove NUL characters "
                "from its context and step updates"
            )
        else:
            message = (
                f"PostgreSQL at {self.where} refused to store instance {write.instance.id} "
                f"({_reason(exc)}); nothing of it was stored"
            )
        error = StorageError(message)
        error.__cause__ = exc
        return error

    def _batch_failed(self, count: int, exc: psycopg.Error) -> str:
        if isinstance(exc, psycopg.OperationalError):
            return (
                f"PostgreSQL at {self.where}: writing {count} instance(s) failed "
                f"({_reason(exc)}); if the connection broke during the commit some may have "
                "been stored: read them before writing again"
            )
        return (
            f"PostgreSQL at {self.where}: writing {count} instance(s) failed ({_reason(exc)}); "
            "nothing of them was stored"
        )

    # -- connections -----------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._state != "open":
            state = "not open yet" if self._state == "new" else "closed"
            raise StorageError(
                f"PostgreSQL storage {self.where} is {state}; open it first "
                "(`await storage.open()` or `async with PostgresStorage(...)`)"
            )

    @contextlib.asynccontextmanager
    async def _connection(self, *, checked: bool = False) -> AsyncIterator[_Connection]:
        """A connection of the pool; `checked` first makes sure it still works.

        Connections break when the server restarts or drops them. Reads find out
        by failing and are tried again (`_fetch`); a batch of writes checks its
        connection first, because a write that failed mid-commit cannot be retried.
        """
        pool = self._pool
        if pool is None:
            self._check_open()
            raise AssertionError("an open storage has a pool")  # pragma: no cover
        conn = await self._getconn(pool)
        for _ in range(self.max_size if checked else 0):
            try:
                await AsyncConnectionPool.check_connection(conn)
                break
            except psycopg.OperationalError:
                await pool.putconn(conn)  # broken: the pool drops it and opens another
                conn = await self._getconn(pool)
        try:
            yield conn
        finally:
            # A connection returned in the middle of a statement (cancelled) is closed.
            await pool.putconn(conn)

    async def _getconn(self, pool: AsyncConnectionPool[_Connection]) -> _Connection:
        task = asyncio.current_task()
        cancelling = 0 if task is None else task.cancelling()
        try:
            conn = await pool.getconn()
        except PoolTimeout as exc:
            raise StorageError(
                f"no connection to PostgreSQL at {self.where} within {self.timeout}s: the "
                f"server is unreachable or all {self.max_size} connections of the pool are "
                "busy; check the server, or raise max_size or timeout"
            ) from exc
        if task is not None and task.cancelling() > cancelling:
            # Cancelled while a connection was being handed over: on Python 3.11 the pool's
            # `asyncio.wait_for` can then return the connection and drop the cancellation,
            # which would leave a task that was told to stop running (and a close() waiting).
            await pool.putconn(conn)
            raise asyncio.CancelledError
        return conn

    async def _configure(self, conn: _Connection) -> None:
        """Make every new connection commit durably (see the module docstring)."""
        cursor = await conn.execute(self._q["show_synchronous_commit"])
        row = await cursor.fetchone()
        if row is not None and row[0] == "off":
            await conn.execute(self._q["commit_synchronously"])

    async def _fetch(self, statement: LiteralString, params: dict[str, Any]) -> list[TupleRow]:
        """The rows of a read; tried again on another connection if its connection broke."""
        self._check_open()
        attempts = self.max_size + 1
        try:
            for attempt in range(1, attempts + 1):
                async with self._connection() as conn:
                    try:
                        cursor = await conn.execute(statement, params)
                        return await cursor.fetchall()
                    except psycopg.OperationalError:
                        if not conn.broken or attempt == attempts:
                            raise
        except psycopg.Error as exc:
            raise self._error(exc) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _error(self, exc: psycopg.Error) -> StorageError:
        return StorageError(f"PostgreSQL at {self.where}: {_reason(exc)}")

    async def _check_schema(self, conn: _Connection) -> None:
        """Refuse a database that is not migrated to exactly this version of the schema."""
        version = await _schema_version(conn, self._q)
        url = _redact(self.url)
        if self.schema != "public":
            url += f"{'&' if '?' in url else '?'}schema={self.schema}"
        command = f"`hephaestus db migrate --storage {url}`"
        if version == 0:
            raise StorageError(
                f"PostgreSQL database {self.where} has no Hephaestus tables in schema "
                f"{self.schema!r}; create them with {command}, then open the storage again"
            )
        if version < SCHEMA_VERSION:
            raise StorageError(
                f"PostgreSQL database {self.where} has Hephaestus schema version {version}, "
                f"older than the {SCHEMA_VERSION} this Hephaestus needs; upgrade it with {command}"
            )
        if version > SCHEMA_VERSION:
            raise StorageError(_newer(self.where, version))

    def _select(self, query: Query) -> tuple[LiteralString, dict[str, Any]] | None:
        """The SQL and parameters of `query`, or `None` when it can match nothing."""
        clauses: list[LiteralString] = []
        params: dict[str, Any] = {}
        if query.id is not None:
            clauses.append("id = %(id)s")
            params["id"] = query.id
        if query.status is not None:
            clauses.append("status = %(status)s")
            params["status"] = str(query.status)
        if query.status_in is not None:
            if not query.status_in:
                return None
            clauses.append("status = ANY(%(status_in)s::text[])")
            params["status_in"] = [str(status) for status in query.status_in]
        if query.workflow is not None:
            clauses.append("workflow = %(workflow)s")
            params["workflow"] = query.workflow
        if query.workflow_in is not None:
            if not query.workflow_in:
                return None
            clauses.append("workflow = ANY(%(workflow_in)s::text[])")
            params["workflow_in"] = list(query.workflow_in)
        if query.workflow_version is not None:
            clauses.append("workflow_version = %(workflow_version)s")
            params["workflow_version"] = query.workflow_version
        if query.after is not None:
            clauses.append("id > %(after)s")
            params["after"] = query.after
        if query.id_prefix is not None:
            low, high = prefix_range(query.id_prefix)
            clauses.append("id >= %(prefix_low)s")
            params["prefix_low"] = low
            if high is not None:
                clauses.append("id < %(prefix_high)s")
                params["prefix_high"] = high
        if query.updated_since is not None:
            clauses.append("updated_at >= %(updated_since)s")
            params["updated_since"] = as_utc(query.updated_since)
        if query.cursor is not None:
            clauses.append("(updated_at, id) < (%(cursor_at)s, %(cursor_id)s)")
            params["cursor_at"] = as_utc(query.cursor[0])
            params["cursor_id"] = query.cursor[1]
        statement = self._q["select_heads"].rstrip(";")
        if clauses:
            statement += " AND " + " AND ".join(clauses)  # after its `WHERE problem IS NULL`
        if query.order == "updated":
            statement += " ORDER BY updated_at DESC, id DESC"
        else:
            statement += " ORDER BY id"
        if query.limit is not None:
            statement += " LIMIT %(limit)s"
            params["limit"] = query.limit
        return statement, params

    # -- operators ---------------------------------------------------------------------------

    async def counts(self) -> dict[tuple[str, str], int]:
        rows = await self._fetch(self._q["count_by_workflow_status"], {})
        return {(str(workflow), str(status)): int(n) for workflow, status, n in rows}


class PostgresTransaction:
    """Reads and writes inside `PostgresStorage.transaction()`, on its one connection."""

    def __init__(self, storage: PostgresStorage, connection: _Connection) -> None:
        self.storage = storage
        self.connection = connection
        self.writes = 0
        self._q = storage._q

    async def get(self, instance_id: str, *, for_update: bool = False) -> Instance:
        """The stored instance; with `for_update`, locked until the transaction ends."""
        if for_update:
            await self.connection.execute(self._q["lock_instance"], {"id": instance_id})
        cursor = await self.connection.execute(self._q["get_instance"], {"id": instance_id})
        row = await cursor.fetchone()
        if row is None:
            raise not_found(instance_id)
        known = decode(instance_id, row[1], _log(row[2], row[3]), row[4])
        self.storage._known.remember(known)
        return known.instance

    async def put(self, instance: Instance, expected_revision: int | None) -> None:
        """Create or update, with the rules of `Storage.put`; raises instead of writing."""
        write = self.storage._prepare(instance, expected_revision, None)
        cursor = await self.connection.execute(self._q[write.statement], write.params)
        row = await cursor.fetchone()
        refusal = await self.storage._outcome(self.connection, write, row)
        if refusal is not None:
            self.storage._known.forget(instance.id)
            raise refusal
        if write.written is not None:
            self.storage._known.remember(write.written, written=True)
        self.writes += 1

    async def release(self, instance_id: str, owner: str) -> None:
        """Release the instance if `owner` holds it, whatever its revision."""
        await self.connection.execute(self._q["release_one"], {"id": instance_id, "owner": owner})

    async def record_step_result(
        self, instance_id: str, step: str, attempt: int, outcome: dict[str, Any], duration: float
    ) -> None:
        """Store what an attempt returned (once per attempt), for the instance's advance."""
        await self.connection.execute(
            self._q["record_step_result"],
            {
                "instance_id": instance_id,
                "step": step,
                "attempt": attempt,
                "outcome": json.dumps(outcome),
                "duration": duration,
            },
        )
        self.writes += 1

    async def step_results(self, instance_id: str) -> list[dict[str, Any]]:
        """Recorded results not applied yet, oldest first."""
        cursor = await self.connection.execute(
            self._q["step_results"], {"instance_id": instance_id}
        )
        names = ("id", "step", "attempt", "outcome", "duration")
        return [dict(zip(names, row, strict=True)) for row in await cursor.fetchall()]

    async def forget_step_results(self, instance_id: str) -> None:
        """Drop every recorded result of the instance (a new instance takes over its id)."""
        await self.connection.execute(self._q["forget_step_results"], {"instance_id": instance_id})

    async def delete_step_results(self, ids: list[int]) -> None:
        """Forget results that were applied (in the same transaction as the new state)."""
        if ids:
            await self.connection.execute(self._q["delete_step_results"], {"ids": ids})


def _log(seqs: list[int] | None, entries: list[str] | None) -> list[tuple[int, str]]:
    """The log rows of a run, from the two arrays the queries aggregate."""
    return list(zip(seqs or (), entries or (), strict=True))


def _rows(rows: list[TupleRow]) -> list[tuple[str, str, list[tuple[int, str]], int]]:
    """`(id, head, seqs, entries, run)` rows as `(id, head, log, run)`."""
    return [(str(row[0]), row[1], _log(row[2], row[3]), int(row[4])) for row in rows]


def _grouped(writes: list[_Write]) -> tuple[list[_Write], list[_Write], list[_Write]]:
    """The writes `write_creates` and `write_updates` can make, each group in one statement
    (creates; updates extending a known run; each of an instance written once in the
    batch), and the others. A group of fewer than two goes with the others, and so does
    a write with large log rows: what a statement of its own costs is nothing beside
    them, and statements of their own are executed while the next ones are sent."""
    once = Counter(write.instance.id for write in writes)
    creates: list[_Write] = []
    updates: list[_Write] = []
    alone: list[_Write] = []
    for write in writes:
        if once[write.instance.id] != 1 or write.large:
            alone.append(write)
        elif write.expected_revision is None:
            creates.append(write)
        elif write.params["run"] is not None:
            updates.append(write)
        else:
            alone.append(write)
    for group in (creates, updates):
        if len(group) < 2:
            alone.extend(group)
            group.clear()
    return creates, updates, alone


#: What `write_create` returns for a create `write_creates` made: written, run 1.
_CREATED = (1, None, None, None, 1, 0)

#: The parameters of `write_update` that `write_creates` and `write_updates` take per
#: instance, as JSON (a create has no expected revision, run or base length).
_UPDATE_FIELDS = (
    "id",
    "owner",
    "needs_runner",
    "has_commands",
    "is_active",
    "workflow",
    "workflow_version",
    "status",
    "revision",
    "history_length",
    "document",
    "expected_revision",
    "run",
    "base_length",
    "notify",
)


def _batch_params(writes: list[_Write]) -> dict[str, Any]:
    """The parameters of `write_creates` or `write_updates`: the heads as one JSON document,
    and the log rows they append as three arrays."""
    updates: list[dict[str, Any]] = []
    log_ids: list[str] = []
    log_seqs: list[int] = []
    log_entries: list[str] = []
    for write in writes:
        params = write.params
        update = {field: params[field] for field in _UPDATE_FIELDS}
        due = params["next_timer_at"]
        update["next_timer_at"] = None if due is None else due.isoformat()
        update["created_at"] = params["created_at"].isoformat()
        update["updated_at"] = params["updated_at"].isoformat()
        updates.append(update)
        log_ids.extend([params["id"]] * len(write.rows.entries))
        log_seqs.extend(params["seqs"])
        log_entries.extend(params["entries"])
    return {
        "writes": _dumps(updates),
        "log_ids": log_ids,
        "log_seqs": log_seqs,
        "log_entries": log_entries,
    }


_dumps = json.JSONEncoder(separators=(",", ":")).encode


def _write_params(
    instance: Instance,
    expected_revision: int | None,
    owner: str | None,
    rows: RowWrite,
    run: int | None,
    keep_runs: int,
) -> dict[str, Any]:
    needs_runner = instance.needs_runner
    return {
        "owner": owner,
        "needs_runner": needs_runner,
        "has_commands": instance.has_new_commands,
        # A client's write of work wakes the runners; an owner's own writes need not.
        "notify": owner is None and needs_runner,
        "is_active": instance.status.is_active,
        "id": instance.id,
        "workflow": instance.workflow,
        "workflow_version": instance.workflow_version,
        "status": instance.status.value,
        "revision": instance.revision,
        "next_timer_at": timer_due(instance),
        "created_at": as_utc(instance.created_at),
        "updated_at": as_utc(instance.updated_at),
        "document": rows.head,
        "history_length": rows.history_length,
        "seqs": [seq for seq, _ in rows.entries],
        "entries": [entry for _, entry in rows.entries],
        "run": run,
        "base_length": rows.base_length,
        "keep_runs": keep_runs,
        "expected_revision": expected_revision,
        "active": _ACTIVE,
    }


async def migrate(url: str, *, schema: str = "public", connect_timeout: float = 5.0) -> list[str]:
    """Bring the database at `url` to this version's schema; return the migrations applied.

    Creates `schema` if it does not exist. Safe to run again (nothing left to
    apply returns `[]`) and from several processes at once: an advisory lock
    lets one migrate while the others wait, then find nothing to do. Refuses a
    database migrated by a newer Hephaestus.
    """
    params = _parse_url(url)
    _check_schema_name(schema)
    queries = _render(schema)
    where = _describe(params)
    lock = {"lock_class": _LOCK_CLASS, "lock_key": _lock_key(schema)}
    async with await _connect(url, params, connect_timeout) as conn:
        try:
            await conn.execute(queries["lock_schema"], lock)
            try:
                applied = await _apply_migrations(conn, queries, schema, where)
                if await _install_job_queue(conn, queries):
                    applied.append("procrastinate job queue")
                return applied
            finally:
                with contextlib.suppress(psycopg.Error):  # closing the connection unlocks too
                    await conn.execute(queries["unlock_schema"], lock)
        except psycopg.Error as exc:
            raise StorageError(
                f"migrating PostgreSQL database {where} (schema {schema!r}) failed "
                f"({_reason(exc)}); check that the user may create tables there"
            ) from exc


async def _apply_migrations(
    conn: _Connection, queries: dict[str, LiteralString], schema: str, where: str
) -> list[str]:
    cursor = await conn.execute(queries["schema_exists"], {"name": schema})
    exists = await cursor.fetchone()
    if not (exists and exists[0]):
        await conn.execute(queries["create_schema"])
    await conn.execute(queries["create_version_table"])
    current = await _schema_version(conn, queries)
    if current > SCHEMA_VERSION:
        raise StorageError(_newer(where, current))
    applied: list[str] = []
    for migration in MIGRATIONS:
        if migration.version <= current:
            continue
        name = f"{migration.version:04d}_{migration.name}"
        async with conn.transaction():
            await conn.execute(queries["use_schema"])
            await conn.execute(migration.sql)
            convert = _CONVERSIONS.get(migration.version)
            if convert is not None:
                await convert(conn)
            await conn.execute(
                queries["record_migration"], {"version": migration.version, "name": name}
            )
        applied.append(name)
    return applied


async def _split_documents(conn: _Connection) -> None:
    """Migration 4: turn each whole-instance document into a head and its log rows.

    Runs with the migration's `search_path`. A document that cannot be read as an
    instance is quarantined as it is.
    """
    cursor = await conn.execute(
        "SELECT id, document::text FROM workflow_instances WHERE problem IS NULL"
    )
    for row_id, document in await cursor.fetchall():
        try:
            instance = Instance.from_json(document)
            if instance.id != row_id:
                raise ValueError(f"its document is the instance {instance.id!r}")
        except Exception as exc:  # whatever the bytes are, they are not an instance
            await conn.execute(
                "UPDATE workflow_instances SET problem = %s, owner = NULL, needs_runner = false,"
                " has_commands = false, next_timer_at = NULL WHERE id = %s",
                (f"{type(exc).__name__}: {exc}"[:PROBLEM_LIMIT], row_id),
            )
            continue
        rows = full(instance)
        async with conn.cursor() as insert:
            await insert.executemany(
                "INSERT INTO workflow_log (instance_id, run, seq, entry) VALUES (%s, 1, %s, %s)",
                [(row_id, seq, entry) for seq, entry in rows.entries],
            )
        await conn.execute(
            "UPDATE workflow_instances SET document = %s::jsonb, history_length = %s WHERE id = %s",
            (rows.head, rows.history_length, row_id),
        )


#: Conversions of stored data that a migration's SQL cannot express, by schema version.
_CONVERSIONS = {4: _split_documents}


async def _install_job_queue(conn: _Connection, queries: dict[str, LiteralString]) -> bool:
    """Create the distributed runner's job queue tables, if its extra is installed and they
    are missing (in the database's default schema, where Procrastinate looks for them)."""
    try:
        from procrastinate.schema import SchemaManager
    except ImportError:
        return False
    cursor = await conn.execute(queries["job_queue_exists"])
    row = await cursor.fetchone()
    created = not (row and row[0])
    if created:
        async with conn.transaction():
            await conn.execute(SchemaManager.get_schema())
    await conn.execute(queries["index_job_locks"])
    return created


async def _schema_version(conn: _Connection, queries: dict[str, LiteralString]) -> int:
    """The version recorded in the schema, 0 when there is none."""
    try:
        cursor = await conn.execute(queries["schema_version"])
    except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName):
        return 0
    row = await cursor.fetchone()
    return 0 if row is None or row[0] is None else int(row[0])


async def _connect(url: str, params: dict[str, Any], connect_timeout: float) -> _Connection:
    """One connection, with errors that say where the server was looked for."""
    options: dict[str, Any] = {"autocommit": True}
    if "connect_timeout" not in params:
        options["connect_timeout"] = _whole_seconds(connect_timeout)
    try:
        return await psycopg.AsyncConnection.connect(url, **options)
    except psycopg.Error as exc:
        host = params.get("host") or "localhost"
        port = params.get("port") or "5432"
        raise StorageError(
            f"cannot connect to PostgreSQL at {_describe(params)} ({_reason(exc)}); check "
            f"that the server is running and accepts connections on host {host} port {port}, "
            "and that the user, password and database in the URL are right"
        ) from exc


def _parse_url(url: str) -> dict[str, Any]:
    scheme, separator, _ = url.partition("://") if isinstance(url, str) else ("", "", "")
    if not separator or scheme.lower() not in _SCHEMES:
        raise StorageError(
            f"malformed PostgreSQL URL {_redact(str(url))!r}: it must start with "
            f"postgresql:// or postgres://, like {_URL_FORMAT}"
        )
    try:
        params = conninfo_to_dict(url)
    except psycopg.Error as exc:
        raise StorageError(
            f"malformed PostgreSQL URL {_redact(url)!r} ({_reason(exc)}); write it like "
            f"{_URL_FORMAT}"
        ) from exc
    port = str(params.get("port") or "5432")
    if not all(part.isdigit() for part in port.split(",")):
        raise StorageError(
            f"malformed PostgreSQL URL {_redact(url)!r}: port {port!r} is not a number; "
            f"write it like {_URL_FORMAT}"
        )
    return params


def _check_schema_name(schema: str) -> None:
    if not isinstance(schema, str) or not schema or "\x00" in schema:
        raise ValueError(f"schema must be a PostgreSQL schema name, got {schema!r}")
    if len(schema.encode()) > 63:
        raise ValueError(f"schema name {schema!r} is longer than PostgreSQL's 63 bytes")


def _render(schema: str) -> dict[str, LiteralString]:
    """The named queries with `{schema}` replaced by the quoted schema name, `{log}` by the
    join that reads a head's log (`log_of_head`), and `{heads}` and `{log_rows}` by what a
    batch statement writes (`batch_heads`, `batch_log_rows`)."""
    identifier = sql.Identifier(schema)
    fragments = {
        "log": sql.SQL(_QUERIES["log_of_head"]).format(schema=identifier),
        "heads": sql.SQL(_QUERIES["batch_heads"]),
        "log_rows": sql.SQL(_QUERIES["batch_log_rows"]),
    }
    return {
        name: sql.SQL(text).format(schema=identifier, **fragments).as_string()
        for name, text in _QUERIES.items()
    }


def _describe(params: dict[str, Any]) -> str:
    """`host:port/database` of a connection, for messages (never the password)."""
    host = params.get("host") or "localhost"
    port = params.get("port") or "5432"
    database = params.get("dbname") or params.get("user") or "(default database)"
    return f"{host}:{port}/{database}"


def _redact(url: str) -> str:
    """`url` with any password replaced by `***`."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return url
    if password is None:
        return url
    netloc = parts.netloc.rpartition("@")
    userinfo = netloc[0].partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{userinfo}:***@{netloc[2]}"))


def _reason(exc: BaseException) -> str:
    """The error's text on one line."""
    return " ".join(str(exc).split()) or type(exc).__name__


def _newer(where: str, version: int) -> str:
    return (
        f"PostgreSQL database {where} has Hephaestus schema version {version}, newer than the "
        f"{SCHEMA_VERSION} this Hephaestus knows; upgrade hephaestus-workflows to use it"
    )


def _lock_key(schema: str) -> int:
    """A stable signed 32-bit key for the schema's migration lock."""
    key = zlib.crc32(schema.encode())
    return key - 2**32 if key >= 2**31 else key


def _whole_seconds(seconds: float) -> int:
    # libpq takes whole seconds and treats anything below 2 as 2.
    return max(2, int(-(-seconds // 1)))


def _refusal(
    write: _Write, status: str | None, revision: int | None, owner: str | None
) -> HephaestusError | None:
    try:
        check_put(
            write.instance,
            write.expected_revision,
            None if status is None else Status(status),
            revision,
            owner=write.owner,
            stored_owner=owner,
        )
    except HephaestusError as refused:
        return refused
    return None


_INTERRUPTED = (
    "PostgreSQL at {where}: the write was interrupted before its commit was confirmed; "
    "read the instance to see whether it was stored"
)
