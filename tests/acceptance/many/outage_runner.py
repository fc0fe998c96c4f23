"""A runner process for the database-outage test: `hephaestus worker --app many.outage_runner:app`.

The storage comes from `HEPHAESTUS_STORAGE`. A lease of two seconds, so that
an outage of ten seconds outlasts it; enough threads that the sync steps of
hundreds of instances are in flight together.
"""

from __future__ import annotations

import os

import many.outage_flows  # noqa: F401  (the workflows this runner runs)
from hephaestus import Hephaestus, LocalRunner
from hephaestus.cli._storage_url import storage_from_url

app = Hephaestus(
    storage=storage_from_url(os.environ["HEPHAESTUS_STORAGE"]),
    runner=LocalRunner(lease=2.0, step_threads=32, timer_poll_interval=0.2, work_poll_interval=0.5),
)
