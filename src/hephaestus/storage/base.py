"""The storage contract: what the runtime needs from a place that keeps instances.

**Protocol**: any object with these coroutine methods is a storage. The
runtime never reaches around it, so memory, SQLite and PostgreSQL adapters
are interchangeable, and one contract test suite runs against all of them.

Rules every adapter keeps:

- One record per instance id. `put(instance, None)` creates: it raises
  `AlreadyRunningError` if an *active* instance (pending, running, waiting)
  holds the id, and replaces a finished one (the business key is free again).
- `put(instance, expected_revision)` updates only if the stored revision is
  `expected_revision`; otherwise it raises `ConcurrencyError` and writes
  nothing (a missing record raises `InstanceNotFoundError`).
- Durable timers are stored inside the instance; adapters index the earliest
  due time (`Instance.next_timer_at`) of active instances so that
  `due_timers` and `next_timer_at` are cheap.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

from hephaestus.core.instance import Instance, Status
from hephaestus.errors import AlreadyRunningError, ConcurrencyError, InstanceNotFoundError

__all__ = ["Query", "Storage", "StorageStats"]


@dataclass(frozen=True, slots=True)
class Query:
    """Filters of `Storage.query`; results are ordered by id, `after` pages past an id."""

    id: str | None = None
    status: Status | None = None
    status_in: tuple[Status, ...] | None = None
    workflow: str | None = None
    workflow_in: tuple[str, ...] | None = None
    workflow_version: int | None = None
    limit: int | None = None
    after: str | None = None

    def __post_init__(self) -> None:
        if self.limit is not None and (isinstance(self.limit, bool) or self.limit < 0):
            raise ValueError(f"Query limit must be None or an int >= 0, got {self.limit!r}")

    def matches(self, instance: Instance) -> bool:
        """Whether `instance` passes every filter (paging aside)."""
        return (
            (self.id is None or instance.id == self.id)
            and (self.status is None or instance.status == self.status)
            and (self.status_in is None or instance.status in self.status_in)
            and (self.workflow is None or instance.workflow == self.workflow)
            and (self.workflow_in is None or instance.workflow in self.workflow_in)
            and (
                self.workflow_version is None or instance.workflow_version == self.workflow_version
            )
            and (self.after is None or instance.id > self.after)
        )


@dataclass(slots=True)
class StorageStats:
    """What an adapter has written since it was created.

    `writes` counts instances written (created, updated or deleted) and
    `transactions` the commits that wrote them; with group commit many writes
    share one transaction. Benchmarks read both to report the cost of a step.
    """

    transactions: int = 0
    writes: int = 0


class AsyncContext:
    """`async with storage:` opens it and closes it, for any adapter with open/close."""

    async def open(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()


@runtime_checkable
class Storage(Protocol):
    """**Protocol**: where instances live. See the module docstring for the rules."""

    async def open(self) -> None:
        """Connect and check (or create) the schema. Called once by the app."""

    async def close(self) -> None:
        """Flush pending writes and release connections."""

    async def get(self, instance_id: str) -> Instance:
        """The stored instance; raises `InstanceNotFoundError`."""

    async def put(self, instance: Instance, expected_revision: int | None) -> None:
        """Create (`expected_revision=None`) or update the instance atomically."""

    async def delete(self, instance_id: str) -> None:
        """Remove the instance; raises `InstanceNotFoundError` if there is none."""

    async def query(self, query: Query) -> list[Instance]:
        """Instances matching `query`, ordered by id."""

    async def due_timers(self, now: datetime, limit: int = 1000) -> list[str]:
        """Ids of active instances whose earliest timer is due at `now`, earliest first."""

    async def next_timer_at(self) -> datetime | None:
        """When the earliest timer of any active instance is due, or `None`."""


def check_put(
    instance: Instance,
    expected_revision: int | None,
    stored_status: Status | None,
    stored_revision: int | None,
) -> None:
    """Raise the error the storage rules demand for writing `instance` over the stored record.

    `stored_status` and `stored_revision` describe the record that holds
    `instance.id`, both `None` when there is none. Every adapter calls this
    before writing, so they all refuse the same writes with the same messages.
    """
    if expected_revision is None:
        if stored_status is not None and stored_status.is_active:
            raise AlreadyRunningError(
                f"instance {instance.id} is already {stored_status.value}; wait for it "
                "to finish or cancel it before starting another with the same id"
            )
        return
    if stored_revision is None:
        raise InstanceNotFoundError(
            f"no instance {instance.id} to update at revision {expected_revision}; "
            "it was never created or has been deleted (create it with expected_revision=None)"
        )
    if stored_revision != expected_revision:
        raise ConcurrencyError(
            f"instance {instance.id} is at revision {stored_revision}, not {expected_revision}: "
            "it was changed since it was read; read it again and retry"
        )


def not_found(instance_id: str) -> InstanceNotFoundError:
    """The error for a read or delete of an id that holds no instance."""
    return InstanceNotFoundError(
        f"no workflow instance has id {instance_id!r}; check the id "
        "(instances are `key::value`) or list instances with query()"
    )


def as_utc(moment: datetime) -> datetime:
    """`moment` as an aware datetime; a naive one is taken as UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def to_epoch(moment: datetime) -> float:
    """Seconds since the epoch; a naive `moment` is taken as UTC."""
    return as_utc(moment).timestamp()


def timer_due(instance: Instance) -> datetime | None:
    """The earliest timer of an active instance (aware); `None` when final or timer-less."""
    if not instance.status.is_active:
        return None
    due = instance.next_timer_at
    return None if due is None else as_utc(due)


def timer_epoch(instance: Instance) -> float | None:
    """`timer_due` as seconds since the epoch."""
    due = timer_due(instance)
    return None if due is None else due.timestamp()
