"""Steps that misbehave: raise `BaseException`s, swallow cancellation, block the event loop.

Whatever a step does fails only its own attempt: the runner goes on running
the other instances. Only a cancel of the runner's own task (a `cancel()`, a
shutdown) stops a step without failing it, and an interrupt of the process
still stops the process.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import hephaestus as hephaestus_package
from hephaestus import Context, Done, Instance, Ok, Retry, Status, Step, Unique, Workflow
from hephaestus.app import Hephaestus
from hephaestus.runners import _shell
from hephaestus.runners._shell import new_instance, run_attempt
from hephaestus.storage import SQLiteStorage

# Attempts each step saw, by instance id.
RT_ATTEMPTS: dict[str, list[int]] = {}
# Events the steps of a test wait on or set, created in the test's own event loop.
RT_EVENTS: dict[str, asyncio.Event] = {}

SOURCE = Path(hephaestus_package.__file__).resolve().parent.parent


class Meltdown(BaseException):
    """Derives from BaseException only, as a library's own 'fatal' exception might."""


def _raising(kind: str) -> BaseException:
    return {
        "SystemExit": SystemExit(3),
        "KeyboardInterrupt": KeyboardInterrupt("pressed in a step"),
        "Meltdown": Meltdown("core too hot"),
        "CancelledError": asyncio.CancelledError("cancelled by the step itself"),
        "GeneratorExit": GeneratorExit("closed by the step itself"),
        "StopIteration": StopIteration("ran out"),
    }[kind]


class Finish(Step):
    events = ("finished",)

    def execute(self, instance: Instance, config: Mapping[str, Any] | None, context: Context) -> Ok:
        return Ok("finished")


class CalmFlow(Workflow):
    """Runs alongside the hostile ones: it must complete."""

    unique = Unique(key="calm")
    start = Finish
    transitions = {(Finish, "finished"): Done}


def _flow(kind: str, mode: str) -> type[Workflow]:
    """A workflow whose one step raises `kind`: sync (in a thread), async, async with a timeout."""

    def run(instance: Instance, context: Context) -> Ok:
        RT_ATTEMPTS.setdefault(instance.id, []).append(context.attempt)
        raise _raising(kind)

    def execute_sync(
        self: Step, instance: Instance, config: Mapping[str, Any] | None, context: Context
    ) -> Ok:
        return run(instance, context)

    async def execute_async(
        self: Step, instance: Instance, config: Mapping[str, Any] | None, context: Context
    ) -> Ok:
        await asyncio.sleep(0)
        return run(instance, context)

    name = f"Raise{kind}{mode.title().replace('-', '')}"
    step = type(
        name,
        (Step,),
        {
            "__module__": __name__,
            "__qualname__": name,
            "events": ("done",),
            "retry": Retry(max_attempts=2, backoff="constant", base=0.01),
            "timeout": 5.0 if mode == "async-timeout" else None,
            "execute": execute_sync if mode == "sync" else execute_async,
        },
    )
    flow_name = f"{name}Flow"
    flow: type[Workflow] = type(
        flow_name,
        (Workflow,),
        {
            "__module__": __name__,
            "__qualname__": flow_name,
            "unique": Unique(key=name.lower()),
            "start": step,
            "transitions": {(step, "done"): Done},
        },
    )
    return flow


CASES = [
    *[(kind, "sync") for kind in ("SystemExit", "KeyboardInterrupt", "Meltdown", "StopIteration")],
    *[
        (kind, mode)
        for mode in ("async", "async-timeout")
        for kind in (
            "SystemExit",
            "KeyboardInterrupt",
            "Meltdown",
            "CancelledError",
            "GeneratorExit",
        )
    ],
]
FLOWS = {case: _flow(*case) for case in CASES}


@pytest.mark.parametrize(("kind", "mode"), CASES, ids=[f"{k}-{m}" for k, m in CASES])
async def test_a_step_raising_a_base_exception_fails_its_attempts_and_nothing_else(
    app: Hephaestus, wait_for: Any, kind: str, mode: str
) -> None:
    flow = FLOWS[(kind, mode)]
    hostile = await app.start_instance(flow, {}, id=f"{flow.__name__.lower()}::1")
    calm = await app.start_instance(CalmFlow, {}, id="calm::1")

    failed = await wait_for(app, hostile, lambda i: i.status.is_final)
    assert failed.status is Status.FAILED
    assert failed.error is not None
    assert f"after 2 attempts: {kind}" in failed.error
    assert RT_ATTEMPTS[hostile] == [1, 2]  # retried per its policy, then failed
    done = await wait_for(app, calm, lambda i: i.status.is_final)
    assert done.status is Status.COMPLETED

    # The runner still runs new work.
    again = await app.start_instance(CalmFlow, {}, id="calm::2")
    assert (await wait_for(app, again, lambda i: i.status.is_final)).status is Status.COMPLETED


# --- timeouts that hold whatever the step does --------------------------------------------------


class SwallowsCancellation(Step):
    """Catches the cancellation of its timeout and goes on until the test releases it."""

    events = ("done",)
    timeout = 0.2

    async def execute(
        self, instance: Instance, config: Mapping[str, Any] | None, context: Context
    ) -> Ok:
        RT_ATTEMPTS.setdefault(instance.id, []).append(context.attempt)
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            RT_EVENTS["cancelled"].set()
            await RT_EVENTS["release"].wait()  # ignores the cancellation and keeps going
        RT_EVENTS["finished"].set()
        return Ok("done", {"late": True})


class SwallowingFlow(Workflow):
    unique = Unique(key="swallowing")
    start = SwallowsCancellation
    transitions = {(SwallowsCancellation, "done"): Done}


class BlocksTheLoop(Step):
    """An async step that blocks the event loop for three times its timeout."""

    events = ("done",)
    timeout = 0.2

    async def execute(
        self, instance: Instance, config: Mapping[str, Any] | None, context: Context
    ) -> Ok:
        RT_ATTEMPTS.setdefault(instance.id, []).append(context.attempt)
        time.sleep(0.6)  # the point of the test
        return Ok("done")


class BlockingFlow(Workflow):
    unique = Unique(key="blocking")
    start = BlocksTheLoop
    transitions = {(BlocksTheLoop, "done"): Done}


async def _until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def test_a_step_that_swallows_its_cancellation_still_times_out(
    app: Hephaestus,
    wait_for: Any,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_shell, "_STRAGGLER_WARNING_AFTER", 0.05)
    for name in ("cancelled", "release", "finished"):
        RT_EVENTS[name] = asyncio.Event()
    caplog.set_level(logging.WARNING, logger="hephaestus.runner")
    iid = await app.start_instance(SwallowingFlow, {}, id="swallowing::1")
    calm = await app.start_instance(CalmFlow, {}, id="calm::1")

    failed = await wait_for(app, iid, lambda i: i.status.is_final)
    assert failed.status is Status.FAILED
    assert failed.error is not None
    assert "timed out after 0.2s (attempt 1)" in failed.error
    assert RT_EVENTS["cancelled"].is_set()  # it was told to stop at its deadline...
    assert not RT_EVENTS["finished"].is_set()  # ...and the attempt failed while it ran on
    await _until(lambda: "is still running" in caplog.text)
    assert "async step swallows_cancellation of instance swallowing::1" in caplog.text
    assert (await wait_for(app, calm, lambda i: i.status.is_final)).status is Status.COMPLETED

    RT_EVENTS["release"].set()
    await RT_EVENTS["finished"].wait()
    await _until(lambda: "ignored its cancellation" in caplog.text)
    assert "its result is discarded" in caplog.text
    after = await app.get(iid)
    assert (after.status, after.error, after.revision) == (
        Status.FAILED,
        failed.error,
        failed.revision,
    )
    assert "swallows_cancellation" not in after.context.steps
    assert not _shell._ABANDONED


async def test_an_async_step_that_blocks_the_event_loop_past_its_timeout_fails(
    app: Hephaestus, wait_for: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="hephaestus.runner")
    iid = await app.start_instance(BlockingFlow, {}, id="blocking::1")

    failed = await wait_for(app, iid, lambda i: i.status.is_final)
    assert failed.status is Status.FAILED
    assert failed.error is not None
    assert "timed out after 0.2s (attempt 1)" in failed.error
    assert RT_ATTEMPTS[iid] == [1]
    (record,) = [r for r in caplog.records if "blocked the event loop" in r.getMessage()]
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    assert message.startswith("async step blocks_the_loop of instance blocking::1 (attempt 1)")
    seconds = float(message.split("blocked the event loop for ")[1].split(" s")[0])
    assert 0.6 <= seconds < 5
    assert "an async step must not block" in message


class WellBehaved(Step):
    """An async step with a timeout that awaits in every usual way: it runs as it always did."""

    events = ("done",)
    timeout = 5.0

    async def execute(
        self, instance: Instance, config: Mapping[str, Any] | None, context: Context
    ) -> Ok:
        async with asyncio.Lock():
            gathered = await asyncio.gather(
                asyncio.sleep(0.01, "slept"), asyncio.to_thread(lambda: "threaded")
            )

        async def boom() -> None:
            await asyncio.sleep(0)
            raise ValueError("raised in a task it awaits")

        try:
            await asyncio.create_task(boom())
        except ValueError as exc:
            caught = str(exc)

        async def numbers() -> Any:
            for n in range(3):
                await asyncio.sleep(0)
                yield n

        return Ok(
            "done", {"gathered": gathered, "caught": caught, "items": [n async for n in numbers()]}
        )


class WellBehavedFlow(Workflow):
    unique = Unique(key="wellbehaved")
    start = WellBehaved
    transitions = {(WellBehaved, "done"): Done}


async def test_an_async_step_with_a_timeout_awaits_as_usual(app: Hephaestus, wait_for: Any) -> None:
    iid = await app.start_instance(WellBehavedFlow, {}, id="wellbehaved::1")
    done = await wait_for(app, iid, lambda i: i.status.is_final)
    assert done.status is Status.COMPLETED, done.error
    assert done.context.steps["well_behaved"] == {
        "gathered": ["slept", "threaded"],
        "caught": "raised in a task it awaits",
        "items": [0, 1, 2],
    }


# --- what still stops a step: the runner's cancel, the process's interrupt ---------------------


class Parks(Step):
    """Runs until it is cancelled, and says it was."""

    events = ("done",)

    async def execute(
        self, instance: Instance, config: Mapping[str, Any] | None, context: Context
    ) -> Ok:
        RT_EVENTS["started"].set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            RT_EVENTS["stopped"].set()
            raise
        return Ok("done")


class ParksWithTimeout(Parks):
    timeout = 20.0


class ParkingFlow(Workflow):
    unique = Unique(key="parking")
    start = Parks
    transitions = {(Parks, "done"): Done}


class ParkingWithTimeoutFlow(Workflow):
    unique = Unique(key="parkingtimeout")
    start = ParksWithTimeout
    transitions = {(ParksWithTimeout, "done"): Done}


@pytest.mark.parametrize("flow", [ParkingFlow, ParkingWithTimeoutFlow])
async def test_cancelling_an_instance_stops_its_step_without_failing_it(
    app: Hephaestus, wait_for: Any, flow: type[Workflow]
) -> None:
    RT_EVENTS["started"] = asyncio.Event()
    RT_EVENTS["stopped"] = asyncio.Event()
    iid = await app.start_instance(flow, {}, id=f"{flow.__name__.lower()}::1")
    await asyncio.wait_for(RT_EVENTS["started"].wait(), 10)
    await app.cancel(iid)
    await asyncio.wait_for(RT_EVENTS["stopped"].wait(), 10)
    cancelled = await wait_for(app, iid, lambda i: i.status.is_final)
    assert (cancelled.status, cancelled.error) == (Status.CANCELLED, None)


class InterruptedBySignal(Step):
    """Runs while the process receives SIGINT: the handler raises on top of the step's code."""

    events = ("done",)

    async def execute(
        self, instance: Instance, config: Mapping[str, Any] | None, context: Context
    ) -> Ok:
        signal.raise_signal(signal.SIGINT)
        return Ok("done")


class InterruptedFlow(Workflow):
    unique = Unique(key="interrupted")
    start = InterruptedBySignal
    transitions = {(InterruptedBySignal, "done"): Done}


@pytest.mark.parametrize("timeout", [None, 5.0])
async def test_an_interrupt_delivered_by_a_signal_is_not_taken_for_the_steps_failure(
    monkeypatch: pytest.MonkeyPatch, timeout: float | None
) -> None:
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, interrupt)
    monkeypatch.setattr(InterruptedBySignal, "timeout", timeout)
    advance = new_instance(
        InterruptedFlow,
        {},
        id="interrupted::1",
        version=None,
        telemetry_metadata=None,
        now=datetime.now(UTC),
    )
    try:
        with pytest.raises(KeyboardInterrupt):
            await run_attempt(
                InterruptedFlow.definition(),
                advance.instance,
                "interrupted_by_signal",
                1,
                None,
            )
    finally:
        signal.signal(signal.SIGINT, previous)


CTRL_C_SCRIPT = """
import asyncio, sys
from hephaestus import Done, Hephaestus, LocalRunner, Ok, SQLiteStorage, Step, Unique, Workflow

class Slow(Step):
    events = ("done",)
    timeout = TIMEOUT

    async def execute(self, instance, config, context):
        print("step started", flush=True)
        await asyncio.sleep(60)
        return Ok("done")

class SlowFlow(Workflow):
    unique = Unique(key="slow")
    start = Slow
    transitions = {(Slow, "done"): Done}

async def main():
    async with Hephaestus(storage=SQLiteStorage(sys.argv[1]), runner=LocalRunner()) as app:
        await app.start_instance(SlowFlow, {}, id="slow::1")
        await asyncio.sleep(60)

asyncio.run(main())
"""


@pytest.mark.parametrize("timeout", [None, 30.0])
def test_ctrl_c_stops_the_process_and_leaves_the_running_step_to_recover(
    tmp_path: Path, timeout: float | None
) -> None:
    db = tmp_path / "ctrl_c.db"
    env = dict(os.environ, PYTHONPATH=str(SOURCE))
    script = textwrap.dedent(CTRL_C_SCRIPT).replace("TIMEOUT", repr(timeout))
    with subprocess.Popen(
        [sys.executable, "-c", script, str(db)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        assert process.stdout is not None
        assert process.stdout.readline() == "step started\n"
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == -signal.SIGINT, stderr
    assert "KeyboardInterrupt" in stderr

    async def stored() -> Instance:
        async with SQLiteStorage(db) as storage:
            return await storage.get("slow::1")

    instance = asyncio.run(stored())
    # Interrupted, not failed: the next runner on this file runs the step again.
    assert (instance.status, instance.error, instance.active_steps) == (
        Status.RUNNING,
        None,
        {"slow"},
    )
