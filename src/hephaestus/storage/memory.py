"""`MemoryStorage`: instances in a dict, for tests, examples and benchmarks.

It keeps every rule of the storage contract exactly as `SQLiteStorage` does
(same errors, same query ordering and paging, timers only of active
instances), so code tested against it behaves the same on disk. Nothing
survives the process.

`open()` and `close()` change nothing: the data lives as long as the object.
Handing one `MemoryStorage` to a second app after the first one closed is how
tests simulate a restart.
"""

from __future__ import annotations

from datetime import UTC, datetime

from hephaestus.core.instance import Instance
from hephaestus.storage.base import (
    AsyncContext,
    Query,
    StorageStats,
    check_put,
    not_found,
    timer_epoch,
    to_epoch,
)

__all__ = ["MemoryStorage"]


class MemoryStorage(AsyncContext):
    """Storage in a dict. Every method completes without yielding, so each call is atomic."""

    def __init__(self) -> None:
        self._instances: dict[str, Instance] = {}
        # Epoch of the earliest timer of each active instance that has one.
        self._timers: dict[str, float] = {}
        self.stats = StorageStats()

    def __repr__(self) -> str:
        return f"MemoryStorage({len(self._instances)} instances)"

    async def open(self) -> None:
        """Nothing to connect to."""

    async def close(self) -> None:
        """Nothing to flush; the instances stay readable."""

    async def get(self, instance_id: str) -> Instance:
        try:
            return self._instances[instance_id]
        except KeyError:
            raise not_found(instance_id) from None

    async def put(self, instance: Instance, expected_revision: int | None) -> None:
        stored = self._instances.get(instance.id)
        check_put(
            instance,
            expected_revision,
            None if stored is None else stored.status,
            None if stored is None else stored.revision,
        )
        self._instances[instance.id] = instance
        due = timer_epoch(instance)
        if due is None:
            self._timers.pop(instance.id, None)
        else:
            self._timers[instance.id] = due
        self.stats.transactions += 1
        self.stats.writes += 1

    async def delete(self, instance_id: str) -> None:
        if self._instances.pop(instance_id, None) is None:
            raise not_found(instance_id)
        self._timers.pop(instance_id, None)
        self.stats.transactions += 1
        self.stats.writes += 1

    async def query(self, query: Query) -> list[Instance]:
        if query.id is not None:
            found = self._instances.get(query.id)
            candidates = [] if found is None else [found]
        else:
            candidates = sorted(self._instances.values(), key=_by_id)
        matching = [instance for instance in candidates if query.matches(instance)]
        return matching if query.limit is None else matching[: query.limit]

    async def due_timers(self, now: datetime, limit: int = 1000) -> list[str]:
        cutoff = to_epoch(now)
        due = sorted((at, instance_id) for instance_id, at in self._timers.items() if at <= cutoff)
        return [instance_id for _, instance_id in due[: max(limit, 0)]]

    async def next_timer_at(self) -> datetime | None:
        if not self._timers:
            return None
        return datetime.fromtimestamp(min(self._timers.values()), UTC)


def _by_id(instance: Instance) -> str:
    return instance.id
