"""The append-only row layout shared by the SQL adapters: a small head, a log written once.

An instance is stored as

- a **head**: one row with the mutable part (status, active and waiting steps,
  timers, attempts, inbox, metadata, revision...) as a small JSON document,
  rewritten on every change;
- a **log**: one row per history entry (`seq` 0, 1, 2...), holding the
  entry with the step's output, and one row (`seq` -1) with the run's input
  (`context.initial`). A log row is written once and never rewritten.

Nothing is stored twice. `context.steps` and `completed_steps` are not stored:
loading derives them from the history, as the engine builds them (each
completed step's output is `steps[step]`, `{}` when it returned none, and the
step is completed). Where an instance differs from that derivation (a value
set by other means than a history entry), the head keeps the difference
(`steps_set`, `steps_unset`, `completed_steps`), so any instance value
round-trips exactly.

A write carries only what changed since the state it replaces: the new log
rows and the head. `delta()` computes it from the previous state (kept in
memory by the storage that read or wrote it, `KnownStates`) in time
proportional to the change: the engine notes which step outputs it set since
the stored state (`Context.changes`), and only without that note are the
outputs compared. Without a previous state, `full()` writes the rows the
stored history lacks, or every row (idempotent: same rows, same keys). A
history only grows within a run; a new run starts its own log.

Loading reads the head and the log rows with `seq < history_length`: a log
row beyond it (written by a transaction that never committed its head, which
cannot happen in one transaction, but costs nothing to rule out) is ignored
and overwritten by the next write.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import compress, repeat
from operator import is_not
from typing import Any

from hephaestus.core.context import Context
from hephaestus.core.instance import ExecutionEntry, InboxItem, Instance, Status, Timer

__all__ = [
    "INITIAL_SEQ",
    "Known",
    "KnownStates",
    "Overrides",
    "RowWrite",
    "assemble",
    "delta",
    "full",
    "stored",
]

#: The log row of the run's input (`context.initial`); history entries are 0, 1, 2...
INITIAL_SEQ = -1

_dumps = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


@dataclass(frozen=True, slots=True)
class Overrides:
    """Where an instance differs from what its history derives (normally nothing)."""

    steps_set: Mapping[str, Any] = field(default_factory=dict)
    steps_unset: frozenset[str] = frozenset()
    completed: frozenset[str] | None = None

    @property
    def empty(self) -> bool:
        return not self.steps_set and not self.steps_unset and self.completed is None


_NONE = Overrides()


@dataclass(frozen=True, slots=True)
class Known:
    """An instance as stored: its value, its run number and what its head overrides."""

    instance: Instance
    run: int
    overrides: Overrides


@dataclass(frozen=True, slots=True)
class RowWrite:
    """The rows one `put` writes.

    `head` is the head document; `entries` the log rows to write, `(seq, json)`;
    `base_length` the history length of the stored state this write extends
    (`None` for a full write, which also drops log rows at or past
    `history_length`); `overrides` what the head now overrides.
    """

    head: str
    history_length: int
    entries: list[tuple[int, str]]
    base_length: int | None
    overrides: Overrides


def full(instance: Instance, start: int | None = None) -> RowWrite:
    """The rows of `instance`: all of them for a create; for an update whose previous state
    is not known but whose stored history has `start` entries, the input and the entries
    from `start` on (a history only grows within a run: the first `start` are stored)."""
    history = instance.execution_history
    derived = _derive_steps(history)
    steps = instance.context.steps
    steps_set = {
        key: value
        for key, value in steps.items()
        if key not in derived or not _same(derived[key], value)
    }
    steps_unset = frozenset(key for key in derived if key not in steps)
    completed = instance.completed_steps
    overrides = Overrides(
        steps_set,
        steps_unset,
        None if completed == {entry.step for entry in history} else completed,
    )
    entries = [(INITIAL_SEQ, _dumps(instance.context.initial))]
    first = start or 0
    entries.extend((seq, _dumps(history[seq].to_dict())) for seq in range(first, len(history)))
    return RowWrite(_head(instance, overrides), len(history), entries, start, overrides)


def delta(previous: Known, instance: Instance) -> RowWrite:
    """The rows that turn the stored `previous` state into `instance` (same run)."""
    before = previous.instance
    old_history = before.execution_history
    history = instance.execution_history
    base = len(old_history)
    extends = len(history) >= base and (not base or history[base - 1] is old_history[-1])
    if not extends and history[:base] != old_history:
        return full(instance)  # not an extension of the stored history
    new = history[base:]
    overrides = _next_overrides(previous.overrides, before, instance, new)
    entries = [(base + offset, _dumps(entry.to_dict())) for offset, entry in enumerate(new)]
    initial = instance.context.initial
    if initial is not before.context.initial and initial != before.context.initial:
        entries.insert(0, (INITIAL_SEQ, _dumps(initial)))
    return RowWrite(_head(instance, overrides), len(history), entries, base, overrides)


def assemble(head: str | bytes, log: Iterable[tuple[int, str | bytes]], run: int) -> Known:
    """The instance of a head document of run `run` and its log rows `(seq, json)` (any order).

    Raises whatever decoding raises (`ValueError`, `KeyError`, `TypeError`) for
    rows that are not what `full` and `delta` write; the adapters quarantine them.
    """
    data = json.loads(head)
    rows = {seq: entry if isinstance(entry, str) else entry.decode() for seq, entry in log}
    length = data["history_length"]
    if INITIAL_SEQ not in rows:
        raise ValueError("its log has no row for the run's input")
    missing = [seq for seq in range(length) if seq not in rows]
    if missing:
        raise ValueError(f"its log lacks history entries {missing[:5]}")
    # One parse for every entry: a JSON array of the rows as they are stored.
    entries = json.loads(f"[{','.join([rows[seq] for seq in range(length)])}]")
    if len(entries) != length:
        raise ValueError("its log rows are not one JSON value each")
    history = tuple(map(ExecutionEntry.from_dict, entries))
    overrides = Overrides(
        data.get("steps_set", {}),
        frozenset(data.get("steps_unset", ())),
        None if "completed_steps" not in data else frozenset(data["completed_steps"]),
    )
    steps = _derive_steps(history)
    steps.update(overrides.steps_set)
    for key in overrides.steps_unset:
        steps.pop(key, None)
    instance = Instance(
        id=data["id"],
        workflow=data["workflow"],
        workflow_version=data["workflow_version"],
        status=Status(data["status"]),
        context=Context(initial=json.loads(rows[INITIAL_SEQ]), steps=steps),
        step_configs=data.get("step_configs", {}),
        active_steps=frozenset(data.get("active_steps", ())),
        completed_steps=(
            frozenset(entry.step for entry in history)
            if overrides.completed is None
            else overrides.completed
        ),
        waiting_steps=frozenset(data.get("waiting_steps", ())),
        runtime_metadata=data.get("runtime_metadata", {}),
        telemetry_metadata=data.get("telemetry_metadata", {}),
        execution_history=history,
        attempts=data.get("attempts", {}),
        timers=tuple(Timer.from_dict(timer) for timer in data.get("timers", ())),
        inbox=tuple(InboxItem.from_dict(item) for item in data.get("inbox", ())),
        error=data.get("error"),
        revision=data.get("revision", 0),
        created_at=datetime.fromisoformat(data["created_at"]),
        updated_at=datetime.fromisoformat(data["updated_at"]),
    )
    return Known(instance, run, overrides)


def _head(instance: Instance, overrides: Overrides) -> str:
    head: dict[str, Any] = {
        "id": instance.id,
        "workflow": instance.workflow,
        "workflow_version": instance.workflow_version,
        "status": instance.status.value,
        "step_configs": instance.step_configs,
        "active_steps": sorted(instance.active_steps),
        "waiting_steps": sorted(instance.waiting_steps),
        "runtime_metadata": instance.runtime_metadata,
        "telemetry_metadata": instance.telemetry_metadata,
        "attempts": instance.attempts,
        "timers": [timer.to_dict() for timer in instance.timers],
        "inbox": [item.to_dict() for item in instance.inbox],
        "error": instance.error,
        "revision": instance.revision,
        "created_at": instance.created_at.isoformat(),
        "updated_at": instance.updated_at.isoformat(),
        "history_length": len(instance.execution_history),
    }
    if overrides.steps_set:
        head["steps_set"] = overrides.steps_set
    if overrides.steps_unset:
        head["steps_unset"] = sorted(overrides.steps_unset)
    if overrides.completed is not None:
        head["completed_steps"] = sorted(overrides.completed)
    return _dumps(head)


def _next_overrides(
    previous: Overrides, before: Instance, instance: Instance, new: Sequence[ExecutionEntry]
) -> Overrides:
    """What the head overrides after `new` entries turn `before` into `instance`."""
    steps_set = previous.steps_set
    steps_unset = previous.steps_unset
    old_steps = before.context.steps
    steps = instance.context.steps
    if steps is not old_steps or new:
        changed = {entry.step for entry in new}
        since = instance.context.changes
        if since is not None and since[0] is old_steps:
            changed.update(since[1])  # what the engine set since the stored state
        elif steps is not old_steps:
            changed.update(_scan(old_steps, steps))
        last = {entry.step: entry for entry in new}
        old_get = old_steps.get
        if changed:
            steps_set = dict(steps_set)
            unset = set(steps_unset)
            for key in changed:
                value = steps.get(key, _ABSENT)
                entry = last.get(key)
                if entry is None:
                    # Its derivation did not move: only a change of the value itself counts.
                    old = old_get(key, _ABSENT)
                    if value is old or (
                        value is not _ABSENT and old is not _ABSENT and value == old
                    ):
                        continue
                elif value is not _ABSENT and _same(_output(entry), value):
                    steps_set.pop(key, None)
                    unset.discard(key)
                    continue
                if value is _ABSENT:
                    steps_set.pop(key, None)
                    unset.add(key)
                else:
                    steps_set[key] = value
                    unset.discard(key)
            steps_unset = frozenset(unset)
    completed = instance.completed_steps
    if previous.completed is None:
        # Derived from the history: the stored steps and those of the new entries. Checked
        # without building that set (a long history has many): same size, and both parts in.
        stored = before.completed_steps
        added = {entry.step for entry in new if entry.step not in stored}
        derived = (
            len(completed) == len(stored) + len(added)
            and added.issubset(completed)
            and (completed is stored or stored.issubset(completed))
        )
        completed_override = None if derived else completed
    else:
        completed_override = completed  # already overridden: keep the stored value exact
    return Overrides(steps_set, steps_unset, completed_override)


def _scan(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Keys whose value is not the same object in `old` and `new`, or in only one of them."""
    differ = list(compress(new, map(is_not, new.values(), map(old.get, new, repeat(_ABSENT)))))
    if len(new) - sum(key not in old for key in differ) != len(old):
        differ.extend(key for key in old if key not in new)  # some were removed
    return differ


def stored(instance: Instance) -> None:
    """Mark `instance`'s step outputs as stored: later changes are counted from them."""
    object.__setattr__(instance.context, "changes", None)


def _derive_steps(history: Iterable[ExecutionEntry]) -> dict[str, Any]:
    return {entry.step: _output(entry) for entry in history}


def _output(entry: ExecutionEntry) -> Any:
    updates = entry.context_updates
    return {} if updates is None else updates


def _same(a: Any, b: Any) -> bool:
    return a is b or a == b


_ABSENT: Any = object()


class KnownStates:
    """The last stored state of the instances this process read or wrote, by id.

    A write computes its delta against the state it replaces when that state is
    here (the usual case: a runner writes the instances it claimed or wrote
    before). Bounded: past `limit` ids the oldest entry goes, and its next write
    is a full one. Finished instances are dropped (only a new run writes them again).
    """

    def __init__(self, limit: int = 50_000) -> None:
        self.limit = limit
        self._states: dict[str, Known] = {}

    def remember(self, known: Known, *, written: bool = False) -> None:
        """Keep `known`, just read or `written`, as the stored state of its instance.

        A written instance that now waits is not kept: its runner lets go of it (a
        resume reads it again), and a runner may park a great many.
        """
        stored(known.instance)
        instance_id = known.instance.id
        states = self._states
        states.pop(instance_id, None)
        status = known.instance.status
        if status.is_final or (written and status is Status.WAITING):
            return
        states[instance_id] = known
        if len(states) > self.limit:
            del states[next(iter(states))]

    def forget(self, instance_id: str) -> None:
        self._states.pop(instance_id, None)

    def write_for(
        self, instance: Instance, expected_revision: int | None
    ) -> tuple[RowWrite, int | None]:
        """The rows to write for `put(instance, expected_revision)`, and the run they extend.

        The run is `None` for a create, and for an update whose stored state is not
        known here (the adapter then checks the stored history itself).
        """
        if expected_revision is None:
            return full(instance), None
        known = self._states.get(instance.id)
        if known is None or known.instance.revision != expected_revision:
            return full(instance), None
        return delta(known, instance), known.run
