"""`SQLiteStorage`: the embedded default. One file, no server, safe across crashes.

**Durability.** The database runs in WAL mode with `synchronous=FULL` by
default: a write is acknowledged (`put` returns) only after SQLite has
committed it and synced the log to disk, so every acknowledged write survives
a process kill *and* a power loss. `synchronous="NORMAL"` skips the sync on
each commit: acknowledged writes still survive a killed or crashed process,
but the last ones may be lost if the machine loses power.

**Group commit.** Syncing the disk is what a commit costs, so concurrent
writes share commits. Each `put` queues its instance and waits; one writer
task takes everything queued and applies it in a single transaction, then
answers every waiting `put`. While a batch is being committed the next one
gathers, so the busier the engine, the more writes each commit carries. Each
write is checked on its own: a stale revision (`ConcurrencyError`), a create
over an active instance (`AlreadyRunningError`) or an update of a missing one
(`InstanceNotFoundError`) fails that `put` alone and writes nothing for it,
while the rest of the batch commits. Writes for the same id in one batch are
applied in the order they were made, each seeing the one before. No `put`
returns before the commit that holds its write has returned.

**One thread.** The connection is owned by one dedicated worker thread and
every SQLite call, read or write, runs there, so the event loop never waits
on the disk and the connection is never shared between threads. Reads wait
behind a commit in progress and so never see a write before it is committed.

**Schema.** Table `workflow_instances`; each row holds the instance as JSON
plus the columns queries filter on, the due time of the earliest timer of an
active instance, and the runner that owns it. Table `hephaestus_runners`
holds the runner processes and their leases.

**Many processes.** Several processes may open the same file: SQLite
serialises their writes, and every write is checked against the stored
revision and owner inside its transaction. `wait_for_changes` watches
`PRAGMA data_version`, which moves when another connection commits, so an
idle runner notices a client's write within a few milliseconds without
reading any table. The schema version is the database's
`user_version`; `open()` applies the migrations the file lacks, and refuses a
file written by a newer Hephaestus.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

from hephaestus.core.instance import Instance, Status
from hephaestus.errors import HephaestusError, StorageError
from hephaestus.storage._group_commit import GroupCommit
from hephaestus.storage._sql import Migration, load_migrations, load_queries
from hephaestus.storage.base import (
    AsyncContext,
    Query,
    RunnerRecord,
    StorageStats,
    as_utc,
    check_put,
    decode_rows,
    decode_stored,
    log_quarantined,
    not_found,
    prefix_range,
    timer_epoch,
    to_epoch,
    written_owner,
)

__all__ = ["SQLiteStorage"]

Synchronous = Literal["FULL", "NORMAL", "EXTRA"]
_SYNCHRONOUS: tuple[Synchronous, ...] = ("FULL", "NORMAL", "EXTRA")

_SQL_PACKAGE = "hephaestus.storage.sql.sqlite"
MIGRATIONS: tuple[Migration, ...] = load_migrations(_SQL_PACKAGE)
SCHEMA_VERSION = MIGRATIONS[-1].version
_Q = load_queries(_SQL_PACKAGE)

_T = TypeVar("_T")


@dataclass(slots=True)
class _Write:
    """A queued `put`: the row to write and the revision it expects."""

    instance: Instance
    expected_revision: int | None
    owner: str | None
    row: tuple[Any, ...]


class SQLiteStorage(AsyncContext):
    """Instances in one SQLite file (WAL mode); see the module docstring for the guarantees.

    Use it as `async with SQLiteStorage("app.db") as storage:` or hand it to
    `Hephaestus(storage=...)`, which opens and closes it. `timeout` is how many
    seconds a write waits for another process holding the file's write lock.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] = "hephaestus.db",
        *,
        synchronous: Synchronous = "FULL",
        timeout: float = 5.0,
        change_poll_interval: float = 0.005,
    ) -> None:
        if synchronous not in _SYNCHRONOUS:
            raise ValueError(
                f"synchronous must be one of {', '.join(_SYNCHRONOUS)}, got {synchronous!r}"
            )
        self.path = os.fspath(path)
        self.synchronous: Synchronous = synchronous
        self.timeout = timeout
        #: How often `wait_for_changes` looks at `PRAGMA data_version`, in seconds.
        self.change_poll_interval = change_poll_interval
        self.stats = StorageStats()
        self._data_version: int | None = None
        self._conn: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._state: Literal["new", "open", "closing", "closed"] = "new"
        self._commits = GroupCommit(
            self._commit_batch,
            name=repr(self),
            interrupted=_INTERRUPTED.format(path=self.path),
        )

    def __repr__(self) -> str:
        return f"SQLiteStorage({self.path!r}, synchronous={self.synchronous!r})"

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        """Open the file (created if missing), switch it to WAL and bring the schema up to date."""
        if self._executor is not None:
            return
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hephaestus-sqlite")
        try:
            self._conn = await asyncio.get_running_loop().run_in_executor(executor, self._connect)
        except BaseException:
            executor.shutdown(wait=True)
            raise
        self._executor = executor
        self._state = "open"

    async def close(self) -> None:
        """Commit every queued write, close the connection and stop the thread."""
        executor = self._executor
        if executor is None:
            return
        self._state = "closing"
        await self._commits.drain()
        try:
            await asyncio.get_running_loop().run_in_executor(executor, self._disconnect)
        finally:
            self._executor = None
            self._state = "closed"
            executor.shutdown(wait=True)

    # -- the contract ------------------------------------------------------------------------

    async def get(self, instance_id: str) -> Instance:
        rows = await self._run(self._fetch_rows, _Q["get_document"], (instance_id,))
        if not rows:
            raise not_found(instance_id)
        document, problem = rows[0]
        return await decode_stored(instance_id, document, problem, self._quarantine)

    async def put(
        self, instance: Instance, expected_revision: int | None, *, owner: str | None = None
    ) -> None:
        self._check_open()
        row = (
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
            int(instance.has_new_commands),
        )
        await self._commits.submit(_Write(instance, expected_revision, owner, row))

    async def delete(self, instance_id: str) -> None:
        if not await self._run(self._delete, instance_id):
            raise not_found(instance_id)

    async def query(self, query: Query) -> list[Instance]:
        select = _select(query)
        if select is None:
            return []
        return await self._decoded(await self._run(self._fetch_rows, *select))

    async def due_timers(
        self, now: datetime, limit: int = 1000, *, runner_id: str | None = None
    ) -> list[str]:
        if limit <= 0:
            return []
        params: tuple[Any, ...]
        if runner_id is None:
            sql, params = _Q["due_timers"], (to_epoch(now), limit)
        else:
            sql, params = _Q["due_timers_for"], (to_epoch(now), runner_id, limit)
        rows = await self._run(self._fetch_all, sql, params)
        return [str(instance_id) for instance_id in rows]

    async def next_timer_at(self) -> datetime | None:
        rows = await self._run(self._fetch_all, _Q["next_timer_at"], ())
        earliest = rows[0] if rows else None
        return None if earliest is None else datetime.fromtimestamp(earliest, UTC)

    # -- ownership -------------------------------------------------------------------------

    async def register_runner(self, runner: RunnerRecord) -> None:
        await self._run(
            self._write,
            [
                (
                    _Q["register_runner"],
                    (
                        runner.id,
                        runner.host,
                        runner.pid,
                        runner.started_at,
                        runner.heartbeat_at,
                        runner.lease_until,
                    ),
                )
            ],
        )

    async def renew_runner(self, runner_id: str, now: float, lease_until: float) -> bool:
        changed = await self._run(
            self._write, [(_Q["renew_runner"], (now, lease_until, runner_id))]
        )
        return changed > 0

    async def remove_runner(self, runner_id: str) -> None:
        await self._run(
            self._write,
            [(_Q["release_instances"], (runner_id,)), (_Q["delete_runner"], (runner_id,))],
        )

    async def runners(self) -> list[RunnerRecord]:
        rows = await self._run(self._fetch_rows, _Q["list_runners"], ())
        return [RunnerRecord(*row) for row in rows]

    async def reap_runners(self, now: float, *, orphans: bool = False) -> list[str]:
        dead = [str(r) for r in await self._run(self._fetch_all, _Q["lapsed_runners"], (now,))]
        for runner_id in dead:
            await self.remove_runner(runner_id)
        if orphans:
            await self._run(self._write, [(_Q["release_orphans"], ())])
        return dead

    async def claim(
        self, runner_id: str, *, instance_id: str | None = None, limit: int = 100
    ) -> list[Instance]:
        params: dict[str, Any]
        if instance_id is not None:
            params = {"runner": runner_id, "id": instance_id}
            return await self._decoded(await self._run(self._claim_one, params))
        if limit <= 0:
            return []
        sql, params = _Q["claim_unowned"], {"runner": runner_id, "limit": limit}
        return await self._decoded(await self._run(self._claim, sql, params))

    async def quarantined(self, limit: int = 100) -> list[tuple[str, str]]:
        rows = await self._run(self._fetch_rows, _Q["quarantined"], (limit,))
        return [(str(row_id), str(problem)) for row_id, problem in rows]

    async def _decoded(self, rows: list[tuple[Any, ...]]) -> list[Instance]:
        """The instances of `(id, document)` rows; corrupt ones are quarantined and left out."""
        instances, bad = decode_rows((str(row[0]), row[1]) for row in rows)
        if bad:
            await self._quarantine(bad)
        return instances

    async def _quarantine(self, bad: list[tuple[str, str]]) -> None:
        log_quarantined(self, bad)
        await self._run(
            self._write, [(_Q["quarantine"], (problem, row_id)) for row_id, problem in bad]
        )

    async def commands_for(self, runner_id: str, limit: int = 100) -> list[str]:
        rows = await self._run(self._fetch_all, _Q["commands_for"], (runner_id, limit))
        return [str(instance_id) for instance_id in rows]

    async def owner_of(self, instance_id: str) -> str | None:
        rows = await self._run(self._fetch_rows, _Q["owner_of"], (instance_id,))
        if not rows:
            raise not_found(instance_id)
        owner = rows[0][0]
        return None if owner is None else str(owner)

    async def wait_for_changes(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            version = await self._run(self._read_data_version)
            if self._data_version is not None and version != self._data_version:
                self._data_version = version
                return
            self._data_version = version
            left = deadline - loop.time()
            if left <= 0:
                return
            await asyncio.sleep(min(self.change_poll_interval, left))

    # -- group commit (event loop side) --------------------------------------------------------

    async def _commit_batch(self, batch: list[_Write]) -> list[HephaestusError | None]:
        executor = self._executor
        assert executor is not None  # close() drains the commits before dropping the thread
        return await asyncio.get_running_loop().run_in_executor(executor, self._write_batch, batch)

    def _check_open(self) -> None:
        if self._state != "open":
            raise self._closed_error()

    def _closed_error(self) -> StorageError:
        state = "not open yet" if self._state == "new" else "closed"
        return StorageError(
            f"SQLite storage {self.path} is {state}; open it first "
            "(`await storage.open()` or `async with SQLiteStorage(...)`)"
        )

    async def _run(self, function: Callable[..., _T], *args: Any) -> _T:
        self._check_open()
        executor = self._executor
        assert executor is not None
        return await asyncio.get_running_loop().run_in_executor(executor, function, *args)

    # -- worker thread side ----------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        path = self.path
        if path != ":memory:":
            target = Path(path)
            if not target.resolve().parent.is_dir():
                raise StorageError(
                    f"cannot open SQLite database {path}: directory "
                    f"{target.resolve().parent} does not exist; create it first or choose "
                    "another path"
                )
            if target.is_dir():
                raise StorageError(
                    f"cannot open SQLite database {path}: it is a directory; pass the path "
                    "of a database file, such as hephaestus.db inside it"
                )
        try:
            conn = sqlite3.connect(
                path, timeout=self.timeout, isolation_level=None, check_same_thread=False
            )
            try:
                conn.execute("PRAGMA journal_mode = WAL").fetchone()
                conn.execute(f"PRAGMA synchronous = {self.synchronous}")
                _migrate(conn, path)
            except BaseException:
                conn.close()
                raise
        except sqlite3.Error as exc:
            if exc.sqlite_errorcode in (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT):
                raise StorageError(
                    f"cannot use {path} as a Hephaestus database ({exc}): it is not a SQLite "
                    "database or it is damaged; pass the path of a Hephaestus database or of "
                    "a file that does not exist yet"
                ) from exc
            raise StorageError(
                f"cannot open SQLite database {path} ({exc}); check that the file and its "
                "directory may be read and written, and that no other program holds it locked"
            ) from exc
        return conn

    def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise self._closed_error()
        return self._conn

    def _write_batch(self, batch: list[_Write]) -> list[HephaestusError | None]:
        """Apply `batch` in one transaction; a refused write fails alone and writes nothing."""
        conn = self._connection()
        outcomes: list[HephaestusError | None] = []
        written = 0
        try:
            conn.execute("BEGIN IMMEDIATE")
            for write in batch:
                stored = conn.execute(_Q["get_version"], (write.instance.id,)).fetchone()
                stored_owner = None if stored is None else stored[2]
                try:
                    check_put(
                        write.instance,
                        write.expected_revision,
                        None if stored is None else Status(stored[0]),
                        None if stored is None else stored[1],
                        owner=write.owner,
                        stored_owner=stored_owner,
                    )
                except HephaestusError as refused:
                    outcomes.append(refused)
                    continue
                owner = written_owner(
                    write.instance, write.owner, write.expected_revision, stored_owner
                )
                conn.execute(_Q["upsert"], (*write.row, owner))
                outcomes.append(None)
                written += 1
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            _rollback(conn)
            raise StorageError(
                f"SQLite database {self.path}: writing {len(batch)} instance(s) failed ({exc}); "
                "nothing of them was stored"
            ) from exc
        except BaseException:
            _rollback(conn)
            raise
        if written:
            self.stats.transactions += 1
            self.stats.writes += written
        return outcomes

    def _write(self, statements: list[tuple[str, tuple[Any, ...]]]) -> int:
        """Run `statements` in one transaction; how many rows the last one changed."""

        def run(conn: sqlite3.Connection) -> int:
            changed = 0
            for sql, params in statements:
                changed = conn.execute(sql, params).rowcount
            return changed

        return self._transaction(run)

    def _claim_one(self, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        """An instance owned already is only read: no write, so no sync of the disk."""
        owned = self._guarded(self._connection().execute, _Q["owned_document"], params)
        rows = [tuple(row) for row in owned.fetchall()]
        return rows or self._claim(_Q["claim_one"], params)

    def _claim(self, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        return self._transaction(
            lambda conn: [tuple(row) for row in conn.execute(sql, params).fetchall()]
        )

    def _transaction(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        conn = self._connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
            result = work(conn)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            _rollback(conn)
            raise StorageError(f"SQLite database {self.path}: {exc}") from exc
        except BaseException:
            _rollback(conn)
            raise
        return result

    def _read_data_version(self) -> int:
        row = self._guarded(self._connection().execute, "PRAGMA data_version").fetchone()
        return int(row[0])

    def _fetch_rows(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        cursor = self._guarded(self._connection().execute, sql, params)
        return [tuple(row) for row in cursor.fetchall()]

    def _fetch_all(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        cursor = self._guarded(self._connection().execute, sql, params)
        return [row[0] for row in cursor.fetchall()]

    def _delete(self, instance_id: str) -> bool:
        cursor = self._guarded(self._connection().execute, _Q["delete"], (instance_id,))
        if cursor.rowcount == 0:
            return False
        self.stats.transactions += 1
        self.stats.writes += 1
        return True

    def _guarded(self, function: Callable[..., _T], *args: Any) -> _T:
        try:
            return function(*args)
        except sqlite3.Error as exc:
            raise StorageError(f"SQLite database {self.path}: {exc}") from exc

    # -- operators ---------------------------------------------------------------------------

    async def runs(self, instance_id: str, limit: int = 20) -> list[Instance]:
        return []  # earlier runs are not kept by this adapter yet

    async def counts(self) -> dict[tuple[str, str], int]:
        rows = await self._run(self._fetch_rows, _Q["count_by_workflow_status"], ())
        return {(str(workflow), str(status)): int(n) for workflow, status, n in rows}


def _migrate(conn: sqlite3.Connection, path: str) -> None:
    """Apply the migrations `conn`'s database lacks, each in its own transaction."""
    version = _user_version(conn)
    if version > SCHEMA_VERSION:
        raise StorageError(
            f"database {path} has schema version {version}, newer than the {SCHEMA_VERSION} "
            "this Hephaestus knows; upgrade hephaestus-workflows to open it"
        )
    for migration in MIGRATIONS:
        if migration.version <= version:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Another process may have migrated while we waited for the lock.
            if _user_version(conn) < migration.version:
                for statement in _statements(migration.sql):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {migration.version:d}")
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise


def _user_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def _statements(script: str) -> list[str]:
    """Split a SQL script into complete statements (`execute` runs one at a time)."""
    statements: list[str] = []
    current = ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    rest = [line for line in current.splitlines() if not line.strip().startswith("--")]
    if "".join(rest).strip():
        raise ValueError(f"incomplete SQL statement in a migration: {current.strip()!r}")
    return statements


def _rollback(conn: sqlite3.Connection) -> None:
    # The transaction may already be gone: SQLite rolls back by itself on some errors.
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


_INTERRUPTED = (
    "SQLite database {path}: the write was interrupted before its commit was confirmed; "
    "read the instance to see whether it was stored"
)


def _select(query: Query) -> tuple[str, tuple[Any, ...]] | None:
    """The SQL and parameters of `query`, or `None` when it can match nothing."""
    clauses: list[str] = []
    params: list[Any] = []
    if query.id is not None:
        clauses.append("id = ?")
        params.append(query.id)
    if query.status is not None:
        clauses.append("status = ?")
        params.append(str(query.status))
    if query.status_in is not None:
        if not query.status_in:
            return None
        clauses.append(f"status IN ({', '.join('?' * len(query.status_in))})")
        params.extend(str(status) for status in query.status_in)
    if query.workflow is not None:
        clauses.append("workflow = ?")
        params.append(query.workflow)
    if query.workflow_in is not None:
        if not query.workflow_in:
            return None
        clauses.append(f"workflow IN ({', '.join('?' * len(query.workflow_in))})")
        params.extend(query.workflow_in)
    if query.workflow_version is not None:
        clauses.append("workflow_version = ?")
        params.append(query.workflow_version)
    if query.after is not None:
        clauses.append("id > ?")
        params.append(query.after)
    if query.id_prefix is not None:
        low, high = prefix_range(query.id_prefix)
        clauses.append("id >= ?" if high is None else "id >= ? AND id < ?")
        params.extend((low,) if high is None else (low, high))
    if query.updated_since is not None:
        clauses.append("updated_at >= ?")
        params.append(as_utc(query.updated_since).astimezone(UTC).isoformat())
    if query.cursor is not None:
        clauses.append("(updated_at, id) < (?, ?)")
        params.extend((as_utc(query.cursor[0]).astimezone(UTC).isoformat(), query.cursor[1]))
    sql = _Q["select_documents"].rstrip(";")
    if clauses:
        sql += " AND " + " AND ".join(clauses)  # after its `WHERE problem IS NULL`
    sql += " ORDER BY updated_at DESC, id DESC" if query.order == "updated" else " ORDER BY id"
    if query.limit is not None:
        sql += " LIMIT ?"
        params.append(query.limit)
    return sql, tuple(params)
