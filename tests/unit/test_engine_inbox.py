"""The inbox, in the pure engine: events and cancel requests that clients write for the owner.

Clients validate with `accept_event` / `request_cancel` and store the result;
the owner applies it with `drain_inbox`, or any engine call does on the way.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hephaestus import (
    AmbiguousEventError,
    Async,
    Context,
    ContextSerializationError,
    Done,
    Instance,
    InstanceNotWaitingError,
    InvalidEventError,
    Ok,
    Status,
    Step,
    Unique,
    Workflow,
)
from hephaestus.core import engine
from hephaestus.core.commands import RunStep, StopSteps
from hephaestus.core.engine import Advance

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


class InReceive(Step):
    events = ("ok",)


class InApprove(Step):
    events = ("approved", "rejected")


class InShip(Step):
    events = ("shipped",)


class InReject(Step):
    events = ("rejected",)


class InApproval(Workflow):
    unique = Unique(key="test")
    start = InReceive
    transitions = {
        (InReceive, "ok"): InApprove,
        (InApprove, "approved"): InShip,
        (InApprove, "rejected"): InReject,
        (InShip, "shipped"): Done,
        (InReject, "rejected"): Done,
    }


class InFork(Step):
    events = ("split",)


class InLeft(Step):
    events = ("go",)


class InRight(Step):
    events = ("go",)


class InGather(Step):
    events = ("gathered",)


class InTwoSignatures(Workflow):
    unique = Unique(key="test")
    start = InFork
    transitions = {
        (InFork, "split"): [InLeft, InRight],
        (InLeft, "go"): InGather,
        (InRight, "go"): InGather,
        (InGather, "gathered"): Done,
    }


APPROVAL = InApproval.definition()
SIGNATURES = InTwoSignatures.definition()


def started(definition: Any = APPROVAL) -> Instance:
    return engine.new_instance(
        definition, instance_id="test::1", context=Context.new({}), now=T0
    ).instance


def complete(
    instance: Instance, step: str, outcome: Any, seconds: float = 1, definition: Any = APPROVAL
) -> Advance:
    return engine.complete_step(
        definition, instance, step, outcome, attempt=instance.attempts[step], now=at(seconds)
    )


def parked_at_approve() -> Instance:
    running = complete(started(), "in_receive", Ok("ok")).instance
    return complete(running, "in_approve", Async(), seconds=2).instance


# --- accepting ---------------------------------------------------------------------------


def test_an_event_for_a_waiting_step_goes_to_the_inbox_and_the_drain_completes_the_step() -> None:
    waiting = parked_at_approve()
    accepted = engine.accept_event(
        APPROVAL, waiting, "approved", now=at(3), data={"by": "ada", "note": "fine"}
    ).instance
    assert accepted.revision == waiting.revision + 1
    assert accepted.status is Status.WAITING  # nothing applied by the client
    assert accepted.has_new_commands
    assert accepted.needs_runner

    advance = engine.drain_inbox(APPROVAL, accepted, at(4))

    after = advance.instance
    assert after.inbox == ()
    assert after.status is Status.RUNNING
    assert advance.commands == [RunStep("in_ship", 1)]
    assert after.context.steps["in_approve"] == {"by": "ada", "note": "fine"}
    entry = after.execution_history[-1]
    assert (entry.step, entry.event, entry.context_updates) == (
        "in_approve",
        "approved",
        {"by": "ada", "note": "fine"},
    )


def test_an_event_before_its_step_parks_is_held_then_consumed_once_when_it_parks() -> None:
    running = complete(started(), "in_receive", Ok("ok")).instance
    assert running.active_steps == {"in_approve"}
    accepted = engine.accept_event(
        APPROVAL, running, "approved", now=at(2), data={"by": "bo"}
    ).instance

    # The owner looks at it: nothing waits yet, so it is held (and no longer new).
    drained = engine.drain_inbox(APPROVAL, accepted, at(3))
    held = drained.instance
    assert drained.commands == []
    assert [(i.event, i.held) for i in held.inbox] == [("approved", True)]
    assert not held.has_new_commands
    assert engine.drain_inbox(APPROVAL, held, at(4)).instance is held  # nothing to do again

    # The step parks: the held event completes it at once, in the same engine call.
    parked = complete(held, "in_approve", Async(), seconds=5)
    assert parked.instance.inbox == ()
    assert parked.instance.context.steps["in_approve"] == {"by": "bo"}
    assert parked.commands == [RunStep("in_ship", 1)]
    assert [e.step for e in parked.instance.execution_history].count("in_approve") == 1


def test_events_are_applied_in_arrival_order_and_an_extra_one_stays_held() -> None:
    waiting = parked_at_approve()
    first = engine.accept_event(APPROVAL, waiting, "rejected", now=at(3), data={"n": 1}).instance
    second = engine.accept_event(APPROVAL, first, "approved", now=at(4), data={"n": 2}).instance

    after = engine.drain_inbox(APPROVAL, second, at(5)).instance

    assert after.execution_history[-1].event == "rejected"  # the first to arrive won
    assert after.context.steps["in_approve"] == {"n": 1}
    # The second can never be consumed now, but it is kept, seen, for the record.
    assert [(i.event, i.held) for i in after.inbox] == [("approved", True)]
    assert not after.has_new_commands


def test_an_event_no_step_can_ever_take_is_refused_and_nothing_changes() -> None:
    waiting = parked_at_approve()
    # in_ship declares `shipped` and can still come to run: that one would be accepted.
    assert engine.accept_event(APPROVAL, waiting, "shipped", now=at(3)).instance.inbox
    with pytest.raises(InvalidEventError, match="no waiting step declares event 'paid'"):
        engine.accept_event(APPROVAL, waiting, "paid", now=at(3))
    past = complete(started(), "in_receive", Ok("ok")).instance
    with pytest.raises(InvalidEventError, match="'in_receive' is not waiting and can no longer"):
        engine.accept_event(APPROVAL, past, "ok", now=at(3), step="in_receive")
    with pytest.raises(InvalidEventError, match="has no step 'nope'"):
        engine.accept_event(APPROVAL, waiting, "approved", now=at(3), step="nope")
    with pytest.raises(InvalidEventError, match="does not declare 'shipped'"):
        engine.accept_event(APPROVAL, waiting, "shipped", now=at(3), step="in_approve")


def test_a_finished_instance_takes_no_event_and_no_cancel() -> None:
    waiting = parked_at_approve()
    cancelled = engine.cancel(waiting, now=at(3)).instance
    with pytest.raises(InstanceNotWaitingError, match="is cancelled"):
        engine.accept_event(APPROVAL, cancelled, "approved", now=at(4))
    with pytest.raises(InstanceNotWaitingError, match="already cancelled"):
        engine.request_cancel(cancelled, now=at(4))


def test_several_waiting_steps_declaring_the_event_need_step() -> None:
    both = complete(started(SIGNATURES), "in_fork", Ok("split"), definition=SIGNATURES).instance
    both = complete(both, "in_left", Async(), seconds=2, definition=SIGNATURES).instance
    both = complete(both, "in_right", Async(), seconds=3, definition=SIGNATURES).instance
    with pytest.raises(AmbiguousEventError, match="pass step="):
        engine.accept_event(SIGNATURES, both, "go", now=at(4))

    accepted = engine.accept_event(SIGNATURES, both, "go", now=at(4), step="in_right").instance
    after = engine.drain_inbox(SIGNATURES, accepted, at(5)).instance
    assert after.waiting_steps == {"in_left"}
    assert "in_right" in after.completed_steps


def test_data_that_is_not_a_json_dict_is_refused_before_anything_is_written() -> None:
    with pytest.raises(ContextSerializationError, match="must be a dict"):
        engine.check_event_data("test::1", "approved", ["a"])
    with pytest.raises(ContextSerializationError, match="not JSON-serialisable"):
        engine.check_event_data("test::1", "approved", {"when": datetime.now(UTC)})
    assert engine.check_event_data("test::1", "approved", ({"a": (1, 2)})) == {"a": [1, 2]}


# --- an owner's delivery -----------------------------------------------------------------


def test_an_owner_delivers_at_once_to_a_waiting_step_and_holds_an_early_event() -> None:
    waiting = parked_at_approve()
    resumed = engine.deliver(APPROVAL, waiting, "approved", now=at(3), data={"by": "ada"})
    assert resumed.instance.inbox == ()
    assert resumed.instance.context.steps["in_approve"] == {"by": "ada"}
    assert resumed.commands == [RunStep("in_ship", 1)]

    running = complete(started(), "in_receive", Ok("ok")).instance
    held = engine.deliver(APPROVAL, running, "approved", now=at(2), data={"by": "bo"})
    assert held.commands == []
    assert [(i.event, i.held) for i in held.instance.inbox] == [("approved", True)]
    assert not held.instance.has_new_commands  # the owner has seen it: no wake-up needed

    with pytest.raises(InvalidEventError, match="'paid'"):
        engine.deliver(APPROVAL, running, "paid", now=at(2))


# --- cancel requests ---------------------------------------------------------------------


def test_a_cancel_request_stops_the_running_steps_when_the_owner_drains_it() -> None:
    running = complete(started(), "in_receive", Ok("ok")).instance
    requested = engine.request_cancel(running, now=at(2)).instance
    assert requested.status is Status.RUNNING
    assert requested.has_new_commands

    advance = engine.drain_inbox(APPROVAL, requested, at(3))

    assert advance.instance.status is Status.CANCELLED
    assert advance.commands == [StopSteps(frozenset({"in_approve"}))]
    assert advance.instance.inbox == ()
    assert not advance.instance.needs_runner


def test_a_cancel_request_wins_over_a_step_result_that_arrives_with_it() -> None:
    running = complete(started(), "in_receive", Ok("ok")).instance
    requested = engine.request_cancel(running, now=at(2)).instance
    # The owner had not seen the request when the step finished: applied in the same call.
    advance = complete(requested, "in_approve", Async(), seconds=3)
    assert advance.instance.status is Status.CANCELLED


def test_an_inbox_round_trips_through_json() -> None:
    waiting = parked_at_approve()
    accepted = engine.accept_event(
        APPROVAL, waiting, "approved", now=at(3), data={"a": [1]}
    ).instance
    held = engine.request_cancel(accepted, now=at(4)).instance
    assert Instance.from_json(held.to_json()) == held


# --- a property: whatever arrives when, each accepted event is applied at most once --------


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["approved", "rejected"]), st.integers(0, 3)),
        min_size=1,
        max_size=4,
    ),
    st.integers(0, 4),
)
def test_accepted_events_complete_the_step_once_in_arrival_order(
    arrivals: list[tuple[str, int]], park_after: int
) -> None:
    """Events arrive before or after the step parks; exactly the first one completes it.

    Once it is completed, no step can take those events any more: they are refused.
    """
    instance = complete(started(), "in_receive", Ok("ok")).instance
    clock = 2.0
    parked = False
    sent: list[str] = []
    for index, (event, _) in enumerate(arrivals):
        if index == park_after and not parked:
            instance = complete(instance, "in_approve", Async(), seconds=clock).instance
            parked = True
        clock += 1
        try:
            instance = engine.accept_event(APPROVAL, instance, event, now=at(clock)).instance
        except InvalidEventError:
            assert "in_approve" in instance.completed_steps
            continue
        sent.append(event)
        clock += 1
        instance = engine.drain_inbox(APPROVAL, instance, at(clock)).instance
    if not parked:
        instance = complete(instance, "in_approve", Async(), seconds=clock + 1).instance
    approve_entries = [e for e in instance.execution_history if e.step == "in_approve"]
    assert len(approve_entries) == 1
    assert approve_entries[0].event == sent[0]
    assert len(instance.inbox) == len(sent) - 1
    assert all(item.held for item in instance.inbox)
    assert not instance.has_new_commands
