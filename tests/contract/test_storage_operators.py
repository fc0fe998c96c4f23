"""The storage contract for what operators read: ordering by last change, keyset paging,
id prefixes, `updated_since`, counts per workflow and status, and earlier runs of an id.

Runs against every adapter in `conftest.STORAGE_FACTORIES`.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from test_storage_contract import NOW, make, next_revision

from hephaestus.core.instance import Instance, Status
from hephaestus.storage import Query, Storage


def at(minutes: int) -> datetime:
    return NOW + timedelta(minutes=minutes)


async def stored(storage: Storage, instance_id: str, minutes: int, **changes: Any) -> Instance:
    instance = make(instance_id).evolve(updated_at=at(minutes), **changes)
    await storage.put(instance, None)
    return instance


@pytest.fixture
async def timeline(storage: Storage) -> Storage:
    """Seven instances changed at distinct minutes, two sharing one, across statuses."""
    await stored(storage, "order::a1", 1)
    await stored(storage, "order::a2", 5, status=Status.FAILED)
    await stored(storage, "order::b1", 3, status=Status.COMPLETED)
    await stored(storage, "order::b2", 3, status=Status.FAILED)
    await stored(storage, "invoice::a1", 4, workflow="billing.Invoice")
    await stored(storage, "order::c1", 2, status=Status.WAITING)
    await stored(storage, "order::c2", 6)
    return storage


async def ids(storage: Storage, **filters: Any) -> list[str]:
    return [instance.id for instance in await storage.query(Query(**filters))]


NEWEST_FIRST = [
    "order::c2",
    "order::a2",
    "invoice::a1",
    "order::b2",
    "order::b1",
    "order::c1",
    "order::a1",
]


async def test_order_updated_lists_newest_change_first_ties_by_id_descending(
    timeline: Storage,
) -> None:
    assert await ids(timeline, order="updated") == NEWEST_FIRST


async def test_keyset_paging_by_last_change_visits_every_instance_once(timeline: Storage) -> None:
    seen: list[str] = []
    cursor = None
    while True:
        page = await timeline.query(Query(order="updated", limit=2, cursor=cursor))
        seen += [instance.id for instance in page]
        if len(page) < 2:
            break
        cursor = (page[-1].updated_at, page[-1].id)
    assert seen == NEWEST_FIRST


async def test_paging_by_last_change_combines_with_filters(timeline: Storage) -> None:
    first = await timeline.query(Query(order="updated", status=Status.FAILED, limit=1))
    assert [i.id for i in first] == ["order::a2"]
    rest = await ids(
        timeline,
        order="updated",
        status=Status.FAILED,
        cursor=(first[0].updated_at, first[0].id),
    )
    assert rest == ["order::b2"]


async def test_id_prefix_keeps_ids_that_start_with_it(timeline: Storage) -> None:
    assert await ids(timeline, id_prefix="order::b") == ["order::b1", "order::b2"]
    assert await ids(timeline, id_prefix="invoice::") == ["invoice::a1"]
    assert await ids(timeline, id_prefix="order::z") == []
    assert await ids(timeline, id_prefix="order::c", order="updated") == [
        "order::c2",
        "order::c1",
    ]


async def test_updated_since_keeps_instances_changed_at_or_after_it(timeline: Storage) -> None:
    assert await ids(timeline, updated_since=at(4), order="updated") == NEWEST_FIRST[:3]
    naive = at(5).replace(tzinfo=None)  # taken as UTC
    assert await ids(timeline, updated_since=naive) == ["order::a2", "order::c2"]


async def test_updated_since_compares_instants_across_offsets(storage: Storage) -> None:
    await stored(storage, "order::a1", 10)
    plus_two = at(10).astimezone(timezone(timedelta(hours=2)))
    assert await ids(storage, updated_since=plus_two) == ["order::a1"]
    assert await ids(storage, updated_since=plus_two + timedelta(seconds=1)) == []


def test_query_refuses_mixed_paging() -> None:
    with pytest.raises(ValueError, match="cursor"):
        Query(cursor=(NOW, "order::a1"))
    with pytest.raises(ValueError, match="after"):
        Query(order="updated", after="order::a1")
    with pytest.raises(ValueError, match="order"):
        Query(order="created")  # type: ignore[arg-type]


async def test_counts_by_workflow_and_status(timeline: Storage) -> None:
    flow = make().workflow
    assert await timeline.counts() == {
        (flow, "running"): 2,
        (flow, "failed"): 2,
        (flow, "completed"): 1,
        (flow, "waiting"): 1,
        ("billing.Invoice", "running"): 1,
    }


async def test_counts_of_an_empty_storage(storage: Storage) -> None:
    assert await storage.counts() == {}


# -- earlier runs of an id ------------------------------------------------------------------


async def test_runs_of_an_id_with_one_run_is_empty(storage: Storage) -> None:
    await storage.put(make(), None)
    assert await storage.runs("order::a1") == []
    assert await storage.runs("order::nothing") == []


async def test_a_new_run_keeps_the_finished_one_newest_first(storage: Storage) -> None:
    first = make()
    failed = next_revision(first, status=Status.FAILED, error="boom")
    await storage.put(first, None)
    await storage.put(failed, first.revision)
    second = make().evolve(created_at=at(10), updated_at=at(10))
    await storage.put(second, None)
    completed = next_revision(second, status=Status.COMPLETED)
    await storage.put(completed, second.revision)
    third = make().evolve(created_at=at(20), updated_at=at(20))
    await storage.put(third, None)

    assert await storage.get("order::a1") == third
    assert await storage.runs("order::a1") == [completed, failed]
    assert await storage.runs("order::a1", limit=1) == [completed]
    # An earlier run is not a current instance: queries and counts see the current one only.
    assert await ids(storage) == ["order::a1"]
    assert sum((await storage.counts()).values()) == 1


async def test_runs_with_a_zero_limit_is_empty(storage: Storage) -> None:
    first = make(status=Status.COMPLETED)
    await storage.put(first, None)
    await storage.put(make(), None)
    assert await storage.runs("order::a1", limit=0) == []
