"""The code in README.md and docs/*.md runs: every ```python block, in order, per file.

Each file's blocks are joined into one script and run in a fresh interpreter
in an empty directory, so an example that stops working fails the build.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def _script(path: Path) -> str:
    return "\n".join(BLOCK.findall(path.read_text(encoding="utf-8")))


@pytest.mark.parametrize(
    "doc", [d for d in DOCS if _script(d)], ids=lambda d: d.relative_to(ROOT).as_posix()
)
def test_examples_in_docs_run(doc: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", _script(doc)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"{doc.name}:\n{result.stdout}\n{result.stderr}"


def test_readme_quick_start_completes_the_order(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", _script(ROOT / "README.md")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("completed ['validate_order'")
    assert "'ship', 'wait', 'done']" in result.stdout
    assert (tmp_path / "orders.db").exists()
