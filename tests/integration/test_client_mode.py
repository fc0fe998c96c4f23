"""Client mode and ownership on one SQLite file: clients write, only an instance's owner runs it.

Each test opens apps on the same real SQLite file, as a web process (client
mode) and runner processes would; they share nothing but the file.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from hephaestus import (
    Async,
    Context,
    ContextSerializationError,
    Done,
    Hephaestus,
    Instance,
    InstanceNotWaitingError,
    InvalidEventError,
    Ok,
    Status,
    Step,
    Unique,
    WaitForEvent,
    WaitTimeoutError,
    Workflow,
)
from hephaestus.runners.client import ClientRunner

# (instance id, step, attempt) for every execution.
RT_RUNS: list[tuple[str, str, int]] = []
# Gates that a test opens to let a step finish.
RT_GATES: dict[str, asyncio.Event] = {}
# Steps that noticed they were cancelled.
RT_CANCELLED: list[str] = []


class RtCmReceive(Step):
    events = ("received",)
    key = "receive"

    async def execute(
        self, instance: Instance, config: Mapping[str, Any] | None, context: Context
    ) -> Ok:
        RT_RUNS.append((instance.id, self.key, context.attempt))
        gate = RT_GATES.get(instance.id)
        if gate is not None:
            try:
                await gate.wait()
            except asyncio.CancelledError:
                RT_CANCELLED.append(instance.id)
                raise
        return Ok("received", {"n": context.initial.get("n", 0)})


class RtCmApprove(WaitForEvent):
    key = "approve"


class RtCmPack(Step):
    events = ("packed",)
    key = "pack"

    def execute(self, instance: Instance, config: Mapping[str, Any] | None, context: Context) -> Ok:
        RT_RUNS.append((instance.id, self.key, context.attempt))
        return Ok("packed", {"approval": context.steps.get("approve")})


class RtCmFlow(Workflow):
    unique = Unique(key="rtcm")
    start = RtCmReceive
    transitions = {
        (RtCmReceive, "received"): (RtCmApprove, {"event_name": "approved"}),
        (RtCmApprove, "approved"): RtCmPack,
        (RtCmPack, "packed"): Done,
    }


class RtCmParkLater(Step):
    """Runs until its gate opens, then parks: an event can arrive before it waits."""

    events = ("approved",)
    key = "park_later"

    async def execute(
        self, instance: Instance, config: Mapping[str, Any] | None, context: Context
    ) -> Async:
        RT_RUNS.append((instance.id, self.key, context.attempt))
        await RT_GATES[instance.id].wait()
        return Async()


class RtCmEarlyFlow(Workflow):
    unique = Unique(key="rtcmearly")
    start = RtCmParkLater
    transitions = {
        (RtCmParkLater, "approved"): RtCmPack,
        (RtCmPack, "packed"): Done,
    }


Opener = Callable[..., Awaitable[Hephaestus]]


@pytest.fixture
def opener(open_app: Opener, db_path: Path) -> Opener:
    """Open apps on the test's SQLite file: `await opener()` a runner, `opener(None)` a client."""

    async def make(runner: Any = "runner", **options: Any) -> Hephaestus:
        if runner is None:
            return await open_app(db_path, runner=ClientRunner())
        return await open_app(db_path, lease=options.pop("lease", 1.5), **options)

    return make


@pytest.fixture(autouse=True)
def _clean() -> None:
    RT_RUNS.clear()
    RT_GATES.clear()
    RT_CANCELLED.clear()


def runs_of(instance_id: str) -> list[str]:
    return [step for iid, step, _ in RT_RUNS if iid == instance_id]


async def test_a_client_start_is_run_by_the_runner_and_wait_returns_it_final(
    opener: Opener,
) -> None:
    runner_app = await opener()
    client = await opener(None)
    assert client.is_client

    iid = await client.start_instance(RtCmFlow, {"n": 3}, id="rtcm::start1")
    parked = await client.wait(iid, timeout=10, status=Status.WAITING)
    assert parked.waiting_steps == {"approve"}

    await client.resume(iid, "approved", data={"by": "ada"})
    done = await client.wait(iid, timeout=10)

    assert done.status is Status.COMPLETED
    assert done.context.steps["approve"] == {"by": "ada"}
    assert done.context.steps["pack"] == {"approval": {"by": "ada"}}
    assert runs_of(iid) == ["receive", "pack"]
    assert done.inbox == ()
    assert (await runner_app.storage.owner_of(iid)) is None  # finished: no owner


async def test_a_client_runs_nothing_even_with_no_runner_and_refuses_bad_input(
    opener: Opener,
) -> None:
    client = await opener(None)
    iid = await client.start_instance(RtCmFlow, {}, id="rtcm::norunner")
    stored = await client.get(iid)
    assert stored.status is Status.RUNNING
    assert stored.active_steps == {"receive"}
    assert RT_RUNS == []  # nobody ran the first step

    with pytest.raises(InvalidEventError, match="'nope'"):
        await client.resume(iid, "nope")
    with pytest.raises(ContextSerializationError, match="must be a dict"):
        await client.resume(iid, "approved", data=[1])  # type: ignore[arg-type]
    assert (await client.get(iid)).to_json() == stored.to_json()  # nothing half-written

    with pytest.raises(WaitTimeoutError, match=r"still running after 0\.05s"):
        await client.wait(iid, timeout=0.05)

    # A runner that opens later picks the instance up.
    await opener()
    parked = await client.wait(iid, timeout=10, status="waiting")
    assert parked.waiting_steps == {"approve"}


async def test_an_event_sent_before_its_step_parks_is_consumed_once_with_its_data(
    opener: Opener,
) -> None:
    await opener()
    client = await opener(None)
    iid = "rtcmearly::e1"
    RT_GATES[iid] = asyncio.Event()
    await client.start_instance(RtCmEarlyFlow, {}, id=iid)
    while "park_later" not in runs_of(iid):
        await asyncio.sleep(0.005)

    await client.resume(iid, "approved", data={"by": "early"})  # the step runs, not waiting yet
    held = await client.get(iid)
    assert [(i.event, i.data) for i in held.inbox] == [("approved", {"by": "early"})]
    RT_GATES[iid].set()

    done = await client.wait(iid, timeout=10)
    assert done.status is Status.COMPLETED
    assert done.context.steps["pack"] == {"approval": None}
    assert done.context.steps["park_later"] == {"by": "early"}
    events = [(e.step, e.event) for e in done.execution_history]
    assert events.count(("park_later", "approved")) == 1
    assert done.inbox == ()


async def test_a_client_cancel_stops_the_step_the_owner_runs(opener: Opener) -> None:
    runner_app = await opener()
    client = await opener(None)
    iid = "rtcm::cancel1"
    RT_GATES[iid] = asyncio.Event()  # never opened: the step would run forever
    await client.start_instance(RtCmFlow, {}, id=iid)
    while "receive" not in runs_of(iid):
        await asyncio.sleep(0.005)

    await client.cancel(iid)  # a request: the owner runs a step
    done = await client.wait(iid, timeout=10)

    assert done.status is Status.CANCELLED
    assert [iid] == RT_CANCELLED  # the owner stopped the step
    await runner_app.runner.wait_idle(5)  # type: ignore[attr-defined]
    assert runs_of(iid) == ["receive"]


async def test_a_client_cancels_a_waiting_instance_itself(opener: Opener) -> None:
    runner_app = await opener()
    iid = await runner_app.start_instance(RtCmFlow, {}, id="rtcm::cancel2")
    await runner_app.wait(iid, timeout=10, status="waiting")
    await runner_app.close()  # no runner left

    client = await opener(None)
    await client.cancel(iid)
    cancelled = await client.get(iid)
    assert cancelled.status is Status.CANCELLED
    with pytest.raises(InstanceNotWaitingError, match="already cancelled"):
        await client.cancel(iid)


async def test_two_runners_on_one_file_share_the_work_and_run_each_attempt_once(
    opener: Opener,
) -> None:
    first, second = await opener(), await opener()
    client = await opener(None)
    ids = [await client.start_instance(RtCmFlow, {"n": n}, id=f"rtcm::share{n}") for n in range(60)]
    for iid in ids:
        await client.wait(iid, timeout=20, status="waiting")
    for iid in ids:
        await client.resume(iid, "approved")
    finals = [await client.wait(iid, timeout=20) for iid in ids]

    assert {f.status for f in finals} == {Status.COMPLETED}
    counts = Counter(RT_RUNS)
    assert set(counts.values()) == {1}  # no attempt ran twice
    assert len(counts) == 120
    owners = {r.id for r in await client.runners()}
    assert owners == {first.runner.id, second.runner.id}  # type: ignore[attr-defined]


async def test_closing_a_runner_hands_its_running_instances_to_another_at_once(
    opener: Opener,
) -> None:
    first = await opener()
    iid = "rtcm::handover"
    RT_GATES[iid] = asyncio.Event()
    await first.start_instance(RtCmFlow, {}, id=iid)
    while "receive" not in runs_of(iid):
        await asyncio.sleep(0.005)
    second = await opener()
    assert second.runner.active_instance_ids == frozenset()  # type: ignore[attr-defined]

    await first.close()  # deregisters: its instance is free now, not after a lease
    RT_GATES[iid].set()
    parked = await second.wait(iid, timeout=10, status="waiting")

    assert runs_of(iid) == ["receive", "receive"]  # interrupted, then run again (at least once)
    assert [e.step for e in parked.execution_history] == ["receive"]


async def test_a_runner_whose_lease_was_taken_over_stops_and_writes_nothing(
    opener: Opener,
) -> None:
    first = await opener(lease=30.0)  # it would not notice by itself for a long time
    second = await opener()
    iid = "rtcm::takeover"
    RT_GATES[iid] = asyncio.Event()
    await first.start_instance(RtCmFlow, {}, id=iid)
    while "receive" not in runs_of(iid):
        await asyncio.sleep(0.005)

    # As if its lease lapsed: reaped, its instance released and claimed by the other runner.
    await first.storage.remove_runner(first.runner.id)  # type: ignore[attr-defined]
    while runs_of(iid) != ["receive", "receive"]:
        await asyncio.sleep(0.005)
    assert await second.storage.owner_of(iid) == second.runner.id  # type: ignore[attr-defined]

    RT_GATES[iid].set()  # both attempts finish; only the owner's result may be written
    parked = await second.wait(iid, timeout=10, status="waiting")
    await asyncio.sleep(0.1)
    final = await second.get(iid)

    assert [e.step for e in final.execution_history] == ["receive"]
    assert final.revision == parked.revision  # the old owner wrote nothing after
    assert iid not in first.runner.active_instance_ids  # type: ignore[attr-defined]
