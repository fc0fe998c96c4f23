"""Retry a failed instance, and keep the earlier runs of an id, on every runner and storage.

`app.retry(id)` puts a failed instance back to `running` from the steps that
failed; the local runner runs them at once, the distributed runner through
its jobs, and in client mode whichever runner shares the storage.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from hephaestus import (
    Context,
    Done,
    Error,
    Hephaestus,
    Instance,
    InstanceNotFailedError,
    InstanceNotFoundError,
    MemoryStorage,
    Ok,
    Status,
    Step,
    Unique,
    Workflow,
)
from hephaestus.core.engine import RETRY_EVENT

# Instance ids whose flaky step fails while they are in the set.
RT_BROKEN: set[str] = set()
# (instance id, step, attempt) of every attempt.
RT_RUNS: list[tuple[str, str, int]] = []


class RtRyLoad(Step):
    events = ("loaded",)
    key = "load"

    def execute(self, instance: Instance, config: Mapping[str, Any] | None, context: Context) -> Ok:
        RT_RUNS.append((instance.id, self.key, context.attempt))
        return Ok("loaded", {"rows": 3})


class RtRyPush(Step):
    events = ("pushed",)
    key = "push"

    def execute(
        self, instance: Instance, config: Mapping[str, Any] | None, context: Context
    ) -> Ok | Error:
        RT_RUNS.append((instance.id, self.key, context.attempt))
        if instance.id in RT_BROKEN:
            return Error("the remote end refused the push")
        return Ok("pushed", {"rows": context.steps["load"]["rows"]})


class RtRyFlow(Workflow):
    unique = Unique(key="sync")
    start = RtRyLoad
    transitions = {(RtRyLoad, "loaded"): RtRyPush, (RtRyPush, "pushed"): Done}


async def failed(app: Hephaestus, value: str) -> str:
    RT_BROKEN.add(f"sync::{value}")
    iid = await app.start_business(RtRyFlow, value, {"n": 1})
    instance = await app.wait(iid, timeout=20)
    assert instance.status is Status.FAILED
    return iid


def check_retried(instance: Instance) -> None:
    assert instance.status is Status.COMPLETED
    assert instance.error is None
    assert instance.context.steps["push"] == {"rows": 3}
    events = [(entry.step, entry.event) for entry in instance.execution_history]
    assert events == [
        ("load", "loaded"),
        ("push", RETRY_EVENT),
        ("push", "pushed"),
        ("done", "done"),
    ]
    retry_entry = instance.execution_history[1]
    assert "the remote end refused the push" in retry_entry.context_updates["error"]  # type: ignore[index]


@pytest.mark.both_runners
async def test_retry_runs_the_failed_step_again_and_completes(app: Hephaestus) -> None:
    iid = await failed(app, "r1")
    RT_BROKEN.clear()
    await app.retry(iid)
    instance = await app.wait(iid, timeout=20)
    check_retried(instance)
    # The load step ran once; the push ran once failing, once after the retry, at attempt 1.
    assert [(step, attempt) for i, step, attempt in RT_RUNS if i == iid] == [
        ("load", 1),
        ("push", 1),
        ("push", 1),
    ]


@pytest.mark.both_runners
async def test_retry_refuses_what_is_not_failed_and_writes_nothing(app: Hephaestus) -> None:
    iid = await app.start_business(RtRyFlow, "r2", {"n": 1})
    done = await app.wait(iid, timeout=20)
    with pytest.raises(InstanceNotFailedError, match=r"sync::r2 is completed, not failed"):
        await app.retry(iid)
    assert await app.get(iid) == done
    with pytest.raises(InstanceNotFoundError):
        await app.retry("sync::nobody")


@pytest.mark.both_runners
async def test_the_facade_retries_by_business_value(app: Hephaestus) -> None:
    iid = await failed(app, "r3")
    RT_BROKEN.clear()
    await RtRyFlow.retry("r3", hephaestus=app)
    check_retried(await app.wait(iid, timeout=20))


async def test_retry_on_memory_storage(open_app: Any) -> None:
    app = await open_app(MemoryStorage())
    iid = await failed(app, "m1")
    RT_BROKEN.clear()
    await app.retry(iid)
    check_retried(await app.wait(iid, timeout=10))


async def test_a_client_retries_and_a_runner_elsewhere_completes(
    open_app: Any, db_path: Path
) -> None:
    runner = await open_app(db_path, work_poll_interval=0.05)
    client = Hephaestus(storage=runner.storage.__class__(db_path), runner=None, facade=False)
    async with client:
        iid = await failed(client, "c1")
        RT_BROKEN.clear()
        await client.retry(iid)
        check_retried(await client.wait(iid, timeout=20))


# -- runs kept on id reuse ------------------------------------------------------------------


async def two_runs(app: Hephaestus) -> str:
    iid = await failed(app, "again")
    RT_BROKEN.clear()
    await app.start_business(RtRyFlow, "again", {"n": 2})
    assert (await app.wait(iid, timeout=20)).status is Status.COMPLETED
    return iid


async def test_runs_lists_the_current_run_then_the_earlier_ones(open_app: Any) -> None:
    app = await open_app(MemoryStorage())
    iid = await two_runs(app)
    runs = await app.runs(iid)
    assert [(run.status, run.context.initial["n"]) for run in runs] == [
        (Status.COMPLETED, 2),
        (Status.FAILED, 1),
    ]
    assert "refused the push" in (runs[1].error or "")


@pytest.mark.both_runners
async def test_runs_are_kept_by_the_runners_storages(app: Hephaestus) -> None:
    iid = await two_runs(app)
    assert [run.status for run in await app.runs(iid)] == [Status.COMPLETED, Status.FAILED]


async def test_runs_of_an_unknown_id_raises(open_app: Any) -> None:
    app = await open_app(MemoryStorage())
    with pytest.raises(InstanceNotFoundError):
        await app.runs("sync::nobody")


async def test_the_sync_client_retries_for_a_runner_to_run(open_app: Any, db_path: Path) -> None:
    import asyncio

    from hephaestus.sync import SyncClient

    runner = await open_app(db_path, work_poll_interval=0.05)
    iid = await failed(runner, "s1")
    RT_BROKEN.clear()

    def from_a_script() -> Instance:
        with SyncClient(f"sqlite:///{db_path}") as client:
            client.retry(iid)
            return client.wait(iid, timeout=20)

    check_retried(await asyncio.to_thread(from_a_script))


@pytest.mark.both_runners
async def test_retry_of_a_running_instance_is_refused_at_once(app: Hephaestus) -> None:
    import asyncio

    iid = await app.start_business(RtRyGated, "g1", {})
    await app.wait(iid, status="waiting", timeout=20)
    async with asyncio.timeout(5):
        with pytest.raises(InstanceNotFailedError, match="sync::g1 is waiting, not failed"):
            await app.retry(iid)
    await app.cancel(iid)


class RtRyGate(Step):
    events = ("opened",)
    key = "gate"

    def execute(
        self, instance: Instance, config: Mapping[str, Any] | None, context: Context
    ) -> Any:
        from hephaestus import Async

        return Async()


class RtRyGated(Workflow):
    unique = Unique(key="sync")
    start = RtRyGate
    transitions = {(RtRyGate, "opened"): Done}
