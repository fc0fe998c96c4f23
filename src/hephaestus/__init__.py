"""Hephaestus for Python: a lightweight, validated, durable workflow engine.

Define a workflow as a graph of steps with named events; the engine runs many
instances at once, persists every state change, parks instances that wait for
an event or a timer, and recovers them after a crash. No server to run.
"""

from hephaestus.app import Hephaestus
from hephaestus.core.context import Context, Trigger
from hephaestus.core.definition import route
from hephaestus.core.instance import ExecutionEntry, Instance, Status
from hephaestus.core.keys import Unique
from hephaestus.core.outcomes import Async, Error, Ok, Outcome, Retry
from hephaestus.core.step import Step
from hephaestus.errors import (
    AlreadyRunningError,
    AmbiguousEventError,
    ConcurrencyError,
    ContextSerializationError,
    CorruptInstanceError,
    CycleError,
    DuplicateStepKeyError,
    EventNotDeclaredError,
    HephaestusError,
    InstanceNotFailedError,
    InstanceNotFoundError,
    InstanceNotWaitingError,
    InvalidBusinessKeyError,
    InvalidDelayError,
    InvalidEventError,
    InvalidMetadataError,
    InvalidRouteError,
    InvalidStartError,
    InvalidStepError,
    InvalidTargetError,
    InvalidTransitionError,
    InvalidUniqueError,
    InvalidVersionsError,
    LeafNotDoneError,
    MissingTransitionError,
    NothingToRetryError,
    OwnershipError,
    RetryError,
    RetryStepMissingError,
    RuntimeNotFoundError,
    StorageError,
    TimerNotFoundError,
    UnconvergedFanOutError,
    UndeclaredEventError,
    UnreachableStepError,
    VersionConflictError,
    VersionOptionsError,
    WaitTimeoutError,
    WorkflowDefinitionError,
)
from hephaestus.runners.local import LocalRunner
from hephaestus.steps import Debug, Done, Wait, WaitForEvent
from hephaestus.storage.memory import MemoryStorage
from hephaestus.storage.sqlite import SQLiteStorage
from hephaestus.workflow import Workflow

__version__ = "0.1.0"

__all__ = [
    "AlreadyRunningError",
    "AmbiguousEventError",
    "Async",
    "ConcurrencyError",
    "Context",
    "ContextSerializationError",
    "CorruptInstanceError",
    "CycleError",
    "Debug",
    "Done",
    "DuplicateStepKeyError",
    "Error",
    "EventNotDeclaredError",
    "ExecutionEntry",
    "Hephaestus",
    "HephaestusError",
    "Instance",
    "InstanceNotFailedError",
    "InstanceNotFoundError",
    "InstanceNotWaitingError",
    "InvalidBusinessKeyError",
    "InvalidDelayError",
    "InvalidEventError",
    "InvalidMetadataError",
    "InvalidRouteError",
    "InvalidStartError",
    "InvalidStepError",
    "InvalidTargetError",
    "InvalidTransitionError",
    "InvalidUniqueError",
    "InvalidVersionsError",
    "LeafNotDoneError",
    "LocalRunner",
    "MemoryStorage",
    "MissingTransitionError",
    "NothingToRetryError",
    "Ok",
    "Outcome",
    "OwnershipError",
    "Retry",
    "RetryError",
    "RetryStepMissingError",
    "RuntimeNotFoundError",
    "SQLiteStorage",
    "Status",
    "Step",
    "StorageError",
    "TimerNotFoundError",
    "Trigger",
    "UnconvergedFanOutError",
    "UndeclaredEventError",
    "Unique",
    "UnreachableStepError",
    "VersionConflictError",
    "VersionOptionsError",
    "Wait",
    "WaitForEvent",
    "WaitTimeoutError",
    "Workflow",
    "WorkflowDefinitionError",
    "route",
]
