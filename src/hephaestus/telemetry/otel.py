"""OpenTelemetry spans for workflow instances and step attempts (extra `otel`).

An instance can park for days and resume in another process, so no span
object can stay open for its whole life, and no process remembers which span
its steps belong to. Instead the instance's trace id and span id are
*derived* from the instance: a SHA-256 of its id and creation time gives
both. Every step attempt, in whichever process it runs, is started as a child
of that derived span context, so all of them land in one trace under one
parent. The instance span itself is emitted when the instance stops or fails,
with its start time set to the instance's creation and its span id set to the
derived one (through the id generator of the OpenTelemetry SDK's tracer; with
another tracer implementation it keeps the trace id but becomes a sibling of
the steps). A resume shows as a `wait <step>` span covering the time parked.

If the caller's `telemetry_metadata` carries a W3C `traceparent` (see
`trace_metadata()`), the instance span becomes a child of that span: the
workflow joins the trace of the request that started it.

    from hephaestus.telemetry.otel import OpenTelemetryHandler

    OpenTelemetryHandler().attach()    # the global tracer provider
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    SpanContext,
    Status,
    StatusCode,
    TraceFlags,
    Tracer,
    TracerProvider,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from hephaestus import __version__
from hephaestus.telemetry import events as ev
from hephaestus.telemetry._emit import attach, detach

__all__ = ["OpenTelemetryHandler", "instance_span_context", "trace_metadata"]

_SCOPE = "hephaestus"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: Step spans still open (started, not yet stopped) before the oldest is ended as abandoned.
_MAX_OPEN_SPANS = 10_000

# Metadata keys the runners set; every other key came from the caller's telemetry_metadata.
_STANDARD_KEYS = frozenset(
    {
        "instance_id",
        "instance_created_at",
        "workflow",
        "workflow_version",
        "initial_step",
        "status",
        "kind",
        "reason",
        "from_step",
        "event",
        "targets",
        "fan_out",
        "step",
        "attempt",
        "exception",
        "will_retry",
        "instance_status",
        "resume_event",
        "source",
        "status_after",
        "status_before",
        "runner",
        "storage",
        "context_keys",
        "completed_steps",
        "failed_step",
        "concurrent",
        "has_context_updates",
        "has_metadata_updates",
    }
)
_PROPAGATION_KEYS = frozenset({"traceparent", "tracestate"})
_EVENTS = (
    ev.WORKFLOW_STOP,
    ev.WORKFLOW_EXCEPTION,
    ev.STEP_START,
    ev.STEP_STOP,
    ev.STEP_EXCEPTION,
    ev.STEP_ASYNC,
    ev.STEP_RESUME,
)


def trace_metadata() -> dict[str, str]:
    """The current trace context as `telemetry_metadata` entries (`traceparent`, ...).

    Pass them when starting an instance to make its span a child of the current one:
    `app.start_instance(Flow, ctx, id=..., telemetry_metadata={**trace_metadata()})`.
    """
    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    return carrier


def instance_span_context(
    instance_id: str,
    created_at: datetime | str | None = None,
    traceparent: str | None = None,
) -> SpanContext:
    """The span context of an instance's span, the same in every process.

    Trace id and span id are the first 24 bytes of a SHA-256 of the instance id
    and its creation time (ISO 8601); with a `traceparent`, the trace id is
    that parent's. Use it as the parent of spans you want under the instance.
    """
    if isinstance(created_at, datetime):
        created_at = created_at.isoformat()
    seed = instance_id if created_at is None else f"{instance_id}|{created_at}"
    digest = hashlib.sha256(seed.encode()).digest()
    trace_id = int.from_bytes(digest[:16], "big") or 1
    span_id = int.from_bytes(digest[16:24], "big") or 1
    parent = _remote_parent(traceparent)
    if parent is not None:
        trace_id = parent.trace_id
    return SpanContext(
        trace_id, span_id, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED)
    )


class OpenTelemetryHandler:
    """Emits a span per workflow instance and per step attempt.

    Uses `tracer_provider`, or the global one (`trace.set_tracer_provider`)
    at the time each span starts. Spans carry `hephaestus.instance_id`,
    `hephaestus.workflow`, `hephaestus.workflow_version`, `hephaestus.step`,
    `hephaestus.attempt`, `hephaestus.event` (the event the step emitted) and
    the caller's `telemetry_metadata` entries under their own names. Failed
    steps and instances get status ERROR and an exception event.
    """

    def __init__(
        self,
        tracer_provider: TracerProvider | None = None,
        *,
        handler_id: str = "hephaestus-otel",
    ) -> None:
        self.handler_id = handler_id
        self._provider = tracer_provider
        self._lock = threading.Lock()
        self._open: dict[tuple[str, str, int], _OpenStep] = {}

    def attach(self) -> None:
        """Start emitting spans; raises `ValueError` if `handler_id` is already attached."""
        attach(self.handler_id, _EVENTS, self._handle)

    def detach(self) -> bool:
        """Stop emitting spans, ending step spans still open; returns whether it was attached."""
        found = detach(self.handler_id)
        with self._lock:
            still_open = list(self._open.values())
            self._open.clear()
        for step in still_open:
            step.span.set_attribute("hephaestus.abandoned", True)
            step.span.end()
        return found

    # -- events --

    def _handle(
        self, event: str, measurements: Mapping[str, Any], metadata: Mapping[str, Any], _: Any
    ) -> None:
        if event == ev.STEP_START:
            self._step_start(measurements, metadata)
        elif event in (ev.STEP_STOP, ev.STEP_EXCEPTION, ev.STEP_ASYNC):
            self._step_end(event, measurements, metadata)
        elif event == ev.STEP_RESUME:
            self._resume(measurements, metadata)
        else:
            self._instance_end(event, measurements, metadata)

    def _step_start(self, measurements: Mapping[str, Any], metadata: Mapping[str, Any]) -> None:
        start_ns = _ns(measurements.get("system_time"))
        span = self._tracer().start_span(
            f"step {metadata['step']}",
            context=self._under_instance(metadata),
            attributes=_attributes(metadata),
            start_time=start_ns,
        )
        key = (metadata["instance_id"], metadata["step"], metadata["attempt"])
        with self._lock:
            self._open[key] = _OpenStep(span, start_ns)
            evicted = (
                self._open.pop(next(iter(self._open)))
                if len(self._open) > _MAX_OPEN_SPANS
                else None
            )
        if evicted is not None:
            evicted.span.set_attribute("hephaestus.abandoned", True)
            evicted.span.end()

    def _step_end(
        self, event: str, measurements: Mapping[str, Any], metadata: Mapping[str, Any]
    ) -> None:
        duration_ns = int(float(measurements.get("duration") or 0.0) * 1e9)
        key = (metadata["instance_id"], metadata["step"], metadata["attempt"])
        with self._lock:
            opened = self._open.pop(key, None)
        if opened is None:  # started before this handler was attached, or in another process
            start_ns = time.time_ns() - duration_ns
            opened = _OpenStep(
                self._tracer().start_span(
                    f"step {metadata['step']}",
                    context=self._under_instance(metadata),
                    attributes=_attributes(metadata),
                    start_time=start_ns,
                ),
                start_ns,
            )
        span = opened.span
        if event == ev.STEP_STOP:
            span.set_attribute("hephaestus.outcome", "ok")
            span.set_attribute("hephaestus.event", str(metadata.get("event")))
        elif event == ev.STEP_ASYNC:
            span.set_attribute("hephaestus.outcome", "async")
        else:
            reason = str(metadata.get("reason"))
            span.set_attribute("hephaestus.outcome", "error")
            span.set_attribute("hephaestus.will_retry", bool(metadata.get("will_retry")))
            exception = metadata.get("exception")
            if isinstance(exception, BaseException):
                span.record_exception(exception)
            else:
                span.add_event("exception", {"exception.message": reason})
            span.set_status(Status(StatusCode.ERROR, reason))
        span.end(end_time=opened.start_ns + duration_ns)

    def _resume(self, measurements: Mapping[str, Any], metadata: Mapping[str, Any]) -> None:
        end_ns = _ns(measurements.get("system_time"))
        waited = measurements.get("wait_duration")
        start_ns = end_ns - int(float(waited) * 1e9) if waited is not None else end_ns
        attributes = _attributes(metadata)
        attributes["hephaestus.event"] = str(metadata.get("resume_event"))
        attributes["hephaestus.resume_source"] = str(metadata.get("source"))
        span = self._tracer().start_span(
            f"wait {metadata['step']}",
            context=self._under_instance(metadata),
            attributes=attributes,
            start_time=start_ns,
        )
        span.end(end_time=end_ns)

    def _instance_end(
        self, event: str, measurements: Mapping[str, Any], metadata: Mapping[str, Any]
    ) -> None:
        instance_id = metadata["instance_id"]
        now_ns = time.time_ns()
        created_ns = _created_ns(metadata.get("instance_created_at"))
        if created_ns is None:
            created_ns = now_ns - int(float(measurements.get("duration") or 0.0) * 1e9)
        attributes = _attributes(metadata)
        attributes["hephaestus.status"] = str(metadata.get("status"))
        if "step_count" in measurements:
            attributes["hephaestus.step_count"] = int(measurements["step_count"])
        if metadata.get("failed_step") is not None:
            attributes["hephaestus.failed_step"] = str(metadata["failed_step"])
        own = self._instance_context(metadata)
        tracer = self._tracer()
        parent = _remote_parent(metadata.get("traceparent"))
        if _force_ids_of(tracer):
            token = _forced.set(_Pending(own.trace_id, own.span_id))
            try:
                span = tracer.start_span(
                    f"workflow {_short(metadata.get('workflow'))}",
                    context=_context_of(parent),
                    attributes=attributes,
                    start_time=created_ns,
                )
            finally:
                _forced.reset(token)
        else:  # cannot choose the span id: share the trace, as a sibling of the steps
            span = tracer.start_span(
                f"workflow {_short(metadata.get('workflow'))}",
                context=_context_of(own),
                attributes=attributes,
                start_time=created_ns,
            )
        failed = event == ev.WORKFLOW_EXCEPTION
        reason = str(metadata.get("reason"))
        if failed:
            span.add_event("exception", {"exception.message": reason})
            span.set_status(Status(StatusCode.ERROR, reason))
        self._end_steps_of(instance_id, reason if failed else None)
        span.end(end_time=now_ns)

    def _end_steps_of(self, instance_id: str, failure: str | None) -> None:
        """End step spans the instance left open (a step whose result broke a rule)."""
        with self._lock:
            keys = [key for key in self._open if key[0] == instance_id]
            left = [self._open.pop(key) for key in keys]
        for opened in left:
            if failure is not None:
                opened.span.set_status(Status(StatusCode.ERROR, failure))
            opened.span.end()

    # -- helpers --

    def _tracer(self) -> Tracer:
        provider = self._provider or trace.get_tracer_provider()
        return provider.get_tracer(_SCOPE, __version__)

    @staticmethod
    def _instance_context(metadata: Mapping[str, Any]) -> SpanContext:
        return instance_span_context(
            metadata["instance_id"],
            metadata.get("instance_created_at"),
            metadata.get("traceparent"),
        )

    def _under_instance(self, metadata: Mapping[str, Any]) -> Context:
        return _context_of(self._instance_context(metadata))


@dataclass(slots=True)
class _OpenStep:
    span: Span
    start_ns: int


# --- choosing the instance span's ids ------------------------------------------------------


@dataclass(slots=True)
class _Pending:
    trace_id: int | None
    span_id: int | None


_forced: ContextVar[_Pending | None] = ContextVar("hephaestus_otel_forced_ids", default=None)


class _InstanceIds:
    """Wraps an SDK tracer's id generator: its ids, except the one instance span being started."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def generate_trace_id(self) -> int:
        pending = _forced.get()
        if pending is not None and pending.trace_id is not None:
            trace_id, pending.trace_id = pending.trace_id, None
            return trace_id
        return int(self.inner.generate_trace_id())

    def generate_span_id(self) -> int:
        pending = _forced.get()
        if pending is not None and pending.span_id is not None:
            span_id, pending.span_id = pending.span_id, None
            return span_id
        return int(self.inner.generate_span_id())

    def is_trace_id_random(self) -> bool:
        # The derived ids are SHA-256 bits: as uniform as the wrapped generator's.
        check = getattr(self.inner, "is_trace_id_random", None)
        return bool(check()) if callable(check) else False


def _force_ids_of(tracer: Tracer) -> bool:
    """Make `tracer` (an SDK tracer) take forced ids; False if it has no id generator to wrap."""
    ids = getattr(tracer, "id_generator", None)
    if isinstance(ids, _InstanceIds):
        return True
    if ids is None or not callable(getattr(ids, "generate_span_id", None)):
        return False
    tracer.id_generator = _InstanceIds(ids)  # type: ignore[attr-defined]
    return True


# --- small conversions ---------------------------------------------------------------------


def _context_of(span_context: SpanContext | None) -> Context:
    """A context holding only `span_context` as the parent: never the caller's current span."""
    if span_context is None:
        return Context()
    return trace.set_span_in_context(NonRecordingSpan(span_context), Context())


def _remote_parent(traceparent: Any) -> SpanContext | None:
    if not isinstance(traceparent, str):
        return None
    context = TraceContextTextMapPropagator().extract({"traceparent": traceparent})
    parent = trace.get_current_span(context).get_span_context()
    return parent if parent.is_valid else None


def _attributes(metadata: Mapping[str, Any]) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "hephaestus.instance_id": str(metadata.get("instance_id")),
        "hephaestus.workflow": str(metadata.get("workflow")),
        "hephaestus.workflow_version": int(metadata.get("workflow_version") or 0),
    }
    if "step" in metadata:
        attributes["hephaestus.step"] = str(metadata["step"])
    if "attempt" in metadata:
        attributes["hephaestus.attempt"] = int(metadata["attempt"])
    for key, value in metadata.items():
        if key in _STANDARD_KEYS or key in _PROPAGATION_KEYS or value is None:
            continue
        attributes[key] = _attribute_value(value)
    return attributes


def _attribute_value(value: Any) -> Any:
    if isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, list | tuple) and value:
        kinds = {type(item) for item in value}
        if len(kinds) == 1 and kinds <= {str, bool, int, float}:
            return tuple(value)
    return str(value)


def _ns(seconds: Any) -> int:
    return int(float(seconds) * 1e9) if seconds is not None else time.time_ns()


def _created_ns(created_at: Any) -> int | None:
    if not isinstance(created_at, str):
        return None
    try:
        moment = datetime.fromisoformat(created_at)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // timedelta(microseconds=1) * 1000


def _short(workflow: Any) -> str:
    return str(workflow).rpartition(".")[2]
