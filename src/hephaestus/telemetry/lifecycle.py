"""Emitting the lifecycle events of instances and steps, the same way from every runner.

`report` emits what one stored engine decision did, from the facts the engine
returned with it; the other helpers emit one event each. They return at once
when nobody listens, so runners call them unconditionally. Durations are
seconds (float); `system_time` is epoch seconds. Every instance event's
metadata carries `instance_id`, `workflow`, `workflow_version` and the
caller's `telemetry_metadata` (flattened in).
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from hephaestus.core.engine import Advance
from hephaestus.core.facts import (
    AttemptFailed,
    InstanceCancelled,
    InstanceCompleted,
    InstanceFailed,
    StepCompleted,
    StepParked,
    StepResumed,
)
from hephaestus.core.instance import Instance
from hephaestus.telemetry import events as ev
from hephaestus.telemetry._emit import _by_event, any_listener, emit

__all__ = [
    "engine_advance",
    "report",
    "runner_init",
    "step_async",
    "step_exception",
    "step_resume",
    "step_start",
    "step_stop",
    "workflow_exception",
    "workflow_start",
    "workflow_stop",
    "workflow_transition",
]


def report(
    advance: Advance,
    *,
    since: datetime | None = None,
    exception: BaseException | None = None,
) -> None:
    """Emit the events of one stored engine decision, from its facts alone.

    Per fact, in order: `step.stop` (an attempt's `Ok`), `step.async`,
    `step.exception`, `step.resume` and `workflow.transition` (a completion
    that started steps); then one `engine.advance` if steps completed; then
    `workflow.stop` or `workflow.exception`. `since` is when the instance was
    last stored before this decision (a resume's `wait_duration` counts from
    it); `exception` is what the applied attempt raised, if it raised.
    """
    if not any_listener() or not advance.facts:
        return  # the common case: nobody listens
    after = advance.instance
    completed = 0
    duration = 0.0
    for fact in advance.facts:
        if isinstance(fact, StepCompleted):
            completed += 1
            duration += fact.duration
            if fact.source == "attempt":
                step_stop(
                    after,
                    fact.step,
                    fact.attempt,
                    fact.duration,
                    fact.event,
                    has_context_updates=fact.has_updates,
                    has_metadata_updates=fact.has_metadata,
                )
            if fact.started:
                workflow_transition(after, fact.step, fact.event, sorted(fact.started))
        elif isinstance(fact, StepParked):
            duration += fact.duration
            step_async(after, fact.step, fact.attempt, fact.duration)
        elif isinstance(fact, AttemptFailed):
            duration += fact.duration
            step_exception(
                after,
                fact.step,
                fact.attempt,
                fact.duration,
                fact.reason,
                exception=exception,
                will_retry=fact.will_retry,
            )
        elif isinstance(fact, StepResumed):
            wait = None if since is None else (after.updated_at - since).total_seconds()
            step_resume(after, fact.step, fact.event, fact.source, wait)
    if completed:
        before = advance.status_before
        engine_advance(
            after, duration, completed, status_before=None if before is None else before.value
        )
    for fact in advance.facts:
        if isinstance(fact, InstanceCompleted | InstanceCancelled):
            workflow_stop(after)
        elif isinstance(fact, InstanceFailed):
            workflow_exception(after, failed_step=fact.step)


def _meta(instance: Instance, **extra: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = dict(instance.telemetry_metadata)
    metadata["instance_id"] = instance.id
    metadata["workflow"] = instance.workflow
    metadata["workflow_version"] = instance.workflow_version
    metadata["instance_created_at"] = instance.created_at.isoformat()
    metadata.update(extra)
    return metadata


def _since_created(instance: Instance) -> float:
    return max(0.0, time.time() - instance.created_at.timestamp())


def workflow_start(instance: Instance, *, runner: str, **extra: Any) -> None:
    """The instance was created and stored; `runner` is the runner's class name."""
    if ev.WORKFLOW_START in _by_event:
        emit(
            ev.WORKFLOW_START,
            {"system_time": time.time()},
            _meta(
                instance,
                initial_step=sorted(instance.active_steps),
                context_keys=sorted(instance.context.initial),
                runner=runner,
                **extra,
            ),
        )


def workflow_stop(instance: Instance, **extra: Any) -> None:
    if ev.WORKFLOW_STOP in _by_event:
        emit(
            ev.WORKFLOW_STOP,
            {
                "duration": _since_created(instance),
                "step_count": len(instance.completed_steps),
                # Every stored change to the instance, its creation included.
                "advance_count": instance.revision,
            },
            _meta(
                instance,
                status=instance.status.value,
                completed_steps=sorted(instance.completed_steps),
                **extra,
            ),
        )


def workflow_exception(instance: Instance, *, failed_step: str | None = None, **extra: Any) -> None:
    if ev.WORKFLOW_EXCEPTION in _by_event:
        emit(
            ev.WORKFLOW_EXCEPTION,
            {"duration": _since_created(instance)},
            _meta(
                instance,
                status=instance.status.value,
                kind="error",
                reason=instance.error,
                failed_step=failed_step,
                **extra,
            ),
        )


def workflow_transition(
    instance: Instance, from_step: str, event: str, targets: list[str], **extra: Any
) -> None:
    if ev.WORKFLOW_TRANSITION in _by_event:
        emit(
            ev.WORKFLOW_TRANSITION,
            {"targets_count": len(targets)},
            _meta(
                instance,
                from_step=from_step,
                event=event,
                targets=targets,
                fan_out=len(targets) > 1,
                **extra,
            ),
        )


def step_start(instance: Instance, step: str, attempt: int, **extra: Any) -> None:
    """An attempt of `step` begins; `instance` is the stored one that started it."""
    if ev.STEP_START in _by_event:
        active = len(instance.active_steps)
        emit(
            ev.STEP_START,
            {"system_time": time.time(), "active_steps_count": active},
            _meta(instance, step=step, attempt=attempt, concurrent=active > 1, **extra),
        )


def step_stop(
    instance: Instance,
    step: str,
    attempt: int,
    duration: float,
    event: str,
    *,
    has_context_updates: bool = False,
    has_metadata_updates: bool = False,
    **extra: Any,
) -> None:
    if ev.STEP_STOP in _by_event:
        emit(
            ev.STEP_STOP,
            {"duration": duration},
            _meta(
                instance,
                step=step,
                attempt=attempt,
                event=event,
                has_context_updates=has_context_updates,
                has_metadata_updates=has_metadata_updates,
                **extra,
            ),
        )


def step_exception(
    instance: Instance,
    step: str,
    attempt: int,
    duration: float,
    reason: str,
    *,
    exception: BaseException | None = None,
    will_retry: bool,
    **extra: Any,
) -> None:
    if ev.STEP_EXCEPTION in _by_event:
        emit(
            ev.STEP_EXCEPTION,
            {"duration": duration},
            _meta(
                instance,
                step=step,
                attempt=attempt,
                kind="exception" if exception is not None else "error",
                reason=reason,
                exception=exception,
                will_retry=will_retry,
                **extra,
            ),
        )


def step_async(instance: Instance, step: str, attempt: int, duration: float, **extra: Any) -> None:
    if ev.STEP_ASYNC in _by_event:
        emit(
            ev.STEP_ASYNC,
            {"duration": duration},
            _meta(
                instance, step=step, attempt=attempt, instance_status=instance.status.value, **extra
            ),
        )


def step_resume(
    instance: Instance,
    step: str,
    event: str,
    source: str,
    wait_duration: float | None,
    **extra: Any,
) -> None:
    if ev.STEP_RESUME in _by_event:
        emit(
            ev.STEP_RESUME,
            {"system_time": time.time(), "wait_duration": wait_duration},
            _meta(instance, step=step, resume_event=event, source=source, **extra),
        )


def engine_advance(
    instance: Instance,
    duration: float,
    completed_in_advance: int,
    *,
    status_before: str | None = None,
    **extra: Any,
) -> None:
    if ev.ENGINE_ADVANCE in _by_event:
        emit(
            ev.ENGINE_ADVANCE,
            {
                "duration": duration,
                "active_steps_count": len(instance.active_steps),
                "completed_in_advance": completed_in_advance,
                # The instance's revision after this decision: its n-th stored change.
                "iteration": instance.revision,
            },
            _meta(
                instance,
                status_before=status_before,
                status_after=instance.status.value,
                **extra,
            ),
        )


def runner_init(runner: str, storage: str, **extra: Any) -> None:
    if ev.RUNNER_INIT in _by_event:
        emit(
            ev.RUNNER_INIT,
            {"system_time": time.time()},
            {"runner": runner, "storage": storage, **extra},
        )
