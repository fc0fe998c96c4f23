"""The public `Workflow` base class: a validated definition plus a facade.

The facade class methods (`start`, `resume`, `get`, `list`, `cancel`, `wait`) build
`key::value` ids from the workflow's `Unique` and call the running
`Hephaestus` app, so application code can say `await OrderFlow.start("abc123", {...})`.

`start` is both the class attribute naming the first step and the facade
method: a class body's `start = FirstStep` is swapped for a descriptor that
remembers the step and, read from the class, is the `start(...)` coroutine.
"""

from __future__ import annotations

import builtins
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from hephaestus.core.definition import BaseWorkflow, StartAttribute

if TYPE_CHECKING:
    from hephaestus.app import Hephaestus
    from hephaestus.core.instance import Instance

__all__ = ["Workflow"]


class _StartFacade(StartAttribute):
    """`Flow.start(value, context, **opts)`; also keeps the declared start step."""

    __slots__ = ()

    def __get__(self, obj: object, owner: type[Workflow]) -> Callable[..., Awaitable[str]]:
        return owner.start_new


class Workflow(BaseWorkflow):
    """Base class of user workflows; see `BaseWorkflow` for the definition attributes."""

    start: ClassVar[Any] = _StartFacade(None)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        declared = cls.__dict__.get("start")
        if declared is not None and not isinstance(declared, StartAttribute):
            cls.start = _StartFacade(declared)

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

        `Flow.start(...)` is the same call. Type checkers see a workflow's
        `start = FirstStep` attribute rather than the method, so typed code
        may prefer this spelling.
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
