"""The pure engine, driven by hand: no runtime, no event loop, fixed clocks."""

from __future__ import annotations

import itertools
import json
import operator
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from hephaestus import (
    AmbiguousEventError,
    Async,
    Context,
    Done,
    Error,
    ExecutionEntry,
    Instance,
    InstanceNotWaitingError,
    InvalidEventError,
    Ok,
    Retry,
    Status,
    Step,
    TimerNotFoundError,
    Unique,
    Wait,
    WaitForEvent,
    Workflow,
    route,
)
from hephaestus.core import engine
from hephaestus.core.commands import RunStep, StopSteps
from hephaestus.core.definition import BaseWorkflow, WorkflowDefinition
from hephaestus.core.engine import Advance
from hephaestus.core.facts import TimerScheduled
from hephaestus.core.frozen import FrozenDict
from hephaestus.core.instance import Timer

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def start(flow: type[BaseWorkflow], initial: dict[str, Any] | None = None) -> Advance:
    return engine.new_instance(
        flow.definition(), instance_id="test::1", context=Context.new(initial), now=T0
    )


def complete(
    flow: type[BaseWorkflow],
    instance: Instance,
    step: str,
    outcome: Any,
    *,
    seconds: float = 1,
    attempt: int | None = None,
    duration: float = 0.0,
) -> Advance:
    return engine.complete_step(
        flow.definition(),
        instance,
        step,
        outcome,
        attempt=instance.attempts[step] if attempt is None else attempt,
        now=at(seconds),
        duration=duration,
    )


def history_steps(instance: Instance) -> list[str]:
    return [entry.step for entry in instance.execution_history]


def scheduled(advance: Advance) -> tuple[Instance, Timer]:
    """The instance `add_timer` returned, and the timer it scheduled."""
    [fact] = advance.facts_of(TimerScheduled)
    return advance.instance, fact.timer


def runs(advance: Advance) -> set[RunStep]:
    return {c for c in advance.commands if isinstance(c, RunStep)}


# --- steps and workflows ------------------------------------------------------------------


class Receive(Step):
    events = ("ok",)


class Validate(Step):
    events = ("valid", "invalid")


class Ship(Step):
    events = ("shipped",)


class Reject(Step):
    events = ("rejected",)


class Linear(Workflow):
    unique = Unique(key="test")
    start = Receive
    transitions = {
        (Receive, "ok"): Validate,
        (Validate, "valid"): Ship,
        (Validate, "invalid"): Reject,
        (Ship, "shipped"): Done,
        (Reject, "rejected"): Done,
    }


class Split(Step):
    events = ("split",)


class Charge(Step):
    events = ("charged",)


class Reserve(Step):
    events = ("reserved",)


class Pack(Step):
    events = ("packed",)


class FanOut(Workflow):
    unique = Unique(key="test")
    start = Split
    transitions = {
        (Split, "split"): [Charge, Reserve],
        (Charge, "charged"): Pack,
        (Reserve, "reserved"): Pack,
        (Pack, "packed"): Done,
    }


class Decide(Step):
    events = ("x", "y")


class OnX(Step):
    events = ("ok",)


class OnY(Step):
    events = ("ok",)


class Merge(Step):
    events = ("merged",)


class ExclusiveJoin(Workflow):
    """A -x-> B -> J, A -y-> C -> J: the original never ran J."""

    unique = Unique(key="test")
    start = Decide
    transitions = {
        (Decide, "x"): OnX,
        (Decide, "y"): OnY,
        (OnX, "ok"): Merge,
        (OnY, "ok"): Merge,
        (Merge, "merged"): Done,
    }


class Shortcut(Step):
    events = ("p", "q")


class Audit(Step):
    events = ("audited",)


class SkippedJoin(Workflow):
    """Decide -x-> Audit; Decide -y-> Shortcut; Shortcut -p-> Audit; Shortcut -q-> Done.

    Audit has two predecessors; on the path y, q both have completed, yet no
    transition taken leads to Audit, so it must not run.
    """

    unique = Unique(key="test")
    start = Decide
    transitions = {
        (Decide, "x"): Audit,
        (Decide, "y"): Shortcut,
        (Shortcut, "p"): Audit,
        (Shortcut, "q"): Done,
        (Audit, "audited"): Done,
    }


class Fork(Step):
    events = ("split",)


class Left(Step):
    events = ("fast", "slow")


class LeftFast(Step):
    events = ("ok",)


class LeftSlow(Step):
    events = ("ok",)


class Right(Step):
    events = ("ok",)


class Gather(Step):
    events = ("gathered",)


class Nested(Workflow):
    """Fork -> [Left, Right]; Left chooses LeftFast or LeftSlow; everything meets at Gather."""

    unique = Unique(key="test")
    start = Fork
    transitions = {
        (Fork, "split"): [Left, Right],
        (Left, "fast"): LeftFast,
        (Left, "slow"): LeftSlow,
        (LeftFast, "ok"): Gather,
        (LeftSlow, "ok"): Gather,
        (Right, "ok"): Gather,
        (Gather, "gathered"): Done,
    }


class Approve(Step):
    events = ("approved", "rejected", "timeout")


class Approval(Workflow):
    unique = Unique(key="test")
    start = Receive
    transitions = {
        (Receive, "ok"): Approve,
        (Approve, "approved"): Ship,
        (Approve, "rejected"): Reject,
        (Approve, "timeout"): Reject,
        (Ship, "shipped"): Done,
        (Reject, "rejected"): Done,
    }


class SignLeft(Step):
    events = ("go",)


class SignRight(Step):
    events = ("go", "stop")


class TwoSignatures(Workflow):
    unique = Unique(key="test")
    start = Fork
    transitions = {
        (Fork, "split"): [SignLeft, SignRight],
        (SignLeft, "go"): Gather,
        (SignRight, "go"): Gather,
        (SignRight, "stop"): Gather,
        (Gather, "gathered"): Done,
    }


class Shipping(Workflow):
    unique = Unique(key="test")
    start = Ship
    transitions = {
        (Ship, "shipped"): (Wait, {"duration": 2, "unit": "minute"}),
        (Wait, "timeout"): Done,
    }


class AwaitPayment(WaitForEvent):
    pass


class Payment(Workflow):
    unique = Unique(key="test")
    start = (AwaitPayment, {"event_name": "paid", "timeout_ms": 1500})
    transitions = {
        (AwaitPayment, "paid"): Ship,
        (AwaitPayment, "timeout"): Reject,
        (Ship, "shipped"): Done,
        (Reject, "rejected"): Done,
    }


class Flaky(Step):
    events = ("ok",)
    retry = Retry(max_attempts=3, backoff="exponential", base=2.0, max_backoff=60.0)


class Retrying(Workflow):
    unique = Unique(key="test")
    start = Flaky
    transitions = {(Flaky, "ok"): Done}


class FlakyBranch(Step):
    events = ("ok",)
    retry = Retry(max_attempts=2, backoff="constant", base=5.0)


class RecoverFlow(Workflow):
    unique = Unique(key="test")
    start = Fork
    transitions = {
        (Fork, "split"): [FlakyBranch, Right, Approve],
        (FlakyBranch, "ok"): Gather,
        (Right, "ok"): Gather,
        (Approve, "approved"): Gather,
        (Approve, "rejected"): Gather,
        (Approve, "timeout"): Gather,
        (Gather, "gathered"): Done,
    }


class Triage(Step):
    events = ("routed",)


class FastTrack(Step):
    events = ("ok",)


class Standard(Step):
    events = ("ok",)


class Routed(Workflow):
    unique = Unique(key="test")
    start = Triage
    transitions = {(FastTrack, "ok"): Done, (Standard, "ok"): Done}

    @route(Triage, "routed", targets=[FastTrack, Standard])
    def triage(context: Context) -> type[Step]:
        return FastTrack if context.initial["priority"] == "high" else Standard


class RoutedAstray(Workflow):
    unique = Unique(key="test")
    start = Triage
    transitions = {(FastTrack, "ok"): Done, (Standard, "ok"): Done}

    @route(Triage, "routed", targets=[FastTrack, Standard])
    def astray(context: Context) -> type[Step]:
        return Audit


class RoutedBroken(Workflow):
    unique = Unique(key="test")
    start = Triage
    transitions = {(FastTrack, "ok"): Done, (Standard, "ok"): Done}

    @route(Triage, "routed", targets=[FastTrack, Standard])
    def broken(context: Context) -> type[Step]:
        return FastTrack if context.initial["priority"] == "high" else Standard


class RoutedToJoin(Workflow):
    """The route may jump straight to Gather, a join that Standard also leads to."""

    unique = Unique(key="test")
    start = Triage
    transitions = {(Standard, "ok"): Gather, (Gather, "gathered"): Done}

    @route(Triage, "routed", targets=[Standard, Gather])
    def skip(context: Context) -> type[Step]:
        return Gather if context.initial["skip"] else Standard


class Escalate(Step):
    events = ("escalated",)


class Branchy(Step):
    events = ("a", "b")


class RoutedBetweenJoins(Workflow):
    """Fork -> [Triage, Branchy]; Triage routes to Escalate or Gather, both joins."""

    unique = Unique(key="test")
    start = Fork
    transitions = {
        (Fork, "split"): [Triage, Branchy],
        (Branchy, "a"): Escalate,
        (Branchy, "b"): Gather,
        (Escalate, "escalated"): Gather,
        (Gather, "gathered"): Done,
    }

    @route(Triage, "routed", targets=[Escalate, Gather])
    def pick(context: Context) -> type[Step]:
        return Escalate if context.initial["escalate"] else Gather


# --- starting ----------------------------------------------------------------------------


def test_start_activates_the_start_step() -> None:
    advance = start(Linear, {"order": "abc"})
    instance = advance.instance

    assert advance.commands == [RunStep("receive", 1)]
    assert instance.status is Status.RUNNING
    assert instance.active_steps == {"receive"}
    assert instance.attempts == {"receive": 1}
    assert instance.completed_steps == frozenset()
    assert instance.context.initial == {"order": "abc"}
    assert instance.workflow == Linear.definition().name
    assert instance.created_at == instance.updated_at == T0
    assert instance.revision == 1


def test_start_records_the_start_steps_config() -> None:
    instance = start(Payment).instance

    assert instance.step_configs == {"await_payment": {"event_name": "paid", "timeout_ms": 1500}}


# --- completing steps --------------------------------------------------------------------


def test_ok_with_updates_stores_them_and_records_history() -> None:
    instance = start(Linear).instance

    advance = complete(Linear, instance, "receive", Ok("ok", {"count": 3}), duration=0.25)

    after = advance.instance
    assert after.context.steps["receive"] == {"count": 3}
    assert after.execution_history == (
        ExecutionEntry(
            step="receive",
            event="ok",
            timestamp=at(1),
            context_updates={"count": 3},
            attempt=1,
            duration=0.25,
            targets=("validate",),
        ),
    )
    assert after.completed_steps == {"receive"}
    assert after.active_steps == {"validate"}
    assert advance.commands == [RunStep("validate", 1)]


def test_a_bare_str_outcome_is_an_event() -> None:
    instance = start(Linear).instance

    advance = complete(Linear, instance, "receive", "ok")

    assert advance.commands == [RunStep("validate", 1)]
    assert advance.instance.execution_history[0].event == "ok"
    assert advance.instance.context.steps["receive"] == {}  # an entry even without updates


def test_metadata_merges_into_runtime_metadata() -> None:
    instance = start(Linear).instance
    instance = complete(Linear, instance, "receive", Ok("ok", None, {"a": 1, "b": 1})).instance

    instance = complete(Linear, instance, "validate", Ok("valid", None, {"b": 2})).instance

    assert instance.runtime_metadata == {"a": 1, "b": 2}


def test_metadata_that_is_not_a_dict_fails_the_instance() -> None:
    instance = start(Linear).instance

    failed = complete(Linear, instance, "receive", Ok("ok", None, ["not", "a", "dict"])).instance

    assert failed.status is Status.FAILED
    assert failed.error is not None
    assert "ContextSerializationError" in failed.error
    assert "Receive" in failed.error


def test_an_undeclared_event_fails_the_instance() -> None:
    instance = start(Linear).instance

    advance = complete(Linear, instance, "receive", Ok("teleported"))

    failed = advance.instance
    assert failed.status is Status.FAILED
    assert failed.error is not None
    assert "UndeclaredEventError" in failed.error
    assert "Receive" in failed.error
    assert "teleported" in failed.error
    assert failed.completed_steps == frozenset()
    assert advance.commands == [StopSteps(frozenset({"receive"}))]


def test_updates_that_are_not_json_fail_the_instance() -> None:
    instance = start(Linear).instance

    failed = complete(Linear, instance, "receive", Ok("ok", {"when": object()})).instance

    assert failed.status is Status.FAILED
    assert failed.error is not None
    assert failed.error.startswith("ContextSerializationError")
    assert "Receive" in failed.error
    assert "'when'" in failed.error
    assert failed.context.steps == {}


@pytest.mark.parametrize("outcome", [42, None, {"event": "ok"}, Ok])
def test_an_outcome_of_the_wrong_type_fails_the_instance(outcome: Any) -> None:
    instance = start(Linear).instance

    failed = complete(Linear, instance, "receive", outcome).instance

    assert failed.status is Status.FAILED
    assert failed.error is not None
    assert "Receive" in failed.error
    assert repr(outcome) in failed.error


def test_done_is_completed_inline_and_the_instance_completes() -> None:
    instance = start(Linear).instance
    instance = complete(Linear, instance, "receive", "ok").instance
    instance = complete(Linear, instance, "validate", "valid").instance

    advance = complete(Linear, instance, "ship", "shipped", seconds=5)

    done = advance.instance
    assert advance.commands == []
    assert done.status is Status.COMPLETED
    assert done.active_steps == frozenset()
    assert done.completed_steps == {"receive", "validate", "ship", "done"}
    assert done.execution_history[-1] == ExecutionEntry(step="done", event="done", timestamp=at(5))
    assert history_steps(done) == ["receive", "validate", "ship", "done"]


def test_revision_grows_by_one_per_change() -> None:
    instance = start(Linear).instance
    revisions = [instance.revision]
    for step, event in [("receive", "ok"), ("validate", "invalid"), ("reject", "rejected")]:
        instance = complete(Linear, instance, step, event).instance
        revisions.append(instance.revision)

    assert revisions == [1, 2, 3, 4]
    assert instance.status is Status.COMPLETED


# --- fan-out and joins -------------------------------------------------------------------


def test_a_fan_out_runs_one_step_per_branch() -> None:
    instance = start(FanOut).instance

    advance = complete(FanOut, instance, "split", "split")

    assert runs(advance) == {RunStep("charge", 1), RunStep("reserve", 1)}
    assert len(advance.commands) == 2
    assert advance.instance.active_steps == {"charge", "reserve"}


@pytest.mark.parametrize("first", ["charge", "reserve"])
def test_a_join_runs_once_after_all_branches(first: str) -> None:
    events = {"charge": "charged", "reserve": "reserved"}
    second = "reserve" if first == "charge" else "charge"
    instance = complete(FanOut, start(FanOut).instance, "split", "split").instance

    after_first = complete(FanOut, instance, first, events[first], seconds=2)
    assert after_first.commands == []
    assert "pack" not in after_first.instance.active_steps

    after_second = complete(FanOut, after_first.instance, second, events[second], seconds=3)
    assert after_second.commands == [RunStep("pack", 1)]

    done = complete(FanOut, after_second.instance, "pack", "packed", seconds=4).instance
    assert done.status is Status.COMPLETED
    assert Counter(history_steps(done))["pack"] == 1


@pytest.mark.parametrize(("event", "branch"), [("x", "on_x"), ("y", "on_y")])
def test_a_join_after_exclusive_branches_runs_exactly_once(event: str, branch: str) -> None:
    instance = complete(ExclusiveJoin, start(ExclusiveJoin).instance, "decide", event).instance

    advance = complete(ExclusiveJoin, instance, branch, "ok", seconds=2)

    assert advance.commands == [RunStep("merge", 1)]
    done = complete(ExclusiveJoin, advance.instance, "merge", "merged", seconds=3).instance
    assert done.status is Status.COMPLETED
    assert history_steps(done) == ["decide", branch, "merge", "done"]


def test_a_join_no_taken_transition_leads_to_never_runs() -> None:
    instance = complete(SkippedJoin, start(SkippedJoin).instance, "decide", "y").instance

    advance = complete(SkippedJoin, instance, "shortcut", "q", seconds=2)

    assert advance.commands == []
    assert advance.instance.status is Status.COMPLETED
    assert history_steps(advance.instance) == ["decide", "shortcut", "done"]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ([("decide", "x")], ["decide", "audit"]),
        ([("decide", "y"), ("shortcut", "p")], ["decide", "shortcut", "audit"]),
    ],
)
def test_a_join_runs_when_a_taken_transition_leads_to_it(
    path: list[tuple[str, str]], expected: list[str]
) -> None:
    instance = start(SkippedJoin).instance
    for step, event in path:
        instance = complete(SkippedJoin, instance, step, event).instance

    assert instance.active_steps == {"audit"}
    done = complete(SkippedJoin, instance, "audit", "audited").instance
    assert history_steps(done) == [*expected, "done"]


@pytest.mark.parametrize("event", ["fast", "slow"])
@pytest.mark.parametrize("right_first", [True, False])
def test_dead_path_elimination_with_nested_branches(event: str, right_first: bool) -> None:
    taken = "left_fast" if event == "fast" else "left_slow"
    skipped = "left_slow" if event == "fast" else "left_fast"
    instance = complete(Nested, start(Nested).instance, "fork", "split").instance
    issued: list[RunStep] = []

    order = [("right", "ok"), ("left", event), (taken, "ok")]
    if not right_first:
        order = [("left", event), (taken, "ok"), ("right", "ok")]
    for seconds, (step, outcome) in enumerate(order, start=2):
        assert "gather" not in instance.active_steps
        advance = complete(Nested, instance, step, outcome, seconds=seconds)
        issued += runs(advance)
        instance = advance.instance

    assert RunStep("gather", 1) in issued
    assert all(run.step != skipped for run in issued)
    assert instance.active_steps == {"gather"}
    done = complete(Nested, instance, "gather", "gathered", seconds=9).instance
    assert done.status is Status.COMPLETED
    assert skipped not in done.completed_steps
    assert Counter(history_steps(done))["gather"] == 1


# --- waiting and resuming ----------------------------------------------------------------


def parked(outcome: Async = Async()) -> Advance:  # noqa: B008 - Async is a frozen value
    instance = complete(Approval, start(Approval).instance, "receive", "ok").instance
    return complete(Approval, instance, "approve", outcome, seconds=2)


def test_async_parks_the_step() -> None:
    advance = parked()

    instance = advance.instance
    assert advance.commands == []
    assert instance.status is Status.WAITING
    assert instance.waiting_steps == {"approve"}
    assert instance.active_steps == frozenset()
    assert instance.timers == ()
    assert engine.recover(instance) == []


def test_async_with_resume_after_adds_a_timer() -> None:
    instance = parked(Async(resume_after=60)).instance

    assert [(t.step, t.due_at, t.kind, t.event) for t in instance.timers] == [
        ("approve", at(62), "resume", "timeout")
    ]
    assert instance.next_timer_at == at(62)


@pytest.mark.parametrize("resume_after", [float("nan"), float("inf"), "soon", 1e30])
def test_async_with_an_unusable_resume_after_fails_the_instance(resume_after: Any) -> None:
    failed = parked(Async(resume_after=resume_after)).instance

    assert failed.status is Status.FAILED
    assert failed.error is not None
    assert "Approve" in failed.error
    assert "resume_after" in failed.error
    assert failed.timers == ()


def test_async_with_a_deadline_already_past_is_due_at_once() -> None:
    instance = parked(Async(resume_after=-30)).instance

    assert instance.next_timer_at == at(2)
    fired = engine.fire_timers(Approval.definition(), instance, at(2))
    assert fired.commands == [RunStep("reject", 1)]


def test_async_with_a_timeout_event_the_step_does_not_declare_fails_the_instance() -> None:
    failed = parked(Async(resume_after=5, timeout_event="expired")).instance

    assert failed.status is Status.FAILED
    assert failed.error is not None
    assert "UndeclaredEventError" in failed.error
    assert "expired" in failed.error


def test_resume_delivers_to_the_waiting_step() -> None:
    instance = parked(Async(resume_after=60)).instance

    advance = engine.resume(Approval.definition(), instance, "approved", now=at(10))

    resumed = advance.instance
    assert advance.commands == [RunStep("ship", 1)]
    assert resumed.status is Status.RUNNING
    assert resumed.waiting_steps == frozenset()
    assert resumed.timers == ()
    assert resumed.execution_history[-1].step == "approve"
    assert resumed.execution_history[-1].event == "approved"
    assert resumed.execution_history[-1].timestamp == at(10)


def test_step_chooses_between_waiting_branches_that_share_an_event() -> None:
    definition = TwoSignatures.definition()
    instance = complete(TwoSignatures, start(TwoSignatures).instance, "fork", "split").instance
    instance = complete(TwoSignatures, instance, "sign_left", Async(), seconds=2).instance
    instance = complete(TwoSignatures, instance, "sign_right", Async(), seconds=3).instance
    assert instance.waiting_steps == {"sign_left", "sign_right"}

    with pytest.raises(AmbiguousEventError, match="step="):
        engine.resume(definition, instance, "go", now=at(4))

    instance = engine.resume(definition, instance, "go", now=at(4), step="sign_right").instance
    assert instance.waiting_steps == {"sign_left"}
    assert instance.status is Status.WAITING
    assert history_steps(instance) == ["fork", "sign_right"]

    advance = engine.resume(definition, instance, "go", now=at(5))
    assert advance.commands == [RunStep("gather", 1)]


def test_an_event_that_only_one_waiting_branch_declares_needs_no_step() -> None:
    definition = TwoSignatures.definition()
    instance = complete(TwoSignatures, start(TwoSignatures).instance, "fork", "split").instance
    instance = complete(TwoSignatures, instance, "sign_left", Async(), seconds=2).instance
    instance = complete(TwoSignatures, instance, "sign_right", Async(), seconds=3).instance

    instance = engine.resume(definition, instance, "stop", now=at(4)).instance

    assert instance.waiting_steps == {"sign_left"}
    assert instance.execution_history[-1].event == "stop"


def test_resume_with_step_that_does_not_declare_the_event_is_rejected() -> None:
    definition = TwoSignatures.definition()
    instance = complete(TwoSignatures, start(TwoSignatures).instance, "fork", "split").instance
    instance = complete(TwoSignatures, instance, "sign_left", Async(), seconds=2).instance
    before = instance.to_json()

    with pytest.raises(InvalidEventError, match="stop"):
        engine.resume(definition, instance, "stop", now=at(3), step="sign_left")
    with pytest.raises(InvalidEventError, match="not waiting"):
        engine.resume(definition, instance, "go", now=at(3), step="sign_right")
    assert instance.to_json() == before


def test_resume_with_an_event_no_waiting_step_declares_changes_nothing() -> None:
    instance = parked().instance
    before = instance.to_json()

    with pytest.raises(InvalidEventError, match="shipped") as raised:
        engine.resume(Approval.definition(), instance, "shipped", now=at(5))

    assert not isinstance(raised.value, AmbiguousEventError)
    assert instance.to_json() == before


def test_resume_of_a_running_instance_with_nothing_parked_is_rejected() -> None:
    instance = start(Approval).instance

    with pytest.raises(InstanceNotWaitingError, match="no waiting step"):
        engine.resume(Approval.definition(), instance, "approved", now=at(1))


def _finished(status: Status) -> Instance:
    instance = parked().instance
    if status is Status.COMPLETED:
        instance = engine.resume(Approval.definition(), instance, "rejected", now=at(3)).instance
        instance = complete(Approval, instance, "reject", "rejected", seconds=4).instance
    elif status is Status.FAILED:
        instance = engine.fail(instance, "operator gave up", now=at(3)).instance
    else:
        instance = engine.cancel(instance, now=at(3)).instance
    assert instance.status is status
    return instance


@pytest.mark.parametrize("status", [Status.COMPLETED, Status.FAILED, Status.CANCELLED])
def test_resume_of_a_finished_instance_is_rejected(status: Status) -> None:
    instance = _finished(status)

    with pytest.raises(InstanceNotWaitingError, match=status.value):
        engine.resume(Approval.definition(), instance, "approved", now=at(9))


# --- timers ------------------------------------------------------------------------------


def test_wait_is_resumed_by_its_timer_once() -> None:
    definition = Shipping.definition()
    instance = complete(Shipping, start(Shipping).instance, "ship", "shipped").instance
    assert instance.step_configs == {"wait": {"duration": 2, "unit": "minute"}}
    outcome = Wait().execute(instance, instance.step_configs["wait"], instance.context)
    instance = complete(Shipping, instance, "wait", outcome, seconds=1).instance
    assert instance.status is Status.WAITING
    assert instance.next_timer_at == at(121)

    early = engine.fire_timers(definition, instance, at(120))
    assert early.instance is instance
    assert early.commands == []

    fired = engine.fire_timers(definition, instance, at(121)).instance
    assert fired.status is Status.COMPLETED
    assert fired.timers == ()
    assert [(e.step, e.event) for e in fired.execution_history[-2:]] == [
        ("wait", "timeout"),
        ("done", "done"),
    ]

    again = engine.fire_timers(definition, fired, at(10_000))
    assert again.instance == fired
    assert again.instance.revision == fired.revision
    assert again.commands == []


def _payment_parked() -> Instance:
    instance = start(Payment).instance
    config = instance.step_configs["await_payment"]
    outcome = AwaitPayment().execute(instance, config, instance.context)
    return complete(Payment, instance, "await_payment", outcome).instance


def test_wait_for_event_times_out_after_timeout_ms() -> None:
    instance = _payment_parked()
    assert instance.next_timer_at == at(2.5)

    advance = engine.fire_timers(Payment.definition(), instance, at(3))

    assert advance.commands == [RunStep("reject", 1)]
    assert advance.instance.execution_history[-1].event == "timeout"


def test_a_timer_whose_step_was_resumed_first_never_fires() -> None:
    definition = Payment.definition()
    instance = _payment_parked()

    resumed = engine.resume(definition, instance, "paid", now=at(2)).instance
    later = engine.fire_timers(definition, resumed, at(60))

    assert later.instance == resumed
    assert later.commands == []
    assert [e.event for e in later.instance.execution_history] == ["paid"]


def test_a_resume_timer_for_a_step_that_is_no_longer_waiting_is_dropped() -> None:
    definition = Approval.definition()
    instance = complete(Approval, start(Approval).instance, "receive", "ok").instance
    instance, timer = scheduled(engine.add_timer(definition, instance, "approve", 30, now=at(1)))
    instance = complete(Approval, instance, "approve", "approved", seconds=2).instance

    advance = engine.fire_timers(definition, instance, at(31))

    assert advance.commands == []
    assert timer not in advance.instance.timers
    assert advance.instance.active_steps == {"ship"}
    assert Counter(history_steps(advance.instance))["approve"] == 1
    assert engine.fire_timers(definition, advance.instance, at(99)).instance == advance.instance


def test_add_timer_resumes_a_parked_step_with_its_timeout_event() -> None:
    definition = Approval.definition()
    instance = parked().instance

    later, timer = scheduled(engine.add_timer(definition, instance, "approve", 10, now=at(3)))

    assert timer.due_at == at(13)
    assert timer.event == "timeout"
    assert later.revision == instance.revision + 1
    fired = engine.fire_timers(definition, later, at(13))
    assert fired.commands == [RunStep("reject", 1)]


def test_add_timer_with_an_explicit_event() -> None:
    definition = Approval.definition()
    instance, timer = scheduled(
        engine.add_timer(definition, parked().instance, "approve", 5, now=at(3), event="approved")
    )

    fired = engine.fire_timers(definition, instance, at(8))

    assert timer.event == "approved"
    assert fired.commands == [RunStep("ship", 1)]


def test_add_timer_rejects_an_event_the_step_does_not_declare() -> None:
    with pytest.raises(InvalidEventError, match="shipped"):
        engine.add_timer(
            Approval.definition(), parked().instance, "approve", 5, now=at(3), event="shipped"
        )


def test_cancel_timer_removes_it() -> None:
    definition = Approval.definition()
    instance, timer = scheduled(
        engine.add_timer(definition, parked().instance, "approve", 10, now=at(3))
    )

    cancelled = engine.cancel_timer(instance, timer.id, now=at(4)).instance

    assert cancelled.timers == ()
    assert cancelled.revision == instance.revision + 1
    assert engine.fire_timers(definition, cancelled, at(60)).instance == cancelled


def test_cancel_timer_of_an_unknown_id_raises() -> None:
    instance = parked().instance

    with pytest.raises(TimerNotFoundError, match="nope"):
        engine.cancel_timer(instance, "nope", now=at(4))


# --- retries -----------------------------------------------------------------------------


def test_errors_are_retried_with_backoff_then_fail_the_instance() -> None:
    definition = Retrying.definition()
    policy = Flaky.retry
    instance = start(Retrying).instance
    now = 0.0

    for attempt in (1, 2):
        advance = complete(Retrying, instance, "flaky", Error("gateway down"), seconds=now)
        instance = advance.instance
        assert advance.commands == []
        assert instance.status is Status.RUNNING
        due = at(now + policy.delay(attempt))
        assert [(t.step, t.kind, t.due_at) for t in instance.timers] == [("flaky", "retry", due)]
        assert engine.fire_timers(definition, instance, due - timedelta(seconds=0.5)).commands == []

        retried = engine.fire_timers(definition, instance, due)
        assert retried.commands == [RunStep("flaky", attempt + 1)]
        instance = retried.instance
        assert instance.attempts == {"flaky": attempt + 1}
        assert instance.timers == ()
        now = (due - T0).total_seconds() + 1

    assert [policy.delay(1), policy.delay(2)] == [2.0, 4.0]
    advance = complete(Retrying, instance, "flaky", Error("gateway down"), seconds=now)

    failed = advance.instance
    assert failed.status is Status.FAILED
    assert failed.error is not None
    assert "Flaky" in failed.error
    assert "3 attempts" in failed.error
    assert "gateway down" in failed.error
    assert failed.timers == ()
    assert advance.commands == [StopSteps(frozenset({"flaky"}))]


def test_a_retried_step_records_the_attempt_that_succeeded() -> None:
    definition = Retrying.definition()
    instance = complete(Retrying, start(Retrying).instance, "flaky", Error("once")).instance
    instance = engine.fire_timers(definition, instance, at(10)).instance

    done = complete(Retrying, instance, "flaky", "ok", seconds=11).instance

    assert done.status is Status.COMPLETED
    assert done.execution_history[0].attempt == 2


def test_a_result_for_an_older_attempt_is_ignored() -> None:
    definition = Retrying.definition()
    instance = complete(Retrying, start(Retrying).instance, "flaky", Error("once")).instance
    instance = engine.fire_timers(definition, instance, at(10)).instance

    stale = complete(Retrying, instance, "flaky", "ok", attempt=1, seconds=11)

    assert stale.instance is instance
    assert stale.commands == []


def test_a_second_result_for_a_failed_attempt_does_not_retry_twice() -> None:
    definition = Retrying.definition()
    instance = complete(Retrying, start(Retrying).instance, "flaky", Error("once")).instance

    for late in (Error("again"), Ok("ok")):
        duplicate = complete(Retrying, instance, "flaky", late, attempt=1, seconds=1.5)
        assert duplicate.instance is instance

    assert engine.fire_timers(definition, instance, at(60)).commands == [RunStep("flaky", 2)]


def test_a_result_for_a_step_that_is_already_done_is_ignored() -> None:
    instance = complete(Linear, start(Linear).instance, "receive", "ok").instance

    duplicate = complete(Linear, instance, "receive", "ok", attempt=1, seconds=2)

    assert duplicate.instance is instance
    assert duplicate.commands == []


# --- cancel, fail, recover ---------------------------------------------------------------


def test_cancel_stops_running_steps() -> None:
    instance = complete(FanOut, start(FanOut).instance, "split", "split").instance

    advance = engine.cancel(instance, now=at(5))

    assert advance.commands == [StopSteps(frozenset({"charge", "reserve"}))]
    assert advance.instance.status is Status.CANCELLED
    assert advance.instance.revision == instance.revision + 1
    late = complete(FanOut, advance.instance, "charge", "charged", attempt=1, seconds=6)
    assert late.instance is advance.instance
    assert late.commands == []


def test_cancel_drops_pending_timers() -> None:
    instance = parked(Async(resume_after=30)).instance

    cancelled = engine.cancel(instance, now=at(5)).instance

    assert cancelled.timers == ()
    assert engine.fire_timers(Approval.definition(), cancelled, at(99)).instance == cancelled


@pytest.mark.parametrize("status", [Status.COMPLETED, Status.FAILED, Status.CANCELLED])
def test_cancelling_a_finished_instance_raises(status: Status) -> None:
    with pytest.raises(InstanceNotWaitingError, match=status.value):
        engine.cancel(_finished(status), now=at(10))


def test_fail_marks_the_instance_failed_and_stops_its_steps() -> None:
    instance = complete(FanOut, start(FanOut).instance, "split", "split").instance

    advance = engine.fail(instance, "the worker lost its lease", now=at(5))

    assert advance.instance.status is Status.FAILED
    assert advance.instance.error == "the worker lost its lease"
    assert advance.commands == [StopSteps(frozenset({"charge", "reserve"}))]
    assert engine.fail(advance.instance, "again", now=at(6)).instance is advance.instance


def test_recover_reruns_active_steps_but_not_those_backing_off() -> None:
    definition = RecoverFlow.definition()
    instance = complete(RecoverFlow, start(RecoverFlow).instance, "fork", "split").instance
    instance = complete(RecoverFlow, instance, "approve", Async(), seconds=2).instance
    instance = complete(RecoverFlow, instance, "flaky_branch", Error("busy"), seconds=3).instance
    assert instance.status is Status.RUNNING

    assert engine.recover(instance) == [RunStep("right", 1)]

    instance = engine.fire_timers(definition, instance, at(8)).instance
    assert engine.recover(instance) == [RunStep("flaky_branch", 2), RunStep("right", 1)]


def test_recover_of_a_waiting_or_finished_instance_runs_nothing() -> None:
    assert engine.recover(parked().instance) == []
    assert engine.recover(_finished(Status.COMPLETED)) == []


# --- dynamic routes ----------------------------------------------------------------------


@pytest.mark.parametrize(("priority", "target"), [("high", "fast_track"), ("low", "standard")])
def test_a_route_chooses_the_target(priority: str, target: str) -> None:
    instance = start(Routed, {"priority": priority}).instance

    advance = complete(Routed, instance, "triage", "routed")

    assert advance.commands == [RunStep(target, 1)]
    done = complete(Routed, advance.instance, target, "ok", seconds=2).instance
    assert history_steps(done) == ["triage", target, "done"]


def test_a_route_returning_an_undeclared_target_fails_the_instance() -> None:
    instance = start(RoutedAstray).instance

    failed = complete(RoutedAstray, instance, "triage", "routed").instance

    assert failed.status is Status.FAILED
    assert failed.error is not None
    assert "InvalidTargetError" in failed.error
    assert "astray" in failed.error
    assert "FastTrack" in failed.error


def test_a_route_that_raises_fails_the_instance() -> None:
    instance = start(RoutedBroken, {"no_priority": True}).instance

    failed = complete(RoutedBroken, instance, "triage", "routed").instance

    assert failed.status is Status.FAILED
    assert failed.error is not None
    assert "broken" in failed.error
    assert "KeyError" in failed.error


@pytest.mark.parametrize("skip", [True, False])
def test_a_route_to_a_join_runs_it_once(skip: bool) -> None:
    instance = start(RoutedToJoin, {"skip": skip}).instance

    advance = complete(RoutedToJoin, instance, "triage", "routed")
    if not skip:
        assert advance.commands == [RunStep("standard", 1)]
        advance = complete(RoutedToJoin, advance.instance, "standard", "ok", seconds=2)

    assert advance.commands == [RunStep("gather", 1)]
    done = complete(RoutedToJoin, advance.instance, "gather", "gathered", seconds=3).instance
    expected = ["triage", "gather", "done"] if skip else ["triage", "standard", "gather", "done"]
    assert history_steps(done) == expected


@pytest.mark.parametrize("triage_first", [True, False])
@pytest.mark.parametrize(
    ("escalate", "event", "expected"),
    [
        (False, "b", {"fork", "triage", "branchy", "gather"}),
        (False, "a", {"fork", "triage", "branchy", "escalate", "gather"}),
        (True, "b", {"fork", "triage", "branchy", "escalate", "gather"}),
        (True, "a", {"fork", "triage", "branchy", "escalate", "gather"}),
    ],
)
def test_a_route_between_joins_runs_only_the_chosen_one(
    triage_first: bool, escalate: bool, event: str, expected: set[str]
) -> None:
    flow = RoutedBetweenJoins
    instance = start(flow, {"escalate": escalate}).instance
    instance = complete(flow, instance, "fork", "split").instance
    order = [("triage", "routed"), ("branchy", event)]
    for step, outcome in order if triage_first else order[::-1]:
        instance = complete(flow, instance, step, outcome, seconds=2).instance
    for step, outcome in [("escalate", "escalated"), ("gather", "gathered")]:
        if step in expected:
            assert instance.active_steps == {step}
            instance = complete(flow, instance, step, outcome, seconds=3).instance

    assert instance.status is Status.COMPLETED
    assert Counter(history_steps(instance)) == Counter(expected | {"done"})
    assert Instance.from_json(instance.to_json()) == instance


# --- the value itself --------------------------------------------------------------------


def test_every_engine_result_round_trips_through_json() -> None:
    definition: WorkflowDefinition = Approval.definition()
    instances = [start(Approval, {"who": "ada"}).instance]
    instances.append(complete(Approval, instances[-1], "receive", Ok("ok", {"n": 1})).instance)
    instances.append(complete(Approval, instances[-1], "approve", Async(30), seconds=2).instance)
    instances.append(engine.add_timer(definition, instances[-1], "approve", 5, now=at(3)).instance)
    instances.append(engine.fire_timers(definition, instances[-1], at(8)).instance)

    for instance in instances:
        assert Instance.from_json(instance.to_json()) == instance
    assert [i.revision for i in instances] == [1, 2, 3, 4, 5]
    assert isinstance(instances[3].timers[-1], Timer)


class Chained(Step):
    events = ("ok",)


#: A long linear workflow: one class per step, each its own key.
_CHAIN = [
    type(f"Chained{i:03d}", (Chained,), {"__qualname__": f"Chained{i:03d}"}) for i in range(60)
]


class LongChain(Workflow):
    unique = Unique(key="test")
    start = _CHAIN[0]
    transitions = {
        **{(step, "ok"): following for step, following in itertools.pairwise(_CHAIN)},
        (_CHAIN[-1], "ok"): Done,
    }


def test_a_long_run_keeps_plain_values_and_shares_what_did_not_change() -> None:
    instance = start(LongChain).instance
    for index in range(len(_CHAIN)):
        (step,) = instance.active_steps
        before = instance
        instance = complete(LongChain, before, step, Ok("ok", {"n": index})).instance
        # A step adds itself, and only itself, to each value; the rest is kept as it was.
        assert type(instance.completed_steps) is frozenset
        ended = {"done"} if index == len(_CHAIN) - 1 else set()
        assert instance.completed_steps == before.completed_steps | {step} | ended
        assert type(instance.execution_history) is tuple
        old = len(before.execution_history)
        assert instance.execution_history[:old] == before.execution_history
        assert [entry.step for entry in instance.execution_history[old:]] == [step, *ended]
        assert all(map(operator.is_, instance.execution_history, before.execution_history))
        assert type(instance.context.steps) is FrozenDict
        assert instance.context.steps == {
            **before.context.steps,
            step: {"n": index},
            **{key: {} for key in ended},
        }
        assert before.context.steps.get(step) is None  # the earlier value is untouched
        if instance.active_steps:
            # A call that completes nothing keeps the very same set: a storage compares by
            # identity first.
            (running,) = instance.active_steps
            failed = complete(LongChain, instance, running, Error("boom")).instance
            assert failed.status is Status.FAILED
            assert failed.completed_steps is instance.completed_steps

    assert instance.status is Status.COMPLETED
    assert instance.completed_steps == {entry.step for entry in instance.execution_history}
    assert len(instance.completed_steps) == len(_CHAIN) + 1
    assert json.loads(json.dumps(instance.context.steps)) == instance.context.steps
    assert Instance.from_json(instance.to_json()) == instance
