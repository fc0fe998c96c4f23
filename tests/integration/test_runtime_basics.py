"""The runtime end to end on a SQLite file: the README order flow, threads, fan-out, joins."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Mapping
from typing import Any

import pytest

from hephaestus import (
    Context,
    Done,
    HephaestusError,
    Instance,
    Ok,
    Status,
    Step,
    Unique,
    Wait,
    WaitForEvent,
    Workflow,
)
from hephaestus.app import Hephaestus

# Where each step ran: step key -> (was it the main thread, was an event loop running there).
RT_PLACES: dict[str, tuple[bool, bool]] = {}
# The two fan-out branches of an order meet here: instance id -> (charged, reserved).
RT_RENDEZVOUS: dict[str, tuple[asyncio.Event, asyncio.Event]] = {}
# How often each (instance id, step key) ran.
RT_RUNS: Counter[tuple[str, str]] = Counter()


pytestmark = pytest.mark.both_runners


def _note_place(key: str) -> None:
    try:
        asyncio.get_running_loop()
        loop_running = True
    except RuntimeError:
        loop_running = False
    RT_PLACES[key] = (threading.current_thread() is threading.main_thread(), loop_running)


def _rendezvous(instance_id: str) -> tuple[asyncio.Event, asyncio.Event]:
    return RT_RENDEZVOUS.setdefault(instance_id, (asyncio.Event(), asyncio.Event()))


class RtValidateOrder(Step):
    events = ("valid", "invalid")
    key = "validate"

    def execute(self, instance: Instance, config: Mapping[str, Any] | None, context: Context) -> Ok:
        _note_place(self.key)
        items = context.initial["items"]
        if not items:
            return Ok("invalid")
        return Ok("valid", {"total": sum(item["price"] for item in items)})


class RtChargePayment(Step):
    """Runs beside RtReserveStock and cannot finish unless both run at the same time."""

    events = ("charged",)
    key = "charge"

    async def execute(
        self, instance: Instance, config: Mapping[str, Any] | None, context: Context
    ) -> Ok:
        _note_place(self.key)
        charged, reserved = _rendezvous(instance.id)
        charged.set()
        async with asyncio.timeout(5):
            await reserved.wait()
        return Ok("charged", {"amount": context.steps["validate"]["total"]})


class RtReserveStock(Step):
    events = ("reserved",)
    key = "reserve"

    async def execute(
        self, instance: Instance, config: Mapping[str, Any] | None, context: Context
    ) -> Ok:
        charged, reserved = _rendezvous(instance.id)
        reserved.set()
        async with asyncio.timeout(5):
            await charged.wait()
        return Ok("reserved", {"skus": [item["sku"] for item in context.initial["items"]]})


class RtAwaitConfirmation(WaitForEvent):
    key = "confirmation"


class RtShip(Step):
    events = ("shipped",)
    key = "ship"

    def execute(self, instance: Instance, config: Mapping[str, Any] | None, context: Context) -> Ok:
        return Ok("shipped", {"carrier": "post"})


class RtRejectOrder(Step):
    events = ("rejected",)
    key = "reject"

    def execute(
        self, instance: Instance, config: Mapping[str, Any] | None, context: Context
    ) -> str:
        return "rejected"


class RtOrderFlow(Workflow):
    unique = Unique(key="rtorder")
    start = RtValidateOrder
    transitions = {
        (RtValidateOrder, "valid"): [RtChargePayment, RtReserveStock],
        (RtValidateOrder, "invalid"): RtRejectOrder,
        (RtChargePayment, "charged"): (RtAwaitConfirmation, {"event_name": "payment_confirmed"}),
        (RtReserveStock, "reserved"): RtAwaitConfirmation,
        (RtAwaitConfirmation, "payment_confirmed"): RtShip,
        (RtShip, "shipped"): (Wait, {"duration": 0.2, "unit": "second"}),
        (Wait, "timeout"): Done,
        (RtRejectOrder, "rejected"): Done,
    }


ORDER = {"items": [{"sku": "anvil", "price": 120}, {"sku": "hammer", "price": 35}]}


async def test_order_flow_runs_to_completion_on_sqlite(app: Hephaestus, wait_for: Any) -> None:
    iid = await app.start_instance(RtOrderFlow, ORDER, id="rtorder::happy1")
    assert iid == "rtorder::happy1"

    parked = await wait_for(app, iid, lambda i: i.status is Status.WAITING)
    assert parked.waiting_steps == {"confirmation"}
    assert parked.completed_steps == {"validate", "charge", "reserve"}

    await app.resume(iid, "payment_confirmed")
    done = await wait_for(app, iid, lambda i: i.status.is_final)

    assert done.status is Status.COMPLETED
    assert done.error is None
    assert done.active_steps == frozenset()
    assert done.waiting_steps == frozenset()
    assert done.timers == ()
    steps = [entry.step for entry in done.execution_history]
    assert sorted(steps) == sorted(
        ["validate", "charge", "reserve", "confirmation", "ship", "wait", "done"]
    )
    assert steps[0] == "validate"
    assert steps[-3:] == ["ship", "wait", "done"]
    events = {entry.step: entry.event for entry in done.execution_history}
    assert events["confirmation"] == "payment_confirmed"
    assert events["wait"] == "timeout"
    for entry in done.execution_history:
        assert entry.attempt == 1
        assert entry.duration >= 0
    executed = {e.step: e for e in done.execution_history if e.step in ("validate", "charge")}
    assert all(entry.duration > 0 for entry in executed.values())
    assert executed["validate"].context_updates == {"total": 155}

    assert done.context.initial == ORDER
    # Every completed step has an entry; `{}` for those that returned no updates.
    assert done.context.steps == {
        "validate": {"total": 155},
        "charge": {"amount": 155},
        "reserve": {"skus": ["anvil", "hammer"]},
        "confirmation": {},
        "ship": {"carrier": "post"},
        "wait": {},
        "done": {},
    }


async def test_the_stored_instance_reads_back_as_it_was_written(
    app: Hephaestus, wait_for: Any
) -> None:
    iid = await app.start_instance(RtOrderFlow, {"items": []}, id="rtorder::empty1")
    done = await wait_for(app, iid, lambda i: i.status.is_final)

    assert done.status is Status.COMPLETED
    assert [e.step for e in done.execution_history] == ["validate", "reject", "done"]
    assert Instance.from_json(done.to_json()) == done
    assert [i.id for i in await app.list()] == [iid]


async def test_sync_steps_run_in_a_worker_thread_and_async_ones_on_the_loop(
    app: Hephaestus, wait_for: Any
) -> None:
    RT_PLACES.clear()
    iid = await app.start_instance(RtOrderFlow, ORDER, id="rtorder::threads1")
    await wait_for(app, iid, lambda i: i.status is Status.WAITING)

    on_main_thread, loop_running = RT_PLACES["validate"]
    assert not on_main_thread
    assert not loop_running
    on_main_thread, loop_running = RT_PLACES["charge"]
    assert on_main_thread
    assert loop_running


class RtQuickSum(Step):
    """A sync step that does no I/O: it says so, and runs on the event loop."""

    events = ("ok",)
    blocking = False

    def execute(self, instance: Instance, config: Mapping[str, Any] | None, context: Context) -> Ok:
        _note_place("quick_sum")
        return Ok("ok", {"sum": sum(context.initial["items"])})


class RtQuickSumThenBlock(RtQuickSum):
    """Overrides `execute` without saying it does not block: back on a thread."""

    key = "quick_sum_then_block"

    def execute(self, instance: Instance, config: Mapping[str, Any] | None, context: Context) -> Ok:
        _note_place(self.key)
        return Ok("ok")


class RtQuickFlow(Workflow):
    unique = Unique(key="rtquick")
    start = RtQuickSum
    transitions = {(RtQuickSum, "ok"): RtQuickSumThenBlock, (RtQuickSumThenBlock, "ok"): Done}


async def test_a_non_blocking_sync_step_runs_on_the_loop_and_its_overrides_on_a_thread(
    app: Hephaestus, wait_for: Any
) -> None:
    RT_PLACES.clear()
    iid = await app.start_instance(RtQuickFlow, {"items": [1, 2, 3]}, id="rtquick::q1")
    done = await wait_for(app, iid, lambda i: i.status is Status.COMPLETED)

    assert done.context.steps["rt_quick_sum"] == {"sum": 6}
    assert RT_PLACES["quick_sum"] == (True, True)  # the loop's thread, no thread hop
    assert RT_PLACES["quick_sum_then_block"] == (False, False)  # a worker thread


async def test_fan_out_branches_run_concurrently(app: Hephaestus, wait_for: Any) -> None:
    # Each branch waits for the other to have started: run one after the other, both time out.
    iid = await app.start_instance(RtOrderFlow, ORDER, id="rtorder::parallel1")
    parked = await wait_for(app, iid, lambda i: i.status is not Status.RUNNING)

    assert parked.status is Status.WAITING, parked.error
    charged, reserved = RT_RENDEZVOUS[iid]
    assert charged.is_set()
    assert reserved.is_set()


# --- a join after exclusive branches ----------------------------------------------------


class RtExChoose(Step):
    events = ("x", "y")
    key = "choose"

    def execute(
        self, instance: Instance, config: Mapping[str, Any] | None, context: Context
    ) -> str:
        RT_RUNS[instance.id, self.key] += 1
        return str(context.initial["path"])


class RtExLeft(Step):
    events = ("left_done",)
    key = "left"

    def execute(self, instance: Instance, config: Mapping[str, Any] | None, context: Context) -> Ok:
        RT_RUNS[instance.id, self.key] += 1
        return Ok("left_done", {"side": "left"})


class RtExRight(Step):
    events = ("right_done",)
    key = "right"

    async def execute(
        self, instance: Instance, config: Mapping[str, Any] | None, context: Context
    ) -> Ok:
        RT_RUNS[instance.id, self.key] += 1
        return Ok("right_done", {"side": "right"})


class RtExJoin(Step):
    events = ("joined",)
    key = "join"

    def execute(self, instance: Instance, config: Mapping[str, Any] | None, context: Context) -> Ok:
        RT_RUNS[instance.id, self.key] += 1
        sides = sorted(context.steps)
        return Ok("joined", {"after": sides})


class RtExclusiveJoinFlow(Workflow):
    unique = Unique(key="rtexjoin")
    start = RtExChoose
    transitions = {
        (RtExChoose, "x"): RtExLeft,
        (RtExChoose, "y"): RtExRight,
        (RtExLeft, "left_done"): RtExJoin,
        (RtExRight, "right_done"): RtExJoin,
        (RtExJoin, "joined"): Done,
    }


@pytest.mark.parametrize(
    ("path", "taken", "skipped"), [("x", "left", "right"), ("y", "right", "left")]
)
async def test_join_after_exclusive_branches_runs_exactly_once(
    app: Hephaestus, wait_for: Any, path: str, taken: str, skipped: str
) -> None:
    iid = await app.start_instance(RtExclusiveJoinFlow, {"path": path}, id=f"rtexjoin::{path}1")
    done = await wait_for(app, iid, lambda i: i.status.is_final)

    assert done.status is Status.COMPLETED, done.error
    steps = [entry.step for entry in done.execution_history]
    assert steps == ["choose", taken, "join", "done"]
    assert steps.count("join") == 1
    assert RT_RUNS[iid, "join"] == 1
    assert RT_RUNS[iid, taken] == 1
    assert RT_RUNS[iid, skipped] == 0
    # The join saw the steps completed before it: the choice and the branch taken.
    assert done.context.steps["join"] == {"after": ["choose", taken]}
    assert skipped not in done.context.steps


async def test_opening_an_open_app_again_is_refused_and_the_app_keeps_working(
    app: Hephaestus, wait_for: Any
) -> None:
    with pytest.raises(HephaestusError, match="open"):
        await app.open()

    assert app.is_open
    iid = await app.start_instance(RtOrderFlow, {"items": []}, id="rtorder::reopen1")
    done = await wait_for(app, iid, lambda i: i.status.is_final)
    assert done.status is Status.COMPLETED
