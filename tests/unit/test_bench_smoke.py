"""The benchmark harness runs end to end in its tiniest mode and writes well-formed results.

Only the shape of the results is checked, never a timing: performance is
what `python -m bench` reports, as ratios against baselines of the same run.
The bench runs as a separate process, as `make bench` runs it, on SQLite only.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
CASES = [
    "engine-overhead",
    "telemetry-cost",
    "durable-throughput",
    "peer",
    "history-growth",
    "payload-size",
    "resume-latency",
    "client-handoff",
    "lease-cost",
    "parked-scale",
    "timer-storm",
    "query-scale",
    "dashboard-list",
]
ROW_KEYS = {
    "case",
    "backend",
    "metric",
    "unit",
    "ours",
    "baseline",
    "baseline_label",
    "ratio",
    "target",
    "met",
    "skipped",
    "details",
}


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any]]:
    results = tmp_path_factory.mktemp("bench") / "results.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--tiny", "--backend", "sqlite", "--json", str(results)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout, json.loads(results.read_text())


def test_every_case_runs_without_crashing(bench_run: tuple[str, dict[str, Any]]) -> None:
    _, report = bench_run
    assert report["schema"] == 1
    assert report["mode"] == "tiny"
    assert [case["name"] for case in report["cases"]] == CASES
    assert all(case["error"] is None for case in report["cases"])
    assert {row["case"] for row in report["rows"]} == set(CASES)


def test_each_figure_comes_with_its_baseline_and_ratio(
    bench_run: tuple[str, dict[str, Any]],
) -> None:
    _, report = bench_run
    for row in report["rows"]:
        assert set(row) == ROW_KEYS, row
        assert row["metric"], row
        if row["skipped"] is not None:
            assert isinstance(row["skipped"], str), row
            assert row["skipped"], row
            assert row["met"] is None, row
            continue
        assert row["backend"] in (None, "sqlite"), row
        ours, baseline, ratio = row["ours"], row["baseline"], row["ratio"]
        for figure in (ours, baseline):
            assert isinstance(figure, int | float), row
            assert math.isfinite(figure), row
        assert row["baseline_label"], row
        if baseline != 0:
            assert ratio == pytest.approx(ours / baseline), row
        if row["target"] is None:
            assert row["met"] is None, row
        else:
            assert isinstance(row["met"], bool), row


def test_the_durable_and_scale_cases_report_what_was_asked(
    bench_run: tuple[str, dict[str, Any]],
) -> None:
    _, report = bench_run
    measured = [row for row in report["rows"] if row["skipped"] is None]
    metrics: dict[str, list[str]] = {row["case"]: [] for row in measured}
    for row in measured:
        metrics[row["case"]].append(row["metric"])
    for shape in ("linear-3", "fan-out-10"):
        shape_metrics = [
            m for m in metrics["durable-throughput"] if m.startswith(f"sqlite {shape}: ")
        ]
        for what in ("workflows/s", "steps/s", "writes per step", "transactions per step"):
            assert any(what in m for m in shape_metrics), (shape, what, shape_metrics)
    assert any(m.startswith("p99 resume returned") for m in metrics["resume-latency"])
    assert any("RSS growth" in m for m in metrics["parked-scale"])
    assert any("overhead per step" in m for m in metrics["engine-overhead"])
    assert any("no handler attached" in m for m in metrics["telemetry-cost"])
    for what in ("client start -> first step", "client resume -> next step"):
        assert any(what in m for m in metrics["client-handoff"]), what
    assert any("lease renewed" in m for m in metrics["lease-cost"])


def test_the_table_has_the_documented_columns(bench_run: tuple[str, dict[str, Any]]) -> None:
    stdout, report = bench_run
    header = stdout.splitlines()[0].split()
    assert header == ["case", "metric", "ours", "baseline", "ratio", "target", "met?"]
    for row in report["rows"]:
        assert row["metric"] in stdout
