"""Corrupt rows are quarantined: the runner opens, every other instance runs, nothing is lost.

Rows are damaged by hand, with SQL on the real database, in every way the
issue lists: a document that is not JSON (SQLite only: `jsonb` refuses it),
one without `context`, with an unknown status, with a bad timestamp, and one
whose JSON id is another row's.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hephaestus import (
    CorruptInstanceError,
    Done,
    Hephaestus,
    LocalRunner,
    Ok,
    SQLiteStorage,
    Status,
    Step,
    Unique,
    Workflow,
)
from hephaestus.storage.base import Storage


class RtCorStep(Step):
    events = ("ok",)
    key = "work"

    def execute(self, instance: Any, config: Any, context: Any) -> Ok:
        return Ok("ok", {"n": context.initial["n"]})


class RtCorFlow(Workflow):
    unique = Unique(key="rtcor")
    start = RtCorStep
    transitions = {(RtCorStep, "ok"): Done}


def damaged(good: dict[str, Any]) -> dict[str, str]:
    """Documents damaged in each way, by row id; `good` is a valid running instance."""

    def variant(**changes: Any) -> str:
        data = {**good, **changes}
        return json.dumps({k: v for k, v in data.items() if v is not _DROP})

    return {
        "rtcor::nocontext": variant(id="rtcor::nocontext", context=_DROP),
        "rtcor::badstatus": variant(id="rtcor::badstatus", status="exploded"),
        "rtcor::badtime": variant(id="rtcor::badtime", created_at="yesterday-ish"),
        "rtcor::otherid": variant(id="rtcor::somebodyelse"),
    }


_DROP = object()
PROBLEMS = {
    "rtcor::notjson": "JSONDecodeError",
    "rtcor::nocontext": "KeyError",
    "rtcor::badstatus": "'exploded' is not a valid Status",
    "rtcor::badtime": "Invalid isoformat string",
    "rtcor::otherid": "its document is the instance 'rtcor::somebodyelse'",
}


def corrupt_sqlite(path: Path, documents: dict[str, str]) -> None:
    with sqlite3.connect(path) as conn:
        for row_id, document in documents.items():
            conn.execute(
                "INSERT INTO workflow_instances (id, workflow, workflow_version, status, "
                "revision, next_timer_at, created_at, updated_at, document, needs_runner) "
                "VALUES (?, 'x', 1, 'running', 1, 0, 'x', 'x', ?, 1)",
                (row_id, document),
            )


def corrupt_postgres(url: str, documents: dict[str, str]) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        for row_id, document in documents.items():
            conn.execute(
                "INSERT INTO workflow_instances (id, workflow, workflow_version, status, "
                "revision, next_timer_at, created_at, updated_at, document, needs_runner) "
                "VALUES (%s, 'x', 1, 'running', 1, now(), now(), now(), %s::jsonb, true)",
                (row_id, document),
            )


@pytest.fixture(params=["sqlite", "postgres"])
def backend(
    request: pytest.FixtureRequest, tmp_path: Path
) -> tuple[Callable[[], Storage], Callable[[dict[str, str]], None], str]:
    if request.param == "sqlite":
        path = tmp_path / "corrupt.db"
        return (
            lambda: SQLiteStorage(path),
            lambda docs: corrupt_sqlite(path, {"rtcor::notjson": "{not json", **docs}),
            f"sqlite:///{path}",
        )
    from hephaestus.storage.postgres import PostgresStorage

    url = request.getfixturevalue("postgres_url")
    return (lambda: PostgresStorage(url), lambda docs: corrupt_postgres(url, docs), url)


async def test_corrupt_rows_are_quarantined_and_every_other_instance_runs(
    backend: tuple[Callable[[], Storage], Callable[[dict[str, str]], None], str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    make_storage, corrupt_rows, url = backend
    # Instances written by a client, for a runner to pick up; one is the template.
    async with Hephaestus(storage=make_storage(), runner=None) as client:
        ids = [
            await client.start_instance(RtCorFlow, {"n": n}, id=f"rtcor::ok{n}") for n in range(5)
        ]
        template = (await client.get(ids[0])).to_dict()
    corrupt_rows(damaged(template))
    expected = {k: v for k, v in PROBLEMS.items() if k != "rtcor::notjson" or "sqlite" in url}

    caplog.set_level(logging.ERROR, logger="hephaestus")
    async with Hephaestus(storage=make_storage(), runner=LocalRunner()) as app:  # opens
        finals = [await app.wait(iid, timeout=10) for iid in ids]
        assert {f.status for f in finals} == {Status.COMPLETED}

        for row_id, problem in expected.items():
            with pytest.raises(CorruptInstanceError, match=row_id) as raised:
                await app.get(row_id)
            assert problem in str(raised.value)
        quarantined = dict(await app.storage.quarantined())
        assert set(quarantined) == set(expected)
        for row_id, problem in expected.items():
            assert problem in quarantined[row_id]
        listed = await app.list()
        assert sorted(i.id for i in listed) == sorted(ids)  # listing skips them
        assert await app.storage.due_timers(finals[0].updated_at) == []

    logged = "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)
    for row_id in expected:
        assert row_id in logged

    shown = subprocess.run(
        [
            sys.executable,
            "-m",
            "hephaestus.cli",
            "instances",
            "list",
            "--status",
            "corrupt",
            "--storage",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    for row_id in expected:
        assert row_id in shown.stdout
    assert "quarantined" in shown.stdout
