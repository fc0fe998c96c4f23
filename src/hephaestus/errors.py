"""Every error Hephaestus raises, under one root.

Messages say what was wrong, which workflow, instance, step or event it was,
and what to do about it. Errors raised on bad input are raised *before*
anything is written, so nothing is ever half-stored.

    HephaestusError
    ├── WorkflowDefinitionError            a workflow class breaks a rule (raised at import)
    │   ├── CycleError                       the graph has a cycle
    │   ├── UnreachableStepError             a step cannot be reached from `start`
    │   ├── LeafNotDoneError                 a path ends in a step other than `Done`
    │   ├── UnconvergedFanOutError           parallel branches meet only at `Done`
    │   ├── DuplicateStepKeyError            two steps share a context key
    │   ├── EventNotDeclaredError            a transition uses an event its step does not declare
    │   ├── MissingTransitionError           a declared event has no transition
    │   ├── InvalidUniqueError               `unique` missing or malformed
    │   ├── InvalidStartError                `start` missing or not a step
    │   ├── InvalidTransitionError           a transition key or target is malformed
    │   ├── InvalidRouteError                a dynamic route is malformed
    │   ├── InvalidStepError                 a step class is malformed
    │   ├── InvalidMetadataError             `metadata` is not a dict of str keys and JSON values
    │   └── InvalidVersionsError             bad `version`, or an umbrella's `versions`/`current`
    │       ├── VersionConflictError             a class declares both `version` and `versions`
    │       └── VersionOptionsError              start options `version_for` cannot take
    ├── InstanceNotFoundError              no instance with that id
    ├── InstanceNotWaitingError            the instance has nothing waiting for an event
    ├── InvalidEventError                  no waiting step declares the event
    │   └── AmbiguousEventError              several waiting steps declare it; pass `step=`
    ├── UndeclaredEventError               a step emitted an event it does not declare
    ├── InvalidTargetError                 a dynamic route returned an undeclared target
    ├── AlreadyRunningError                a business key is already in use in its scope
    ├── InvalidBusinessKeyError            an id is not `key::value`
    ├── ContextSerializationError          context or updates are not JSON
    ├── ConcurrencyError                   a stale revision was written
    │   └── OwnershipError                   another runner owns the instance now
    ├── StorageError                       the storage failed or is not set up
    │   └── CorruptInstanceError             a stored row cannot be read as an instance
    ├── RuntimeNotFoundError               a facade call found no (or several) running apps
    ├── TimerNotFoundError                 a timer handle names no pending timer
    ├── WaitTimeoutError                   `wait` gave up before the instance was final
    ├── InvalidDelayError                  a timer delay is not a finite number of seconds
    └── RetryError                         a failed instance cannot be retried
        ├── InstanceNotFailedError             the instance is not failed
        ├── NothingToRetryError                no step was running when it failed
        └── RetryStepMissingError              its workflow no longer has a step to run again
"""

from __future__ import annotations

__all__ = [
    "AlreadyRunningError",
    "AmbiguousEventError",
    "ConcurrencyError",
    "ContextSerializationError",
    "CorruptInstanceError",
    "CycleError",
    "DuplicateStepKeyError",
    "EventNotDeclaredError",
    "HephaestusError",
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
    "MissingTransitionError",
    "NothingToRetryError",
    "OwnershipError",
    "RetryError",
    "RetryStepMissingError",
    "RuntimeNotFoundError",
    "StorageError",
    "TimerNotFoundError",
    "UnconvergedFanOutError",
    "UndeclaredEventError",
    "UnreachableStepError",
    "VersionConflictError",
    "VersionOptionsError",
    "WaitTimeoutError",
    "WorkflowDefinitionError",
]


class HephaestusError(Exception):
    """Something went wrong in Hephaestus."""

    def __init__(self, message: str | None = None) -> None:
        # Default the message to the class docstring, so every error says something useful.
        super().__init__(message or (self.__doc__ or type(self).__name__).strip())


class WorkflowDefinitionError(HephaestusError):
    """The workflow class breaks a definition rule; fix the class before importing it."""


class CycleError(WorkflowDefinitionError):
    """The workflow graph has a cycle; workflows must be acyclic."""


class UnreachableStepError(WorkflowDefinitionError):
    """A step cannot be reached from the workflow's `start`."""


class LeafNotDoneError(WorkflowDefinitionError):
    """A path of the workflow ends in a step other than `Done`."""


class UnconvergedFanOutError(WorkflowDefinitionError):
    """Parallel branches of a fan-out must meet at a join step before `Done`."""


class DuplicateStepKeyError(WorkflowDefinitionError):
    """Two steps of one workflow share a context key."""


class EventNotDeclaredError(WorkflowDefinitionError):
    """A transition uses an event that its step does not declare in `events`."""


class MissingTransitionError(WorkflowDefinitionError):
    """A step declares an event that has no transition."""


class InvalidUniqueError(WorkflowDefinitionError):
    """The workflow's `unique` is missing or malformed."""


class InvalidStartError(WorkflowDefinitionError):
    """The workflow's `start` is missing or is not a step."""


class InvalidTransitionError(WorkflowDefinitionError):
    """A transition key or target is malformed."""


class InvalidRouteError(WorkflowDefinitionError):
    """A dynamic route is malformed."""


class InvalidStepError(WorkflowDefinitionError):
    """A step class is malformed."""


class InvalidVersionsError(WorkflowDefinitionError):
    """A workflow's `version`, or an umbrella workflow's `versions` or `current`, is wrong."""


class VersionConflictError(InvalidVersionsError):
    """A workflow class declares both `version` (concrete) and `versions` (an umbrella)."""


class VersionOptionsError(InvalidVersionsError):
    """Start options were given that no `version_for` takes (not an umbrella, or not overridden)."""


class InvalidMetadataError(WorkflowDefinitionError):
    """A workflow's `metadata` is not a dict with str keys and JSON values."""


class InstanceNotFoundError(HephaestusError):
    """No workflow instance has that id."""


class InstanceNotWaitingError(HephaestusError):
    """The instance has no step waiting for an event."""


class InvalidEventError(HephaestusError):
    """No waiting step of the instance declares that event."""


class AmbiguousEventError(InvalidEventError):
    """Several waiting steps declare that event; pass `step=` to choose one."""


class UndeclaredEventError(HephaestusError):
    """A step emitted an event it does not declare in `events`."""


class InvalidTargetError(HephaestusError):
    """A dynamic route returned a step that is not among its declared targets."""


class AlreadyRunningError(HephaestusError):
    """An instance with that business key is already active in the key's scope."""


class InvalidBusinessKeyError(HephaestusError):
    """An id is not `key::value[::suffix]`: key `[a-z0-9]+`, value as `hephaestus.core.keys` says.

    Values are 1 to 200 ASCII letters, digits and `- _ . @ + :` (`EXP-42`,
    `jane.doe@example.com`), with no `::` and no `:` at either end.
    """


class ContextSerializationError(HephaestusError):
    """Context and step updates must be JSON-serialisable (dicts with str keys, lists, str,
    int, finite float, bool, None)."""


class ConcurrencyError(HephaestusError):
    """The instance was changed by someone else since it was read; read it again and retry."""


class OwnershipError(ConcurrencyError):
    """Another runner owns the instance now (this runner's lease lapsed); stop running it."""


class StorageError(HephaestusError):
    """The storage failed or is not set up."""


class CorruptInstanceError(StorageError):
    """A stored row cannot be read back as an instance; it is quarantined, the rest run on."""


class RuntimeNotFoundError(HephaestusError):
    """No running Hephaestus app was found; open one with `async with Hephaestus(...)`."""


class TimerNotFoundError(HephaestusError):
    """The timer handle names no pending timer (it fired, was cancelled, or never existed)."""


class WaitTimeoutError(HephaestusError, TimeoutError):
    """`wait` gave up: the instance did not reach the awaited status in time."""


class InvalidDelayError(HephaestusError, ValueError):
    """A timer delay must be a finite number of seconds, at least 0 and at most about 100 years."""


class RetryError(HephaestusError):
    """A failed instance cannot be retried: see the subclass and its message for why."""


class InstanceNotFailedError(RetryError):
    """Only a failed instance can be retried; a running or waiting one retries its own steps,
    and a completed or cancelled one is started again with a new run."""


class NothingToRetryError(RetryError):
    """The instance failed with no step running (an engine check failed); start a new run."""


class RetryStepMissingError(RetryError):
    """The instance's workflow version no longer has the step that failed; start a new run."""
