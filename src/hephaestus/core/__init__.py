"""The pure core: definitions, validation, instances and the engine. No I/O, clocks or tasks.

Everything under `hephaestus.core` is a function of its arguments, so it can
be tested without mocks and reused by every runner.
"""

from hephaestus.core.commands import Command, RunStep, StopSteps
from hephaestus.core.context import Context
from hephaestus.core.definition import (
    BaseWorkflow,
    StepNode,
    WorkflowDefinition,
    load_workflow,
    resolve_version,
    route,
    workflow_name,
)
from hephaestus.core.engine import Advance
from hephaestus.core.instance import ExecutionEntry, Instance, Status, Timer
from hephaestus.core.keys import Unique, build_id, parse_id, validate_id
from hephaestus.core.outcomes import Async, Error, Ok, Outcome, Retry
from hephaestus.core.step import Step

__all__ = [
    "Advance",
    "Async",
    "BaseWorkflow",
    "Command",
    "Context",
    "Error",
    "ExecutionEntry",
    "Instance",
    "Ok",
    "Outcome",
    "Retry",
    "RunStep",
    "Status",
    "Step",
    "StepNode",
    "StopSteps",
    "Timer",
    "Unique",
    "WorkflowDefinition",
    "build_id",
    "load_workflow",
    "parse_id",
    "resolve_version",
    "route",
    "validate_id",
    "workflow_name",
]
