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

Gauges read from the storage (`StorageGauges`, refreshed on an interval by
one grouped query, one indexed timer query and the runner table: cheap
enough for any interval, whatever the number of instances):

- `instances{workflow,status}`: stored instances (quarantined rows excluded)
- `timers_overdue`: timers of active instances due more than `grace` seconds ago
  (counted up to `overdue_cap`)
- `runners{state}` (`live`, `lapsed`): registered runner processes
- `gauges_refreshed_timestamp_seconds`: when the gauges were last read

    gauges = StorageGauges(app.storage, interval=15.0)
    gauges.start()            # on the running loop; `await gauges.stop()` at shutdown
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from hephaestus.storage.base import Storage
from hephaestus.telemetry import events as ev
from hephaestus.telemetry._emit import attach, detach

__all__ = ["LONG_BUCKETS", "STEP_BUCKETS", "PrometheusHandler", "StorageGauges"]

logger = logging.getLogger("hephaestus.telemetry")

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


class StorageGauges:
    """Gauges an operator graphs, read from `storage` every `interval` seconds.

    `refresh()` reads once (the tests and a scrape hook can call it);
    `start()` refreshes in a task on the running loop until `stop()`. A
    failed read (the database is down) is logged and the gauges keep their
    last values; `gauges_refreshed_timestamp_seconds` then stops moving.
    """

    def __init__(
        self,
        storage: Storage,
        registry: CollectorRegistry | None = None,
        *,
        interval: float = 15.0,
        grace: float = 30.0,
        overdue_cap: int = 10_000,
    ) -> None:
        if not interval > 0:
            raise ValueError("interval must be > 0 seconds")
        self.storage = storage
        self.interval = interval
        self.grace = grace
        self.overdue_cap = overdue_cap
        r = registry if registry is not None else REGISTRY
        self.instances = Gauge(
            "hephaestus_instances",
            "Stored workflow instances, by workflow and status.",
            ["workflow", "status"],
            registry=r,
        )
        self.timers_overdue = Gauge(
            "hephaestus_timers_overdue",
            "Timers of active instances that are overdue by more than the grace period.",
            registry=r,
        )
        self.runners = Gauge(
            "hephaestus_runners",
            "Registered runner processes, by whether their lease holds (live) or lapsed.",
            ["state"],
            registry=r,
        )
        self.refreshed = Gauge(
            "hephaestus_gauges_refreshed_timestamp_seconds",
            "When the storage gauges were last read (seconds since the epoch).",
            registry=r,
        )
        self._labels: set[tuple[str, str]] = set()
        self._task: asyncio.Task[None] | None = None

    async def refresh(self) -> None:
        """Read the storage once and set every gauge."""
        counts = await self.storage.counts()
        for gone in self._labels - set(counts):
            self.instances.labels(*gone).set(0)
        for (workflow, status), count in counts.items():
            self.instances.labels(workflow, status).set(count)
        self._labels |= set(counts)
        now = datetime.now(UTC)
        overdue = await self.storage.due_timers(
            now - timedelta(seconds=self.grace), self.overdue_cap
        )
        self.timers_overdue.set(len(overdue))
        runners = await self.storage.runners()
        live = sum(1 for runner in runners if runner.is_live(time.time()))
        self.runners.labels("live").set(live)
        self.runners.labels("lapsed").set(len(runners) - live)
        self.refreshed.set(time.time())

    def start(self) -> asyncio.Task[None]:
        """Refresh now and then every `interval` seconds, in a task on the running loop."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._loop(), name="hephaestus:gauges"
            )
        return self._task

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _loop(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception as exc:  # an outage must not end the loop
                logger.warning("could not read the storage gauges: %s", exc)
            await asyncio.sleep(self.interval)
