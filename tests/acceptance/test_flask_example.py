"""The Flask example of docs/sync.md, run as a deployment runs it.

`docs/examples/flask_app.py` is imported as Flask would import it, with
`HEPHAESTUS_STORAGE` naming a SQLite file; its requests go through Flask's
test client. A real runner process (`hephaestus worker --app worker:app`, run
from `docs/examples`) executes the orders the web app starts. The responses
are checked, and so is the instance stored in the file.
"""

from __future__ import annotations

import asyncio
import importlib
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from flask.testing import FlaskClient
from worker_process import worker_process

from hephaestus import Instance, SQLiteStorage, Status

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "docs" / "examples"
EXCERPT = re.compile(r"^```py\n# (docs/examples/\S+)\n(.*?)^```", re.DOTALL | re.MULTILINE)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "shop.db"


@pytest.fixture
def storage_url(db: Path) -> str:
    url = f"sqlite:///{db}"
    assert url.startswith("sqlite:////")  # an absolute path: the worker runs elsewhere
    return url


@pytest.fixture
def example(storage_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """`flask_app`, imported fresh with `HEPHAESTUS_STORAGE` set; its client closed after."""
    monkeypatch.setenv("HEPHAESTUS_STORAGE", storage_url)
    monkeypatch.syspath_prepend(str(EXAMPLES))
    monkeypatch.delitem(sys.modules, "flask_app", raising=False)
    module = importlib.import_module("flask_app")
    try:
        yield module
    finally:
        module.client.close()
        sys.modules.pop("flask_app", None)


@pytest.fixture
def http(example: ModuleType) -> FlaskClient:
    client: FlaskClient = example.app.test_client()
    return client


@pytest.fixture
def worker(storage_url: str) -> Iterator[subprocess.Popen[bytes]]:
    """`hephaestus worker --app worker:app` in docs/examples, stopped with SIGTERM after."""
    with worker_process(storage_url, "worker:app", EXAMPLES) as process:
        yield process


def poll(http: FlaskClient, order: str, status: str, timeout: float = 20.0) -> dict[str, Any]:
    """GET /orders/<order> until it reports `status`; fail with the last answer otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        response = http.get(f"/orders/{order}")
        assert response.status_code == 200, response.json
        body: dict[str, Any] = response.json  # type: ignore[assignment]
        if body["status"] == status:
            return body
        assert time.monotonic() < deadline, f"order {order} is not {status}: {body}"
        time.sleep(0.02)


def read_stored(db: Path, instance_id: str) -> Instance:
    async def read() -> Instance:
        async with SQLiteStorage(db) as storage:
            return await storage.get(instance_id)

    return asyncio.run(read())


ORDER = {"order": "A-17", "customer": "ada@example.com", "items": ["lamp", "desk"]}


def test_an_order_is_started_approved_and_completed_over_http(
    worker: subprocess.Popen[bytes], http: FlaskClient, db: Path
) -> None:
    created = http.post("/orders", json=ORDER)
    assert (created.status_code, created.json) == (201, {"id": "order::A-17"})

    waiting = poll(http, "A-17", "waiting")
    assert waiting["context"] == {
        "initial": {"customer": "ada@example.com", "items": ["lamp", "desk"]},
        "steps": {"check_order": {"item_count": 2}},
    }

    approved = http.post("/orders/A-17/approve", json={"approver": "grace", "note": "ok"})
    assert (approved.status_code, approved.json) == (202, {"id": "order::A-17"})

    done = poll(http, "A-17", "completed")
    assert done["context"]["steps"] == {
        "check_order": {"item_count": 2},
        "await_approval": {"approver": "grace", "note": "ok"},
        "confirm_order": {"approved_by": "grace"},
        "done": {},
    }

    # The web process wrote, the worker executed: it is all in the file.
    stored = read_stored(db, "order::A-17")
    assert stored.status is Status.COMPLETED
    assert stored.workflow == "flows.OrderApproval"
    assert stored.context.to_dict() == done["context"]
    assert [e.event for e in stored.execution_history] == [
        "checked",
        "approved",
        "confirmed",
        "done",
    ]

    # A finished order takes no more approvals; a new one with the same value may start.
    again = http.post("/orders/A-17/approve", json={"approver": "grace"})
    assert (again.status_code, again.json["error"]) == (409, "InstanceNotWaitingError")
    assert http.post("/orders", json=ORDER).status_code == 201
    poll(http, "A-17", "waiting")


def test_errors_become_http_statuses(http: FlaskClient, db: Path) -> None:
    # No worker: the web app validates and writes on its own.
    assert http.post("/orders", json=ORDER).status_code == 201

    bad_value = {**ORDER, "order": "no spaces"}
    not_a_dict = ["not", "a", "dict"]
    cases = [
        (http.get("/orders/B-1"), 404, "InstanceNotFoundError"),
        (http.post("/orders/B-1/approve", json={}), 404, "InstanceNotFoundError"),
        (http.post("/orders", json=ORDER), 409, "AlreadyRunningError"),
        (http.post("/orders", json=bad_value), 400, "InvalidBusinessKeyError"),
        (http.post("/orders/A-17/approve", json=not_a_dict), 400, "ContextSerializationError"),
        (http.post("/orders", json={"items": []}), 400, "KeyError"),
    ]
    for response, status, error in cases:
        assert (response.status_code, response.json["error"]) == (status, error), response.json

    # Nothing the errors were about was written.
    stored = read_stored(db, "order::A-17")
    assert (stored.status, stored.revision, stored.inbox) == (Status.RUNNING, 1, ())


def test_request_threads_share_the_client(
    worker: subprocess.Popen[bytes], example: ModuleType
) -> None:
    barrier = threading.Barrier(10)

    def customer(n: int) -> tuple[str, list[Any]]:
        http = example.app.test_client()  # one per thread, as a threaded server has
        barrier.wait(10)
        created = http.post("/orders", json={"order": f"T-{n}", "items": ["x"] * n})
        poll(http, f"T-{n}", "waiting")
        approved = http.post(f"/orders/T-{n}/approve", json={"approver": f"clerk{n}"})
        done = poll(http, f"T-{n}", "completed")
        return f"T-{n}", [created.status_code, approved.status_code, done["context"]["steps"]]

    with ThreadPoolExecutor(max_workers=10) as pool:
        answers = dict(pool.map(customer, range(10)))

    assert answers == {
        f"T-{n}": [
            201,
            202,
            {
                "check_order": {"item_count": n},
                "await_approval": {"approver": f"clerk{n}"},
                "confirm_order": {"approved_by": f"clerk{n}"},
                "done": {},
            },
        ]
        for n in range(10)
    }


def test_the_excerpts_in_the_docs_are_the_example_files() -> None:
    page = (ROOT / "docs" / "sync.md").read_text(encoding="utf-8")
    excerpts = EXCERPT.findall(page)
    assert {name for name, _ in excerpts} == {
        "docs/examples/flask_app.py",
        "docs/examples/worker.py",
    }
    for name, text in excerpts:
        assert text in (ROOT / name).read_text(encoding="utf-8"), f"{name} changed:\n{text}"
