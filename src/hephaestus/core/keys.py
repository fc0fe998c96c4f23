"""Business keys: instance ids of the form `key::value`, and their uniqueness scopes.

`key` names the kind of thing (`orderid`), `value` the thing (`abc123`).
Both are `[a-z0-9]+`; the value may also be a UUID. Workflows whose scope is
`none` get ids `key::value::suffix` with a random 8-hex-digit suffix, so every
start is distinct. The scope of a workflow's `Unique` says which active
instances count as "the same" when starting.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from hephaestus.errors import InvalidBusinessKeyError, InvalidUniqueError

__all__ = ["SCOPES", "Scope", "Unique", "build_id", "parse_id", "validate_id", "with_suffix"]

Scope = Literal["workflow", "version", "global", "none"]
SCOPES: tuple[Scope, ...] = ("workflow", "version", "global", "none")

# `\Z`, not `$`: `$` also matches before a trailing newline, which would let "abc\n" in.
_KEY = re.compile(r"^[a-z0-9]+\Z")
_SUFFIX = re.compile(r"^[0-9a-f]{8}\Z")
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")
SEPARATOR = "::"


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
        if self.scope not in SCOPES:
            raise InvalidUniqueError(
                f"Unique scope {self.scope!r} is not one of {', '.join(SCOPES)}"
            )


def _is_value(value: str) -> bool:
    return bool(_KEY.match(value) or _UUID.match(value))


def build_id(key: str, value: str) -> str:
    """`build_id("orderid", "abc123")` -> `"orderid::abc123"`, checking both parts."""
    if not isinstance(value, str) or not _is_value(value):
        raise InvalidBusinessKeyError(
            f"business key value {value!r} for key {key!r} is malformed: use lowercase letters "
            "and digits ([a-z0-9]+) or a lowercase UUID"
        )
    if not isinstance(key, str) or not _KEY.match(key):
        raise InvalidBusinessKeyError(f"business key {key!r} is malformed: use [a-z0-9]+")
    return f"{key}{SEPARATOR}{value}"


def with_suffix(instance_id: str, suffix: str) -> str:
    """`key::value` -> `key::value::suffix`, the distinct id of a scope-`none` start."""
    if not isinstance(suffix, str) or not _SUFFIX.match(suffix):
        raise InvalidBusinessKeyError(f"id suffix {suffix!r} must be 8 lowercase hex digits")
    if validate_id(instance_id).count(SEPARATOR) != 1:
        raise InvalidBusinessKeyError(
            f"instance id {instance_id!r} already has a suffix; pass the 'key::value' id"
        )
    return f"{instance_id}{SEPARATOR}{suffix}"


def parse_id(instance_id: str) -> tuple[str, str]:
    """`"orderid::abc123"` -> `("orderid", "abc123")`; raises `InvalidBusinessKeyError`.

    The random suffix of a scope-`none` id is not part of the value.
    """
    validate_id(instance_id)
    key, value, *_ = instance_id.split(SEPARATOR)
    return key, value


def validate_id(instance_id: object) -> str:
    """Return `instance_id` if it is a well-formed `key::value[::suffix]`, else raise."""
    if isinstance(instance_id, str):
        parts = instance_id.split(SEPARATOR)
        if (
            len(parts) in (2, 3)
            and _KEY.match(parts[0])
            and _is_value(parts[1])
            and (len(parts) == 2 or _SUFFIX.match(parts[2]))
        ):
            return instance_id
    raise InvalidBusinessKeyError(
        f"instance id {instance_id!r} is malformed: expected 'key::value' with key and value "
        "in [a-z0-9]+ (the value may be a UUID), e.g. 'orderid::abc123'"
    )
