"""The runner contract: what carries out the engine's decisions.

**Protocol**: a runner executes steps, persists every state change through the
storage, delivers events and fires durable timers. `LocalRunner` does it in
one asyncio process; a distributed runner does it on a job queue. Workflows
and steps do not change between them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from hephaestus.core.definition import BaseWorkflow
from hephaestus.storage.base import Storage

__all__ = ["Runner", "TimerHandle"]


@dataclass(frozen=True, slots=True)
class TimerHandle:
    """A scheduled resume; pass it to `cancel_timer` to call the resume off."""

    instance_id: str
    timer_id: str
    step: str
    due_at: datetime


@runtime_checkable
class Runner(Protocol):
    """**Protocol**: runs instances on top of a storage."""

    async def open(self, storage: Storage) -> None:
        """Start: bind the storage, re-arm durable timers, recover running instances."""

    async def close(self) -> None:
        """Stop taking work; in-flight steps are abandoned and will run again on recovery."""

    async def start_instance(
        self,
        workflow: type[BaseWorkflow],
        context: Mapping[str, Any] | None,
        *,
        id: str,
        version: int | None = None,
        telemetry_metadata: Mapping[str, Any] | None = None,
    ) -> str:
        """Create and persist a new instance, then start running it; returns its id."""

    async def resume(
        self,
        id: str,
        event: str,
        *,
        step: str | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> None:
        """Validate `event` and durably record it (with its JSON `data`) before returning."""

    async def schedule_resume(
        self, id: str, step: str, delay: float, *, event: str | None = None
    ) -> TimerHandle:
        """Resume `step` after `delay` seconds, on a durable timer."""

    async def cancel_timer(self, handle: TimerHandle) -> None:
        """Cancel a timer made by `schedule_resume`."""

    async def cancel(self, id: str) -> None:
        """Stop the instance (running or waiting) and record it as cancelled."""

    async def retry(self, id: str) -> None:
        """Run a failed instance again from the steps that failed (`engine.retry`)."""
