"""lease-cost: what runner leases cost durable throughput.

Every `LocalRunner` registers in its storage and renews its lease every third
of the lease; its work loop watches the storage for other processes' writes.
This case runs the durable-throughput linear-3 shape twice in the same run,
on a fresh storage each time: once with a lease of 0.3 s (a renewal every
0.1 s, thirty times the default rate) and once with a lease of an hour (no
renewal during the run). The ratio shows what renewals cost; the work loop
and the ownership checks of every write are in both figures, and the
durable-throughput case compares those with the storage floor.
"""

from __future__ import annotations

import asyncio

from bench._harness import Bench, Row, Target
from bench.cases.durable_throughput import backend_problem, run_ours
from bench.workflows import SHAPES
from hephaestus import LocalRunner

__all__ = ["BASELINE", "NAME", "SUMMARY", "run"]

NAME = "lease-cost"
SUMMARY = "linear-3 workflows/s with leases renewed every 0.1 s vs not at all"
BASELINE = "the same run with a lease of an hour (no renewal while it runs)"

#: Renewing 10 times a second may cost at most this share of throughput.
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
        still = asyncio.run(run_ours(bench, backend, shape, instances, LocalRunner(lease=3600)))
        busy = asyncio.run(run_ours(bench, backend, shape, instances, LocalRunner(lease=0.3)))
        rows.append(
            Row(
                NAME,
                f"{backend} {shape.name}: workflows/s, lease renewed every 0.1 s",
                ours=busy.workflows_per_second,
                baseline=still.workflows_per_second,
                baseline_label="lease of an hour: no renewal",
                target=Target(">=", TARGET_RATIO, on="ratio"),
                backend=backend,
                details={"renewing": busy.to_json(), "still": still.to_json()},
            )
        )
    return rows
