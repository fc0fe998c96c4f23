"""`Done`: the terminal step every path ends at."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from hephaestus.core.outcomes import Ok
from hephaestus.core.step import Step

if TYPE_CHECKING:
    from hephaestus.core.context import Context
    from hephaestus.core.instance import Instance

__all__ = ["Done"]


class Done(Step):
    """Ends the workflow. The engine completes it itself as soon as it is reached:
    no task, no thread, no extra write."""

    events = ("done",)
    terminal = True

    def execute(self, instance: Instance, config: Mapping[str, Any] | None, context: Context) -> Ok:
        return Ok("done")
