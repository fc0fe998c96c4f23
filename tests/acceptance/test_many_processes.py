"""Many processes on one storage: runner processes share the work, clients only write.

Real processes on a real SQLite file and on real PostgreSQL: runner processes
(`hephaestus worker --app many.runner:app`, lease 1 s), client-mode processes
(`many/client.py`, the `hephaestus instances` CLI) and the test itself. Every
step appends its executions to a side-effect log (`many/sideeffects.py`):
instance, step, attempt, process id, start and end time. From the log and the
stored instances each run computes

- lost: instances that were started but are missing or did not complete;
- stuck: instances that are not final at the end;
- duplicated: an attempt of a step that ran twice at overlapping times (in two
  processes, or twice in one), or a step that started after its completion
  was stored (its history entry's timestamp).

A step interrupted by a SIGKILL may run again as the same attempt (steps run
at least once): that is allowed, as long as it is not concurrent with itself
and not after its completion was stored. Each run prints its counts.

1. Two runners complete 500 instances a client process started and left.
2. One of two runners is SIGKILLed mid-step: the other takes its instances over.
   2b. One is paused (SIGSTOP): it is reaped when its lease lapses, rejoins on waking.
3. CLI resume and cancel run no step; a CLI cancel stops the owner's running step.
4. A runner that is already running completes what a client script started.
5. An event sent before its step parks is consumed once, and its data reaches the next step.

Then a runner that lost its lease to a locked SQLite file, and regressions of bugs this suite found.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest
from many.flows import BUILT_IN, MANY_STEPS, EarlyFlow, SlowFlow
from many.sideeffects import Run, read

import hephaestus as hephaestus_package
from hephaestus import Hephaestus, Instance, LocalRunner, Status
from hephaestus.storage import storage_from_url
from hephaestus.storage.base import Query, RunnerRecord
from hephaestus.storage.sqlite import SQLiteStorage

HERE = Path(__file__).parent
# Where the `hephaestus` under test is imported from, so the subprocesses run the same code.
SOURCE = Path(hephaestus_package.__file__).resolve().parent.parent

#: Instances of `ManyFlow` in the two-runner runs (each storage).
SHARED = 500
#: Instances of `ManyFlow` in the run where one runner is killed.
KILLED = 300

_T = TypeVar("_T")


# --- processes -------------------------------------------------------------------------------


@dataclass
class Cluster:
    """The processes of one test on one storage; `close` stops every one still alive."""

    url: str
    tmp: Path
    log: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    outputs: dict[int, Path] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        environ = {
            k: v
            for k, v in os.environ.items()
            if k not in ("PYTHONPATH", "COLUMNS", "FORCE_COLOR", "HEPHAESTUS_STORAGE")
        }
        environ.update(
            HEPHAESTUS_STORAGE=self.url,
            MANY_LOG=str(self.log),
            PYTHONPATH=os.pathsep.join([str(SOURCE), str(HERE)]),
        )
        return environ

    def spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        output = self.tmp / f"{name}.out"
        # Output goes to a file: a pipe nobody reads could fill up and block the process.
        with output.open("wb") as sink:
            process = subprocess.Popen(
                [sys.executable, *args],
                cwd=HERE,
                env=self.env(),
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        self.processes.append(process)
        self.outputs[process.pid] = output
        return process

    def output(self, process: subprocess.Popen[bytes]) -> str:
        return self.outputs[process.pid].read_text(errors="replace")

    def runner(self, name: str) -> subprocess.Popen[bytes]:
        """A runner process, once it says it is ready (registered on the storage)."""
        process = self.spawn(name, "-m", "hephaestus.cli", "worker", "--app", "many.runner:app")
        until(lambda: "ready" in self.output(process), 30, f"runner {name} to start", process)
        return process

    def client(self, workflow: str, first: int, count: int) -> int:
        """Start instances from a client-mode process that then exits; its process id."""
        process = self.spawn(
            f"client-{workflow}-{first}",
            "-m",
            "many.client",
            self.url,
            workflow,
            str(first),
            str(count),
        )
        process.wait(timeout=120)
        assert process.returncode == 0, self.output(process)
        assert f"started {count}" in self.output(process)
        return process.pid

    def cli(self, *args: str) -> tuple[subprocess.CompletedProcess[str], int, float]:
        """Run `hephaestus ARGS` (client mode); the result, its process id and how long it took."""
        began = time.monotonic()
        process = subprocess.Popen(
            # Stored workflow names are never imported: the CLI is told where they live.
            [sys.executable, "-m", "hephaestus.cli", *args, "--import", "many.flows"],
            cwd=HERE,
            env=self.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.processes.append(process)  # type: ignore[arg-type]
        out, err = process.communicate(timeout=60)
        result = subprocess.CompletedProcess(process.args, process.returncode, out, err)
        return result, process.pid, time.monotonic() - began

    def stop(self, process: subprocess.Popen[bytes]) -> None:
        """SIGTERM: the runner stops its actors and hands its instances over."""
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)  # a stopped process ignores SIGTERM
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=15)


def until(
    check: Callable[[], _T],
    timeout: float,
    what: str,
    process: subprocess.Popen[bytes] | None = None,
) -> _T:
    """Poll `check()` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if process is not None:
            assert process.poll() is None, f"process exited ({process.returncode}) before {what}"
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.02)


@pytest.fixture(params=["sqlite", "postgresql"])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh SQLite file, or the run's PostgreSQL database with no instances and no runners."""
    if request.param == "sqlite":
        db = tmp_path / "many.db"
        asyncio.run(_migrate_sqlite(db))
        return f"sqlite:///{db}"
    url: str = request.getfixturevalue("postgres_url")
    # The fixture empties the instances; runners registered by earlier tests are ours to clear.
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DELETE FROM hephaestus_runners")
    return url


async def _migrate_sqlite(db: Path) -> None:
    async with SQLiteStorage(db):
        pass


@pytest.fixture
def cluster(storage_url: str, tmp_path: Path) -> Iterator[Cluster]:
    started = Cluster(storage_url, tmp_path, tmp_path / "sideeffects.log")
    try:
        yield started
    finally:
        started.close()


# --- reading the storage ---------------------------------------------------------------------


def _with_app(url: str, work: Callable[[Hephaestus], Any]) -> Any:
    async def go() -> Any:
        async with Hephaestus(storage=storage_from_url(url), runner=None) as app:
            return await work(app)

    return asyncio.run(go())


def stored(url: str) -> dict[str, Instance]:
    async def read_all(app: Hephaestus) -> dict[str, Instance]:
        return {i.id: i for i in await app.storage.query(Query())}

    result: dict[str, Instance] = _with_app(url, read_all)
    return result


def registered(url: str) -> list[RunnerRecord]:
    async def runners(app: Hephaestus) -> list[RunnerRecord]:
        return await app.runners()

    result: list[RunnerRecord] = _with_app(url, runners)
    return result


def owners(url: str, ids: Iterable[str]) -> dict[str, str | None]:
    async def read_owners(app: Hephaestus) -> dict[str, str | None]:
        return {i: await app.storage.owner_of(i) for i in ids}

    result: dict[str, str | None] = _with_app(url, read_owners)
    return result


def all_final(url: str, ids: list[str], timeout: float) -> dict[str, Instance]:
    """The instances once every one of `ids` is final; fails (naming the rest) after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        instances = stored(url)
        active = [i for i in ids if i not in instances or not instances[i].status.is_final]
        if not active:
            return instances
        assert time.monotonic() < deadline, (
            f"{len(active)} of {len(ids)} instances not final after {timeout}s, e.g. "
            + ", ".join(
                f"{i}: {instances[i].status.value} {sorted(instances[i].active_steps)}"
                if i in instances
                else f"{i}: missing"
                for i in active[:5]
            )
        )
        time.sleep(0.2)


# --- what the log and the storage say --------------------------------------------------------


@dataclass
class Counts:
    lost: list[str]
    stuck: list[str]
    duplicated: list[str]

    def line(self) -> str:
        return f"lost={len(self.lost)} stuck={len(self.stuck)} duplicated={len(self.duplicated)}"

    def assert_zero(self) -> None:
        assert (self.lost, self.stuck, self.duplicated) == ([], [], []), (
            self.line(),
            self.lost[:5],
            self.stuck[:5],
            self.duplicated[:5],
        )


def count(
    started: Iterable[str],
    instances: dict[str, Instance],
    runs: list[Run],
    *,
    killed: dict[int, float] | None = None,
) -> Counts:
    """Lost, stuck and duplicated (see the module docstring), computed from storage and log.

    An execution with no end line ran until its process was killed (`killed`:
    process id -> time of the kill), or is still running now.
    """
    killed = killed or {}
    now = time.time()
    lost = [i for i in started if i not in instances or instances[i].status is not Status.COMPLETED]
    stuck = [i for i, instance in instances.items() if not instance.status.is_final]
    duplicated: list[str] = []

    by_attempt: dict[tuple[str, str, int], list[Run]] = defaultdict(list)
    by_step: dict[tuple[str, str], list[Run]] = defaultdict(list)
    for run in runs:
        by_attempt[(run.instance, run.step, run.attempt)].append(run)
        by_step[(run.instance, run.step)].append(run)
    for (instance_id, step, attempt), executions in by_attempt.items():
        busy_until = float("-inf")
        for run in sorted(executions, key=lambda r: r.start):
            if run.start < busy_until:
                duplicated.append(f"{instance_id} {step} attempt {attempt} ran twice at once")
                break
            end = run.end if run.end is not None else killed.get(run.pid, now)
            busy_until = max(busy_until, end)
    for instance_id, instance in instances.items():
        for entry in instance.execution_history:
            completed_at = entry.timestamp.timestamp()
            late = [r for r in by_step[(instance_id, entry.step)] if r.start > completed_at]
            if late:
                duplicated.append(
                    f"{instance_id} {entry.step} ran again (pid {late[0].pid}) after its "
                    "completion was stored"
                )
    return Counts(lost, stuck, duplicated)


def check_many_flows(instances: dict[str, Instance], ids: list[str], runs: list[Run]) -> None:
    """Each `ManyFlow` instance: every step once in its history, which ran; results joined."""
    ran_ok = {(r.instance, r.step, r.attempt) for r in runs if r.outcome == "ok"}
    failed_first = {r.instance for r in runs if r.step == "many_flaky" and r.attempt == 1}
    for instance_id in ids:
        instance = instances[instance_id]
        history = instance.execution_history
        assert sorted(e.step for e in history) == sorted(MANY_STEPS), (instance_id, history)
        for entry in history:
            if entry.step not in BUILT_IN:
                assert (instance_id, entry.step, entry.attempt) in ran_ok, (instance_id, entry)
        flaky = next(e for e in history if e.step == "many_flaky")
        assert flaky.attempt == 2, (instance_id, flaky)  # the first attempt failed, the retry won
        assert instance_id in failed_first
        n = instance.context.initial["n"]
        assert instance.context.steps["many_join"]["total"] == 3 * n + 1
        assert instance.timers == ()
        assert instance.inbox == ()


def reruns(runs: list[Run]) -> int:
    """Executions beyond the first of each attempt (allowed: steps run at least once)."""
    return len(runs) - len({(r.instance, r.step, r.attempt) for r in runs})


def share(runs: list[Run], pids: Iterable[int]) -> str:
    per_pid = Counter(run.pid for run in runs)
    return " ".join(f"pid {pid}: {per_pid.get(pid, 0)} step runs" for pid in pids)


def many_ids(first: int, count_: int) -> list[str]:
    return [f"many::i{n}" for n in range(first, first + count_)]


def backend(url: str) -> str:
    return "sqlite" if url.startswith("sqlite") else "postgresql"


# --- 1. two runners share the work a client wrote ---------------------------------------------


@pytest.mark.slow
def test_two_runners_complete_every_instance_a_client_process_started(cluster: Cluster) -> None:
    first, second = cluster.runner("runner-a"), cluster.runner("runner-b")
    began = time.monotonic()
    client_pid = cluster.client("ManyFlow", 0, SHARED)
    ids = many_ids(0, SHARED)

    instances = all_final(cluster.url, ids, timeout=150)
    took = time.monotonic() - began
    runs = read(cluster.log)
    counts = count(ids, instances, runs)
    print(
        f"[{backend(cluster.url)}] {SHARED} instances, 2 runners: {counts.line()} "
        f"in {took:.1f}s; {share(runs, (first.pid, second.pid))}; "
        f"{reruns(runs)} attempts ran again"
    )
    if reruns(runs):  # allowed (at least once), but say why: the runners log it
        for process in (first, second):
            print(f"runner {process.pid}:", cluster.output(process)[-3000:])
    counts.assert_zero()
    check_many_flows(instances, ids, runs)
    pids = {run.pid for run in runs}
    assert pids == {first.pid, second.pid}, "both runners ran steps, and nobody else did"
    assert client_pid not in pids
    assert first.poll() is None
    assert second.poll() is None
    for process in (first, second):
        assert "Traceback" not in cluster.output(process), cluster.output(process)[-3000:]


# --- 2. one of two runners is SIGKILLed mid-run ----------------------------------------------


@pytest.mark.slow
def test_a_sigkilled_runners_instances_are_taken_over_and_complete(cluster: Cluster) -> None:
    runners = [cluster.runner("runner-a"), cluster.runner("runner-b")]
    ids_of = {r.pid: r.id for r in registered(cluster.url)}
    # First, instances parked on a 4 s durable timer; the runner that owns most is doomed.
    cluster.client("NapFlow", 0, 20)
    naps = [f"nap::i{n}" for n in range(20)]
    until(
        lambda: all(i.waiting_steps == {"wait"} for i in stored(cluster.url).values()),
        30,
        "every nap instance to park on its timer",
    )
    nap_owners = Counter(owners(cluster.url, naps).values())
    doomed = max(runners, key=lambda p: nap_owners[ids_of[p.pid]])
    (survivor,) = [p for p in runners if p is not doomed]
    doomed_id = ids_of[doomed.pid]
    # Then the run: fan-out and join, a retried step, a 0.3 s timer.
    cluster.client("ManyFlow", 0, KILLED)
    ids = many_ids(0, KILLED)

    # Mid-run: the doomed runner has run steps of the run and is in the middle of some.
    def doomed_is_busy() -> bool:
        mine = [r for r in read(cluster.log) if r.pid == doomed.pid and r.step != "nap_begin"]
        return len(mine) >= 50 and any(r.end is None for r in mine)

    # Stopped first, so that what it owns and runs can be read before it dies.
    for _ in range(100):
        until(doomed_is_busy, 30, "the doomed runner to be mid-step", doomed)
        _stop(doomed)
        interrupted = [r for r in read(cluster.log) if r.pid == doomed.pid and r.end is None]
        if interrupted:
            break
        doomed.send_signal(signal.SIGCONT)
    assert interrupted, "the doomed runner was never stopped mid-step"
    before = stored(cluster.url)
    left = [i for i in ids + naps if not before[i].status.is_final]
    held = [i for i, owner in owners(cluster.url, left).items() if owner == doomed_id]
    doomed.send_signal(signal.SIGKILL)
    doomed.wait(timeout=10)
    killed_at = time.time()
    assert doomed.returncode == -signal.SIGKILL
    parked = [i for i in held if before[i].waiting_steps == {"wait"}]
    assert [i for i in held if i.startswith("many::")], "it died owning running instances"
    assert [i for i in parked if i.startswith("nap::")], "and instances parked on a timer"

    instances = all_final(cluster.url, ids + naps, timeout=30 - (time.time() - killed_at))
    took = time.time() - killed_at
    runs = read(cluster.log)
    counts = count(ids + naps, instances, runs, killed={doomed.pid: killed_at})
    survivor_runs = [r for r in runs if r.pid == survivor.pid and r.start > killed_at]
    taken_over = [r for r in survivor_runs if r.instance in set(held)]
    first_takeover = min(r.start for r in taken_over) - killed_at
    rerun = [
        r
        for r in survivor_runs
        if any(
            (r.instance, r.step, r.attempt) == (i.instance, i.step, i.attempt) for i in interrupted
        )
    ]
    print(
        f"[{backend(cluster.url)}] {KILLED} + 20 instances, runner killed owning {len(held)} "
        f"active ({len(parked)} parked on a timer, {len(interrupted)} steps mid-run): "
        f"{counts.line()}; all final {took:.1f}s after the kill, first step of a taken-over "
        f"instance after {first_takeover:.2f}s, {len(rerun)} interrupted attempts ran again; "
        f"{share(runs, (doomed.pid, survivor.pid))}"
    )
    counts.assert_zero()
    check_many_flows(instances, ids, runs)
    assert {r.instance for r in taken_over} == set(held), "the survivor ran each one on"
    for nap in naps:  # each durable timer fired once
        steps = [e.step for e in instances[nap].execution_history]
        assert steps == ["nap_begin", "wait", "nap_after", "done"], (nap, steps)
    assert survivor.poll() is None
    assert doomed_id not in {r.id for r in registered(cluster.url)}, "the dead runner was reaped"
    assert "Traceback" not in cluster.output(survivor), cluster.output(survivor)[-3000:]


# --- 2b. a runner that is paused (alive, silent) loses its instances when its lease lapses ---


def _no_write_in_progress(url: str) -> bool:
    """Whether no process holds a write transaction open on the storage (and so its locks)."""
    if url.startswith("sqlite"):
        conn = sqlite3.connect(_sqlite_path(url), timeout=0, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
            return True
        except sqlite3.OperationalError:
            return False
        finally:
            conn.close()
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND backend_xid IS NOT NULL"
        ).fetchone()
        return row == (0,)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGSTOP `process` and wait until it is stopped."""
    process.send_signal(signal.SIGSTOP)
    until(
        lambda: Path(f"/proc/{process.pid}/stat").read_text().split()[2] == "T",
        5,
        "the process to stop",
    )


def _sqlite_path(url: str) -> str:
    return url.removeprefix("sqlite:///").partition("?")[0]


def _pause(process: subprocess.Popen[bytes], url: str) -> float:
    """SIGSTOP `process` at a moment it holds no write open; when it was stopped."""
    for _ in range(100):
        _stop(process)
        if _no_write_in_progress(url):
            return time.time()
        process.send_signal(signal.SIGCONT)  # stopped mid-write: its locks would stall the rest
        time.sleep(0.03)
    raise AssertionError("the runner was always in the middle of a write")


@pytest.mark.slow
def test_a_paused_runner_is_replaced_when_its_lease_lapses_and_rejoins_when_it_wakes(
    cluster: Cluster,
) -> None:
    runners = [cluster.runner("runner-a"), cluster.runner("runner-b")]
    cluster.client("NapFlow", 0, 40)
    ids = [f"nap::i{n}" for n in range(40)]
    until(
        lambda: all(i.waiting_steps == {"wait"} for i in stored(cluster.url).values()),
        30,
        "every instance to park on its 4 s timer",
    )
    assert all(r.end is not None for r in read(cluster.log)), "no step is mid-run"
    ids_of = {r.pid: r.id for r in registered(cluster.url)}
    held = Counter(owners(cluster.url, ids).values())
    paused = max(runners, key=lambda p: held[ids_of[p.pid]])  # the one that owns the most
    (survivor,) = [p for p in runners if p is not paused]
    paused_id = ids_of[paused.pid]

    # Stopped, its process is alive: only the lapse of its one-second lease frees its instances.
    paused_at = _pause(paused, cluster.url)
    (last,) = [r for r in registered(cluster.url) if r.id == paused_id]  # renews no more
    until(
        lambda: paused_id not in {r.id for r in registered(cluster.url)},
        10,
        "the survivor to reap the paused runner",
    )
    reaped_at = time.time()
    reaped_after = reaped_at - paused_at
    paused.send_signal(signal.SIGCONT)
    woke_at = time.time()
    rejoined = until(
        lambda: [r.id for r in registered(cluster.url) if r.pid == paused.pid],
        10,
        "the woken runner to register again",
        paused,
    )
    rejoined_after = time.time() - woke_at
    assert rejoined != [paused_id], "it rejoins under a new id"

    instances = all_final(cluster.url, ids, timeout=20)
    runs = read(cluster.log)
    counts = count(ids, instances, runs)
    after = Counter(r.pid for r in runs if r.step == "nap_after")
    print(
        f"[{backend(cluster.url)}] runner paused owning {held[paused_id]} of 40 parked "
        f"instances: reaped {reaped_after:.2f}s after the pause "
        f"({reaped_at - last.lease_until:.2f}s after its lease lapsed), rejoined "
        f"{rejoined_after:.2f}s after it woke; {counts.line()}; timers fired by "
        f"{share([r for r in runs if r.step == 'nap_after'], (paused.pid, survivor.pid))}"
    )
    counts.assert_zero()
    assert reaped_at >= last.lease_until, "a live process is reaped only once its lease lapsed"
    for instance_id in ids:
        steps = [e.step for e in instances[instance_id].execution_history]
        assert steps == ["nap_begin", "wait", "nap_after", "done"], (instance_id, steps)
    assert sum(after.values()) == 40, "each timer fired once, in one process"
    for process in runners:
        assert process.poll() is None


# --- 3. the CLI writes, the runner runs; a cancel stops a running step ------------------------


def test_cli_resume_and_cancel_run_no_step_and_a_cancel_stops_the_running_step(
    cluster: Cluster,
) -> None:
    runner = cluster.runner("runner")
    cluster.client("ParkFlow", 0, 2)
    until(
        lambda: all(i.waiting_steps == {"park_gate"} for i in stored(cluster.url).values()),
        30,
        "both park instances to wait at their gate",
    )
    cluster.client("SlowFlow", 0, 1)
    slow = "slow::i0"

    def slow_work() -> Run | None:
        return next((r for r in read(cluster.log) if r.step == "slow_work"), None)

    until(slow_work, 30, "the 3 s step of slow::i0 to start", runner)
    # While it runs: resume one parked instance, cancel the other, from CLI processes.
    resumed, resume_pid, resume_took = cluster.cli(
        "instances", "resume", "park::i0", "go", "--data", '{"by": "cli"}'
    )
    cancelled, cancel_pid, cancel_took = cluster.cli("instances", "cancel", "park::i1")
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.startswith("Recorded go for park::i0"), resumed.stdout
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout.startswith("Cancelled park::i1 (it was waiting at park_gate)")
    still = slow_work()
    assert still is not None
    assert still.end is None, "the CLI commands took longer than the 3 s step: test too slow"

    done = all_final(cluster.url, ["park::i0", "park::i1"], timeout=30)
    assert done["park::i0"].status is Status.COMPLETED
    assert done["park::i0"].context.steps["park_after"] == {"got": {"by": "cli"}}
    assert done["park::i1"].status is Status.CANCELLED

    # Now cancel slow::i0 itself while its step runs: a request its owner applies.
    began = time.monotonic()
    stop, stop_pid, stop_took = cluster.cli("instances", "cancel", slow)
    assert stop.returncode == 0, stop.stderr
    assert stop.stdout.startswith(f"Cancel requested for {slow} (it was running at slow_work)")
    final = all_final(cluster.url, [slow], timeout=30)[slow]
    cancelled_after = time.monotonic() - began
    assert final.status is Status.CANCELLED

    cluster.stop(runner)  # nothing runs any more: the log is complete
    runs = read(cluster.log)
    work = [r for r in runs if r.instance == slow and r.step == "slow_work"]
    print(
        f"[{backend(cluster.url)}] CLI resume {resume_took:.2f}s, cancel {cancel_took:.2f}s, "
        f"cancel of the running instance {stop_took:.2f}s (cancelled in storage after "
        f"{cancelled_after:.2f}s); slow_work runs: "
        + ", ".join(f"{r.outcome} after {(r.end or 0) - r.start:.2f}s" for r in work)
    )
    assert {r.pid for r in runs} == {runner.pid}, "only the runner ran steps"
    assert not {resume_pid, cancel_pid, stop_pid} & {r.pid for r in runs}
    assert not [r for r in runs if r.instance == slow and r.step == "slow_after"]
    assert not [r for r in runs if r.instance == "park::i1" and r.step == "park_after"]
    assert [r.outcome for r in work] == ["cancelled"], "the owner stopped the running step"
    assert max(resume_took, cancel_took, stop_took) < 10, "a client command returns at once"


# --- 4. a client script's instances, on an already running runner ----------------------------


def test_a_running_runner_completes_what_a_client_script_started(cluster: Cluster) -> None:
    runner = cluster.runner("runner")
    began = time.monotonic()
    client_pid = cluster.client("ManyFlow", 0, 100)
    ids = many_ids(0, 100)
    instances = all_final(cluster.url, ids, timeout=60)
    took = time.monotonic() - began
    runs = read(cluster.log)
    counts = count(ids, instances, runs)
    print(f"[{backend(cluster.url)}] 100 instances from a script: {counts.line()} in {took:.1f}s")
    counts.assert_zero()
    check_many_flows(instances, ids, runs)
    assert runner.poll() is None, "the same runner process, never restarted"
    assert {r.pid for r in runs} == {runner.pid}
    assert client_pid not in {r.pid for r in runs}


# --- 5. an event that arrives before its step parks -------------------------------------------


def test_an_event_sent_before_its_step_parks_is_consumed_once_with_its_data(
    cluster: Cluster, tmp_path: Path
) -> None:
    runner = cluster.runner("runner")
    gated = [f"early::g{k}" for k in range(3)]
    racing = [f"early::r{k}" for k in range(20)]

    def started(instance_id: str) -> Run | None:
        return next(
            (r for r in read(cluster.log) if r.instance == instance_id and r.step == "early_await"),
            None,
        )

    sent_at: dict[str, float] = {}

    async def resume(app: Hephaestus, instance_id: str) -> Instance:
        sent_at[instance_id] = time.time()
        await app.resume(instance_id, "approved", data={"for": instance_id})
        return await app.get(instance_id)

    # Gated: the step has started and cannot park before the test opens its gate.
    async def start_gated(app: Hephaestus) -> None:
        for k, instance_id in enumerate(gated):
            context = {"gate": str(tmp_path / f"gate{k}")}
            await app.start_instance(EarlyFlow, context, id=instance_id)

    _with_app(cluster.url, start_gated)
    for k, instance_id in enumerate(gated):
        until(lambda i=instance_id: started(i), 30, f"{instance_id} to start", runner)
        after = _with_app(cluster.url, lambda app, i=instance_id: resume(app, i))
        assert after.waiting_steps == frozenset(), "the step had not parked yet"
        assert [(i.event, i.data) for i in after.inbox] == [("approved", {"for": instance_id})]
        (tmp_path / f"gate{k}").touch()

    # Racing: each event is sent the moment its step starts, which parks 0 to 180 ms later.
    async def race(app: Hephaestus) -> None:
        for k, instance_id in enumerate(racing):
            context = {"pause": (k % 10) * 0.02}
            await app.start_instance(EarlyFlow, context, id=instance_id)

        async def send_when_started(instance_id: str) -> None:
            while not started(instance_id):
                await asyncio.sleep(0.005)
            await resume(app, instance_id)

        async with asyncio.timeout(30):
            await asyncio.gather(*(send_when_started(i) for i in racing))

    _with_app(cluster.url, race)

    ids = gated + racing
    instances = all_final(cluster.url, ids, timeout=30)
    runs = read(cluster.log)
    early = 0
    for instance_id in ids:
        instance = instances[instance_id]
        data = {"for": instance_id}
        assert instance.status is Status.COMPLETED, (instance_id, instance.error)
        assert instance.context.steps["early_await"] == data
        assert instance.context.steps["early_next"] == {"seen": data}
        waits = [e for e in instance.execution_history if e.step == "early_await"]
        assert [(e.event, e.context_updates) for e in waits] == [("approved", data)]
        assert instance.inbox == ()
        mine = [r for r in runs if r.instance == instance_id]
        assert sorted((r.step, r.outcome) for r in mine) == [
            ("early_await", "parked"),
            ("early_next", "ok"),
        ], mine
        parked = next(r for r in mine if r.step == "early_await")
        early += parked.end is not None and sent_at[instance_id] < parked.end
    counts = count(ids, instances, runs)
    print(
        f"[{backend(cluster.url)}] early events: {counts.line()}; {early} of {len(ids)} "
        "events were sent before their step parked"
    )
    counts.assert_zero()
    assert early >= len(gated)


# --- a runner that lost its lease to a locked database ---------------------------------------


@pytest.mark.slow
def test_a_runner_fenced_by_a_locked_database_rejoins_once_it_is_free(tmp_path: Path) -> None:
    db = tmp_path / "locked.db"
    asyncio.run(_migrate_sqlite(db))
    # Writes give up after 0.2 s on a locked file, so that renewals fail while it is held.
    cluster = Cluster(f"sqlite:///{db}?timeout=0.2", tmp_path, tmp_path / "sideeffects.log")
    lock = sqlite3.connect(db, isolation_level=None)
    try:
        runner = cluster.runner("runner")
        cluster.client("SlowFlow", 0, 1)
        until(
            lambda: read(cluster.log)[-1:] and read(cluster.log)[-1].step == "slow_work",
            30,
            "the 3 s step to start",
            runner,
        )
        # Another process holds the write lock: the runner cannot renew, so it stops its
        # actors before its lease lapses, and cannot register anew.
        lock.execute("BEGIN IMMEDIATE")
        until(
            lambda: "stops all 1 of its actors" in cluster.output(runner),
            10,
            "the runner to give up its lease",
            runner,
        )
        time.sleep(1.0)  # its registration under a new id fails too
        lock.execute("ROLLBACK")

        # The database is free again: the runner must register, take the instance back and
        # finish it (the step runs again), without a restart.
        until(
            lambda: [
                r for r in registered(cluster.url) if r.pid == runner.pid and r.is_live(time.time())
            ],
            5,
            "the runner to be registered again",
            runner,
        )
        final = all_final(cluster.url, ["slow::i0"], timeout=20)["slow::i0"]
        assert final.status is Status.COMPLETED
    finally:
        lock.close()
        cluster.close()


# --- regressions of bugs this suite found -------------------------------------------------------


def test_a_runner_stopped_with_sigterm_hands_over_no_step_still_running(cluster: Cluster) -> None:
    """SIGTERM while a sync step runs: the step must end before the instance is handed over."""
    runners = [cluster.runner("runner-a"), cluster.runner("runner-b")]
    cluster.client("ThreadFlow", 0, 1)
    ids = ["thread::i0"]
    first = until(lambda: read(cluster.log), 30, "the 2 s step to start")[0]
    (stopping,) = [p for p in runners if p.pid == first.pid]
    stopping.send_signal(signal.SIGTERM)  # the other runner takes the instance over at once
    instances = all_final(cluster.url, ids, timeout=30)
    stopping.wait(timeout=30)
    runs = read(cluster.log)
    counts = count(ids, instances, runs)
    print(
        f"[{backend(cluster.url)}] runner stopped mid-step: {counts.line()}; "
        + ", ".join(
            f"pid {r.pid} {r.start - first.start:.2f}s..{(r.end or 0) - first.start:.2f}s"
            for r in runs
        )
    )
    counts.assert_zero()


def test_a_cancel_requested_while_no_runner_owns_the_instance_runs_no_step(
    cluster: Cluster,
) -> None:
    crashed = cluster.runner("runner-crashed")
    cluster.client("SlowFlow", 0, 1)
    until(lambda: [r for r in read(cluster.log) if r.step == "slow_work"], 30, "the step to start")
    crashed.send_signal(signal.SIGKILL)
    crashed.wait(timeout=10)
    # No runner: the CLI records a cancel request (a step is active), to be applied on takeover.
    cancel, _, _ = cluster.cli("instances", "cancel", "slow::i0")
    assert cancel.stdout.startswith("Cancel requested for slow::i0"), (cancel.stdout, cancel.stderr)

    restarted = cluster.runner("runner-restarted")
    final = all_final(cluster.url, ["slow::i0"], timeout=30)["slow::i0"]
    assert final.status is Status.CANCELLED
    with contextlib.suppress(AssertionError):  # a step started by mistake shows within ms
        until(lambda: [r for r in read(cluster.log) if r.pid == restarted.pid], 2, "a wrong step")
    cluster.stop(restarted)
    after = [(r.step, r.outcome) for r in read(cluster.log) if r.pid == restarted.pid]
    print(f"[{backend(cluster.url)}] steps run after the cancel was stored: {after}")
    assert after == [], "the instance was cancelled before the runner took it: nothing runs"


class _OneSlowRenewal(SQLiteStorage):
    """A SQLite storage whose next lease renewal, once armed, answers `hang` seconds late."""

    hang = 0.0

    async def renew_runner(self, runner_id: str, now: float, lease_until: float) -> bool:
        delay, self.hang = self.hang, 0.0
        await asyncio.sleep(delay)
        return await super().renew_runner(runner_id, now, lease_until)


async def test_one_renewal_that_hangs_does_not_stop_the_runners_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "sideeffects.log"
    monkeypatch.setenv("MANY_LOG", str(log))
    storage = _OneSlowRenewal(tmp_path / "renewals.db")
    async with Hephaestus(storage=storage, runner=LocalRunner(lease=1.0)) as app:
        await app.start_instance(SlowFlow, {"seconds": 1.5}, id="slow::one")
        while not [r for r in read(log) if r.step == "slow_work"]:
            await asyncio.sleep(0.01)
        storage.hang = 0.4  # one renewal answers after 0.4 s: longer than a third of the lease
        final = await app.wait("slow::one", timeout=20)
    assert final.status is Status.COMPLETED
    runs = [(r.step, r.outcome) for r in read(log) if r.step == "slow_work"]
    assert runs == [("slow_work", "ok")], "the step ran once, uninterrupted"
