"""A side-effect log shared by every process of a test: who ran which attempt, and when.

Each execution of a step appends a start line before its work and an end line
after it (`ok`, `error`, `parked` or `cancelled`), with the process id. Lines
go to the file named by `MANY_LOG` with one `write` of an `O_APPEND`
descriptor each, so lines from several processes never interleave, and a
SIGKILL cannot hide a line already written (the kernel holds it; only a power
loss could drop it, which these tests do not simulate).

    S <instance> <step> <attempt> <pid> <time> <token>
    E <token> <time> <outcome>
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from hephaestus import Context

_COUNTER = itertools.count()


def _append(line: str) -> None:
    path = os.environ.get("MANY_LOG")
    if not path:
        return
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


class Execution:
    """The open record of one execution; `outcome` says how it ended (default `ok`)."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.outcome = "ok"


@contextmanager
def recorded(context: Context, step: str) -> Iterator[Execution]:
    """Log the start of this attempt of `step` now, and its end when the block exits.

    An exception in the block ends it as `error`; a cancellation (the runner
    stopped the step) as `cancelled`. A SIGKILL leaves the start line alone.
    """
    instance_id = context.idempotency_key.split("/")[0]
    token = f"{os.getpid()}-{next(_COUNTER)}"
    _append(f"S {instance_id} {step} {context.attempt} {os.getpid()} {time.time():.6f} {token}\n")
    execution = Execution(token)
    try:
        yield execution
    except BaseException as exc:
        # CancelledError is a BaseException: the runner stopped the step.
        execution.outcome = "error" if isinstance(exc, Exception) else "cancelled"
        raise
    finally:
        _append(f"E {token} {time.time():.6f} {execution.outcome}\n")


@dataclass
class Run:
    """One execution read back from the log; `end` is `None` if it never logged its end."""

    instance: str
    step: str
    attempt: int
    pid: int
    start: float
    token: str
    end: float | None = None
    outcome: str | None = None


def read(log: Path) -> list[Run]:
    """Every execution in the log, in the order they started."""
    if not log.exists():
        return []
    runs: dict[str, Run] = {}
    # The last piece has no newline yet if a process is writing it right now: it is skipped.
    for line in log.read_text().split("\n")[:-1]:
        kind, *fields = line.split()
        if kind == "S":
            instance, step, attempt, pid, start, token = fields
            runs[token] = Run(instance, step, int(attempt), int(pid), float(start), token)
        elif kind == "E":
            token, end, outcome = fields
            runs[token].end, runs[token].outcome = float(end), outcome
    return sorted(runs.values(), key=lambda run: run.start)
