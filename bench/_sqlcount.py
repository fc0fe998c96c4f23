"""Count the SQL statements a process sends through psycopg, for statements per step.

`pg_stat_statements` is rarely loaded on a shared server, so each process of
a measurement counts its own statements: every `execute`/`executemany` of a
psycopg cursor (a connection's `execute` goes through one) is one statement.
The BEGIN and COMMIT a transaction block sends are not counted here; the
server's commit counter (`pg_stat_database.xact_commit`) gives those.
"""

from __future__ import annotations

import atexit
import inspect
import os
from pathlib import Path
from typing import Any

__all__ = ["count", "install", "read_all"]

_count = 0


def count() -> int:
    """Statements this process sent since `install`."""
    return _count


def install(path: str | None) -> None:
    """Count from now on; with `path`, write the count to `<path>.<pid>` at exit."""
    import psycopg

    if getattr(psycopg.AsyncCursor, "_bench_counted", False):
        return
    for cls in (psycopg.AsyncCursor, psycopg.Cursor):
        for name in ("execute", "executemany"):
            _wrap(cls, name)
        setattr(cls, "_bench_counted", True)  # noqa: B010  (a marker psycopg knows nothing of)
    if path:
        atexit.register(lambda: Path(f"{path}.{os.getpid()}").write_text(str(_count)))


def read_all(path: str) -> int:
    """The counts every process wrote for `path`, summed."""
    folder, prefix = Path(path).parent, Path(path).name + "."
    return sum(int(p.read_text() or 0) for p in folder.glob(prefix + "*"))


def _wrap(cls: Any, name: str) -> None:
    original = getattr(cls, name)
    if inspect.iscoroutinefunction(original):

        async def counted_async(self: Any, *args: Any, **kwargs: Any) -> Any:
            global _count
            _count += 1
            return await original(self, *args, **kwargs)

        setattr(cls, name, counted_async)
    else:

        def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
            global _count
            _count += 1
            return original(self, *args, **kwargs)

        setattr(cls, name, counted)
