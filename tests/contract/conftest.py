"""Every storage adapter the contract suite runs against.

Each factory builds an unopened storage in the test's temporary directory
(or, for a server, in the test run's database: a factory may ask the test
for a fixture, which skips the test when the server is not available); the
`storage` fixture opens it, hands it to the test and closes it. A new adapter
joins the suite by adding one entry to `STORAGE_FACTORIES`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from hephaestus.storage import MemoryStorage, SQLiteStorage, Storage
from hephaestus.storage.postgres import PostgresStorage

StorageFactory = Callable[[pytest.FixtureRequest, Path], Storage]


def postgres_storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    # `postgres_url` (tests/conftest.py) is an emptied table in the run's own database.
    return PostgresStorage(request.getfixturevalue("postgres_url"))


STORAGE_FACTORIES: dict[str, StorageFactory] = {
    "memory": lambda request, tmp_path: MemoryStorage(),
    "sqlite": lambda request, tmp_path: SQLiteStorage(tmp_path / "contract.db"),
    "postgres": postgres_storage,
}


@pytest.fixture(params=list(STORAGE_FACTORIES))
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    adapter = STORAGE_FACTORIES[request.param](request, tmp_path)
    await adapter.open()
    try:
        yield adapter
    finally:
        await adapter.close()


@pytest.fixture
def reopen(request: pytest.FixtureRequest, tmp_path: Path, storage: Storage) -> Any:
    """`async with reopen() as other:` a second adapter on the same data, as another
    process would open it (the memory adapter has no other process: the same object)."""

    @contextlib.asynccontextmanager
    async def other() -> AsyncIterator[Storage]:
        name = request.node.callspec.params["storage"]
        if name == "memory":
            yield storage
            return
        adapter = STORAGE_FACTORIES[name](request, tmp_path)
        await adapter.open()
        try:
            yield adapter
        finally:
            await adapter.close()

    return other
