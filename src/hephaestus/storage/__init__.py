"""Where instances live: the `Storage` contract and the embedded adapters.

`MemoryStorage` keeps instances in a dict (tests, benchmarks); `SQLiteStorage`
in one SQLite file (the default). `PostgresStorage` lives in
`hephaestus.storage.postgres` so that importing this package needs no driver.
"""

from hephaestus.storage.base import Query, Storage, StorageStats
from hephaestus.storage.memory import MemoryStorage
from hephaestus.storage.sqlite import SQLiteStorage

__all__ = ["MemoryStorage", "Query", "SQLiteStorage", "Storage", "StorageStats"]
