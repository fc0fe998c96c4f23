"""A runner process for the CLI tests: `hephaestus worker --app cli_fixtures.runner:app`.

The storage comes from `HEPHAESTUS_STORAGE`, as it would in a deployment.
"""

from __future__ import annotations

import os

import cli_fixtures.flows  # noqa: F401  (registers the workflows this runner runs)
from hephaestus import Hephaestus, LocalRunner
from hephaestus.storage import storage_from_url

app = Hephaestus(
    storage=storage_from_url(os.environ["HEPHAESTUS_STORAGE"]),
    runner=LocalRunner(lease=2.0, timer_poll_interval=0.2),
)
