"""What every runner does the same way around the pure engine.

Running one attempt of a step (sync steps in a thread, async ones awaited,
with the step's timeout, exceptions turned into `Error`), finding the
definition an instance runs on. The telemetry that follows an engine decision
is `telemetry.lifecycle.report`, from the decision's facts. Runners differ only
in how they schedule and serialise work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import traceback
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from hephaestus.core import engine
from hephaestus.core.context import Context, find_trigger
from hephaestus.core.definition import (
    BaseWorkflow,
    WorkflowDefinition,
    load_workflow,
    resolve_version,
    workflow_name,
)
from hephaestus.core.engine import Advance
from hephaestus.core.facts import AttemptFailed, InstanceFailed
from hephaestus.core.instance import Instance
from hephaestus.core.keys import validate_id
from hephaestus.core.outcomes import Error
from hephaestus.core.step import Step
from hephaestus.errors import InvalidEventError, WorkflowDefinitionError
from hephaestus.telemetry import lifecycle

__all__ = [
    "TRACEBACK_LIMIT",
    "Clock",
    "DefinitionCache",
    "KeyedLocks",
    "StepRun",
    "check_event",
    "idempotency_key",
    "log_failures",
    "new_instance",
    "report",
    "run_attempt",
    "step_key",
    "traceback_tail",
    "utc_now",
]

logger = logging.getLogger("hephaestus.runner")

#: How much of a failed step's traceback the instance keeps (its end, in characters).
TRACEBACK_LIMIT = 4096

Clock = Callable[[], datetime]


def new_instance(
    workflow: type[BaseWorkflow],
    context: Mapping[str, Any] | None,
    *,
    id: str,
    version: int | None,
    telemetry_metadata: Mapping[str, Any] | None,
    now: datetime,
) -> Advance:
    """A new instance of `workflow` (its version resolved), checked, not stored yet."""
    concrete = resolve_version(workflow, version, {"id": id})
    definition = concrete.definition()
    validate_id(id)
    return engine.new_instance(
        definition,
        instance_id=id,
        context=Context.new(context),
        now=now,
        workflow=workflow_name(workflow) if workflow.is_umbrella() else definition.name,
        telemetry_metadata=telemetry_metadata,
    )


def check_event(instance_id: str, event: object) -> None:
    """Raise `InvalidEventError` unless `event` is a non-empty str."""
    if not isinstance(event, str) or not event:
        raise InvalidEventError(
            f"instance {instance_id}: the event must be a non-empty str, got {event!r}"
        )


def step_key(step: str | type[Step] | None) -> str | None:
    """The key of `step`, given as a key or a step class (`None` stays `None`)."""
    if step is None or isinstance(step, str):
        return step
    if isinstance(step, type) and issubclass(step, Step):
        return step.key
    raise InvalidEventError(f"step must be a step key (str) or a Step class, got {step!r}")


def utc_now() -> datetime:
    return datetime.now(UTC)


def idempotency_key(instance_id: str, step: str, attempt: int) -> str:
    """Stable across a crash of the same attempt: `<instance id>/<step key>/<attempt>`."""
    return f"{instance_id}/{step}/{attempt}"


class KeyedLocks:
    """One `asyncio.Lock` per key, kept only while someone holds it or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key) or (asyncio.Lock(), 0)
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


class DefinitionCache:
    """Finds the definition an instance runs on: its workflow (or umbrella) and version."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, int], WorkflowDefinition] = {}

    def get(self, instance: Instance) -> WorkflowDefinition:
        key = (instance.workflow, instance.workflow_version)
        found = self._cache.get(key)
        if found is None:
            found = self._cache[key] = self._load(*key)
        return found

    @staticmethod
    def _load(name: str, version: int) -> WorkflowDefinition:
        workflow = load_workflow(name)
        if workflow.is_umbrella():
            concrete = workflow.versions.get(version)
            if concrete is None:
                raise WorkflowDefinitionError(
                    f"workflow {name} has no version {version} any more; keep old versions in "
                    "`versions` until their instances finish"
                )
            return concrete.definition()
        definition = workflow.definition()
        if definition.version != version:
            raise WorkflowDefinitionError(
                f"instance of {name} runs version {version} but the class is now version "
                f"{definition.version}; use an umbrella workflow to keep both versions"
            )
        return definition


@dataclass(frozen=True, slots=True)
class StepRun:
    """The result of one attempt: its outcome, how long it took, the exception if it raised."""

    outcome: Any
    duration: float
    exception: BaseException | None = None


async def run_attempt(
    definition: WorkflowDefinition,
    instance: Instance,
    step: str,
    attempt: int,
    executor: Executor | None,
) -> StepRun:
    """Run attempt `attempt` of `step` on `instance`; never raises for the step's own failures."""
    node = definition.nodes[step]
    context = Context(
        initial=instance.context.initial,
        steps=instance.context.steps,
        attempt=attempt,
        idempotency_key=idempotency_key(instance.id, step, attempt),
        trigger=find_trigger(instance.execution_history, step, instance.context.steps),
    )
    lifecycle.step_start(instance, step, attempt)
    timeout = node.step.timeout
    started = time.perf_counter()
    try:
        impl = node.step()
        if node.step.is_async:
            if timeout is None:
                outcome = await impl.execute(instance, node.config, context)
            else:
                async with asyncio.timeout(timeout):
                    outcome = await impl.execute(instance, node.config, context)
        else:
            loop = asyncio.get_running_loop()
            future = loop.run_in_executor(executor, impl.execute, instance, node.config, context)
            # A thread cannot be stopped: on timeout its late result is ignored (stale attempt).
            outcome = await (future if timeout is None else asyncio.wait_for(future, timeout))
    except TimeoutError as exc:
        reason = f"timed out after {timeout}s (attempt {attempt})"
        return StepRun(Error(reason), time.perf_counter() - started, exc)
    except Exception as exc:
        failed = Error(f"{type(exc).__name__}: {exc}", traceback_tail(exc))
        return StepRun(failed, time.perf_counter() - started, exc)
    return StepRun(outcome, time.perf_counter() - started)


def traceback_tail(exc: BaseException, limit: int = TRACEBACK_LIMIT) -> str:
    """The formatted traceback of `exc`, cut to its last `limit` characters."""
    text = "".join(traceback.format_exception(exc)).rstrip()
    if len(text) <= limit:
        return text
    return "..." + text[len(text) - limit + 3 :]


def log_failures(advance: Advance) -> None:
    """Log the failures of one stored engine decision through the `hephaestus` logger.

    A failed attempt that will be retried is a WARNING; an instance that
    failed is an ERROR with its `error` (the traceback's end when a step
    raised). Python prints both to stderr when no handler is configured, so a
    failure is never silent.
    """
    for fact in advance.facts:
        if isinstance(fact, AttemptFailed) and fact.will_retry:
            logger.warning(
                "instance %s: step %s failed (attempt %d), will retry: %s",
                advance.instance.id,
                fact.step,
                fact.attempt,
                fact.reason,
            )
        elif isinstance(fact, InstanceFailed):
            logger.error("instance %s failed: %s", advance.instance.id, fact.reason)


def report(
    advance: Advance,
    *,
    since: datetime | None = None,
    exception: BaseException | None = None,
) -> None:
    """What follows a stored engine decision: its failures logged, its telemetry emitted."""
    log_failures(advance)
    lifecycle.report(advance, since=since, exception=exception)
