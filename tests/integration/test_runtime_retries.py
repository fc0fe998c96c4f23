"""Failing steps: retries with backoff, exceptions, per-attempt timeouts, failed instances."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import pytest

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
    Workflow,
)
from hephaestus.app import Hephaestus

# What each attempt saw: instance id -> [(context.attempt, context.idempotency_key), ...].
RT_ATTEMPTS: defaultdict[str, list[tuple[int, str]]] = defaultdict(list)
# Instance ids whose step after the failing one ran.
RT_REACHED: list[str] = []


pytestmark = pytest.mark.both_runners


def _seen(instance: Instance, context: Context) -> int:
    RT_ATTEMPTS[instance.id].append((context.attempt, context.idempotency_key))
    return context.attempt


class RtAfterFlaky(Step):
    events = ("finished",)
    key = "after"

    def execute(
        self, instance: Instance, config: Mapping[str, Any] | None, context: Context
    ) -> str:
        RT_REACHED.append(instance.id)
        return "finished"


class RtFlakyCharge(Step):
    """Raises on the first attempt, returns Error on the second, succeeds on the third."""

    events = ("charged",)
    key = "flaky"
    retry = Retry(max_attempts=3, backoff="constant", base=0.05)

    def execute(
        self, instance: Instance, config: Mapping[str, Any] | None, context: Context
    ) -> Ok | Error:
        attempt = _seen(instance, context)
        if attempt == 1:
            raise ConnectionError("gateway unreachable")
        if attempt == 2:
            return Error("gateway busy")
        return Ok("charged", {"attempt": attempt})


class RtFlakyFlow(Workflow):
    unique = Unique(key="rtflaky")
    start = RtFlakyCharge
    transitions = {(RtFlakyCharge, "charged"): RtAfterFlaky, (RtAfterFlaky, "finished"): Done}


class RtAlwaysDeclined(Step):
    events = ("charged",)
    key = "declined"
    retry = Retry(max_attempts=2, backoff="constant", base=0.02)

    async def execute(
        self, instance: Instance, config: Mapping[str, Any] | None, context: Context
    ) -> Error:
        _seen(instance, context)
        return Error("card declined")


class RtDeclinedFlow(Workflow):
    unique = Unique(key="rtdeclined")
    start = RtAlwaysDeclined
    transitions = {
        (RtAlwaysDeclined, "charged"): RtAfterFlaky,
        (RtAfterFlaky, "finished"): Done,
    }


class RtAlwaysRaises(Step):
    events = ("charged",)
    key = "raises"

    def execute(self, instance: Instance, config: Mapping[str, Any] | None, context: Context) -> Ok:
        _seen(instance, context)
        raise ValueError("no such card")


class RtRaisesFlow(Workflow):
    unique = Unique(key="rtraises")
    start = RtAlwaysRaises
    transitions = {(RtAlwaysRaises, "charged"): RtAfterFlaky, (RtAfterFlaky, "finished"): Done}


async def test_a_step_failing_twice_then_succeeding_completes_on_attempt_three(
    app: Hephaestus, wait_for: Any
) -> None:
    iid = await app.start_instance(RtFlakyFlow, {}, id="rtflaky::retry1")
    done = await wait_for(app, iid, lambda i: i.status.is_final)

    assert done.status is Status.COMPLETED, done.error
    assert RT_ATTEMPTS[iid] == [
        (1, f"{iid}/flaky/1"),
        (2, f"{iid}/flaky/2"),
        (3, f"{iid}/flaky/3"),
    ]
    (entry,) = [e for e in done.execution_history if e.step == "flaky"]
    assert entry.attempt == 3
    assert entry.event == "charged"
    assert entry.duration > 0
    assert done.context.steps["flaky"] == {"attempt": 3}
    assert RT_REACHED.count(iid) == 1
    # The running attempt is not part of the stored context.
    assert "attempt" not in done.to_dict()["context"]


async def test_a_step_that_always_fails_fails_the_instance(app: Hephaestus, wait_for: Any) -> None:
    iid = await app.start_instance(RtDeclinedFlow, {}, id="rtdeclined::fail1")
    done = await wait_for(app, iid, lambda i: i.status.is_final)

    assert done.status is Status.FAILED
    assert done.error is not None
    assert "RtAlwaysDeclined" in done.error
    assert "2 attempts" in done.error
    assert "card declined" in done.error
    assert [attempt for attempt, _ in RT_ATTEMPTS[iid]] == [1, 2]
    assert done.execution_history == ()
    assert done.timers == ()
    assert iid not in RT_REACHED
    assert await app.list(status="failed") == [done]


async def test_a_raised_exception_fails_like_an_error(app: Hephaestus, wait_for: Any) -> None:
    iid = await app.start_instance(RtRaisesFlow, {}, id="rtraises::fail1")
    done = await wait_for(app, iid, lambda i: i.status.is_final)

    assert done.status is Status.FAILED
    assert done.error is not None
    assert "RtAlwaysRaises" in done.error
    assert "1 attempt" in done.error
    assert "ValueError" in done.error
    assert "no such card" in done.error
    assert [attempt for attempt, _ in RT_ATTEMPTS[iid]] == [1]
    assert iid not in RT_REACHED


# --- per-attempt timeouts ----------------------------------------------------------------


class RtSlowOnce(Step):
    """Hangs on its first attempt; the timeout cuts it short and the retry succeeds."""

    events = ("answered",)
    key = "slow_once"
    timeout = 0.1
    retry = Retry(max_attempts=2, backoff="constant", base=0.01)

    async def execute(
        self, instance: Instance, config: Mapping[str, Any] | None, context: Context
    ) -> Ok:
        if _seen(instance, context) == 1:
            await asyncio.sleep(30)
        return Ok("answered", {"attempt": context.attempt})


class RtSlowOnceFlow(Workflow):
    unique = Unique(key="rtslowonce")
    start = RtSlowOnce
    transitions = {(RtSlowOnce, "answered"): Done}


class RtAlwaysSlow(Step):
    events = ("answered",)
    key = "always_slow"
    timeout = 0.05

    async def execute(
        self, instance: Instance, config: Mapping[str, Any] | None, context: Context
    ) -> Ok:
        _seen(instance, context)
        await asyncio.sleep(30)
        return Ok("answered")


class RtAlwaysSlowFlow(Workflow):
    unique = Unique(key="rtalwaysslow")
    start = RtAlwaysSlow
    transitions = {(RtAlwaysSlow, "answered"): Done}


async def test_a_timed_out_attempt_is_retried(app: Hephaestus, wait_for: Any) -> None:
    iid = await app.start_instance(RtSlowOnceFlow, {}, id="rtslowonce::t1")
    done = await wait_for(app, iid, lambda i: i.status.is_final)

    assert done.status is Status.COMPLETED, done.error
    assert [attempt for attempt, _ in RT_ATTEMPTS[iid]] == [1, 2]
    (entry, _done) = done.execution_history
    assert (entry.step, entry.attempt) == ("slow_once", 2)
    assert done.context.steps["slow_once"] == {"attempt": 2}


async def test_a_step_that_always_times_out_fails_with_a_timeout_message(
    app: Hephaestus, wait_for: Any
) -> None:
    iid = await app.start_instance(RtAlwaysSlowFlow, {}, id="rtalwaysslow::t1")
    done = await wait_for(app, iid, lambda i: i.status.is_final)

    assert done.status is Status.FAILED
    assert done.error is not None
    assert "RtAlwaysSlow" in done.error
    assert "timed out after 0.05s" in done.error
    assert done.execution_history == ()


# --- results that break the rules ---------------------------------------------------------


class RtBadResult(Step):
    """Returns whatever the instance's context says, to break a rule on purpose."""

    events = ("fine",)
    key = "bad_result"
    retry = Retry(max_attempts=3, backoff="constant", base=0.01)

    def execute(
        self, instance: Instance, config: Mapping[str, Any] | None, context: Context
    ) -> Any:
        _seen(instance, context)
        kind = context.initial["kind"]
        if kind == "undeclared":
            return Ok("surprise")
        if kind == "notjson":
            return Ok("fine", {"when": object()})
        return None


class RtBadResultFlow(Workflow):
    unique = Unique(key="rtbadresult")
    start = RtBadResult
    transitions = {(RtBadResult, "fine"): RtAfterFlaky, (RtAfterFlaky, "finished"): Done}


@pytest.mark.parametrize(
    ("kind", "named"),
    [
        ("undeclared", "UndeclaredEventError: step RtBadResult emitted 'surprise'"),
        ("notjson", "ContextSerializationError"),
        ("nothing", "returned None"),
    ],
)
async def test_a_result_that_breaks_a_rule_fails_the_instance_without_retrying(
    app: Hephaestus, wait_for: Any, kind: str, named: str
) -> None:
    iid = await app.start_instance(RtBadResultFlow, {"kind": kind}, id=f"rtbadresult::{kind}1")
    done = await wait_for(app, iid, lambda i: i.status.is_final)

    assert done.status is Status.FAILED
    assert done.error is not None
    assert named in done.error
    assert "RtBadResult" in done.error
    assert [attempt for attempt, _ in RT_ATTEMPTS[iid]] == [1]
    assert done.execution_history == ()
    assert iid not in RT_REACHED
    assert Instance.from_json(done.to_json()) == done
