"""What the crash tests check after killing runner or worker processes.

Steps append `instance step attempt started_at` lines (fsynced) to a log;
these helpers read it back and check it against the stored instances.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from hephaestus import Context, Instance, Status


def record(log: str | None, context: Context, step: str) -> None:
    """Append one execution of `step` to `log`, durably, before the step does its work."""
    if not log:
        return
    instance_id = context.idempotency_key.split("/")[0]
    line = f"{instance_id} {step} {context.attempt} {time.time():.6f}\n"
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def executions(log: Path) -> list[tuple[str, str, int, float]]:
    """Every recorded execution: (instance id, step, attempt, start time)."""
    if not log.exists():
        return []
    rows = []
    for line in log.read_text().splitlines():
        instance_id, step, attempt, started = line.split()
        rows.append((instance_id, step, int(attempt), float(started)))
    return rows


def assert_all_completed_once(
    instances: Iterable[Instance], log: Path, steps: Iterable[str], not_logged: Iterable[str]
) -> None:
    """Every instance completed; each step is once in its history; none ran after completing.

    Re-runs are allowed only for attempts interrupted before their result was
    stored (steps run at least once); `not_logged` steps (built-ins) record nothing.
    """
    instances = list(instances)
    assert {i.status for i in instances} == {Status.COMPLETED}, [
        (i.id, i.status, i.error) for i in instances if i.status is not Status.COMPLETED
    ][:5]
    runs: dict[tuple[str, str], list[float]] = defaultdict(list)
    for instance_id, step, _attempt, started in executions(log):
        runs[(instance_id, step)].append(started)
    expected, silent = sorted(steps), set(not_logged)
    for instance in instances:
        history = [entry.step for entry in instance.execution_history]
        assert sorted(history) == expected, (instance.id, history)
        for entry in instance.execution_history:
            if entry.step in silent:
                continue
            started = runs[(instance.id, entry.step)]
            assert started, f"{instance.id}: {entry.step} completed without running"
            late = [t for t in started if t > entry.timestamp.timestamp()]
            assert not late, f"{instance.id}: {entry.step} ran again after it completed"
