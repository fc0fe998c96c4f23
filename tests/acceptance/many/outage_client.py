"""Client-mode processes of the database-outage test; they run no step.

python -m many.outage_client start STORAGE_URL FIRST COUNT
    Starts `OutageFlow` instances `outage::i<n>`; prints `started <count>`.

python -m many.outage_client probe STORAGE_URL GO_FILE BACK_FILE
    Opens a client app (the database is up), prints `open`, waits until
    GO_FILE exists (the database is down by then), then tries one
    `start_instance` (id `outage::probe`) and prints
    `probe <outcome> <exception type> <seconds> <message>`, where outcome
    is `refused` (a `StorageError`), `stored`, or `other` (another exception);
    then opens a new `PostgresStorage` and prints `fresh ...` likewise. It
    closes its app once BACK_FILE exists (the database is up again).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Any

from hephaestus import Hephaestus, StorageError
from hephaestus.cli._storage_url import storage_from_url
from hephaestus.storage.postgres import PostgresStorage
from many.outage_flows import OutageFlow

PROBE_ID = "outage::probe"


async def start(url: str, first: int, count: int) -> None:
    async with Hephaestus(storage=storage_from_url(url), runner=None) as app:
        assert app.is_client
        ids = await asyncio.gather(
            *(
                app.start_business(OutageFlow, f"i{n}", {"n": n})
                for n in range(first, first + count)
            )
        )
    print(f"started {len(ids)} pid {os.getpid()}", flush=True)


async def _attempt(work: Any) -> str:
    """`<outcome> <exception type> <seconds> <message>` of one awaited call."""
    began = time.monotonic()
    error: BaseException | None = None
    try:
        await work
    except StorageError as exc:
        outcome, error = "refused", exc
    except Exception as exc:
        outcome, error = "other", exc
    else:
        outcome = "stored"
    took = time.monotonic() - began
    detail = " ".join(str(error).split()) if error is not None else ""
    return f"{outcome} {type(error).__name__} {took:.3f} {detail}"


async def probe(url: str, go: Path, back: Path) -> None:
    app = Hephaestus(storage=PostgresStorage(url, connect_timeout=1.0, timeout=2.0), runner=None)
    async with app:
        print("open", flush=True)
        while not go.exists():
            await asyncio.sleep(0.01)
        print("probe " + await _attempt(app.start_instance(OutageFlow, {"n": 0}, id=PROBE_ID)))
        # A client that opens its storage while the database is down fails as fast.
        fresh = PostgresStorage(url, connect_timeout=1.0, timeout=2.0)
        print("fresh " + await _attempt(fresh.open()), flush=True)
        with contextlib.suppress(Exception):
            await fresh.close()
        while not back.exists():
            await asyncio.sleep(0.05)


if __name__ == "__main__":
    if sys.argv[1] == "start":
        asyncio.run(start(sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
    else:
        asyncio.run(probe(sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])))
