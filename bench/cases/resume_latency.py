"""resume-latency: how soon the next step runs after `resume()`.

N instances park in a `WaitForEvent` on SQLite (WAL, `synchronous=FULL`).
Then, one at a time, each is resumed; the step after the wait records
`time.perf_counter()` the moment it starts. Two delays are reported:

- *resume returned -> next step started*: what the caller of `resume()`
  waits for after it has its answer. The runner starts the next step as soon
  as the event is stored, before it answers the caller, so this is often
  zero: the step was already running when `resume()` returned (the share of
  such resumes is in the JSON details).
- *resume called -> next step started*: the whole path, including reading
  the instance back and durably writing the event.

The baseline is the fastest handoff asyncio has: one coroutine sets an
`asyncio.Event`, another wakes from it; its p50 and p99 over as many samples.
"""

from __future__ import annotations

import asyncio
import time

from bench import workflows
from bench._harness import Bench, Row, Target, percentile
from bench.workflows import ResumeThenMark
from hephaestus import Hephaestus, LocalRunner, SQLiteStorage, Status

__all__ = ["BASELINE", "NAME", "SUMMARY", "run"]

NAME = "resume-latency"
SUMMARY = "ms from resume() to the next step starting, SQLite"
BASELINE = "asyncio.Event handoff between two coroutines"

#: The p99 delay we aim for, in milliseconds.
TARGET_P99_MS = 5.0


async def event_handoffs(samples: int) -> list[float]:
    """Seconds from `Event.set()` in one coroutine to the waiting coroutine running."""
    delays: list[float] = []
    for _ in range(samples):
        event = asyncio.Event()
        woke: list[float] = []

        async def waiter(event: asyncio.Event = event, woke: list[float] = woke) -> None:
            await event.wait()
            woke.append(time.perf_counter())

        task = asyncio.create_task(waiter())
        await asyncio.sleep(0)  # the waiter is now blocked on the event
        set_at = time.perf_counter()
        event.set()
        await task
        delays.append(woke[0] - set_at)
    return delays


async def resume_delays(bench: Bench, instances: int) -> tuple[list[float], list[float], int]:
    """(returned -> started, called -> started) in seconds per instance, and how many
    steps had started before `resume()` returned."""
    loop = asyncio.get_running_loop()
    storage = SQLiteStorage(bench.scratch("resume-latency.db"), synchronous="FULL")
    started: dict[str, float] = {}
    wakers: dict[str, asyncio.Future[None]] = {}

    def hook(instance_id: str, at: float) -> None:
        started[instance_id] = at
        waker = wakers.get(instance_id)
        if waker is not None and not waker.done():
            waker.set_result(None)

    after_return: list[float] = []
    after_call: list[float] = []
    already = 0
    workflows.mark_hook = hook
    try:
        runner = LocalRunner()
        async with Hephaestus(storage=storage, runner=runner) as app:
            ids = [f"latency::n{i}" for i in range(instances)]
            await asyncio.gather(*(app.start_instance(ResumeThenMark, None, id=i) for i in ids))
            await runner.wait_idle(timeout=300)
            for instance_id in ids:
                waker = wakers[instance_id] = loop.create_future()
                called = time.perf_counter()
                await app.resume(instance_id, "go")
                returned = time.perf_counter()
                await asyncio.wait_for(waker, timeout=30)
                # Zero when the step was already running by the time resume() returned.
                after_return.append(max(0.0, started[instance_id] - returned))
                already += started[instance_id] <= returned
                after_call.append(started[instance_id] - called)
            await runner.wait_idle(timeout=300)
            done = await app.list(status=Status.COMPLETED)
            if len(done) != instances:
                raise RuntimeError(f"{len(done)} of {instances} resumed instances completed")
    finally:
        workflows.mark_hook = None
    return after_return, after_call, already


async def _measure(
    bench: Bench, instances: int
) -> tuple[list[float], list[float], int, list[float]]:
    baseline = await event_handoffs(instances)
    after_return, after_call, already = await resume_delays(bench, instances)
    return after_return, after_call, already, baseline


def run(bench: Bench) -> list[Row]:
    n = bench.sizes.resume_instances
    after_return, after_call, already, baseline = asyncio.run(_measure(bench, n))
    rows: list[Row] = []
    for what, delays in (
        ("resume returned -> next step started", after_return),
        ("resume called -> next step started", after_call),
    ):
        for p in (50, 99):
            rows.append(
                Row(
                    NAME,
                    f"p{p} {what} ({n} instances)",
                    unit="ms",
                    ours=percentile(delays, p) * 1e3,
                    baseline=percentile(baseline, p) * 1e3,
                    baseline_label=f"asyncio.Event handoff p{p}",
                    target=Target("<", TARGET_P99_MS) if p == 99 else None,
                    backend="sqlite",
                    details={
                        "min_ms": min(delays) * 1e3,
                        "max_ms": max(delays) * 1e3,
                        "started_before_resume_returned": already / n,
                    },
                )
            )
    return rows
