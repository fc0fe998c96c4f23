"""Corrupt rows are quarantined: the runner opens, every other instance runs, nothing is lost.

Rows are damaged by hand, with SQL on the real database, in every way the
issue lists: a head document that is not JSON (SQLite only: `jsonb` refuses
it), one without its `workflow`, with an unknown status, with a bad
timestamp, one whose JSON id is another row's, and one whose log rows are
missing. Each damaged head is a copy of a good one, with the good one's log
rows copied too (all but the last).
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
from hephaestus.storage._layout import full
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
    """Head documents damaged in each way, by row id; `good` is a valid running one."""

    def variant(**changes: Any) -> str:
        data = {**good, **changes}
        return json.dumps({k: v for k, v in data.items() if v is not _DROP})

    return {
        "rtcor::noworkflow": variant(id="rtcor::noworkflow", workflow=_DROP),
        "rtcor::nolog": variant(id="rtcor::nolog"),
        "rtcor::badstatus": variant(id="rtcor::badstatus", status="exploded"),
        "rtcor::badtime": variant(id="rtcor::badtime", created_at="yesterday-ish"),
        "rtcor::otherid": variant(id="rtcor::somebodyelse"),
    }


_DROP = object()
PROBLEMS = {
    "rtcor::notjson": "JSONDecodeError",
    "rtcor::noworkflow": "KeyError",
    "rtcor::nolog": "ValueError: its log",
    "rtcor::badstatus": "'exploded' is not a valid Status",
    "rtcor::badtime": "Invalid isoformat string",
    "rtcor::otherid": "its document is the instance 'rtcor::somebodyelse'",
}


def corrupt_sqlite(path: Path, documents: dict[str, str]) -> None:
    with sqlite3.connect(path) as conn:
        for row_id, document in documents.items():
            conn.execute(
                "INSERT INTO workflow_instances (id, workflow, workflow_version, status, "
                "revision, next_timer_at, created_at, updated_at, document, needs_runner, "
                "history_length) "
                "VALUES (?, 'x', 1, 'running', 1, 0, 'x', 'x', ?, 1, ?)",
                (row_id, document, _LENGTH),
            )
            conn.execute(
                "INSERT INTO workflow_log SELECT ?, run, seq, entry FROM workflow_log "
                "WHERE instance_id = ? AND seq < ?",
                (row_id, TEMPLATE, _copied(row_id)),
            )


def corrupt_postgres(url: str, documents: dict[str, str]) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        for row_id, document in documents.items():
            conn.execute(
                "INSERT INTO workflow_instances (id, workflow, workflow_version, status, "
                "revision, next_timer_at, created_at, updated_at, document, needs_runner, "
                "history_length) "
                "VALUES (%s, 'x', 1, 'running', 1, now(), now(), now(), %s::jsonb, true, %s)",
                (row_id, document, _LENGTH),
            )
            conn.execute(
                "INSERT INTO workflow_log SELECT %s, run, seq, entry FROM workflow_log "
                "WHERE instance_id = %s AND seq < %s",
                (row_id, TEMPLATE, _copied(row_id)),
            )


TEMPLATE = "rtcor::ok0"
# The template was started by a client: no history yet, only its input in the log,
# which every damaged head gets a copy of but `nolog`.
_LENGTH = 0


def _copied(row_id: str) -> int:
    return -1 if row_id == "rtcor::nolog" else 0


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
        template = json.loads(full(await client.get(TEMPLATE)).head)
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
