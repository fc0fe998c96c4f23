"""Ids with values as real systems write them (`EXP-42`, e-mail addresses) on a SQLite file."""

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
    Status,
    Step,
    Unique,
    WaitForEvent,
    Workflow,
)
from hephaestus.app import Hephaestus


class RtIdsGate(WaitForEvent):
    key = "ids_gate"


class RtIdsWork(Step):
    events = ("worked",)
    key = "ids_work"

    def execute(self, instance: Instance, config: Mapping[str, Any] | None, context: Context) -> Ok:
        return Ok("worked", {"seen": instance.id})


class RtIdsOrderFlow(Workflow):
    unique = Unique(key="orderid")
    start = (RtIdsGate, {"event_name": "approve"})
    transitions = {(RtIdsGate, "approve"): RtIdsWork, (RtIdsWork, "worked"): Done}


class RtIdsUserFlow(Workflow):
    unique = Unique(key="user")
    start = (RtIdsGate, {"event_name": "approve"})
    transitions = {(RtIdsGate, "approve"): RtIdsWork, (RtIdsWork, "worked"): Done}


class RtIdsSignupFlow(Workflow):
    unique = Unique(key="signup", scope="none")
    start = (RtIdsGate, {"event_name": "approve"})
    transitions = {(RtIdsGate, "approve"): RtIdsWork, (RtIdsWork, "worked"): Done}


async def test_ids_with_real_world_values_start_resume_and_survive_a_restart(
    open_app: Any, db_path: Path, wait_for: Any
) -> None:
    app: Hephaestus = await open_app(db_path)
    order = await app.start_instance(RtIdsOrderFlow, {"n": 1}, id="orderid::EXP-42")
    email = await app.start_instance(RtIdsUserFlow, {"n": 2}, id="user::jane.doe@example.com")
    facade = await RtIdsOrderFlow.start("order_123", {"n": 3})
    signup = await RtIdsSignupFlow.start("jane.doe+news@example.com", {"n": 4})

    assert order == "orderid::EXP-42"
    assert email == "user::jane.doe@example.com"
    assert facade == "orderid::order_123"
    assert re.fullmatch(r"signup::jane\.doe\+news@example\.com::[0-9a-f]{8}", signup)
    for iid in (order, email, facade, signup):
        assert (await wait_for(app, iid, lambda i: i.status is Status.WAITING)).id == iid

    # Values are case-sensitive: another instance, not the same one.
    lower = await RtIdsOrderFlow.start("exp-42", {"n": 5})
    assert lower == "orderid::exp-42"
    with pytest.raises(AlreadyRunningError):
        await RtIdsOrderFlow.start("EXP-42", {})

    await app.resume(order, "approve")
    done = await wait_for(app, order, lambda i: i.status.is_final)
    assert done.status is Status.COMPLETED
    assert done.context.steps["ids_work"] == {"seen": "orderid::EXP-42"}

    # Stored ids sort byte by byte ('E' < 'e'), and page with `after`.
    listed = [i.id for i in await app.list()]
    assert listed == sorted([order, email, facade, signup, lower])
    assert listed == [order, lower, facade, signup, email]
    assert [i.id for i in await app.list(id=email)] == [email]
    assert [i.id for i in await app.list(after=order, limit=1)] == [lower]

    await app.close()
    reopened: Hephaestus = await open_app(db_path)
    assert (await reopened.get(order)).status is Status.COMPLETED
    assert (await RtIdsOrderFlow.get("EXP-42")).id == order
    assert (await RtIdsUserFlow.get("jane.doe@example.com")).id == email
    await reopened.resume(email, "approve")
    approved = await wait_for(reopened, email, lambda i: i.status.is_final)
    assert approved.context.steps["ids_work"] == {"seen": "user::jane.doe@example.com"}
    await reopened.cancel(signup)
    assert (await reopened.get(signup)).status is Status.CANCELLED


@pytest.mark.parametrize(
    ("instance_id", "problem"),
    [
        ("orderid::EXP 42", "its value 'EXP 42' has the whitespace ' ' at index 3"),
        ("orderid::EXP::42", "its value 'EXP::42' contains '::' at index 3"),
        ("orderid::EXP-42:", "its value 'EXP-42:' ends with ':'"),
        ("orderid::EXP-42\n", "has the control character '\\n' at index 6"),
    ],
)
async def test_a_malformed_id_says_what_is_wrong_and_writes_nothing(
    app: Hephaestus, instance_id: str, problem: str
) -> None:
    for call in (
        lambda: app.start_instance(RtIdsOrderFlow, {}, id=instance_id),
        lambda: app.get(instance_id),
        lambda: app.resume(instance_id, "approve"),
    ):
        with pytest.raises(InvalidBusinessKeyError, match=re.escape(problem)):
            await call()
    assert await app.list() == []
