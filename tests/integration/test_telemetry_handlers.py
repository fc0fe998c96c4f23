"""The built-in telemetry handlers, each driven by real workflow runs.

Logging (log lines, levels, `extra` fields), OpenTelemetry (the span tree,
also across a restart while an instance waits) and Prometheus (the scraped
metrics text).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from hephaestus import (
    Context,
    Done,
    Instance,
    Ok,
    Retry,
    Step,
    Unique,
    WaitForEvent,
    Workflow,
    telemetry,
)
from hephaestus.app import Hephaestus
from hephaestus.runners.local import LocalRunner
from hephaestus.telemetry import ENGINE_ADVANCE, STEP_START, STEP_STOP
from hephaestus.telemetry.logging import attach_logging_handler, detach_logging_handler
from hephaestus.telemetry.otel import OpenTelemetryHandler, trace_metadata
from hephaestus.telemetry.prometheus import PrometheusHandler
from hephaestus.testing import MemoryStorage


class TelHValidate(Step):
    events = ("valid",)

    def execute(self, instance: Instance, config: Mapping[str, Any] | None, context: Context) -> Ok:
        return Ok("valid")


class TelHCharge(Step):
    """Fails its first attempt, succeeds on the retry."""

    events = ("charged",)
    retry = Retry(max_attempts=2, backoff="constant", base=0.01)

    def execute(self, instance: Instance, config: Mapping[str, Any] | None, context: Context) -> Ok:
        if context.attempt == 1:
            raise ConnectionError("payment provider unreachable")
        return Ok("charged")


class TelHReserve(Step):
    events = ("reserved",)

    async def execute(
        self, instance: Instance, config: Mapping[str, Any] | None, context: Context
    ) -> Ok:
        return Ok("reserved")


class TelHAwait(WaitForEvent):
    pass


class TelHOrderFlow(Workflow):
    unique = Unique(key="telh")
    start = TelHValidate
    transitions = {
        (TelHValidate, "valid"): [TelHCharge, TelHReserve],
        (TelHCharge, "charged"): (TelHAwait, {"event_name": "confirmed"}),
        (TelHReserve, "reserved"): TelHAwait,
        (TelHAwait, "confirmed"): Done,
    }


class TelHExplode(Step):
    events = ("never",)

    def execute(self, instance: Instance, config: Mapping[str, Any] | None, context: Context) -> Ok:
        raise ValueError("the ledger is closed")


class TelHFailingFlow(Workflow):
    unique = Unique(key="telhfail")
    start = TelHExplode
    transitions = {(TelHExplode, "never"): Done}


ORDER_FLOW = f"{TelHOrderFlow.__module__}.{TelHOrderFlow.__qualname__}"
FAILING_FLOW = f"{TelHFailingFlow.__module__}.{TelHFailingFlow.__qualname__}"


@pytest.fixture(autouse=True)
def _clean_registry() -> Iterator[None]:
    before = telemetry.attached()
    yield
    for handler_id in telemetry.attached() - before:
        telemetry.detach(handler_id)


async def _stored(
    app: Hephaestus, instance_id: str, ready: Callable[[Instance], bool], timeout: float = 10.0
) -> Instance:
    instance = await app.get(instance_id)
    try:
        async with asyncio.timeout(timeout):
            while not ready(instance):
                await asyncio.sleep(0.01)
                instance = await app.get(instance_id)
    except TimeoutError:
        pytest.fail(f"instance {instance_id} did not get there: {instance.to_json()}")
    return instance


@asynccontextmanager
async def _app(storage: MemoryStorage | None = None) -> AsyncIterator[Hephaestus]:
    async with Hephaestus(storage=storage or MemoryStorage(), runner=LocalRunner()) as app:
        yield app
        assert isinstance(app.runner, LocalRunner)
        await app.runner.wait_idle(10)  # every event of what ran is out before closing


async def _order_until_waiting(app: Hephaestus, value: str, **metadata: Any) -> str:
    instance_id = await app.start_instance(
        TelHOrderFlow, {}, id=f"telh::{value}", telemetry_metadata={"tenant": "t1", **metadata}
    )
    await _stored(app, instance_id, lambda i: "tel_h_await" in i.waiting_steps)
    return instance_id


async def _run_order(value: str, **metadata: Any) -> str:
    async with _app() as app:
        instance_id = await _order_until_waiting(app, value, **metadata)
        await app.resume(instance_id, "confirmed")
        await _stored(app, instance_id, lambda i: i.status.is_final)
    return instance_id


async def _run_failing(value: str) -> str:
    async with _app() as app:
        instance_id = await app.start_instance(
            TelHFailingFlow, {}, id=f"telhfail::{value}", telemetry_metadata={"tenant": "t1"}
        )
        await _stored(app, instance_id, lambda i: i.status.is_final)
    return instance_id


# --- logging -------------------------------------------------------------------------------


def _records(caplog: pytest.LogCaptureFixture, logger: str = "hephaestus.events") -> list[Any]:
    return [r for r in caplog.records if r.name == logger]


def _one(records: list[Any], event: str, **fields: Any) -> Any:
    [record] = [
        r
        for r in records
        if r.telemetry_event == event and all(getattr(r, k, None) == v for k, v in fields.items())
    ]
    return record


async def test_logging_writes_one_line_per_event_prefixed_with_the_instance(
    caplog: pytest.LogCaptureFixture,
) -> None:
    attach_logging_handler()
    with caplog.at_level(logging.DEBUG, logger="hephaestus.events"):
        await _run_order("log")
    records = _records(caplog)

    stop = _one(records, STEP_STOP, step="tel_h_validate")
    assert re.fullmatch(
        r"\[telh::log\] step tel_h_validate stopped -> valid in \d+\.\d ms", stop.getMessage()
    )
    assert stop.levelno == logging.INFO
    assert stop.instance_id == "telh::log"
    assert stop.workflow == ORDER_FLOW
    assert stop.workflow_version == 1
    assert stop.step == "tel_h_validate"
    assert stop.attempt == 1
    assert stop.event == "valid"
    assert isinstance(stop.duration, float)
    assert stop.tenant == "t1"

    init = _one(records, telemetry.RUNNER_INIT)
    assert init.getMessage() == "runner LocalRunner started on MemoryStorage"
    for record in records:
        if record is not init:
            assert record.getMessage().startswith("[telh::log] "), record.getMessage()
    events = [r.telemetry_event for r in records]
    assert len(events) == len(records)
    assert set(events) == set(telemetry.ALL_EVENTS) - {telemetry.WORKFLOW_EXCEPTION}


async def test_logging_levels_follow_the_severity_of_each_event(
    caplog: pytest.LogCaptureFixture,
) -> None:
    attach_logging_handler()
    with caplog.at_level(logging.DEBUG, logger="hephaestus.events"):
        await _run_order("levels")
        await _run_failing("levels")
    records = _records(caplog)

    retried = _one(records, telemetry.STEP_EXCEPTION, step="tel_h_charge")
    assert retried.levelno == logging.WARNING
    assert retried.will_retry is True
    assert "payment provider unreachable; will retry" in retried.getMessage()
    final = _one(records, telemetry.STEP_EXCEPTION, step="tel_h_explode")
    assert final.levelno == logging.ERROR
    assert final.getMessage().endswith("no retry left")
    failed = _one(records, telemetry.WORKFLOW_EXCEPTION)
    assert failed.levelno == logging.ERROR
    assert "TelHFailingFlow failed after" in failed.getMessage()
    assert "the ledger is closed" in failed.getMessage()
    assert _one(records, STEP_START, step="tel_h_validate").levelno == logging.DEBUG
    assert _one(records, telemetry.WORKFLOW_STOP).levelno == logging.INFO
    resumed = _one(records, telemetry.STEP_RESUME)
    assert resumed.levelno == logging.INFO
    assert "step tel_h_await resumed by 'confirmed' (event)" in resumed.getMessage()


async def test_logging_levels_and_logger_can_be_chosen(caplog: pytest.LogCaptureFixture) -> None:
    attach_logging_handler(
        "shop.workflows",
        levels={STEP_STOP: "WARNING", ENGINE_ADVANCE: None, STEP_START: None},
        handler_id="shop-logging",
    )
    with caplog.at_level(logging.DEBUG):
        await _run_order("custom")
    records = _records(caplog, "shop.workflows")

    assert _records(caplog) == []
    events = {r.telemetry_event for r in records}
    assert ENGINE_ADVANCE not in events
    assert STEP_START not in events
    assert {r.levelno for r in records if r.telemetry_event == STEP_STOP} == {logging.WARNING}
    assert detach_logging_handler("shop-logging") is True
    assert detach_logging_handler("shop-logging") is False


async def test_logging_keeps_caller_metadata_that_clashes_with_log_record_fields(
    caplog: pytest.LogCaptureFixture,
) -> None:
    attach_logging_handler()
    with caplog.at_level(logging.INFO, logger="hephaestus.events"):
        await _run_order("clash", module="billing")
    stop = _one(_records(caplog), telemetry.WORKFLOW_STOP)

    assert stop.hephaestus_module == "billing"
    assert stop.module != "billing"


def test_logging_rejects_unknown_events_and_levels() -> None:
    with pytest.raises(ValueError, match="unknown telemetry event"):
        attach_logging_handler(levels={"hephaestus.step.finish": logging.INFO})
    with pytest.raises(ValueError, match="LOUD"):
        attach_logging_handler(levels={STEP_STOP: "LOUD"})
    assert "hephaestus-logging" not in telemetry.attached()


# --- OpenTelemetry -------------------------------------------------------------------------


def _provider() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def _named(spans: list[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [span for span in spans if span.name == name]


def _attempt(spans: list[ReadableSpan], step: str, attempt: int) -> ReadableSpan:
    [span] = [
        s
        for s in _named(spans, f"step {step}")
        if s.attributes is not None and s.attributes["hephaestus.attempt"] == attempt
    ]
    return span


async def test_otel_spans_form_one_tree_under_the_instance_across_a_restart() -> None:
    storage = MemoryStorage()
    # Before the wait: one process with its own tracer provider.
    first_provider, first_exporter = _provider()
    first = OpenTelemetryHandler(first_provider, handler_id="otel-first")
    first.attach()
    async with _app(storage) as app:
        instance_id = await _order_until_waiting(app, "otel")
    first.detach()
    # After the wait: a "new process" with a new provider and handler resumes it.
    second_provider, second_exporter = _provider()
    second = OpenTelemetryHandler(second_provider, handler_id="otel-second")
    second.attach()
    async with _app(storage) as app:
        await app.resume(instance_id, "confirmed")
        await _stored(app, instance_id, lambda i: i.status.is_final)
    second.detach()

    before = list(first_exporter.get_finished_spans())
    after = list(second_exporter.get_finished_spans())
    assert _named(before, "workflow TelHOrderFlow") == []
    [root] = _named(after, "workflow TelHOrderFlow")
    assert root.parent is None
    assert root.status.status_code is StatusCode.UNSET
    assert root.attributes == {
        "hephaestus.instance_id": "telh::otel",
        "hephaestus.workflow": ORDER_FLOW,
        "hephaestus.workflow_version": 1,
        "hephaestus.status": "completed",
        "hephaestus.step_count": 5,
        "tenant": "t1",
    }
    children = [span for span in before + after if span is not root]
    assert sorted(span.name for span in children) == [
        "step tel_h_await",
        "step tel_h_charge",
        "step tel_h_charge",
        "step tel_h_reserve",
        "step tel_h_validate",
        "wait tel_h_await",
    ]
    for span in children:
        assert span.context.trace_id == root.context.trace_id, span.name
        assert span.parent is not None
        assert span.parent.span_id == root.context.span_id, span.name

    validate = _attempt(before, "tel_h_validate", 1)
    assert validate.attributes == {
        "hephaestus.instance_id": "telh::otel",
        "hephaestus.workflow": ORDER_FLOW,
        "hephaestus.workflow_version": 1,
        "hephaestus.step": "tel_h_validate",
        "hephaestus.attempt": 1,
        "hephaestus.event": "valid",
        "hephaestus.outcome": "ok",
        "tenant": "t1",
    }
    [waited] = _named(after, "wait tel_h_await")
    assert waited.attributes is not None
    assert waited.attributes["hephaestus.event"] == "confirmed"
    assert waited.attributes["hephaestus.resume_source"] == "event"


async def test_otel_failed_attempts_and_instances_are_errors_with_the_exception() -> None:
    provider, exporter = _provider()
    handler = OpenTelemetryHandler(provider)
    handler.attach()
    await _run_order("otelretry")
    await _run_failing("otel")
    handler.detach()
    spans = list(exporter.get_finished_spans())

    failed_try = _attempt(spans, "tel_h_charge", 1)
    assert failed_try.status.status_code is StatusCode.ERROR
    assert failed_try.status.description is not None
    assert "payment provider unreachable" in failed_try.status.description
    assert failed_try.attributes is not None
    assert failed_try.attributes["hephaestus.will_retry"] is True
    [exception] = [e for e in failed_try.events if e.name == "exception"]
    assert exception.attributes is not None
    assert exception.attributes["exception.type"] == "ConnectionError"
    retry = _attempt(spans, "tel_h_charge", 2)
    assert retry.status.status_code is not StatusCode.ERROR
    assert retry.attributes is not None
    assert retry.attributes["hephaestus.event"] == "charged"

    [instance] = _named(spans, "workflow TelHFailingFlow")
    assert instance.status.status_code is StatusCode.ERROR
    assert instance.status.description is not None
    assert "the ledger is closed" in instance.status.description
    assert instance.attributes is not None
    assert instance.attributes["hephaestus.status"] == "failed"
    assert instance.attributes["hephaestus.failed_step"] == "tel_h_explode"
    assert [e.name for e in instance.events] == ["exception"]
    explode = _attempt(spans, "tel_h_explode", 1)
    assert explode.status.status_code is StatusCode.ERROR
    assert explode.parent is not None
    assert explode.parent.span_id == instance.context.span_id
    assert explode.context.trace_id == instance.context.trace_id


async def test_otel_each_instance_gets_its_own_trace() -> None:
    provider, exporter = _provider()
    handler = OpenTelemetryHandler(provider)
    handler.attach()
    await _run_failing("first")
    await _run_failing("second")
    handler.detach()

    roots = _named(list(exporter.get_finished_spans()), "workflow TelHFailingFlow")
    assert len({span.context.trace_id for span in roots}) == 2


async def test_otel_instance_joins_the_trace_of_the_request_that_started_it() -> None:
    provider, exporter = _provider()
    handler = OpenTelemetryHandler(provider)
    handler.attach()
    tracer = provider.get_tracer("shop.http")
    async with _app() as app:
        with tracer.start_as_current_span("POST /orders") as request:
            instance_id = await app.start_instance(
                TelHFailingFlow, {}, id="telhfail::traced", telemetry_metadata=trace_metadata()
            )
        await _stored(app, instance_id, lambda i: i.status.is_final)
    handler.detach()
    spans = list(exporter.get_finished_spans())

    [instance] = _named(spans, "workflow TelHFailingFlow")
    assert instance.parent is not None
    assert instance.parent.span_id == request.get_span_context().span_id
    assert instance.context.trace_id == request.get_span_context().trace_id
    assert instance.attributes is not None
    assert "traceparent" not in instance.attributes
    step = _attempt(spans, "tel_h_explode", 1)
    assert step.context.trace_id == request.get_span_context().trace_id
    assert step.parent is not None
    assert step.parent.span_id == instance.context.span_id


# --- Prometheus ----------------------------------------------------------------------------


def _samples(registry: CollectorRegistry) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = generate_latest(registry).decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _value(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def test_prometheus_counts_workflows_steps_retries_and_resumes() -> None:
    registry = CollectorRegistry()
    handler = PrometheusHandler(registry)
    handler.attach()
    await _run_order("prom")
    await _run_failing("prom")
    handler.detach()
    s = _samples(registry)

    order = {"workflow": ORDER_FLOW}
    failing = {"workflow": FAILING_FLOW}
    assert _value(s, "hephaestus_workflows_started_total", **order) == 1
    assert _value(s, "hephaestus_workflows_started_total", **failing) == 1
    assert _value(s, "hephaestus_workflows_finished_total", **order, status="completed") == 1
    assert _value(s, "hephaestus_workflows_finished_total", **failing, status="failed") == 1
    assert _value(s, "hephaestus_workflow_duration_seconds_count", **order, status="completed") == 1

    charge = {**order, "step": "tel_h_charge"}
    assert _value(s, "hephaestus_steps_total", **charge, outcome="error") == 1
    assert _value(s, "hephaestus_steps_total", **charge, outcome="ok") == 1
    assert _value(s, "hephaestus_step_retries_total", **charge) == 1
    assert _value(s, "hephaestus_step_duration_seconds_count", **charge) == 2
    wait = {**order, "step": "tel_h_await"}
    assert _value(s, "hephaestus_steps_total", **wait, outcome="async") == 1
    assert _value(s, "hephaestus_resumes_total", **wait, source="event") == 1
    assert _value(s, "hephaestus_wait_duration_seconds_count", **wait, source="event") == 1
    left_validate = {**order, "from_step": "tel_h_validate", "event": "valid"}
    assert _value(s, "hephaestus_transitions_total", **left_validate) == 1

    explode = {**failing, "step": "tel_h_explode"}
    assert _value(s, "hephaestus_steps_total", **explode, outcome="error") == 1
    assert _value(s, "hephaestus_step_retries_total", **explode) is None
    assert "telh::" not in generate_latest(registry).decode()  # no per-instance labels


async def test_prometheus_stops_counting_once_detached() -> None:
    registry = CollectorRegistry()
    handler = PrometheusHandler(registry)
    handler.attach()
    await _run_failing("counted")
    assert handler.detach() is True
    await _run_failing("ignored")

    s = _samples(registry)
    assert _value(s, "hephaestus_workflows_started_total", workflow=FAILING_FLOW) == 1


def test_prometheus_refuses_a_second_handler_on_the_same_registry() -> None:
    registry = CollectorRegistry()
    PrometheusHandler(registry)
    with pytest.raises(ValueError, match="Duplicated"):
        PrometheusHandler(registry)
