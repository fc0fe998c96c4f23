"""payload-size: steps that return 10 KB and 100 KB, against DBOS Transact on the same database.

N instances of a 20-step linear workflow run at once; every step returns a
string of the given size as its output, which is stored (ours: once, as the
step's history row; DBOS: as the step's output row). Figures are milliseconds
per step (lower is better), so the ratio is ours / DBOS: at most 1 at 10 KB
and at most 0.5 (twice as fast) at 100 KB is the goal. A storage that
rewrote the whole instance on every step would write 20 x 20 / 2 outputs per
instance instead of 20.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from itertools import pairwise
from typing import Any

from bench import _postgres
from bench._child import ChildFailed, run_child
from bench._harness import Bench, Row, Target, stopwatch
from bench.cases.durable_throughput import backend_problem, open_storage
from bench.cases.peer import DBOS_DATABASE, dbos_problem
from hephaestus import Done, Hephaestus, LocalRunner, Ok, Status, Step, Unique, Workflow
from hephaestus.storage.base import Query

__all__ = ["BASELINE", "NAME", "SUMMARY", "run"]

NAME = "payload-size"
SUMMARY = "ms per step when each of 20 steps returns 10 KB / 100 KB, vs DBOS"
BASELINE = "DBOS Transact, the same 20 steps returning the same data, same database"

STEPS = 20
#: Ours / DBOS in ms per step: at most this, by payload size.
TARGETS = {10_000: 1.0, 100_000: 0.5}
INSTANCES = {"tiny": 2, "quick": 10, "full": 20}


class _Returns(Step):
    events = ("ok",)

    async def execute(self, instance: Any, config: Mapping[str, Any] | None, context: Any) -> Ok:
        return Ok("ok", {"data": "x" * context.initial["size"]})


_CHAIN = [
    type(name, (_Returns,), {"__module__": __name__, "__qualname__": name})
    for name in (f"Payload{i:02d}" for i in range(STEPS))
]


class Payload20(Workflow):
    unique = Unique(key="payload", scope="workflow")
    start = _CHAIN[0]
    transitions = {
        **{(step, "ok"): following for step, following in pairwise(_CHAIN)},
        (_CHAIN[-1], "ok"): Done,
    }


async def _ours(bench: Bench, backend: str, size: int, instances: int) -> float:
    """Seconds per step of `instances` runs at once, after one warm-up run."""
    storage, _ = await open_storage(bench, backend, f"payload-{size}")
    runner = LocalRunner()
    async with Hephaestus(storage=storage, runner=runner) as app:
        await app.start_instance(Payload20, {"size": size}, id="payload::warm")
        await runner.wait_idle(timeout=600)
        ids = [f"payload::n{i}" for i in range(instances)]
        with stopwatch() as elapsed:
            await asyncio.gather(
                *(app.start_instance(Payload20, {"size": size}, id=i) for i in ids)
            )
            await runner.wait_idle(timeout=1800)
        done = await storage.query(Query(status=Status.COMPLETED))
    if len(done) != instances + 1:
        raise RuntimeError(f"{backend}: {len(done)} of {instances + 1} instances completed")
    return elapsed[0] / (instances * STEPS)


def run(bench: Bench) -> list[Row]:
    rows: list[Row] = []
    instances = INSTANCES[bench.mode]
    peer_problem = dbos_problem()
    for backend in bench.backends:
        problem = backend_problem(bench, backend)
        for size, target in TARGETS.items():
            metric = f"{backend}: ms per step, steps returning {size // 1000} KB"
            if problem is not None:
                rows.append(Row(NAME, metric, backend=backend, skipped=problem))
                continue
            ours = asyncio.run(_ours(bench, backend, size, instances))
            if peer_problem is not None:
                rows.append(Row(NAME, metric, backend=backend, skipped=peer_problem))
                continue
            if backend == "sqlite":
                url = f"sqlite:///{bench.scratch(f'dbos-payload-{size}.sqlite')}"
            else:
                url = _postgres.fresh_database(bench.pg_url, DBOS_DATABASE)
            try:
                peer = run_child(
                    "dbos-payload",
                    {"url": url, "size": size, "instances": instances},
                    timeout=900,
                    env=bench.child_env(),
                )
            except ChildFailed as exc:
                rows.append(Row(NAME, metric, backend=backend, skipped=f"DBOS failed: {exc}"))
                continue
            rows.append(
                Row(
                    NAME,
                    metric,
                    unit="ms",
                    ours=ours * 1e3,
                    baseline=peer["seconds"] / (instances * STEPS) * 1e3,
                    baseline_label=f"DBOS {peer['dbos']}",
                    target=Target("<=", target, on="ratio"),
                    backend=backend,
                    details={"instances": instances, "steps": STEPS, "dbos": peer},
                )
            )
    return rows
