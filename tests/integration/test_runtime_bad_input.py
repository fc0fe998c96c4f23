"""Bad input on every public call: the specific error, and nothing written.

Each test opens an app on a SQLite file holding instances in every state
(waiting, completed, failed, cancelled, and one with two steps waiting for the
same event), makes one bad call, then reads the whole storage back and
compares it with what was there before.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from hephaestus import (
    AlreadyRunningError,
    AmbiguousEventError,
    Context,
    ContextSerializationError,
    Done,
    Error,
    HephaestusError,
    InstanceNotFoundError,
    InstanceNotWaitingError,
    InvalidBusinessKeyError,
    InvalidDelayError,
    InvalidEventError,
    InvalidVersionsError,
    Ok,
    Status,
    Step,
    TimerNotFoundError,
    Unique,
    WaitForEvent,
    Workflow,
    WorkflowDefinitionError,
)
from hephaestus.app import Hephaestus
from hephaestus.runners.base import TimerHandle
from hephaestus.runners.local import LocalRunner

pytestmark = pytest.mark.both_runners


class RtBadGate(WaitForEvent):
    key = "gate"


class RtBadFlow(Workflow):
    unique = Unique(key="rtbad")
    start = (RtBadGate, {"event_name": "go", "timeout_ms": 600_000})
    transitions = {(RtBadGate, "go"): Done, (RtBadGate, "timeout"): Done}


class RtBadBroken(Step):
    events = ("fixed",)
    key = "broken"

    def execute(self, instance: Any, config: Mapping[str, Any] | None, context: Context) -> Error:
        return Error("always broken")


class RtBadBrokenFlow(Workflow):
    unique = Unique(key="rtbad")
    start = RtBadBroken
    transitions = {(RtBadBroken, "fixed"): Done}


class RtAmbSplit(Step):
    events = ("split",)
    key = "amb_split"

    def execute(self, instance: Any, config: Mapping[str, Any] | None, context: Context) -> Ok:
        return Ok("split")


class RtAmbLeft(WaitForEvent):
    key = "amb_left"


class RtAmbRight(WaitForEvent):
    key = "amb_right"


class RtAmbJoin(Step):
    events = ("joined",)
    key = "amb_join"

    def execute(self, instance: Any, config: Mapping[str, Any] | None, context: Context) -> str:
        return "joined"


class RtAmbiguousFlow(Workflow):
    unique = Unique(key="rtamb")
    start = RtAmbSplit
    transitions = {
        (RtAmbSplit, "split"): [
            (RtAmbLeft, {"event_name": "approved"}),
            (RtAmbRight, {"event_name": "approved"}),
        ],
        (RtAmbLeft, "approved"): RtAmbJoin,
        (RtAmbRight, "approved"): RtAmbJoin,
        (RtAmbJoin, "joined"): Done,
    }


class RtBadV1(Workflow):
    unique = Unique(key="rtbadv")
    version = 1
    start = (RtBadGate, {"event_name": "go"})
    transitions = {(RtBadGate, "go"): Done}


class RtBadUmbrella(Workflow):
    unique = Unique(key="rtbadv")
    versions = {1: RtBadV1}
    current = 1


class RtBadAbstract(Workflow):
    """Shares a key with its subclasses but is no workflow of its own."""

    unique = Unique(key="rtbad")


WAITING = "rtbad::waiting"
COMPLETED = "rtbad::completed"
FAILED = "rtbad::failed"
CANCELLED = "rtbad::cancelled"
AMBIGUOUS = "rtamb::both"
MISSING = "rtbad::missing"

BAD_IDS: list[Any] = [
    "nope",
    "rtbad:x",
    "rtbad::",
    "::x",
    "RtBad::x",
    "rtbad::x:",
    "rtbad::a/b",
    "rtbad::\u00e9",
    "rtbad::a b",
    "rtbad::x\n",
    "rtbad::x::y",
    "rtbad::x::0123456789",
    42,
    None,
]


@pytest.fixture
async def populated(open_app: Any, db_path: Path, wait_for: Any) -> Hephaestus:
    app: Hephaestus = await open_app(db_path)
    await app.start_instance(RtBadFlow, {"n": 1}, id=WAITING)
    await app.start_instance(RtBadFlow, {"n": 2}, id=COMPLETED)
    await app.start_instance(RtBadBrokenFlow, {"n": 3}, id=FAILED)
    await app.start_instance(RtBadFlow, {"n": 4}, id=CANCELLED)
    await app.start_instance(RtAmbiguousFlow, {"n": 5}, id=AMBIGUOUS)
    for iid in (WAITING, COMPLETED, CANCELLED):
        await wait_for(app, iid, lambda i: i.status is Status.WAITING)
    await app.resume(COMPLETED, "go")
    await app.cancel(CANCELLED)
    await wait_for(app, COMPLETED, lambda i: i.status is Status.COMPLETED)
    await wait_for(app, FAILED, lambda i: i.status is Status.FAILED)
    await wait_for(app, AMBIGUOUS, lambda i: i.waiting_steps == {"amb_left", "amb_right"})
    runner = app.runner
    assert isinstance(runner, LocalRunner)
    await runner.wait_idle(5)
    return app


Call = Callable[[Hephaestus], Awaitable[Any]]


async def _assert_refused(
    app: Hephaestus,
    snapshot: Any,
    call: Call,
    error: type[BaseException],
    match: str | None = None,
) -> BaseException:
    before = await snapshot(app.storage)
    with pytest.raises(error, match=match) as raised:
        await call(app)
    runner = app.runner
    assert isinstance(runner, LocalRunner)
    await runner.wait_idle(5)
    assert runner.active_instance_ids == frozenset()
    after = await snapshot(app.storage)
    assert len(after) == len(before) == 5
    assert after == before
    return raised.value


# --- malformed ids ------------------------------------------------------------------------

ID_CALLS: dict[str, Callable[[Hephaestus, Any], Awaitable[Any]]] = {
    "start_instance": lambda app, bad: app.start_instance(RtBadFlow, {}, id=bad),
    "resume": lambda app, bad: app.resume(bad, "go"),
    "get": lambda app, bad: app.get(bad),
    "cancel": lambda app, bad: app.cancel(bad),
    "schedule_resume": lambda app, bad: app.schedule_resume(bad, "gate", 1),
}


@pytest.mark.parametrize("call", list(ID_CALLS))
async def test_a_malformed_id_is_refused_by_every_call(
    populated: Hephaestus, snapshot: Any, call: str
) -> None:
    for bad in BAD_IDS:
        error = await _assert_refused(
            populated,
            snapshot,
            lambda app, bad=bad: ID_CALLS[call](app, bad),
            InvalidBusinessKeyError,
        )
        assert "key::value" in str(error)


@pytest.mark.parametrize(
    "value", ["Not Valid", "a::b", "", ":x", "x/y", "\u00e9", pytest.param("x" * 201, id="long")]
)
async def test_a_malformed_business_value_is_refused_by_the_facade(
    populated: Hephaestus, snapshot: Any, value: str
) -> None:
    await _assert_refused(
        populated, snapshot, lambda app: RtBadFlow.start(value, {}), InvalidBusinessKeyError
    )
    for call in (RtBadFlow.get, RtBadFlow.cancel):
        await _assert_refused(
            populated, snapshot, lambda app, call=call: call(value), InvalidBusinessKeyError
        )
    await _assert_refused(
        populated, snapshot, lambda app: RtBadFlow.resume(value, "go"), InvalidBusinessKeyError
    )


# --- instances that do not exist or cannot take the call ----------------------------------

REFUSED: dict[str, tuple[Call, type[BaseException], str | None]] = {
    "get unknown": (lambda app: app.get(MISSING), InstanceNotFoundError, MISSING),
    "resume unknown": (lambda app: app.resume(MISSING, "go"), InstanceNotFoundError, MISSING),
    "cancel unknown": (lambda app: app.cancel(MISSING), InstanceNotFoundError, MISSING),
    "schedule_resume unknown": (
        lambda app: app.schedule_resume(MISSING, "gate", 1),
        InstanceNotFoundError,
        MISSING,
    ),
    "facade get unknown": (lambda app: RtBadFlow.get("missing"), InstanceNotFoundError, MISSING),
    "event nobody waits for": (
        lambda app: app.resume(WAITING, "shipped"),
        InvalidEventError,
        "no waiting step declares event 'shipped'",
    ),
    "empty event": (lambda app: app.resume(WAITING, ""), InvalidEventError, None),
    "event for a step that is not waiting": (
        lambda app: app.resume(WAITING, "go", step="amb_left"),
        InvalidEventError,
        "has no step 'amb_left'",
    ),
    "event the named step does not declare": (
        lambda app: app.resume(AMBIGUOUS, "go", step="amb_left"),
        InvalidEventError,
        "does not declare 'go'",
    ),
    "ambiguous event": (
        lambda app: app.resume(AMBIGUOUS, "approved"),
        AmbiguousEventError,
        "pass step=",
    ),
    "resume completed": (
        lambda app: app.resume(COMPLETED, "go"),
        InstanceNotWaitingError,
        "completed",
    ),
    "resume failed": (lambda app: app.resume(FAILED, "go"), InstanceNotWaitingError, "failed"),
    "resume cancelled": (
        lambda app: app.resume(CANCELLED, "go"),
        InstanceNotWaitingError,
        "cancelled",
    ),
    "cancel completed": (lambda app: app.cancel(COMPLETED), InstanceNotWaitingError, "completed"),
    "cancel failed": (lambda app: app.cancel(FAILED), InstanceNotWaitingError, "failed"),
    "cancel cancelled": (lambda app: app.cancel(CANCELLED), InstanceNotWaitingError, "cancelled"),
    "schedule_resume on a finished instance": (
        lambda app: app.schedule_resume(COMPLETED, "gate", 1),
        InstanceNotWaitingError,
        "completed",
    ),
    "schedule_resume of an unknown step": (
        lambda app: app.schedule_resume(WAITING, "nosuchstep", 1),
        InvalidEventError,
        "no step 'nosuchstep'",
    ),
    "schedule_resume with an undeclared event": (
        lambda app: app.schedule_resume(WAITING, "gate", 1, event="shipped"),
        InvalidEventError,
        "does not declare 'shipped'",
    ),
    "cancel_timer of a timer that never existed": (
        lambda app: app.cancel_timer(TimerHandle(WAITING, "gate@999", "gate", datetime.now(UTC))),
        TimerNotFoundError,
        "gate@999",
    ),
    "start over an active instance": (
        lambda app: app.start_instance(RtBadFlow, {"n": 9}, id=WAITING),
        AlreadyRunningError,
        WAITING,
    ),
    "facade start over an active instance": (
        lambda app: RtBadFlow.start("waiting", {"n": 9}),
        AlreadyRunningError,
        WAITING,
    ),
}


@pytest.mark.parametrize("case", list(REFUSED))
async def test_a_call_the_instance_cannot_take_is_refused(
    populated: Hephaestus, snapshot: Any, case: str
) -> None:
    call, error, match = REFUSED[case]
    await _assert_refused(populated, snapshot, call, error, match)


async def test_the_refused_calls_left_every_instance_usable(
    populated: Hephaestus, snapshot: Any, wait_for: Any
) -> None:
    app = populated
    for call, error, _ in REFUSED.values():
        with pytest.raises(error):
            await call(app)

    await app.resume(AMBIGUOUS, "approved", step="amb_left")
    await app.resume(AMBIGUOUS, "approved", step=RtAmbRight)
    await app.resume(WAITING, "go")
    for iid in (AMBIGUOUS, WAITING):
        done = await wait_for(app, iid, lambda i: i.status.is_final)
        assert done.status is Status.COMPLETED, done.error


# --- context, workflow and version --------------------------------------------------------


class _NotJson:
    pass


@pytest.mark.parametrize(
    ("context", "named"),
    [
        ({"when": datetime(2026, 1, 1, tzinfo=UTC)}, "'when'"),
        ({"order": {"total": Decimal("9.99")}}, "'total'"),
        ({"items": [1, _NotJson()]}, "'items'"),
        ({"ratio": float("nan")}, "'ratio'"),
        ({"by_id": {1: "x"}}, "non-str key 1"),
        (["not", "a", "dict"], "must be a dict"),
    ],
)
async def test_a_context_that_is_not_json_is_refused_naming_the_key(
    populated: Hephaestus, snapshot: Any, context: Any, named: str
) -> None:
    error = await _assert_refused(
        populated,
        snapshot,
        lambda app: app.start_instance(RtBadFlow, context, id="rtbad::fresh"),
        ContextSerializationError,
    )
    assert named in str(error)
    await _assert_refused(
        populated,
        snapshot,
        lambda app: RtBadFlow.start("fresh", context),
        ContextSerializationError,
    )


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (
            lambda app: app.start_instance(RtBadUmbrella, {}, id="rtbadv::x", version=7),
            InvalidVersionsError,
        ),
        (lambda app: RtBadUmbrella.start("x", {}, version=7), InvalidVersionsError),
        (
            lambda app: app.start_instance(RtBadFlow, {}, id="rtbad::fresh", version=2),
            InvalidVersionsError,
        ),
        (lambda app: app.start_instance(RtBadGate, {}, id="rtbad::fresh"), WorkflowDefinitionError),
        (
            lambda app: app.start_instance("RtBadFlow", {}, id="rtbad::fresh"),
            WorkflowDefinitionError,
        ),
        (lambda app: app.start_instance(object, {}, id="rtbad::fresh"), WorkflowDefinitionError),
        (
            lambda app: app.start_instance(RtBadAbstract, {}, id="rtbad::fresh"),
            WorkflowDefinitionError,
        ),
    ],
    ids=[
        "unknown umbrella version",
        "unknown umbrella version through the facade",
        "version of a concrete workflow",
        "a step",
        "a name",
        "a plain class",
        "an abstract workflow",
    ],
)
async def test_a_start_of_something_that_cannot_run_is_refused(
    populated: Hephaestus, snapshot: Any, call: Call, error: type[BaseException]
) -> None:
    await _assert_refused(populated, snapshot, call, error)


@pytest.mark.parametrize(
    ("filters", "named"),
    [
        ({"bogus": 1}, "bogus"),
        ({"status": "bogus"}, "bogus"),
        ({"status_in": ["waiting", "sleeping"]}, "sleeping"),
        ({"limit": -1}, "limit"),
    ],
    ids=["unknown filter", "unknown status", "unknown status in status_in", "negative limit"],
)
async def test_a_bad_list_filter_is_refused(
    populated: Hephaestus, snapshot: Any, filters: dict[str, Any], named: str
) -> None:
    error = await _assert_refused(
        populated, snapshot, lambda app: app.list(**filters), HephaestusError
    )
    assert named in str(error)


async def test_list_filters_that_are_well_formed_work(populated: Hephaestus) -> None:
    app = populated
    assert [i.id for i in await app.list(status="waiting")] == [AMBIGUOUS, WAITING]
    assert [i.id for i in await app.list(status_in=["failed", "cancelled"])] == [
        CANCELLED,
        FAILED,
    ]
    assert [i.id for i in await app.list(workflow=RtBadFlow)] == [CANCELLED, COMPLETED, WAITING]
    assert [i.id for i in await app.list(limit=2)] == [AMBIGUOUS, CANCELLED]
    assert [i.id for i in await app.list(after=CANCELLED, limit=2)] == [COMPLETED, FAILED]


# --- refused before reaching the instance --------------------------------------------------


@pytest.mark.parametrize("delay", [-1, float("nan"), float("inf"), 1e12, "soon"])
async def test_schedule_resume_with_a_bad_delay_is_refused_and_harmless(
    populated: Hephaestus, snapshot: Any, delay: Any
) -> None:
    for _ in range(4):
        await _assert_refused(
            populated,
            snapshot,
            lambda app: app.schedule_resume(WAITING, "gate", delay),
            InvalidDelayError,
            "delay",
        )
    assert (await populated.get(WAITING)).status is Status.WAITING


async def test_telemetry_metadata_that_is_not_json_is_refused(
    populated: Hephaestus, snapshot: Any
) -> None:
    await _assert_refused(
        populated,
        snapshot,
        lambda app: app.start_instance(
            RtBadFlow, {}, id="rtbad::fresh", telemetry_metadata={"trace": _NotJson()}
        ),
        ContextSerializationError,
        "trace",
    )
