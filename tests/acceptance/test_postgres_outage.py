"""A database outage never strands instances in a live LocalRunner.

Real processes on a throwaway PostgreSQL cluster of this test's own (its own
port, its socket in a temporary directory, trust auth): one runner process
(`hephaestus worker --app many.outage_runner:app`, lease 2 s, so the outage
outlasts it), a client process that starts 300 `OutageFlow` instances (steps of
0.2 to 0.5 s, sync and async, a fan-out and a join) and a client process that
probes the outage. While hundreds of steps are in flight the cluster is
stopped (`pg_ctl stop -m fast`) for 12 s, then started again.

The same runner process (never restarted) must complete every instance within
90 s of the restart, with lost=0 stuck=0 duplicated=0 as `test_many_processes`
counts them: a step interrupted by the outage may run again as the same
attempt, but never concurrently with itself and never after its completion was
stored. A `start_instance` a client attempts during the outage fails fast with
`StorageError` and stores nothing.

The cluster needs PostgreSQL's `initdb` and `pg_ctl` (as root, they run as the
`postgres` user). Without them the test is skipped, except under `CI=true`,
where it fails, as it does whenever the cluster cannot be created.
"""

from __future__ import annotations

import asyncio
import getpass
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from many.outage_client import PROBE_ID
from many.outage_flows import BUILT_IN, OUTAGE_STEPS
from many.sideeffects import Run, read
from test_many_processes import Cluster, all_final, count, registered, reruns, stored, until

import hephaestus as hephaestus_package
from hephaestus import Instance, Status
from hephaestus.storage.postgres import migrate

HERE = Path(__file__).parent
SOURCE = Path(hephaestus_package.__file__).resolve().parent.parent

#: Instances the client process starts.
INSTANCES = 300
#: How long the database stays down, from the moment it has stopped.
OUTAGE = 12.0
#: Every instance completes within this many seconds of the database's restart.
RECOVERY = 90.0
#: A client's call during the outage fails within this many seconds.
FAST = 5.0
#: The runner's lease (`many/outage_runner.py`).
LEASE = 2.0


# --- a throwaway PostgreSQL cluster ----------------------------------------------------------


def _binaries() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), reverse=True)
    return candidates[0].parent if candidates else None


class Postgres:
    """A private cluster on a free port of 127.0.0.1; stopped and started at will."""

    def __init__(self, binaries: Path, root: Path) -> None:
        self.binaries = binaries
        self.root = root
        self.data = root / "data"
        self.sockets = root / "socket"
        self.logfile = root / "postgres.log"
        # PostgreSQL refuses to run as root: then it runs as the `postgres` user.
        self.as_root = os.geteuid() == 0
        self.user = "postgres" if self.as_root else getpass.getuser()
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"postgresql://{self.user}@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(a) for a in args]
        if self.as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if check and result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(command)} failed ({result.returncode}): {result.stdout}{result.stderr}"
                f"{self.log()[-2000:]}"
            )
        return result

    def log(self) -> str:
        try:
            return self.logfile.read_text(errors="replace")
        except OSError:
            return ""

    def create(self) -> None:
        if self.as_root:
            shutil.chown(self.root, "postgres", "postgres")
        self.sockets.mkdir()
        if self.as_root:
            shutil.chown(self.sockets, "postgres", "postgres")
        self._run(
            self.binaries / "initdb",
            "-D",
            self.data,
            "-U",
            self.user,
            "--auth=trust",
            "-E",
            "UTF8",
        )
        self.start()

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c max_connections=100"
        )
        self._run(
            self.binaries / "pg_ctl", "-D", self.data, "-w", "-t", "60", "-s", "-o", options,
            "-l", self.logfile, "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast", *, check: bool = True) -> None:
        self._run(
            self.binaries / "pg_ctl", "-D", self.data, "-w", "-t", "60", "-s", "-m", mode, "stop",
            check=check,
        )  # fmt: skip


@pytest.fixture
def postgres() -> Iterator[Postgres]:
    binaries = _binaries()
    in_ci = os.environ.get("CI", "").lower() == "true"
    if binaries is None:
        if in_ci:
            pytest.fail("no PostgreSQL binaries (initdb, pg_ctl): CI must run this test")
        pytest.skip("no PostgreSQL binaries (initdb, pg_ctl) to start a throwaway cluster")
    root = Path(tempfile.mkdtemp(prefix="hephaestus-outage-"))
    cluster = Postgres(binaries, root)
    try:
        try:
            cluster.create()
        except Exception as exc:
            pytest.fail(f"the throwaway PostgreSQL cluster could not be created: {exc}")
        yield cluster
    finally:
        if cluster.data.exists():
            cluster.stop("immediate", check=False)
        shutil.rmtree(root, ignore_errors=True)


# --- processes -------------------------------------------------------------------------------


@pytest.fixture
def processes(postgres: Postgres, tmp_path: Path) -> Iterator[Cluster]:
    started = Cluster(postgres.url, tmp_path, tmp_path / "sideeffects.log")
    try:
        yield started
    finally:
        started.close()


# --- the test --------------------------------------------------------------------------------


def _line(output: str, prefix: str) -> list[str] | None:
    for line in output.splitlines():
        if line.startswith(prefix + " "):
            return line.split(" ", 4)
    return None


def _check_flows(instances: dict[str, Instance], ids: list[str], runs: list[Run]) -> None:
    """Each instance: every step once in its history, an execution that ran; results joined."""
    ran_ok = {(r.instance, r.step, r.attempt) for r in runs if r.outcome == "ok"}
    for instance_id in ids:
        instance = instances[instance_id]
        history = instance.execution_history
        assert sorted(e.step for e in history) == sorted(OUTAGE_STEPS), (instance_id, history)
        for entry in history:
            if entry.step not in BUILT_IN:
                assert (instance_id, entry.step, entry.attempt) in ran_ok, (instance_id, entry)
        n = instance.context.initial["n"]
        assert instance.context.steps["outage_join"]["total"] == 3 * n + 1, instance_id


@pytest.mark.slow
def test_a_database_outage_never_strands_instances_in_a_live_local_runner(
    postgres: Postgres, processes: Cluster
) -> None:
    url = postgres.url
    assert asyncio.run(migrate(url)), "the new database was migrated"

    runner = processes.spawn(
        "runner", "-m", "hephaestus.cli", "worker", "--app", "many.outage_runner:app"
    )
    until(lambda: "ready" in processes.output(runner), 30, "the runner to start", runner)
    (first_registration,) = [r.id for r in registered(url) if r.pid == runner.pid]
    go, back = processes.tmp / "go", processes.tmp / "back"
    probe = processes.spawn("probe", "-m", "many.outage_client", "probe", url, str(go), str(back))
    until(lambda: "open" in processes.output(probe), 30, "the probe client to open", probe)

    began = time.time()
    client = processes.spawn(
        "client", "-m", "many.outage_client", "start", url, "0", str(INSTANCES)
    )
    ids = [f"outage::i{n}" for n in range(INSTANCES)]

    # Mid-run: steps have ended, many more are running, most instances are not done.
    def in_flight() -> bool:
        runs = read(processes.log)
        ended = [r for r in runs if r.end is not None]
        joined = {r.instance for r in ended if r.step == "outage_join"}
        running = [r for r in runs if r.end is None]
        return len(ended) >= 150 and len(running) >= 50 and len(joined) < INSTANCES // 3

    until(in_flight, 60, "hundreds of steps to be in flight", runner)
    client.wait(timeout=60)
    assert client.returncode == 0, processes.output(client)
    assert f"started {INSTANCES}" in processes.output(client)

    # The outage.
    stopping = time.time()
    postgres.stop("fast")
    stopped = time.time()
    at_stop = read(processes.log)
    interrupted = [r for r in at_stop if r.end is None or r.end > stopping]
    done_before = {r.instance for r in at_stop if r.step == "outage_join" and r.end is not None}
    go.touch()
    until(lambda: _line(processes.output(probe), "fresh"), 30, "the probe to try", probe)
    probed = _line(processes.output(probe), "probe")
    fresh = _line(processes.output(probe), "fresh")
    assert probed is not None
    assert fresh is not None
    time.sleep(max(0.0, stopped + OUTAGE - time.time()))
    assert runner.poll() is None, "the runner outlived the outage\n" + processes.output(runner)
    during = [r for r in read(processes.log) if r.start > stopping]
    postgres.start()
    restarted = time.time()
    back.touch()

    instances = all_final(url, ids, timeout=RECOVERY - (time.time() - restarted))
    final_after = time.time() - restarted
    last_completed = max(i.updated_at.timestamp() for i in instances.values()) - restarted
    runs = read(processes.log)
    counts = count(ids, instances, runs)
    interrupted_keys = {(r.instance, r.step, r.attempt) for r in interrupted}
    rerun = [
        r for r in runs if r.start > stopped and (r.instance, r.step, r.attempt) in interrupted_keys
    ]
    latest = max((r.start - stopping for r in during), default=0.0)
    rejoined = [r.id for r in registered(url) if r.pid == runner.pid]
    print(
        f"[postgresql outage] {INSTANCES} instances, database down {restarted - stopping:.1f}s "
        f"(stop took {stopped - stopping:.2f}s) with {INSTANCES - len(done_before)} instances "
        f"unfinished and {len(interrupted)} steps in flight: {counts.line()}; all final "
        f"{final_after:.1f}s after the restart, the last completed {last_completed:.1f}s after "
        f"it; whole run {time.time() - began:.1f}s; {len(during)} steps started during the "
        f"outage (sync steps queued for a thread before it; the last {latest:.2f}s after the "
        f"stop); {len(rerun)} interrupted attempts ran again, {reruns(runs)} runs beyond the "
        f"first of an attempt in all; client start_instance during the outage: "
        f"{' '.join(probed[1:4])}s, a fresh open: {' '.join(fresh[1:4])}s; runner "
        f"{first_registration} -> {rejoined}"
    )

    counts.assert_zero()
    _check_flows(instances, ids, runs)
    assert len(done_before) < INSTANCES, "the outage hit instances mid-run"
    assert interrupted, "the outage hit steps mid-run"
    assert runner.poll() is None, "the same runner process, still alive"
    # A runner that cannot renew its lease starts no step once the lease could have lapsed.
    assert latest < LEASE, f"a step started {latest:.2f}s into the outage"
    assert {r.pid for r in runs} == {runner.pid}, "only the runner ran steps, never restarted"
    assert rejoined, "the runner is registered again"
    assert first_registration not in rejoined, "under a new id: the outage outlasted its lease"
    assert last_completed < RECOVERY
    for name, result in (("start_instance", probed), ("a fresh open", fresh)):
        assert result[1:3] == ["refused", "StorageError"], (name, result)
        assert float(result[3]) < FAST, (name, result)
    assert PROBE_ID not in stored(url), "the refused start stored nothing"
    assert all(i.status is Status.COMPLETED for i in instances.values())
    said = processes.output(runner)
    # What the operator sees (docs/runtime.md, "Faults"), and no actor that crashed on a bug.
    assert "stops all" in said, said[-5000:]
    assert "crashed (restart" not in said, said[-5000:]
    assert "exception was never retrieved" not in said, said[-5000:]
