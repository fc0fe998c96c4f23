"""Telemetry event names: public API, the same for every runner.

They mirror the original library's events as dotted names. What each event
measures and carries is listed in `docs/telemetry.md`; every instance event
carries `instance_id`, `workflow`, `workflow_version` and the caller's
`telemetry_metadata`.
"""

from __future__ import annotations

__all__ = [
    "ALL_EVENTS",
    "ENGINE_ADVANCE",
    "RUNNER_INIT",
    "STEP_ASYNC",
    "STEP_EXCEPTION",
    "STEP_RESUME",
    "STEP_START",
    "STEP_STOP",
    "WORKFLOW_EXCEPTION",
    "WORKFLOW_START",
    "WORKFLOW_STOP",
    "WORKFLOW_TRANSITION",
]

WORKFLOW_START = "hephaestus.workflow.start"
WORKFLOW_STOP = "hephaestus.workflow.stop"
WORKFLOW_EXCEPTION = "hephaestus.workflow.exception"
WORKFLOW_TRANSITION = "hephaestus.workflow.transition"
STEP_START = "hephaestus.step.start"
STEP_STOP = "hephaestus.step.stop"
STEP_EXCEPTION = "hephaestus.step.exception"
STEP_ASYNC = "hephaestus.step.async"
STEP_RESUME = "hephaestus.step.resume"
ENGINE_ADVANCE = "hephaestus.engine.advance"
RUNNER_INIT = "hephaestus.runner.init"

ALL_EVENTS: tuple[str, ...] = (
    WORKFLOW_START,
    WORKFLOW_STOP,
    WORKFLOW_EXCEPTION,
    WORKFLOW_TRANSITION,
    STEP_START,
    STEP_STOP,
    STEP_EXCEPTION,
    STEP_ASYNC,
    STEP_RESUME,
    ENGINE_ADVANCE,
    RUNNER_INIT,
)
