"""The runner of the Flask example: `hephaestus worker --app worker:app`, from this directory.

It executes the orders that `flask_app.py` starts, on the storage named by
`HEPHAESTUS_STORAGE` (the same one the web app uses). Start as many as the
load needs; each claims its share of the work.
"""

import os

import flows  # noqa: F401  (the workflows this runner executes)

from hephaestus import Hephaestus, LocalRunner
from hephaestus.storage import storage_from_url

app = Hephaestus(
    storage=storage_from_url(os.environ.get("HEPHAESTUS_STORAGE", "sqlite:///hephaestus.db")),
    runner=LocalRunner(),
)
