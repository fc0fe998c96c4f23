"""What the dashboard's pages show, read from the storage: no HTML here, only data.

The list page is one keyset page of an indexed query (`Query(order="updated",
cursor=...)`) plus status counts that are cached for a couple of seconds, so
its cost does not grow with the number of instances. Stuck instances are
found by index too: running instances last changed before the grace period,
and timers due before it (`Storage.due_timers`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from hephaestus.core.engine import RETRY_EVENT
from hephaestus.core.instance import ExecutionEntry, Instance, Status
from hephaestus.storage.base import Query, RunnerRecord, Storage

__all__ = [
    "ListFilters",
    "StatusCounts",
    "Stuck",
    "decode_cursor",
    "encode_cursor",
    "find_stuck",
    "history_rows",
    "parse_filters",
]

PAGE_SIZE = 50
MAX_PAGE_SIZE = 500


@dataclass(frozen=True, slots=True)
class ListFilters:
    """The list page's filters, as read from its query string."""

    status: Status | None = None
    workflow: str | None = None
    version: int | None = None
    search: str | None = None
    since: datetime | None = None
    cursor: tuple[datetime, str] | None = None
    limit: int = PAGE_SIZE
    problems: tuple[str, ...] = ()

    def query(self, *, extra: int = 1) -> Query:
        """The storage query of one page (and `extra` rows more, to see if a next page exists)."""
        return Query(
            status=self.status,
            workflow=self.workflow,
            workflow_version=self.version,
            id_prefix=self.search,
            updated_since=self.since,
            order="updated",
            cursor=self.cursor,
            limit=self.limit + extra,
        )

    def params(self, **changes: Any) -> dict[str, str]:
        """The query-string parameters of these filters (with `changes`), for links."""
        values: dict[str, Any] = {
            "status": self.status.value if self.status else None,
            "workflow": self.workflow,
            "version": self.version,
            "q": self.search,
            "since": self.since.strftime("%Y-%m-%dT%H:%M") if self.since else None,
            "limit": self.limit if self.limit != PAGE_SIZE else None,
        }
        values.update(changes)
        return {key: str(value) for key, value in values.items() if value not in (None, "")}


def parse_filters(params: Mapping[str, str]) -> ListFilters:
    """Filters from a query string; a malformed value is ignored and reported in `problems`."""
    problems: list[str] = []
    status = None
    if params.get("status"):
        try:
            status = Status(params["status"])
        except ValueError:
            problems.append(f"unknown status {params['status']!r}")
    version = None
    if params.get("version"):
        try:
            version = int(params["version"])
        except ValueError:
            problems.append(f"version must be a number, got {params['version']!r}")
    since = None
    if params.get("since"):
        try:
            since = _utc(datetime.fromisoformat(params["since"]))
        except ValueError:
            problems.append(f"'updated since' must be a date and time, got {params['since']!r}")
    cursor = None
    if params.get("cursor"):
        cursor = decode_cursor(params["cursor"])
        if cursor is None:
            problems.append("the page link is malformed; showing the first page")
    limit = PAGE_SIZE
    if params.get("limit"):
        try:
            limit = min(max(int(params["limit"]), 1), MAX_PAGE_SIZE)
        except ValueError:
            problems.append(f"limit must be a number, got {params['limit']!r}")
    return ListFilters(
        status=status,
        workflow=params.get("workflow") or None,
        version=version,
        search=params.get("q", "").strip() or None,
        since=since,
        cursor=cursor,
        limit=limit,
        problems=tuple(problems),
    )


def encode_cursor(instance: Instance) -> str:
    """The cursor of the page after `instance`: its last change and its id."""
    return f"{_utc(instance.updated_at).isoformat()}|{instance.id}"


def decode_cursor(text: str) -> tuple[datetime, str] | None:
    at, bar, instance_id = text.partition("|")
    if not bar or not instance_id:
        return None
    try:
        return _utc(datetime.fromisoformat(at)), instance_id
    except ValueError:
        return None


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


class StatusCounts:
    """`Storage.counts()`, read at most once per `ttl` seconds (one grouped, indexed query)."""

    def __init__(self, storage: Storage, ttl: float = 2.0) -> None:
        self._storage = storage
        self._ttl = ttl
        self._read_at = -1e9
        self._counts: dict[tuple[str, str], int] = {}

    async def get(self) -> dict[tuple[str, str], int]:
        if time.monotonic() - self._read_at > self._ttl:
            self._counts = await self._storage.counts()
            self._read_at = time.monotonic()
        return self._counts

    def invalidate(self) -> None:
        self._read_at = -1e9

    async def by_status(self, workflow: str | None = None) -> dict[str, int]:
        """Instances per status (every status listed, zeros included), of one workflow or all."""
        totals = {status.value: 0 for status in Status}
        for (name, status), count in (await self.get()).items():
            if workflow is None or name == workflow:
                totals[status] = totals.get(status, 0) + count
        return totals

    async def workflows(self) -> list[str]:
        return sorted({name for name, _ in await self.get()})


@dataclass(frozen=True, slots=True)
class Stuck:
    """Instances an operator should look at, and why."""

    unowned: list[tuple[Instance, str]] = field(default_factory=list)
    overdue: list[tuple[Instance, datetime]] = field(default_factory=list)


async def find_stuck(
    storage: Storage,
    runners: list[RunnerRecord],
    *,
    now: datetime,
    grace: float,
    limit: int = 50,
) -> Stuck:
    """Running instances whose owner is not live, and timers overdue, both by more than `grace` s.

    A running instance that no live runner owns and that has not changed for
    `grace` seconds is stuck (no runner is up, or none can run its workflow);
    so is an active instance whose timer is `grace` seconds overdue.
    """
    live = {runner.id for runner in runners if runner.is_live(now.timestamp())}
    before = now - timedelta(seconds=grace)
    unowned: list[tuple[Instance, str]] = []
    running = await storage.query(
        Query(status=Status.RUNNING, order="updated", cursor=(before, ""), limit=limit)
    )
    for instance in running:
        try:
            owner = await storage.owner_of(instance.id)
        except Exception:  # deleted meanwhile: nothing to report
            continue
        if owner is None:
            unowned.append((instance, "no runner has claimed it"))
        elif owner not in live:
            unowned.append((instance, f"its owner {owner} is not live"))
    overdue: list[tuple[Instance, datetime]] = []
    for instance_id in await storage.due_timers(before, limit):
        try:
            instance = await storage.get(instance_id)
        except Exception:
            continue
        due = instance.next_timer_at
        if due is not None:
            overdue.append((instance, due))
    return Stuck(unowned, overdue)


@dataclass(frozen=True, slots=True)
class HistoryRow:
    number: int
    entry: ExecutionEntry
    data: str | None
    elapsed: float
    is_retry: bool


def history_rows(instance: Instance) -> list[HistoryRow]:
    """The history as timeline rows: data as indented JSON, elapsed since the start."""
    rows = []
    for number, entry in enumerate(instance.execution_history, start=1):
        data = None
        if entry.context_updates:
            data = json.dumps(entry.context_updates, indent=2, ensure_ascii=False, default=repr)
        rows.append(
            HistoryRow(
                number,
                entry,
                data,
                (entry.timestamp - instance.created_at).total_seconds(),
                entry.event == RETRY_EVENT,
            )
        )
    return rows
