"""The public `Workflow` base class: a validated definition plus a facade.

The facade class methods (`start`, `resume`, `get`, `list`, `cancel`, `wait`) build
`key::value` ids from the workflow's `Unique` and call the running
`Hephaestus` app, so application code can say `await OrderFlow.start("abc123", {...})`.

`start` is both the class attribute naming the first step and the facade
method: a class body's `start = FirstStep` stays in the class `__dict__` (the
definition reads it from there), while `Flow.start` goes through a property of
the workflow metaclass, which Python (and mypy) let win over a class attribute,
so `await Flow.start("v", {...})` runs and type-checks as the facade call.
"""

from __future__ import annotations

import builtins
from collections.abc import Awaitable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, cast

from hephaestus.core.definition import BaseWorkflow

if TYPE_CHECKING:
    from hephaestus.app import Hephaestus
    from hephaestus.core.instance import Instance

__all__ = ["StartFunction", "Workflow", "WorkflowType"]


class StartFunction(Protocol):
    """The type of `Flow.start`: the same call as `Workflow.start_new`."""

    def __call__(
        self,
        value: str,
        context: Mapping[str, Any] | None = None,
        *,
        hephaestus: Hephaestus | None = None,
        version: int | None = None,
        telemetry_metadata: Mapping[str, Any] | None = None,
    ) -> Awaitable[str]: ...


class WorkflowType(type):
    """The metaclass of `Workflow`: it makes `Flow.start` the facade call.

    A class body's `start = FirstStep` is a plain class attribute, which the
    definition reads statically. A property of the metaclass is a data
    descriptor, so attribute access on the class finds it first: `Flow.start`
    is `Flow.start_new`. Type checkers follow the same rule, so
    `await Flow.start("v", {...})` type-checks as the call it is.
    """

    @property
    def start(cls) -> StartFunction:
        return cast("type[Workflow]", cls).start_new


class Workflow(BaseWorkflow, metaclass=WorkflowType):
    """Base class of user workflows; see `BaseWorkflow` for the definition attributes.

    `start = FirstStep` (or `(FirstStep, config)`) in the class body names the
    first step; `Flow.start(value, context)` starts an instance.
    """

    @classmethod
    async def start_new(
        cls,
        value: str,
        context: Mapping[str, Any] | None = None,
        *,
        hephaestus: Hephaestus | None = None,
        version: int | None = None,
        telemetry_metadata: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> str:
        """Start an instance for business value `value`; returns its id `key::value`.

        Extra keyword `options` go to an umbrella's `version_for` (see
        `Hephaestus.start_instance`).

        `Flow.start(...)` is the same call, and type-checks as this method.
        """
        from hephaestus.app import find_app

        app = find_app(hephaestus)
        return await app.start_business(
            cls,
            value,
            context,
            version=version,
            telemetry_metadata=telemetry_metadata,
            **options,
        )

    @classmethod
    async def resume(
        cls,
        value: str,
        event: str,
        *,
        step: str | None = None,
        data: Mapping[str, Any] | None = None,
        hephaestus: Hephaestus | None = None,
    ) -> None:
        """Deliver `event` (with JSON `data`) to the instance for `value`.

        Pass `step=` if several waiting steps declare the event.
        """
        from hephaestus.app import find_app

        app = find_app(hephaestus)
        await app.resume(app.business_id(cls, value), event, step=step, data=data)

    @classmethod
    async def wait(
        cls,
        value: str,
        *,
        timeout: float | None = None,
        status: Any = None,
        hephaestus: Hephaestus | None = None,
    ) -> Instance:
        """The instance for `value` once it is final (or in `status`); see `Hephaestus.wait`."""
        from hephaestus.app import find_app

        app = find_app(hephaestus)
        return await app.wait(app.business_id(cls, value), timeout=timeout, status=status)

    @classmethod
    async def get(cls, value: str, *, hephaestus: Hephaestus | None = None) -> Instance:
        """The instance for `value`."""
        from hephaestus.app import find_app

        app = find_app(hephaestus)
        return await app.get(app.business_id(cls, value))

    @classmethod
    async def list(
        cls, *, hephaestus: Hephaestus | None = None, **filters: Any
    ) -> builtins.list[Instance]:
        """Instances of this workflow (every version), filtered like `Hephaestus.list`."""
        from hephaestus.app import find_app

        app = find_app(hephaestus)
        return await app.list(workflow=cls, **filters)

    @classmethod
    async def cancel(cls, value: str, *, hephaestus: Hephaestus | None = None) -> None:
        """Cancel the instance for `value`."""
        from hephaestus.app import find_app

        app = find_app(hephaestus)
        await app.cancel(app.business_id(cls, value))

    @classmethod
    async def retry(cls, value: str, *, hephaestus: Hephaestus | None = None) -> None:
        """Run the failed instance for `value` again from its failed steps."""
        from hephaestus.app import find_app

        app = find_app(hephaestus)
        await app.retry(app.business_id(cls, value))
