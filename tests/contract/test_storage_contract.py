"""The storage contract, run against every adapter in `conftest.STORAGE_FACTORIES`."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from hephaestus import Context, Done, Ok, Step, Unique, Workflow
from hephaestus.core.engine import new_instance
from hephaestus.core.instance import ExecutionEntry, Instance, Status, Timer
from hephaestus.errors import AlreadyRunningError, ConcurrencyError, InstanceNotFoundError
from hephaestus.storage import Query, Storage
from hephaestus.storage.base import RunnerRecord

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class Receive(Step):
    events = ("received",)

    def execute(self, instance: Any, config: Any, context: Any) -> Ok:
        return Ok("received")


class ContractFlow(Workflow):
    unique = Unique(key="order")
    start = Receive
    transitions = {(Receive, "received"): Done}


def make(
    instance_id: str = "order::a1",
    *,
    status: Status | None = None,
    workflow: str | None = None,
    version: int | None = None,
    timers: tuple[Timer, ...] = (),
) -> Instance:
    """A freshly started instance of `ContractFlow`, with the given fields changed."""
    instance = new_instance(
        ContractFlow.definition(),
        instance_id=instance_id,
        context=Context.new({"item_count": 3, "customer": {"name": "Ada"}}),
        now=NOW,
        workflow=workflow,
    ).instance
    changes: dict[str, Any] = {"timers": timers}
    if status is not None:
        changes["status"] = status
    if version is not None:
        changes["workflow_version"] = version
    return instance.evolve(**changes)


def next_revision(instance: Instance, **changes: Any) -> Instance:
    """What the engine would produce next: the changes, one revision later."""
    return instance.evolve(
        revision=instance.revision + 1,
        updated_at=instance.updated_at + timedelta(seconds=1),
        **changes,
    )


def timer(due_at: datetime, name: str = "t") -> Timer:
    return Timer(id=name, step="receive", due_at=due_at, event="received")


async def ids(storage: Storage, **filters: Any) -> list[str]:
    return [instance.id for instance in await storage.query(Query(**filters))]


def test_adapter_satisfies_the_protocol(storage: Storage) -> None:
    assert isinstance(storage, Storage)


# -- create, read, update, delete ------------------------------------------------------------


async def test_create_then_get_returns_an_equal_instance(storage: Storage) -> None:
    instance = make(timers=(timer(NOW + timedelta(minutes=5)),))

    await storage.put(instance, None)

    stored = await storage.get(instance.id)
    assert stored == instance
    assert stored.context.initial == {"item_count": 3, "customer": {"name": "Ada"}}
    assert stored.next_timer_at == NOW + timedelta(minutes=5)


@pytest.mark.parametrize("status", [Status.PENDING, Status.RUNNING, Status.WAITING])
async def test_create_over_an_active_instance_is_refused(storage: Storage, status: Status) -> None:
    original = make(status=status)
    await storage.put(original, None)

    with pytest.raises(AlreadyRunningError, match="order::a1"):
        await storage.put(make(workflow="other.Flow"), None)

    assert await storage.get(original.id) == original


@pytest.mark.parametrize("status", [Status.COMPLETED, Status.FAILED, Status.CANCELLED])
async def test_create_over_a_finished_instance_replaces_it(
    storage: Storage, status: Status
) -> None:
    await storage.put(make(status=status, version=1), None)
    fresh = make(version=2)

    await storage.put(fresh, None)

    assert await storage.get(fresh.id) == fresh
    assert await ids(storage) == ["order::a1"]


async def test_update_with_the_stored_revision_is_written(storage: Storage) -> None:
    created = make()
    await storage.put(created, None)
    updated = next_revision(created, status=Status.WAITING, waiting_steps=frozenset({"receive"}))

    await storage.put(updated, created.revision)

    assert await storage.get(created.id) == updated
    again = next_revision(updated, status=Status.COMPLETED)
    await storage.put(again, updated.revision)
    assert (await storage.get(created.id)).status is Status.COMPLETED


async def test_update_with_a_stale_revision_raises_and_writes_nothing(storage: Storage) -> None:
    created = make()
    await storage.put(created, None)
    current = next_revision(created, status=Status.WAITING)
    await storage.put(current, created.revision)

    with pytest.raises(ConcurrencyError, match=f"revision {current.revision}"):
        await storage.put(next_revision(created, status=Status.FAILED), created.revision)

    assert await storage.get(created.id) == current


async def test_update_with_a_revision_from_the_future_is_refused(storage: Storage) -> None:
    created = make()
    await storage.put(created, None)

    with pytest.raises(ConcurrencyError):
        await storage.put(next_revision(created), created.revision + 5)

    assert await storage.get(created.id) == created


async def test_update_of_a_missing_instance_raises_not_found(storage: Storage) -> None:
    with pytest.raises(InstanceNotFoundError, match="order::nobody"):
        await storage.put(make("order::nobody"), 1)

    assert await ids(storage) == []


async def test_get_of_a_missing_instance_raises_not_found(storage: Storage) -> None:
    with pytest.raises(InstanceNotFoundError, match="order::nobody") as raised:
        await storage.get("order::nobody")
    # It points to the public call, not to a storage method.
    assert "list()" in str(raised.value)
    assert "query" not in str(raised.value)


async def test_delete_removes_the_instance(storage: Storage) -> None:
    await storage.put(make("order::a1"), None)
    await storage.put(make("order::a2"), None)

    await storage.delete("order::a1")

    with pytest.raises(InstanceNotFoundError):
        await storage.get("order::a1")
    assert await ids(storage) == ["order::a2"]
    with pytest.raises(InstanceNotFoundError, match="order::a1"):
        await storage.delete("order::a1")


async def test_delete_of_a_missing_instance_raises_not_found(storage: Storage) -> None:
    with pytest.raises(InstanceNotFoundError, match="order::nobody"):
        await storage.delete("order::nobody")


async def test_a_deleted_id_can_be_created_again(storage: Storage) -> None:
    await storage.put(make(), None)
    await storage.delete("order::a1")
    fresh = make(version=3)

    await storage.put(fresh, None)

    assert await storage.get("order::a1") == fresh


# -- concurrency -----------------------------------------------------------------------------


async def test_concurrent_updates_of_one_revision_let_exactly_one_win(storage: Storage) -> None:
    created = make()
    await storage.put(created, None)
    left = next_revision(created, runtime_metadata={"writer": "left"})
    right = next_revision(created, runtime_metadata={"writer": "right"})

    results = await asyncio.gather(
        storage.put(left, created.revision),
        storage.put(right, created.revision),
        return_exceptions=True,
    )

    winners = [
        written for written, result in zip((left, right), results, strict=True) if result is None
    ]
    losers = [result for result in results if result is not None]
    assert len(winners) == 1
    assert len(losers) == 1
    assert isinstance(losers[0], ConcurrencyError)
    assert await storage.get(created.id) == winners[0]


async def test_concurrent_creates_of_one_id_store_exactly_one(storage: Storage) -> None:
    first = make(version=1)
    second = make(version=2)

    results = await asyncio.gather(
        storage.put(first, None), storage.put(second, None), return_exceptions=True
    )

    winners = [
        written for written, result in zip((first, second), results, strict=True) if result is None
    ]
    losers = [result for result in results if result is not None]
    assert len(winners) == 1
    assert len(losers) == 1
    assert isinstance(losers[0], AlreadyRunningError)
    assert await storage.get("order::a1") == winners[0]
    assert await ids(storage) == ["order::a1"]


async def test_many_concurrent_puts_for_different_ids_all_land(storage: Storage) -> None:
    instances = [make(f"order::n{index:03d}") for index in range(200)]

    await asyncio.gather(*(storage.put(instance, None) for instance in instances))

    assert await storage.query(Query()) == instances


async def test_a_create_and_its_update_issued_together_apply_in_order(storage: Storage) -> None:
    created = make()
    updated = next_revision(created, status=Status.WAITING)

    await asyncio.gather(storage.put(created, None), storage.put(updated, created.revision))

    assert await storage.get(created.id) == updated


async def test_chains_of_writes_issued_together_apply_in_order(storage: Storage) -> None:
    # Writes of several instances, some of one instance several times, a write that changes
    # what only a full row write sets (the version) and a new run over a finished instance,
    # all issued at once: they share commits, and each instance ends as its last write says.
    first = [make(f"order::c{index}", status=Status.RUNNING) for index in range(3)]
    await asyncio.gather(*(storage.put(instance, None) for instance in first))
    waiting = next_revision(first[0], status=Status.WAITING)
    upgraded = next_revision(waiting, workflow_version=2)
    resumed = next_revision(upgraded, status=Status.RUNNING, error="resumed")
    finished = next_revision(first[1], status=Status.COMPLETED)
    again = make("order::c1", version=3)

    await asyncio.gather(
        storage.put(waiting, first[0].revision),
        storage.put(finished, first[1].revision),
        storage.put(upgraded, waiting.revision),
        storage.put(again, None),
        storage.put(resumed, upgraded.revision),
    )

    assert await storage.get("order::c0") == resumed
    assert await storage.get("order::c1") == again
    assert await storage.runs("order::c1") == [finished]
    assert await storage.get("order::c2") == first[2]
    assert await ids(storage, status=Status.RUNNING) == ["order::c0", "order::c1", "order::c2"]


# -- queries -----------------------------------------------------------------------------------


@pytest.fixture
async def population(storage: Storage) -> Storage:
    """Six instances over two workflows, two versions and several statuses, stored unordered."""
    for instance in [
        make("order::f6", workflow="shop.Refund", status=Status.WAITING),
        make("order::b2", workflow="shop.Order", status=Status.WAITING),
        make("order::d4", workflow="shop.Refund", status=Status.COMPLETED),
        make("order::a1", workflow="shop.Order", status=Status.RUNNING),
        make("order::e5", workflow="shop.Order", status=Status.FAILED, version=2),
        make("order::c3", workflow="shop.Order", status=Status.RUNNING, version=2),
    ]:
        await storage.put(instance, None)
    return storage


async def test_query_without_filters_lists_every_instance_by_id(population: Storage) -> None:
    assert await ids(population) == [
        "order::a1",
        "order::b2",
        "order::c3",
        "order::d4",
        "order::e5",
        "order::f6",
    ]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"id": "order::c3"}, ["order::c3"]),
        ({"id": "order::zz"}, []),
        ({"status": Status.RUNNING}, ["order::a1", "order::c3"]),
        ({"status_in": (Status.WAITING, Status.FAILED)}, ["order::b2", "order::e5", "order::f6"]),
        ({"status_in": ()}, []),
        ({"workflow": "shop.Refund"}, ["order::d4", "order::f6"]),
        ({"workflow_in": ("shop.Refund", "shop.Nothing")}, ["order::d4", "order::f6"]),
        ({"workflow_in": ()}, []),
        ({"workflow_version": 2}, ["order::c3", "order::e5"]),
        ({"workflow": "shop.Order", "status": Status.RUNNING}, ["order::a1", "order::c3"]),
        ({"workflow": "shop.Order", "workflow_version": 2, "status": Status.FAILED}, ["order::e5"]),
        ({"id": "order::a1", "status": Status.WAITING}, []),
        ({"after": "order::c3"}, ["order::d4", "order::e5", "order::f6"]),
        ({"limit": 2}, ["order::a1", "order::b2"]),
        ({"limit": 0}, []),
        ({"workflow": "shop.Order", "after": "order::a1", "limit": 2}, ["order::b2", "order::c3"]),
    ],
)
async def test_query_filters(
    population: Storage, filters: dict[str, Any], expected: list[str]
) -> None:
    assert await ids(population, **filters) == expected


async def test_query_returns_whole_instances(population: Storage) -> None:
    [found] = await population.query(Query(id="order::e5"))

    assert found == await population.get("order::e5")
    assert found.workflow_version == 2
    assert found.status is Status.FAILED


async def test_paging_with_after_visits_every_instance_once(population: Storage) -> None:
    seen: list[str] = []
    after: str | None = None
    while page := await ids(population, limit=4, after=after):
        seen.extend(page)
        after = page[-1]

    assert seen == await ids(population)


# -- durable timers ----------------------------------------------------------------------------


async def test_due_timers_lists_active_instances_whose_timer_is_due(storage: Storage) -> None:
    await storage.put(make("order::late", timers=(timer(NOW - timedelta(hours=1)),)), None)
    await storage.put(make("order::now", timers=(timer(NOW),)), None)
    await storage.put(make("order::future", timers=(timer(NOW + timedelta(minutes=1)),)), None)
    await storage.put(make("order::none"), None)
    await storage.put(
        make(
            "order::done",
            status=Status.COMPLETED,
            timers=(timer(NOW - timedelta(days=1)),),
        ),
        None,
    )

    assert await storage.due_timers(NOW) == ["order::late", "order::now"]
    assert await storage.due_timers(NOW + timedelta(hours=1)) == [
        "order::late",
        "order::now",
        "order::future",
    ]
    assert await storage.due_timers(NOW - timedelta(days=2)) == []


async def test_due_timers_uses_the_earliest_timer_and_respects_limit(storage: Storage) -> None:
    for index, minutes in enumerate([30, 10, 50, 20, 40]):
        timers = (
            timer(NOW - timedelta(minutes=minutes), "a"),
            timer(NOW - timedelta(minutes=minutes - 5), "b"),
        )
        await storage.put(make(f"order::t{index}", timers=timers), None)

    assert await storage.due_timers(NOW, limit=3) == ["order::t2", "order::t4", "order::t0"]
    assert await storage.due_timers(NOW, limit=1) == ["order::t2"]
    # Each instance is listed once, however many of its timers are due.
    assert len(await storage.due_timers(NOW)) == 5


async def test_next_timer_at_is_the_earliest_timer_of_an_active_instance(
    storage: Storage,
) -> None:
    assert await storage.next_timer_at() is None

    finished = make(
        "order::done", status=Status.CANCELLED, timers=(timer(NOW - timedelta(days=1)),)
    )
    await storage.put(finished, None)
    await storage.put(make("order::none"), None)
    assert await storage.next_timer_at() is None

    await storage.put(make("order::b", timers=(timer(NOW + timedelta(minutes=9)),)), None)
    await storage.put(make("order::a", timers=(timer(NOW + timedelta(minutes=3)),)), None)

    earliest = await storage.next_timer_at()
    assert earliest == NOW + timedelta(minutes=3)
    assert earliest is not None
    assert earliest.utcoffset() == timedelta(0)


async def test_finishing_an_instance_takes_it_off_the_timer_list(storage: Storage) -> None:
    waiting = make("order::w", status=Status.WAITING, timers=(timer(NOW - timedelta(seconds=1)),))
    await storage.put(waiting, None)
    assert await storage.due_timers(NOW) == ["order::w"]

    # A final instance keeps its timers in the document, but they never fire.
    await storage.put(next_revision(waiting, status=Status.CANCELLED), waiting.revision)

    assert await storage.due_timers(NOW) == []
    assert await storage.next_timer_at() is None


async def test_clearing_the_timers_takes_the_instance_off_the_list(storage: Storage) -> None:
    waiting = make("order::w", status=Status.WAITING, timers=(timer(NOW),))
    await storage.put(waiting, None)

    await storage.put(next_revision(waiting, timers=()), waiting.revision)

    assert await storage.due_timers(NOW) == []


async def test_deleting_an_instance_removes_its_timer(storage: Storage) -> None:
    await storage.put(make("order::w", timers=(timer(NOW),)), None)

    await storage.delete("order::w")

    assert await storage.due_timers(NOW) == []
    assert await storage.next_timer_at() is None


# -- statistics ------------------------------------------------------------------------------


async def test_stats_count_the_instances_written(storage: Storage) -> None:
    stats = storage.stats  # every adapter reports what it wrote
    created = make()
    await storage.put(created, None)
    await storage.put(next_revision(created), created.revision)
    with pytest.raises(ConcurrencyError):
        await storage.put(next_revision(created), created.revision)

    assert stats.writes == 2
    assert 1 <= stats.transactions <= 2


# -- history, outputs and earlier runs -------------------------------------------------------


def completed(instance: Instance, step: str, updates: dict[str, Any] | None) -> Instance:
    """What the engine stores when `step` completes: its entry, its output, one revision on."""
    entry = ExecutionEntry(
        step=step,
        event="done",
        timestamp=instance.updated_at + timedelta(seconds=1),
        context_updates=updates,
        attempt=2,
        duration=0.25,
        targets=("next",),
    )
    return next_revision(
        instance,
        context=instance.context.with_updates(step, updates if updates is not None else {}),
        completed_steps=instance.completed_steps | {step},
        execution_history=(*instance.execution_history, entry),
    )


async def test_a_long_history_with_outputs_reads_back_equal_from_any_reader(
    storage: Storage, reopen: Any
) -> None:
    instance = make()
    await storage.put(instance, None)
    for n in range(30):
        before = instance
        instance = completed(instance, f"step_{n % 7}", None if n % 5 == 0 else {"n": n})
        await storage.put(instance, before.revision)

    assert await storage.get(instance.id) == instance
    # Another process (nothing known of the instance) reads, then writes on top of it.
    async with reopen() as other:
        read = await other.get(instance.id)
        assert read == instance
        assert read.context.steps["step_1"] == {"n": 29}
        longer = completed(read, "last", {"ok": True})
        await other.put(longer, read.revision)
    assert await storage.get(instance.id) == longer


async def test_a_write_over_a_state_written_by_another_process_is_exact(
    storage: Storage, reopen: Any
) -> None:
    instance = completed(make(), "a", {"x": 1})
    await storage.put(instance, None)
    async with reopen() as other:
        theirs = completed(await other.get(instance.id), "b", {"x": 2})
        await other.put(theirs, instance.revision)
    # This process still knows the older state: its write must not build on it.
    with pytest.raises(ConcurrencyError):
        await storage.put(completed(instance, "c", None), instance.revision)
    mine = completed(await storage.get(instance.id), "c", None)
    await storage.put(mine, theirs.revision)
    assert await storage.get(instance.id) == mine


async def test_starting_a_finished_id_again_keeps_the_earlier_runs(storage: Storage) -> None:
    first = completed(make(), "receive", {"n": 1}).evolve(status=Status.FAILED, error="boom")
    await storage.put(first, None)
    second = make().evolve(created_at=NOW + timedelta(hours=1))
    await storage.put(second, None)
    done = completed(second, "receive", {"n": 2}).evolve(status=Status.COMPLETED)
    await storage.put(done, second.revision)
    third = make().evolve(created_at=NOW + timedelta(hours=2))
    await storage.put(third, None)

    assert await storage.get(third.id) == third
    assert await storage.runs(third.id) == [done, first]
    assert await storage.runs(third.id, limit=1) == [done]
    assert await ids(storage, status=Status.FAILED) == []  # earlier runs are not listed

    await storage.delete(third.id)
    assert await storage.runs(third.id) == []


async def test_keep_runs_bounds_the_earlier_runs_kept(storage: Storage) -> None:
    storage.keep_runs = 2  # type: ignore[attr-defined]  # every adapter has the setting
    runs = []
    for n in range(5):
        run = make().evolve(status=Status.COMPLETED, created_at=NOW + timedelta(hours=n))
        await storage.put(run, None)
        runs.append(run)

    assert await storage.runs(runs[-1].id) == [runs[3], runs[2]]


# -- ownership: claims ------------------------------------------------------------------------


def runner_record(runner_id: str) -> RunnerRecord:
    now = NOW.timestamp()
    return RunnerRecord(runner_id, "host", 1, now, now, now + 60)


async def test_claim_by_ids_takes_unowned_and_own_instances_in_one_call(storage: Storage) -> None:
    await storage.register_runner(runner_record("r1"))
    await storage.register_runner(runner_record("r2"))
    for name in ("a", "b", "c", "d"):
        await storage.put(make(f"order::{name}", status=Status.WAITING), None)
    await storage.put(make("order::done", status=Status.COMPLETED), None)
    assert [i.id for i in await storage.claim("r1", instance_id="order::a")] == ["order::a"]
    assert [i.id for i in await storage.claim("r2", instance_id="order::b")] == ["order::b"]

    taken = await storage.claim(
        "r1", instance_ids=["order::a", "order::b", "order::c", "order::done", "order::nope"]
    )

    # Its own (a) and the unowned (c); not another runner's (b), a finished or a missing one.
    assert sorted(i.id for i in taken) == ["order::a", "order::c"]
    assert await storage.owner_of("order::c") == "r1"
    assert await storage.owner_of("order::b") == "r2"
    assert await storage.owner_of("order::d") is None
    assert [i.id for i in taken if i.id == "order::c"] == ["order::c"]
    assert await storage.claim("r1", instance_ids=[]) == []


async def test_an_unregistered_runner_claims_nothing(storage: Storage) -> None:
    await storage.put(make("order::a", status=Status.WAITING), None)

    assert await storage.claim("ghost", instance_ids=["order::a"]) == []
    assert await storage.claim("ghost", instance_id="order::a") == []
    assert await storage.owner_of("order::a") is None


async def test_workflows_lists_each_stored_workflow_name_once(storage: Storage) -> None:
    assert await storage.workflows() == []
    await storage.put(make("order::a", workflow="shop.Checkout"), None)
    await storage.put(make("order::b", workflow="shop.Checkout"), None)
    await storage.put(make("order::c", workflow="billing.Invoice"), None)

    assert await storage.workflows() == ["billing.Invoice", "shop.Checkout"]


async def test_a_writer_that_never_read_the_instance_extends_a_long_history(
    storage: Storage, reopen: Any
) -> None:
    instance = make()
    await storage.put(instance, None)
    for n in range(20):  # longer than a whole rewrite is allowed to be
        before = instance
        instance = completed(instance, f"step_{n}", {"n": n})
        await storage.put(instance, before.revision)

    async with reopen() as other:  # knows nothing of it: works out what the stored one lacks
        longer = completed(instance, "last", {"n": 20})
        await other.put(longer, instance.revision)
        assert await other.get(instance.id) == longer
    assert await storage.get(instance.id) == longer
