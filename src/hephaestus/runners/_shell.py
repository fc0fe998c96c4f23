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
import functools
import logging
import re
import signal
import time
import traceback
from collections.abc import AsyncIterator, Callable, Coroutine, Generator, Mapping
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
    """Run attempt `attempt` of `step` on `instance`; never raises for the step's own failures.

    Whatever the step raises, `BaseException`s included (`SystemExit`,
    `KeyboardInterrupt`, a `CancelledError` of its own), fails the attempt.
    Only a cancellation of the calling task (the runner stopping the step) and
    an interrupt delivered to the process by a signal propagate.
    """
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
    task = asyncio.current_task()
    assert task is not None, "run_attempt runs in a task"
    cancels = task.cancelling()
    started = time.perf_counter()
    try:
        impl = node.step()
        if node.step.is_async:
            if timeout is None:
                outcome = await impl.execute(instance, node.config, context)
            else:
                coroutine = impl.execute(instance, node.config, context)
                outcome = await _run_with_deadline(coroutine, timeout, instance.id, step, attempt)
        elif not node.step.blocking:
            outcome = impl.execute(instance, node.config, context)  # returns at once: no thread
        else:
            loop = asyncio.get_running_loop()
            future = loop.run_in_executor(
                executor, _call, impl.execute, instance, node.config, context
            )
            # A thread cannot be stopped: on timeout its late result is ignored (stale attempt).
            outcome, raised = await (
                future if timeout is None else asyncio.wait_for(future, timeout)
            )
            if raised is not None:
                raise raised
    except BaseException as exc:  # the step's own failures, whatever they derive from
        if _raised_by_a_signal(exc):
            raise  # Ctrl-C (or a signal handler's exit) for the process, not the step's failure
        if task.cancelling() > cancels:
            if isinstance(exc, asyncio.CancelledError):
                raise  # the runner cancelled the attempt: nothing to record
            raise asyncio.CancelledError from exc
        duration = time.perf_counter() - started
        if isinstance(exc, TimeoutError) and timeout is not None:
            reason = f"timed out after {timeout}s (attempt {attempt})"
            return StepRun(Error(reason), duration, exc)
        failed = Error(_describe(exc), _storable_text(traceback_tail(exc)))
        return StepRun(failed, duration, exc)
    if task.cancelling() > cancels:
        raise asyncio.CancelledError  # the step swallowed the runner's cancellation
    if isinstance(outcome, Error) and isinstance(outcome.reason, str):
        reason = _storable_text(outcome.reason)
        if reason is not outcome.reason:
            outcome = Error(reason)
    return StepRun(outcome, time.perf_counter() - started)


def _call(function: Callable[..., Any], *args: Any) -> tuple[Any, BaseException | None]:
    """`(result, None)` or `(None, exception)`: a sync step's exception crosses threads as a value.

    Set on the future as an exception, a `StopIteration` would never reach the
    event loop (asyncio refuses it, and the attempt would hang).
    """
    try:
        return function(*args), None
    except BaseException as exc:  # handed to run_attempt, which decides what it means
        return None, exc


def _describe(exc: BaseException) -> str:
    text = _storable_text(str(exc))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


_SURROGATE = re.compile("[\ud800-\udfff]")


def _storable_text(text: str) -> str:
    """`text` itself, or with NUL characters and lone surrogates written as escapes.

    A failure reason is often an exception's message, which may quote bytes
    decoded badly; stored as it is, PostgreSQL would refuse its NUL characters
    and no storage could encode its lone surrogates as UTF-8.
    """
    if "\x00" not in text and (text.isascii() or _SURROGATE.search(text) is None):
        return text
    text = text.replace("\x00", "\\x00")
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _raised_by_a_signal(exc: BaseException) -> bool:
    """Whether `exc` came out of the process's SIGINT or SIGTERM handler (a 2nd Ctrl-C, ...).

    Such a handler runs in the main thread, on top of whatever code was running:
    an async step's, maybe. Its frame is then the innermost of the traceback.
    """
    if not isinstance(exc, KeyboardInterrupt | SystemExit) or exc.__traceback__ is None:
        return False
    tb = exc.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    code = tb.tb_frame.f_code
    for signum in _SIGNALS:
        handler: Any = signal.getsignal(signum)
        while isinstance(handler, functools.partial):
            handler = handler.func
        if getattr(handler, "__code__", None) is code:
            return True
    return False


_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM") if hasattr(signal, name))


#: Async steps still running after their timeout: cancelled, no longer awaited, kept from the
#: garbage collector until they end.
_ABANDONED: set[asyncio.Task[Any]] = set()
#: How long after its timeout an abandoned step may still run before a warning says so.
_STRAGGLER_WARNING_AFTER = 1.0


async def _run_with_deadline(
    coroutine: Coroutine[Any, Any, Any], timeout: float, instance_id: str, step: str, attempt: int
) -> Any:
    """Await an async step's `coroutine` for at most `timeout` seconds, whatever it does.

    It runs as a task of its own, so that the attempt ends at the deadline even
    if the step swallows its cancellation; it is then cancelled and left to end
    on its own. A step that blocks the event loop cannot be interrupted, but a
    result that arrives after the deadline is refused all the same.
    """
    timed = _Timed(coroutine)
    started = time.perf_counter()
    loop = asyncio.get_running_loop()
    inner = loop.create_task(_settled(timed), name=f"hephaestus:{instance_id}:{step}:{attempt}")
    waiter = (
        loop.create_future()
    )  # done when the step ends or at the deadline (asyncio.wait, lighter)

    def wake(_: object = None) -> None:
        if not waiter.done():
            waiter.set_result(None)

    inner.add_done_callback(wake)
    deadline = loop.call_later(timeout, wake)
    try:
        await waiter
    except asyncio.CancelledError:
        _abandon(inner, instance_id, step, timeout, warn=False)
        raise
    finally:
        deadline.cancel()
        inner.remove_done_callback(wake)
    if not inner.done():
        _abandon(inner, instance_id, step, timeout, warn=True)
        raise TimeoutError(f"still running after {timeout}s")
    outcome, exc = inner.result()
    duration = timed.ended - started  # when the step ended, not when this task noticed
    if duration > timeout:
        if timed.longest > timeout:
            logger.warning(
                "async step %s of instance %s (attempt %d) blocked the event loop for %.2f s, "
                "more than its timeout of %s s, so the attempt is failed as timed out: an async "
                "step must not block (make execute a plain def to run it in a thread, or await)",
                step,
                instance_id,
                attempt,
                timed.longest,
                timeout,
            )
        else:
            logger.warning(
                "async step %s of instance %s (attempt %d) ended %.2f s after it started, past "
                "its timeout of %s s, while the event loop was blocked (by this step for %.2f s "
                "at most), so the attempt is failed as timed out",
                step,
                instance_id,
                attempt,
                duration,
                timeout,
                timed.longest,
            )
        raise TimeoutError(f"ended after {duration:.3f}s, past its timeout of {timeout}s")
    if exc is not None:
        raise exc
    return outcome


async def _settled(timed: _Timed) -> tuple[Any, BaseException | None]:
    """`(result, None)` or `(None, exception)`: a step's task never raises, whatever the step does.

    Were a `KeyboardInterrupt` or `SystemExit` to leave a task, asyncio would
    re-raise it out of the event loop and stop every instance.
    """
    try:
        return await timed, None
    except BaseException as exc:  # handed to run_attempt, which decides what it means
        return None, exc
    finally:
        timed.ended = time.perf_counter()


def _abandon(
    task: asyncio.Task[Any], instance_id: str, step: str, timeout: float, *, warn: bool
) -> None:
    """Cancel an async step's task and stop waiting for it; say so if it will not stop."""
    task.cancel()
    if task.done():
        return
    _ABANDONED.add(task)
    loop = task.get_loop()
    abandoned_at = loop.time()

    def still_running() -> None:
        if not task.done():
            logger.warning(
                "async step %s of instance %s is still running %.1f s after its timeout of %s s "
                "although it was cancelled then: it swallows cancellation; its attempt failed "
                "as timed out, and whatever it does now is ignored",
                step,
                instance_id,
                loop.time() - abandoned_at,
                timeout,
            )

    check = loop.call_later(_STRAGGLER_WARNING_AFTER, still_running) if warn else None

    def ended(done: asyncio.Task[Any]) -> None:
        _ABANDONED.discard(done)
        if check is not None:
            check.cancel()
        if not warn or done.cancelled():
            return
        _, exc = done.result()
        if not isinstance(exc, asyncio.CancelledError):
            logger.warning(
                "async step %s of instance %s ignored its cancellation at its timeout of %s s "
                "and ended %.2f s later; its attempt had failed as timed out, so its %s is "
                "discarded",
                step,
                instance_id,
                timeout,
                loop.time() - abandoned_at,
                "exception" if exc is not None else "result",
            )

    task.add_done_callback(ended)


class _Timed:
    """Awaits a coroutine, measuring the longest time it ran without yielding to the event loop.

    `ended` is when it ended (set by `_settled`).

    The coroutine is driven step by step, as `await` would: every value it
    yields goes to the task and every value or exception the task sends back
    goes to it.
    """

    __slots__ = ("coroutine", "ended", "longest")

    def __init__(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        self.coroutine = coroutine
        self.longest = 0.0
        self.ended = 0.0

    def __await__(self) -> Generator[Any, Any, Any]:
        coroutine = self.coroutine
        clock = time.perf_counter
        sent: Any = None
        thrown: BaseException | None = None
        while True:
            began = clock()
            try:
                yielded = coroutine.send(sent) if thrown is None else coroutine.throw(thrown)
            except StopIteration as stop:
                return stop.value
            finally:
                ran = clock() - began
                if ran > self.longest:
                    self.longest = ran
            sent, thrown = None, None
            try:
                sent = yield yielded
            except GeneratorExit:
                coroutine.close()
                raise
            except BaseException as exc:  # passed on to the step, as `await` would
                thrown = exc


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
