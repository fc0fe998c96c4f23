"""Runs `CrashFlow` instances on a SQLite file until every one is finished (or it is killed).

python worker.py DB_PATH start N    # start N instances, then run them
python worker.py DB_PATH recover    # recover what is stored, run until all finish
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from crash_flows import CrashFlow

from hephaestus.app import Hephaestus
from hephaestus.runners.local import LocalRunner
from hephaestus.storage.sqlite import SQLiteStorage


async def main(db_path: str, mode: str, count: int) -> None:
    async with Hephaestus(
        storage=SQLiteStorage(db_path), runner=LocalRunner(timer_poll_interval=0.1)
    ) as app:
        if mode == "start":
            await asyncio.gather(*(CrashFlow.start(f"i{n}", {"n": n}) for n in range(count)))
            print("started", flush=True)
        while await app.list(status_in=["pending", "running", "waiting"], limit=1):
            await asyncio.sleep(0.05)
        print("all finished", flush=True)


if __name__ == "__main__":
    db, mode = sys.argv[1], sys.argv[2]
    asyncio.run(main(db, mode, int(sys.argv[3]) if len(sys.argv) > 3 else 0))
