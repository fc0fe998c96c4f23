"""The dashboard's web app in process (Starlette's test client), on a memory storage.

The browser tests (tests/acceptance/test_ui_browser.py) drive the real thing;
these check each page and endpoint quickly: filters and keyset paging, the
graph from the definition or from the history, the token rules, and that
every action is a client-mode write (nothing runs here).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

pytest.importorskip("starlette")
httpx = pytest.importorskip("httpx")

from hephaestus import (  # noqa: E402
    Context,
    Done,
    Error,
    MemoryStorage,
    Ok,
    Status,
    Step,
    Unique,
    WaitForEvent,
    Workflow,
)
from hephaestus.core import engine  # noqa: E402
from hephaestus.core.instance import Instance  # noqa: E402
from hephaestus.ui import COOKIE, create_app  # noqa: E402

T0 = datetime(2026, 5, 1, 8, 0, tzinfo=UTC)
TOKEN = "tok-123"


class UiFetch(Step):
    events = ("fetched",)

    def execute(self, instance: Any, config: Any, context: Any) -> Ok:
        return Ok("fetched")


class UiApprove(WaitForEvent):
    pass


class UiFlow(Workflow):
    unique = Unique(key="ui")
    start = UiFetch
    transitions = {
        (UiFetch, "fetched"): (UiApprove, {"event_name": "approved"}),
        (UiApprove, "approved"): Done,
    }


DEFINITION = UiFlow.definition()


def started(instance_id: str, minute: int) -> Instance:
    return engine.new_instance(
        DEFINITION, instance_id=instance_id, context=Context.new({"n": minute}), now=T0
    ).instance.evolve(updated_at=T0 + timedelta(minutes=minute))


def failed(instance_id: str, minute: int) -> Instance:
    instance = started(instance_id, minute)
    return engine.complete_step(
        DEFINITION,
        instance,
        "ui_fetch",
        Error("upstream timed out"),
        attempt=1,
        now=T0 + timedelta(minutes=minute),
    ).instance


def waiting(instance_id: str, minute: int) -> Instance:
    instance = started(instance_id, minute)
    at = T0 + timedelta(minutes=minute)
    instance = engine.complete_step(
        DEFINITION, instance, "ui_fetch", Ok("fetched", {"rows": 2}), attempt=1, now=at
    ).instance
    from hephaestus import Async

    return engine.complete_step(
        DEFINITION, instance, "ui_approve", Async(), attempt=1, now=at
    ).instance


@pytest.fixture
async def storage() -> MemoryStorage:
    storage = MemoryStorage()
    for number in range(1, 8):
        await storage.put(waiting(f"ui::w{number}", number), None)
    await storage.put(failed("ui::f1", 10), None)
    await storage.put(failed("ui::f2", 11), None)
    foreign = failed("other::x1", 12).evolve(workflow="gone.module.OldFlow")
    await storage.put(foreign, None)
    return storage


@contextlib.asynccontextmanager
async def serving(storage: MemoryStorage, **options: Any) -> AsyncIterator[Any]:
    """The dashboard's ASGI app, with its lifespan run, behind an httpx client."""
    web = create_app(storage, **options)
    async with web.router.lifespan_context(web):
        transport = httpx.ASGITransport(app=web)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://testserver", follow_redirects=True
        ) as c:
            yield c


@pytest.fixture
async def client(storage: MemoryStorage) -> AsyncIterator[Any]:
    async with serving(storage, token=TOKEN) as client:
        yield client


async def listed(client: Any, **params: Any) -> list[str]:
    response = await client.get("/api/instances", params=params)
    assert response.status_code == 200
    ids: list[str] = response.json()["ids"]
    return ids


async def test_the_list_is_newest_change_first_with_counts(client: Any) -> None:
    assert (await listed(client))[:3] == ["other::x1", "ui::f2", "ui::f1"]
    page = await client.get("/")
    assert page.status_code == 200
    assert 'data-status="failed"' in page.text
    assert "failed <b>3</b>" in page.text
    assert "waiting <b>7</b>" in page.text


async def test_filters_status_workflow_version_prefix_and_since(client: Any) -> None:
    assert await listed(client, status="failed") == ["other::x1", "ui::f2", "ui::f1"]
    assert await listed(client, workflow="gone.module.OldFlow") == ["other::x1"]
    assert (await listed(client, q="ui::w", version="1"))[:2] == ["ui::w7", "ui::w6"]
    assert await listed(client, version="2") == []
    assert await listed(client, since="2026-05-01T08:10") == ["other::x1", "ui::f2", "ui::f1"]
    page = await client.get("/", params={"version": "x", "since": "yesterday"})
    assert "version must be a number" in page.text
    assert "must be a date and time" in page.text


async def test_keyset_pages_visit_every_instance_once(client: Any) -> None:
    seen: list[str] = []
    params = {"limit": "4"}
    while True:
        page = (await client.get("/api/instances", params=params)).json()
        seen += page["ids"]
        if page["next"] is None:
            break
        params = {"limit": "4", "cursor": page["next"]}
    assert len(seen) == 10
    assert seen == await listed(client)
    html = (await client.get("/", params={"limit": "4"})).text
    assert 'id="next-page"' in html


async def test_a_failed_instance_shows_graph_error_and_history(client: Any) -> None:
    page = await client.get("/instances/ui::f1")
    assert page.status_code == 200
    assert 'data-step="ui_fetch" data-mark="failed"' in page.text
    assert 'data-step="ui_approve" data-mark="not-taken"' in page.text
    assert "upstream timed out" in page.text
    assert "Read-only: actions (resume, cancel, retry) need the dashboard" in page.text


async def test_an_unknown_workflow_is_drawn_from_the_history(client: Any) -> None:
    page = await client.get("/instances/other::x1")
    assert "is not defined in this process" in page.text
    assert 'data-step="ui_fetch" data-mark="failed"' in page.text


async def test_a_waiting_instance_offers_its_events_and_marks_its_steps(client: Any) -> None:
    page = (await client.get("/instances/ui::w1")).text
    assert 'data-step="ui_fetch" data-mark="completed"' in page
    assert 'data-step="ui_approve" data-mark="waiting"' in page
    assert "<option>approved</option>" in page
    live = (await client.get("/instances/ui::w1/live")).json()
    assert live["status"] == "waiting"
    assert "ui_approve" in live["html"]


async def test_missing_instance_is_404(client: Any) -> None:
    assert (await client.get("/instances/ui::nobody")).status_code == 404
    assert (await client.get("/instances/ui::nobody/live")).status_code == 404


async def test_actions_without_the_token_are_refused_and_change_nothing(
    client: Any, storage: MemoryStorage
) -> None:
    before = await storage.get("ui::f1")
    for action in ("retry", "cancel", "resume"):
        refused = await client.post(f"/instances/ui::f1/{action}", data={"event": "approved"})
        assert refused.status_code == 403
        assert "Action refused (HTTP 403)" in refused.text
    wrong = await client.post("/instances/ui::f1/retry", headers={"X-Hephaestus-Token": "nope"})
    assert wrong.status_code == 403
    assert (await storage.get("ui::f1")) == before


async def test_retry_with_the_token_writes_the_retry_for_a_runner(
    client: Any, storage: MemoryStorage
) -> None:
    response = await client.post(
        "/instances/ui::f1/retry",
        headers={"Authorization": f"Bearer {TOKEN}"},
        follow_redirects=False,
    )
    assert response.status_code == 303
    assert "Retry+recorded" in response.headers["location"]
    retried = await storage.get("ui::f1")
    assert retried.status is Status.RUNNING
    assert retried.active_steps == {"ui_fetch"}
    again = await client.post(
        "/instances/ui::f1/retry", data={"token": TOKEN}, follow_redirects=True
    )
    assert "InstanceNotFailedError" in again.text


async def test_sign_in_sets_a_cookie_that_enables_resume_with_data(
    client: Any, storage: MemoryStorage
) -> None:
    assert (await client.post("/login", data={"token": "guess"})).status_code == 403
    signed = await client.post(
        "/login", data={"token": TOKEN, "next": "/instances/ui::w2"}, follow_redirects=False
    )
    assert signed.status_code == 303
    assert signed.headers["location"] == "/instances/ui::w2"
    assert COOKIE in signed.cookies
    page = (await client.get("/instances/ui::w2")).text
    assert "actions enabled" in page
    bad = await client.post("/instances/ui::w2/resume", data={"event": "approved", "data": "{nope"})
    assert "the data is not valid JSON" in bad.text
    await client.post(
        "/instances/ui::w2/resume", data={"event": "approved", "data": '{"by": "ada"}'}
    )
    inbox = (await storage.get("ui::w2")).inbox
    assert [(item.event, item.data) for item in inbox] == [("approved", {"by": "ada"})]
    await client.post("/instances/ui::w3/cancel")
    assert (await storage.get("ui::w3")).status is Status.CANCELLED


async def test_a_dashboard_without_a_token_is_read_only(storage: MemoryStorage) -> None:
    async with serving(storage) as client:
        page = (await client.get("/instances/ui::f1")).text
        assert "started without a token" in page
        refused = await client.post("/instances/ui::f1/retry", data={"token": ""})
        assert refused.status_code == 403
        assert "started without a token" in refused.text
        assert (await client.post("/login", data={"token": "anything"})).status_code == 403


async def test_runners_page_lists_stuck_instances(storage: MemoryStorage) -> None:
    async with serving(storage, stuck_grace=0.0) as client:
        page = (await client.get("/runners")).text
        assert "No runner is registered" in page
        live = (await client.get("/api/runners")).json()
        assert live["live"] == 0
        assert "no runner has claimed it" not in live["html"]  # none is running here


async def test_a_post_from_another_site_is_refused_and_pages_cannot_be_framed(
    client: Any, storage: MemoryStorage
) -> None:
    before = await storage.get("ui::f1")
    forged = await client.post(
        "/instances/ui::f1/retry",
        headers={"Authorization": f"Bearer {TOKEN}", "Origin": "https://evil.example"},
    )
    assert forged.status_code == 403
    assert await storage.get("ui::f1") == before
    page = await client.get("/")
    assert page.headers["x-frame-options"] == "DENY"
    signed = await client.post(
        "/login", data={"token": TOKEN, "next": "//evil.example/"}, follow_redirects=False
    )
    assert signed.headers["location"] == "/"
