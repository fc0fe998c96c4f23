"""Telemetry: named events emitted by every runner, and handlers that listen to them."""

from hephaestus.telemetry._emit import Handler, attach, attached, detach, emit, enabled
from hephaestus.telemetry.events import (
    ALL_EVENTS,
    ENGINE_ADVANCE,
    RUNNER_INIT,
    STEP_ASYNC,
    STEP_EXCEPTION,
    STEP_RESUME,
    STEP_START,
    STEP_STOP,
    WORKFLOW_EXCEPTION,
    WORKFLOW_START,
    WORKFLOW_STOP,
    WORKFLOW_TRANSITION,
)

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
    "Handler",
    "attach",
    "attached",
    "detach",
    "emit",
    "enabled",
]
