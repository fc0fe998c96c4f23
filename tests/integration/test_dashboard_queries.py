"""The dashboard's queries on SQLite walk an index in order: no full scan, no sort of all rows.

Checked with `EXPLAIN QUERY PLAN` on the SQL the adapter really runs, after
`ANALYZE` on a table of a few thousand rows, so that the planner chooses as
it would on a big database.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from hephaestus import Context, Done, Ok, Step, Unique, Workflow
from hephaestus.core.engine import new_instance
from hephaestus.core.instance import Status
from hephaestus.storage import Query, SQLiteStorage
from hephaestus.storage.sqlite import _Q, _select

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class DqStep(Step):
    events = ("ok",)

    def execute(self, instance: object, config: object, context: object) -> Ok:
        return Ok("ok")


class DqFlow(Workflow):
    unique = Unique(key="dq")
    start = DqStep
    transitions = {(DqStep, "ok"): Done}


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import asyncio

    path = tmp_path_factory.mktemp("dq") / "dq.db"
    statuses = [Status.COMPLETED] * 6 + [Status.FAILED, Status.WAITING, Status.RUNNING]

    async def fill() -> None:
        async with SQLiteStorage(path) as storage:
            for n in range(3000):
                instance = new_instance(
                    DqFlow.definition(),
                    instance_id=f"dq::n{n:05d}",
                    context=Context.new({}),
                    now=T0,
                    workflow=("a.Flow", "b.Flow", "c.Flow")[n % 3],
                ).instance
                await storage.put(
                    instance.evolve(
                        status=statuses[n % len(statuses)],
                        updated_at=T0 + timedelta(seconds=n),
                    ),
                    None,
                )

    asyncio.run(fill())
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("ANALYZE")
    return path


def plan(path: Path, sql: str, params: tuple[object, ...]) -> str:
    with closing(sqlite3.connect(path)) as conn:
        rows = conn.execute(f"EXPLAIN QUERY PLAN {sql}", params).fetchall()
    return "\n".join(str(row[-1]) for row in rows)


CURSOR = (T0 + timedelta(seconds=1500), "dq::n01500")


@pytest.mark.parametrize(
    "query",
    [
        Query(order="updated", limit=51),
        Query(order="updated", limit=51, cursor=CURSOR),
        Query(order="updated", limit=51, status=Status.FAILED),
        Query(order="updated", limit=51, status=Status.FAILED, cursor=CURSOR),
        Query(order="updated", limit=51, workflow="b.Flow"),
        Query(order="updated", limit=51, updated_since=T0 + timedelta(seconds=2900)),
        Query(order="updated", limit=51, id_prefix="dq::n012"),
    ],
    ids=["newest", "deep", "status", "status-deep", "workflow", "since", "prefix"],
)
def test_list_queries_use_an_index_and_never_sort_the_table(database: Path, query: Query) -> None:
    select = _select(query)
    assert select is not None
    shown = plan(database, *select)
    assert "USING" in shown, shown  # an index (or the primary key), not a bare table scan
    if query.id_prefix is None:
        assert "TEMP B-TREE" not in shown, shown  # the order comes from the index


def test_counts_read_an_index_only(database: Path) -> None:
    shown = plan(database, _Q["count_by_workflow_status"], ())
    assert "COVERING INDEX" in shown, shown
