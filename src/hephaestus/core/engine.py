"""The pure engine: `(definition, instance, input, now) -> (instance, commands, facts)`.

Nothing here reads a clock, touches storage or starts a task: timestamps come
in as arguments, what must happen next comes out as commands, and what
happened comes out as facts (`hephaestus.core.facts`: a step completed,
parked, was resumed, an attempt failed, the instance finished, ...), so a
runner reports an engine call without comparing instances. Every entry point
that changes an instance answers with an `Advance`. A step failure is never
raised; it becomes part of the returned instance. Only bad caller input (an
event nobody waits for, a finished instance) raises, and then the instance is
untouched.

Join semantics: a step with several predecessors is a join. It runs once,
when a completed predecessor's transition has led to it and every other
predecessor has completed or can no longer run because the branch leading to
it was not taken (dead-path elimination). A step "can still run" while it, or
a step from which it is reachable, is active or waiting. A join that no taken
transition leads to never runs, even if all its predecessors completed.

Where each completed step led is recorded in its history entry (`targets`,
static or chosen by a route), so "a taken transition leads here" is read back
from the history.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from hephaestus.core.commands import Command, RunStep, StopSteps
from hephaestus.core.context import Context, to_json_value
from hephaestus.core.definition import WorkflowDefinition
from hephaestus.core.facts import (
    AttemptFailed,
    CancelRequested,
    Completion,
    EventAccepted,
    Fact,
    InstanceCancelled,
    InstanceCompleted,
    InstanceFailed,
    InstanceRetried,
    Resumption,
    StepCompleted,
    StepParked,
    StepResumed,
    TimerCancelled,
    TimerScheduled,
)
from hephaestus.core.instance import ExecutionEntry, InboxItem, Instance, Status, Timer
from hephaestus.core.outcomes import Async, Error, Ok, as_outcome
from hephaestus.core.step import Step
from hephaestus.errors import (
    AmbiguousEventError,
    ContextSerializationError,
    InstanceNotFailedError,
    InstanceNotWaitingError,
    InvalidDelayError,
    InvalidEventError,
    NothingToRetryError,
    RetryStepMissingError,
    TimerNotFoundError,
)

__all__ = [
    "RETRY_EVENT",
    "Advance",
    "accept_event",
    "add_timer",
    "cancel",
    "cancel_timer",
    "check_active",
    "check_delay",
    "check_event_data",
    "check_failed",
    "complete_step",
    "deliver",
    "drain_inbox",
    "expects_result",
    "fail",
    "fire_timers",
    "new_instance",
    "recover",
    "request_cancel",
    "resume",
    "resume_target",
    "retry",
]


_F = TypeVar("_F")


@dataclass(frozen=True, slots=True)
class Advance:
    """The engine's answer: the next instance, what the runner must do, and what happened.

    `status_before` is the instance's status before the call (`None` when the
    call changed nothing).
    """

    instance: Instance
    commands: list[Command] = field(default_factory=list)
    facts: tuple[Fact, ...] = ()
    status_before: Status | None = None

    def facts_of(self, kind: type[_F]) -> list[_F]:
        """The facts of one kind, in order."""
        return [fact for fact in self.facts if isinstance(fact, kind)]


class _Draft:
    """The fields of an instance being built by one engine call, mutated locally, then frozen."""

    __slots__ = (
        "active",
        "attempts",
        "commands",
        "completed",
        "completed_base",
        "configs",
        "context",
        "current",
        "error",
        "facts",
        "history",
        "history_base",
        "inbox",
        "metadata",
        "status",
        "timers",
        "waiting",
    )

    def __init__(self, instance: Instance) -> None:
        self.status = instance.status
        self.context = instance.context
        self.active = set(instance.active_steps)
        # The steps this call completes that the instance had not completed yet; the stored
        # set is only joined to them once, in freeze (a copy per step would cost time in
        # proportion to the steps already completed, and the set is never shrunk here).
        completed = instance.completed_steps
        self.completed_base = completed if type(completed) is frozenset else frozenset(completed)
        self.completed: set[str] = set()
        self.waiting = set(instance.waiting_steps)
        self.attempts = dict(instance.attempts)
        self.timers = list(instance.timers)
        self.inbox = instance.inbox
        # Entries this call adds; the stored history is only joined to them once, in freeze.
        self.history_base = instance.execution_history
        self.history: list[ExecutionEntry] = []
        self.configs: Mapping[str, Any] = instance.step_configs
        self.metadata: Mapping[str, Any] = instance.runtime_metadata
        self.commands: list[Command] = []
        self.facts: list[Fact] = []
        self.error = instance.error
        #: The step whose result is being applied: the one a failure now is blamed on.
        self.current: str | None = None

    def is_completed(self, step: str) -> bool:
        return step in self.completed_base or step in self.completed

    def complete(self, step: str) -> None:
        if step not in self.completed_base:
            self.completed.add(step)

    def freeze(self, instance: Instance, now: datetime) -> Advance:
        return Advance(
            instance.evolve(
                status=self.status,
                context=self.context,
                active_steps=frozenset(self.active),
                completed_steps=(
                    self.completed_base | self.completed if self.completed else self.completed_base
                ),
                waiting_steps=frozenset(self.waiting),
                attempts=self.attempts,
                timers=tuple(self.timers),
                inbox=self.inbox,
                execution_history=(
                    self.history_base + tuple(self.history) if self.history else self.history_base
                ),
                step_configs=self.configs,
                runtime_metadata=self.metadata,
                error=self.error,
                revision=instance.revision + 1,
                updated_at=now,
            ),
            self.commands,
            tuple(self.facts),
            instance.status,
        )


def new_instance(
    definition: WorkflowDefinition,
    *,
    instance_id: str,
    context: Context,
    now: datetime,
    workflow: str | None = None,
    telemetry_metadata: Mapping[str, Any] | None = None,
) -> Advance:
    """A new running instance with its start step activated.

    `workflow` is the name stored in the instance (an umbrella's name for a
    versioned workflow); it defaults to the definition's own name.
    """
    instance = Instance(
        id=instance_id,
        workflow=workflow or definition.name,
        workflow_version=definition.version,
        status=Status.RUNNING,
        context=context,
        created_at=now,
        updated_at=now,
        telemetry_metadata=to_json_value(dict(telemetry_metadata or {}), what="telemetry_metadata"),
    )
    draft = _Draft(instance)
    _activate(definition, draft, definition.start, now)
    _settle(definition, draft)
    return draft.freeze(instance, now)


def complete_step(
    definition: WorkflowDefinition,
    instance: Instance,
    step: str,
    outcome: Any,
    *,
    attempt: int,
    now: datetime,
    duration: float = 0.0,
) -> Advance:
    """Apply what attempt `attempt` of `step` returned (or `Error` for a raised exception).

    A result the instance no longer expects (see `expects_result`) changes nothing.
    """
    if not expects_result(instance, step, attempt):
        return Advance(instance, [])
    draft = _Draft(instance)
    outcome = as_outcome(outcome)
    if isinstance(outcome, Ok):
        problem = _finish(definition, draft, step, outcome, attempt, now, duration, "attempt")
    elif isinstance(outcome, Async):
        problem = _park(definition, draft, step, outcome, attempt, instance.revision, now, duration)
    elif isinstance(outcome, Error):
        problem = _failed_attempt(definition, draft, step, outcome, attempt, now, duration)
    else:
        problem = (
            f"step {definition.nodes[step].name} returned {outcome!r}; return Ok(event), "
            "an event str, Async() or Error(reason)"
        )
    return _close(definition, draft, instance, problem, now)


def expects_result(instance: Instance, step: str, attempt: int) -> bool:
    """Whether `instance` still waits for the result of attempt `attempt` of `step`.

    It does not when the instance finished (cancelled, failed), the step is no
    longer active at that attempt (the result is a duplicate, or stale), or
    that attempt already failed and its retry is pending.
    """
    return (
        instance.status.is_active
        and step in instance.active_steps
        and instance.attempts.get(step) == attempt
        and not any(t.kind == "retry" and t.step == step for t in instance.timers)
    )


def resume_target(
    definition: WorkflowDefinition, instance: Instance, event: str, step: str | None = None
) -> str:
    """The waiting step that `event` resumes; raises if there is none (instance untouched)."""
    check_active(instance, event)
    if not instance.waiting_steps:
        raise InstanceNotWaitingError(
            f"instance {instance.id} has no waiting step (active: "
            f"{sorted(instance.active_steps)}); resume it once a step has parked"
        )
    if step is not None:
        if step not in instance.waiting_steps:
            raise InvalidEventError(
                f"instance {instance.id}: step {step!r} is not waiting; waiting steps are "
                f"{sorted(instance.waiting_steps)}"
            )
        if event not in definition.nodes[step].events:
            raise InvalidEventError(
                f"instance {instance.id}: waiting step {step!r} does not declare {event!r}; "
                f"it awaits {list(definition.nodes[step].events)}"
            )
        return step
    candidates = sorted(w for w in instance.waiting_steps if event in definition.nodes[w].events)
    if not candidates:
        awaited = {w: list(definition.nodes[w].events) for w in sorted(instance.waiting_steps)}
        raise InvalidEventError(
            f"instance {instance.id}: no waiting step declares event {event!r}; "
            f"waiting steps and their events: {awaited}"
        )
    if len(candidates) > 1:
        raise _ambiguous(instance, candidates, event)
    return candidates[0]


def _ambiguous(instance: Instance, steps: list[str], event: str) -> AmbiguousEventError:
    return AmbiguousEventError(
        f"instance {instance.id}: waiting steps {steps} all declare {event!r}; "
        "pass step=<key> to choose one"
    )


def resume(
    definition: WorkflowDefinition,
    instance: Instance,
    event: str,
    *,
    now: datetime,
    step: str | None = None,
    data: Mapping[str, Any] | None = None,
) -> Advance:
    """Deliver `event` to the waiting step that declares it; that step completes with it.

    `data` (checked with `check_event_data` by the caller) becomes the step's
    updates: it is stored at `context.steps[<step key>]` and in the history.
    """
    target = resume_target(definition, instance, event, step)
    draft = _Draft(instance)
    problem = _resume(definition, draft, target, Ok(event, data), "event", now)
    return _close(definition, draft, instance, problem, now)


def deliver(
    definition: WorkflowDefinition,
    instance: Instance,
    event: str,
    *,
    now: datetime,
    step: str | None = None,
    data: Mapping[str, Any] | None = None,
) -> Advance:
    """An owner delivers `event`: it resumes the waiting step that takes it, or, while
    none waits yet, it is held in the inbox until that step parks (`accept_event`).

    Raises what `accept_event` raises when no step can ever take the event.
    """
    try:
        return resume(definition, instance, event, now=now, step=step, data=data)
    except AmbiguousEventError:
        raise
    except (InstanceNotWaitingError, InvalidEventError):  # raised before anything is decided
        return accept_event(definition, instance, event, now=now, step=step, data=data, held=True)


def check_event_data(instance_id: str, event: str, data: object) -> dict[str, Any] | None:
    """`data` sent with `event` as a JSON dict (or `None`); raises `ContextSerializationError`."""
    if data is None:
        return None
    value = to_json_value(data, what=f"data of event {event!r} for instance {instance_id}")
    if not isinstance(value, dict):
        raise ContextSerializationError(
            f"data of event {event!r} for instance {instance_id} must be a dict (it becomes "
            f"the waiting step's updates), got {type(value).__name__}"
        )
    return value


def accept_event(
    definition: WorkflowDefinition,
    instance: Instance,
    event: str,
    *,
    now: datetime,
    step: str | None = None,
    data: Mapping[str, Any] | None = None,
    held: bool = False,
) -> Advance:
    """Record `event` (with `data`) in the instance's inbox for its owner to apply.

    Accepted when a waiting step declares it, or when a step that can still
    come to wait (active, or reachable from what is active or waiting)
    declares it: the event is then held until that step parks. Raises
    `InstanceNotWaitingError` for a finished instance, `InvalidEventError` when
    no step can ever take the event, `AmbiguousEventError` when several waiting
    steps declare it and no `step=` says which. The instance is untouched then.
    The owner itself records an event no step waits for yet as `held`.
    """
    check_active(instance, event)
    waiting = [
        w
        for w in sorted(instance.waiting_steps)
        if event in definition.nodes[w].events and step in (None, w)
    ]
    if len(waiting) > 1:
        raise _ambiguous(instance, waiting, event)
    if not waiting:
        future = _may_still_wait(definition, instance)
        if step is not None:
            if step not in definition.nodes:
                raise InvalidEventError(
                    f"instance {instance.id}: workflow {definition.name} has no step {step!r}; "
                    f"its steps are {sorted(definition.nodes)}"
                )
            if event not in definition.nodes[step].events:
                raise InvalidEventError(
                    f"instance {instance.id}: step {step!r} does not declare {event!r}; "
                    f"it declares {list(definition.nodes[step].events)}"
                )
            if step not in future:
                raise InvalidEventError(
                    f"instance {instance.id}: step {step!r} is not waiting and can no longer "
                    f"come to wait (completed or on a branch not taken), so {event!r} was "
                    "not delivered"
                )
        elif not any(event in definition.nodes[s].events for s in future):
            awaited = {w: list(definition.nodes[w].events) for w in sorted(instance.waiting_steps)}
            raise InvalidEventError(
                f"instance {instance.id}: no waiting step declares event {event!r}, and no step "
                f"that can still come to wait does; waiting steps and their events: {awaited}"
            )
    item = InboxItem(kind="event", at=now, event=event, step=step, data=data, held=held)
    return _to_inbox(instance, item, EventAccepted(event, step, held), now)


def check_active(instance: Instance, event: str) -> None:
    """Raise `InstanceNotWaitingError` if the instance is finished: it takes no more events."""
    if instance.status.is_final:
        raise InstanceNotWaitingError(
            f"instance {instance.id} is {instance.status.value}; only an active instance "
            f"accepts events, so {event!r} was not delivered"
        )


def request_cancel(instance: Instance, *, now: datetime) -> Advance:
    """Record a cancel request in the inbox; the owner stops the running steps and cancels."""
    _check_cancellable(instance)
    return _to_inbox(instance, InboxItem(kind="cancel", at=now), CancelRequested(), now)


def drain_inbox(definition: WorkflowDefinition, instance: Instance, now: datetime) -> Advance:
    """Apply the inbox: a cancel, then every event whose step waits, in arrival order.

    Events whose step has not parked yet stay, marked as seen (`held`), until it
    parks; an unchanged instance comes back as is.
    """
    if not instance.inbox or instance.status.is_final:
        return Advance(instance, [])
    draft = _Draft(instance)
    problem = _consume_inbox(definition, draft, now)
    if draft.inbox == instance.inbox and not draft.commands and draft.status is instance.status:
        return Advance(instance, [])
    return _close(definition, draft, instance, problem, now)


def fire_timers(definition: WorkflowDefinition, instance: Instance, now: datetime) -> Advance:
    """Fire every timer due at `now`: resume its waiting step, or start its retry attempt.

    A timer whose step is no longer waiting (an event came first) is dropped.
    """
    due = sorted((t for t in instance.timers if t.due_at <= now), key=lambda t: t.due_at)
    if not due or instance.status.is_final:
        return Advance(instance, [])
    draft = _Draft(instance)
    for timer in due:
        if timer not in draft.timers or draft.status.is_final:
            continue
        draft.timers.remove(timer)
        if timer.kind == "retry":
            if timer.step in draft.active:
                attempt = draft.attempts.get(timer.step, 1) + 1
                draft.attempts[timer.step] = attempt
                draft.commands.append(RunStep(timer.step, attempt))
        elif timer.step in draft.waiting and timer.event is not None:
            problem = _resume(definition, draft, timer.step, Ok(timer.event), "timer", now)
            if problem is not None:
                return _fail_draft(draft, instance, problem, now)
    return _close(definition, draft, instance, None, now)


def add_timer(
    definition: WorkflowDefinition,
    instance: Instance,
    step: str,
    delay: float,
    *,
    now: datetime,
    event: str | None = None,
) -> Advance:
    """Schedule a durable resume of `step` with `event` after `delay` seconds.

    Without `event`, the step's `timeout` event is used if it declares one, else
    its only event. When the timer fires, it resumes the step if it is waiting.
    The timer is in the answer's `TimerScheduled` fact.
    """
    if instance.status.is_final:
        raise InstanceNotWaitingError(
            f"instance {instance.id} is {instance.status.value}; timers can only be "
            "scheduled on active instances"
        )
    node = definition.nodes.get(step)
    if node is None:
        raise InvalidEventError(
            f"instance {instance.id}: workflow {definition.name} has no step {step!r}; "
            f"its steps are {sorted(definition.nodes)}"
        )
    if event is None:
        if "timeout" in node.events:
            event = "timeout"
        elif len(node.events) == 1:
            event = node.events[0]
        else:
            raise InvalidEventError(
                f"instance {instance.id}: step {step!r} declares {list(node.events)}; "
                "pass event= to say which one the timer delivers"
            )
    if event not in node.events:
        raise InvalidEventError(
            f"instance {instance.id}: step {step!r} does not declare {event!r}; "
            f"it declares {list(node.events)}"
        )
    check_delay(delay)
    timer = Timer(
        id=f"{step}@{instance.revision + 1}",
        step=step,
        due_at=now + timedelta(seconds=delay),
        kind="resume",
        event=event,
    )
    updated = instance.evolve(
        timers=(*instance.timers, timer), revision=instance.revision + 1, updated_at=now
    )
    return Advance(updated, [], (TimerScheduled(timer),), instance.status)


def check_delay(delay: object) -> None:
    """Raise `InvalidDelayError` unless `delay` is a finite number of seconds in range."""
    if (
        isinstance(delay, bool)
        or not isinstance(delay, int | float)
        or not math.isfinite(delay)
        or not 0 <= delay <= _MAX_DELAY
    ):
        raise InvalidDelayError(
            f"delay must be a finite number of seconds from 0 to {_MAX_DELAY:.0f}, got {delay!r}"
        )


def cancel_timer(instance: Instance, timer_id: str, *, now: datetime) -> Advance:
    """Remove the pending timer `timer_id`; raises `TimerNotFoundError` if there is none."""
    timer = next((t for t in instance.timers if t.id == timer_id), None)
    if timer is None:
        raise TimerNotFoundError(
            f"instance {instance.id} has no pending timer {timer_id!r} (it fired, was "
            f"cancelled, or never existed); pending: {[t.id for t in instance.timers]}"
        )
    remaining = tuple(t for t in instance.timers if t is not timer)
    updated = instance.evolve(timers=remaining, revision=instance.revision + 1, updated_at=now)
    return Advance(updated, [], (TimerCancelled(timer),), instance.status)


def cancel(instance: Instance, *, now: datetime) -> Advance:
    """Stop the instance for good: status `cancelled`, timers dropped, running steps stopped."""
    _check_cancellable(instance)
    updated = instance.evolve(
        status=Status.CANCELLED, timers=(), revision=instance.revision + 1, updated_at=now
    )
    return Advance(
        updated, [StopSteps(instance.active_steps)], (InstanceCancelled(),), instance.status
    )


def fail(instance: Instance, reason: str, *, now: datetime) -> Advance:
    """Mark the instance failed with `reason` and stop whatever still runs."""
    if instance.status.is_final:
        return Advance(instance, [])
    return _fail_draft(_Draft(instance), instance, reason, now)


#: The event of the history entry that records a retry (no step can declare it: it has a `:`).
RETRY_EVENT = "hephaestus:retry"


def check_failed(instance: Instance) -> None:
    """Raise `InstanceNotFailedError` unless the instance is failed (and so can be retried)."""
    if instance.status is not Status.FAILED:
        hint = (
            "start the id again for a new run"
            if instance.status.is_final
            else "it is still active: its steps retry by their own Retry policy"
        )
        raise InstanceNotFailedError(
            f"instance {instance.id} is {instance.status.value}, not failed; only a failed "
            f"instance can be retried ({hint})"
        )


def retry(definition: WorkflowDefinition, instance: Instance, *, now: datetime) -> Advance:
    """Run a failed instance again from the step(s) that were running when it failed.

    The instance goes back to `running` with its context, completed steps and
    history kept. Every step that was active or waiting when it failed runs
    again from attempt 1 (a waiting step parks again, with a fresh timer);
    `error` is cleared. The retry is recorded in the history: one entry per
    step run again, with event `RETRY_EVENT`, the attempt that failed as its
    `attempt`, and `{"error": <the error>}` as its data, so the failure stays
    readable after the retry.

    Raises `InstanceNotFailedError` unless the instance is failed,
    `NothingToRetryError` when no step was running (the engine failed it after
    its steps), `RetryStepMissingError` when the instance's workflow version
    no longer has one of those steps.
    """
    check_failed(instance)
    steps = sorted(instance.active_steps | instance.waiting_steps)
    if not steps:
        raise NothingToRetryError(
            f"instance {instance.id} failed with no step running ({instance.error}); there is "
            "no step to run again: start the id again for a new run"
        )
    missing = [step for step in steps if step not in definition.nodes]
    if missing:
        raise RetryStepMissingError(
            f"instance {instance.id}: workflow {definition.name} v{definition.version} has no "
            f"step {', '.join(repr(s) for s in missing)} any more, so it cannot run again; "
            "deploy a version that has it, or start the id again for a new run"
        )
    draft = _Draft(instance)
    draft.status = Status.RUNNING
    draft.error = None
    draft.waiting.clear()
    draft.timers = []
    for step in steps:
        draft.history.append(
            ExecutionEntry(
                step=step,
                event=RETRY_EVENT,
                timestamp=now,
                context_updates={"error": instance.error},
                attempt=instance.attempts.get(step, 1),
            )
        )
        draft.active.add(step)
        draft.attempts[step] = 1
        draft.commands.append(RunStep(step, 1))
    draft.facts.append(InstanceRetried(tuple(steps), instance.error))
    return draft.freeze(instance, now)


def recover(instance: Instance) -> list[Command]:
    """What to run again for a `running` instance read back after a crash.

    Every active step without a pending retry timer runs again at its current
    attempt (steps run at least once); parked steps wait for their event or timer.
    """
    if instance.status is not Status.RUNNING:
        return []
    backing_off = {t.step for t in instance.timers if t.kind == "retry"}
    return [
        RunStep(step, instance.attempts.get(step, 1))
        for step in sorted(instance.active_steps)
        if step not in backing_off
    ]


# --- internals --------------------------------------------------------------------------

#: The longest wait a timer may have, in seconds (about 100 years); `datetime` overflows later.
_MAX_DELAY = 100 * 366 * 86400.0


def _to_inbox(instance: Instance, item: InboxItem, fact: Fact, now: datetime) -> Advance:
    updated = instance.evolve(
        inbox=(*instance.inbox, item), revision=instance.revision + 1, updated_at=now
    )
    return Advance(updated, [], (fact,), instance.status)


def _check_cancellable(instance: Instance) -> None:
    if instance.status.is_final:
        raise InstanceNotWaitingError(
            f"instance {instance.id} is already {instance.status.value}; only active "
            "instances can be cancelled"
        )


def _close(
    definition: WorkflowDefinition,
    draft: _Draft,
    instance: Instance,
    problem: str | None,
    now: datetime,
) -> Advance:
    """End an engine call: fail on `problem`, else apply the inbox, settle and freeze."""
    if problem is None and draft.inbox:
        problem = _consume_inbox(definition, draft, now)
    if problem is not None:
        return _fail_draft(draft, instance, problem, now)
    _settle(definition, draft)
    return draft.freeze(instance, now)


def _consume_inbox(definition: WorkflowDefinition, draft: _Draft, now: datetime) -> str | None:
    """Apply what the inbox holds that can apply now; the rest stays, marked held."""
    if draft.status.is_final:
        return None
    if any(item.kind == "cancel" for item in draft.inbox):
        draft.commands = [StopSteps(frozenset(draft.active))] if draft.active else []
        draft.status = Status.CANCELLED
        draft.timers = []
        draft.inbox = tuple(item for item in draft.inbox if item.kind != "cancel")
        draft.facts.append(InstanceCancelled())
        return None
    progressed = True
    while progressed:
        progressed = False
        for item in draft.inbox:
            target = _inbox_target(definition, draft, item)
            if target is None:
                continue
            draft.inbox = tuple(other for other in draft.inbox if other is not item)
            assert item.event is not None
            problem = _resume(definition, draft, target, Ok(item.event, item.data), "event", now)
            if problem is not None:
                return problem
            progressed = True
            break
    if any(not item.held for item in draft.inbox):
        draft.inbox = tuple(item if item.held else item.seen() for item in draft.inbox)
    return None


def _inbox_target(definition: WorkflowDefinition, draft: _Draft, item: InboxItem) -> str | None:
    """The waiting step `item`'s event completes now, or `None` while none waits for it."""
    if item.step is not None:
        waits = item.step in draft.waiting and item.event in definition.nodes[item.step].events
        return item.step if waits else None
    return next(
        (w for w in sorted(draft.waiting) if item.event in definition.nodes[w].events), None
    )


def _may_still_wait(definition: WorkflowDefinition, instance: Instance) -> set[str]:
    """Steps that are waiting, active, or reachable from one that is."""
    live = instance.active_steps | instance.waiting_steps
    reachable = set(live)
    for step in live:
        reachable.update(definition.descendants[step])
    return reachable


def _fail_draft(draft: _Draft, instance: Instance, reason: str, now: datetime) -> Advance:
    still_running = frozenset(draft.active)
    draft.status = Status.FAILED
    draft.error = reason
    draft.timers = []
    draft.commands = [StopSteps(still_running)] if still_running else []
    draft.facts.append(InstanceFailed(reason, draft.current))
    return draft.freeze(instance, now)


def _resume(
    definition: WorkflowDefinition,
    draft: _Draft,
    step: str,
    outcome: Ok,
    source: Resumption,
    now: datetime,
) -> str | None:
    """Wake the waiting `step` and complete it with `outcome`; a message if that fails."""
    draft.waiting.discard(step)
    draft.active.add(step)
    draft.timers = [t for t in draft.timers if t.step != step]
    draft.facts.append(StepResumed(step, outcome.event, source))
    attempt = draft.attempts.get(step, 1)
    return _finish(definition, draft, step, outcome, attempt, now, 0.0, source)


def _activate(definition: WorkflowDefinition, draft: _Draft, key: str, now: datetime) -> None:
    node = definition.nodes[key]
    if node.step.terminal:
        # Done does no work: completing it here saves a task, a thread hop and a write.
        event = node.events[0]
        draft.complete(key)
        draft.context = draft.context.with_updates(key, {})
        draft.history.append(ExecutionEntry(step=key, event=event, timestamp=now))
        draft.facts.append(StepCompleted(key, event, "engine", 1, 0.0, (), ()))
        return
    if node.config is not None and key not in draft.configs:
        draft.configs = {**draft.configs, key: node.config}
    draft.active.add(key)
    draft.attempts[key] = 1
    draft.commands.append(RunStep(key, 1))


def _finish(
    definition: WorkflowDefinition,
    draft: _Draft,
    step: str,
    outcome: Ok,
    attempt: int,
    now: datetime,
    duration: float,
    source: Completion,
) -> str | None:
    """Complete `step` with `outcome` and activate what follows; a message if that fails."""
    node = definition.nodes[step]
    draft.current = step
    if outcome.event not in node.events:
        return (
            f"UndeclaredEventError: step {node.name} emitted {outcome.event!r}, which it does "
            f"not declare; its events are {list(node.events)}"
        )
    updates = None
    try:
        if outcome.updates is not None:
            updates = to_json_value(outcome.updates, what=f"updates of step {node.name}")
            if not isinstance(updates, dict):
                raise ContextSerializationError(
                    f"updates of step {node.name} must be a dict, got {type(updates).__name__}"
                )
        if outcome.metadata is not None:
            metadata = to_json_value(outcome.metadata, what=f"metadata of step {node.name}")
            if not isinstance(metadata, dict):
                raise ContextSerializationError(
                    f"metadata of step {node.name} must be a dict, got {type(metadata).__name__}"
                )
            draft.metadata = {**draft.metadata, **metadata}
    except ContextSerializationError as exc:
        return f"ContextSerializationError: {exc}"
    # Every completed step has an entry in `context.steps`: `{}` when it returned no updates.
    # Set before a route chooses, so the route sees what the step returned.
    draft.context = draft.context.with_updates(step, updates if updates is not None else {})
    targets = definition.edges.get((step, outcome.event))
    if targets is None:
        chosen = _choose_route(definition, draft, step, outcome.event)
        if chosen not in definition.nodes:
            return chosen  # an error message
        targets = (chosen,)
    if step in draft.configs:
        draft.configs = {key: value for key, value in draft.configs.items() if key != step}
    draft.active.discard(step)
    draft.attempts.pop(step, None)
    draft.complete(step)
    at = len(draft.facts)  # its fact goes before those of the steps it starts (Done's)
    draft.history.append(
        ExecutionEntry(
            step=step,
            event=outcome.event,
            timestamp=now,
            context_updates=updates,
            attempt=attempt,
            duration=duration,
            targets=targets,
        )
    )
    started = [target for target in targets if target not in definition.joins]
    for target in started:
        _activate(definition, draft, target, now)
    if definition.joins:
        started += _activate_ready_joins(definition, draft, now)
    draft.facts.insert(
        at,
        StepCompleted(
            step,
            outcome.event,
            source,
            attempt,
            duration,
            targets,
            tuple(started),
            has_updates=updates is not None,
            has_metadata=outcome.metadata is not None,
        ),
    )
    return None


def _choose_route(definition: WorkflowDefinition, draft: _Draft, step: str, event: str) -> str:
    spec = definition.routes[(step, event)]
    try:
        chosen = spec.choose(draft.context)
    except Exception as exc:
        return f"route {spec.function_name} raised {type(exc).__name__}: {exc}"
    key = chosen.key if isinstance(chosen, type) and issubclass(chosen, Step) else None
    if key is None or key not in spec.targets or definition.nodes[key].step is not chosen:
        declared = [definition.nodes[t].name for t in spec.targets]
        return (
            f"InvalidTargetError: route {spec.function_name} returned {chosen!r}, which is "
            f"not among its declared targets {declared}; add it to targets=[...]"
        )
    return key


def _activate_ready_joins(
    definition: WorkflowDefinition, draft: _Draft, now: datetime
) -> list[str]:
    """Activate every join that is ready now; the ones activated."""
    activated: list[str] = []
    for join in definition.order:
        if join not in definition.joins:
            continue
        if draft.is_completed(join) or join in draft.active or join in draft.waiting:
            continue
        preds = definition.predecessors[join]
        live = draft.active | draft.waiting
        if not all(draft.is_completed(p) or not _can_still_run(definition, p, live) for p in preds):
            continue
        if not _reached(draft, join):
            continue  # no transition taken so far leads here
        _activate(definition, draft, join, now)
        activated.append(join)
    return activated


def _reached(draft: _Draft, join: str) -> bool:
    """Whether a transition taken so far leads to `join`.

    Read from the newest entry back: a join whose predecessors are done was usually
    reached by one of the last, so a long history is seldom read in full.
    """
    return any(join in entry.targets for entry in reversed(draft.history)) or any(
        join in entry.targets for entry in reversed(draft.history_base)
    )


def _can_still_run(definition: WorkflowDefinition, step: str, live: set[str]) -> bool:
    if step in live:
        return True
    return any(step in definition.descendants[other] for other in live)


def _park(
    definition: WorkflowDefinition,
    draft: _Draft,
    step: str,
    outcome: Async,
    attempt: int,
    revision: int,
    now: datetime,
    duration: float,
) -> str | None:
    node = definition.nodes[step]
    draft.current = step
    draft.active.discard(step)
    draft.waiting.add(step)
    delay = outcome.resume_after
    timer = None
    if delay is not None:
        if (
            isinstance(delay, bool)
            or not isinstance(delay, int | float)
            or not math.isfinite(delay)
            or delay > _MAX_DELAY
        ):
            return (
                f"step {node.name} parked with resume_after={delay!r}; pass a finite number "
                "of seconds, or None to wait for an event only"
            )
        delay = max(delay, 0)  # a deadline already past: the timer is due at once
        if outcome.timeout_event not in node.events:
            return (
                f"UndeclaredEventError: step {node.name} parked with a timer that would emit "
                f"{outcome.timeout_event!r}, which it does not declare"
            )
        timer = Timer(
            id=f"{step}@{revision + 1}",
            step=step,
            due_at=now + timedelta(seconds=delay),
            kind="resume",
            event=outcome.timeout_event,
        )
        draft.timers.append(timer)
    draft.facts.append(StepParked(step, attempt, duration, timer))
    return None


def _failed_attempt(
    definition: WorkflowDefinition,
    draft: _Draft,
    step: str,
    outcome: Error,
    attempt: int,
    now: datetime,
    duration: float,
) -> str | None:
    node = definition.nodes[step]
    draft.current = step
    policy = node.step.retry
    if attempt < policy.max_attempts:
        retry = Timer(
            id=f"{step}#{attempt + 1}",
            step=step,
            due_at=now + timedelta(seconds=min(policy.delay(attempt), _MAX_DELAY)),
            kind="retry",
        )
        draft.timers.append(retry)
        draft.facts.append(AttemptFailed(step, attempt, outcome.reason, duration, retry))
        return None
    draft.facts.append(AttemptFailed(step, attempt, outcome.reason, duration))
    attempts = "1 attempt" if attempt == 1 else f"{attempt} attempts"
    failed = f"step {node.name} failed after {attempts}: {outcome.reason}"
    return failed if outcome.traceback is None else f"{failed}\n{outcome.traceback}"


def _settle(definition: WorkflowDefinition, draft: _Draft) -> None:
    """Set `running`, `waiting` or `completed` from what is active and parked."""
    if draft.status.is_final:
        return
    if draft.active:
        draft.status = Status.RUNNING
    elif draft.waiting:
        draft.status = Status.WAITING
    elif any(
        definition.nodes[key].step.terminal
        for completed in (draft.completed, draft.completed_base)
        for key in completed
    ):
        draft.status = Status.COMPLETED
        draft.facts.append(InstanceCompleted())
    else:
        # Unreachable for a validated graph; kept so a bug shows as a failure, not a hang.
        draft.status = Status.FAILED
        draft.error = "the instance stopped before reaching Done (no step is active or waiting)"
        draft.facts.append(InstanceFailed(draft.error))
