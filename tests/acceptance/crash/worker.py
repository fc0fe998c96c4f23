"""Runs `CrashFlow` instances on a SQLite file until every one is finished (or it is killed).

python worker.py DB_PATH start N    # start N instances, then run them
python worker.py DB_PATH recover    # recover what is stored, run until all finish

DB_PATH may also be a PostgreSQL URL. With `CRASH_IN_WINDOW=N` in the environment
the process kills itself (SIGKILL) inside the N-th write that appends history:
after its log rows were sent, before the head is updated and committed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from crash_flows import CrashFlow

from hephaestus.app import Hephaestus
from hephaestus.runners.local import LocalRunner
from hephaestus.storage.base import Storage
from hephaestus.storage.sqlite import SQLiteStorage


def crash_in_window(after: int) -> None:
    """Kill this process inside the `after`-th write that appends history rows."""
    from hephaestus.storage import sqlite as sqlite_adapter
    from hephaestus.storage.postgres import PostgresStorage

    appended = 0

    def appending() -> None:
        """A write that appends history is in the window now."""
        nonlocal appended
        appended += 1
        if appended >= after:
            os.kill(os.getpid(), signal.SIGKILL)

    flush = sqlite_adapter._Pending.flush

    def sqlite_flush(self: Any, conn: Any) -> None:
        # A batch writes its log rows, then its heads: stop between the two.
        if self.heads and any(row[2] >= 0 for row in self.log):
            conn.executemany(sqlite_adapter._Q["append_log"], self.log)
            self.log.clear()
            for _ in self.heads:
                appending()
        flush(self, conn)

    outcome = PostgresStorage._outcome

    async def postgres_outcome(self: PostgresStorage, conn: Any, write: Any, row: Any) -> Any:
        # Called inside the transaction, after its statements ran and before COMMIT.
        if write.expected_revision is not None and any(seq >= 0 for seq, _ in write.rows.entries):
            appending()
        return await outcome(self, conn, write, row)

    sqlite_adapter._Pending.flush = sqlite_flush  # type: ignore[method-assign]
    PostgresStorage._outcome = postgres_outcome  # type: ignore[method-assign]


def open_storage(where: str) -> Storage:
    if where.startswith("postgresql://"):
        from hephaestus.storage.postgres import PostgresStorage

        return PostgresStorage(where)
    return SQLiteStorage(where)


async def main(db_path: str, mode: str, count: int) -> None:
    if os.environ.get("CRASH_IN_WINDOW"):
        crash_in_window(int(os.environ["CRASH_IN_WINDOW"]))
    async with Hephaestus(
        storage=open_storage(db_path), runner=LocalRunner(timer_poll_interval=0.1)
    ) as app:
        if mode == "start":
            await asyncio.gather(*(CrashFlow.start(f"i{n}", {"n": n}) for n in range(count)))
            print("started", flush=True)
        while await app.list(status_in=["pending", "running", "waiting"], limit=1):
            await asyncio.sleep(0.05)
        print("all finished", flush=True)


if __name__ == "__main__":
    db, mode = sys.argv[1], sys.argv[2]
    asyncio.run(main(db, mode, int(sys.argv[3]) if len(sys.argv) > 3 else 0))
