"""A failed step is never silent: its traceback stays on the instance and is logged."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from hephaestus import Context, Done, Instance, Ok, Retry, Status, Step, Unique, Workflow
from hephaestus.app import Hephaestus
from hephaestus.runners._shell import TRACEBACK_LIMIT
from hephaestus.storage import SQLiteStorage


def _charge_the_card(amount: int) -> None:
    raise ValueError(f"card declined for {amount}")


class RtRaises(Step):
    events = ("charged",)
    key = "charge"
    retry = Retry(max_attempts=2, backoff="constant", base=0.01)

    def execute(self, instance: Instance, config: Mapping[str, Any] | None, context: Context) -> Ok:
        _charge_the_card(context.initial["amount"])
        return Ok("charged")


class RtRaisesFlow(Workflow):
    unique = Unique(key="rtraises")
    start = RtRaises
    transitions = {(RtRaises, "charged"): Done}


def _recurse(depth: int) -> None:
    if depth == 0:
        raise RuntimeError("x" * 10_000)
    _recurse(depth - 1)


class RtDeepRaise(Step):
    events = ("done",)
    key = "deep"

    async def execute(
        self, instance: Instance, config: Mapping[str, Any] | None, context: Context
    ) -> Ok:
        _recurse(200)
        return Ok("done")


class RtDeepFlow(Workflow):
    unique = Unique(key="rtdeep")
    start = RtDeepRaise
    transitions = {(RtDeepRaise, "done"): Done}


@pytest.mark.both_runners
async def test_a_failed_instance_keeps_the_traceback_of_its_last_attempt(
    app: Hephaestus, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="hephaestus"):
        await RtRaisesFlow.start("t1", {"amount": 42})
        failed = await RtRaisesFlow.wait("t1", timeout=20)

    assert failed.status is Status.FAILED
    assert failed.error is not None
    first_line, _, rest = failed.error.partition("\n")
    assert first_line == "step RtRaises failed after 2 attempts: ValueError: card declined for 42"
    assert rest.startswith("Traceback (most recent call last):")
    assert "_charge_the_card" in rest
    assert rest.endswith("ValueError: card declined for 42")

    # The retried attempt is a warning, the failed instance an error, both on `hephaestus.*`.
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "t1" in r.message]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR and "t1" in r.message]
    assert [r.name.split(".")[0] for r in warnings + errors] == ["hephaestus", "hephaestus"]
    assert "step charge failed (attempt 1), will retry: ValueError" in warnings[0].message
    assert "Traceback (most recent call last):" in errors[0].message
    assert "_charge_the_card" in errors[0].message


@pytest.mark.both_runners
async def test_the_kept_traceback_is_bounded_to_its_end(app: Hephaestus) -> None:
    await RtDeepFlow.start("t2")
    failed = await RtDeepFlow.wait("t2", timeout=20)

    assert failed.status is Status.FAILED
    assert failed.error is not None
    reason, _, kept = failed.error.partition("\n")
    # The reason line carries the whole message; the traceback is its last few KB.
    assert len(kept) == TRACEBACK_LIMIT
    assert kept.startswith("...")
    assert kept.endswith("x" * 100)
    assert "_recurse" not in kept  # the 200 frames were cut, the message kept
    assert reason.startswith("step RtDeepRaise failed after 1 attempt: RuntimeError: xxx")


SCRIPT = """
import asyncio

from hephaestus import Done, Hephaestus, LocalRunner, MemoryStorage, Ok, Step, Unique, Workflow


class Explode(Step):
    events = ("done",)

    def execute(self, instance, config, context):
        raise KeyError("no such sku")


class ExplodeFlow(Workflow):
    unique = Unique(key="explode")
    start = Explode
    transitions = {(Explode, "done"): Done}


async def main():
    async with Hephaestus(storage=MemoryStorage(), runner=LocalRunner()):
        await ExplodeFlow.start("e1")
        await ExplodeFlow.wait("e1", timeout=20)


asyncio.run(main())
"""


def test_a_failure_is_printed_when_no_logging_is_configured(tmp_path: Path) -> None:
    script = tmp_path / "explode.py"
    script.write_text(textwrap.dedent(SCRIPT), encoding="utf-8")
    src = str(Path(__import__("hephaestus").__file__).resolve().parent.parent)
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": src, "PATH": "/usr/bin:/bin"},
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "instance explode::e1 failed: step Explode failed after 1 attempt" in done.stderr
    assert "Traceback (most recent call last):" in done.stderr
    assert "KeyError: 'no such sku'" in done.stderr


async def test_the_local_runner_logs_how_many_instances_it_took_over_at_open(
    open_app: Any, db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with Hephaestus(storage=SQLiteStorage(db_path), runner=None) as client:
        for value in ("o1", "o2"):
            await RtRaisesFlow.start(value, {"amount": 1}, hephaestus=client)

    with caplog.at_level(logging.INFO, logger="hephaestus"):
        await open_app(db_path)

    opened = [r for r in caplog.records if "at open" in r.message]
    assert len(opened) == 1
    assert opened[0].levelno == logging.INFO
    assert opened[0].name.startswith("hephaestus.")
    assert opened[0].message.endswith("took over 2 instance(s) at open")
