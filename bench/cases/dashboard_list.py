"""dashboard-list: how long the dashboard takes to render its instance list, on a big database.

N instances (100,000; 10,000 with --quick) of three workflows, mostly
completed, some waiting, failed or running, with distinct last-change times,
are written to SQLite. The dashboard's ASGI app (`hephaestus.ui.create_app`)
then renders the list page, in-process and without a network, for the views
an operator opens: the newest page, one status, one workflow, an id prefix,
changes since a time, and a page deep in the list (by its keyset cursor).
Every view is rendered `repeats` times; the figure is the p95 over all of them
(target < 200 ms). The baseline is the p95 of the storage query behind each
page alone, so the ratio is what rendering (and the cached status counts) add.
A second row gives the median time of the status counts query itself
(`Storage.counts()`), which the dashboard reads at most once per two seconds.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from bench._harness import Bench, Row, Target, percentile

__all__ = ["BASELINE", "NAME", "SUMMARY", "run"]

NAME = "dashboard-list"
SUMMARY = "dashboard instance list page render p95 with N instances, SQLite"
BASELINE = "the storage query behind each page, alone"

#: The p95 render time we allow for one list page, in milliseconds.
TARGET_MS = 200.0

_STATUSES = ("completed",) * 14 + ("waiting",) * 3 + ("failed",) * 2 + ("running",)
_T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _instances(count: int) -> list[Any]:
    from bench.workflows import Parked
    from hephaestus.core.context import Context
    from hephaestus.core.engine import new_instance
    from hephaestus.core.instance import Status

    definition = Parked.definition()
    names = ("shop.OrderFlow", "billing.InvoiceFlow", "crm.OnboardingFlow")
    made = []
    for number in range(count):
        at = _T0 + timedelta(seconds=number * 7)
        instance = new_instance(
            definition,
            instance_id=f"bench::n{number:06d}",
            context=Context.new({"n": number, "customer": f"c{number % 977}"}),
            now=at,
            workflow=names[number % 3],
        ).instance
        status = Status(_STATUSES[number % len(_STATUSES)])
        error = (
            "step Charge failed after 3 attempts: card declined"
            if status.value == "failed"
            else None
        )
        made.append(instance.evolve(status=status, error=error, updated_at=at))
    return made


async def _get(web: Any, path: str, params: dict[str, str]) -> tuple[int, bytes]:
    """One GET through the ASGI app, as a server would make it."""
    query = urlencode(params).encode()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": [(b"host", b"bench")],
        "client": ("127.0.0.1", 1),
        "server": ("bench", 80),
    }
    status = 0
    body: list[bytes] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            body.append(message.get("body", b""))

    await web(scope, receive, send)
    return status, b"".join(body)


async def _measure(path: str, count: int, repeats: int) -> dict[str, Any]:
    from hephaestus.core.instance import Status
    from hephaestus.storage import SQLiteStorage
    from hephaestus.ui import create_app
    from hephaestus.ui._views import parse_filters

    storage = SQLiteStorage(path)
    await storage.open()
    try:
        made = _instances(count)
        started = time.perf_counter()
        for begin in range(0, count, 2000):
            await asyncio.gather(*(storage.put(i, None) for i in made[begin : begin + 2000]))
        write_seconds = time.perf_counter() - started
    finally:
        await storage.close()

    deep = made[count // 2]
    views: dict[str, dict[str, str]] = {
        "newest": {},
        "failed": {"status": Status.FAILED.value},
        "one workflow": {"workflow": "billing.InvoiceFlow"},
        "id prefix": {"q": f"bench::n{count // 3:06d}"[:-2]},
        "updated since": {"since": (deep.updated_at).strftime("%Y-%m-%dT%H:%M")},
        "deep page": {"cursor": f"{deep.updated_at.isoformat()}|{deep.id}"},
    }
    web = create_app(SQLiteStorage(path))
    renders: dict[str, list[float]] = {name: [] for name in views}
    queries: dict[str, list[float]] = {name: [] for name in views}
    async with web.router.lifespan_context(web):
        for _ in range(repeats):
            for name, params in views.items():
                began = time.perf_counter()
                status, body = await _get(web, "/", params)
                renders[name].append(time.perf_counter() - began)
                if status != 200 or b"<table" not in body:
                    raise RuntimeError(f"the list page {name} answered {status}")
        query_storage = SQLiteStorage(path)
        await query_storage.open()
        try:
            for _ in range(repeats):
                for name, params in views.items():
                    query = parse_filters(params).query()
                    began = time.perf_counter()
                    await query_storage.query(query)
                    queries[name].append(time.perf_counter() - began)
            timings = []
            for _ in range(max(repeats // 3, 3)):
                began = time.perf_counter()
                await query_storage.counts()
                timings.append(time.perf_counter() - began)
            counts_seconds = percentile(timings, 50)
        finally:
            await query_storage.close()
    return {
        "renders": renders,
        "queries": queries,
        "counts_seconds": counts_seconds,
        "write_seconds": write_seconds,
    }


def run(bench: Bench) -> list[Row]:
    count = bench.sizes.parked_instances
    repeats = {"tiny": 3, "quick": 15, "full": 30}[bench.mode]
    path = bench.scratch("dashboard.db")
    result = asyncio.run(_measure(str(path), count, repeats))
    renders = [t for times in result["renders"].values() for t in times]
    queries = [t for times in result["queries"].values() for t in times]
    per_view = {
        name: round(percentile(times, 95) * 1000, 2) for name, times in result["renders"].items()
    }
    return [
        Row(
            NAME,
            f"list page render p95, {count:,} instances",
            unit="ms",
            ours=percentile(renders, 95) * 1000,
            baseline=percentile(queries, 95) * 1000,
            baseline_label="the page's storage query alone",
            target=Target("<", TARGET_MS),
            backend="sqlite",
            details={
                "p95_ms_per_view": per_view,
                "renders": len(renders),
                "status_counts_ms": round(result["counts_seconds"] * 1000, 2),
                "write_seconds": round(result["write_seconds"], 2),
            },
        ),
        Row(
            NAME,
            f"status counts query, {count:,} instances",
            unit="ms",
            ours=result["counts_seconds"] * 1000,
            baseline=percentile(queries, 95) * 1000,
            baseline_label="the page's storage query alone",
            backend="sqlite",
            details={"note": "read at most once per 2 s by the dashboard (cached)"},
        ),
    ]
