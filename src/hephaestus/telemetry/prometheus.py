"""Prometheus metrics for workflows and steps (extra `prometheus`).

Counters and histograms fed by the telemetry events, labelled by workflow
(its import path), step key and outcome, so a dashboard can show throughput,
failure and retry rates and latencies per workflow and per step. Labels never
carry instance ids: their number would grow without bound.

    from prometheus_client import start_http_server
    from hephaestus.telemetry.prometheus import PrometheusHandler

    PrometheusHandler().attach()       # the default registry
    start_http_server(9100)

Metrics (all prefixed `hephaestus_`):

- `workflows_started_total{workflow}`
- `workflows_finished_total{workflow,status}` (`completed`, `failed`)
- `workflow_duration_seconds{workflow,status}`: creation to finish, waits included
- `steps_total{workflow,step,outcome}` (`ok`, `async`, `error`): one per attempt
- `step_duration_seconds{workflow,step}`: one attempt's run time
- `step_retries_total{workflow,step}`: failed attempts that will be retried
- `resumes_total{workflow,step,source}` (`event`, `timer`)
- `wait_duration_seconds{workflow,step,source}`: how long a step was parked
- `transitions_total{workflow,from_step,event}`
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram

from hephaestus.telemetry import events as ev
from hephaestus.telemetry._emit import attach, detach

__all__ = ["LONG_BUCKETS", "STEP_BUCKETS", "PrometheusHandler"]

STEP_BUCKETS: tuple[float, ...] = (
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
)  # fmt: skip
"""Step attempts: a millisecond to five minutes."""

LONG_BUCKETS: tuple[float, ...] = (
    0.01, 0.1, 1.0, 10.0, 60.0, 300.0, 1800.0, 3600.0, 6 * 3600.0, 86400.0, 7 * 86400.0,
)  # fmt: skip
"""Whole workflows and waits: from instant to a week."""

_EVENTS = (
    ev.WORKFLOW_START,
    ev.WORKFLOW_STOP,
    ev.WORKFLOW_EXCEPTION,
    ev.WORKFLOW_TRANSITION,
    ev.STEP_STOP,
    ev.STEP_EXCEPTION,
    ev.STEP_ASYNC,
    ev.STEP_RESUME,
)


class PrometheusHandler:
    """Registers the metrics in `registry` (default: prometheus_client's global one).

    Create one handler per registry: registering the same metric names twice
    raises `ValueError` (prometheus_client's "Duplicated timeseries").
    Detaching stops counting but keeps the metrics and their values.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        handler_id: str = "hephaestus-prometheus",
        step_buckets: tuple[float, ...] = STEP_BUCKETS,
        long_buckets: tuple[float, ...] = LONG_BUCKETS,
    ) -> None:
        self.handler_id = handler_id
        self.registry = registry if registry is not None else REGISTRY
        r = self.registry
        self.workflows_started = Counter(
            "hephaestus_workflows_started",
            "Workflow instances started.",
            ["workflow"],
            registry=r,
        )
        self.workflows_finished = Counter(
            "hephaestus_workflows_finished",
            "Workflow instances that completed or failed.",
            ["workflow", "status"],
            registry=r,
        )
        self.workflow_duration = Histogram(
            "hephaestus_workflow_duration_seconds",
            "Time from an instance's creation to its completion or failure, waits included.",
            ["workflow", "status"],
            buckets=long_buckets,
            registry=r,
        )
        self.steps = Counter(
            "hephaestus_steps",
            "Step attempts by outcome: ok, async (the step waits) or error.",
            ["workflow", "step", "outcome"],
            registry=r,
        )
        self.step_duration = Histogram(
            "hephaestus_step_duration_seconds",
            "Run time of one step attempt.",
            ["workflow", "step"],
            buckets=step_buckets,
            registry=r,
        )
        self.step_retries = Counter(
            "hephaestus_step_retries",
            "Failed step attempts that will be retried.",
            ["workflow", "step"],
            registry=r,
        )
        self.resumes = Counter(
            "hephaestus_resumes",
            "Waiting steps resumed, by source: event or timer.",
            ["workflow", "step", "source"],
            registry=r,
        )
        self.wait_duration = Histogram(
            "hephaestus_wait_duration_seconds",
            "How long a step waited before it was resumed.",
            ["workflow", "step", "source"],
            buckets=long_buckets,
            registry=r,
        )
        self.transitions = Counter(
            "hephaestus_transitions",
            "Transitions taken, by the step and event they leave from.",
            ["workflow", "from_step", "event"],
            registry=r,
        )

    def attach(self) -> None:
        """Start counting; raises `ValueError` if `handler_id` is already attached."""
        attach(self.handler_id, _EVENTS, self._handle)

    def detach(self) -> bool:
        """Stop counting; returns whether the handler was attached."""
        return detach(self.handler_id)

    def _handle(
        self, event: str, measurements: Mapping[str, Any], metadata: Mapping[str, Any], _: Any
    ) -> None:
        workflow = str(metadata.get("workflow"))
        step = str(metadata.get("step"))
        if event in (ev.STEP_STOP, ev.STEP_ASYNC, ev.STEP_EXCEPTION):
            outcome = {ev.STEP_STOP: "ok", ev.STEP_ASYNC: "async"}.get(event, "error")
            self.steps.labels(workflow, step, outcome).inc()
            self.step_duration.labels(workflow, step).observe(measurements["duration"])
            if event == ev.STEP_EXCEPTION and metadata.get("will_retry"):
                self.step_retries.labels(workflow, step).inc()
        elif event == ev.STEP_RESUME:
            source = str(metadata.get("source"))
            self.resumes.labels(workflow, step, source).inc()
            waited = measurements.get("wait_duration")
            if waited is not None:
                self.wait_duration.labels(workflow, step, source).observe(waited)
        elif event == ev.WORKFLOW_TRANSITION:
            from_step = str(metadata.get("from_step"))
            self.transitions.labels(workflow, from_step, str(metadata.get("event"))).inc()
        elif event == ev.WORKFLOW_START:
            self.workflows_started.labels(workflow).inc()
        else:
            status = str(metadata.get("status"))
            self.workflows_finished.labels(workflow, status).inc()
            self.workflow_duration.labels(workflow, status).observe(measurements["duration"])
