"""history-growth: does a step cost more when the instance already has a long history?

A few instances of a 1,000-step linear workflow of no-op steps (each returning
a small output, as real steps do) run at once, on SQLite (WAL,
`synchronous=FULL`) and PostgreSQL, every state change durably committed.
Each history entry's timestamp says when its step completed; the median time
between two completions over the last 50 steps is compared with the same over
the first 50 of the same run. The run is repeated and the row shows the run
with the median ratio (all ratios, and the means, are in its details): a
disk that stalls a few commits, or another program taking the CPU, moves one
run's figure, not the median. A storage that rewrote the whole instance on
every change would pay for the history at every step of every run: the
ratio would grow with it.
"""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Mapping
from itertools import pairwise
from typing import Any

from bench._harness import Bench, Row, Target
from bench.cases.durable_throughput import backend_problem, open_storage
from hephaestus import Done, Hephaestus, Instance, LocalRunner, Ok, Status, Step, Unique, Workflow

__all__ = ["BASELINE", "NAME", "SUMMARY", "run"]

NAME = "history-growth"
SUMMARY = "time per step after 950 steps vs the first 50, a 1,000-step workflow"
BASELINE = "the first 50 steps of the same instances, same run"

STEPS = 1_000
WINDOW = 50
#: The last steps may cost at most this much more than the first.
TARGET_RATIO = 1.3
INSTANCES = {"tiny": 2, "quick": 4, "full": 8}
REPEATS = {"tiny": 1, "quick": 3, "full": 5}


class _Counted(Step):
    events = ("ok",)

    async def execute(self, instance: Any, config: Mapping[str, Any] | None, context: Any) -> Ok:
        return Ok("ok", {"n": len(context.steps), "note": "a small output, as steps return"})


def _steps(count: int) -> list[type[Step]]:
    names = [f"Growth{i:04d}" for i in range(count)]
    return [type(n, (_Counted,), {"__module__": __name__, "__qualname__": n}) for n in names]


_CHAIN = _steps(STEPS)


class Growth(Workflow):
    unique = Unique(key="growth", scope="workflow")
    start = _CHAIN[0]
    transitions = {
        **{(step, "ok"): following for step, following in pairwise(_CHAIN)},
        (_CHAIN[-1], "ok"): Done,
    }


def _gaps(instance: Instance, window: slice) -> list[float]:
    """Seconds between consecutive completions in `window` of the instance's history."""
    stamps = [entry.timestamp.timestamp() for entry in instance.execution_history[window]]
    return [later - earlier for earlier, later in pairwise(stamps)]


async def _measure(bench: Bench, backend: str, instances: int) -> dict[str, float]:
    storage, _ = await open_storage(bench, backend, "history-growth")
    runner = LocalRunner()
    async with Hephaestus(storage=storage, runner=runner) as app:
        ids = [f"growth::n{i}" for i in range(instances)]
        await asyncio.gather(*(app.start_instance(Growth, None, id=iid) for iid in ids))
        await runner.wait_idle(timeout=1800)
        done = [await app.get(iid) for iid in ids]
    if any(instance.status is not Status.COMPLETED for instance in done):
        raise RuntimeError(f"{backend}: not every {STEPS}-step instance completed")
    # The last entry is Done's, completed with the step before it: leave it out.
    first = [gap for i in done for gap in _gaps(i, slice(0, WINDOW))]
    last = [gap for i in done for gap in _gaps(i, slice(STEPS - WINDOW, STEPS))]
    # The median step: a commit that stalls on the disk (which happens at any point of a
    # run) moves a window's mean, not its typical step, and a cost that grew with the
    # history would move every step of the last window.
    return {
        "first": statistics.median(first),
        "last": statistics.median(last),
        "first_mean": statistics.fmean(first),
        "last_mean": statistics.fmean(last),
    }


def run(bench: Bench) -> list[Row]:
    rows: list[Row] = []
    instances = INSTANCES[bench.mode]
    for backend in bench.backends:
        metric = f"{backend}: ms per step, last {WINDOW} of {STEPS} vs first {WINDOW}"
        problem = backend_problem(bench, backend)
        if problem is not None:
            rows.append(Row(NAME, metric, backend=backend, skipped=problem))
            continue
        runs = [
            asyncio.run(_measure(bench, backend, instances)) for _ in range(REPEATS[bench.mode])
        ]
        ratios = [times["last"] / times["first"] for times in runs]
        times = runs[ratios.index(statistics.median_low(ratios))]
        rows.append(
            Row(
                NAME,
                metric,
                unit="ms",
                ours=times["last"] * 1e3,
                baseline=times["first"] * 1e3,
                baseline_label=f"first {WINDOW} steps (median step)",
                target=Target("<=", TARGET_RATIO, on="ratio"),
                backend=backend,
                details={
                    "instances": instances,
                    "steps": STEPS,
                    "ratios": ratios,
                    "mean_ratios": [t["last_mean"] / t["first_mean"] for t in runs],
                    **{key: value * 1e3 for key, value in times.items()},
                },
            )
        )
    return rows
