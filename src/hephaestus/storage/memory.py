"""`MemoryStorage`: instances in a dict, for tests, examples and benchmarks.

It keeps every rule of the storage contract exactly as `SQLiteStorage` does
(same errors, same query ordering and paging, timers only of active
instances), so code tested against it behaves the same on disk. Nothing
survives the process.

`open()` and `close()` change nothing: the data lives as long as the object.
Handing one `MemoryStorage` to a second app after the first one closed is how
tests simulate a restart.

Earlier runs: starting an id again after its instance finished keeps the
finished instance as an earlier run (`runs(id)`), up to `keep_runs` per id.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from datetime import UTC, datetime

from hephaestus.core.instance import Instance
from hephaestus.storage.base import (
    AsyncContext,
    Query,
    RunnerRecord,
    StorageStats,
    check_keep_runs,
    check_put,
    not_found,
    timer_epoch,
    to_epoch,
    written_owner,
)

__all__ = ["MemoryStorage"]


class MemoryStorage(AsyncContext):
    """Storage in a dict. Every method completes without yielding, so each call is atomic."""

    def __init__(self, *, keep_runs: int = 10) -> None:
        #: How many earlier runs of an id are kept when it is started again (`runs()`).
        self.keep_runs = check_keep_runs(keep_runs)
        self._instances: dict[str, Instance] = {}
        # Earlier runs of each id, newest first.
        self._runs: dict[str, list[Instance]] = {}
        # Epoch of the earliest timer of each active instance that has one.
        self._timers: dict[str, float] = {}
        self._owners: dict[str, str] = {}
        self._runners: dict[str, RunnerRecord] = {}
        self._changed = asyncio.Event()
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

    async def put(
        self, instance: Instance, expected_revision: int | None, *, owner: str | None = None
    ) -> None:
        stored = self._instances.get(instance.id)
        stored_owner = self._owners.get(instance.id)
        check_put(
            instance,
            expected_revision,
            None if stored is None else stored.status,
            None if stored is None else stored.revision,
            owner=owner,
            stored_owner=stored_owner,
        )
        if expected_revision is None and stored is not None:
            earlier = [stored, *self._runs.get(instance.id, ())][: self.keep_runs]
            self._runs[instance.id] = earlier
        self._instances[instance.id] = instance
        new_owner = written_owner(instance, owner, expected_revision, stored_owner)
        if new_owner is None:
            self._owners.pop(instance.id, None)
        else:
            self._owners[instance.id] = new_owner
        if owner is None:
            self._changed.set()  # a client's write: wake the runners waiting for work
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
        self._owners.pop(instance_id, None)
        self._runs.pop(instance_id, None)
        self.stats.transactions += 1
        self.stats.writes += 1

    async def workflows(self) -> list[str]:
        return sorted({instance.workflow for instance in self._instances.values()})

    async def runs(self, instance_id: str, limit: int = 20) -> list[Instance]:
        return self._runs.get(instance_id, [])[: max(limit, 0)]

    async def query(self, query: Query) -> list[Instance]:
        if query.id is not None:
            found = self._instances.get(query.id)
            candidates = [] if found is None else [found]
        else:
            candidates = sorted(
                self._instances.values(), key=query.sort_key, reverse=query.order == "updated"
            )
        matching = [instance for instance in candidates if query.matches(instance)]
        return matching if query.limit is None else matching[: query.limit]

    async def due_timers(
        self, now: datetime, limit: int = 1000, *, runner_id: str | None = None
    ) -> list[str]:
        cutoff = to_epoch(now)
        due = sorted(
            (at, instance_id)
            for instance_id, at in self._timers.items()
            if at <= cutoff and self._owners.get(instance_id) in (None, runner_id)
        )
        return [instance_id for _, instance_id in due[: max(limit, 0)]]

    async def next_timer_at(self) -> datetime | None:
        if not self._timers:
            return None
        return datetime.fromtimestamp(min(self._timers.values()), UTC)

    # -- ownership --------------------------------------------------------------------------

    async def register_runner(self, runner: RunnerRecord) -> None:
        self._runners[runner.id] = runner

    async def renew_runner(self, runner_id: str, now: float, lease_until: float) -> bool:
        record = self._runners.get(runner_id)
        if record is None:
            return False
        self._runners[runner_id] = dataclasses.replace(
            record, heartbeat_at=now, lease_until=lease_until
        )
        return True

    async def remove_runner(self, runner_id: str) -> None:
        self._runners.pop(runner_id, None)
        self._release(runner_id)

    async def runners(self) -> list[RunnerRecord]:
        return [self._runners[key] for key in sorted(self._runners)]

    async def reap_runners(self, now: float, *, orphans: bool = False) -> list[str]:
        dead = sorted(key for key, record in self._runners.items() if record.is_reapable(now))
        for runner_id in dead:
            await self.remove_runner(runner_id)
        if orphans:
            for instance_id, owner in list(self._owners.items()):
                if owner not in self._runners:
                    del self._owners[instance_id]
        return dead

    async def claim(
        self,
        runner_id: str,
        *,
        instance_id: str | None = None,
        instance_ids: Sequence[str] | None = None,
        limit: int = 100,
    ) -> list[Instance]:
        if runner_id not in self._runners:
            return []  # only a registered runner claims: one that was reaped can own nothing
        if instance_id is not None or instance_ids is not None:
            wanted = [instance_id] if instance_id is not None else instance_ids or ()
            taken = []
            for wanted_id in dict.fromkeys(wanted):
                found = self._instances.get(wanted_id)
                if (
                    found is not None
                    and found.status.is_active
                    and self._owners.get(wanted_id) in (None, runner_id)
                ):
                    taken.append(found)
        else:
            taken = [
                instance
                for instance in sorted(self._instances.values(), key=_by_id)
                if instance.needs_runner and instance.id not in self._owners
            ][: max(limit, 0)]
        for instance in taken:
            self._owners[instance.id] = runner_id
        return taken

    async def commands_for(self, runner_id: str, limit: int = 100) -> list[str]:
        return [
            instance_id
            for instance_id in sorted(self._owners)
            if self._owners[instance_id] == runner_id
            and self._instances[instance_id].has_new_commands
        ][: max(limit, 0)]

    async def owner_of(self, instance_id: str) -> str | None:
        if instance_id not in self._instances:
            raise not_found(instance_id)
        return self._owners.get(instance_id)

    async def wait_for_changes(self, timeout: float) -> None:
        try:
            async with asyncio.timeout(timeout):
                await self._changed.wait()
        except TimeoutError:
            return
        self._changed.clear()

    async def quarantined(self, limit: int = 100) -> list[tuple[str, str]]:
        return []  # it holds instance values, never rows that could be corrupt

    # -- operators --------------------------------------------------------------------------

    async def counts(self) -> dict[tuple[str, str], int]:
        counted: dict[tuple[str, str], int] = {}
        for instance in self._instances.values():
            key = (instance.workflow, instance.status.value)
            counted[key] = counted.get(key, 0) + 1
        return counted

    def _release(self, runner_id: str) -> None:
        for instance_id in [key for key, owner in self._owners.items() if owner == runner_id]:
            del self._owners[instance_id]
        self._changed.set()


def _by_id(instance: Instance) -> str:
    return instance.id
