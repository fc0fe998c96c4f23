"""What every case shares: the sizes of each mode, result rows, targets, timing and memory.

A case returns `Row`s. Each row holds our figure, the baseline measured in the
same run, and optionally a target; the ratio is always `ours / baseline`, so a
ratio above 1 means "more than the baseline" whether more is good (throughput)
or bad (latency, memory).
"""

from __future__ import annotations

import gc
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "MODES",
    "SIZES",
    "Bench",
    "Row",
    "Sizes",
    "Target",
    "percentile",
    "rss_bytes",
    "settle_memory",
    "stopwatch",
]

MODES = ("tiny", "quick", "full")


@dataclass(frozen=True, slots=True)
class Sizes:
    """How much work each case does in one mode."""

    overhead_instances: int  # engine-overhead: concurrent 20-step instances per repeat
    overhead_repeats: int  # engine-overhead: repeats; the median is reported
    throughput_instances: int  # durable-throughput and peer: instances per shape and backend
    resume_instances: int  # resume-latency: parked instances, resumed one after another
    parked_instances: int  # parked-scale: instances parked at once
    parked_batch: int  # parked-scale: instances started (and resumed) concurrently
    floor_cap: int  # most single-row upserts one storage-floor measurement makes


SIZES: dict[str, Sizes] = {
    # Seconds: for the smoke test, so the harness cannot rot. Its numbers mean nothing.
    "tiny": Sizes(20, 1, 10, 20, 200, 100, 200),
    "quick": Sizes(300, 3, 200, 300, 10_000, 1_000, 3_000),
    "full": Sizes(1_000, 5, 1_000, 1_000, 100_000, 1_000, 20_000),
}


@dataclass(frozen=True, slots=True)
class Target:
    """A goal for a row: `ours <op> value`, or `ratio <op> value` when `on="ratio"`."""

    op: Literal["<", "<=", ">="]
    value: float
    on: Literal["ours", "ratio"] = "ours"

    def describe(self, unit: str) -> str:
        symbol = {"<": "<", "<=": "≤", ">=": "≥"}[self.op]
        if self.on == "ratio":
            return f"{symbol} {_number(self.value)}x"
        return f"{symbol} {_number(self.value)} {unit}".rstrip()

    def check(self, ours: float | None, ratio: float | None) -> bool | None:
        value = ratio if self.on == "ratio" else ours
        if value is None or math.isnan(value):
            return None
        if self.op == "<":
            return value < self.value
        if self.op == "<=":
            return value <= self.value
        return value >= self.value


@dataclass(slots=True)
class Row:
    """One figure of ours, its baseline from the same run, and what it should reach."""

    case: str
    metric: str
    unit: str = ""
    ours: float | None = None
    baseline: float | None = None
    baseline_label: str = ""
    target: Target | None = None
    backend: str | None = None
    skipped: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.ours is None or self.baseline is None or self.baseline == 0:
            return None
        return self.ours / self.baseline

    @property
    def met(self) -> bool | None:
        if self.target is None or self.skipped is not None:
            return None
        return self.target.check(self.ours, self.ratio)

    def to_json(self) -> dict[str, Any]:
        return {
            "case": self.case,
            "backend": self.backend,
            "metric": self.metric,
            "unit": self.unit,
            "ours": self.ours,
            "baseline": self.baseline,
            "baseline_label": self.baseline_label,
            "ratio": self.ratio,
            "target": None if self.target is None else self.target.describe(self.unit),
            "met": self.met,
            "skipped": self.skipped,
            "details": self.details,
        }


@dataclass(slots=True)
class Bench:
    """One run: its mode and sizes, a scratch directory, and what cases share."""

    mode: str
    workdir: Path
    backends: tuple[str, ...] = ("sqlite", "postgres")
    pg_url: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    #: Measurements one case makes and a later one may reuse (our throughput for the peer case).
    shared: dict[Any, Any] = field(default_factory=dict)

    @property
    def sizes(self) -> Sizes:
        return SIZES[self.mode]

    def scratch(self, name: str) -> Path:
        """A path in the run's scratch directory, not used before in this run."""
        path = self.workdir / name
        n = 1
        while path.exists():
            n += 1
            path = self.workdir / f"{n}-{name}"
        return path

    def child_env(self) -> dict[str, str]:
        """Environment for a child process: this interpreter's, with the bench importable."""
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        return env

    @property
    def python(self) -> str:
        return sys.executable


def stop_processes(processes: list[subprocess.Popen[Any]], timeout: float = 30) -> None:
    """SIGTERM each of `processes`, wait up to `timeout` seconds for each, SIGKILL the rest."""
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()


@contextmanager
def stopwatch() -> Iterator[list[float]]:
    """`with stopwatch() as elapsed:` ... then `elapsed[0]` is the seconds it took."""
    box = [0.0]
    started = time.perf_counter()
    try:
        yield box
    finally:
        box[0] = time.perf_counter() - started


def percentile(values: list[float], p: float) -> float:
    """The `p`-th percentile (0-100) of `values`, interpolated between the closest ranks."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def rss_bytes() -> int:
    """The resident set size of this process now (Linux); the peak where /proc is missing."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


def settle_memory() -> int:
    """Collect garbage, then return the RSS: the figure to compare before and after."""
    for _ in range(3):
        gc.collect()
    return rss_bytes()


def _number(value: float) -> str:
    return f"{value:g}"
