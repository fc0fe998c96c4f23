"""The data a workflow instance carries: the caller's input and each step's output.

`initial` is what the caller passed to `start`; `steps[key]` is what the step
with that key returned in `Ok(event, updates)`. Both are JSON values, checked
when they enter, so an instance always round-trips through JSON exactly.
`attempt`, `idempotency_key` and `trigger` describe the running attempt and
are not persisted. Both mappings and everything in them are read-only
(`FrozenDict`, `FrozenList`): changing one raises `TypeError`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hephaestus.core.frozen import EMPTY, FrozenDict, freeze
from hephaestus.errors import ContextSerializationError

if TYPE_CHECKING:
    from hephaestus.core.instance import ExecutionEntry

__all__ = ["Context", "Trigger", "find_trigger", "to_json_value"]

_EMPTY: Mapping[str, Any] = EMPTY


def to_json_value(value: Any, *, what: str) -> Any:
    """Return a JSON-normalised copy of `value` (tuples become lists).

    Raises `ContextSerializationError` naming `what` and the offending key when
    `value` is not JSON-serialisable. Dict keys must be str: `json` would turn
    `1`, `True` or `None` into `"1"`, `"true"`, `"null"` (and silently drop one
    of `{1: ..., "1": ...}`), so the data read back would not be what was written.
    """
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        culprit = _find_culprit(value, what, frozenset())
        raise ContextSerializationError(
            f"{culprit} is not JSON-serialisable ({exc}); {_ALLOWED}"
        ) from exc
    bad_key = _find_non_str_key(value, what)
    if bad_key is not None:
        raise ContextSerializationError(f"{bad_key}; {_ALLOWED}")
    return json.loads(text)


_ALLOWED = (
    "pass only dicts with str keys, lists, str, int, finite float, bool and None "
    "(convert dates to ISO strings, Decimals to str)"
)


def _find_culprit(value: Any, path: str, seen: frozenset[int]) -> str:
    """Walk `value` to name the first key whose value breaks JSON."""
    if id(value) in seen:
        return f"{path} (a circular reference)"
    if isinstance(value, Mapping):
        inner = seen | {id(value)}
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{path} has a non-str key {key!r}"
            try:
                json.dumps(item, allow_nan=False)
            except (TypeError, ValueError):
                return _find_culprit(item, f"{path}[{key!r}]", inner)
    elif isinstance(value, list | tuple):
        inner = seen | {id(value)}
        for index, item in enumerate(value):
            try:
                json.dumps(item, allow_nan=False)
            except (TypeError, ValueError):
                return _find_culprit(item, f"{path}[{index}]", inner)
    return f"{path} (a {type(value).__name__})"


def _find_non_str_key(value: Any, path: str) -> str | None:
    """Name the first dict key that is not a str, or `None`; `value` is known to be acyclic."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{path} has a non-str key {key!r}"
            found = _find_non_str_key(item, f"{path}[{key!r}]")
            if found is not None:
                return found
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found = _find_non_str_key(item, f"{path}[{index}]")
            if found is not None:
                return found
    return None


@dataclass(frozen=True, slots=True)
class Trigger:
    """What activated a step: step `step` completed with `event` and `data` (its output).

    For a step after a waiting step, `event` and `data` are what `resume`
    delivered (or the timer's event). `data` is read-only, empty if none.
    """

    step: str
    event: str
    data: Mapping[str, Any]


def find_trigger(
    history: Iterable[ExecutionEntry],
    step: str,
    steps: Mapping[str, Mapping[str, Any]] = EMPTY,
) -> Trigger | None:
    """The trigger of `step`: the last completion whose transition led to it (`None` at start).

    Derived from the history, so a retried or recovered attempt sees the same one.
    Pass the context's `steps`: a completion's updates are usually stored there
    already frozen, which then saves freezing them again.
    """
    for entry in reversed(tuple(history)):
        if step in entry.targets:
            data = entry.context_updates
            if data is None:
                return Trigger(entry.step, entry.event, EMPTY)
            stored = steps.get(entry.step)
            if stored is None or stored != data:
                stored = freeze(data)
            return Trigger(entry.step, entry.event, stored)
    return None


@dataclass(frozen=True, slots=True, eq=False)
class Context:
    """Read-only view of an instance's data, handed to every step.

    `initial` and `steps` (and every dict and list in them) refuse changes
    with a `TypeError`: a step returns its changes as `Ok(event, updates)`.
    `attempt`, `idempotency_key` and `trigger` (what activated the running
    step, `None` for the start step) describe the running attempt only.
    """

    initial: Mapping[str, Any]
    steps: Mapping[str, Mapping[str, Any]]
    attempt: int = 0
    idempotency_key: str = ""
    trigger: Trigger | None = None

    def __post_init__(self) -> None:
        # Frozen values are kept as is: the common case costs two type checks.
        if type(self.initial) is not FrozenDict:
            object.__setattr__(self, "initial", freeze(self.initial))
        if type(self.steps) is not FrozenDict:
            object.__setattr__(self, "steps", freeze(self.steps))

    @classmethod
    def new(cls, initial: Mapping[str, Any] | None = None) -> Context:
        """A fresh context from the caller's input, checked and normalised as JSON."""
        if initial is None:
            return cls(initial=_EMPTY, steps=_EMPTY)
        if not isinstance(initial, Mapping):
            raise ContextSerializationError(
                f"the initial context must be a dict, got {type(initial).__name__}"
            )
        return cls(initial=to_json_value(initial, what="context"), steps=_EMPTY)

    def with_updates(self, key: str, updates: Mapping[str, Any]) -> Context:
        """A new context whose `steps[key]` is `updates` (already JSON-normalised)."""
        steps = FrozenDict(self.steps)
        dict.__setitem__(steps, key, freeze(updates))
        return Context(initial=self.initial, steps=steps)

    def to_dict(self) -> dict[str, Any]:
        return {"initial": self.initial, "steps": self.steps}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Context:
        return cls(initial=data.get("initial", {}), steps=data.get("steps", {}))

    def __eq__(self, other: object) -> bool:
        # The running attempt is not part of the persisted value, so it is not compared.
        if not isinstance(other, Context):
            return NotImplemented
        return self.initial == other.initial and self.steps == other.steps

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_dict(), sort_keys=True))
