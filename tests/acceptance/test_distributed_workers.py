"""The distributed runner on real PostgreSQL with real worker processes.

Two `hephaestus worker` processes share the work of 1,000 instances (fan-out,
join, a wait with a durable timeout); one is SIGKILLed halfway. The other
retries the dead worker's stalled jobs, every instance completes, no step
result is applied twice, and no step runs again after its completion was
stored. Three workers, one SIGKILLed again and again (and replaced), lose
nothing either. A burst of resumes from several processes to one instance
loses none.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hephaestus import Instance, InstanceNotWaitingError, InvalidEventError, Status
from hephaestus.storage.base import Query
from hephaestus.storage.postgres import PostgresStorage

HERE = Path(__file__).parent / "distributed"
INSTANCES = 1000

sys.path.insert(0, str(HERE))
from dist_flows import GATES, DistBurst, DistFlow, make_app  # noqa: E402
from execution_log import assert_all_completed_once, executions  # noqa: E402


def _env(url: str, log: Path) -> dict[str, str]:
    return {
        **os.environ,
        "HEPHAESTUS_DIST_URL": url,
        "DIST_LOG": str(log),
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    }


def _worker(url: str, log: Path, output: Path) -> subprocess.Popen[str]:
    # Output goes to a file: a pipe nobody reads until the end would fill and block the worker.
    with output.open("w") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "hephaestus.cli", "worker", "--app", "dist_flows:app"],
            env=_env(url, log),
            cwd=HERE,
            stdout=sink,
            stderr=subprocess.STDOUT,
            text=True,
        )


@pytest.fixture
def workers(
    postgres_url: str, tmp_path: Path
) -> Iterator[tuple[list[subprocess.Popen[str]], Path]]:
    log = tmp_path / "executions.log"
    started = [_worker(postgres_url, log, tmp_path / f"worker{n}.out") for n in range(2)]
    try:
        yield started, log
    finally:
        for process in started:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in started:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def _until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def _all_final(url: str, timeout: float) -> list[Instance]:
    deadline = time.monotonic() + timeout
    async with PostgresStorage(url) as storage:
        while True:
            instances = await storage.query(Query())
            if all(i.status.is_final for i in instances):
                return instances
            active = sum(1 for i in instances if not i.status.is_final)
            assert time.monotonic() < deadline, f"{active} instances still active"
            await asyncio.sleep(0.2)


@pytest.mark.slow
async def test_two_workers_one_killed_complete_every_instance(
    postgres_url: str, workers: tuple[list[subprocess.Popen[str]], Path], tmp_path: Path
) -> None:
    (doomed, survivor), log = workers
    async with make_app(postgres_url) as app:
        for first in range(0, INSTANCES, 100):
            await asyncio.gather(
                *(DistFlow.start(f"i{n}", {"n": n}) for n in range(first, first + 100))
            )
        # Kill one worker in the middle of the work, mid-step for some jobs.
        await _until(lambda: len(executions(log)) >= INSTANCES * 2, 120, "half the steps")
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(timeout=10)
        assert survivor.poll() is None

        # Some instances wait for `go`; the others time out on their durable timer.
        for n in range(0, INSTANCES, 7):
            instance = await app.get(f"dist::i{n}")
            if "dist_pause" in instance.waiting_steps:
                # The durable timer may fire first: then the event is refused, as it should.
                with contextlib.suppress(InstanceNotWaitingError, InvalidEventError):
                    await app.resume(instance.id, "go")

    instances = await _all_final(postgres_url, timeout=240)
    assert len(instances) == INSTANCES
    # Each step's result applied exactly once, nothing run again after it completed.
    assert_all_completed_once(
        instances,
        log,
        steps=[
            "dist_split",
            "dist_left",
            "dist_right",
            "dist_join",
            "dist_pause",
            "dist_finish",
            "done",
        ],
        not_logged=["dist_pause", "done"],
    )
    for instance in instances:
        n = instance.context.initial["n"]
        assert instance.context.steps["dist_join"]["total"] == n * 2 + n + 1
    # The survivor took over the dead worker's jobs without a single error.
    for output in sorted(tmp_path.glob("worker*.out")):
        text = output.read_text()
        assert "Traceback" not in text, text[-3000:]


def _stop(processes: list[subprocess.Popen[str]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


DIST_STEPS = ["dist_split", "dist_left", "dist_right", "dist_join", "dist_pause", "dist_finish"]


@pytest.mark.slow
async def test_three_workers_killed_again_and_again_lose_nothing(
    postgres_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "executions.log"
    spawned = 0

    def spawn() -> subprocess.Popen[str]:
        nonlocal spawned
        spawned += 1
        return _worker(postgres_url, log, tmp_path / f"worker{spawned}.out")

    alive = [spawn() for _ in range(3)]
    everyone = list(alive)
    try:
        async with make_app(postgres_url) as app:
            for first in range(0, INSTANCES, 100):
                await asyncio.gather(
                    *(DistFlow.start(f"k{n}", {"n": n}) for n in range(first, first + 100))
                )
            # Five logged steps per instance; a kill after every fifth of them, mid-step
            # for some, each time of a different worker, replaced by a fresh one.
            for kill in range(1, 5):
                await _until(
                    lambda kill=kill: len(executions(log)) >= INSTANCES * kill,
                    180,
                    f"{kill}/5 of the steps",
                )
                doomed = alive.pop(kill % len(alive))
                doomed.send_signal(signal.SIGKILL)
                doomed.wait(timeout=10)
                replacement = spawn()
                alive.append(replacement)
                everyone.append(replacement)
                for n in range(kill, INSTANCES, 11):
                    instance = await app.get(f"dist::k{n}")
                    if "dist_pause" in instance.waiting_steps:
                        with contextlib.suppress(InstanceNotWaitingError, InvalidEventError):
                            await app.resume(instance.id, "go")

        instances = await _all_final(postgres_url, timeout=300)
    finally:
        _stop(everyone)
    assert len(instances) == INSTANCES
    assert_all_completed_once(
        instances, log, steps=[*DIST_STEPS, "done"], not_logged=["dist_pause", "done"]
    )
    for instance in instances:
        n = instance.context.initial["n"]
        assert instance.context.steps["dist_join"]["total"] == n * 2 + n + 1
    # Some steps ran again after a kill: at least once, with the same attempt number.
    attempts = {(iid, step): attempt for iid, step, attempt, _ in executions(log)}
    assert set(attempts.values()) == {1}
    for output in sorted(tmp_path.glob("worker*.out")):
        text = output.read_text()
        assert "Traceback" not in text, text[-3000:]


def _resume_from_another_process(
    url: str, instance_id: str, events: list[str]
) -> subprocess.Popen[str]:
    script = (
        "import asyncio, sys\n"
        "from dist_flows import make_app\n"
        "async def main():\n"
        "    async with make_app(sys.argv[1]) as app:\n"
        "        await asyncio.gather(*(app.resume(sys.argv[2], e) for e in sys.argv[3:]))\n"
        "asyncio.run(main())\n"
    )
    return subprocess.Popen(
        [sys.executable, "-c", script, url, instance_id, *events],
        env=_env(url, Path(os.devnull)),
        cwd=HERE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
async def test_a_burst_of_resumes_from_several_processes_loses_none(
    postgres_url: str, workers: tuple[list[subprocess.Popen[str]], Path]
) -> None:
    async with make_app(postgres_url) as app:
        instance_id = await DistBurst.start("b1", {})
        deadline = time.monotonic() + 60
        while len((await app.get(instance_id)).waiting_steps) < GATES:
            assert time.monotonic() < deadline, "the gates never all opened"
            await asyncio.sleep(0.05)

    senders = [
        _resume_from_another_process(
            postgres_url, instance_id, [f"signal{n}" for n in range(k, GATES, 4)]
        )
        for k in range(4)
    ]
    for sender in senders:
        _, err = sender.communicate(timeout=60)
        assert sender.returncode == 0, err

    final = (await _all_final(postgres_url, timeout=60))[0]
    assert final.status is Status.COMPLETED
    resumed = {
        entry.event for entry in final.execution_history if entry.step.startswith("dist_gate")
    }
    assert resumed == {f"signal{n}" for n in range(GATES)}
