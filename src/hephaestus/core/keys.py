"""Business keys: instance ids of the form `key::value`, and their uniqueness scopes.

`key` names the kind of thing (`orderid`), `value` the thing (`EXP-42`).

- The key is 1 to 40 lowercase letters and digits (`[a-z0-9]+`).
- The value is 1 to 200 ASCII letters (either case), digits and `-` `_` `.`
  `@` `+` `:`, as real systems write their ids: `abc123`, `EXP-42`,
  `order_123`, a UUID, `jane.doe@example.com`. `::` separates the parts, so a
  value may not contain it, nor start or end with `:` (`a:` + `::` would read
  as `a:::`). Values are case-sensitive: `EXP-42` and `exp-42` are two ids.
- No whitespace, control or non-ASCII characters: Unicode spells one visible
  text in several ways (`é` is one code point or two), and ids compare byte
  by byte, so each spelling would be another instance. Map such values to
  ASCII first (a slug, a hash, or the system's own id).

Workflows whose scope is `none` get ids `key::value::suffix` with a random
8-hex-digit suffix, so every start is distinct. An id is at most 252
characters (40 + 2 + 200 + 2 + 8). It splits one way only: the key is before
the first `::`, the suffix (if any) after the second. The scope of a
workflow's `Unique` says which active instances count as "the same" when
starting.
"""

from __future__ import annotations

import re
import string
import unicodedata
from dataclasses import dataclass
from typing import Literal

from hephaestus.errors import InvalidBusinessKeyError, InvalidUniqueError

__all__ = [
    "ID_MAX_LENGTH",
    "KEY_MAX_LENGTH",
    "SCOPES",
    "VALUE_MAX_LENGTH",
    "Scope",
    "Unique",
    "build_id",
    "parse_id",
    "validate_id",
    "with_suffix",
]

Scope = Literal["workflow", "version", "global", "none"]
SCOPES: tuple[Scope, ...] = ("workflow", "version", "global", "none")

SEPARATOR = "::"
KEY_MAX_LENGTH = 40
VALUE_MAX_LENGTH = 200
_SUFFIX_LENGTH = 8
ID_MAX_LENGTH = KEY_MAX_LENGTH + VALUE_MAX_LENGTH + _SUFFIX_LENGTH + 2 * len(SEPARATOR)

# `\Z`, not `$`: `$` also matches before a trailing newline, which would let "abc\n" in.
_KEY = re.compile(r"^[a-z0-9]+\Z")
_SUFFIX = re.compile(r"^[0-9a-f]{8}\Z")
# Runs of allowed characters joined by single colons: no `::`, no leading or trailing `:`.
_VALUE = re.compile(r"^[A-Za-z0-9_.@+-]+(?::[A-Za-z0-9_.@+-]+)*\Z")
_KEY_CHARS = frozenset(string.ascii_lowercase + string.digits)
_VALUE_CHARS = frozenset(string.ascii_letters + string.digits + "-_.@+:")

_KEY_RULE = f"a key is 1 to {KEY_MAX_LENGTH} lowercase letters and digits ([a-z0-9]+)"
_VALUE_RULE = (
    f"a value is 1 to {VALUE_MAX_LENGTH} ASCII letters, digits and - _ . @ + :, "
    "with no '::' and no ':' at either end"
)
_ID_RULE = (
    "an id is 'key::value', or 'key::value::xxxxxxxx' with an 8-hex-digit suffix, "
    "e.g. 'orderid::EXP-42'"
)
_SHOWN_MAX = 80


@dataclass(frozen=True, slots=True)
class Unique:
    """A workflow's business key: `Unique(key="orderid", scope="workflow")`.

    Scopes: `workflow` (one active instance per id and workflow), `version`
    (per id, workflow and version), `global` (per id, any workflow), `none`
    (every start gets a distinct id from a random suffix).
    """

    key: str
    scope: Scope = "workflow"

    def __post_init__(self) -> None:
        if not isinstance(self.key, str) or not _KEY.match(self.key):
            raise InvalidUniqueError(
                f"Unique key {self.key!r} is malformed: use lowercase letters and digits only, "
                'e.g. Unique(key="orderid")'
            )
        if len(self.key) > KEY_MAX_LENGTH:
            raise InvalidUniqueError(
                f"Unique key {_shown(self.key)} is too long ({len(self.key)} characters): "
                f"use at most {KEY_MAX_LENGTH}"
            )
        if self.scope not in SCOPES:
            raise InvalidUniqueError(
                f"Unique scope {self.scope!r} is not one of {', '.join(SCOPES)}"
            )


def _shown(text: object) -> str:
    """`repr(text)`, cut short for a very long str so that one message stays readable."""
    if isinstance(text, str) and len(text) > _SHOWN_MAX:
        return f"{text[:_SHOWN_MAX]!r}... ({len(text)} characters)"
    return repr(text)


def _key_problem(key: object) -> str | None:
    """What is wrong with `key` and how to fix it, or None if it is a well-formed key."""
    if not isinstance(key, str):
        return f"is of type {type(key).__name__}, not str"
    if not key:
        return "is empty"
    if len(key) > KEY_MAX_LENGTH:
        return f"is too long ({len(key)} characters; at most {KEY_MAX_LENGTH})"
    if not _KEY.match(key):
        index, char = next((i, c) for i, c in enumerate(key) if c not in _KEY_CHARS)
        return f"has {_describe(char)} at index {index}"
    return None


def _value_problem(value: object) -> str | None:
    """What is wrong with `value` and how to fix it, or None if it is a well-formed value."""
    if not isinstance(value, str):
        return f"is of type {type(value).__name__}, not str"
    if not value:
        return "is empty"
    if len(value) > VALUE_MAX_LENGTH:
        return (
            f"is too long ({len(value)} characters; at most {VALUE_MAX_LENGTH}): "
            "use a shorter identifier of the thing, or a hash of it"
        )
    if _VALUE.match(value):
        return None
    for index, char in enumerate(value):
        if char not in _VALUE_CHARS:
            return f"has {_describe(char)} at index {index}{_remedy(char)}"
    if SEPARATOR in value:
        return (
            f"contains '::' at index {value.index(SEPARATOR)}, which separates the key from "
            "the value: use another character there, e.g. '-'"
        )
    edge = "starts" if value.startswith(":") else "ends"
    return f"{edge} with ':', which would make the id ambiguous next to '::': drop that ':'"


def _describe(char: str) -> str:
    if unicodedata.category(char) == "Cc":
        return f"the control character {char!r}"
    if char.isspace():
        return f"the whitespace {char!r}"
    if not char.isascii():
        return f"the non-ASCII character {char!r}"
    return f"the character {char!r}"


def _remedy(char: str) -> str:
    if unicodedata.category(char) == "Cc" or char.isspace():
        return " (strip or remove it)"
    if not char.isascii():
        return " (map the value to ASCII, e.g. a slug or the system's own id)"
    return " (it is not allowed)"


def build_id(key: str, value: str) -> str:
    """`build_id("orderid", "EXP-42")` -> `"orderid::EXP-42"`, checking both parts."""
    problem = _value_problem(value)
    if problem is not None:
        raise InvalidBusinessKeyError(
            f"business key value {_shown(value)} for key {_shown(key)} is malformed: it {problem}; "
            f"{_VALUE_RULE}, e.g. 'EXP-42' or 'jane.doe@example.com'"
        )
    problem = _key_problem(key)
    if problem is not None:
        raise InvalidBusinessKeyError(
            f"business key {_shown(key)} is malformed: it {problem}; {_KEY_RULE}"
        )
    return f"{key}{SEPARATOR}{value}"


def with_suffix(instance_id: str, suffix: str) -> str:
    """`key::value` -> `key::value::suffix`, the distinct id of a scope-`none` start."""
    if not isinstance(suffix, str) or not _SUFFIX.match(suffix):
        raise InvalidBusinessKeyError(f"id suffix {suffix!r} must be 8 lowercase hex digits")
    if _split(validate_id(instance_id))[2] is not None:
        raise InvalidBusinessKeyError(
            f"instance id {instance_id!r} already has a suffix; pass the 'key::value' id"
        )
    return f"{instance_id}{SEPARATOR}{suffix}"


def parse_id(instance_id: str) -> tuple[str, str]:
    """`"orderid::EXP-42"` -> `("orderid", "EXP-42")`; raises `InvalidBusinessKeyError`.

    The random suffix of a scope-`none` id is not part of the value.
    """
    key, value, _ = _split(validate_id(instance_id))
    return key, value


def validate_id(instance_id: object) -> str:
    """Return `instance_id` if it is a well-formed `key::value[::suffix]`, else raise."""
    problem = _id_problem(instance_id)
    if problem is None and isinstance(instance_id, str):
        return instance_id
    raise InvalidBusinessKeyError(
        f"instance id {_shown(instance_id)} is malformed: {problem}; {_ID_RULE}"
    )


def _split(instance_id: str) -> tuple[str, str, str | None]:
    """`key`, `value` and `suffix` (or None) of a valid id: the key is before the first `::`,
    the suffix after the second (a value has no `::`)."""
    key, _, rest = instance_id.partition(SEPARATOR)
    value, separator, suffix = rest.partition(SEPARATOR)
    return key, value, suffix if separator else None


def _id_problem(instance_id: object) -> str | None:
    if not isinstance(instance_id, str):
        return f"it is of type {type(instance_id).__name__}, not str"
    if len(instance_id) > ID_MAX_LENGTH:
        return f"it is too long ({len(instance_id)} characters; at most {ID_MAX_LENGTH})"
    if SEPARATOR not in instance_id:
        return "it has no '::' between the key and the value"
    key, _, value = instance_id.partition(SEPARATOR)
    problem = _key_problem(key)
    if problem is not None:
        return f"its key {key!r} {problem}; {_KEY_RULE}"
    end = len(value) - _SUFFIX_LENGTH - len(SEPARATOR)
    if end > 0 and value[end:].startswith(SEPARATOR) and _SUFFIX.match(value[-_SUFFIX_LENGTH:]):
        value = value[:end]  # a scope-`none` suffix: the value is what comes before it
    problem = _value_problem(value)
    if problem is None:
        return None
    if SEPARATOR in value:
        problem += " (a suffix after a second '::' is 8 lowercase hex digits)"
    return f"its value {_shown(value)} {problem}; {_VALUE_RULE}"
