"""The workflow facade: `Flow.start/resume/get/list/cancel`, app discovery, scopes, versions."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from hephaestus import (
    AlreadyRunningError,
    Context,
    Done,
    Instance,
    InvalidBusinessKeyError,
    Ok,
    RuntimeNotFoundError,
    Status,
    Step,
    Unique,
    WaitForEvent,
    Workflow,
)
from hephaestus.app import Hephaestus

pytestmark = pytest.mark.both_runners


class RtFacGate(WaitForEvent):
    key = "fac_gate"


class RtFacWork(Step):
    events = ("worked",)
    key = "fac_work"

    def execute(self, instance: Instance, config: Mapping[str, Any] | None, context: Context) -> Ok:
        return Ok("worked", {"for": context.initial.get("customer")})


class RtFacadeFlow(Workflow):
    unique = Unique(key="rtfacade")
    start = (RtFacGate, {"event_name": "approve"})
    transitions = {(RtFacGate, "approve"): RtFacWork, (RtFacWork, "worked"): Done}


class RtTicketFlow(Workflow):
    unique = Unique(key="rtticket", scope="none")
    start = (RtFacGate, {"event_name": "approve"})
    transitions = {(RtFacGate, "approve"): RtFacWork, (RtFacWork, "worked"): Done}


async def test_the_facade_starts_resumes_gets_and_lists(app: Hephaestus, wait_for: Any) -> None:
    iid = await RtFacadeFlow.start("abc123", {"customer": "ada"})

    assert iid == "rtfacade::abc123"
    parked = await wait_for(app, iid, lambda i: i.status is Status.WAITING)
    assert await RtFacadeFlow.get("abc123") == parked
    assert await RtFacadeFlow.list(status="waiting") == [parked]

    await RtFacadeFlow.resume("abc123", "approve")

    done = await wait_for(app, iid, lambda i: i.status.is_final)
    assert done.status is Status.COMPLETED
    assert done.context.steps["fac_work"] == {"for": "ada"}
    assert await RtFacadeFlow.get("abc123") == done
    assert await RtFacadeFlow.list() == [done]
    assert await RtFacadeFlow.list(status="waiting") == []


async def test_the_facade_accepts_a_uuid_value(app: Hephaestus, wait_for: Any) -> None:
    value = "0f8fad5b-d9cb-469f-a165-70867728950e"
    iid = await RtFacadeFlow.start(value, {})
    assert iid == f"rtfacade::{value}"
    assert (await RtFacadeFlow.get(value)).id == iid


async def test_the_facade_cancels(app: Hephaestus, wait_for: Any) -> None:
    iid = await RtFacadeFlow.start("tocancel", {})
    await wait_for(app, iid, lambda i: i.status is Status.WAITING)

    await RtFacadeFlow.cancel("tocancel")

    assert (await RtFacadeFlow.get("tocancel")).status is Status.CANCELLED


async def test_the_facade_lists_only_its_own_workflow(app: Hephaestus, wait_for: Any) -> None:
    mine = await RtFacadeFlow.start("mine", {})
    ticket = await RtTicketFlow.start("other", {})

    assert [i.id for i in await RtFacadeFlow.list()] == [mine]
    assert [i.id for i in await RtTicketFlow.list()] == [ticket]
    assert sorted(i.id for i in await app.list()) == sorted([mine, ticket])


# --- finding the app ------------------------------------------------------------------------


async def test_without_an_open_app_the_facade_says_so() -> None:
    with pytest.raises(RuntimeNotFoundError, match="no Hephaestus app is running"):
        await RtFacadeFlow.start("abc", {})
    with pytest.raises(RuntimeNotFoundError):
        await RtFacadeFlow.get("abc")
    with pytest.raises(RuntimeNotFoundError):
        await RtFacadeFlow.resume("abc", "approve")
    with pytest.raises(RuntimeNotFoundError):
        await RtFacadeFlow.cancel("abc")
    with pytest.raises(RuntimeNotFoundError):
        await RtFacadeFlow.list()


async def test_a_closed_app_is_not_found(open_app: Any, db_path: Path) -> None:
    app = await open_app(db_path)
    await app.close()

    with pytest.raises(RuntimeNotFoundError, match="no Hephaestus app is running"):
        await RtFacadeFlow.start("abc", {})
    with pytest.raises(RuntimeNotFoundError, match="not open"):
        await RtFacadeFlow.start("abc", {}, hephaestus=app)


async def test_with_two_open_apps_the_facade_needs_hephaestus(
    open_app: Any, tmp_path: Path, wait_for: Any
) -> None:
    first = await open_app(tmp_path / "first.db")
    second = await open_app(tmp_path / "second.db")

    with pytest.raises(RuntimeNotFoundError, match="pass hephaestus=app"):
        await RtFacadeFlow.start("abc", {})
    assert await first.list() == []
    assert await second.list() == []

    iid = await RtFacadeFlow.start("abc", {"customer": "bob"}, hephaestus=second)
    await wait_for(second, iid, lambda i: i.status is Status.WAITING)
    assert await first.list() == []
    assert (await RtFacadeFlow.get("abc", hephaestus=second)).id == iid
    assert [i.id for i in await RtFacadeFlow.list(hephaestus=second)] == [iid]
    with pytest.raises(RuntimeNotFoundError):
        await RtFacadeFlow.get("abc")

    await RtFacadeFlow.resume("abc", "approve", hephaestus=second)
    done = await wait_for(second, iid, lambda i: i.status.is_final)
    assert done.status is Status.COMPLETED
    assert await first.list() == []


# --- scope "none" -------------------------------------------------------------------------


async def test_scope_none_gives_every_start_its_own_id(app: Hephaestus, wait_for: Any) -> None:
    first = await RtTicketFlow.start("same", {"n": 1})
    second = await RtTicketFlow.start("same", {"n": 2})

    pattern = re.compile(r"rtticket::same::[0-9a-f]{8}")
    assert pattern.fullmatch(first)
    assert pattern.fullmatch(second)
    assert first != second
    assert sorted(i.id for i in await RtTicketFlow.list()) == sorted([first, second])

    for call in (
        lambda: RtTicketFlow.get("same"),
        lambda: RtTicketFlow.resume("same", "approve"),
        lambda: RtTicketFlow.cancel("same"),
    ):
        with pytest.raises(InvalidBusinessKeyError, match=r"id that start\(\) returned"):
            await call()

    # The returned id addresses the instance through the app.
    await wait_for(app, first, lambda i: i.status is Status.WAITING)
    await app.resume(first, "approve")
    done = await wait_for(app, first, lambda i: i.status.is_final)
    assert done.context.initial == {"n": 1}
    assert (await app.get(second)).context.initial == {"n": 2}


# --- versions ------------------------------------------------------------------------------


class RtPlanGateV1(WaitForEvent):
    key = "plan_gate"


class RtPlanWorkV1(Step):
    events = ("worked",)
    key = "plan_work_v1"

    def execute(self, instance: Instance, config: Mapping[str, Any] | None, context: Context) -> Ok:
        return Ok("worked", {"version": 1})


class RtPlanWorkV2(Step):
    events = ("worked",)
    key = "plan_work_v2"

    async def execute(
        self, instance: Instance, config: Mapping[str, Any] | None, context: Context
    ) -> Ok:
        return Ok("worked", {"version": 2})


class RtPlanV1(Workflow):
    # No unique: each umbrella that lists the version gives its own business key.
    version = 1
    start = (RtPlanGateV1, {"event_name": "go"})
    transitions = {(RtPlanGateV1, "go"): RtPlanWorkV1, (RtPlanWorkV1, "worked"): Done}


class RtPlanV2(Workflow):
    version = 2
    start = (RtPlanGateV1, {"event_name": "go"})
    transitions = {(RtPlanGateV1, "go"): RtPlanWorkV2, (RtPlanWorkV2, "worked"): Done}


class RtPlan(Workflow):
    unique = Unique(key="rtplan")
    versions = {1: RtPlanV1, 2: RtPlanV2}
    current = 2


class RtRollout(Workflow):
    """Keeps values ending in `legacy` on version 1."""

    unique = Unique(key="rtrollout")
    versions = {1: RtPlanV1, 2: RtPlanV2}
    current = 2

    @classmethod
    def version_for(cls, versions: Mapping[int, type[Any]], opts: Mapping[str, Any]) -> int:
        return 1 if str(opts.get("id", "")).endswith("legacy") else 2


async def _finish(app: Hephaestus, wait_for: Any, iid: str) -> Instance:
    await wait_for(app, iid, lambda i: i.status is Status.WAITING)
    await app.resume(iid, "go")
    return await wait_for(app, iid, lambda i: i.status.is_final)


def _steps(instance: Instance) -> list[str]:
    return [entry.step for entry in instance.execution_history]


async def test_an_umbrella_starts_its_current_version(app: Hephaestus, wait_for: Any) -> None:
    iid = await RtPlan.start("p1", {})

    done = await _finish(app, wait_for, iid)
    assert done.workflow_version == 2
    assert _steps(done) == ["plan_gate", "plan_work_v2", "done"]
    assert done.context.steps["plan_work_v2"] == {"version": 2}


async def test_an_umbrella_starts_the_version_asked_for(app: Hephaestus, wait_for: Any) -> None:
    iid = await RtPlan.start("p2", {}, version=1)

    done = await _finish(app, wait_for, iid)
    assert done.workflow_version == 1
    assert _steps(done) == ["plan_gate", "plan_work_v1", "done"]


async def test_an_umbrella_honours_its_version_for(app: Hephaestus, wait_for: Any) -> None:
    legacy = await RtRollout.start("clientlegacy", {})
    fresh = await RtRollout.start("clientnew", {})

    assert (await _finish(app, wait_for, legacy)).workflow_version == 1
    assert _steps(await app.get(legacy)) == ["plan_gate", "plan_work_v1", "done"]
    assert (await _finish(app, wait_for, fresh)).workflow_version == 2
    # An explicit version wins over version_for.
    pinned = await RtRollout.start("otherlegacy", {}, version=2)
    assert (await _finish(app, wait_for, pinned)).workflow_version == 2


async def test_the_umbrella_lists_instances_of_every_version(
    app: Hephaestus, wait_for: Any
) -> None:
    v1 = await RtPlan.start("l1", {}, version=1)
    v2 = await RtPlan.start("l2", {})
    other = await RtRollout.start("l3", {})

    listed = await RtPlan.list()
    assert [(i.id, i.workflow_version) for i in listed] == [(v1, 1), (v2, 2)]
    assert [i.id for i in await RtPlan.list(workflow_version=1)] == [v1]
    assert [i.id for i in await RtRollout.list()] == [other]
    with pytest.raises(AlreadyRunningError):
        await RtPlan.start("l1", {})


async def test_an_instance_keeps_its_version_when_current_changes(
    open_app: Any, db_path: Path, wait_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = await open_app(db_path)
    monkeypatch.setattr(RtPlan, "current", 1)
    iid = await RtPlan.start("kept", {})
    await wait_for(first, iid, lambda i: i.status is Status.WAITING)
    await first.close()

    # A new release makes version 2 current, and the process restarts.
    monkeypatch.undo()
    assert RtPlan.current == 2
    second = await open_app(db_path)
    await RtPlan.resume("kept", "go")
    done = await wait_for(second, iid, lambda i: i.status.is_final)

    assert done.status is Status.COMPLETED, done.error
    assert done.workflow_version == 1
    assert _steps(done) == ["plan_gate", "plan_work_v1", "done"]
    fresh = await RtPlan.start("afterrelease", {})
    assert (await _finish(second, wait_for, fresh)).workflow_version == 2
