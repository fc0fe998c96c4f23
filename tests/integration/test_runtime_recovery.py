"""Recovery: a new app on the same SQLite file picks up what the previous one left running."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hephaestus import (
    Context,
    Done,
    Error,
    Instance,
    Ok,
    Retry,
    Status,
    Step,
    Unique,
    WaitForEvent,
    Workflow,
)
from hephaestus.core import engine
from hephaestus.storage import SQLiteStorage

# Every execution, in order: instance id -> [(step key, idempotency key), ...].
RT_EXECUTIONS: defaultdict[str, list[tuple[str, str]]] = defaultdict(list)
# Instance ids whose slow step should hang (the first app) rather than answer (the second).
RT_HANG: set[str] = set()


def _ran(instance: Instance, key: str, context: Context) -> None:
    RT_EXECUTIONS[instance.id].append((key, context.idempotency_key))


def _keys(instance_id: str) -> list[str]:
    return [key for key, _ in RT_EXECUTIONS[instance_id]]


class RtRecReceive(Step):
    events = ("received",)
    key = "receive"

    def execute(self, instance: Instance, config: Mapping[str, Any] | None, context: Context) -> Ok:
        _ran(instance, self.key, context)
        return Ok("received", {"order": context.initial["order"]})


class RtRecSlowCall(Step):
    events = ("answered",)
    key = "slow_call"

    async def execute(
        self, instance: Instance, config: Mapping[str, Any] | None, context: Context
    ) -> Ok:
        _ran(instance, self.key, context)
        if instance.id in RT_HANG:
            await asyncio.sleep(30)
        return Ok("answered", {"seen": context.steps["receive"]["order"]})


class RtRecFinish(Step):
    events = ("finished",)
    key = "finish"

    def execute(
        self, instance: Instance, config: Mapping[str, Any] | None, context: Context
    ) -> str:
        _ran(instance, self.key, context)
        return "finished"


class RtRecoverFlow(Workflow):
    unique = Unique(key="rtrecover")
    start = RtRecReceive
    transitions = {
        (RtRecReceive, "received"): RtRecSlowCall,
        (RtRecSlowCall, "answered"): RtRecFinish,
        (RtRecFinish, "finished"): Done,
    }


async def test_a_running_instance_left_by_a_closed_app_completes_in_the_next_one(
    open_app: Any, db_path: Path, wait_for: Any
) -> None:
    iid = "rtrecover::closed1"
    RT_HANG.add(iid)
    first = await open_app(db_path)
    await first.start_instance(RtRecoverFlow, {"order": 7}, id=iid)
    async with asyncio.timeout(10):
        while "slow_call" not in _keys(iid):
            await asyncio.sleep(0.01)
    await first.close()

    async with SQLiteStorage(db_path) as left_behind:
        stored = await left_behind.get(iid)
    assert stored.status is Status.RUNNING
    assert stored.active_steps == {"slow_call"}

    RT_HANG.discard(iid)
    second = await open_app(db_path)
    done = await wait_for(second, iid, lambda i: i.status.is_final)

    assert done.status is Status.COMPLETED, done.error
    assert _keys(iid) == ["receive", "slow_call", "slow_call", "finish"]
    # The interrupted attempt runs again as the same attempt, with the same idempotency key.
    slow_keys = [ikey for key, ikey in RT_EXECUTIONS[iid] if key == "slow_call"]
    assert slow_keys == [f"{iid}/slow_call/1", f"{iid}/slow_call/1"]
    assert [e.step for e in done.execution_history] == ["receive", "slow_call", "finish", "done"]
    assert done.context.steps["slow_call"] == {"seen": 7}


async def test_a_running_instance_written_to_storage_is_recovered_on_open(
    open_app: Any, db_path: Path, wait_for: Any
) -> None:
    iid = "rtrecover::written1"
    definition = RtRecoverFlow.definition()
    now = datetime.now(UTC)
    started = engine.new_instance(
        definition, instance_id=iid, context=Context.new({"order": 9}), now=now
    ).instance
    # `receive` completed before the crash; `slow_call` was running.
    advanced = engine.complete_step(
        definition, started, "receive", Ok("received", {"order": 9}), attempt=1, now=now
    ).instance
    assert advanced.status is Status.RUNNING
    assert advanced.active_steps == {"slow_call"}
    async with SQLiteStorage(db_path) as storage:
        await storage.put(advanced, None)

    app = await open_app(db_path)
    done = await wait_for(app, iid, lambda i: i.status.is_final)

    assert done.status is Status.COMPLETED, done.error
    assert _keys(iid) == ["slow_call", "finish"]
    assert [e.step for e in done.execution_history] == ["receive", "slow_call", "finish", "done"]
    assert done.context.steps["slow_call"] == {"seen": 9}


# --- waiting instances and pending retries across a restart --------------------------------


class RtRecGate(WaitForEvent):
    key = "gate"


class RtRecGatedFlow(Workflow):
    unique = Unique(key="rtrecgated")
    start = RtRecReceive
    transitions = {
        (RtRecReceive, "received"): (RtRecGate, {"event_name": "opened"}),
        (RtRecGate, "opened"): RtRecFinish,
        (RtRecFinish, "finished"): Done,
    }


async def test_a_waiting_instance_is_not_rerun_on_open_and_resumes_in_the_new_app(
    open_app: Any, db_path: Path, wait_for: Any
) -> None:
    iid = "rtrecgated::wait1"
    first = await open_app(db_path)
    await first.start_instance(RtRecGatedFlow, {"order": 1}, id=iid)
    parked = await wait_for(first, iid, lambda i: i.status is Status.WAITING)
    await first.close()

    second = await open_app(db_path)
    await second.runner.wait_idle(5)
    assert second.runner.active_instance_ids == frozenset()
    assert (await second.get(iid)).to_json() == parked.to_json()

    await second.resume(iid, "opened")
    done = await wait_for(second, iid, lambda i: i.status.is_final)
    assert done.status is Status.COMPLETED
    assert _keys(iid) == ["receive", "finish"]


class RtRecRetryLater(Step):
    """Fails its first attempt; the retry is due after the app is gone."""

    events = ("done_retrying",)
    key = "retry_later"
    retry = Retry(max_attempts=2, backoff="constant", base=0.3)

    def execute(
        self, instance: Instance, config: Mapping[str, Any] | None, context: Context
    ) -> str | Error:
        _ran(instance, self.key, context)
        if context.attempt == 1:
            return Error("not yet")
        return "done_retrying"


class RtRecRetryFlow(Workflow):
    unique = Unique(key="rtrecretry")
    start = RtRecRetryLater
    transitions = {(RtRecRetryLater, "done_retrying"): Done}


async def test_a_pending_retry_survives_a_restart_and_runs_once(
    open_app: Any, db_path: Path, wait_for: Any
) -> None:
    iid = "rtrecretry::r1"
    first = await open_app(db_path)
    await first.start_instance(RtRecRetryFlow, {}, id=iid)
    backing_off = await wait_for(first, iid, lambda i: any(t.kind == "retry" for t in i.timers))
    await first.close()
    assert backing_off.status is Status.RUNNING

    second = await open_app(db_path)
    done = await wait_for(second, iid, lambda i: i.status.is_final)

    assert done.status is Status.COMPLETED, done.error
    assert RT_EXECUTIONS[iid] == [
        ("retry_later", f"{iid}/retry_later/1"),
        ("retry_later", f"{iid}/retry_later/2"),
    ]
    (entry, _done) = done.execution_history
    assert entry.attempt == 2
