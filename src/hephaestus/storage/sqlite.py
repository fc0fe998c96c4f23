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

**Schema.** Append-only (docs/storage.md): table `workflow_instances` holds
each instance's small head (as JSON, plus the columns queries filter on, the
due time of its earliest timer and the runner that owns it), rewritten on
every change; `workflow_log` one row per history entry with the step's
output, and the run's input, each written once; `workflow_runs` the heads of
earlier runs of an id (`keep_runs` of them). A write carries only what
changed. Table `hephaestus_runners` holds the runner processes and leases.

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
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

from hephaestus.core.instance import Instance, Status
from hephaestus.errors import HephaestusError, StorageError
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
    decode_rows,
    decode_stored,
    log_quarantined,
    not_found,
    prefix_range,
    restarted,
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
# Heads whose log rows one statement reads (three parameters each, well below SQLite's limit).
_LOGS_AT_ONCE = 300
_Row = tuple[str, str, list[tuple[int, str]], int]


@dataclass(slots=True)
class _Write:
    """A queued `put`: the head columns and log rows to write, and what it expects stored."""

    instance: Instance
    expected_revision: int | None
    owner: str | None
    row: tuple[Any, ...]
    rows: RowWrite
    run: int | None
    #: The run and overrides written, set by the commit (for the known states).
    written: Known | None = None


class SQLiteStorage(AsyncContext):
    """Instances in one SQLite file (WAL mode); see the module docstring for the guarantees.

    Use it as `async with SQLiteStorage("app.db") as storage:` or hand it to
    `Hephaestus(storage=...)`, which opens and closes it. `timeout` is how many
    seconds a write waits for another process holding the file's write lock;
    `keep_runs` how many earlier runs of an id are kept (`runs()`).
    """

    def __init__(
        self,
        path: str | os.PathLike[str] = "hephaestus.db",
        *,
        synchronous: Synchronous = "FULL",
        timeout: float = 5.0,
        change_poll_interval: float = 0.005,
        keep_runs: int = 10,
    ) -> None:
        if synchronous not in _SYNCHRONOUS:
            raise ValueError(
                f"synchronous must be one of {', '.join(_SYNCHRONOUS)}, got {synchronous!r}"
            )
        self.path = os.fspath(path)
        #: How many earlier runs of an id are kept when it is started again (`runs()`).
        self.keep_runs = check_keep_runs(keep_runs)
        self._known = KnownStates()
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
        found = await self._run(self._read_instance, instance_id)
        if found is None:
            raise not_found(instance_id)
        head, log, run, problem = found
        known = await decode_stored(instance_id, head, log, run, problem, self._quarantine)
        self._known.remember(known)
        return known.instance

    async def put(
        self, instance: Instance, expected_revision: int | None, *, owner: str | None = None
    ) -> None:
        self._check_open()
        rows, run = self._known.write_for(instance, expected_revision)
        row = (
            instance.id,
            instance.workflow,
            instance.workflow_version,
            instance.status.value,
            instance.revision,
            timer_epoch(instance),
            instance.created_at.isoformat(),
            instance.updated_at.isoformat(),
            rows.head,
            int(instance.needs_runner),
            int(instance.has_new_commands),
            rows.history_length,
        )
        write = _Write(instance, expected_revision, owner, row, rows, run)
        try:
            await self._commits.submit(write)
        except BaseException:
            self._known.forget(instance.id)
            raise
        if write.written is not None:
            self._known.remember(write.written, written=True)

    async def delete(self, instance_id: str) -> None:
        self._known.forget(instance_id)
        if not await self._run(self._delete, instance_id):
            raise not_found(instance_id)

    async def workflows(self) -> list[str]:
        return [str(name) for name in await self._run(self._fetch_all, _Q["workflows"], ())]

    async def runs(self, instance_id: str, limit: int = 20) -> list[Instance]:
        if limit <= 0:
            return []
        rows = await self._run(self._read_runs, instance_id, limit)
        return [known.instance for known in decode_rows(rows)[0]]

    async def query(self, query: Query) -> list[Instance]:
        select = _select(query)
        if select is None:
            return []
        rows = await self._run(self._fetch_instances, *select)
        return [known.instance for known in await self._decoded(rows)]

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
        self,
        runner_id: str,
        *,
        instance_id: str | None = None,
        instance_ids: Sequence[str] | None = None,
        limit: int = 100,
    ) -> list[Instance]:
        params: dict[str, Any]
        if instance_id is not None:
            params = {"runner": runner_id, "id": instance_id}
            rows = await self._run(self._claim_one, params)
        elif instance_ids is not None:
            if not instance_ids:
                return []
            rows = await self._run(self._claim_ids, runner_id, list(dict.fromkeys(instance_ids)))
        elif limit <= 0:
            return []
        else:
            sql, params = _Q["claim_unowned"], {"runner": runner_id, "limit": limit}
            rows = await self._run(self._claim, sql, params)
        claimed = await self._decoded(rows)
        for known in claimed:
            self._known.remember(known)
        return [known.instance for known in claimed]

    async def quarantined(self, limit: int = 100) -> list[tuple[str, str]]:
        rows = await self._run(self._fetch_rows, _Q["quarantined"], (limit,))
        return [(str(row_id), str(problem)) for row_id, problem in rows]

    async def _decoded(self, rows: list[_Row]) -> list[Known]:
        """The instances of `(id, head, log)` rows; corrupt ones are quarantined and left out."""
        instances, bad = decode_rows(rows)
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
        """Apply `batch` in one transaction; a refused write fails alone and writes nothing.

        The stored versions are read in one statement, and the log rows and heads are
        written with one `executemany` each: every statement is a trip through the GIL,
        which the event loop's thread holds most of the time.
        """
        conn = self._connection()
        outcomes: list[HephaestusError | None] = []
        written = 0
        pending = _Pending()
        try:
            conn.execute("BEGIN IMMEDIATE")
            versions = self._versions(conn, {write.instance.id for write in batch})
            for write in batch:
                instance_id = write.instance.id
                stored = versions.get(instance_id)
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
                    if stored is not None and write.run not in (None, stored[3]):
                        raise restarted(instance_id)
                except HephaestusError as refused:
                    outcomes.append(refused)
                    continue
                owner = written_owner(
                    write.instance, write.owner, write.expected_revision, stored_owner
                )
                run, rows = self._write_log(conn, write, stored, pending)
                row = write.row
                if (
                    stored is None
                    or write.expected_revision is None
                    or tuple(stored[5:8]) != (row[1], row[2], row[6])
                ):
                    if pending.heads:
                        pending.flush(conn)  # queued heads run after upserts: keep the order
                    pending.upserts.append((*row[:8], rows.head, *row[9:], run, owner))
                else:
                    pending.heads.append(_head_columns(row, rows.head, owner))
                versions[instance_id] = (
                    row[3],
                    row[4],
                    owner,
                    run,
                    rows.history_length,
                    row[1],
                    row[2],
                    row[6],
                )
                write.written = Known(write.instance, run, rows.overrides)
                outcomes.append(None)
                written += 1
            pending.flush(conn)
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

    @staticmethod
    def _versions(conn: sqlite3.Connection, instance_ids: set[str]) -> dict[str, tuple[Any, ...]]:
        """`get_version` of each of `instance_ids` that is stored, by id."""
        ids = list(instance_ids)
        versions: dict[str, tuple[Any, ...]] = {}
        for first in range(0, len(ids), _VARIABLES):
            chunk = ids[first : first + _VARIABLES]
            sql = _Q["get_versions"].format(ids=", ".join("?" * len(chunk)))
            versions.update((row[0], tuple(row[1:])) for row in conn.execute(sql, chunk))
        return versions

    def _write_log(
        self,
        conn: sqlite3.Connection,
        write: _Write,
        stored: tuple[Any, ...] | None,
        pending: _Pending,
    ) -> tuple[int, RowWrite]:
        """Queue the log rows of `write` (archiving the run a create replaces): its run and rows.

        An update whose delta was computed from another state than the stored one (not
        known to this process, or changed by another) writes the entries the stored
        history lacks, from its stored length (of that run; all of them if it is longer).
        A statement that reads or deletes what queued rows write runs after them.
        """
        instance_id = write.instance.id
        rows = write.rows
        if stored is None or write.expected_revision is None:
            run = 1 if stored is None else int(stored[3]) + 1
            if stored is not None:
                pending.flush(conn)
                if self.keep_runs:
                    conn.execute(_Q["archive_run"], (instance_id,))
                gone = run - 1 - self.keep_runs
                conn.execute(_Q["prune_runs"], (instance_id, gone))
                conn.execute(_Q["prune_log"], (instance_id, gone))
        else:
            run, length = int(stored[3]), int(stored[4])
            if rows.base_length != length:  # (a write of another run was refused before)
                grown = length <= len(write.instance.execution_history)
                rows = full(write.instance, length if grown else None)
                pending.flush(conn)
                conn.execute(_Q["truncate_log"], (instance_id, run, rows.history_length))
        pending.log.extend((instance_id, run, seq, entry) for seq, entry in rows.entries)
        return run, rows

    def _read_instance(
        self, instance_id: str
    ) -> tuple[str, list[tuple[int, str]], int, str | None] | None:
        """The head document, log rows and problem of an instance; `None` if there is none."""

        def read(conn: sqlite3.Connection) -> tuple[Any, ...] | None:
            head = conn.execute(_Q["get_head"], (instance_id,)).fetchone()
            if head is None:
                return None
            _, document, run, length, problem = head
            if problem is not None:
                return document, [], run, problem
            return document, self._log(conn, instance_id, run, length), run, None

        return self._snapshot(read)

    def _snapshot(self, read: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run `read` in one read transaction: a head and its log rows as of one moment,
        whatever other processes commit meanwhile (WAL gives each reader a snapshot)."""
        conn = self._connection()
        try:
            conn.execute("BEGIN")
            try:
                return read(conn)
            finally:
                conn.execute("COMMIT")
        except sqlite3.Error as exc:
            _rollback(conn)
            raise StorageError(f"SQLite database {self.path}: {exc}") from exc

    def _log(
        self, conn: sqlite3.Connection, instance_id: str, run: int, length: int
    ) -> list[tuple[int, str]]:
        cursor = conn.execute(_Q["get_log"], (instance_id, run, length))
        return [(int(seq), entry) for seq, entry in cursor.fetchall()]

    def _with_logs(self, heads: list[tuple[Any, ...]]) -> list[_Row]:
        """`(id, document, run, history_length)` heads as `(id, head, log, run)` rows: the log
        rows of every head in one statement (a page of instances is one query, not one each)."""
        if len(heads) <= 1:
            conn = self._connection()
            return [
                (str(row_id), document, self._log(conn, row_id, run, length), int(run))
                for row_id, document, run, length in heads
            ]
        # By id and run: the earlier runs of one id (`runs()`) share the id.
        logs: dict[tuple[str, int], list[tuple[int, str]]] = {
            (str(head[0]), int(head[2])): [] for head in heads
        }
        for start in range(0, len(heads), _LOGS_AT_ONCE):
            part = heads[start : start + _LOGS_AT_ONCE]
            wanted = ", ".join("(?, ?, ?)" for _ in part)
            params = [value for row_id, _, run, length in part for value in (row_id, run, length)]
            sql = _Q["get_logs"].format(wanted=wanted)
            for instance_id, run, seq, entry in self._connection().execute(sql, params):
                logs[instance_id, run].append((int(seq), entry))
        return [
            (str(row_id), document, logs[str(row_id), int(run)], int(run))
            for row_id, document, run, length in heads
        ]

    def _fetch_instances(self, sql: str, params: tuple[Any, ...] | dict[str, Any]) -> list[_Row]:
        return self._snapshot(
            lambda conn: self._with_logs([tuple(row) for row in conn.execute(sql, params)])
        )

    def _read_runs(self, instance_id: str, limit: int) -> list[_Row]:
        return self._fetch_instances(_Q["list_runs"], (instance_id, limit))

    def _write(self, statements: list[tuple[str, tuple[Any, ...]]]) -> int:
        """Run `statements` in one transaction; how many rows the last one changed."""

        def run(conn: sqlite3.Connection) -> int:
            changed = 0
            for sql, params in statements:
                changed = conn.execute(sql, params).rowcount
            return changed

        return self._transaction(run)

    def _claim_one(self, params: dict[str, Any]) -> list[_Row]:
        """An instance owned already is only read: no write, so no sync of the disk."""
        rows = self._fetch_instances(_Q["owned_head"], params)
        return rows or self._claim(_Q["claim_one"], params)

    def _claim_ids(self, runner_id: str, instance_ids: list[str]) -> list[_Row]:
        """Those of `instance_ids` the runner owns (read), then the unowned ones (claimed)."""
        marks = ", ".join("?" * len(instance_ids))
        taken = self._fetch_instances(
            _Q["owned_heads"].format(ids=marks), (runner_id, *instance_ids)
        )
        rest = [i for i in instance_ids if i not in {row[0] for row in taken}]
        if rest:
            sql = _Q["claim_ids"].format(ids=", ".join("?" * len(rest)))
            taken += self._transaction(
                lambda conn: self._with_logs(
                    [tuple(row) for row in conn.execute(sql, (runner_id, *rest, runner_id))]
                )
            )
        return taken

    def _claim(self, sql: str, params: dict[str, Any]) -> list[_Row]:
        return self._transaction(
            lambda conn: self._with_logs([tuple(row) for row in conn.execute(sql, params)])
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
        def delete(conn: sqlite3.Connection) -> int:
            conn.execute(_Q["delete_log"], (instance_id,))
            conn.execute(_Q["delete_runs"], (instance_id,))
            return int(conn.execute(_Q["delete"], (instance_id,)).rowcount)

        if self._transaction(delete) == 0:
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

    async def counts(self) -> dict[tuple[str, str], int]:
        rows = await self._run(self._fetch_rows, _Q["count_by_workflow_status"], ())
        return {(str(workflow), str(status)): int(n) for workflow, status, n in rows}


#: Ids per `get_versions` statement (SQLite allows at least 999 variables).
_VARIABLES = 500


@dataclass(slots=True)
class _Pending:
    """Rows a write batch queues, written with one `executemany` per statement."""

    log: list[tuple[Any, ...]] = field(default_factory=list)
    upserts: list[tuple[Any, ...]] = field(default_factory=list)
    heads: list[dict[str, Any]] = field(default_factory=list)

    def flush(self, conn: sqlite3.Connection) -> None:
        """Write what is queued, in the order it was queued within each statement."""
        if self.log:
            conn.executemany(_Q["append_log"], self.log)
        if self.upserts:
            conn.executemany(_Q["upsert"], self.upserts)
        if self.heads:
            conn.executemany(_Q["update_head"], self.heads)
        self.log.clear()
        self.upserts.clear()
        self.heads.clear()


def _head_columns(row: tuple[Any, ...], head: str, owner: str | None) -> dict[str, Any]:
    """The `update_head` parameters of a write's `row` (in `upsert` order)."""
    return {
        "id": row[0],
        "status": row[3],
        "revision": row[4],
        "next_timer_at": row[5],
        "updated_at": row[7],
        "document": head,
        "needs_runner": row[9],
        "has_commands": row[10],
        "history_length": row[11],
        "owner": owner,
    }


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
                convert = _CONVERSIONS.get(migration.version)
                if convert is not None:
                    convert(conn)
                conn.execute(f"PRAGMA user_version = {migration.version:d}")
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise


def _split_documents(conn: sqlite3.Connection) -> None:
    """Migration 3: turn each whole-instance document into a head and its log rows.

    A document that cannot be read as an instance is quarantined as it is.
    """
    rows = conn.execute("SELECT id, document FROM workflow_instances WHERE problem IS NULL")
    for row_id, document in rows.fetchall():
        try:
            instance = Instance.from_json(document)
            if instance.id != row_id:
                raise ValueError(f"its document is the instance {instance.id!r}")
        except Exception as exc:  # whatever the bytes are, they are not an instance
            problem = f"{type(exc).__name__}: {exc}"[:PROBLEM_LIMIT]
            conn.execute(_Q["quarantine"], (problem, row_id))
            continue
        rows_of = full(instance)
        conn.executemany(
            _Q["append_log"], [(row_id, 1, seq, entry) for seq, entry in rows_of.entries]
        )
        conn.execute(
            "UPDATE workflow_instances SET document = ?, history_length = ? WHERE id = ?",
            (rows_of.head, rows_of.history_length, row_id),
        )


#: Conversions of stored data that a migration's SQL cannot express, by schema version.
_CONVERSIONS: dict[int, Callable[[sqlite3.Connection], None]] = {3: _split_documents}


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
    sql = _Q["select_heads"].rstrip(";")
    if clauses:
        sql += " AND " + " AND ".join(clauses)  # after its `WHERE problem IS NULL`
    sql += " ORDER BY updated_at DESC, id DESC" if query.order == "updated" else " ORDER BY id"
    if query.limit is not None:
        sql += " LIMIT ?"
        params.append(query.limit)
    return sql, tuple(params)
