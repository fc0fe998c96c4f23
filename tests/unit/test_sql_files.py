"""Migrations load in number order; gaps are allowed, duplicates and a missing first are not."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from hephaestus.storage._sql import load_migrations


def package_with(tmp_path: Path, name: str, files: list[str]) -> str:
    directory = tmp_path / name
    directory.mkdir()
    (directory / "__init__.py").write_text("")
    for file in files:
        (directory / file).write_text(f"-- {file}\n")
    if str(tmp_path) not in sys.path:
        sys.path.insert(0, str(tmp_path))
    return name


def test_gaps_are_allowed_and_order_is_by_number(tmp_path: Path) -> None:
    name = package_with(tmp_path, "sql_gaps", ["0004_b.sql", "0001_a.sql", "0002_c.sql"])
    assert [(m.version, m.name) for m in load_migrations(name)] == [
        (1, "a"),
        (2, "c"),
        (4, "b"),
    ]


@pytest.mark.parametrize(
    "files", [["0001_a.sql", "0001_b.sql"], ["0002_a.sql"], []], ids=["twice", "no-first", "none"]
)
def test_duplicates_or_a_missing_first_are_refused(tmp_path: Path, files: list[str]) -> None:
    name = package_with(tmp_path, f"sql_bad_{len(files)}_{len(set(files))}", files)
    with pytest.raises(RuntimeError, match="distinct numbers starting at 1"):
        load_migrations(name)


def test_the_shipped_migrations_load() -> None:
    sqlite = load_migrations("hephaestus.storage.sql.sqlite")
    postgres = load_migrations("hephaestus.storage.sql.postgres")
    assert sqlite[-1].name == "dashboard"
    assert postgres[-1].name == "dashboard"
