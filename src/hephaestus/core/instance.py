"""A workflow instance: an immutable value that the engine turns into the next one.

Everything about a running workflow lives here, so storing it is storing the
workflow: status, context, which steps are active, waiting or completed, the
durable timers, the history. It round-trips through JSON exactly; nothing is
pickled.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from hephaestus.core.context import Context

__all__ = ["ExecutionEntry", "InboxItem", "Instance", "Status", "Timer"]


class Status(StrEnum):
    """Where an instance is in its life. The last three are final."""

    PENDING = "pending"
    RUNNING = "running"
    WAITING = "waiting"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_active(self) -> bool:
        return self in _ACTIVE

    @property
    def is_final(self) -> bool:
        return self not in _ACTIVE


_ACTIVE = frozenset({Status.PENDING, Status.RUNNING, Status.WAITING})


@dataclass(frozen=True, slots=True)
class ExecutionEntry:
    """One completed step: what it emitted, when, with which updates, after how many attempts,
    and which steps its transition led to (`targets`, including a route's choice)."""

    step: str
    event: str
    timestamp: datetime
    context_updates: Mapping[str, Any] | None = None
    attempt: int = 1
    duration: float = 0.0
    targets: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "event": self.event,
            "timestamp": self.timestamp.isoformat(),
            "context_updates": self.context_updates,
            "attempt": self.attempt,
            "duration": self.duration,
            "targets": list(self.targets),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExecutionEntry:
        return cls(
            step=data["step"],
            event=data["event"],
            timestamp=datetime.fromisoformat(data["timestamp"]),
            context_updates=data.get("context_updates"),
            attempt=data.get("attempt", 1),
            duration=data.get("duration", 0.0),
            targets=tuple(data.get("targets", ())),
        )


TimerKind = Literal["resume", "retry"]


@dataclass(frozen=True, slots=True)
class Timer:
    """A durable wake-up: at `due_at`, resume `step` with `event`, or retry it.

    Timers live inside the instance, so the write that parks a step also
    stores its timer: a crash can delay a timer, never lose or duplicate it.
    """

    id: str
    step: str
    due_at: datetime
    kind: TimerKind = "resume"
    event: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "step": self.step,
            "due_at": self.due_at.isoformat(),
            "kind": self.kind,
            "event": self.event,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Timer:
        return cls(
            id=data["id"],
            step=data["step"],
            due_at=datetime.fromisoformat(data["due_at"]),
            kind=data.get("kind", "resume"),
            event=data.get("event"),
        )


InboxKind = Literal["event", "cancel"]


@dataclass(frozen=True, slots=True)
class InboxItem:
    """A command written for the instance's owner: an event (with its data) or a cancel.

    Clients never execute steps: they validate, append an item to the
    instance's inbox and store it. The runner that owns the instance applies
    the items in arrival order; an event whose step has not parked yet stays
    in the inbox until that step parks, then completes it (consumed once).
    `held` marks an item the owner has seen and could not apply yet, so that
    only new items call for the owner's attention.
    """

    kind: InboxKind
    at: datetime
    event: str | None = None
    step: str | None = None
    data: Mapping[str, Any] | None = None
    held: bool = False

    def seen(self) -> InboxItem:
        """This item, marked as seen by the owner and held until its step parks."""
        return InboxItem(self.kind, self.at, self.event, self.step, self.data, held=True)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "at": self.at.isoformat(),
            "event": self.event,
            "step": self.step,
            "data": self.data,
            "held": self.held,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InboxItem:
        return cls(
            kind=data["kind"],
            at=datetime.fromisoformat(data["at"]),
            event=data.get("event"),
            step=data.get("step"),
            data=data.get("data"),
            held=data.get("held", False),
        )


_NO_STEPS: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Instance:
    """One run of a workflow. Engine functions take an `Instance` and return a new one.

    `revision` grows by one on every change; storage uses it for optimistic
    concurrency. `attempts` holds the current attempt number of each active
    step; `timers` the pending durable timers; `inbox` the events and cancel
    requests written by clients that the owning runner has not applied yet.
    """

    id: str
    workflow: str
    workflow_version: int
    status: Status
    context: Context
    created_at: datetime
    updated_at: datetime
    step_configs: Mapping[str, Any] = field(default_factory=dict)
    active_steps: frozenset[str] = _NO_STEPS
    completed_steps: frozenset[str] = _NO_STEPS
    waiting_steps: frozenset[str] = _NO_STEPS
    runtime_metadata: Mapping[str, Any] = field(default_factory=dict)
    telemetry_metadata: Mapping[str, Any] = field(default_factory=dict)
    execution_history: tuple[ExecutionEntry, ...] = ()
    attempts: Mapping[str, int] = field(default_factory=dict)
    timers: tuple[Timer, ...] = ()
    inbox: tuple[InboxItem, ...] = ()
    error: str | None = None
    revision: int = 0

    def evolve(self, **changes: Any) -> Instance:
        """A copy with `changes` applied (the engine's only way to 'modify' an instance).

        Much cheaper than `dataclasses.replace`, which re-runs `__init__`; the
        engine calls this once per step, so it is on the hot path.
        """
        new: Instance = _evolve(self, **changes)
        return new

    @property
    def has_new_commands(self) -> bool:
        """Whether clients wrote inbox items its owner has not looked at yet."""
        return self.status.is_active and any(not item.held for item in self.inbox)

    @property
    def needs_runner(self) -> bool:
        """Whether a runner must take the instance: steps to run, or new inbox items."""
        return self.status is Status.RUNNING or self.has_new_commands

    @property
    def next_timer_at(self) -> datetime | None:
        """When the earliest pending timer is due, or `None`."""
        if not self.timers:
            return None
        return min(timer.due_at for timer in self.timers)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "workflow": self.workflow,
            "workflow_version": self.workflow_version,
            "status": self.status.value,
            "context": self.context.to_dict(),
            "step_configs": self.step_configs,
            "active_steps": sorted(self.active_steps),
            "completed_steps": sorted(self.completed_steps),
            "waiting_steps": sorted(self.waiting_steps),
            "runtime_metadata": self.runtime_metadata,
            "telemetry_metadata": self.telemetry_metadata,
            "execution_history": [entry.to_dict() for entry in self.execution_history],
            "attempts": self.attempts,
            "timers": [timer.to_dict() for timer in self.timers],
            "inbox": [item.to_dict() for item in self.inbox],
            "error": self.error,
            "revision": self.revision,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Instance:
        return cls(
            id=data["id"],
            workflow=data["workflow"],
            workflow_version=data["workflow_version"],
            status=Status(data["status"]),
            context=Context.from_dict(data["context"]),
            step_configs=data.get("step_configs", {}),
            active_steps=frozenset(data.get("active_steps", ())),
            completed_steps=frozenset(data.get("completed_steps", ())),
            waiting_steps=frozenset(data.get("waiting_steps", ())),
            runtime_metadata=data.get("runtime_metadata", {}),
            telemetry_metadata=data.get("telemetry_metadata", {}),
            execution_history=tuple(
                ExecutionEntry.from_dict(entry) for entry in data.get("execution_history", ())
            ),
            attempts=data.get("attempts", {}),
            timers=tuple(Timer.from_dict(timer) for timer in data.get("timers", ())),
            inbox=tuple(InboxItem.from_dict(item) for item in data.get("inbox", ())),
            error=data.get("error"),
            revision=data.get("revision", 0),
            created_at=datetime.fromisoformat(data["created_at"]),
            updated_at=datetime.fromisoformat(data["updated_at"]),
        )

    def to_json(self) -> str:
        """The instance as compact JSON text."""
        return json.dumps(self.to_dict(), separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> Instance:
        """The instance that `to_json` wrote; equal to the original."""
        return cls.from_dict(json.loads(text))


def _compile_evolve() -> Any:
    """Build `_evolve(instance, *, field=..., ...)` with one line per field (as attrs does)."""
    names = [f.name for f in fields(Instance)]
    params = ", ".join(f"{name}=_KEEP" for name in names)
    # Each slot is written through its member descriptor: the fastest way past `frozen`.
    body = "".join(
        f"    _set_{name}(new, self.{name} if {name} is _KEEP else {name})\n" for name in names
    )
    source = f"def _evolve(self, *, {params}):\n    new = _new(Instance)\n{body}    return new\n"
    scope: dict[str, Any] = {"_KEEP": _KEEP, "_new": object.__new__, "Instance": Instance}
    scope.update({f"_set_{name}": vars(Instance)[name].__set__ for name in names})
    exec(source, scope)  # the source is built from the dataclass's own field names only
    return scope["_evolve"]


_KEEP: Any = object()
_evolve = _compile_evolve()
