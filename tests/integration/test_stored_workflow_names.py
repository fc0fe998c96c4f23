"""A stored workflow name picks among the workflows this process defined; it never imports.

Anyone who can write a row of the storage chooses its `workflow` column. If
looking that name up imported the module it names, a crafted row would run
any module on `sys.path` in every runner and CLI that reads the row.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from hephaestus import Instance, Status, WorkflowDefinitionError
from hephaestus.core.definition import load_workflow
from hephaestus.runners._shell import DefinitionCache
from hephaestus.storage import SQLiteStorage

TRAP = "hephaestus_trap_module_for_names"


@pytest.fixture
def trap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An importable module that writes a marker file when it is imported; the marker's path."""
    marker = tmp_path / "imported.marker"
    (tmp_path / f"{TRAP}.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('imported')\n"
        "class Flow:\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, TRAP, raising=False)
    return marker


@pytest.mark.parametrize("name", [f"{TRAP}.Flow", f"{TRAP}.Missing", f"{TRAP}.sub.Flow"])
def test_load_workflow_never_imports_the_module_a_name_names(trap: Path, name: str) -> None:
    with pytest.raises(WorkflowDefinitionError, match=r"is not registered in this process"):
        load_workflow(name)
    assert not trap.exists()
    assert TRAP not in sys.modules


def crafted_row(workflow: str, status: str = "running") -> Instance:
    """A stored instance as a hostile writer of the storage could make it."""
    now = datetime(2026, 1, 1, tzinfo=UTC).isoformat()
    return Instance.from_dict(
        {
            "id": "crafted::1",
            "workflow": workflow,
            "workflow_version": 1,
            "status": status,
            "context": {"initial": {}, "steps": {}},
            "active_steps": ["start"] if status == "running" else [],
            "attempts": {"start": 1} if status == "running" else {},
            "created_at": now,
            "updated_at": now,
        }
    )


def test_the_definition_of_a_crafted_instance_is_not_imported(trap: Path) -> None:
    with pytest.raises(WorkflowDefinitionError, match=rf"'{TRAP}.Flow' is not registered"):
        DefinitionCache().get(crafted_row(f"{TRAP}.Flow"))
    assert not trap.exists()


async def test_recovering_a_crafted_running_row_imports_nothing(
    trap: Path, db_path: Path, open_app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    async with SQLiteStorage(db_path) as storage:
        await storage.put(crafted_row(f"{TRAP}.Flow"), None)

    app = await open_app(db_path)  # recovers every running instance
    await app.runner.wait_idle(timeout=5)
    assert not trap.exists()
    assert TRAP not in sys.modules
    assert f"workflow '{TRAP}.Flow' is not registered in this process" in caplog.text
    assert (await app.get("crafted::1")).status is Status.RUNNING  # left as it was
