"""peer: the same two shapes run by DBOS Transact, on the same databases, in the same run.

DBOS Transact (`pip install dbos`, in the `bench` extra) is the closest
peer: a durable-workflow library, no separate server, state in SQLite or
PostgreSQL. Each shape runs as an async DBOS workflow of async no-op steps,
N instances started at once with `DBOS.start_workflow_async` and awaited
(on SQLite also one after another on a pool of one connection, DBOS's best
mode there: the ratio is taken against the faster of the two), on a fresh
SQLite file (WAL, `synchronous=FULL`, as ours) and a fresh PostgreSQL
database. Each DBOS measurement runs in a process of its own, as
DBOS is a process-wide singleton. Our figures are those of
durable-throughput (measured again here if that case did not run).
"""

from __future__ import annotations

import importlib.util

from bench import _postgres
from bench._child import ChildFailed, run_child
from bench._harness import Bench, Row, Target
from bench.cases.durable_throughput import backend_problem, our_throughput
from bench.workflows import SHAPES

__all__ = ["BASELINE", "NAME", "SUMMARY", "run"]

NAME = "peer"
SUMMARY = "our throughput against DBOS Transact's on the same database"
BASELINE = "DBOS Transact, same shapes, same database, same run"

#: How many times DBOS's throughput we aim for.
TARGET_RATIO = 10.0

DBOS_DATABASE = "hephaestus_bench_dbos"


def dbos_problem() -> str | None:
    if importlib.util.find_spec("dbos") is None:
        return "dbos is not installed (pip install -e '.[bench]')"
    return None


def run(bench: Bench) -> list[Row]:
    rows: list[Row] = []
    peer_problem = dbos_problem()
    for backend in bench.backends:
        problem = backend_problem(bench, backend)
        if problem is not None:
            rows.append(Row(NAME, f"{backend}: both shapes", backend=backend, skipped=problem))
            continue
        for shape in SHAPES:
            metric = f"{backend} {shape.name}: workflows/s vs DBOS"
            ours = our_throughput(bench, backend, shape)
            if peer_problem is not None:
                rows.append(Row(NAME, metric, backend=backend, skipped=peer_problem))
                continue
            # On SQLite DBOS is fastest one workflow at a time on a pool of one: measure both
            # modes and compare with the faster.
            modes = (False, True) if backend == "sqlite" else (False,)
            peers = []
            try:
                for one_at_a_time in modes:
                    if backend == "sqlite":
                        name = f"dbos-{shape.name}-{'one' if one_at_a_time else 'all'}.sqlite"
                        url = f"sqlite:///{bench.scratch(name)}"
                    else:
                        url = _postgres.fresh_database(bench.pg_url, DBOS_DATABASE)
                    peers.append(
                        run_child(
                            "dbos",
                            {
                                "url": url,
                                "shape": shape.name,
                                "instances": ours.instances,
                                "one_at_a_time": one_at_a_time,
                            },
                            timeout=900,
                            env=bench.child_env(),
                        )
                    )
            except ChildFailed as exc:
                rows.append(Row(NAME, metric, backend=backend, skipped=f"DBOS failed: {exc}"))
                continue
            rates = [peer["instances"] / peer["seconds"] for peer in peers]
            best = max(range(len(peers)), key=rates.__getitem__)
            mode = "one at a time, pool of 1" if modes[best] else f"{ours.instances} at once"
            rows.append(
                Row(
                    NAME,
                    metric,
                    ours=ours.workflows_per_second,
                    baseline=rates[best],
                    baseline_label=f"DBOS {peers[best]['dbos']}, {mode}",
                    target=Target(">=", TARGET_RATIO, on="ratio"),
                    backend=backend,
                    details={
                        "ours": ours.to_json(),
                        "dbos": dict(zip(("all at once", "one at a time"), peers, strict=False)),
                    },
                )
            )
    return rows
