"""Storage URLs: one string names where instances live, for `--storage` and `HEPHAESTUS_STORAGE`.

| URL | storage |
| --- | --- |
| `sqlite:///relative/path.db` | `SQLiteStorage("relative/path.db")`, from the current directory |
| `sqlite:////absolute/path.db` | `SQLiteStorage("/absolute/path.db")` |
| `sqlite:///app.db?synchronous=NORMAL&timeout=10` | the same, with those options |
| `path/to/file.db` (no scheme) | `SQLiteStorage("path/to/file.db")` |
| `memory://` | `MemoryStorage()`: empty, and gone when the command ends |
| `postgresql://user:pass@host/db` | `PostgresStorage(url)`; needs the `postgres` extra |
| `postgresql://host/db?schema=wf` | `PostgresStorage(url, schema="wf")` |

`postgres://` and `postgresql+psycopg://` are read as `postgresql://`; query
parameters other than `schema` go to libpq.

A malformed URL (unknown scheme, missing path, a host in a SQLite URL,
unknown option) raises `StorageError` naming what is wrong, before anything is
opened. Passwords never appear in those messages.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from hephaestus.errors import StorageError
from hephaestus.storage.base import Storage
from hephaestus.storage.memory import MemoryStorage
from hephaestus.storage.sqlite import SQLiteStorage

__all__ = [
    "DEFAULT_URL",
    "ENV_VAR",
    "is_postgres",
    "postgres_module",
    "postgres_target",
    "redact",
    "storage_from_url",
]

#: The storage used when neither `--storage` nor `HEPHAESTUS_STORAGE` names one.
DEFAULT_URL = "sqlite:///hephaestus.db"
#: The environment variable read when `--storage` is not given.
ENV_VAR = "HEPHAESTUS_STORAGE"

_EXAMPLES = "sqlite:///hephaestus.db, sqlite:////abs/path.db, memory:// or postgresql://host/db"
# `name:` at the start of a string without `://`: a URL with a typo, not a file name
# (a one-letter scheme is a Windows drive, `C:\...`).
_SCHEME_ONLY = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:")
_SQLITE_OPTIONS = {"synchronous": ("FULL", "NORMAL", "EXTRA"), "timeout": None}


def storage_from_url(url: str, *, must_exist: bool = False) -> Storage:
    """The storage `url` names (see the module docstring); raises `StorageError` if malformed.

    With `must_exist`, a SQLite URL must name an existing file: commands that
    only inspect or change existing instances should not create an empty
    database because of a typo in a path.
    """
    text = url.strip()
    if not text:
        raise StorageError(f"the storage URL is empty; use one like {_EXAMPLES}")
    scheme, separator, rest = text.partition("://")
    if not separator:
        if _SCHEME_ONLY.match(text):
            raise StorageError(
                f"malformed storage URL {redact(text)!r}: write the scheme with '://', "
                f"like {_EXAMPLES}"
            )
        return _sqlite(text, {}, url=text, must_exist=must_exist)
    kind = scheme.lower()
    if kind in ("sqlite", "sqlite3"):
        return _sqlite_url(text, rest, must_exist=must_exist)
    if kind == "memory":
        if rest not in ("", "/"):
            raise StorageError(
                f"malformed storage URL {text!r}: memory:// takes no path or options"
            )
        return MemoryStorage()
    if is_postgres(text):
        return _postgres(text)
    raise StorageError(
        f"unknown storage URL scheme {scheme!r} in {redact(text)!r}; use one like {_EXAMPLES}"
    )


def is_postgres(url: str) -> bool:
    """Whether `url` names a PostgreSQL database (`postgresql://`, `postgres://`, `+driver`)."""
    scheme, separator, _ = url.strip().partition("://")
    kind = scheme.lower()
    return bool(separator) and (
        kind in ("postgresql", "postgres") or kind.startswith(("postgresql+", "postgres+"))
    )


def redact(url: str) -> str:
    """`url` with any password replaced by `***`, for messages and output."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    netloc = f"{parts.username or ''}:***@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _sqlite_url(url: str, rest: str, *, must_exist: bool) -> Storage:
    host, slash, path_and_query = rest.partition("/")
    if host:
        raise StorageError(
            f"malformed storage URL {url!r}: a SQLite URL has no host ({host!r}); use "
            "sqlite:///relative/path.db or sqlite:////absolute/path.db"
        )
    path, _, query = path_and_query.partition("?")
    path = unquote(path)
    if not slash or not path:
        raise StorageError(
            f"malformed storage URL {url!r}: it names no database file; use "
            "sqlite:///relative/path.db or sqlite:////absolute/path.db"
        )
    options: dict[str, Any] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name not in _SQLITE_OPTIONS:
            raise StorageError(
                f"malformed storage URL {url!r}: unknown option {name!r}; SQLite URLs take "
                f"{' and '.join(_SQLITE_OPTIONS)}"
            )
        options[name] = _sqlite_option(url, name, value)
    return _sqlite(path, options, url=url, must_exist=must_exist)


def _sqlite_option(url: str, name: str, value: str) -> Any:
    if name == "synchronous":
        allowed = cast(tuple[str, ...], _SQLITE_OPTIONS["synchronous"])
        if value.upper() not in allowed:
            raise StorageError(
                f"malformed storage URL {url!r}: synchronous={value!r} is not one of "
                f"{', '.join(allowed)}"
            )
        return value.upper()
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:
        raise StorageError(
            f"malformed storage URL {url!r}: timeout={value!r} must be a number of seconds >= 0"
        )
    return seconds


def _sqlite(path: str, options: dict[str, Any], *, url: str, must_exist: bool) -> Storage:
    if must_exist and path != ":memory:" and not Path(path).is_file():
        where = f"at {path}" if url != DEFAULT_URL else f"{path} in the current directory"
        raise StorageError(
            f"no Hephaestus database {where}; pass --storage with the URL of an existing "
            f"one or set {ENV_VAR}"
        )
    return SQLiteStorage(path, **options)


def postgres_target(url: str) -> tuple[str, str]:
    """`(url, schema)` for `PostgresStorage` and `migrate` from a `postgres...://` URL.

    The scheme becomes `postgresql://`, and a `schema=NAME` query parameter
    (default `public`) is taken out of the URL; other parameters stay for libpq.
    """
    rest = url.partition("://")[2]
    location, _, query = rest.partition("?")
    schema = "public"
    kept: list[tuple[str, str]] = []
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name == "schema":
            if not value:
                raise StorageError(f"malformed storage URL {redact(url)!r}: schema= is empty")
            schema = value
        else:
            kept.append((name, value))
    driverless = f"postgresql://{location}"
    if kept:
        driverless += "?" + urlencode(kept)
    return driverless, schema


def postgres_module() -> Any:
    """`hephaestus.storage.postgres`, or a `StorageError` saying to install the extra."""
    # Imported by name so that neither the module nor its driver is needed for other URLs.
    try:
        return importlib.import_module("hephaestus.storage.postgres")
    except ImportError as exc:
        # A missing module is what a missing extra looks like; say more about anything else.
        install = "pip install 'hephaestus-workflows[postgres]'"
        plain = isinstance(exc, ModuleNotFoundError) or install in str(exc)
        detail = "" if plain else f" ({exc})"
        raise StorageError(
            f"PostgreSQL storage needs the postgres extra: {install}{detail}"
        ) from exc


def _postgres(url: str) -> Storage:
    target, schema = postgres_target(url)
    module = postgres_module()
    return cast(Storage, module.PostgresStorage(target, schema=schema))
