"""A real `hephaestus worker` process for acceptance tests, stopped with SIGTERM after.

Its output goes to a file (an unread pipe could block it); a test that fails
shows it. The worker must not print a traceback while it runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import hephaestus as hephaestus_package

# Where the `hephaestus` under test is imported from, so the subprocess runs the same code.
SOURCE = Path(hephaestus_package.__file__).resolve().parent.parent


@contextmanager
def worker_process(storage_url: str, app: str, cwd: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`hephaestus worker --app APP` run from `cwd` on `storage_url`, once it says it is ready."""
    environ = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "COLUMNS")}
    environ.update(HEPHAESTUS_STORAGE=storage_url, PYTHONPATH=str(SOURCE))
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "hephaestus.cli", "worker", "--app", app],
            cwd=cwd,
            env=environ,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 30
            while b"ready" not in _read(log):
                assert process.poll() is None, _read(log).decode()
                assert time.monotonic() < deadline, _read(log).decode()
                time.sleep(0.05)
            yield process
        finally:
            process.terminate()
            process.wait(timeout=30)
        assert b"Traceback" not in _read(log), _read(log).decode()


def _read(log: IO[bytes]) -> bytes:
    log.seek(0)
    return log.read()
