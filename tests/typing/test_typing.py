"""What a typed user expects: the documented usage passes mypy --strict, misuse does not."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import hephaestus

HERE = Path(__file__).parent
# Type-check the package these tests import, not whichever copy is installed.
SRC = Path(hephaestus.__file__).resolve().parent.parent

pytest.importorskip("mypy")


def _mypy(path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MYPYPATH": str(SRC)}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--python-version",
            "3.11",
            "--no-error-summary",
            "--show-error-codes",
            "--config-file",
            os.devnull,
            str(path),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=HERE,
        check=False,
        timeout=300,
    )


def test_the_documented_usage_type_checks() -> None:
    result = _mypy(HERE / "typed_usage.py")
    assert result.returncode == 0, result.stdout + result.stderr


def test_misuse_of_start_is_reported() -> None:
    result = _mypy(HERE / "misuse.py")
    lines = (HERE / "misuse.py").read_text().splitlines()
    expected = {n for n, line in enumerate(lines, 1) if "# error:" in line}
    reported = {
        int(line.split(":")[1]) for line in result.stdout.splitlines() if ": error:" in line
    }
    assert reported == expected, result.stdout + result.stderr
