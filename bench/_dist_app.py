"""The app `hephaestus worker` processes run in `python -m bench.distributed`.

Its database comes from `HEPHAESTUS_BENCH_DIST_URL`, the worker concurrency
from `HEPHAESTUS_BENCH_DIST_CONCURRENCY`. With `HEPHAESTUS_BENCH_SQL_COUNT`
set, the process counts the SQL statements it sends (see `bench._sqlcount`)
and writes the count next to that path when it exits.
"""

from __future__ import annotations

import os

from bench import _sqlcount
from bench import workflows as _workflows  # noqa: F401  (the workflows the bench starts)
from hephaestus import Hephaestus
from hephaestus.runners.procrastinate import ProcrastinateRunner
from hephaestus.storage.postgres import PostgresStorage

_sqlcount.install(os.environ.get("HEPHAESTUS_BENCH_SQL_COUNT"))


def make_app(url: str, concurrency: int) -> Hephaestus:
    return Hephaestus(
        storage=PostgresStorage(url),
        runner=ProcrastinateRunner(concurrency=concurrency),
    )


app = make_app(
    os.environ.get("HEPHAESTUS_BENCH_DIST_URL", "postgresql://postgres@127.0.0.1/postgres"),
    int(os.environ.get("HEPHAESTUS_BENCH_DIST_CONCURRENCY", "50")),
)
