"""Where instances live: the `Storage` contract and the embedded adapters.

`MemoryStorage` keeps instances in a dict (tests, benchmarks); `SQLiteStorage`
in one SQLite file (the default). `PostgresStorage` lives in
`hephaestus.storage.postgres` so that importing this package needs no driver.
"""

from hephaestus.storage.base import Query, Storage, StorageStats
from hephaestus.storage.memory import MemoryStorage
from hephaestus.storage.sqlite import SQLiteStorage

__all__ = [
    "MemoryStorage",
    "Query",
    "SQLiteStorage",
    "Storage",
    "StorageStats",
    "storage_from_url",
]


def storage_from_url(url: str, *, must_exist: bool = False) -> Storage:
    """The storage a URL names, as `--storage` and `HEPHAESTUS_STORAGE` read it.

    `sqlite:///relative.db`, `sqlite:////absolute.db`, a bare file path,
    `memory://` or `postgresql://user:pass@host/db` (the `postgres` extra).
    Raises `StorageError` for a malformed URL before opening anything; with
    `must_exist`, a SQLite URL must name an existing file.
    """
    from hephaestus.cli._storage_url import storage_from_url as from_url

    return from_url(url, must_exist=must_exist)
