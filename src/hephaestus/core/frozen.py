"""Read-only JSON containers: what a step sees in `context.initial` and `context.steps`.

`FrozenDict` and `FrozenList` are `dict` and `list` subclasses whose mutating
methods raise `TypeError`. Being real dicts and lists, they compare equal to
plain ones, `json.dumps` writes them as is, and `isinstance(x, dict)` holds,
so reading a context works as before; only changing one in place fails,
instead of silently changing (or breaking) the stored instance. Copy one
(`dict(x)`, `list(x)`, `x.copy()`, `x | {...}`) to get a plain, mutable value.
"""

from __future__ import annotations

from typing import Any, NoReturn

__all__ = ["EMPTY", "FrozenDict", "FrozenList", "freeze"]

_HOW = (
    "the context is read-only: a step returns its changes as Ok(event, updates); "
    "copy a value (dict(...), list(...)) to build from it"
)


def _refuse(self: object, *args: object, **kwargs: object) -> NoReturn:
    raise TypeError(f"cannot change a {type(self).__name__}: {_HOW}")


class FrozenDict(dict[str, Any]):
    """A `dict` that refuses changes; its values are frozen too."""

    __slots__ = ()

    __setitem__ = _refuse
    __delitem__ = _refuse
    __ior__ = _refuse
    clear = _refuse
    pop = _refuse
    popitem = _refuse
    setdefault = _refuse
    update = _refuse

    def __reduce__(self) -> tuple[type[FrozenDict], tuple[dict[str, Any]]]:
        return (FrozenDict, (dict(self),))

    def __copy__(self) -> FrozenDict:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> FrozenDict:
        return self


class FrozenList(list[Any]):
    """A `list` that refuses changes; its items are frozen too."""

    __slots__ = ()

    __setitem__ = _refuse
    __delitem__ = _refuse
    __iadd__ = _refuse
    __imul__ = _refuse
    append = _refuse
    clear = _refuse
    extend = _refuse
    insert = _refuse
    pop = _refuse
    remove = _refuse
    reverse = _refuse
    sort = _refuse

    def __reduce__(self) -> tuple[type[FrozenList], tuple[list[Any]]]:
        return (FrozenList, (list(self),))

    def __copy__(self) -> FrozenList:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> FrozenList:
        return self


EMPTY = FrozenDict()


#: JSON scalars: kept as they are, without a call per value.
_SCALARS = frozenset({str, int, float, bool, type(None)})


def freeze(value: Any) -> Any:
    """`value` with every dict and list in it made read-only (frozen ones are kept as is)."""
    kind = type(value)
    if kind is dict:
        for item in value.values():
            if type(item) not in _SCALARS:
                break
        else:
            return FrozenDict(value)  # flat, the usual updates: one C-level copy
        return FrozenDict(
            {key: item if type(item) in _SCALARS else freeze(item) for key, item in value.items()}
        )
    if kind is list:
        for item in value:
            if type(item) not in _SCALARS:
                break
        else:
            return FrozenList(value)
        return FrozenList([item if type(item) in _SCALARS else freeze(item) for item in value])
    if kind in _SCALARS or kind is FrozenDict or kind is FrozenList:
        return value
    if isinstance(value, dict):
        return FrozenDict({key: freeze(item) for key, item in value.items()})
    if isinstance(value, list | tuple):
        return FrozenList([freeze(item) for item in value])
    return value
