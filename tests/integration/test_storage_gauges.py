"""Prometheus gauges read from the storage: instances by workflow and status, overdue
timers, runners. Read by `StorageGauges.refresh()` (the loop calls it on an interval)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry

from hephaestus import Context, Done, MemoryStorage, Ok, Step, Unique, Workflow
from hephaestus.core import engine
from hephaestus.core.instance import Instance, Status, Timer
from hephaestus.storage.base import RunnerRecord
from hephaestus.telemetry.prometheus import StorageGauges


class GgStep(Step):
    events = ("ok",)

    def execute(self, instance: object, config: object, context: object) -> Ok:
        return Ok("ok")


class GgFlow(Workflow):
    unique = Unique(key="gg")
    start = GgStep
    transitions = {(GgStep, "ok"): Done}


def make(instance_id: str, status: Status, **changes: object) -> Instance:
    instance = engine.new_instance(
        GgFlow.definition(),
        instance_id=instance_id,
        context=Context.new({}),
        now=datetime.now(UTC),
    ).instance
    return instance.evolve(status=status, **changes)


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


async def test_gauges_count_instances_overdue_timers_and_runners() -> None:
    storage = MemoryStorage()
    late = Timer(id="t", step="gg_step", due_at=datetime.now(UTC) - timedelta(minutes=5))
    soon = Timer(id="t", step="gg_step", due_at=datetime.now(UTC) + timedelta(minutes=5))
    await storage.put(make("gg::1", Status.RUNNING), None)
    await storage.put(make("gg::2", Status.FAILED), None)
    await storage.put(make("gg::3", Status.FAILED), None)
    await storage.put(make("gg::4", Status.WAITING, timers=(late,)), None)
    await storage.put(make("gg::5", Status.WAITING, timers=(soon,)), None)
    now = time.time()
    await storage.register_runner(RunnerRecord("r1", "h", 1, now, now, now + 60))
    await storage.register_runner(RunnerRecord("r2", "h", 2, now - 99, now - 99, now - 90))
    registry = CollectorRegistry()
    gauges = StorageGauges(storage, registry, grace=60)
    await gauges.refresh()

    workflow = make("gg::x", Status.RUNNING).workflow
    assert value(registry, "hephaestus_instances", workflow=workflow, status="failed") == 2
    assert value(registry, "hephaestus_instances", workflow=workflow, status="waiting") == 2
    assert value(registry, "hephaestus_timers_overdue") == 1
    assert value(registry, "hephaestus_runners", state="live") == 1
    assert value(registry, "hephaestus_runners", state="lapsed") == 1
    assert (value(registry, "hephaestus_gauges_refreshed_timestamp_seconds") or 0) >= now

    # A status that empties goes to zero rather than keeping its last value.
    await storage.delete("gg::1")
    await gauges.refresh()
    assert value(registry, "hephaestus_instances", workflow=workflow, status="running") == 0


async def test_the_loop_refreshes_until_stopped() -> None:
    storage = MemoryStorage()
    registry = CollectorRegistry()
    gauges = StorageGauges(storage, registry, interval=0.01)
    gauges.start()
    await storage.put(make("gg::1", Status.RUNNING), None)
    workflow = make("gg::x", Status.RUNNING).workflow
    async with asyncio.timeout(5):
        while value(registry, "hephaestus_instances", workflow=workflow, status="running") != 1:
            await asyncio.sleep(0.01)
    await gauges.stop()
    assert gauges._task is None
