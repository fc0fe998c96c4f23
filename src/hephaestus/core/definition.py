"""Workflow classes and the frozen definition built from them.

A workflow is declared as a class: `start`, `transitions` and `@route`
methods describe the graph. When the class is created, `__init_subclass__`
checks every rule (see `validation`) and attaches a frozen
`WorkflowDefinition`, the value the engine runs. A broken graph fails at
import, not in production.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeAlias

from hephaestus.core.context import Context, to_json_value
from hephaestus.core.keys import Unique
from hephaestus.core.step import Step
from hephaestus.errors import (
    ContextSerializationError,
    InvalidMetadataError,
    InvalidRouteError,
    InvalidTransitionError,
    InvalidUniqueError,
    InvalidVersionsError,
    VersionConflictError,
    VersionOptionsError,
    WorkflowDefinitionError,
)

__all__ = [
    "BaseWorkflow",
    "Route",
    "RouteSpec",
    "StepNode",
    "WorkflowDefinition",
    "check_metadata",
    "load_workflow",
    "resolve_version",
    "route",
    "start_spec",
    "umbrella_of",
    "unique_of",
    "workflow_name",
]

StepConfig: TypeAlias = Mapping[str, Any] | None
TargetSpec: TypeAlias = "type[Step] | tuple[type[Step], Mapping[str, Any]]"


@dataclass(frozen=True, slots=True)
class StepNode:
    """One step of a workflow: its class, its config in this workflow, its events."""

    key: str
    step: type[Step]
    config: StepConfig
    events: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.step.__name__


@dataclass(frozen=True, slots=True)
class RouteSpec:
    """A dynamic route: after `step` emits `event`, `choose(context)` picks one of `targets`."""

    step: str
    event: str
    choose: Callable[[Context], Any]
    targets: tuple[str, ...]
    function_name: str


@dataclass(frozen=True, slots=True)
class WorkflowDefinition:
    """The validated graph of a workflow class, keyed by step key. Immutable."""

    name: str
    version: int
    #: `None` for a version class that leaves its business key to its umbrella.
    unique: Unique | None
    start: str
    nodes: Mapping[str, StepNode]
    #: Static transitions: `(step, event) -> targets`; more than one target is a fan-out.
    edges: Mapping[tuple[str, str], tuple[str, ...]]
    routes: Mapping[tuple[str, str], RouteSpec]
    successors: Mapping[str, tuple[str, ...]]
    predecessors: Mapping[str, frozenset[str]]
    descendants: Mapping[str, frozenset[str]]
    #: Steps with more than one predecessor: they wait for every live branch.
    joins: frozenset[str]
    order: tuple[str, ...]
    tags: tuple[str, ...] = ()
    #: The class's `metadata`: a dict with str keys and JSON values.
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def node(self, key: str) -> StepNode:
        return self.nodes[key]

    def key_of(self, step: type[Step]) -> str | None:
        """The key of `step` in this workflow, or `None` if the step is not part of it."""
        node = self.nodes.get(step.key)
        return node.key if node is not None and node.step is step else None


class Route:
    """What `@route` leaves in the class body until the workflow class collects it."""

    def __init__(
        self,
        step: type[Step],
        event: str,
        targets: Sequence[Any],
        choose: Callable[[Context], Any],
    ) -> None:
        self.step = step
        self.event = event
        self.targets = targets
        self.choose = choose

    def __call__(self, context: Context) -> Any:
        return self.choose(context)


def route(
    step: type[Step], event: str, *, targets: Sequence[Any]
) -> Callable[[Callable[[Context], Any]], Route]:
    """Decorate `fn(context) -> StepClass` to choose the target of `(step, event)` at run time.

    Every step the function may return must be listed in `targets`; returning
    another one fails the instance with `InvalidTargetError`.
    """

    def decorate(choose: Callable[[Context], Any]) -> Route:
        return Route(step, event, targets, choose)

    return decorate


_REGISTRY: dict[str, type[BaseWorkflow]] = {}


def workflow_name(cls: type) -> str:
    """The import path stored in instances: `package.module.ClassName`."""
    return f"{cls.__module__}.{cls.__qualname__}"


def load_workflow(name: str) -> type[BaseWorkflow]:
    """The workflow class stored as `name`, among those defined in this process.

    Never imports anything: a stored name comes from data (a row any writer of
    the storage may have crafted), so it may only pick one of the workflow
    classes the application already defined by importing its own modules.
    """
    cls = _REGISTRY.get(name) if isinstance(name, str) else None
    if cls is None:
        raise WorkflowDefinitionError(
            f"workflow {name!r} is not registered in this process: import the module that "
            "defines it (or pass --import MODULE to the hephaestus CLI)"
        )
    return cls


def start_spec(cls: type) -> Any:
    """What the class declared as `start` (a step or `(step, config)`), or `None`."""
    # Static: on the public `Workflow`, `cls.start` is the `start(...)` facade.
    return inspect.getattr_static(cls, "start", None)


class BaseWorkflow:
    """The definition part of a workflow class (the public `Workflow` adds the facade).

    Concrete workflows set `unique`, `start` and `transitions` (and optionally
    `version`, `tags`, `metadata`, `@route` methods). Umbrella workflows set
    `unique`, `versions` and `current` (and optionally `metadata`,
    `version_for`); their version classes may leave `unique` to the umbrella.
    A class with neither is an abstract base, useful for sharing `unique` or
    `tags`.
    """

    unique: ClassVar[Unique | None] = None
    version: ClassVar[int] = 1
    tags: ClassVar[tuple[str, ...]] = ()
    metadata: ClassVar[Mapping[str, Any]] = {}
    # Not a ClassVar: type checkers then let a metaclass property of the same
    # name (the public `Workflow`'s `start(...)` facade) win on class access.
    start: Any = None
    transitions: ClassVar[Mapping[Any, Any]] = {}
    versions: ClassVar[Mapping[int, type[BaseWorkflow]]] = {}
    current: ClassVar[int | None] = None

    #: Set on concrete workflows when the class is created.
    __definition__: ClassVar[WorkflowDefinition | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.__definition__ = None
        routes = _routes_of(cls)
        if cls.versions:
            if any("version" in vars(base) for base in cls.__mro__ if base not in _BASES):
                raise VersionConflictError(
                    f"workflow {cls.__qualname__} cannot use both `version` and `versions`: "
                    "an umbrella lists its versions, and each version class declares its own "
                    "`version`"
                )
            _check_umbrella(cls)
        elif start_spec(cls) is not None or cls.transitions or routes:
            # Imported here: validation builds the definition and imports this module.
            from hephaestus.core.validation import build_definition

            cls.__definition__ = build_definition(cls, routes)
        else:
            return
        _REGISTRY[workflow_name(cls)] = cls

    @classmethod
    def is_umbrella(cls) -> bool:
        return bool(cls.versions)

    @classmethod
    def definition(cls) -> WorkflowDefinition:
        """The validated definition of this concrete workflow."""
        if cls.__definition__ is None:
            kind = "an umbrella" if cls.is_umbrella() else "an abstract base"
            raise WorkflowDefinitionError(
                f"workflow {cls.__qualname__} is {kind}, not a concrete workflow: "
                "resolve a version with resolve_version() or define start and transitions"
            )
        return cls.__definition__

    @classmethod
    def version_for(
        cls, versions: Mapping[int, type[BaseWorkflow]], opts: Mapping[str, Any]
    ) -> int | None:
        """Which version a new instance of an umbrella starts on; override to roll out gradually.

        `opts` holds the new instance's `id` and the extra keyword options the
        caller passed to `start_instance` or `Flow.start` (a tenant, an actor,
        a flag). Returning `None` starts the instance on `current`.
        """
        return cls.current


#: The library's own bases: what they declare is a default, not a user's declaration.
_BASES: frozenset[type] = frozenset({BaseWorkflow, object})

#: Each concrete version class, to the umbrella that lists it.
_UMBRELLAS: dict[type[BaseWorkflow], type[BaseWorkflow]] = {}


def umbrella_of(workflow: type[BaseWorkflow]) -> type[BaseWorkflow] | None:
    """The umbrella workflow whose `versions` list `workflow`, or `None`."""
    return _UMBRELLAS.get(workflow)


def unique_of(workflow: type[BaseWorkflow]) -> Unique | None:
    """`workflow`'s business key: its own `unique`, else its umbrella's."""
    if workflow.unique is not None:
        return workflow.unique
    umbrella = umbrella_of(workflow)
    return umbrella.unique if umbrella is not None else None


def check_metadata(cls: type[BaseWorkflow]) -> Mapping[str, Any]:
    """`cls.metadata` as JSON: a dict with str keys; raises `InvalidMetadataError`."""
    metadata = cls.metadata
    if not isinstance(metadata, Mapping):
        raise InvalidMetadataError(
            f"workflow {cls.__qualname__}: metadata must be a dict with str keys, got "
            f"{type(metadata).__name__}"
        )
    try:
        value: Mapping[str, Any] = to_json_value(
            dict(metadata), what=f"metadata of workflow {cls.__qualname__}"
        )
    except ContextSerializationError as exc:
        raise InvalidMetadataError(str(exc)) from exc
    return value


def _routes_of(cls: type) -> list[Route]:
    found: dict[str, Route] = {}
    for base in reversed(cls.__mro__):
        for name, value in vars(base).items():
            if isinstance(value, Route):
                found[name] = value
    return list(found.values())


def _check_umbrella(cls: type[BaseWorkflow]) -> None:
    name = cls.__qualname__
    if not isinstance(cls.unique, Unique):
        raise InvalidUniqueError(
            f"umbrella workflow {name} must declare unique = Unique(key=..., scope=...)"
        )
    if start_spec(cls) is not None or cls.transitions:
        raise InvalidVersionsError(
            f"umbrella workflow {name} declares versions and also start/transitions: "
            "put the graph in the version classes"
        )
    versions = cls.versions
    if not isinstance(versions, Mapping) or not versions:
        raise InvalidVersionsError(f"umbrella workflow {name}: versions must be a non-empty dict")
    for number, version_cls in versions.items():
        if not isinstance(number, int) or isinstance(number, bool) or number < 1:
            raise InvalidVersionsError(
                f"umbrella workflow {name}: version numbers must be ints >= 1, got {number!r}"
            )
        if not (isinstance(version_cls, type) and issubclass(version_cls, BaseWorkflow)):
            raise InvalidVersionsError(
                f"umbrella workflow {name}: versions[{number}] must be a workflow class, "
                f"got {version_cls!r}"
            )
        if version_cls.__definition__ is None:
            raise InvalidVersionsError(
                f"umbrella workflow {name}: versions[{number}] = {version_cls.__qualname__} "
                "is not a concrete workflow (it needs start and transitions)"
            )
        if version_cls.version != number:
            raise InvalidVersionsError(
                f"umbrella workflow {name}: versions[{number}] = {version_cls.__qualname__} "
                f"declares version = {version_cls.version}; make them match"
            )
    if isinstance(cls.current, bool) or cls.current not in versions:
        raise InvalidVersionsError(
            f"umbrella workflow {name}: current = {cls.current!r} is not one of the versions "
            f"{sorted(versions)}"
        )
    for number, version_cls in versions.items():
        if version_cls.unique is not None and version_cls.unique != cls.unique:
            raise InvalidUniqueError(
                f"umbrella workflow {name}: versions[{number}] = {version_cls.__qualname__} "
                f"declares unique = {version_cls.unique!r}, but the umbrella's is "
                f"{cls.unique!r}; remove it from the version (the umbrella's applies) or "
                "make them match"
            )
    check_metadata(cls)
    for version_cls in versions.values():
        _UMBRELLAS.setdefault(version_cls, cls)


def resolve_version(
    workflow: type[BaseWorkflow],
    version: int | None = None,
    opts: Mapping[str, Any] | None = None,
    *,
    options: Mapping[str, Any] | None = None,
) -> type[BaseWorkflow]:
    """The concrete class a new instance runs.

    An explicit `version` wins, then the umbrella's `version_for` (given
    `opts` and the caller's extra `options`), then `current` (also when
    `version_for` returns `None`).

    For a concrete workflow, `version` (if given) must match its own, and it
    needs a `unique` of its own or an umbrella that lists it. Extra `options`
    are only for an umbrella that overrides `version_for` and no explicit
    `version`: anywhere else they would be ignored, so they raise
    `VersionOptionsError`.
    """
    name = workflow.__qualname__
    if options:
        listed = ", ".join(sorted(options))
        if not workflow.is_umbrella():
            raise VersionOptionsError(
                f"workflow {name} got option(s) {listed}, which only an umbrella workflow's "
                "version_for takes; it is not an umbrella, so remove them"
            )
        if version is not None:
            raise VersionOptionsError(
                f"workflow {name} got option(s) {listed} and version={version!r}: the explicit "
                "version is used and version_for is not called, so pass one or the other"
            )
        if getattr(workflow.version_for, "__func__", None) is _DEFAULT_VERSION_FOR:
            raise VersionOptionsError(
                f"workflow {name} got option(s) {listed}, but it does not override "
                "version_for, so nothing would read them; override version_for(cls, "
                "versions, opts) or remove them"
            )
    if not workflow.is_umbrella():
        definition = workflow.definition()
        if version is not None and version != definition.version:
            raise InvalidVersionsError(
                f"workflow {name} has version {definition.version}, "
                f"not {version}; versions are chosen through an umbrella workflow"
            )
        if unique_of(workflow) is None:
            raise InvalidUniqueError(
                f"workflow {name} has no `unique` and no umbrella workflow lists it in its "
                "`versions`, so it cannot be started: declare unique = Unique(key=...) or "
                "start it through its umbrella"
            )
        return workflow
    chosen = version
    if chosen is None:
        chosen = workflow.version_for(workflow.versions, {**(opts or {}), **(options or {})})
        if chosen is None:
            chosen = workflow.current
    if chosen is None or chosen not in workflow.versions:
        raise InvalidVersionsError(
            f"workflow {workflow.__qualname__} has no version {chosen!r}; "
            f"known versions: {sorted(workflow.versions)}"
        )
    return workflow.versions[chosen]


def parse_target(
    raw: Any, where: str, error: type[WorkflowDefinitionError]
) -> tuple[type[Step], StepConfig]:
    """`Step` or `(Step, config)` -> `(Step, config)`; raises `error` naming `where`."""
    if isinstance(raw, type) and issubclass(raw, Step):
        return raw, None
    if (
        isinstance(raw, tuple)
        and len(raw) == 2
        and isinstance(raw[0], type)
        and issubclass(raw[0], Step)
        and isinstance(raw[1], Mapping)
    ):
        # Configs are stored in every instance, so they must round-trip through JSON exactly.
        try:
            config = to_json_value(dict(raw[1]), what=f"the config of {raw[0].__name__}")
        except ContextSerializationError as exc:
            raise error(f"{where}: {exc}") from exc
        return raw[0], config
    raise error(f"{where}: expected a Step class or a (Step, config dict) pair, got {raw!r}")


def check_route_shape(found: Route, where: str) -> None:
    if not (isinstance(found.step, type) and issubclass(found.step, Step)):
        raise InvalidRouteError(
            f"{where}: the route's step must be a Step class, got {found.step!r}"
        )
    if not isinstance(found.event, str):
        raise InvalidRouteError(f"{where}: the route's event must be a str, got {found.event!r}")
    if (
        isinstance(found.targets, str | bytes)
        or not isinstance(found.targets, Sequence)
        or not found.targets
    ):
        raise InvalidRouteError(
            f"{where}: declare every step the route may return, e.g. targets=[FastTrack, Standard]"
        )


def check_transition_key(raw: Any, workflow: str) -> tuple[type[Step], str]:
    if (
        isinstance(raw, tuple)
        and len(raw) == 2
        and isinstance(raw[0], type)
        and issubclass(raw[0], Step)
        and isinstance(raw[1], str)
    ):
        return raw[0], raw[1]
    raise InvalidTransitionError(
        f"workflow {workflow}: transition key {raw!r} must be a (StepClass, 'event') pair"
    )


_DEFAULT_VERSION_FOR = BaseWorkflow.version_for.__func__  # type: ignore[attr-defined]
