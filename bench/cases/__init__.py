"""The benchmark cases, in the order they run.

Each case module has `NAME`, `SUMMARY` (what it measures), `BASELINE` (what
its figures are compared with) and `run(bench) -> list[Row]`.
"""

from __future__ import annotations

from types import ModuleType

from bench.cases import (
    client_handoff,
    dashboard_list,
    durable_throughput,
    engine_overhead,
    history_growth,
    lease_cost,
    parked_scale,
    payload_size,
    peer,
    query_scale,
    resume_latency,
    telemetry_cost,
    timer_storm,
)

__all__ = ["CASES"]

CASES: dict[str, ModuleType] = {
    module.NAME: module
    for module in (
        engine_overhead,
        telemetry_cost,
        durable_throughput,
        peer,
        history_growth,
        payload_size,
        resume_latency,
        client_handoff,
        lease_cost,
        parked_scale,
        timer_storm,
        query_scale,
        dashboard_list,
    )
}
