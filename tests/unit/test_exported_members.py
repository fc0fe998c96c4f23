"""The public surface: what `import hephaestus` offers, and what the pure core may not do."""

from __future__ import annotations

import ast
import inspect
import re
import types
import typing
from pathlib import Path

import pytest

import hephaestus
import hephaestus.core
import hephaestus.errors
from hephaestus.errors import HephaestusError, WorkflowDefinitionError

PUBLIC_NAMES = [
    "AlreadyRunningError",
    "AmbiguousEventError",
    "Async",
    "ConcurrencyError",
    "Context",
    "ContextSerializationError",
    "CorruptInstanceError",
    "CycleError",
    "Debug",
    "Done",
    "DuplicateStepKeyError",
    "Error",
    "EventNotDeclaredError",
    "ExecutionEntry",
    "Hephaestus",
    "HephaestusError",
    "Instance",
    "InstanceNotFailedError",
    "InstanceNotFoundError",
    "InstanceNotWaitingError",
    "InvalidBusinessKeyError",
    "InvalidDelayError",
    "InvalidEventError",
    "InvalidMetadataError",
    "InvalidRouteError",
    "InvalidStartError",
    "InvalidStepError",
    "InvalidTargetError",
    "InvalidTransitionError",
    "InvalidUniqueError",
    "InvalidVersionsError",
    "LeafNotDoneError",
    "LocalRunner",
    "MemoryStorage",
    "MissingTransitionError",
    "NothingToRetryError",
    "Ok",
    "Outcome",
    "OwnershipError",
    "Retry",
    "RetryError",
    "RetryStepMissingError",
    "RuntimeNotFoundError",
    "SQLiteStorage",
    "Status",
    "Step",
    "StorageError",
    "TimerNotFoundError",
    "Trigger",
    "UnconvergedFanOutError",
    "UndeclaredEventError",
    "Unique",
    "UnreachableStepError",
    "VersionConflictError",
    "VersionOptionsError",
    "Wait",
    "WaitForEvent",
    "WaitTimeoutError",
    "Workflow",
    "WorkflowDefinitionError",
    "route",
]

#: One subclass of `WorkflowDefinitionError` per definition rule.
DEFINITION_ERRORS = {
    "CycleError",
    "DuplicateStepKeyError",
    "EventNotDeclaredError",
    "InvalidMetadataError",
    "InvalidRouteError",
    "InvalidStartError",
    "InvalidStepError",
    "InvalidTransitionError",
    "InvalidUniqueError",
    "InvalidVersionsError",
    "LeafNotDoneError",
    "MissingTransitionError",
    "UnconvergedFanOutError",
    "UnreachableStepError",
    "VersionConflictError",
    "VersionOptionsError",
}


def test_all_is_the_exact_sorted_public_surface() -> None:
    assert hephaestus.__all__ == PUBLIC_NAMES
    assert sorted(hephaestus.__all__) == hephaestus.__all__


def test_the_documented_imports_work() -> None:
    from hephaestus import (  # noqa: F401
        Async,
        Context,
        Debug,
        Done,
        Error,
        ExecutionEntry,
        Hephaestus,
        Instance,
        LocalRunner,
        MemoryStorage,
        Ok,
        Retry,
        SQLiteStorage,
        Status,
        Step,
        Unique,
        Wait,
        WaitForEvent,
        Workflow,
        route,
    )


def test_every_public_name_is_importable() -> None:
    namespace: dict[str, object] = {}
    exec("from hephaestus import *", namespace)
    for name in hephaestus.__all__:
        assert getattr(hephaestus, name) is namespace[name], name


def test_public_names_are_defined_under_hephaestus() -> None:
    for name in hephaestus.__all__:
        member = getattr(hephaestus, name)
        # A type alias such as `Outcome` is a union of members defined here (and `str`).
        parts = typing.get_args(member) if isinstance(member, types.UnionType) else (member,)
        for part in parts:
            if part is not str:
                assert part.__module__.startswith("hephaestus."), (name, part.__module__)


def test_outcome_names_what_a_step_may_return() -> None:
    assert set(typing.get_args(hephaestus.Outcome)) == {
        hephaestus.Ok,
        hephaestus.Async,
        hephaestus.Error,
        str,
    }


#: `hephaestus.a._b` or `hephaestus._b`: a module the docs must not send users to.
PRIVATE_MODULE = re.compile(r"\bhephaestus(?:\.\w+)*\._\w+")


def test_docs_name_no_private_module() -> None:
    root = Path(__file__).resolve().parents[2]
    pages = [root / "README.md", *sorted((root / "docs").rglob("*.md"))]
    pages += sorted((root / "docs").rglob("*.py"))
    assert len(pages) > 3
    found = [
        f"{page.relative_to(root)}: {match.group()}"
        for page in pages
        for match in PRIVATE_MODULE.finditer(page.read_text(encoding="utf-8"))
    ]
    assert found == []


def test_storage_from_url_is_public(tmp_path: Path) -> None:
    from hephaestus.storage import SQLiteStorage, storage_from_url

    assert isinstance(storage_from_url(f"sqlite:///{tmp_path / 'x.db'}"), SQLiteStorage)
    with pytest.raises(hephaestus.StorageError, match="redis"):
        storage_from_url("redis://localhost/0")


def test_version_is_a_string() -> None:
    assert isinstance(hephaestus.__version__, str)
    assert hephaestus.__version__.count(".") >= 1


@pytest.mark.parametrize("name", hephaestus.errors.__all__)
def test_every_error_is_public(name: str) -> None:
    error = getattr(hephaestus.errors, name)
    assert inspect.isclass(error)
    assert issubclass(error, HephaestusError)
    assert getattr(hephaestus, name) is error
    assert name in hephaestus.__all__


def test_errors_all_lists_every_error_class() -> None:
    defined = {
        name
        for name, value in vars(hephaestus.errors).items()
        if inspect.isclass(value) and issubclass(value, BaseException)
    }
    assert defined == set(hephaestus.errors.__all__)
    assert sorted(hephaestus.errors.__all__) == hephaestus.errors.__all__


def test_definition_errors() -> None:
    subclasses = {
        name
        for name in hephaestus.errors.__all__
        if issubclass(getattr(hephaestus.errors, name), WorkflowDefinitionError)
        and name != "WorkflowDefinitionError"
    }
    assert subclasses == DEFINITION_ERRORS
    for name in DEFINITION_ERRORS:
        assert issubclass(getattr(hephaestus, name), hephaestus.WorkflowDefinitionError)


def test_errors_default_to_a_helpful_message() -> None:
    for name in hephaestus.errors.__all__:
        error = getattr(hephaestus.errors, name)
        message = str(error())
        assert message, name
        assert message != name, name
    assert str(hephaestus.CycleError("workflow Flow has a cycle: A -> A")).endswith("A -> A")


def test_error_tree_in_the_docstring_names_every_error() -> None:
    doc = hephaestus.errors.__doc__ or ""
    for name in hephaestus.errors.__all__:
        assert name in doc, name


def test_package_is_typed() -> None:
    assert (Path(hephaestus.__file__).parent / "py.typed").is_file()


# -- the pure core ------------------------------------------------------------------------

CORE = Path(hephaestus.core.__file__).parent

#: Modules that read clocks or randomness, do I/O, or run threads, processes or event loops.
FORBIDDEN_MODULES = {
    "asyncio",
    "concurrent",
    "io",
    "multiprocessing",
    "os",
    "pathlib",
    "random",
    "secrets",
    "selectors",
    "shutil",
    "socket",
    "sqlite3",
    "subprocess",
    "tempfile",
    "threading",
    "time",
    "urllib",
    "uuid",
}
#: `datetime.now()`, `date.today()` and friends read the clock.
FORBIDDEN_ATTRIBUTES = {"now", "utcnow", "today", "fromtimestamp", "utcfromtimestamp"}
FORBIDDEN_CALLS = {"open", "print", "input"}
#: The core is wrapped by the shell; it never reaches out to it.
SHELL_PACKAGES = ("hephaestus.app", "hephaestus.runners", "hephaestus.storage", "hephaestus.cli")


def core_files() -> list[Path]:
    return sorted(CORE.rglob("*.py"))


def impurities(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        modules: list[str] = []
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules = [node.module]
        for module in modules:
            if module.split(".")[0] in FORBIDDEN_MODULES or module.startswith(SHELL_PACKAGES):
                found.append((node.lineno, f"{path.name}:{node.lineno} imports {module}"))
        if isinstance(node, ast.Attribute) and node.attr in FORBIDDEN_ATTRIBUTES:
            found.append((node.lineno, f"{path.name}:{node.lineno} uses .{node.attr}"))
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in FORBIDDEN_CALLS
        ):
            found.append((node.lineno, f"{path.name}:{node.lineno} calls {node.func.id}()"))
    return [message for _, message in sorted(found)]


def test_core_has_modules_to_check() -> None:
    names = {path.name for path in core_files()}
    assert {"definition.py", "validation.py", "instance.py", "engine.py"} <= names


@pytest.mark.parametrize("path", core_files(), ids=lambda path: path.name)
def test_core_reads_no_clock_and_does_no_io(path: Path) -> None:
    assert impurities(path) == []


def test_the_purity_check_catches_impurities(tmp_path: Path) -> None:
    sample = tmp_path / "impure.py"
    sample.write_text(
        "import asyncio\n"
        "from time import monotonic\n"
        "from datetime import datetime\n"
        "from hephaestus.storage.memory import MemoryStorage\n"
        "stamp = datetime.now()\n"
        "handle = open('x')\n",
        encoding="utf-8",
    )
    assert impurities(sample) == [
        "impure.py:1 imports asyncio",
        "impure.py:2 imports time",
        "impure.py:4 imports hephaestus.storage.memory",
        "impure.py:5 uses .now",
        "impure.py:6 calls open()",
    ]
