"""lease-cost: what runner leases cost durable throughput.

Every `LocalRunner` registers in its storage and renews its lease every third
of the lease; its work loop watches the storage for other processes' writes.
This case runs the durable-throughput linear-3 shape twice in the same run,
on a fresh storage each time: once with a lease of 1.5 s (a renewal every
0.5 s, more than three times the default rate) and once with a lease of an
hour (no renewal during the run), three times each, alternated; the medians are
compared. A much shorter lease is not a fair test:
with 1,000 instances at once the event loop is busy for longer than a few
hundred milliseconds at a time, and a runner whose lease may have lapsed
rightly stops starting steps. The ratio shows what renewals cost; the work loop
and the ownership checks of every write are in both figures, and the
durable-throughput case compares those with the storage floor.
"""

from __future__ import annotations

import asyncio

from bench._harness import Bench, Row, Target
from bench.cases.durable_throughput import Throughput, backend_problem, run_ours
from bench.workflows import SHAPES
from hephaestus import LocalRunner

__all__ = ["BASELINE", "NAME", "SUMMARY", "run"]

NAME = "lease-cost"
SUMMARY = "linear-3 workflows/s with leases renewed every 0.5 s vs not at all"
BASELINE = "the same run with a lease of an hour (no renewal while it runs)"

#: Runs of each variant, alternated.
_REPEATS = 3
#: Renewing twice a second may cost at most this share of throughput.
TARGET_RATIO = 0.9


def run(bench: Bench) -> list[Row]:
    shape = SHAPES[0]
    instances = bench.sizes.throughput_instances
    rows: list[Row] = []
    for backend in bench.backends:
        problem = backend_problem(bench, backend)
        if problem is not None:
            rows.append(Row(NAME, f"{backend}: {shape.name}", backend=backend, skipped=problem))
            continue
        # Alternated, and the median of each kept: one run on 2 busy cores is too noisy.
        stills, busies = [], []
        for _ in range(_REPEATS):
            for lease, results in ((3600.0, stills), (1.5, busies)):
                runner = LocalRunner(lease=lease)
                results.append(asyncio.run(run_ours(bench, backend, shape, instances, runner)))
        still = _median(stills)
        busy = _median(busies)
        rows.append(
            Row(
                NAME,
                f"{backend} {shape.name}: workflows/s, lease renewed every 0.5 s "
                f"(median of {_REPEATS})",
                ours=busy.workflows_per_second,
                baseline=still.workflows_per_second,
                baseline_label="lease of an hour: no renewal",
                target=Target(">=", TARGET_RATIO, on="ratio"),
                backend=backend,
                details={"renewing": busy.to_json(), "still": still.to_json()},
            )
        )
    return rows


def _median(runs: list[Throughput]) -> Throughput:
    return sorted(runs, key=lambda run: run.workflows_per_second)[len(runs) // 2]
