"""Shared fixtures of the runtime integration tests.

`app` is a `Hephaestus` on a real SQLite file in the test's temporary
directory; `open_app(path)` opens another one on a given file (a restart is
closing one app and opening a new one on the same file). `wait_for` polls the
storage until an instance matches a predicate, so no test sleeps for a fixed
time while waiting for the runtime.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from hephaestus import Instance
from hephaestus.app import Hephaestus
from hephaestus.runners.base import Runner
from hephaestus.runners.local import LocalRunner
from hephaestus.storage import Query, SQLiteStorage, Storage
from hephaestus.testing import VirtualClock

WaitFor = Callable[..., Awaitable[Instance]]
OpenApp = Callable[..., Awaitable[Hephaestus]]


async def wait_for(
    app: Hephaestus,
    instance_id: str,
    predicate: Callable[[Instance], bool],
    timeout: float = 10.0,
) -> Instance:
    """Poll the stored instance until `predicate` holds; fail with its last state otherwise."""
    instance = await app.get(instance_id)
    try:
        async with asyncio.timeout(timeout):
            while not predicate(instance):
                await asyncio.sleep(0.01)
                instance = await app.get(instance_id)
    except TimeoutError:
        pytest.fail(
            f"instance {instance_id} did not reach the expected state in {timeout}s; "
            f"last stored state: {instance.to_json()}"
        )
    return instance


async def snapshot(storage: Storage) -> dict[str, str]:
    """Every stored instance as JSON, by id: compare two snapshots to see what was written."""
    return {instance.id: instance.to_json() for instance in await storage.query(Query())}


@pytest.fixture(name="wait_for")
def wait_for_fixture() -> WaitFor:
    return wait_for


@pytest.fixture(name="snapshot")
def snapshot_fixture() -> Callable[[Storage], Awaitable[dict[str, str]]]:
    return snapshot


@pytest.fixture
def clock() -> VirtualClock:
    """A virtual clock; a test asking for it gets its `app` runner on it."""
    return VirtualClock(datetime.now(UTC).replace(microsecond=0))


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "runtime.db"


@pytest.fixture
async def open_app() -> AsyncIterator[OpenApp]:
    """Open apps on demand; whatever is still open at the end of the test is closed."""
    opened: list[Hephaestus] = []

    async def make(
        storage: Path | Storage, *, runner: Runner | None = None, **runner_options: Any
    ) -> Hephaestus:
        if isinstance(storage, Path):
            storage = SQLiteStorage(storage)
        app = Hephaestus(storage=storage, runner=runner or LocalRunner(**runner_options))
        await app.open()
        opened.append(app)
        return app

    try:
        yield make
    finally:
        for app in reversed(opened):
            if app.is_open:
                await app.close()


@pytest.fixture(autouse=True)
def fresh_observations(request: pytest.FixtureRequest) -> None:
    """Empty the test module's `RT_*` records (what its steps saw and did) before each test.

    A test may run twice, once per runner, with the same instance ids; each run
    must see only its own observations.
    """
    for name, value in vars(request.module).items():
        if name.startswith("RT_") and isinstance(value, dict | list | set):
            value.clear()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests marked `both_runners` get `app` twice: local on SQLite, distributed on PostgreSQL."""
    if "app" in metafunc.fixturenames:
        kinds = ["local"]
        if metafunc.definition.get_closest_marker("both_runners"):
            kinds.append("distributed")
        metafunc.parametrize("app", kinds, indirect=True)


@pytest.fixture
async def app(request: pytest.FixtureRequest, open_app: OpenApp, db_path: Path) -> Hephaestus:
    """An open app: a LocalRunner on a SQLite file of its own, or (for `both_runners`
    tests) a ProcrastinateRunner with a worker in this process, on PostgreSQL.

    A `runner_options(**options)` mark passes `options` (a `clock`, say) to either runner;
    a test that also asks for the `clock` fixture runs its `app` on that `VirtualClock`.
    """
    marker = request.node.get_closest_marker("runner_options")
    options: dict[str, Any] = dict(marker.kwargs) if marker else {}
    if "clock" in request.fixturenames:
        options["clock"] = request.getfixturevalue("clock")
    if request.param == "local":
        return await open_app(db_path, **options)
    from hephaestus.runners.procrastinate import ProcrastinateRunner
    from hephaestus.storage.postgres import PostgresStorage

    url = request.getfixturevalue("postgres_url")
    return await open_app(
        PostgresStorage(url),
        runner=ProcrastinateRunner(
            worker=True, heartbeat=0.5, stalled_after=2.0, poll_interval=0.05, **options
        ),
    )
