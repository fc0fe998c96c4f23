"""The `Step` base class: one unit of work that emits a named event.

A step class declares every event it can emit; the workflow maps each
`(step, event)` to what runs next. Steps are checked when their class is
created, so a malformed step fails at import.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from hephaestus.core.outcomes import Retry
from hephaestus.errors import InvalidStepError

if TYPE_CHECKING:
    from hephaestus.core.context import Context
    from hephaestus.core.instance import Instance

__all__ = ["Step", "snake_case"]

# `\Z`, not `$`: `$` also matches before a trailing newline.
NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]*\Z")
_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def snake_case(name: str) -> str:
    """`ValidateOrder` -> `validate_order`, `HTTPCall` -> `http_call`."""
    return _CAMEL_BOUNDARY.sub("_", name).lower()


class Step:
    """Base class of every step.

    Class attributes:

    - `events`: every event the step can emit (required, non-empty).
    - `key`: where the step's updates live in `context.steps`; defaults to the
      snake_case class name.
    - `retry`: a `Retry` policy; the default tries once.
    - `timeout`: seconds one attempt may take, or `None` for no limit.
    - `blocking`: whether a sync `execute` may block (I/O, long computation), so
      runs on a worker thread (the default). Set it to `False` on a sync step
      that only computes its outcome from its arguments and returns at once:
      it is then called on the event loop, without a thread hop (`Wait` and
      `WaitForEvent` do). A subclass that overrides `execute` is blocking again
      unless it says otherwise.

    Override `execute(instance, config, context)`, sync or `async def`.
    """

    events: ClassVar[tuple[str, ...]] = ()
    key: ClassVar[str] = ""
    retry: ClassVar[Retry] = Retry()
    timeout: ClassVar[float | None] = None
    #: Set on `Done`: a terminal step ends its path and is completed by the engine itself.
    terminal: ClassVar[bool] = False
    blocking: ClassVar[bool] = True
    #: Whether `execute` is a coroutine function; computed when the class is created.
    is_async: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "key" not in cls.__dict__:
            cls.key = snake_case(cls.__name__)
        if isinstance(cls.events, list):
            cls.events = tuple(cls.events)
        _check_step(cls)
        cls.is_async = inspect.iscoroutinefunction(cls.execute)
        if "execute" in cls.__dict__ and "blocking" not in cls.__dict__:
            cls.blocking = True  # a new `execute` may block, whatever its parent's did

    def execute(
        self, instance: Instance, config: Mapping[str, Any] | None, context: Context
    ) -> Any:
        """Do the step's work and return an outcome (`Ok`, a bare event str, `Async`, `Error`)."""
        raise NotImplementedError(f"step {type(self).__name__} must implement execute()")

    @classmethod
    def events_for(cls, config: Mapping[str, Any] | None) -> tuple[str, ...]:
        """The events this step declares when used with `config`; most steps ignore config."""
        return cls.events

    @classmethod
    def validate_config(cls, config: Mapping[str, Any] | None) -> None:
        """Raise `ValueError` with a helpful message if `config` is not usable by this step."""


def _check_step(cls: type[Step]) -> None:
    name = cls.__qualname__
    if not isinstance(cls.events, tuple) or not all(isinstance(e, str) for e in cls.events):
        raise InvalidStepError(
            f"step {name}: `events` must be a tuple of event names, got {cls.events!r}"
        )
    for event in cls.events:
        if not NAME_PATTERN.match(event):
            raise InvalidStepError(
                f"step {name}: event {event!r} is not a valid name (letters, digits, _ . : -)"
            )
    if len(set(cls.events)) != len(cls.events):
        raise InvalidStepError(f"step {name}: `events` lists an event twice: {cls.events!r}")
    if not isinstance(cls.key, str) or not NAME_PATTERN.match(cls.key):
        raise InvalidStepError(f"step {name}: `key` must be a non-empty name, got {cls.key!r}")
    if not isinstance(cls.blocking, bool):
        raise InvalidStepError(
            f"step {name}: `blocking` must be True or False, got {cls.blocking!r}"
        )
    if not isinstance(cls.retry, Retry):
        raise InvalidStepError(f"step {name}: `retry` must be a Retry(...), got {cls.retry!r}")
    timeout = cls.timeout
    if timeout is not None and (
        # `not timeout > 0` also rejects NaN, which compares false with everything.
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0
    ):
        raise InvalidStepError(
            f"step {name}: `timeout` must be a positive number of seconds or None, got {timeout!r}"
        )
