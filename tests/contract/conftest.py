"""Every storage adapter the contract suite runs against.

Each factory builds an unopened storage in the test's temporary directory;
the `storage` fixture opens it, hands it to the test and closes it. A new
adapter joins the suite by adding one entry to `STORAGE_FACTORIES` (a factory
may call `pytest.skip` when the server it needs is not available).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from hephaestus.storage import MemoryStorage, SQLiteStorage, Storage

StorageFactory = Callable[[Path], Storage]

STORAGE_FACTORIES: dict[str, StorageFactory] = {
    "memory": lambda tmp_path: MemoryStorage(),
    "sqlite": lambda tmp_path: SQLiteStorage(tmp_path / "contract.db"),
}


@pytest.fixture(params=list(STORAGE_FACTORIES))
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    adapter = STORAGE_FACTORIES[request.param](tmp_path)
    await adapter.open()
    try:
        yield adapter
    finally:
        await adapter.close()
