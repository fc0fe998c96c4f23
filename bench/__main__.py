"""`python -m bench [--quick|--full|--tiny] [--case NAME ...] [--json FILE]`.

Runs the cases, prints one table (case, metric, ours, baseline, ratio,
target, met?) and writes every figure, with the details behind it, as JSON
(default `bench/results/latest.json`). The exit status is non-zero only when
a case crashed; a missed target is a finding, not an error.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import math
import os
import platform
import sqlite3
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from bench import _postgres
from bench._harness import MODES, Bench, Row
from bench.cases import CASES
from bench.cases.durable_throughput import BENCH_DATABASE
from bench.cases.peer import DBOS_DATABASE

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    bench_args = {
        "mode": args.mode,
        "backends": tuple(args.backend or ("sqlite", "postgres")),
        "pg_url": args.pg_url,
    }
    selected = list(dict.fromkeys(args.case or CASES))
    started_at = datetime.now(UTC)
    started = time.perf_counter()
    rows: list[Row] = []
    cases: list[dict[str, Any]] = []
    crashed = False
    print(f"hephaestus bench: {args.mode} mode, {', '.join(selected)}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="hephaestus-bench-") as scratch:
        bench = Bench(workdir=Path(scratch), **bench_args)
        for name in selected:
            case = CASES[name]
            print(f"  {name}: {case.SUMMARY} ...", file=sys.stderr, flush=True)
            case_started = time.perf_counter()
            error = None
            profiler = cProfile.Profile() if args.profile else None
            try:
                if profiler is not None:
                    profiler.enable()
                try:
                    case_rows = case.run(bench)
                finally:
                    if profiler is not None:
                        profiler.disable()
            except Exception as exc:
                crashed = True
                error = f"{type(exc).__name__}: {exc}"
                traceback.print_exc()
                case_rows = [Row(name, "(case crashed)", skipped=error)]
            seconds = time.perf_counter() - case_started
            print(f"    done in {seconds:.1f}s", file=sys.stderr, flush=True)
            if profiler is not None:
                RESULTS.mkdir(parents=True, exist_ok=True)
                profiler.dump_stats(RESULTS / f"{name}.pstats")
            rows.extend(case_rows)
            cases.append(
                {
                    "name": name,
                    "summary": case.SUMMARY,
                    "baseline": case.BASELINE,
                    "seconds": seconds,
                    "error": error,
                }
            )
        _drop_databases(bench)
    total = time.perf_counter() - started
    print(render_table(rows))
    print()
    print("baselines (ratio = ours / baseline):")
    for entry in cases:
        print(f"  {entry['name']}: {entry['baseline']}")
    print(f"\n{args.mode} run: {total:.0f}s")
    report = {
        "schema": 1,
        "mode": args.mode,
        "started_at": started_at.isoformat(timespec="seconds"),
        "seconds": total,
        "environment": _environment(args.pg_url if "postgres" in bench_args["backends"] else None),
        "sizes": {key: getattr(bench.sizes, key) for key in bench.sizes.__slots__},
        "cases": cases,
        "rows": [row.to_json() for row in rows],
    }
    target = Path(args.json) if args.json else RESULTS / "latest.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_finite(report), indent=2, allow_nan=False, ensure_ascii=False)
    target.write_text(text + "\n", encoding="utf-8")
    print(f"results written to {target}")
    return 1 if crashed else 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmarks of Hephaestus, each against a baseline measured in the same run.",
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--full", dest="mode", action="store_const", const="full", help="full sizes (default)"
    )
    size.add_argument(
        "--quick", dest="mode", action="store_const", const="quick", help="smaller: about a minute"
    )
    size.add_argument(
        "--tiny",
        dest="mode",
        action="store_const",
        const="tiny",
        help="seconds; checks the harness works, its figures mean nothing",
    )
    parser.set_defaults(mode="full")
    parser.add_argument(
        "--case",
        action="append",
        choices=list(CASES),
        metavar="NAME",
        help=f"run only this case (repeatable): {', '.join(CASES)}",
    )
    parser.add_argument(
        "--backend",
        action="append",
        choices=("sqlite", "postgres"),
        help="run the durable cases only on this backend (repeatable; default both)",
    )
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("HEPHAESTUS_BENCH_PG_URL", DEFAULT_PG_URL),
        help="a PostgreSQL server the bench may create databases on "
        "(default $HEPHAESTUS_BENCH_PG_URL or the local server)",
    )
    parser.add_argument("--json", metavar="FILE", help="where to write the results as JSON")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="profile each case in this process with cProfile into bench/results/NAME.pstats",
    )
    assert set(MODES) == {"tiny", "quick", "full"}
    return parser


# --- output ------------------------------------------------------------------------------

_COLUMNS = ("case", "metric", "ours", "baseline", "ratio", "target", "met?")


def render_table(rows: list[Row]) -> str:
    """The rows as an aligned plain-text table; a skipped row says why instead of figures."""
    lines: list[tuple[str, ...]] = [_COLUMNS]
    for row in rows:
        metric = f"{row.metric} [{row.unit}]" if row.unit else row.metric
        if row.skipped is not None:
            lines.append((row.case, metric, f"skipped: {row.skipped}", "", "", "", ""))
            continue
        ratio = row.ratio
        lines.append(
            (
                row.case,
                metric,
                format_number(row.ours),
                format_number(row.baseline),
                "-" if ratio is None else f"{format_number(ratio)}x",
                "" if row.target is None else row.target.describe(row.unit),
                {True: "yes", False: "NO", None: ""}[row.met],
            )
        )
    # A skip reason may be long: it takes the room of the figure columns, not their width.
    widths = [
        max(len(line[i]) for line in lines if i < 2 or not line[2].startswith("skipped: "))
        for i in range(len(_COLUMNS))
    ]
    out = []
    for index, line in enumerate(lines):
        if line[2].startswith("skipped: "):
            out.append(f"{line[0]:<{widths[0]}}  {line[1]:<{widths[1]}}  {line[2]}")
        else:
            cells = [
                f"{cell:<{widths[i]}}" if i < 2 or i >= 5 else f"{cell:>{widths[i]}}"
                for i, cell in enumerate(line)
            ]
            out.append("  ".join(cells).rstrip())
        if index == 0:
            out.append("  ".join("-" * width for width in widths))
    return "\n".join(out)


def format_number(value: float | None) -> str:
    """Three or so significant figures; thousands separated."""
    if value is None:
        return "-"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1 or magnitude == 0:
        return f"{value:.2f}"
    return f"{value:.3g}"


def _finite(value: Any) -> Any:
    """`value` with every NaN or infinity replaced by `None`, which JSON can hold."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def _environment(pg_url: str | None) -> dict[str, Any]:
    def installed(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    postgres = None
    if pg_url is not None and _postgres.server_problem(pg_url) is None:
        import psycopg

        with psycopg.connect(pg_url, connect_timeout=3) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            postgres = None if row is None else str(row[0])
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "system": platform.system(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "sqlite": sqlite3.sqlite_version,
        "postgres": postgres,
        "hephaestus": installed("hephaestus-workflows"),
        "dbos": installed("dbos"),
        "psycopg": installed("psycopg"),
    }


def _drop_databases(bench: Bench) -> None:
    if "postgres" in bench.backends and _postgres.server_problem(bench.pg_url) is None:
        for database in (BENCH_DATABASE, DBOS_DATABASE):
            _postgres.drop_database(bench.pg_url, database)


if __name__ == "__main__":
    sys.exit(main())
