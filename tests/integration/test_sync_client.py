"""`SyncClient` from plain threads: real storage, and a real runner doing the work elsewhere.

The runner is a `Hephaestus` app with a `LocalRunner` on its own thread and
event loop, sharing the storage (a SQLite file, or PostgreSQL) with the client
as a `hephaestus worker` process would. The client only writes and reads;
everything it starts is executed by that runner.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from hephaestus import (
    AlreadyRunningError,
    Context,
    ContextSerializationError,
    Done,
    Hephaestus,
    HephaestusError,
    Instance,
    InstanceNotFoundError,
    InstanceNotWaitingError,
    InvalidBusinessKeyError,
    InvalidEventError,
    LocalRunner,
    MemoryStorage,
    Ok,
    RuntimeNotFoundError,
    SQLiteStorage,
    Status,
    Step,
    StorageError,
    Unique,
    VersionOptionsError,
    WaitForEvent,
    WaitTimeoutError,
    Workflow,
)
from hephaestus.storage.base import Query, Storage
from hephaestus.storage.postgres import PostgresStorage
from hephaestus.sync import SyncClient

# --- the workflow the runner executes -------------------------------------------------------


class Check(Step):
    events = ("checked",)

    def execute(self, instance: Instance, config: Mapping[str, Any] | None, context: Context) -> Ok:
        return Ok("checked", {"item_count": len(context.initial["items"])})


class AwaitApproval(WaitForEvent):
    """Parks the order until someone approves it; the approval's data is this step's output."""


class Ship(Step):
    events = ("shipped",)

    def execute(self, instance: Instance, config: Mapping[str, Any] | None, context: Context) -> Ok:
        return Ok("shipped", {"approved_by": context.steps["await_approval"]["approver"]})


class SyncOrder(Workflow):
    unique = Unique(key="syncorder")
    start = Check
    transitions = {
        (Check, "checked"): (AwaitApproval, {"event_name": "approved"}),
        (AwaitApproval, "approved"): Ship,
        (Ship, "shipped"): Done,
    }


class SyncOrderV2(Workflow):
    version = 2  # the umbrella's unique applies
    start = Check
    transitions = {(Check, "checked"): Ship, (Ship, "shipped"): Done}


class SyncOrders(Workflow):
    unique = Unique(key="syncorder")
    versions = {1: SyncOrder, 2: SyncOrderV2}
    current = 2

    @classmethod
    def version_for(cls, versions: Mapping[int, type[Any]], opts: Mapping[str, Any]) -> int | None:
        return 1 if opts.get("tenant") == "legacy" else None


# --- a runner on its own thread ---------------------------------------------------------------


@contextmanager
def runner_thread(make_storage: Callable[[], Storage]) -> Iterator[LocalRunner]:
    """A LocalRunner app on `make_storage()`, on a thread and loop of its own, until the end."""
    runner = LocalRunner(lease=2.0, timer_poll_interval=0.2, work_poll_interval=0.2)
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    ready = threading.Event()
    failure: list[BaseException] = []

    async def serve() -> None:
        async with Hephaestus(storage=make_storage(), runner=runner):
            ready.set()
            await stop.wait()

    def run() -> None:
        try:
            loop.run_until_complete(serve())
        except BaseException as exc:
            failure.append(exc)
            ready.set()

    thread = threading.Thread(target=run, name="test-runner")
    thread.start()
    try:
        assert ready.wait(30)
        assert not failure, failure
        yield runner
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        loop.close()
    assert not failure, failure


def read_stored(storage: Storage, instance_id: str) -> Instance:
    """The instance as another process would read it: a storage object of its own."""

    async def read() -> Instance:
        async with storage:
            return await storage.get(instance_id)

    return asyncio.run(read())


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "sync.db"


@pytest.fixture
def runner(db: Path) -> Iterator[LocalRunner]:
    with runner_thread(lambda: SQLiteStorage(db)) as running:
        yield running


@pytest.fixture
def client(db: Path) -> Iterator[SyncClient]:
    made = SyncClient(SQLiteStorage(db))
    try:
        yield made
    finally:
        made.close()


ITEMS = {"items": ["lamp", "desk"]}


# --- the calls ----------------------------------------------------------------------------------


def test_start_runs_on_the_runner_and_resume_data_reaches_the_waiting_step(
    runner: LocalRunner, client: SyncClient, db: Path
) -> None:
    order_id = client.start(SyncOrder, "A-1", ITEMS)
    assert order_id == "syncorder::A-1" == client.business_id(SyncOrder, "A-1")

    parked = client.wait(order_id, status="waiting", timeout=10)
    assert parked.waiting_steps == {"await_approval"}
    assert parked.context.steps["check"] == {"item_count": 2}

    approval = {"approver": "ada", "note": "ok to ship"}
    assert client.resume(order_id, "approved", data=approval) is None
    done = client.wait(order_id, timeout=10)

    assert done.status is Status.COMPLETED
    assert done.context.steps["await_approval"] == approval
    assert done.context.steps["ship"] == {"approved_by": "ada"}
    assert [e.event for e in done.execution_history] == ["checked", "approved", "shipped", "done"]
    assert client.get(order_id) == done
    # What the client saw is what is in the file.
    assert read_stored(SQLiteStorage(db), order_id) == done


def test_start_instance_list_cancel_and_runners_with_a_url(runner: LocalRunner, db: Path) -> None:
    with SyncClient(f"sqlite:///{db}") as client:
        first = client.start_instance(SyncOrder, ITEMS, id="syncorder::explicit")
        second = client.start(SyncOrder, "B-2", ITEMS)
        for order_id in (first, second):
            client.wait(order_id, status=Status.WAITING, timeout=10)

        assert [i.id for i in client.list(workflow=SyncOrder)] == [second, first]
        assert [i.id for i in client.list(status="waiting", limit=1)] == [second]

        client.cancel(first)
        assert client.wait(first, timeout=10).status is Status.CANCELLED
        assert client.get(second).status is Status.WAITING

        (record,) = client.runners()
        assert record.id == runner.id


def test_start_options_choose_the_version(client: SyncClient) -> None:
    # No runner: the client resolves the version and stores the new instance.
    legacy = client.start(SyncOrders, "V-1", ITEMS, tenant="legacy")
    fresh = client.start_instance(SyncOrders, ITEMS, id="syncorder::V-2", tenant="acme")

    assert client.get(legacy).workflow_version == 1
    assert client.get(fresh).workflow_version == 2
    with pytest.raises(VersionOptionsError, match=r"SyncOrder got option\(s\) tenant"):
        client.start(SyncOrder, "V-3", ITEMS, tenant="legacy")


def test_errors_keep_their_types_and_messages(client: SyncClient) -> None:
    # No runner: the client validates and writes on its own, as in a web process.
    order_id = client.start(SyncOrder, "E-1", ITEMS)

    with pytest.raises(InstanceNotFoundError, match="syncorder::nope"):
        client.get("syncorder::nope")
    with pytest.raises(AlreadyRunningError):
        client.start(SyncOrder, "E-1", ITEMS)
    with pytest.raises(InvalidBusinessKeyError):
        client.start(SyncOrder, "no spaces allowed", ITEMS)
    with pytest.raises(InvalidBusinessKeyError):
        client.get("not-an-id")
    with pytest.raises(ContextSerializationError, match="when"):
        client.start(SyncOrder, "E-2", {"items": [], "when": object()})
    with pytest.raises(InvalidEventError, match="rejected"):
        client.resume(order_id, "rejected")
    with pytest.raises(ContextSerializationError):
        client.resume(order_id, "approved", data={"approver": {1, 2}})
    with pytest.raises(WaitTimeoutError, match="running") as timed_out:
        client.wait(order_id, timeout=0.05)
    assert isinstance(timed_out.value, TimeoutError)
    with pytest.raises(HephaestusError, match="unknown filter"):
        client.list(colour="red")

    # The error is raised here, in the calling thread, with this call in its traceback.
    with pytest.raises(InstanceNotFoundError) as missing:
        client.get("syncorder::nope")
    frames = [frame.name for frame in missing.traceback]
    assert "test_errors_keep_their_types_and_messages" in frames

    # Nothing invalid was written.
    (stored,) = client.list()
    assert (stored.id, stored.revision, stored.inbox) == (order_id, 1, ())

    # Its first step is due to run, so a cancel is a request for the runner that will own it.
    client.cancel(order_id)
    assert [item.kind for item in client.get(order_id).inbox] == ["cancel"]


def test_twenty_threads_start_get_and_resume_at_once(
    runner: LocalRunner, client: SyncClient
) -> None:
    barrier = threading.Barrier(20)

    def order(n: int) -> tuple[str, str]:
        barrier.wait(10)
        order_id = client.start(SyncOrder, f"T-{n}", {"items": ["x"] * n})
        seen = client.get(order_id)
        client.wait(order_id, status="waiting", timeout=20)
        client.resume(order_id, "approved", data={"approver": f"clerk{n}"})
        return order_id, seen.id

    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(order, range(20)))

    assert [started for started, _ in results] == [f"syncorder::T-{n}" for n in range(20)]
    assert all(started == seen for started, seen in results)
    for n, (order_id, _) in enumerate(results):
        done = client.wait(order_id, timeout=20)
        assert done.status is Status.COMPLETED
        assert done.context.steps["check"] == {"item_count": n}
        assert done.context.steps["ship"] == {"approved_by": f"clerk{n}"}


# --- lifetime -------------------------------------------------------------------------------------


def test_close_is_idempotent_and_calls_after_close_raise(db: Path) -> None:
    unused = SyncClient(SQLiteStorage(db))
    unused.close()  # never opened: nothing to stop
    unused.close()
    with pytest.raises(StorageError, match="the SyncClient is closed"):
        unused.get("syncorder::A-1")

    with SyncClient(SQLiteStorage(db)) as client:
        order_id = client.start(SyncOrder, "C-1", ITEMS)
        thread = client._loop.thread  # type: ignore[union-attr]
        assert thread.is_alive()
        assert thread.daemon
    assert not thread.is_alive()
    client.close()
    client.close()
    for call in (
        lambda: client.get(order_id),
        lambda: client.start(SyncOrder, "C-2", ITEMS),
        lambda: client.resume(order_id, "approved"),
        lambda: client.wait(order_id),
        client.open,
    ):
        with pytest.raises(StorageError, match="the SyncClient is closed"):
            call()
    assert "closed" in repr(client)

    # Closing flushed and released the file: another storage reads the instance.
    assert read_stored(SQLiteStorage(db), order_id).status is Status.RUNNING


def test_close_from_another_thread_ends_a_call_in_progress(client: SyncClient) -> None:
    order_id = client.start(SyncOrder, "W-1", ITEMS)  # no runner: it never finishes
    outcome: list[BaseException] = []

    def wait_forever() -> None:
        try:
            client.wait(order_id)
        except BaseException as exc:
            outcome.append(exc)

    waiter = threading.Thread(target=wait_forever)
    waiter.start()
    waiter.join(0.2)
    assert waiter.is_alive()

    client.close()
    waiter.join(10)
    assert not waiter.is_alive()
    (error,) = outcome
    assert isinstance(error, StorageError)
    assert "closed while this call was in progress" in str(error)


def test_a_storage_that_cannot_open_fails_each_call_and_leaves_no_thread(tmp_path: Path) -> None:
    client = SyncClient(SQLiteStorage(tmp_path / "missing" / "x.db"))
    before = threading.active_count()
    with pytest.raises(StorageError, match="does not exist"):
        client.open()
    with pytest.raises(StorageError, match="does not exist"):
        client.list()
    assert threading.active_count() == before
    (tmp_path / "missing").mkdir()
    assert client.list() == []  # the storage is there now: the next call opens it
    client.close()


def test_bad_storage_arguments_raise_before_anything_opens() -> None:
    with pytest.raises(StorageError, match="Storage object or a storage URL"):
        SyncClient(42)  # type: ignore[arg-type]
    with pytest.raises(StorageError, match="unknown storage URL scheme"):
        SyncClient("redis://localhost/0")


async def test_called_from_async_code_it_blocks_but_works(
    runner: LocalRunner, client: SyncClient
) -> None:
    # A coroutine may call it (it blocks this loop); it does not deadlock.
    order_id = client.start(SyncOrder, "L-1", ITEMS)
    assert client.wait(order_id, status="waiting", timeout=10).status is Status.WAITING


def test_called_on_its_own_loop_it_raises_instead_of_waiting_for_itself(
    client: SyncClient,
) -> None:
    client.open()
    own = client._loop  # type: ignore[union-attr]
    assert own is not None

    async def call_from_inside() -> None:
        client.list()

    with pytest.raises(HephaestusError, match="its own event loop thread"):
        asyncio.run_coroutine_threadsafe(call_from_inside(), own.loop).result(10)
    assert client.list() == []


def test_a_forked_child_gets_a_clear_error(
    client: SyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert client.list() == []
    monkeypatch.setattr("hephaestus.sync.os.getpid", lambda: -1)
    with pytest.raises(StorageError, match="fork"):
        client.list()
    monkeypatch.undo()
    assert client.list() == []


async def test_its_app_is_not_the_one_workflow_facades_find(db: Path) -> None:
    with SyncClient(SQLiteStorage(db)) as client:
        with pytest.raises(RuntimeNotFoundError, match="no Hephaestus app is running"):
            await SyncOrder.start_new("F-1", ITEMS)
        async with Hephaestus(storage=MemoryStorage(), runner=None) as app:
            # One app is open in this loop; the client's, on its own loop, does not count.
            assert await SyncOrder.start_new("F-1", ITEMS) == "syncorder::F-1"
            assert (await app.get("syncorder::F-1")).status is Status.RUNNING
        assert client.list() == []


# --- PostgreSQL -------------------------------------------------------------------------------


def test_postgres_start_resume_and_wait(postgres_url: str) -> None:
    with runner_thread(lambda: PostgresStorage(postgres_url)), SyncClient(postgres_url) as client:
        order_id = client.start(SyncOrder, "P-1", ITEMS)
        client.wait(order_id, status="waiting", timeout=10)
        client.resume(order_id, "approved", data={"approver": "grace"})
        done = client.wait(order_id, timeout=10)
        assert done.status is Status.COMPLETED
        assert done.context.steps["await_approval"] == {"approver": "grace"}
        with pytest.raises(InstanceNotWaitingError):
            client.resume(order_id, "approved")

    async def stored() -> list[Instance]:
        async with PostgresStorage(postgres_url) as storage:
            return await storage.query(Query())

    assert asyncio.run(stored()) == [done]
