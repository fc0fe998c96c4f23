"""`engine.retry`: a failed instance runs again from the steps that were running."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from hephaestus import (
    Async,
    Context,
    Done,
    Error,
    InstanceNotFailedError,
    NothingToRetryError,
    Ok,
    Retry,
    RetryStepMissingError,
    Status,
    Step,
    Unique,
    WaitForEvent,
    Workflow,
)
from hephaestus.core import engine
from hephaestus.core.commands import RunStep
from hephaestus.core.facts import InstanceRetried
from hephaestus.core.instance import Instance

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


class ReFetch(Step):
    events = ("fetched",)

    def execute(self, instance: Any, config: Any, context: Any) -> Ok:
        return Ok("fetched")


class ReCharge(Step):
    events = ("charged",)
    retry = Retry(max_attempts=2, backoff="constant", base=1.0)

    def execute(self, instance: Any, config: Any, context: Any) -> Ok:
        return Ok("charged")


class ReNotify(Step):
    events = ("notified",)

    def execute(self, instance: Any, config: Any, context: Any) -> Ok:
        return Ok("notified")


class ReJoin(Step):
    events = ("joined",)

    def execute(self, instance: Any, config: Any, context: Any) -> Ok:
        return Ok("joined")


class RetryFlow(Workflow):
    unique = Unique(key="retry")
    start = ReFetch
    transitions = {
        (ReFetch, "fetched"): [ReCharge, (WaitForEvent, {"event_name": "approved"})],
        (ReCharge, "charged"): ReJoin,
        (WaitForEvent, "approved"): ReJoin,
        (ReJoin, "joined"): Done,
    }


class OtherFlow(Workflow):
    unique = Unique(key="other")
    start = ReNotify
    transitions = {(ReNotify, "notified"): Done}


DEFINITION = RetryFlow.definition()


def failed_instance() -> Instance:
    """Fetch done; the approval waits; the charge failed on both of its attempts."""
    instance = engine.new_instance(
        DEFINITION, instance_id="retry::1", context=Context.new({"n": 1}), now=T0
    ).instance
    instance = engine.complete_step(
        DEFINITION, instance, "re_fetch", Ok("fetched", {"rows": 3}), attempt=1, now=at(1)
    ).instance
    instance = engine.complete_step(
        DEFINITION, instance, "wait_for_event", Async(), attempt=1, now=at(2)
    ).instance
    instance = engine.complete_step(
        DEFINITION, instance, "re_charge", Error("card declined"), attempt=1, now=at(3)
    ).instance
    instance = engine.fire_timers(DEFINITION, instance, at(5)).instance
    instance = engine.complete_step(
        DEFINITION, instance, "re_charge", Error("card declined"), attempt=2, now=at(6)
    ).instance
    assert instance.status is Status.FAILED
    return instance


def test_retry_runs_the_failed_and_the_interrupted_steps_again_from_attempt_one() -> None:
    failed = failed_instance()
    advance = engine.retry(DEFINITION, failed, now=at(10))
    retried = advance.instance
    assert retried.status is Status.RUNNING
    assert retried.error is None
    assert retried.active_steps == {"re_charge", "wait_for_event"}
    assert retried.waiting_steps == frozenset()
    assert retried.attempts == {"re_charge": 1, "wait_for_event": 1}
    assert set(advance.commands) == {RunStep("re_charge", 1), RunStep("wait_for_event", 1)}
    assert retried.revision == failed.revision + 1
    assert retried.updated_at == at(10)
    assert advance.facts == (InstanceRetried(("re_charge", "wait_for_event"), failed.error),)


def test_retry_keeps_context_completed_steps_and_history_and_records_itself() -> None:
    failed = failed_instance()
    retried = engine.retry(DEFINITION, failed, now=at(10)).instance
    assert retried.context == failed.context
    assert retried.completed_steps == failed.completed_steps
    assert retried.execution_history[: len(failed.execution_history)] == (failed.execution_history)
    added = retried.execution_history[len(failed.execution_history) :]
    assert [(e.step, e.event, e.attempt) for e in added] == [
        ("re_charge", engine.RETRY_EVENT, 2),
        ("wait_for_event", engine.RETRY_EVENT, 1),
    ]
    assert all(e.context_updates == {"error": failed.error} for e in added)
    assert all(e.targets == () and e.timestamp == at(10) for e in added)
    assert "card declined" in (failed.error or "")


def test_a_retried_instance_then_completes() -> None:
    instance = engine.retry(DEFINITION, failed_instance(), now=at(10)).instance
    instance = engine.complete_step(
        DEFINITION, instance, "re_charge", Ok("charged"), attempt=1, now=at(11)
    ).instance
    instance = engine.complete_step(
        DEFINITION, instance, "wait_for_event", Async(), attempt=1, now=at(12)
    ).instance
    instance = engine.resume(DEFINITION, instance, "approved", now=at(13)).instance
    instance = engine.complete_step(
        DEFINITION, instance, "re_join", Ok("joined"), attempt=1, now=at(14)
    ).instance
    assert instance.status is Status.COMPLETED


@pytest.mark.parametrize("status", [s for s in Status if s is not Status.FAILED])
def test_only_a_failed_instance_is_retried(status: Status) -> None:
    instance = failed_instance().evolve(status=status)
    with pytest.raises(InstanceNotFailedError, match=rf"retry::1 is {status.value}, not failed"):
        engine.retry(DEFINITION, instance, now=at(10))


def test_a_failure_with_no_step_running_has_nothing_to_retry() -> None:
    instance = failed_instance().evolve(active_steps=frozenset(), waiting_steps=frozenset())
    with pytest.raises(NothingToRetryError, match="retry::1 failed with no step running"):
        engine.retry(DEFINITION, instance, now=at(10))


def test_a_step_the_workflow_no_longer_has_cannot_run_again() -> None:
    with pytest.raises(RetryStepMissingError, match=r"retry::1.*no step 're_charge'") as caught:
        engine.retry(OtherFlow.definition(), failed_instance(), now=at(10))
    assert "start the id again" in str(caught.value)


def test_retry_round_trips_through_json() -> None:
    retried = engine.retry(DEFINITION, failed_instance(), now=at(10)).instance
    assert Instance.from_json(retried.to_json()) == retried
