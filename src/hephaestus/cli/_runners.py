"""`hephaestus runners list`: the runner processes registered in a storage, and their leases.

Every `LocalRunner` registers in its storage when it opens, renews its lease
while it lives and deregisters when it closes; a runner that died stays
listed, as lapsed, until another runner reaps it and takes its instances over.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict
from datetime import UTC, datetime

import click
from rich import box
from rich.table import Table
from rich.text import Text

from hephaestus.cli._options import storage_option
from hephaestus.cli._output import make_console, timestamp
from hephaestus.cli._storage_url import storage_from_url
from hephaestus.storage.base import RunnerRecord

__all__ = ["runners"]


@click.group(short_help="List the runner processes working on a storage.")
def runners() -> None:
    """The runner processes registered in a storage."""


@runners.command("list", short_help="List registered runners with their leases.")
@storage_option("The storage the runners share.")
@click.option("--json", "as_json", is_flag=True, help="Print the runners as JSON.")
def list_runners(storage_url: str, as_json: bool) -> None:
    """List the runners registered in the storage: live ones, and lapsed ones not reaped yet."""
    storage = storage_from_url(storage_url, must_exist=True)

    async def read() -> list[RunnerRecord]:
        await storage.open()
        try:
            return await storage.runners()
        finally:
            await storage.close()

    found = asyncio.run(read())
    now = time.time()
    if as_json:
        rows = [{**asdict(r), "live": r.is_live(now)} for r in found]
        click.echo(json.dumps(rows, indent=2))
        return
    console = make_console()
    if not found:
        console.print(Text("No runner is registered: nothing executes steps on this storage."))
        return
    table = Table(box=box.SIMPLE_HEAD)
    for column in ("runner", "host", "pid", "started", "last heartbeat", "lease"):
        table.add_column(column, overflow="fold")
    for record in found:
        left = record.lease_until - now
        lease = (
            Text(f"live, {left:.1f}s left", style="green")
            if left > 0
            else Text(f"lapsed {-left:.1f}s ago", style="red")
        )
        table.add_row(
            Text(record.id, style="cyan"),
            Text(record.host),
            str(record.pid),
            timestamp(datetime.fromtimestamp(record.started_at, UTC)),
            timestamp(datetime.fromtimestamp(record.heartbeat_at, UTC), millis=True),
            lease,
        )
    console.print(table)
