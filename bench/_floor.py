"""The storage floor: what durably committing one small JSON row at a time costs.

This is the baseline of the durable cases. It is what any engine that stores
its state in the same database pays for one state change if it commits each
on its own: one single-row upsert of a JSON document, one transaction, from
Python, on the same database and with the same durability settings
(SQLite: WAL, `synchronous=FULL`; PostgreSQL: `synchronous_commit = on`).
The document is one of our own stored instances, so the row is the same size,
and each upsert changes it (as each state change changes an instance): SQLite
writes nothing, so syncs nothing, for an update that leaves a row as it was.
Timing starts after a warm-up: on a new SQLite file each commit first grows
the write-ahead log, which costs more than the steady state once the log has
been checkpointed and is reused.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["BATCH", "Floor", "postgres_floor", "sqlite_floor"]

#: Upserts per transaction of the batched floor.
BATCH = 1_000

#: Upserts made before timing: the table, the log and the connection reach their steady state.
_WARM_UP = 1_000


@dataclass(frozen=True, slots=True)
class Floor:
    """`upserts` single-row transactions committed in `seconds`."""

    upserts: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.upserts / self.seconds if self.seconds > 0 else float("nan")

    def to_json(self) -> dict[str, float]:
        return {"upserts": self.upserts, "seconds": self.seconds, "per_second": self.per_second}


def sqlite_floor(path: Path, document: str, upserts: int, distinct: int, batch: int = 1) -> Floor:
    """Upsert `document` under `distinct` ids in turn, `upserts` times, `batch` per commit."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL").fetchone()
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS bench_floor (id TEXT PRIMARY KEY, document TEXT NOT NULL)"
        )
        upsert = (
            "INSERT INTO bench_floor (id, document) VALUES (?, ?) "
            "ON CONFLICT (id) DO UPDATE SET document = excluded.document"
        )

        def commit(first: int) -> None:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(upsert, _rows(document, first, batch, distinct))
            conn.execute("COMMIT")

        return _timed(commit, upserts, batch)
    finally:
        conn.close()


def postgres_floor(url: str, document: str, upserts: int, distinct: int, batch: int = 1) -> Floor:
    """The same on PostgreSQL with psycopg: a `jsonb` row; one autocommit statement each, or
    `batch` of them sent in one pipeline, in one transaction."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET synchronous_commit = on")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS bench_floor (id text PRIMARY KEY, document jsonb NOT NULL)"
        )
        upsert = (
            "INSERT INTO bench_floor (id, document) VALUES (%s, %s::jsonb) "
            "ON CONFLICT (id) DO UPDATE SET document = excluded.document"
        )

        def commit(first: int) -> None:
            rows = _rows(document, first, batch, distinct)
            if batch == 1:
                conn.execute(upsert, rows[0], prepare=True)
                return
            with conn.transaction(), conn.cursor() as cursor:
                cursor.executemany(upsert, rows)

        return _timed(commit, upserts, batch)


def _rows(document: str, first: int, count: int, distinct: int) -> list[tuple[str, str]]:
    return [(f"floor::{i % distinct}", _version(document, i)) for i in range(first, first + count)]


def _timed(commit: Callable[[int], None], upserts: int, batch: int) -> Floor:
    """`upserts` rows committed `batch` at a time, after an untimed warm-up: until the log
    has been checkpointed and is reused, each commit also grows the file."""
    for first in range(0, min(_WARM_UP, upserts), batch):
        commit(first)
    started = time.perf_counter()
    for first in range(0, upserts, batch):
        commit(first)
    return Floor(-(-upserts // batch) * batch, time.perf_counter() - started)


def _version(document: str, write: int) -> str:
    """`document` as the `write`-th state of its row: the same size, never the same bytes."""
    return f'{{"write": {write}, "instance": {document}}}'
