"""`Debug`: log the context and history, then go on."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from hephaestus.core.outcomes import Ok
from hephaestus.core.step import Step

if TYPE_CHECKING:
    from hephaestus.core.context import Context
    from hephaestus.core.instance import Instance

__all__ = ["Debug"]

logger = logging.getLogger("hephaestus.debug")


class Debug(Step):
    """Logs the instance's context and completed steps at INFO, then emits `completed`."""

    events = ("completed",)

    def execute(self, instance: Instance, config: Mapping[str, Any] | None, context: Context) -> Ok:
        history = [f"{entry.step}:{entry.event}" for entry in instance.execution_history]
        logger.info(
            "[%s] context=%s history=%s",
            instance.id,
            context.to_dict(),
            history,
            extra={"instance_id": instance.id, "context": context.to_dict(), "history": history},
        )
        return Ok("completed")
