"""Hephaestus for Python: a lightweight, validated, durable workflow engine.

Define a workflow as a graph of steps with named events; the engine runs many
instances at once, persists every state change, parks instances that wait for
an event or a timer, and recovers them after a crash. No server to run.
"""

from hephaestus.core.context import Context
from hephaestus.core.definition import route
from hephaestus.core.instance import ExecutionEntry, Instance, Status
from hephaestus.core.keys import Unique
from hephaestus.core.outcomes import Async, Error, Ok, Retry
from hephaestus.core.step import Step
from hephaestus.errors import *  # noqa: F403  (the hierarchy is public, listed in errors.__all__)
from hephaestus.errors import __all__ as _error_names
from hephaestus.steps import Debug, Done, Wait, WaitForEvent
from hephaestus.workflow import Workflow

__version__ = "0.1.0"

__all__ = sorted(
    [
        "Async",
        "Context",
        "Debug",
        "Done",
        "Error",
        "ExecutionEntry",
        "Instance",
        "Ok",
        "Retry",
        "Status",
        "Step",
        "Unique",
        "Wait",
        "WaitForEvent",
        "Workflow",
        "route",
        *_error_names,
    ]
)
