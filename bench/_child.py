"""Measurements that run in a process of their own, and how the parent runs them.

Two kinds of measurement need a fresh interpreter: memory (the RSS of a
process that ran other cases first says little) and DBOS (a process-wide
singleton with its own threads, set up once per database). The parent runs
`python -m bench._child NAME` with the arguments as JSON on stdin; the child
prints its result as one JSON line after a marker.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = ["ChildFailed", "run_child"]

_MARKER = "BENCH-RESULT "

#: What a child may run: name -> (module, function); each takes a dict and returns one.
_CHILDREN = {
    "dbos": ("bench.cases._dbos_flows", "measure"),
    "dbos-payload": ("bench.cases._dbos_flows", "measure_payload"),
    "dbos-queues": ("bench.cases._dbos_queues", "measure"),
    "parked": ("bench.cases.parked_scale", "measure_parked"),
    "dicts": ("bench.cases.parked_scale", "measure_dicts"),
}


class ChildFailed(Exception):
    """A child process did not produce a result; the message says why."""


def run_child(
    name: str, args: dict[str, Any], *, timeout: float, env: dict[str, str]
) -> dict[str, Any]:
    """Run child `name` with `args` in a new interpreter; its result, or `ChildFailed`."""
    root = Path(__file__).resolve().parent.parent
    try:
        done = subprocess.run(
            [sys.executable, "-m", "bench._child", name],
            input=json.dumps(args),
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd=root,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ChildFailed(f"{name} did not finish within {timeout:.0f}s") from exc
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(_MARKER):
            result: dict[str, Any] = json.loads(line[len(_MARKER) :])
            if "error" in result:
                raise ChildFailed(str(result["error"]))
            return result
    tail = [line for line in done.stderr.strip().splitlines() if line.strip()][-3:]
    raise ChildFailed(f"{name} exited with {done.returncode}: {' | '.join(tail) or 'no output'}")


def _main() -> None:
    name = sys.argv[1]
    module_name, function_name = _CHILDREN[name]
    args = json.loads(sys.stdin.read() or "{}")
    function = getattr(importlib.import_module(module_name), function_name)
    result = function(args)
    print(_MARKER + json.dumps(result), flush=True)


if __name__ == "__main__":
    _main()
