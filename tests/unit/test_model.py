"""Steps, outcomes, retry policies, contexts and instances: the values the engine works on."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from hephaestus import (
    Async,
    Context,
    ContextSerializationError,
    Debug,
    Done,
    Error,
    ExecutionEntry,
    Instance,
    InvalidStepError,
    Ok,
    Retry,
    Status,
    Step,
    Wait,
    WaitForEvent,
)
from hephaestus.core.instance import Timer
from hephaestus.core.step import snake_case
from hephaestus.steps import delay_seconds

CREATED = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)


def make_instance(**changes: Any) -> Instance:
    """A waiting order instance with every field filled in."""
    context = Context.new(
        {
            "item_count": 3,
            "customer": "Zoë Ångström",
            "note": "日本語 📦",
            "items": ("widget", "gadget"),
            "prices": [9.99, 0.1, 1e-7, 12],
            "gift": False,
            "coupon": None,
        }
    ).with_updates("validate_order", {"validated_at": "2026-01-02T03:04:05Z", "ok": True})
    fields: dict[str, Any] = {
        "id": "orderid::abc123",
        "workflow": "shop.flows.OrderFlow",
        "workflow_version": 2,
        "status": Status.WAITING,
        "context": context,
        "created_at": CREATED,
        "updated_at": CREATED + timedelta(seconds=1, microseconds=500),
        "step_configs": {"wait": {"duration": 2, "unit": "day"}},
        "active_steps": frozenset({"reserve_stock"}),
        "completed_steps": frozenset({"validate_order", "charge_payment"}),
        "waiting_steps": frozenset({"wait"}),
        "runtime_metadata": {"trace_id": "t-1", "nested": {"list": [1, 2.5, None, True]}},
        "telemetry_metadata": {"tenant": "acme", "région": "eu"},
        "execution_history": (
            ExecutionEntry(
                step="validate_order",
                event="valid",
                timestamp=CREATED,
                context_updates={"validated_at": "2026-01-02T03:04:05Z", "ok": True},
                attempt=1,
                duration=0.012345,
            ),
            ExecutionEntry(
                step="charge_payment",
                event="charged",
                timestamp=CREATED + timedelta(seconds=1),
                context_updates=None,
                attempt=3,
                duration=1.25,
            ),
        ),
        "attempts": {"reserve_stock": 2},
        "timers": (
            Timer(
                id="wait-1",
                step="wait",
                due_at=CREATED + timedelta(days=2),
                kind="resume",
                event="timeout",
            ),
            Timer(
                id="retry-1",
                step="reserve_stock",
                due_at=CREATED + timedelta(seconds=4),
                kind="retry",
            ),
        ),
        "error": None,
        "revision": 7,
    }
    fields.update(changes)
    return Instance(**fields)


# -- Retry ----------------------------------------------------------------------------------


class TestRetry:
    def test_default_tries_once(self) -> None:
        assert Retry().max_attempts == 1

    def test_exponential_doubles_up_to_the_cap(self) -> None:
        retry = Retry(max_attempts=10, backoff="exponential", base=0.5, max_backoff=3.0)
        assert [retry.delay(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]

    def test_linear_grows_by_base_up_to_the_cap(self) -> None:
        retry = Retry(max_attempts=10, backoff="linear", base=2.0, max_backoff=7.0)
        assert [retry.delay(n) for n in range(1, 6)] == [2.0, 4.0, 6.0, 7.0, 7.0]

    def test_constant_waits_base_within_the_cap(self) -> None:
        assert [Retry(backoff="constant", base=1.5).delay(n) for n in (1, 2, 9)] == [1.5] * 3
        assert Retry(backoff="constant", base=10.0, max_backoff=4.0).delay(1) == 4.0

    def test_zero_base_retries_at_once(self) -> None:
        assert Retry(max_attempts=3, base=0).delay(2) == 0

    def test_exponential_after_very_many_attempts_stays_at_the_cap(self) -> None:
        retry = Retry(max_attempts=100_000, backoff="exponential", base=0.5, max_backoff=30.0)
        assert retry.delay(50_000) == 30.0

    @pytest.mark.parametrize(
        ("kwargs", "problem"),
        [
            ({"max_attempts": 0}, r"max_attempts must be an int >= 1, got 0"),
            ({"max_attempts": -3}, r"max_attempts must be an int >= 1, got -3"),
            ({"max_attempts": 2.5}, r"max_attempts must be an int >= 1, got 2.5"),
            ({"max_attempts": "3"}, r"max_attempts must be an int >= 1, got '3'"),
            ({"max_attempts": True}, r"max_attempts must be an int >= 1, got True"),
            ({"backoff": "fibonacci"}, r"backoff must be one of .*got 'fibonacci'"),
            ({"base": -1}, r"Retry.base must be a number of seconds >= 0, got -1"),
            ({"base": "1"}, r"Retry.base must be a number of seconds >= 0, got '1'"),
            ({"base": math.nan}, r"Retry.base must be a number of seconds >= 0, got nan"),
            ({"base": math.inf}, r"Retry.base must be finite"),
            ({"max_backoff": -0.5}, r"Retry.max_backoff must be .* got -0.5"),
        ],
    )
    def test_invalid_arguments(self, kwargs: dict[str, Any], problem: str) -> None:
        with pytest.raises(ValueError, match=problem):
            Retry(**kwargs)

    def test_is_a_frozen_value(self) -> None:
        retry = Retry(max_attempts=3)
        assert retry == Retry(max_attempts=3)
        with pytest.raises(dataclasses.FrozenInstanceError):
            retry.max_attempts = 5  # type: ignore[misc]


class TestOutcomes:
    def test_defaults(self) -> None:
        assert Ok("valid") == Ok("valid", None, None)
        assert Async() == Async(resume_after=None, timeout_event="timeout")
        assert Error("card declined").reason == "card declined"

    def test_are_frozen(self) -> None:
        with pytest.raises(dataclasses.FrozenInstanceError):
            Ok("valid").event = "invalid"  # type: ignore[misc]


# -- Step classes ---------------------------------------------------------------------------


class TestStepClass:
    def test_default_key_is_snake_case_class_name(self) -> None:
        class ValidateOrder(Step):
            events = ("valid",)

        class HTTPCall(Step):
            events = ("ok",)

        assert ValidateOrder.key == "validate_order"
        assert HTTPCall.key == "http_call"

    @pytest.mark.parametrize(
        ("name", "key"),
        [
            ("Done", "done"),
            ("WaitForEvent", "wait_for_event"),
            ("ParseJSONBody", "parse_json_body"),
            ("Step2", "step2"),
            ("already_snake", "already_snake"),
        ],
    )
    def test_snake_case(self, name: str, key: str) -> None:
        assert snake_case(name) == key

    def test_explicit_key_is_kept_and_not_inherited(self) -> None:
        class Charge(Step):
            key = "payment"
            events = ("charged",)

        class ChargeAgain(Charge):
            pass

        assert Charge.key == "payment"
        assert ChargeAgain.key == "charge_again"

    def test_events_list_becomes_a_tuple(self) -> None:
        class Listed(Step):
            events = ["a", "b"]  # type: ignore[assignment]

        assert Listed.events == ("a", "b")

    def test_builtin_steps(self) -> None:
        assert Done.events == ("done",)
        assert Done.terminal
        assert not Wait.terminal
        assert Wait.events == ("timeout",)
        assert Debug.events == ("completed",)
        assert WaitForEvent.events_for({"event_name": "approved"}) == ("approved",)
        assert WaitForEvent.events_for({"event_name": "approved", "timeout_ms": 500}) == (
            "approved",
            "timeout",
        )

    @pytest.mark.parametrize(
        ("events", "problem"),
        [
            ("valid", r"`events` must be a tuple of event names, got 'valid'"),
            (("ok", 1), r"`events` must be a tuple of event names, got \('ok', 1\)"),
            (("has space",), r"event 'has space' is not a valid name"),
            (("1st",), r"event '1st' is not a valid name"),
            (("ok\n",), r"event 'ok\\n' is not a valid name"),
            (("",), r"event '' is not a valid name"),
            (("ok", "ok"), r"`events` lists an event twice"),
        ],
    )
    def test_bad_events(self, events: object, problem: str) -> None:
        with pytest.raises(InvalidStepError, match=rf"step .*BadEvents: {problem}"):
            type("BadEvents", (Step,), {"events": events})

    def test_blocking_by_default_and_not_for_the_builtin_waits(self) -> None:
        class Plain(Step):
            events = ("ok",)

        class Quick(Step):
            events = ("ok",)
            blocking = False

        class QuickOverridden(Quick):
            def execute(self, instance: Any, config: Any, context: Any) -> str:
                return "ok"

        class QuickKept(Quick):
            key = "quick_kept"  # no new execute: still non-blocking

        assert [Plain.blocking, QuickOverridden.blocking] == [True, True]
        assert [Quick.blocking, QuickKept.blocking] == [False, False]
        assert [Wait.blocking, WaitForEvent.blocking] == [False, False]
        assert Done.blocking  # completed by the engine itself: it never runs anyway

    def test_bad_blocking(self) -> None:
        with pytest.raises(InvalidStepError, match="`blocking` must be True or False"):

            class Bad(Step):
                events = ("ok",)
                blocking = "no"  # type: ignore[assignment]

    @pytest.mark.parametrize("key", ["", "has space", 5, "key\n"])
    def test_bad_key(self, key: object) -> None:
        with pytest.raises(InvalidStepError, match=r"BadKey: `key` must be a non-empty name"):
            type("BadKey", (Step,), {"events": ("ok",), "key": key})

    def test_bad_retry(self) -> None:
        with pytest.raises(
            InvalidStepError, match=r"BadRetry: `retry` must be a Retry\(...\), got 3"
        ):
            type("BadRetry", (Step,), {"events": ("ok",), "retry": 3})

    @pytest.mark.parametrize("timeout", [0, -1, True, "10", math.nan])
    def test_bad_timeout(self, timeout: object) -> None:
        with pytest.raises(
            InvalidStepError,
            match=r"BadTimeout: `timeout` must be a positive number of seconds or None",
        ):
            type("BadTimeout", (Step,), {"events": ("ok",), "timeout": timeout})

    @pytest.mark.parametrize("timeout", [10, 0.5, None])
    def test_good_timeout(self, timeout: float | None) -> None:
        step = type("Timed", (Step,), {"events": ("ok",), "timeout": timeout})
        assert step.timeout == timeout

    def test_is_async(self) -> None:
        class SyncStep(Step):
            events = ("ok",)

            def execute(self, instance, config, context):
                return "ok"

        class AsyncStep(Step):
            events = ("ok",)

            async def execute(self, instance, config, context):
                return "ok"

        class InheritsAsync(AsyncStep):
            pass

        assert not SyncStep.is_async
        assert AsyncStep.is_async
        assert InheritsAsync.is_async


class TestBuiltinStepsRun:
    def test_done_emits_done(self) -> None:
        assert Done().execute(make_instance(), None, Context.new()) == Ok("done")

    def test_wait_parks_on_a_timer(self) -> None:
        outcome = Wait().execute(make_instance(), {"duration": 2, "unit": "day"}, Context.new())
        assert outcome == Async(resume_after=172800.0)

    @pytest.mark.parametrize(
        ("config", "seconds"),
        [
            ({"duration": 5}, 5.0),
            ({"duration": 1.5, "unit": "minute"}, 90.0),
            ({"duration": 2, "unit": "hour"}, 7200.0),
            ({"duration": 0, "unit": "day"}, 0.0),
        ],
    )
    def test_delay_seconds(self, config: dict[str, Any], seconds: float) -> None:
        assert delay_seconds(config) == seconds

    @pytest.mark.parametrize(
        "config",
        [None, {}, {"duration": -1}, {"duration": math.inf}, {"duration": 1, "unit": "week"}],
    )
    def test_delay_seconds_rejects(self, config: dict[str, Any] | None) -> None:
        with pytest.raises(ValueError, match=r"Wait"):
            delay_seconds(config)

    def test_wait_for_event_timeout_is_in_seconds(self) -> None:
        step = WaitForEvent()
        config = {"event_name": "approved", "timeout_ms": 1500}
        assert step.execute(make_instance(), config, Context.new()) == Async(resume_after=1.5)
        no_timeout = step.execute(make_instance(), {"event_name": "approved"}, Context.new())
        assert no_timeout == Async(resume_after=None)

    def test_debug_logs_context_and_history(self, caplog: pytest.LogCaptureFixture) -> None:
        instance = make_instance()
        with caplog.at_level(logging.INFO, logger="hephaestus.debug"):
            outcome = Debug().execute(instance, None, instance.context)
        assert outcome == Ok("completed")
        (record,) = caplog.records
        assert "orderid::abc123" in record.getMessage()
        assert record.history == ["validate_order:valid", "charge_payment:charged"]  # type: ignore[attr-defined]
        assert record.context["initial"]["item_count"] == 3  # type: ignore[attr-defined]


# -- Context --------------------------------------------------------------------------------


class TestContext:
    def test_empty(self) -> None:
        context = Context.new()
        assert context.initial == {}
        assert context.steps == {}

    def test_tuples_become_lists(self) -> None:
        context = Context.new({"items": ("a", "b"), "nested": {"pair": (1, (2, 3))}})
        assert context.initial == {"items": ["a", "b"], "nested": {"pair": [1, [2, 3]]}}
        assert isinstance(context.initial["items"], list)

    def test_is_a_copy_of_the_input(self) -> None:
        data: dict[str, Any] = {"items": ["a"], "meta": {"n": 1}}
        context = Context.new(data)
        data["items"].append("b")
        data["meta"]["n"] = 2
        assert context.initial == {"items": ["a"], "meta": {"n": 1}}

    def test_json_values_pass(self) -> None:
        value = {"s": "ü", "i": -1, "f": 0.5, "b": True, "n": None, "l": [], "d": {}}
        assert Context.new(value).initial == value

    def test_input_must_be_a_dict(self) -> None:
        with pytest.raises(
            ContextSerializationError, match=r"the initial context must be a dict, got list"
        ):
            Context.new([("a", 1)])  # type: ignore[arg-type]

    @pytest.mark.parametrize(
        ("value", "culprit"),
        [
            ({"tags": {"a", "b"}}, r"context\['tags'\] \(a set\)"),
            (
                {"order": {"placed_at": datetime(2026, 1, 1, tzinfo=UTC)}},
                r"context\['order'\]\['placed_at'\] \(a datetime\)",
            ),
            ({"items": [1, object()]}, r"context\['items'\]\[1\] \(a object\)"),
            ({"amount": Decimal("1.50")}, r"context\['amount'\] \(a Decimal\)"),
            ({"price": math.nan}, r"context\['price'\] \(a float\)"),
            ({"price": -math.inf}, r"context\['price'\] \(a float\)"),
            ({"by_id": {1: "a"}}, r"context\['by_id'\] has a non-str key 1"),
            ({"ok": [{"x": 1}, {None: 2}]}, r"context\['ok'\]\[1\] has a non-str key None"),
            ({("a", "b"): 1}, r"context has a non-str key \('a', 'b'\)"),
            ({"flag": {True: "yes"}}, r"context\['flag'\] has a non-str key True"),
        ],
    )
    def test_rejects_non_json_values(self, value: dict[Any, Any], culprit: str) -> None:
        with pytest.raises(ContextSerializationError, match=culprit) as info:
            Context.new(value)
        assert "pass only dicts with str keys" in str(info.value)

    def test_int_and_str_keys_that_would_collide(self) -> None:
        # JSON would turn 1 into "1" and keep only one of the two values.
        with pytest.raises(ContextSerializationError, match=r"non-str key 1"):
            Context.new({"1": "kept", 1: "lost"})  # type: ignore[dict-item]

    def test_circular_value(self) -> None:
        loop: dict[str, Any] = {}
        loop["self"] = loop
        with pytest.raises(ContextSerializationError, match=r"circular reference"):
            Context.new({"loop": loop})

    def test_with_updates_returns_a_new_context(self) -> None:
        context = Context.new({"n": 1})
        updated = context.with_updates("charge", {"charged": True})
        assert updated.steps == {"charge": {"charged": True}}
        assert updated.initial == {"n": 1}
        assert context.steps == {}

    def test_dict_round_trip(self) -> None:
        context = Context.new({"n": 1}).with_updates("charge", {"id": "ch_1"})
        assert Context.from_dict(json.loads(json.dumps(context.to_dict()))) == context

    def test_attempt_is_not_part_of_the_value(self) -> None:
        base = Context.new({"n": 1})
        running = dataclasses.replace(base, attempt=3, idempotency_key="orderid::a/charge/3")
        assert running == base
        assert hash(running) == hash(base)
        assert "attempt" not in running.to_dict()
        assert Context.new({"n": 2}) != base


# -- Instance -------------------------------------------------------------------------------


class TestInstanceJson:
    def test_round_trip_is_exact(self) -> None:
        instance = make_instance()
        text = instance.to_json()
        assert isinstance(text, str)
        restored = Instance.from_json(text)
        assert restored == instance
        assert restored.to_json() == text

    def test_round_trip_from_bytes(self) -> None:
        instance = make_instance()
        assert Instance.from_json(instance.to_json().encode()) == instance

    def test_fields_survive(self) -> None:
        restored = Instance.from_json(make_instance().to_json())
        assert restored.status is Status.WAITING
        assert restored.context.initial["customer"] == "Zoë Ångström"
        assert restored.context.initial["note"] == "日本語 📦"
        assert restored.context.initial["items"] == ["widget", "gadget"]
        assert restored.context.steps["validate_order"]["ok"] is True
        assert restored.execution_history[0].timestamp == CREATED
        assert restored.execution_history[0].timestamp.tzinfo is not None
        assert restored.execution_history[0].duration == 0.012345
        assert restored.execution_history[1].attempt == 3
        assert restored.execution_history[1].context_updates is None
        assert restored.timers[0] == Timer(
            id="wait-1",
            step="wait",
            due_at=CREATED + timedelta(days=2),
            kind="resume",
            event="timeout",
        )
        assert restored.timers[1].kind == "retry"
        assert restored.timers[1].event is None
        assert restored.attempts == {"reserve_stock": 2}
        assert restored.completed_steps == {"validate_order", "charge_payment"}
        assert restored.telemetry_metadata == {"tenant": "acme", "région": "eu"}
        assert restored.revision == 7

    def test_failed_instance_with_error(self) -> None:
        instance = make_instance(
            status=Status.FAILED,
            error="step charge_payment failed: carte refusée",
            timers=(),
            waiting_steps=frozenset(),
            active_steps=frozenset(),
        )
        assert Instance.from_json(instance.to_json()) == instance

    def test_minimal_instance(self) -> None:
        instance = Instance(
            id="orderid::abc123",
            workflow="shop.flows.OrderFlow",
            workflow_version=1,
            status=Status.PENDING,
            context=Context.new(),
            created_at=CREATED,
            updated_at=CREATED,
        )
        assert Instance.from_json(instance.to_json()) == instance

    @pytest.mark.parametrize(
        "moment",
        [
            datetime(2026, 6, 1, 12, 0, 0, 1, tzinfo=timezone(timedelta(hours=5, minutes=30))),
            datetime(2026, 6, 1, 12, 0, 0),
        ],
        ids=["offset", "naive"],
    )
    def test_timestamps_keep_their_offset(self, moment: datetime) -> None:
        restored = Instance.from_json(make_instance(created_at=moment, updated_at=moment).to_json())
        assert restored.created_at == moment
        assert restored.created_at.utcoffset() == moment.utcoffset()

    def test_json_is_plain_json(self) -> None:
        data = json.loads(make_instance().to_json())
        assert data["status"] == "waiting"
        assert data["completed_steps"] == ["charge_payment", "validate_order"]
        assert data["timers"][0]["due_at"] == "2026-01-04T03:04:05.123456+00:00"


class TestInstanceValue:
    def test_is_immutable(self) -> None:
        instance = make_instance()
        with pytest.raises(dataclasses.FrozenInstanceError):
            instance.status = Status.RUNNING  # type: ignore[misc]

    def test_evolve_returns_a_new_instance(self) -> None:
        instance = make_instance()
        changed = instance.evolve(status=Status.RUNNING, revision=8)
        assert changed.status is Status.RUNNING
        assert changed.revision == 8
        assert instance.status is Status.WAITING
        assert instance.revision == 7

    def test_evolve_rejects_unknown_fields(self) -> None:
        with pytest.raises(TypeError):
            make_instance().evolve(statuz=Status.RUNNING)

    def test_next_timer_at(self) -> None:
        assert make_instance().next_timer_at == CREATED + timedelta(seconds=4)
        assert make_instance(timers=()).next_timer_at is None


class TestStatus:
    @pytest.mark.parametrize("status", [Status.PENDING, Status.RUNNING, Status.WAITING])
    def test_active(self, status: Status) -> None:
        assert status.is_active
        assert not status.is_final

    @pytest.mark.parametrize("status", [Status.COMPLETED, Status.FAILED, Status.CANCELLED])
    def test_final(self, status: Status) -> None:
        assert status.is_final
        assert not status.is_active

    def test_values_are_the_stored_strings(self) -> None:
        assert [s.value for s in Status] == [
            "pending",
            "running",
            "waiting",
            "completed",
            "failed",
            "cancelled",
        ]
        assert Status("waiting") is Status.WAITING
        assert Status.WAITING == "waiting"
