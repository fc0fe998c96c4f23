"""Finding the user's workflow classes: `MODULE:Class` targets and `--import` modules.

Workflow classes are validated when their module is imported, so importing
is validating. The current directory goes on `sys.path` first, as with
`python -m`, so `hephaestus validate flows:OrderFlow` finds `./flows.py`.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
import traceback
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from hephaestus.core.definition import (
    BaseWorkflow,
    WorkflowDefinition,
    load_workflow,
    workflow_name,
)
from hephaestus.core.instance import Instance
from hephaestus.core.step import Step
from hephaestus.errors import WorkflowDefinitionError
from hephaestus.runners._shell import DefinitionCache

__all__ = [
    "CliError",
    "Target",
    "describe_error",
    "import_modules",
    "instance_definition",
    "load_targets",
    "one_line",
]

_PACKAGE_DIR = str(Path(__file__).resolve().parent.parent)

#: Workflows that ship with Hephaestus, by stored name -> the module (ours) that defines them.
_BUILTIN_WORKFLOWS = {"hephaestus.demo.DemoOrder": "hephaestus.demo"}


class CliError(Exception):
    """Bad input the CLI found itself; its message is shown as it is."""


@dataclass(frozen=True, slots=True)
class Target:
    """A workflow class named on the command line, and how it was named."""

    spec: str
    workflow: type[BaseWorkflow]


def ensure_cwd_on_path() -> None:
    """Put the current directory first on `sys.path`, as `python -m` does."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)


def import_modules(names: Iterable[str]) -> None:
    """Import each of `names` (the `--import` option), so their workflows are registered.

    The current directory goes first on `sys.path`, as with `python -m`.
    """
    ensure_cwd_on_path()
    for name in names:
        _import(name, name)


def load_targets(spec: str) -> list[Target]:
    """The workflow classes `spec` names: `module:Class` (one) or `module` (all it defines)."""
    module_name, colon, qualname = spec.strip().partition(":")
    if module_name.endswith(".py"):
        dotted = module_name[:-3].replace("\\", ".").replace("/", ".").strip(".")
        raise CliError(
            f"{spec!r} names a file: write its module path instead, "
            f"e.g. {dotted}:{qualname or 'OrderFlow'}"
        )
    if not module_name or (colon and not qualname) or "/" in module_name:
        raise CliError(
            f"{spec!r} is not a workflow target: write MODULE:Class with a dotted module path, "
            "e.g. myapp.flows:OrderFlow"
        )
    module = _import(module_name, spec)
    if not qualname:
        found = [
            Target(f"{module_name}:{cls.__qualname__}", cls)
            for cls in _workflows_defined_in(module)
        ]
        if not found:
            raise CliError(f"module {module_name} defines no workflow classes")
        return found
    obj: Any = module
    for part in qualname.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise CliError(f"module {module_name} has no attribute {qualname!r}") from None
    if not (isinstance(obj, type) and issubclass(obj, BaseWorkflow)):
        if isinstance(obj, type) and issubclass(obj, Step):
            kind = f"the step class {obj.__qualname__}"
        elif isinstance(obj, type):
            kind = f"the class {obj.__qualname__}"
        else:
            kind = f"a {type(obj).__name__}"
        raise CliError(f"{spec} is not a workflow class (it is {kind})")
    if obj.__definition__ is None and not obj.is_umbrella():
        raise CliError(
            f"{spec} is an abstract workflow base: it declares no start and transitions "
            "(nor versions), so there is no graph to check"
        )
    return [Target(f"{module_name}:{qualname}", obj)]


def instance_definition(instance: Instance) -> WorkflowDefinition:
    """The definition `instance` runs on; a one-line `CliError` hint when it is not known.

    Only workflows already defined in this process count: the modules named on
    the command line (`MODULE:Class`, `--import MODULE`) and Hephaestus's own
    demo. The name stored in the instance is data, so it never chooses a module
    to import.
    """
    name = instance.workflow
    builtin = _BUILTIN_WORKFLOWS.get(name)
    if builtin is not None:
        importlib.import_module(builtin)
    try:
        load_workflow(name)
    except WorkflowDefinitionError as exc:
        module = name.rpartition(".")[0] or name
        raise CliError(
            f"workflow {name} of instance {instance.id} is not known: pass --import MODULE "
            f"with the module that defines it (e.g. --import {module}); a name read from "
            "storage is never imported"
        ) from exc
    try:
        return DefinitionCache().get(instance)
    except WorkflowDefinitionError as exc:
        raise CliError(f"instance {instance.id}: {describe_error(exc)}") from exc


def describe_error(exc: BaseException) -> str:
    """One line for `exc`: the message of a `CliError`, else `ClassName: message`."""
    if isinstance(exc, CliError):
        return one_line(str(exc))
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return one_line(text)


def one_line(text: str) -> str:
    """`text` with every run of whitespace (newlines too) turned into one space."""
    return " ".join(text.split())


def _import(module_name: str, spec: str) -> ModuleType:
    ensure_cwd_on_path()
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if module_name == missing or module_name.startswith(f"{missing}."):
            raise CliError(
                f"cannot import module {module_name!r}: no module named {missing!r} "
                "(run from the directory that holds it, or add it to PYTHONPATH)"
            ) from exc
        raise CliError(f"importing {module_name} failed: {_with_location(exc)}") from exc
    except Exception as exc:
        # A workflow that breaks a rule raises here, at import: report it with its place.
        raise CliError(f"{spec}: {_with_location(exc)}") from exc


def _with_location(exc: BaseException) -> str:
    """`ClassName: message (file:line)`, the line being the last one in user code."""
    text = describe_error(exc)
    frames = [
        frame
        for frame in traceback.extract_tb(exc.__traceback__)
        if not frame.filename.startswith(("<", _PACKAGE_DIR))
        and "importlib" not in Path(frame.filename).parts
    ]
    if not frames:
        return text
    frame = frames[-1]
    path = Path(frame.filename)
    try:
        shown = str(path.relative_to(Path.cwd()))
    except ValueError:
        shown = str(path)
    return f"{text} ({shown}:{frame.lineno})"


def _workflows_defined_in(module: ModuleType) -> list[type[BaseWorkflow]]:
    found = []
    for _, obj in inspect.getmembers(module, inspect.isclass):
        if (
            issubclass(obj, BaseWorkflow)
            and obj.__module__ == module.__name__
            and (obj.__definition__ is not None or obj.is_umbrella())
        ):
            found.append(obj)
    return sorted(found, key=workflow_name)
