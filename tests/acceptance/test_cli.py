"""The `hephaestus` command, run as a user runs it: a real process on a real database.

Instances come from real runs: the demo writes one, and an app in the test
parks two approval instances on a `WaitForEvent` step and fails a third. The
CLI then lists, shows, resumes and cancels them, and the storage is read back
to check that what the CLI said happened did happen.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
from cli_fixtures.flows import ApprovalFlow, FailingFlow
from worker_process import worker_process

import hephaestus as hephaestus_package
from hephaestus import Hephaestus, Instance, LocalRunner, SQLiteStorage, Status
from hephaestus.storage.base import Query, Storage
from hephaestus.storage.postgres import PostgresStorage

# The directory that holds the `cli_fixtures` package: run from it, the CLI imports it by name.
PROJECT = Path(__file__).parent
# The module that defines the fixtures' workflows: a stored workflow name is never imported.
IMPORT = ("--import", "cli_fixtures.flows")
# Where the `hephaestus` under test is imported from, so the subprocess runs the same code.
SOURCE = Path(hephaestus_package.__file__).resolve().parent.parent


def hephaestus(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environ = {
        key: value
        for key, value in os.environ.items()
        if key not in ("HEPHAESTUS_STORAGE", "COLUMNS", "FORCE_COLOR", "PYTHONPATH")
    }
    extra = dict(env or {})
    paths = [extra.pop("PYTHONPATH", None), str(SOURCE)]
    environ.update(extra, PYTHONPATH=os.pathsep.join(p for p in paths if p))
    return subprocess.run(
        [sys.executable, "-m", "hephaestus.cli", *args],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )


def runner_process(storage_url: str) -> AbstractContextManager[subprocess.Popen[bytes]]:
    """A runner process for the CLI fixtures' workflows on the storage."""
    return worker_process(storage_url, "cli_fixtures.runner:app", PROJECT)


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    for fragment in fragments:
        assert fragment in lines[0]


def read_all(db: Path) -> dict[str, Instance]:
    async def read() -> dict[str, Instance]:
        async with SQLiteStorage(db) as storage:
            return {i.id: i for i in await storage.query(Query())}

    return asyncio.run(read())


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory whose `demo.db` holds one completed demo order, written by `hephaestus demo`."""
    directory = tmp_path_factory.mktemp("demo")
    result = hephaestus("demo", "--db", "demo.db", cwd=directory)
    assert result.returncode == 0, result.stderr
    assert "completed" in result.stdout
    assert "hephaestus instances list --storage sqlite:///demo.db" in result.stdout
    return directory


def seed(storage: Storage) -> None:
    """Park doc::one and doc::two on their approval step and fail job::one, in `storage`."""

    async def run() -> None:
        runner = LocalRunner()
        async with Hephaestus(storage=storage, runner=runner) as app:
            await app.start_instance(ApprovalFlow, {"title": "Q3 report"}, id="doc::one")
            await app.start_instance(ApprovalFlow, {"title": "Q4 plan"}, id="doc::two")
            await app.start_instance(FailingFlow, {}, id="job::one")
            await runner.wait_idle(timeout=10)

    asyncio.run(run())


@pytest.fixture
def approvals(tmp_path: Path) -> Path:
    """`flows.db`: doc::one and doc::two waiting for approval, job::one failed."""
    db = tmp_path / "flows.db"
    seed(SQLiteStorage(db))
    stored = read_all(db)
    assert stored["doc::one"].waiting_steps == {"await_approval"}
    assert stored["job::one"].status is Status.FAILED
    return db


# --- instances list and show on the demo's database -------------------------------------------


def test_list_shows_the_demo_instance_in_a_table(demo_dir: Path) -> None:
    (order,) = read_all(demo_dir / "demo.db").values()

    table = hephaestus("instances", "list", "--storage", "sqlite:///demo.db", cwd=demo_dir)
    assert table.returncode == 0, table.stderr
    header, _rule, row, *rest = table.stdout.splitlines()
    assert header.split() == ["ID", "WORKFLOW", "VERSION", "STATUS", "STEPS", "UPDATED", "(UTC)"]
    assert row.split()[:4] == [order.id, "hephaestus.demo.DemoOrder", "1", "completed"]
    assert rest == ["1 instance"]

    # The storage can come from the environment, as an absolute URL, and filters apply.
    absolute = f"sqlite:///{demo_dir / 'demo.db'}"
    assert absolute.startswith("sqlite:////")
    waiting = hephaestus(
        "instances",
        "list",
        "--status",
        "waiting",
        cwd=PROJECT,
        env={"HEPHAESTUS_STORAGE": absolute},
    )
    assert waiting.returncode == 0, waiting.stderr
    assert waiting.stdout.strip() == "No instances match."

    empty = hephaestus("instances", "list", "--storage", "memory://", cwd=demo_dir)
    assert (empty.returncode, empty.stdout.strip()) == (0, "No instances match.")


def test_show_gives_context_history_and_the_marked_graph(demo_dir: Path) -> None:
    (order,) = read_all(demo_dir / "demo.db").values()

    shown = hephaestus(
        "instances", "show", order.id, "--storage", "sqlite:///demo.db", cwd=demo_dir
    )
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    assert out.splitlines()[0].split() == ["instance", order.id]
    assert out.splitlines()[2].split() == ["status", "completed"]
    assert '"customer": "ada@example.com"' in out  # the context, as indented JSON
    assert '"total": 191.0' in out
    history = out[out.index("History") : out.index("Graph")].splitlines()
    steps = [line.split()[1:3] for line in history if line.strip()[:1].isdigit()]
    assert steps == [
        ["validate_order", "valid"],
        ["reserve_stock", "reserved"],
        ["charge_payment", "charged"],
        ["await_payment_confirmation", "payment_confirmed"],
        ["ship", "shipped"],
        ["wait", "timeout"],
        ["done", "done"],
    ]
    graph = out[out.index("Graph") :]
    assert "▶ ValidateOrder  (start)  [completed]" in graph
    assert "■ Done  (end)  [completed]" in graph
    assert "○ RejectOrder\n" in graph  # the branch not taken carries no mark


# --- validate and graph -----------------------------------------------------------------------


def test_validate_reports_each_workflow_and_each_umbrella_version() -> None:
    result = hephaestus(
        "validate", "cli_fixtures.flows:ApprovalFlow", "cli_fixtures.flows:Review", cwd=PROJECT
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "OK  cli_fixtures.flows:ApprovalFlow  v1  5 steps, 5 transitions",
        "OK  cli_fixtures.flows:Review  umbrella: versions 1, 2, current 2",
        "    v1  cli_fixtures.flows.ReviewV1  2 steps, 1 transition",
        "    v2  cli_fixtures.flows.ReviewV2  3 steps, 2 transitions",
    ]


def test_validate_names_the_rule_a_broken_module_breaks() -> None:
    result = hephaestus(
        "validate", "cli_fixtures.flows:ApprovalFlow", "cli_fixtures.broken:BrokenFlow", cwd=PROJECT
    )
    assert result.stdout.startswith("OK  cli_fixtures.flows:ApprovalFlow")
    assert_one_line_error(
        result,
        "cli_fixtures.broken:BrokenFlow",
        "CycleError",
        "Draft -> Edit -> Draft",
        "broken.py:",
    )


def test_graph_draws_ascii_mermaid_and_dot(tmp_path: Path) -> None:
    ascii_art = hephaestus("graph", "cli_fixtures.flows:ApprovalFlow", cwd=PROJECT)
    assert ascii_art.returncode == 0, ascii_art.stderr
    assert "▶ Submit  (start)" in ascii_art.stdout
    assert "  ├─ approved ──▶ Publish\n  └─ timeout ──▶ Expire" in ascii_art.stdout

    target = tmp_path / "approval.mmd"
    mermaid = hephaestus(
        "graph",
        "cli_fixtures.flows:ApprovalFlow",
        "--format",
        "mermaid",
        "-o",
        str(target),
        cwd=PROJECT,
    )
    assert mermaid.returncode == 0, mermaid.stderr
    assert mermaid.stdout.strip() == f"Wrote the mermaid graph of ApprovalFlow v1 to {target}"
    drawing = target.read_text(encoding="utf-8")
    assert drawing.startswith("flowchart TD\n")
    assert 'await_approval -->|"approved"| publish' in drawing

    dot = hephaestus(
        "graph", "cli_fixtures.flows:Review", "--format", "dot", "--version", "1", cwd=PROJECT
    )
    assert dot.returncode == 0, dot.stderr
    assert dot.stdout.startswith('digraph "cli_fixtures.flows.ReviewV1" {')
    assert '"submit" -> "done" [label="submitted"];' in dot.stdout


# --- resume, cancel, and what show says about parked and failed instances ---------------------


def test_show_lists_the_waiting_step_its_events_and_its_timer(approvals: Path) -> None:
    url = f"sqlite:///{approvals}"
    shown = hephaestus("instances", "show", "doc::one", "--storage", url, *IMPORT, cwd=PROJECT)
    assert shown.returncode == 0, shown.stderr
    pending = shown.stdout[shown.stdout.index("Pending steps") : shown.stdout.index("Graph")]
    (row,) = [line for line in pending.splitlines() if line.startswith("await_approval")]
    assert row.split()[:5] == ["await_approval", "waiting", "1", "approved,", "timeout"]
    assert "emits timeout at" in row
    graph = shown.stdout[shown.stdout.index("Graph") :]
    assert "▶ Submit  (start)  [completed]" in graph
    assert "[waiting]" in graph


def test_show_marks_the_failing_step_of_a_failed_instance(approvals: Path) -> None:
    shown = hephaestus(
        "instances", "show", "job::one", "--storage", f"sqlite:///{approvals}", *IMPORT, cwd=PROJECT
    )
    assert shown.returncode == 0, shown.stderr
    assert "status    failed" in shown.stdout
    assert "RuntimeError: the printer caught fire" in shown.stdout
    assert "▶ Explode  (start)  [failed]" in shown.stdout


def test_resume_records_the_event_and_a_runner_runs_the_instance_to_the_end(
    approvals: Path,
) -> None:
    url = f"sqlite:///{approvals}"

    # Without --import the workflow is not known: one line that names it, no change.
    unknown = hephaestus(
        "instances", "resume", "doc::one", "approved", "--storage", url, cwd=PROJECT
    )
    assert_one_line_error(unknown, "cli_fixtures.flows.ApprovalFlow", "--import cli_fixtures.flows")
    wrong = hephaestus(
        "instances", "resume", "doc::one", "rejected", "--storage", url, *IMPORT, cwd=PROJECT
    )
    assert_one_line_error(wrong, "InvalidEventError", "'rejected'", "approved")
    bad_data = hephaestus(
        "instances",
        "resume",
        "doc::one",
        "approved",
        "--data",
        "[1]",
        "--storage",
        url,
        cwd=PROJECT,
    )
    assert_one_line_error(bad_data, "--data must be a JSON object")
    assert read_all(approvals)["doc::one"].waiting_steps == {"await_approval"}
    assert read_all(approvals)["doc::one"].inbox == ()

    # With no runner, the event is recorded in the inbox and nothing runs.
    recorded = hephaestus(
        "instances",
        "resume",
        "doc::one",
        "approved",
        "--data",
        '{"by": "ada"}',
        "--storage",
        url,
        *IMPORT,
        cwd=PROJECT,
    )
    assert recorded.returncode == 0, recorded.stderr
    assert recorded.stdout.startswith("Recorded approved for doc::one")
    assert "no runner is running on this storage" in recorded.stdout
    pending = read_all(approvals)["doc::one"]
    assert pending.status is Status.WAITING
    assert [(i.kind, i.event, i.data) for i in pending.inbox] == [
        ("event", "approved", {"by": "ada"})
    ]

    # A runner process picks it up; `--wait` follows the instance until it is done.
    with runner_process(url):
        followed = hephaestus(
            "instances",
            "resume",
            "doc::two",
            "approved",
            "--wait",
            "20",
            "--storage",
            url,
            "--import",
            "cli_fixtures.flows",
            cwd=PROJECT,
        )
        assert followed.returncode == 0, followed.stderr
        assert followed.stdout.strip().endswith("doc::two is now completed")
        one = asyncio.run(_wait_final(approvals, "doc::one"))

    assert one.status is Status.COMPLETED
    assert [(e.step, e.event) for e in one.execution_history] == [
        ("submit", "submitted"),
        ("await_approval", "approved"),
        ("publish", "published"),
        ("done", "done"),
    ]
    assert one.context.steps["await_approval"] == {"by": "ada"}  # the event's data
    assert one.context.steps["publish"] == {"published_title": "Q3 report"}
    assert one.timers == ()  # the hour-long timeout went with the wait
    assert one.inbox == ()


async def _wait_final(db: Path, instance_id: str) -> Instance:
    async with Hephaestus(storage=SQLiteStorage(db), runner=None) as client:
        return await client.wait(instance_id, timeout=20)


def test_cancel_stops_a_waiting_instance_for_good(approvals: Path) -> None:
    url = f"sqlite:///{approvals}"
    cancelled = hephaestus(
        "instances", "cancel", "doc::two", "--storage", url, *IMPORT, cwd=PROJECT
    )
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout.startswith("Cancelled doc::two (it was waiting at await_approval)")

    stored = read_all(approvals)
    assert stored["doc::two"].status is Status.CANCELLED
    assert stored["doc::two"].timers == ()
    assert stored["doc::one"].status is Status.WAITING  # the other one is untouched

    again = hephaestus("instances", "cancel", "doc::two", "--storage", url, *IMPORT, cwd=PROJECT)
    assert_one_line_error(again, "InstanceNotWaitingError", "already cancelled")


def test_ids_with_colons_capitals_and_at_signs_are_shown_as_they_are(tmp_path: Path) -> None:
    """`urn:x:1` stays `urn:x:1` in every output, never Rich's `:x:` emoji."""
    db = tmp_path / "ids.db"

    async def run() -> None:
        runner = LocalRunner()
        async with Hephaestus(storage=SQLiteStorage(db), runner=runner) as app:
            for value in ("urn:x:1", "EXP-42", "jane.doe@example.com"):
                await app.start_instance(ApprovalFlow, {"title": value}, id=f"doc::{value}")
            await runner.wait_idle(timeout=10)

    asyncio.run(run())
    url = f"sqlite:///{db}"

    table = hephaestus("instances", "list", "--storage", url, cwd=PROJECT)
    assert table.returncode == 0, table.stderr
    rows = table.stdout.splitlines()[2:5]
    assert sorted(row.split()[0] for row in rows) == [
        "doc::EXP-42",
        "doc::jane.doe@example.com",
        "doc::urn:x:1",
    ]
    assert "\u274c" not in table.stdout  # the cross mark of `:x:`

    shown = hephaestus("instances", "show", "doc::urn:x:1", "--storage", url, cwd=PROJECT)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("instance  doc::urn:x:1\n")

    cancelled = hephaestus("instances", "cancel", "doc::EXP-42", "--storage", url, cwd=PROJECT)
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout.startswith("Cancelled doc::EXP-42 (it was waiting at await_approval)")
    assert read_all(db)["doc::EXP-42"].status is Status.CANCELLED

    spaced = hephaestus("instances", "show", "doc::EXP 42", "--storage", url, cwd=PROJECT)
    assert_one_line_error(
        spaced, "InvalidBusinessKeyError", "'doc::EXP 42'", "whitespace ' ' at index 3"
    )


def test_a_crafted_row_never_makes_the_cli_import_the_module_it_names(tmp_path: Path) -> None:
    # A module the CLI could import (the current directory is on its path) that leaves a mark.
    marker = tmp_path / "imported.marker"
    (tmp_path / "planted.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('imported')\n"
    )
    db = tmp_path / "flows.db"
    seed(SQLiteStorage(db))

    async def plant() -> None:
        async with SQLiteStorage(db) as storage:
            row = (await storage.get("doc::two")).to_dict()
            crafted = Instance.from_dict(dict(row, workflow="planted.ApprovalFlow"))
            await storage.put(crafted, row["revision"])

    asyncio.run(plant())
    url = f"sqlite:///{db}"

    shown = hephaestus("instances", "show", "doc::two", "--storage", url, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert not marker.exists()
    assert "workflow  planted.ApprovalFlow" in shown.stdout
    assert "workflow planted.ApprovalFlow of instance doc::two is not known" in shown.stdout
    listed = hephaestus(
        "instances", "list", "--workflow", "planted.ApprovalFlow", "--storage", url, cwd=tmp_path
    )
    assert listed.returncode == 0, listed.stderr
    assert "doc::two" in listed.stdout
    refused = hephaestus(
        "instances", "resume", "doc::two", "approved", "--storage", url, cwd=tmp_path
    )
    assert_one_line_error(refused, "planted.ApprovalFlow", "is not known", "--import planted")
    assert not marker.exists()
    assert read_all(db)["doc::two"].status is Status.WAITING
    # Cancelling a waiting instance needs no workflow: it works, and imports nothing either.
    cancelled = hephaestus("instances", "cancel", "doc::two", "--storage", url, cwd=tmp_path)
    assert cancelled.returncode == 0, cancelled.stderr
    assert not marker.exists()
    assert read_all(db)["doc::two"].status is Status.CANCELLED


def test_db_migrate_creates_a_database_the_other_commands_can_use(tmp_path: Path) -> None:
    migrated = hephaestus("db", "migrate", "--storage", "sqlite:///fresh.db", cwd=tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    assert migrated.stdout.startswith("Migrated SQLite database fresh.db: applied 0001_initial")

    again = hephaestus("db", "migrate", cwd=tmp_path, env={"HEPHAESTUS_STORAGE": "fresh.db"})
    assert again.stdout.strip() == "SQLite database fresh.db is up to date"
    assert read_all(tmp_path / "fresh.db") == {}


def test_instances_and_db_migrate_work_on_postgresql(postgres_url: str) -> None:
    seed(PostgresStorage(postgres_url))
    listed = hephaestus(
        "instances",
        "list",
        "--status",
        "waiting",
        "--json",
        cwd=PROJECT,
        env={"HEPHAESTUS_STORAGE": postgres_url},
    )
    assert sorted(i["id"] for i in json.loads(listed.stdout)) == ["doc::one", "doc::two"]

    with runner_process(postgres_url):
        resumed = hephaestus(
            "instances",
            "resume",
            "doc::one",
            "approved",
            "--wait",
            "20",
            "--storage",
            postgres_url,
            *IMPORT,
            cwd=PROJECT,
        )
    assert resumed.stdout.strip().endswith("doc::one is now completed"), resumed.stderr

    async def status_of(instance_id: str) -> Status:
        async with PostgresStorage(postgres_url) as storage:
            return (await storage.get(instance_id)).status

    assert asyncio.run(status_of("doc::one")) is Status.COMPLETED

    # A schema of its own, named in the URL: created by the first migrate, left alone by the next.
    in_schema = f"{postgres_url}?schema=cli_{secrets.token_hex(4)}"
    first = hephaestus("db", "migrate", "--storage", in_schema, cwd=PROJECT)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("Migrated PostgreSQL database")
    assert "applied 0001_initial" in first.stdout
    again = hephaestus("db", "migrate", "--storage", in_schema, cwd=PROJECT)
    assert again.stdout.strip().endswith("is up to date"), again.stderr


# --- bad input: one line, no traceback ----------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        pytest.param(
            ("instances", "list", "--storage", "redis://localhost/0"),
            ("unknown storage URL scheme 'redis'",),
            id="unknown-scheme",
        ),
        pytest.param(
            ("instances", "list", "--storage", "sqlite://"),
            ("malformed storage URL", "names no database file"),
            id="url-without-path",
        ),
        pytest.param(
            ("instances", "list", "--storage", "sqlite:///missing.db"),
            ("no Hephaestus database at missing.db",),
            id="missing-database",
        ),
        pytest.param(
            ("instances", "show", "doc::nothere", "--storage", "sqlite:///demo.db"),
            ("no instance doc::nothere in sqlite:///demo.db",),
            id="unknown-instance",
        ),
        pytest.param(
            ("instances", "cancel", "Order 42", "--storage", "sqlite:///demo.db"),
            ("InvalidBusinessKeyError", "'Order 42'"),
            id="malformed-id",
        ),
        pytest.param(
            ("graph", "nosuchmodule:Flow"),
            ("no module named 'nosuchmodule'",),
            id="unknown-module",
        ),
        pytest.param(
            ("validate", "hephaestus.demo:NoSuchFlow"),
            ("module hephaestus.demo has no attribute 'NoSuchFlow'",),
            id="unknown-class",
        ),
        pytest.param(
            ("graph", "hephaestus.demo:ValidateOrder"),
            ("is not a workflow class (it is the step class ValidateOrder)",),
            id="not-a-workflow",
        ),
        pytest.param(
            ("instances", "list", "--storage", "postgresql://app:s3cret@db.invalid/app?schema="),
            ("malformed storage URL", "postgresql://app:***@db.invalid/app", "schema= is empty"),
            id="postgres-empty-schema",
        ),
    ],
)
def test_bad_input_gives_one_line_and_a_failing_status(
    demo_dir: Path, args: tuple[str, ...], fragments: tuple[str, ...]
) -> None:
    result = hephaestus(*args, cwd=demo_dir)
    assert_one_line_error(result, *fragments)
    assert "s3cret" not in result.stderr


def test_a_postgresql_url_without_the_postgres_extra_says_what_to_install(demo_dir: Path) -> None:
    without_driver = {"PYTHONPATH": str(PROJECT / "cli_fixtures" / "without_postgres")}
    url = "postgresql://app:s3cret@db.invalid/app"
    for command in (("instances", "list"), ("db", "migrate")):
        result = hephaestus(*command, "--storage", url, cwd=demo_dir, env=without_driver)
        assert_one_line_error(
            result, "StorageError", "pip install 'hephaestus-workflows[postgres]'"
        )
        assert "s3cret" not in result.stderr


# --- retry and runs -------------------------------------------------------------------------


def test_retry_runs_a_failed_instance_again_and_a_runner_completes_it(tmp_path: Path) -> None:
    from cli_fixtures.flows import PrintFlow

    db = tmp_path / "print.db"

    async def fail_once() -> None:
        runner = LocalRunner()
        async with Hephaestus(storage=SQLiteStorage(db), runner=runner) as app:
            await app.start_instance(PrintFlow, {"jammed": True}, id="print::p1")
            await runner.wait_idle(timeout=10)

    asyncio.run(fail_once())
    assert read_all(db)["print::p1"].status is Status.FAILED
    url = f"sqlite:///{db}"

    waiting = hephaestus("instances", "retry", "doc::none", "--storage", url, cwd=PROJECT)
    assert_one_line_error(waiting, "no instance doc::none")

    with runner_process(url):
        retried = hephaestus(
            "instances",
            "retry",
            "print::p1",
            "--wait",
            "20",
            "--storage",
            url,
            *IMPORT,
            cwd=PROJECT,
        )
        assert retried.returncode == 0, retried.stderr
    assert retried.stdout.startswith("Retrying print::p1 from print_pages")
    assert "print::p1 is now completed" in retried.stdout
    stored = read_all(db)["print::p1"]
    assert stored.status is Status.COMPLETED
    assert [(e.step, e.event) for e in stored.execution_history] == [
        ("print_pages", "hephaestus:retry"),
        ("print_pages", "printed"),
        ("done", "done"),
    ]

    again = hephaestus("instances", "retry", "print::p1", "--storage", url, *IMPORT, cwd=PROJECT)
    assert_one_line_error(again, "InstanceNotFailedError", "print::p1 is completed, not failed")

    runs = hephaestus("instances", "show", "print::p1", "--runs", "--storage", url, cwd=PROJECT)
    assert runs.returncode == 0, runs.stderr
    (row,) = [line for line in runs.stdout.splitlines() if line.strip().startswith("current")]
    assert "completed" in row
    as_json = hephaestus(
        "instances", "show", "print::p1", "--runs", "--json", "--storage", url, cwd=PROJECT
    )
    assert [run["status"] for run in json.loads(as_json.stdout)] == ["completed"]


def test_list_sorts_by_last_change_filters_by_it_and_keeps_every_column(
    approvals: Path,
) -> None:
    url = f"sqlite:///{approvals}"
    stored = read_all(approvals)
    newest_first = sorted(stored.values(), key=lambda i: (i.updated_at, i.id), reverse=True)
    listed = hephaestus("instances", "list", "--json", "--storage", url, cwd=PROJECT)
    assert [i["id"] for i in json.loads(listed.stdout)] == [i.id for i in newest_first]

    page = hephaestus("instances", "list", "--limit", "1", "--storage", url, cwd=PROJECT)
    assert f"more after --after {newest_first[0].id}" in page.stdout
    rest = hephaestus(
        "instances", "list", "--after", newest_first[0].id, "--json", "--storage", url, cwd=PROJECT
    )
    assert [i["id"] for i in json.loads(rest.stdout)] == [i.id for i in newest_first[1:]]

    later = newest_first[0].updated_at.isoformat()
    since = hephaestus(
        "instances", "list", "--updated-since", later, "--json", "--storage", url, cwd=PROJECT
    )
    assert newest_first[0].id in [i["id"] for i in json.loads(since.stdout)]
    future = hephaestus(
        "instances", "list", "--updated-since", "2999-01-01", "--storage", url, cwd=PROJECT
    )
    assert future.stdout.strip() == "No instances match."
    bad = hephaestus("instances", "list", "--updated-since", "soon", "--storage", url, cwd=PROJECT)
    assert_one_line_error(bad, "--updated-since 'soon' is not a date and time")

    # A narrow terminal wraps values; it never drops a column.
    for width in ("60", "80"):
        narrow = hephaestus(
            "instances", "list", "--storage", url, cwd=PROJECT, env={"COLUMNS": width}
        )
        header = " ".join(narrow.stdout.splitlines()[:3])
        for column in ("ID", "WORK", "VER", "STAT", "STEP", "UPDA"):
            assert column in header, (width, narrow.stdout)
        assert max(len(line) for line in narrow.stdout.splitlines()) <= int(width)


def test_validate_json_reports_workflows_and_errors() -> None:
    result = hephaestus(
        "validate",
        "--json",
        "cli_fixtures.flows:ApprovalFlow",
        "cli_fixtures.flows:Review",
        "cli_fixtures.broken:BrokenFlow",
        cwd=PROJECT,
    )
    assert result.returncode == 1
    approval, review, broken = json.loads(result.stdout)
    assert approval["ok"] is True
    [flow] = approval["workflows"]
    assert flow["name"] == "cli_fixtures.flows.ApprovalFlow"
    assert flow["version"] == 1
    assert flow["shape"] == "5 steps, 5 transitions"
    assert [v["version"] for v in review["workflows"][0]["versions"]] == [1, 2]
    assert broken["ok"] is False
    assert "cli_fixtures.broken:BrokenFlow" in broken["error"]


def test_worker_and_ui_take_a_log_level() -> None:
    for command in ("worker", "ui"):
        shown = hephaestus(command, "--help", cwd=PROJECT)
        assert "--log-level [debug|info|warning|error]" in shown.stdout
    wrong = hephaestus("worker", "--app", "x:y", "--log-level", "loud", cwd=PROJECT)
    assert wrong.returncode == 2
    assert "'loud' is not one of" in wrong.stderr
