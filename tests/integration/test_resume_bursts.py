"""A burst of resumes into one instance from one process queues; none fails for want of a
connection, none is lost, and they are applied in the order they were made.

The pool is kept small (5 connections, 2 s to get one) so that calls that each
held a connection while waiting for the same row would run out of it.
"""

from __future__ import annotations

import asyncio

from hephaestus import Done, Hephaestus, Unique, WaitForEvent, Workflow
from hephaestus.runners.procrastinate import ProcrastinateRunner
from hephaestus.storage.postgres import PostgresStorage

BURST = 1000


class RtBurstGate(WaitForEvent):
    key = "gate"


class RtBurstFlow(Workflow):
    unique = Unique(key="rtburst")
    start = (RtBurstGate, {"event_name": "go"})
    transitions = {(RtBurstGate, "go"): Done}


async def test_a_thousand_client_resumes_into_one_instance_are_coalesced(
    postgres_url: str,
) -> None:
    storage = PostgresStorage(postgres_url, max_size=5, timeout=2.0)
    async with Hephaestus(storage=storage, runner=None) as client:
        iid = await client.start_instance(RtBurstFlow, {}, id="rtburst::client")
        writes_before = storage.stats.writes

        results = await asyncio.gather(
            *(client.resume(iid, "go", data={"n": n}) for n in range(BURST)),
            return_exceptions=True,
        )

        failures = [r for r in results if isinstance(r, BaseException)]
        assert failures == []
        stored = await client.get(iid)
        # Every event is recorded once, in the order the calls were made.
        assert [item.data for item in stored.inbox] == [{"n": n} for n in range(BURST)]
        # Coalesced: far fewer writes than calls.
        assert storage.stats.writes - writes_before < BURST / 10


async def test_a_burst_of_resumes_through_the_distributed_runner_queues_for_the_row(
    postgres_url: str,
) -> None:
    storage = PostgresStorage(postgres_url, max_size=5, timeout=2.0)
    runner = ProcrastinateRunner(stalled_after=5.0, heartbeat=1.0)
    async with Hephaestus(storage=storage, runner=runner) as app:
        # No worker runs here: the gate never parks, so every event is held for it.
        iid = await app.start_instance(RtBurstFlow, {}, id="rtburst::distributed")

        results = await asyncio.gather(
            *(app.resume(iid, "go", data={"n": n}) for n in range(BURST // 2)),
            return_exceptions=True,
        )

        assert [r for r in results if isinstance(r, BaseException)] == []
        stored = await app.get(iid)
        assert [item.data for item in stored.inbox] == [{"n": n} for n in range(BURST // 2)]
