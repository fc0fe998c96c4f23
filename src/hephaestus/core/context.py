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
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import compress
from operator import not_
from typing import TYPE_CHECKING, Any

from hephaestus.core.frozen import EMPTY, FrozenDict, freeze
from hephaestus.errors import ContextSerializationError

if TYPE_CHECKING:
    from hephaestus.core.instance import ExecutionEntry

__all__ = ["MAX_DEPTH", "MAX_JSON_BYTES", "Context", "Trigger", "find_trigger", "to_json_value"]

_EMPTY: Mapping[str, Any] = EMPTY


#: How deep dicts and lists may nest in a context, a step's updates or metadata. Deeper data
#: would exhaust the recursion of the JSON encoders and of the storages that parse it.
MAX_DEPTH = 100

#: The most JSON one value may take: the input of a run, a step's output, an event's data.
#: Every step's output is kept (and read back with its instance); large data belongs in
#: a store of its own, referenced from the workflow.
MAX_JSON_BYTES = 16 * 2**20


def to_json_value(value: Any, *, what: str) -> Any:
    """Return a JSON-normalised copy of `value` (tuples become lists).

    Raises `ContextSerializationError` naming `what` and the offending key when
    `value` is not JSON that every storage keeps as it is:

    - Dict keys must be str: `json` would turn `1`, `True` or `None` into `"1"`,
      `"true"`, `"null"` (and silently drop one of `{1: ..., "1": ...}`), so the
      data read back would not be what was written.
    - No str (value or key) may contain a NUL character, which PostgreSQL
      cannot store, or a lone surrogate, which is not text that UTF-8 encodes.
    - Dicts and lists nest at most `MAX_DEPTH` levels deep.
    - Its JSON takes at most `MAX_JSON_BYTES` (16 MB).

    On the hot path (every step's result goes through it), so the common case
    costs a C-level dump, load and comparison, and a walk over the containers.
    """
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        culprit = _find_culprit(value, what, frozenset(), 0)
        raise ContextSerializationError(
            f"{culprit} is not JSON-serialisable ({exc}); {_ALLOWED}"
        ) from exc
    except RecursionError:
        path = _find_too_deep(value, what, 1)
        if path is None:
            raise  # not this value's depth: the caller's own stack is exhausted
        raise ContextSerializationError(_too_deep(what, path)) from None
    if len(text) > MAX_JSON_BYTES:
        raise ContextSerializationError(
            f"{what} is {len(text) / 2**20:.1f} MB as JSON, more than the "
            f"{MAX_JSON_BYTES // 2**20} MB one value may be; keep large data outside the "
            "workflow (a file, object storage, a table of your own) and pass a reference "
            "to it, such as its key or URL"
        )
    normalised = json.loads(text)
    # The text is ASCII: a NUL is written \u0000, a surrogate \udXXX (a character beyond the
    # BMP, such as an emoji, is a pair of them). Only then are the strings looked at.
    strings = "\\u" in text and _SUSPECT.search(text) is not None
    problem = _scan(normalised, MAX_DEPTH, strings) if type(normalised) in _CONTAINERS else None
    if problem == _TOO_DEEP:
        raise ContextSerializationError(_too_deep(what, _find_too_deep(value, what, 1)))
    if problem == _BAD_STRING or (strings and type(normalised) is str):
        _refuse_bad_strings(value, what)
    # The copy differs for a non-str key (JSON made it a str), a tuple (now a list), or two
    # lone surrogates that JSON read back as one character.
    if normalised != value:
        if strings:
            _refuse_bad_strings(value, what)
        bad_key = _find_non_str_key(value, what) if _has_non_str_key(value) else None
        if bad_key is not None:
            raise ContextSerializationError(f"{bad_key}; {_ALLOWED}")
    return normalised


_ALLOWED = (
    "pass only dicts with str keys, lists, str, int, finite float, bool and None "
    "(convert dates to ISO strings, Decimals to str)"
)
_SUSPECT = re.compile(r"\\u(?:0000|d[89a-f])")
_SURROGATE = re.compile("[\ud800-\udfff]")
_CONTAINERS = frozenset((dict, list))
_is_container = _CONTAINERS.__contains__


_TOO_DEEP = "too deep"
_BAD_STRING = "bad string"
_BAD_CHARACTER = re.compile("[\\x00\ud800-\udfff]")
_is_str = frozenset((str,)).__contains__


def _scan(value: dict[str, Any] | list[Any], levels: int, strings: bool) -> str | None:
    """`_TOO_DEEP` if `value` (loaded from JSON) nests more than `levels` dicts and lists deep,
    `_BAD_STRING` if `strings` and one of its str holds a NUL or a surrogate, else `None`.

    Only containers are visited in Python: scalars are filtered by C-level iterators, and
    the strs of a container are searched at once.
    """
    if type(value) is dict:
        children: Any = value.values()
        if strings and _BAD_CHARACTER.search("".join(value)) is not None:
            return _BAD_STRING
    else:
        children = value
    if strings:
        texts = "".join(compress(children, map(_is_str, map(type, children))))
        if _BAD_CHARACTER.search(texts) is not None:
            return _BAD_STRING
    for child in compress(children, map(_is_container, map(type, children))):
        if levels <= 1:
            return _TOO_DEEP
        found = _scan(child, levels - 1, strings)
        if found is not None:
            return found
    return None


def _too_deep(what: str, path: str | None) -> str:
    if path is not None and len(path) > 100:
        path = f"{path[:100]}..."
    return (
        f"{what}: dicts and lists nest more than {MAX_DEPTH} levels deep (the limit)"
        f"{f', at {path}' if path else ''}; flatten the data, or store a deep document "
        "as a JSON string"
    )


def _children(value: Any, path: str) -> list[tuple[Any, str]]:
    if isinstance(value, Mapping):
        return [(item, f"{path}[{key!r}]") for key, item in value.items()]
    if isinstance(value, list | tuple):
        return [(item, f"{path}[{index}]") for index, item in enumerate(value)]
    return []


def _find_too_deep(value: Any, path: str, level: int) -> str | None:
    """The path of the first dict or list deeper than `MAX_DEPTH`, or `None`."""
    if not isinstance(value, Mapping | list | tuple):
        return None
    if level > MAX_DEPTH:
        return path
    for item, item_path in _children(value, path):
        found = _find_too_deep(item, item_path, level + 1)
        if found is not None:
            return found
    return None


def _refuse_bad_strings(value: Any, what: str) -> None:
    found = _find_bad_string(value, what, 1)
    if found is not None:
        raise ContextSerializationError(found)


def _find_bad_string(value: Any, path: str, level: int) -> str | None:
    """Name the first str, key or value, that no storage keeps as it is; or `None`."""
    if isinstance(value, str):
        problem = _string_problem(value)
        return f"{path}: {problem}" if problem is not None else None
    if level > MAX_DEPTH:
        return None  # too deep to look further: the depth check says so
    if isinstance(value, Mapping):
        for key in value:
            problem = _string_problem(key) if isinstance(key, str) else None
            if problem is not None:
                return f"{path}: key {key!r}: {problem}"
    for item, item_path in _children(value, path):
        found = _find_bad_string(item, item_path, level + 1)
        if found is not None:
            return found
    return None


def _string_problem(text: str) -> str | None:
    if "\x00" in text:
        return "string contains a NUL character; PostgreSQL cannot store it"
    surrogate = _SURROGATE.search(text)
    if surrogate is not None:
        return (
            f"string contains a lone surrogate {surrogate.group()!r}, which is not valid "
            "Unicode and cannot be encoded as UTF-8; decode bytes with errors='replace' "
            "(or store them as base64)"
        )
    return None


def _find_culprit(value: Any, path: str, seen: frozenset[int], level: int) -> str:
    """Walk `value` to name the first key whose value breaks JSON."""
    if id(value) in seen:
        return f"{path} (a circular reference)"
    if level <= MAX_DEPTH and isinstance(value, Mapping):
        inner = seen | {id(value)}
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{path} has a non-str key {key!r}"
            if not _dumps_ok(item):
                return _find_culprit(item, f"{path}[{key!r}]", inner, level + 1)
    elif level <= MAX_DEPTH and isinstance(value, list | tuple):
        inner = seen | {id(value)}
        for index, item in enumerate(value):
            if not _dumps_ok(item):
                return _find_culprit(item, f"{path}[{index}]", inner, level + 1)
    return f"{path} (a {type(value).__name__})"


def _dumps_ok(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        return False
    return True


_is_scalar = frozenset((str, int, float, bool, type(None))).__contains__


def _has_non_str_key(value: Any) -> bool:
    """Whether a dict in `value` (known to dump as JSON, so acyclic) has a key that is not a str.

    Scalars are skipped by C-level iterators; only what may hold a dict is visited.
    """
    if isinstance(value, dict):
        if not all(map(_is_str, map(type, value))) and not all(
            isinstance(key, str) for key in value
        ):
            return True
        children: Any = value.values()
    elif isinstance(value, list | tuple):
        children = value
    else:
        return False
    return any(
        map(_has_non_str_key, compress(children, map(not_, map(_is_scalar, map(type, children)))))
    )


def _find_non_str_key(value: Any, path: str) -> str | None:
    """Name the first dict key that is not a str, or `None`; `value` is acyclic and not too deep."""
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
    #: Which keys of `steps` were set since it was `base`: `(base, keys)`. Kept by
    #: `with_updates` and cleared by the storage once it stored `steps`, so that a write
    #: finds what changed without looking at every step. Never stored, never compared.
    changes: tuple[Mapping[str, Any], tuple[str, ...]] | None = None

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
        since = self.changes
        changes = (self.steps, (key,)) if since is None else (since[0], (*since[1], key))
        return Context(initial=self.initial, steps=steps, changes=changes)

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
