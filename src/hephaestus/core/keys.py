"""Business keys: instance ids of the form `key::value`, and their uniqueness scopes.

`key` names the kind of thing (`orderid`), `value` the thing (`abc123`).
Both are `[a-z0-9]+`; the value may also be a UUID. The scope of a workflow's
`Unique` says which active instances count as "the same" when starting.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from hephaestus.errors import InvalidBusinessKeyError, InvalidUniqueError

__all__ = ["SCOPES", "Scope", "Unique", "build_id", "parse_id", "validate_id"]

Scope = Literal["workflow", "version", "global", "none"]
SCOPES: tuple[Scope, ...] = ("workflow", "version", "global", "none")

_KEY = re.compile(r"^[a-z0-9]+$")
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
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
    if not _KEY.match(key):
        raise InvalidBusinessKeyError(f"business key {key!r} is malformed: use [a-z0-9]+")
    return f"{key}{SEPARATOR}{value}"


def parse_id(instance_id: str) -> tuple[str, str]:
    """`"orderid::abc123"` -> `("orderid", "abc123")`; raises `InvalidBusinessKeyError`."""
    validate_id(instance_id)
    key, _, value = instance_id.partition(SEPARATOR)
    return key, value


def validate_id(instance_id: object) -> str:
    """Return `instance_id` if it is a well-formed `key::value`, else raise."""
    if isinstance(instance_id, str):
        key, sep, value = instance_id.partition(SEPARATOR)
        if sep and _KEY.match(key) and _is_value(value):
            return instance_id
    raise InvalidBusinessKeyError(
        f"instance id {instance_id!r} is malformed: expected 'key::value' with key and value "
        "in [a-z0-9]+ (the value may be a UUID), e.g. 'orderid::abc123'"
    )
