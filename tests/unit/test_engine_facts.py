"""The facts each engine entry point returns: what happened, without comparing instances."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from hephaestus import (
    Async,
    Context,
    Done,
    Error,
    Instance,
    Ok,
    Retry,
    Status,
    Step,
    Unique,
    Workflow,
)
from hephaestus.core import engine
from hephaestus.core.commands import RunStep, StopSteps
from hephaestus.core.definition import BaseWorkflow
from hephaestus.core.engine import Advance
from hephaestus.core.facts import (
    AttemptFailed,
    CancelRequested,
    EventAccepted,
    InstanceCancelled,
    InstanceCompleted,
    InstanceFailed,
    StepCompleted,
    StepParked,
    StepResumed,
    TimerCancelled,
    TimerScheduled,
)
from hephaestus.core.outcomes import as_outcome

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


class FaReceive(Step):
    events = ("ok",)


class FaApprove(Step):
    events = ("approved", "timeout")


class FaShip(Step):
    events = ("shipped",)
    retry = Retry(max_attempts=2, backoff="constant", base=5)


class FaApproval(Workflow):
    unique = Unique(key="test")
    start = FaReceive
    transitions = {
        (FaReceive, "ok"): FaApprove,
        (FaApprove, "approved"): FaShip,
        (FaApprove, "timeout"): FaShip,
        (FaShip, "shipped"): Done,
    }


class FaSplit(Step):
    events = ("split",)


class FaLeft(Step):
    events = ("left",)


class FaRight(Step):
    events = ("right",)


class FaJoin(Step):
    events = ("joined",)


class FaFanOut(Workflow):
    unique = Unique(key="test")
    start = FaSplit
    transitions = {
        (FaSplit, "split"): [FaLeft, FaRight],
        (FaLeft, "left"): FaJoin,
        (FaRight, "right"): FaJoin,
        (FaJoin, "joined"): Done,
    }


def start(flow: type[BaseWorkflow] = FaApproval) -> Advance:
    return engine.new_instance(
        flow.definition(), instance_id="test::1", context=Context.new({}), now=T0
    )


def complete(
    instance: Instance,
    step: str,
    outcome: Any,
    *,
    seconds: float = 1,
    duration: float = 0.5,
    flow: type[BaseWorkflow] = FaApproval,
) -> Advance:
    return engine.complete_step(
        flow.definition(),
        instance,
        step,
        outcome,
        attempt=instance.attempts[step],
        now=at(seconds),
        duration=duration,
    )


def parked(resume_after: float | None = None) -> Instance:
    """FaApproval waiting at `fa_approve`."""
    running = complete(start().instance, "fa_receive", "ok").instance
    return complete(running, "fa_approve", Async(resume_after), seconds=2).instance


def shipping() -> Instance:
    """FaApproval running `fa_ship`, attempt 1."""
    return engine.resume(FaApproval.definition(), parked(), "approved", now=at(3)).instance


# --- starting and completing --------------------------------------------------------------


def test_a_new_instance_has_no_facts_its_first_step_is_a_command() -> None:
    advance = start()

    assert advance.facts == ()
    assert advance.commands == [RunStep("fa_receive", 1)]


def test_an_ok_result_completes_the_step_and_names_what_it_started() -> None:
    advance = complete(start().instance, "fa_receive", Ok("ok", {"n": 1}), duration=0.25)

    assert advance.facts == (
        StepCompleted(
            "fa_receive",
            "ok",
            "attempt",
            1,
            0.25,
            ("fa_approve",),
            ("fa_approve",),
            has_updates=True,
        ),
    )


def test_a_bare_event_name_is_an_ok_result() -> None:
    [completed] = complete(start().instance, "fa_receive", "ok").facts

    assert isinstance(completed, StepCompleted)
    assert (completed.event, completed.has_updates, completed.has_metadata) == ("ok", False, False)


def test_reaching_done_completes_it_after_its_predecessor_and_completes_the_instance() -> None:
    advance = complete(shipping(), "fa_ship", Ok("shipped", metadata={"tracking": "x1"}))

    assert advance.facts == (
        StepCompleted(
            "fa_ship", "shipped", "attempt", 1, 0.5, ("done",), ("done",), has_metadata=True
        ),
        StepCompleted("done", "done", "engine", 1, 0.0, (), ()),
        InstanceCompleted(),
    )
    assert advance.instance.status is Status.COMPLETED


def test_a_fan_out_starts_both_branches_and_the_join_is_started_by_the_last_one() -> None:
    split = complete(start(FaFanOut).instance, "fa_split", "split", flow=FaFanOut)
    left = complete(split.instance, "fa_left", "left", flow=FaFanOut)
    right = complete(left.instance, "fa_right", "right", flow=FaFanOut)

    [fan_out] = split.facts_of(StepCompleted)
    assert fan_out.started == ("fa_left", "fa_right")
    [first] = left.facts_of(StepCompleted)
    assert (first.targets, first.started) == (("fa_join",), ())  # the join is not ready yet
    [last] = right.facts_of(StepCompleted)
    assert (last.targets, last.started) == (("fa_join",), ("fa_join",))


def test_an_async_result_parks_the_step_with_its_timer() -> None:
    running = complete(start().instance, "fa_receive", "ok").instance

    without = complete(running, "fa_approve", Async(), seconds=2, duration=0.1)
    with_timer = complete(running, "fa_approve", Async(30), seconds=2, duration=0.1)

    assert without.facts == (StepParked("fa_approve", 1, 0.1),)
    [timer] = with_timer.instance.timers
    assert with_timer.facts == (StepParked("fa_approve", 1, 0.1, timer),)
    assert timer.due_at == at(32)


def test_a_failed_attempt_with_a_retry_left_names_its_retry_timer() -> None:
    advance = complete(shipping(), "fa_ship", Error("down"), seconds=4, duration=0.2)

    [retry] = advance.instance.timers
    assert advance.facts == (AttemptFailed("fa_ship", 1, "down", 0.2, retry),)
    [failed] = advance.facts_of(AttemptFailed)
    assert failed.will_retry
    assert retry.due_at == at(9)


def test_the_last_failed_attempt_fails_the_instance() -> None:
    first = complete(shipping(), "fa_ship", Error("down"), seconds=4)
    retried = engine.fire_timers(FaApproval.definition(), first.instance, at(9))
    assert retried.facts == ()  # a retry is a command, not a fact
    assert retried.commands == [RunStep("fa_ship", 2)]

    advance = complete(retried.instance, "fa_ship", Error("still down"), seconds=10)

    [failed, ended] = advance.facts
    assert failed == AttemptFailed("fa_ship", 2, "still down", 0.5)
    assert not failed.will_retry
    assert ended == InstanceFailed(advance.instance.error or "", "fa_ship")
    assert "still down" in ended.reason


def test_a_result_that_breaks_a_rule_fails_the_instance_and_completes_nothing() -> None:
    advance = complete(start().instance, "fa_receive", Ok("nope"))

    [ended] = advance.facts
    assert isinstance(ended, InstanceFailed)
    assert "UndeclaredEventError" in ended.reason


def test_a_result_no_longer_expected_changes_nothing_and_has_no_facts() -> None:
    instance = shipping()
    failed = complete(instance, "fa_ship", Error("down"), seconds=4).instance

    duplicate = complete(failed, "fa_ship", "shipped", seconds=5)
    stale = engine.complete_step(
        FaApproval.definition(), instance, "fa_ship", "shipped", attempt=7, now=at(5)
    )

    assert (duplicate.instance, duplicate.facts) == (failed, ())
    assert (stale.instance, stale.facts) == (instance, ())


# --- resuming -----------------------------------------------------------------------------


def test_an_event_resumes_the_waiting_step_which_completes_with_it() -> None:
    advance = engine.resume(
        FaApproval.definition(), parked(), "approved", now=at(3), data={"by": "ada"}
    )

    assert advance.facts == (
        StepResumed("fa_approve", "approved", "event"),
        StepCompleted(
            "fa_approve",
            "approved",
            "event",
            1,
            0.0,
            ("fa_ship",),
            ("fa_ship",),
            has_updates=True,
        ),
    )


def test_timers_due_together_each_resume_their_step_once_in_one_call() -> None:
    both = complete(start(FaFanOut).instance, "fa_split", "split", flow=FaFanOut).instance
    both = complete(both, "fa_left", Async(10, "left"), seconds=2, flow=FaFanOut).instance
    both = complete(both, "fa_right", Async(9, "right"), seconds=3, flow=FaFanOut).instance

    advance = engine.fire_timers(FaFanOut.definition(), both, at(12))

    assert [type(f).__name__ for f in advance.facts] == [
        "StepResumed",
        "StepCompleted",
        "StepResumed",
        "StepCompleted",
    ]
    assert advance.facts_of(StepResumed) == [
        StepResumed("fa_left", "left", "timer"),
        StepResumed("fa_right", "right", "timer"),
    ]
    [left, right] = advance.facts_of(StepCompleted)
    assert (left.step, left.source, left.started) == ("fa_left", "timer", ())
    assert (right.step, right.source, right.started) == ("fa_right", "timer", ("fa_join",))


def test_nothing_due_or_nothing_in_the_inbox_is_an_unchanged_answer_without_facts() -> None:
    instance = parked(30)

    assert engine.fire_timers(FaApproval.definition(), instance, at(3)).facts == ()
    assert engine.drain_inbox(FaApproval.definition(), instance, at(3)).facts == ()


# --- the inbox ----------------------------------------------------------------------------


def test_accepting_an_event_or_a_cancel_request_records_it() -> None:
    instance = parked()

    accepted = engine.accept_event(FaApproval.definition(), instance, "approved", now=at(3))
    held = engine.accept_event(
        FaApproval.definition(), instance, "approved", now=at(3), step="fa_approve", held=True
    )
    requested = engine.request_cancel(accepted.instance, now=at(4))

    assert accepted.facts == (EventAccepted("approved", None, held=False),)
    assert held.facts == (EventAccepted("approved", "fa_approve", held=True),)
    assert requested.facts == (CancelRequested(),)
    assert accepted.commands == requested.commands == []
    assert len(requested.instance.inbox) == 2


def test_draining_an_event_resumes_its_step() -> None:
    accepted = engine.accept_event(FaApproval.definition(), parked(), "approved", now=at(3))

    advance = engine.drain_inbox(FaApproval.definition(), accepted.instance, at(4))

    assert advance.facts_of(StepResumed) == [StepResumed("fa_approve", "approved", "event")]
    [completed] = advance.facts_of(StepCompleted)
    assert (completed.step, completed.source) == ("fa_approve", "event")


def test_a_held_event_completes_the_step_in_the_call_that_parks_it() -> None:
    running = complete(start().instance, "fa_receive", "ok").instance
    accepted = engine.accept_event(FaApproval.definition(), running, "approved", now=at(2))

    advance = complete(accepted.instance, "fa_approve", Async(), seconds=3, duration=0.1)

    assert [type(f) for f in advance.facts] == [StepParked, StepResumed, StepCompleted]


def test_draining_a_cancel_request_cancels() -> None:
    requested = engine.request_cancel(shipping(), now=at(4))

    advance = engine.drain_inbox(FaApproval.definition(), requested.instance, at(5))

    assert advance.facts == (InstanceCancelled(),)
    assert advance.commands == [StopSteps(frozenset({"fa_ship"}))]


# --- timers, cancel, fail -----------------------------------------------------------------


def test_add_timer_names_the_timer_and_cancel_timer_the_one_it_removed() -> None:
    instance = parked()

    added = engine.add_timer(FaApproval.definition(), instance, "fa_approve", 10, now=at(3))
    [timer] = added.instance.timers
    removed = engine.cancel_timer(added.instance, timer.id, now=at(4))

    assert added.facts == (TimerScheduled(timer),)
    assert (timer.event, timer.due_at) == ("timeout", at(13))
    assert removed.facts == (TimerCancelled(timer),)
    assert removed.instance.timers == ()
    assert added.commands == removed.commands == []


def test_cancel_and_fail_end_the_instance() -> None:
    instance = shipping()

    cancelled = engine.cancel(instance, now=at(4))
    failed = engine.fail(instance, "the runner gave up", now=at(4))

    assert cancelled.facts == (InstanceCancelled(),)
    assert failed.facts == (InstanceFailed("the runner gave up"),)
    assert failed.commands == [StopSteps(frozenset({"fa_ship"}))]
    assert engine.fail(cancelled.instance, "again", now=at(5)).facts == ()


# --- the checks the runners share ---------------------------------------------------------


def test_expects_result_only_for_the_current_attempt_of_an_active_step() -> None:
    instance = shipping()
    backing_off = complete(instance, "fa_ship", Error("down"), seconds=4).instance
    cancelled = engine.cancel(instance, now=at(4)).instance

    assert engine.expects_result(instance, "fa_ship", 1)
    assert not engine.expects_result(instance, "fa_ship", 2)  # not that attempt
    assert not engine.expects_result(instance, "fa_approve", 1)  # completed
    assert not engine.expects_result(backing_off, "fa_ship", 1)  # failed, its retry is pending
    assert not engine.expects_result(cancelled, "fa_ship", 1)  # finished


@pytest.mark.parametrize("returned", [Ok("ok"), Async(), Error("x"), None, 3])
def test_as_outcome_reads_a_bare_event_name_as_ok_and_keeps_the_rest(returned: object) -> None:
    assert as_outcome("ok") == Ok("ok")
    assert as_outcome(returned) is returned
