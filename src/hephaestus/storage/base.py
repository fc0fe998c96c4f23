"""The storage contract: what the runtime needs from a place that keeps instances.

**Protocol**: any object with these coroutine methods is a storage. The
runtime never reaches around it, so memory, SQLite and PostgreSQL adapters
are interchangeable, and one contract test suite runs against all of them.

Rules every adapter keeps:

- One record per instance id. `put(instance, None)` creates: it raises
  `AlreadyRunningError` if an *active* instance (pending, running, waiting)
  holds the id, and replaces a finished one (the business key is free again),
  which is kept as an earlier run (`runs`).
- `put(instance, expected_revision)` updates only if the stored revision is
  `expected_revision`; otherwise it raises `ConcurrencyError` and writes
  nothing (a missing record raises `InstanceNotFoundError`).
- Durable timers are stored inside the instance; adapters index the earliest
  due time (`Instance.next_timer_at`) of active instances so that
  `due_timers` and `next_timer_at` are cheap.

**Ownership.** Many processes may share one storage, but only one runner
executes an instance's steps: its *owner*, kept beside the instance (not in
it). Runners register with a lease they renew (`register_runner`,
`renew_runner`); `claim` takes instances that need a runner and have no
owner, atomically, so two runners never take the same one. A runner whose
lease lapsed is reaped by the others (`reap_runners`): its instances lose
their owner and are claimed again. `put(..., owner=runner_id)` is how an
owner writes: it is refused with `OwnershipError` once another runner owns
the instance. A plain `put` is a client's write and leaves the owner as it is.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Literal, Protocol, Self, runtime_checkable

from hephaestus.core.instance import Instance, Status
from hephaestus.errors import (
    AlreadyRunningError,
    ConcurrencyError,
    CorruptInstanceError,
    InstanceNotFoundError,
    OwnershipError,
)
from hephaestus.storage._layout import Known, assemble

__all__ = ["Query", "QueryOrder", "RunnerRecord", "Storage", "StorageStats", "prefix_range"]

logger = logging.getLogger("hephaestus.storage")


#: How `Storage.query` orders its results: by id, or by last change (newest first).
QueryOrder = Literal["id", "updated"]


@dataclass(frozen=True, slots=True)
class Query:
    """Filters of `Storage.query`.

    With `order="id"` (the default) results are ordered by id and `after`
    pages past an id. With `order="updated"` they are ordered by last change,
    newest first (`updated_at`, then id, both descending), and `cursor` pages
    past the `(updated_at, id)` of the last instance of the previous page
    (keyset paging: every page is an index range, however deep). `id_prefix`
    keeps ids that start with it; `updated_since` instances changed at or
    after it (a naive datetime is UTC).
    """

    id: str | None = None
    status: Status | None = None
    status_in: tuple[Status, ...] | None = None
    workflow: str | None = None
    workflow_in: tuple[str, ...] | None = None
    workflow_version: int | None = None
    limit: int | None = None
    after: str | None = None
    id_prefix: str | None = None
    updated_since: datetime | None = None
    order: QueryOrder = "id"
    cursor: tuple[datetime, str] | None = None

    def __post_init__(self) -> None:
        if self.limit is not None and (isinstance(self.limit, bool) or self.limit < 0):
            raise ValueError(f"Query limit must be None or an int >= 0, got {self.limit!r}")
        if self.order not in ("id", "updated"):
            raise ValueError(f"Query order must be 'id' or 'updated', got {self.order!r}")
        if self.cursor is not None and self.order != "updated":
            raise ValueError("Query cursor pages an order='updated' query; use after= by id")
        if self.after is not None and self.order != "id":
            raise ValueError("Query after= pages by id; page order='updated' with cursor=")

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
            and (self.id_prefix is None or instance.id.startswith(self.id_prefix))
            and (
                self.updated_since is None
                or as_utc(instance.updated_at) >= as_utc(self.updated_since)
            )
            and (
                self.cursor is None
                or (as_utc(instance.updated_at), instance.id)
                < (as_utc(self.cursor[0]), self.cursor[1])
            )
        )

    def sort_key(self, instance: Instance) -> tuple[datetime, str] | str:
        """The key results are ordered by (ascending; `order="updated"` is then reversed)."""
        if self.order == "updated":
            return (as_utc(instance.updated_at), instance.id)
        return instance.id


def prefix_range(prefix: str) -> tuple[str, str | None]:
    """`(low, high)` such that a string starts with `prefix` iff `low <= s < high`.

    `high` is `None` when no string bounds it (so only `low` applies). Lets a
    prefix search use the id's index in every adapter.
    """
    for end in range(len(prefix) - 1, -1, -1):
        if ord(prefix[end]) < 0x10FFFF:
            return prefix, prefix[:end] + chr(ord(prefix[end]) + 1)
    return prefix, None


@dataclass(frozen=True, slots=True)
class RunnerRecord:
    """A runner process as registered in storage: who it is and until when its lease holds.

    Times are seconds since the epoch, from the runners' own clocks (keep the
    clocks of machines that share a database in sync, as NTP does).
    """

    id: str
    host: str
    pid: int
    started_at: float
    heartbeat_at: float
    lease_until: float

    def is_live(self, now: float) -> bool:
        return self.lease_until > now

    def is_reapable(self, now: float) -> bool:
        """Lapsed by a quarter of its lease: a runner that is only slow has stopped by then."""
        return self.lease_until + (self.lease_until - self.heartbeat_at) * 0.25 <= now


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

    async def put(
        self, instance: Instance, expected_revision: int | None, *, owner: str | None = None
    ) -> None:
        """Create (`expected_revision=None`) or update the instance atomically.

        With `owner`, the write is the owning runner's: a create records it as
        the owner, an update is refused with `OwnershipError` unless it still
        is. Without, the owner is left as it is (a client's write; a create has none).
        """

    async def delete(self, instance_id: str) -> None:
        """Remove the instance; raises `InstanceNotFoundError` if there is none."""

    async def query(self, query: Query) -> list[Instance]:
        """Instances matching `query`, ordered by id."""

    async def workflows(self) -> list[str]:
        """The workflow names instances are stored under, sorted (found by index, not by
        reading every instance)."""

    async def runs(self, instance_id: str, limit: int = 20) -> list[Instance]:
        """Earlier runs of the id, newest first (the current record not included).

        A create over a finished instance keeps it as an earlier run; adapters keep
        the `keep_runs` latest (a constructor setting, 10 by default) and drop older
        ones with their history. `delete` drops them all.
        """

    async def due_timers(
        self, now: datetime, limit: int = 1000, *, runner_id: str | None = None
    ) -> list[str]:
        """Ids of active instances whose earliest timer is due at `now`, earliest first.

        With `runner_id`, only those it may fire: owned by it, or by no runner.
        """

    async def next_timer_at(self) -> datetime | None:
        """When the earliest timer of any active instance is due, or `None`."""

    # -- ownership ----------------------------------------------------------------------

    async def register_runner(self, runner: RunnerRecord) -> None:
        """Record a runner process and its first lease."""

    async def renew_runner(self, runner_id: str, now: float, lease_until: float) -> bool:
        """Extend a runner's lease; `False` if it is no longer registered (it was reaped)."""

    async def remove_runner(self, runner_id: str) -> None:
        """Forget a runner that stops, releasing the instances it owns."""

    async def runners(self) -> list[RunnerRecord]:
        """The registered runners, live or lapsed, ordered by id."""

    async def reap_runners(self, now: float, *, orphans: bool = False) -> list[str]:
        """Remove every runner whose lease lapsed at `now` (by a quarter of the lease, see
        `RunnerRecord.is_reapable`), releasing its instances.

        With `orphans`, also release instances whose owner is not registered.
        """

    async def claim(
        self,
        runner_id: str,
        *,
        instance_id: str | None = None,
        instance_ids: Sequence[str] | None = None,
        limit: int = 100,
    ) -> list[Instance]:
        """Make `runner_id` the owner of instances that need a runner; returns those taken.

        With `instance_id`: that instance, if it is active and has no owner or
        is `runner_id`'s already. With `instance_ids`: each of those on the same
        terms, in one transaction (a runner firing a batch of due timers).
        Without: up to `limit` instances with no owner that need a runner
        (`Instance.needs_runner`). Only a registered runner claims anything.
        """

    async def commands_for(self, runner_id: str, limit: int = 100) -> list[str]:
        """Ids of instances owned by `runner_id` whose inbox has items it has not seen."""

    async def owner_of(self, instance_id: str) -> str | None:
        """The runner that owns the instance, or `None`; raises `InstanceNotFoundError`."""

    async def wait_for_changes(self, timeout: float) -> None:
        """Return when another process may have written, or after `timeout` seconds."""

    # -- corrupt rows -------------------------------------------------------------------

    async def quarantined(self, limit: int = 100) -> list[tuple[str, str]]:
        """`(id, problem)` of rows set aside because they cannot be read as instances."""

    # -- operators ----------------------------------------------------------------------

    async def counts(self) -> dict[tuple[str, str], int]:
        """How many instances there are per `(workflow, status)`; quarantined rows excluded.

        One grouped, index-only query: cheap enough to poll for metrics.
        """


def check_put(
    instance: Instance,
    expected_revision: int | None,
    stored_status: Status | None,
    stored_revision: int | None,
    *,
    owner: str | None = None,
    stored_owner: str | None = None,
) -> None:
    """Raise the error the storage rules demand for writing `instance` over the stored record.

    `stored_status`, `stored_revision` and `stored_owner` describe the record
    that holds `instance.id` (`None` when there is none); `owner` is the
    runner writing, if it is one. Every adapter calls this before writing, so
    they all refuse the same writes with the same messages.
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
    if owner is not None and stored_owner != owner:
        raise OwnershipError(
            f"instance {instance.id} is now owned by "
            f"{'no runner' if stored_owner is None else 'runner ' + stored_owner}, not by runner "
            f"{owner} (its lease lapsed and the instance was taken over); this runner must "
            "stop running it"
        )
    if stored_revision != expected_revision:
        raise ConcurrencyError(
            f"instance {instance.id} is at revision {stored_revision}, not {expected_revision}: "
            "it was changed since it was read; read it again and retry"
        )


def written_owner(
    instance: Instance, owner: str | None, expected_revision: int | None, stored_owner: str | None
) -> str | None:
    """The owner to store with a write that `check_put` allowed."""
    if not instance.status.is_active:
        return None  # a finished instance needs no runner
    if owner is not None or expected_revision is None:
        return owner  # the runner writing, or whoever creates (a client's create has none)
    return stored_owner  # a client's update leaves the owner as it is


Log = Iterable[tuple[int, str | bytes]]
"""The log rows of a run, `(seq, json)`."""


def decode(row_id: str, head: str | bytes, log: Log, run: int) -> Known:
    """The instance a head row and its log hold; `CorruptInstanceError` naming the row if none.

    A head that is not JSON, lacks a field, holds an unknown status or a bad
    timestamp, misses log rows, or names another id than its row is corrupt:
    every adapter then quarantines the row (`problem`) and goes on with the others.
    """
    try:
        known = assemble(head, log, run)
    except Exception as exc:  # whatever the bytes are, they are not an instance
        raise corrupt(row_id, f"{type(exc).__name__}: {exc}") from exc
    if known.instance.id != row_id:
        mismatch = ValueError(f"its document is the instance {known.instance.id!r}")
        raise corrupt(row_id, str(mismatch)) from mismatch
    return known


async def decode_stored(
    row_id: str,
    head: str | bytes,
    log: Log,
    run: int,
    problem: str | None,
    quarantine: Callable[[list[tuple[str, str]]], Awaitable[None]],
) -> Known:
    """The instance of a row read by id; a corrupt one is quarantined, then raised as such."""
    if problem is not None:
        raise corrupt(row_id, problem)
    try:
        return decode(row_id, head, log, run)
    except CorruptInstanceError as exc:
        await quarantine([(row_id, problem_of(exc))])
        raise


def decode_rows(
    rows: Iterable[tuple[str, str | bytes, Log, int]],
) -> tuple[list[Known], list[tuple[str, str]]]:
    """The instances of `(id, head, log, run)` rows, and `(id, problem)` for the corrupt ones."""
    instances: list[Known] = []
    bad: list[tuple[str, str]] = []
    for row_id, head, log, run in rows:
        try:
            instances.append(decode(row_id, head, log, run))
        except CorruptInstanceError as exc:
            bad.append((row_id, problem_of(exc)))
    return instances, bad


def problem_of(exc: CorruptInstanceError) -> str:
    """What is wrong with a corrupt row, as kept with it (bounded)."""
    cause = exc.__cause__
    text = f"{type(cause).__name__}: {cause}" if cause is not None else str(exc)
    return text[:PROBLEM_LIMIT]


def log_quarantined(storage: object, bad: list[tuple[str, str]]) -> None:
    for row_id, problem in bad:
        logger.error(
            "%r: stored instance %s cannot be read (%s); quarantined, the others run on",
            storage,
            row_id,
            problem,
        )


def corrupt(row_id: str, problem: str) -> CorruptInstanceError:
    return CorruptInstanceError(
        f"stored instance {row_id} cannot be read ({problem}); it is quarantined and no "
        "runner touches it: see `hephaestus instances list --status corrupt`, then repair "
        "or delete the row"
    )


#: Longest problem text kept with a quarantined row.
PROBLEM_LIMIT = 500


def not_found(instance_id: str) -> InstanceNotFoundError:
    """The error for a read or delete of an id that holds no instance."""
    return InstanceNotFoundError(
        f"no workflow instance has id {instance_id!r}; check the id "
        "(instances are `key::value`) or list instances with list() "
        "(`hephaestus instances list` on the command line)"
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


def restarted(instance_id: str) -> ConcurrencyError:
    """The error for an update of a run that is no longer the stored one."""
    return ConcurrencyError(
        f"instance {instance_id} was started again since it was read (a new run now holds "
        "its id); read it again and retry"
    )


def check_keep_runs(keep_runs: int) -> int:
    """`keep_runs`, if it is a valid number of earlier runs to keep."""
    if isinstance(keep_runs, bool) or not isinstance(keep_runs, int) or keep_runs < 0:
        raise ValueError(f"keep_runs must be an int >= 0, got {keep_runs!r}")
    return keep_runs
