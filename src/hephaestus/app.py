"""`Hephaestus`: the runtime entry point that wires a storage and a runner together.

    app = Hephaestus(storage=SQLiteStorage("hephaestus.db"), runner=LocalRunner())
    async with app:
        iid = await app.start_instance(OrderFlow, {"item_count": 3}, id="orderid::abc123")

While an app is open, workflow classes find it for their facade methods
(`await OrderFlow.start("abc123", {...})`). Every public call validates its
input before anything is written.

`Hephaestus(storage=..., runner=None)` is **client mode**: the app validates
and writes, and never executes a step; the runners sharing the storage pick
the work up (see `hephaestus.runners.client`).
"""

from __future__ import annotations

import asyncio
import builtins
import secrets
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any, Literal

from hephaestus.core.definition import (
    BaseWorkflow,
    load_workflow,
    resolve_version,
    unique_of,
    workflow_name,
)
from hephaestus.core.instance import Instance, Status
from hephaestus.core.keys import build_id, validate_id, with_suffix
from hephaestus.core.step import Step
from hephaestus.errors import (
    HephaestusError,
    InvalidBusinessKeyError,
    RuntimeNotFoundError,
    WaitTimeoutError,
    WorkflowDefinitionError,
)
from hephaestus.runners.base import Runner, TimerHandle
from hephaestus.runners.client import ClientRunner
from hephaestus.runners.local import LocalRunner
from hephaestus.storage.base import Query, RunnerRecord, Storage

__all__ = ["Hephaestus", "find_app"]

_OPEN_APPS: list[Hephaestus] = []

_FILTERS = frozenset(
    {"id", "status", "status_in", "workflow", "workflow_version", "limit", "after"}
)


def find_app(explicit: Hephaestus | None = None) -> Hephaestus:
    """The app a facade call should use: `explicit`, else the only open one."""
    if explicit is not None:
        if not explicit.is_open:
            raise RuntimeNotFoundError(
                "the Hephaestus app passed as hephaestus= is not open; use `async with app:`"
            )
        return explicit
    if not _OPEN_APPS:
        raise RuntimeNotFoundError(
            "no Hephaestus app is running: open one with `async with Hephaestus(...):` "
            "before calling workflow facade methods"
        )
    if len(_OPEN_APPS) > 1:
        raise RuntimeNotFoundError(
            f"{len(_OPEN_APPS)} Hephaestus apps are running; pass hephaestus=app to choose one"
        )
    return _OPEN_APPS[0]


class Hephaestus:
    """The runtime: a storage, a runner, and the calls to start, resume, inspect and cancel.

    Defaults: `SQLiteStorage("hephaestus.db")` and `LocalRunner()`
    (`runner="local"`). `runner=None` is client mode: nothing runs in this
    process, the runners that share the storage execute what it writes.
    `facade=False` keeps the app out of reach of workflow facade calls
    (`Flow.start(...)`), for an app that lives on a loop of its own.
    """

    def __init__(
        self,
        storage: Storage | None = None,
        runner: Runner | Literal["local"] | None = "local",
        *,
        facade: bool = True,
    ) -> None:
        if storage is None:
            from hephaestus.storage.sqlite import SQLiteStorage

            storage = SQLiteStorage("hephaestus.db")
        self.storage: Storage = storage
        if runner == "local":
            runner = LocalRunner()
        elif runner is None:
            runner = ClientRunner()
        elif isinstance(runner, str):
            raise HephaestusError(
                f"runner must be a runner object, 'local' or None (client mode), got {runner!r}"
            )
        self.runner: Runner = runner
        #: Whether workflow facade calls (`Flow.start(...)`) find this app while it is open.
        self.facade = facade
        self.is_open = False

    @property
    def is_client(self) -> bool:
        """Whether this app only writes (client mode) and never executes steps."""
        return isinstance(self.runner, ClientRunner)

    async def __aenter__(self) -> Hephaestus:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def open(self) -> None:
        """Open the storage, then start the runner (which recovers running instances)."""
        if self.is_open:
            raise HephaestusError("this Hephaestus app is already open; open it once")
        await self.storage.open()
        try:
            await self.runner.open(self.storage)
        except BaseException:
            await self.storage.close()
            raise
        self.is_open = True
        if self.facade:
            _OPEN_APPS.append(self)

    async def close(self) -> None:
        """Stop the runner, then close the storage (flushing pending writes)."""
        if self in _OPEN_APPS:
            _OPEN_APPS.remove(self)
        self.is_open = False
        try:
            await self.runner.close()
        finally:
            await self.storage.close()

    # -- instances --

    async def start_instance(
        self,
        workflow: type[BaseWorkflow],
        context: Mapping[str, Any] | None = None,
        *,
        id: str,
        version: int | None = None,
        telemetry_metadata: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> str:
        """Create an instance of `workflow` with id `key::value` and start it; returns the id.

        Extra keyword `options` (a tenant, an actor, a flag) go to the umbrella
        workflow's `version_for`, with the `id`, to choose the version; they
        are not stored.

        Raises before writing anything: `InvalidBusinessKeyError` (malformed id),
        `ContextSerializationError` (context not JSON), `InvalidVersionsError`
        (`VersionOptionsError` for options that no `version_for` reads),
        `AlreadyRunningError` (an active instance holds the id).
        """
        _check_workflow(workflow)
        validate_id(id)
        if telemetry_metadata is not None and not isinstance(telemetry_metadata, Mapping):
            raise TypeError("telemetry_metadata must be a dict")
        if options:
            # Chosen here, once: the runner is then given the version version_for picked.
            version = resolve_version(workflow, version, {"id": id}, options=options).version
        return await self.runner.start_instance(
            workflow, context, id=id, version=version, telemetry_metadata=telemetry_metadata
        )

    async def resume(
        self,
        id: str,
        event: str,
        *,
        step: str | type[Step] | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> None:
        """Deliver `event` (with JSON `data`) to the instance; returns once it is durably recorded.

        The waiting step that declares `event` completes with it, and `data`
        becomes that step's output (`context.steps[<step key>]`, and the
        history). An event that arrives before its step parks is held in the
        instance's inbox and consumed when it does, once.

        Raises `InstanceNotFoundError`, `InstanceNotWaitingError` (finished),
        `InvalidEventError` (no step that waits or can still come to wait
        declares the event), `AmbiguousEventError` (several waiting steps do:
        pass `step=`), `ContextSerializationError` (`data` is not a JSON dict).
        """
        validate_id(id)
        await self.runner.resume(id, event, step=step, data=data)  # type: ignore[arg-type]

    async def wait(
        self,
        id: str,
        *,
        timeout: float | None = None,
        status: Status | str | Iterable[Status | str] | None = None,
    ) -> Instance:
        """The instance once it is final (or in one of `status`), however long it takes.

        Works across processes: it reads the stored instance, at first often,
        then every 50 ms. Raises `WaitTimeoutError` after `timeout` seconds,
        naming the status the instance is still in.
        """
        validate_id(id)
        wanted = None if status is None else frozenset(_status(s) for s in _iterable(status))
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        pause = 0.001
        while True:
            instance = await self.storage.get(id)
            if instance.status.is_final if wanted is None else instance.status in wanted:
                return instance
            if wanted is not None and instance.status.is_final:
                raise WaitTimeoutError(
                    f"instance {id} is {instance.status.value} and will never be "
                    f"{' or '.join(sorted(s.value for s in wanted))}"
                )
            if deadline is not None and loop.time() + pause > deadline:
                raise WaitTimeoutError(
                    f"instance {id} is still {instance.status.value} after {timeout}s; wait "
                    "longer, or check that a runner is running (`hephaestus runners list`)"
                )
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.05)

    async def runners(self) -> list[RunnerRecord]:
        """The runner processes registered in the storage, with their leases."""
        return await self.storage.runners()

    async def get(self, id: str) -> Instance:
        """The stored instance; raises `InstanceNotFoundError`."""
        validate_id(id)
        return await self.storage.get(id)

    async def list(self, **filters: Any) -> list[Instance]:
        """Stored instances, ordered by id.

        Filters: `id`, `status`, `status_in`, `workflow` (a class or its import
        path; an umbrella matches every version), `workflow_version`, `limit`,
        `after` (an id, for paging).
        """
        return await self.storage.query(make_query(**filters))

    async def cancel(self, id: str) -> None:
        """Cancel a running or waiting instance; raises for an unknown or finished one."""
        validate_id(id)
        await self.runner.cancel(id)

    async def retry(self, id: str) -> None:
        """Run a failed instance again from the step(s) that were running when it failed.

        It goes back to `running` with its context and history kept; those
        steps start again at attempt 1, and the retry is an entry of the
        history (event `"hephaestus:retry"`, the error as its data). In client
        mode a runner sharing the storage picks it up.

        Raises `InstanceNotFoundError`, `InstanceNotFailedError` (not failed),
        `NothingToRetryError` (no step was running when it failed),
        `RetryStepMissingError` (its workflow version no longer has the step).
        """
        validate_id(id)
        await self.runner.retry(id)

    async def runs(self, id: str, limit: int = 20) -> builtins.list[Instance]:
        """The instance and its earlier finished runs under the same id, newest first.

        Starting an id again after its instance finished starts a new run; the
        storage keeps the earlier ones (see `Storage.runs`). Raises
        `InstanceNotFoundError` if the id holds no instance.
        """
        validate_id(id)
        current = await self.storage.get(id)
        return [current, *await self.storage.runs(id, limit)]

    async def schedule_resume(
        self, id: str, step: str | type[Step], delay: float, *, event: str | None = None
    ) -> TimerHandle:
        """Resume `step` with `event` (default: its `timeout` event) after `delay` seconds.

        The timer is durable: it fires after a restart too, once.
        """
        validate_id(id)
        return await self.runner.schedule_resume(id, step, delay, event=event)  # type: ignore[arg-type]

    async def cancel_timer(self, handle: TimerHandle) -> None:
        """Cancel a timer made by `schedule_resume`; raises `TimerNotFoundError` if it is gone."""
        await self.runner.cancel_timer(handle)

    # -- business keys (used by the workflow facade) --

    def business_id(self, workflow: type[BaseWorkflow], value: str) -> str:
        """The id `key::value` of `workflow`'s instance for business value `value`."""
        unique = _unique_of(workflow)
        if unique.scope == "none":
            raise InvalidBusinessKeyError(
                f"workflow {workflow.__qualname__} has scope 'none': each start gets a distinct "
                "id, so address its instances by the id that start() returned"
            )
        return build_id(unique.key, value)

    async def start_business(
        self,
        workflow: type[BaseWorkflow],
        value: str,
        context: Mapping[str, Any] | None,
        *,
        version: int | None = None,
        telemetry_metadata: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> str:
        """Start `workflow` for business value `value`, honouring its uniqueness scope.

        Extra keyword `options` go to `version_for`, as in `start_instance`.
        """
        _check_workflow(workflow)
        unique = _unique_of(workflow)
        instance_id = build_id(unique.key, value)
        if unique.scope == "none":
            instance_id = with_suffix(instance_id, secrets.token_hex(4))
        return await self.start_instance(
            workflow,
            context,
            id=instance_id,
            version=version,
            telemetry_metadata=telemetry_metadata,
            **options,
        )


def _check_workflow(workflow: object) -> None:
    if not (isinstance(workflow, type) and issubclass(workflow, BaseWorkflow)):
        raise WorkflowDefinitionError(f"{workflow!r} is not a workflow class")


def _unique_of(workflow: type[BaseWorkflow]) -> Any:
    unique = unique_of(workflow)  # a version class may leave it to its umbrella
    if unique is None:
        raise WorkflowDefinitionError(
            f"workflow {workflow.__qualname__} declares no unique and no umbrella lists it"
        )
    return unique


def _workflow_names(workflow: object) -> tuple[str, ...]:
    """Stored names that belong to `workflow` (a class or a name)."""
    if isinstance(workflow, str):
        try:
            workflow = load_workflow(workflow)
        except WorkflowDefinitionError:
            return (str(workflow),)  # an unknown name still filters: it just matches nothing
    if not (isinstance(workflow, type) and issubclass(workflow, BaseWorkflow)):
        raise HephaestusError(f"workflow filter must be a workflow class or name, got {workflow!r}")
    names = {workflow_name(workflow)}
    names.update(workflow_name(v) for v in workflow.versions.values())
    return tuple(sorted(names))


def make_query(**filters: Any) -> Query:
    """Turn `list(**filters)` keyword filters into a storage `Query`, checking them."""
    unknown = set(filters) - _FILTERS
    if unknown:
        raise HephaestusError(f"unknown filter(s) {sorted(unknown)}; use any of {sorted(_FILTERS)}")
    status = filters.get("status")
    status_in = filters.get("status_in")
    workflow = filters.get("workflow")
    limit = filters.get("limit")
    if limit is not None and (not isinstance(limit, int) or limit < 0):
        raise HephaestusError(f"limit must be an int >= 0, got {limit!r}")
    return Query(
        id=filters.get("id"),
        status=_status(status) if status is not None else None,
        status_in=tuple(_status(s) for s in _iterable(status_in))
        if status_in is not None
        else None,
        workflow_in=_workflow_names(workflow) if workflow is not None else None,
        workflow_version=filters.get("workflow_version"),
        limit=limit,
        after=filters.get("after"),
    )


def _status(value: Any) -> Status:
    try:
        return Status(value)
    except ValueError:
        raise HephaestusError(
            f"unknown status {value!r}; use one of {[s.value for s in Status]}"
        ) from None


def _iterable(value: Any) -> Iterable[Any]:
    return (value,) if isinstance(value, str | Status) else value
