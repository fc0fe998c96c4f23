"""A client-mode process: starts instances on the storage, runs no step, exits.

python -m many.client STORAGE_URL WORKFLOW FIRST COUNT

`WORKFLOW` is a class name in `many.flows`; instance `n` (FIRST <= n <
FIRST+COUNT) has business value `i<n>` and context `{"n": n}`. Prints
`started <count>` and the process id once every start is stored.
"""

from __future__ import annotations

import asyncio
import os
import sys

from hephaestus import Hephaestus
from hephaestus.storage import storage_from_url
from many import flows


async def main(url: str, workflow_name: str, first: int, count: int) -> None:
    workflow = getattr(flows, workflow_name)
    async with Hephaestus(storage=storage_from_url(url), runner=None) as app:
        assert app.is_client
        ids = await asyncio.gather(
            *(app.start_business(workflow, f"i{n}", {"n": n}) for n in range(first, first + count))
        )
    print(f"started {len(ids)} pid {os.getpid()}", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
