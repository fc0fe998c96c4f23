"""A runner process: `hephaestus worker --app many.runner:app`, run from tests/acceptance.

The storage comes from `HEPHAESTUS_STORAGE`. A lease of one second: a runner
that dies is replaced within about a second (at once on this host, where its
missing process is noticed at the next heartbeat).
"""

from __future__ import annotations

import os

import many.flows  # noqa: F401  (the workflows this runner runs)
from hephaestus import Hephaestus, LocalRunner
from hephaestus.storage import storage_from_url

app = Hephaestus(
    storage=storage_from_url(os.environ["HEPHAESTUS_STORAGE"]),
    runner=LocalRunner(lease=1.0, timer_poll_interval=0.1, work_poll_interval=0.5),
)
