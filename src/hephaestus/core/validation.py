"""The definition-time rules: a workflow class that breaks one fails at import.

Each rule raises its own `WorkflowDefinitionError` subclass with a message
naming the workflow, the steps and the events at fault, and how to fix it.
The rules, in the order they are checked:

1. `unique`, if declared, is a `Unique(key, scope)`; `version` is an int >= 1;
   `metadata` is a dict with str keys and JSON values.
2. `start` is a step, or a `(step, config)` pair.
3. Transition keys are `(Step, "event")`; targets are steps, `(step, config)`
   pairs or non-empty lists of them; a step has one config per workflow.
4. Dynamic routes declare their targets and do not clash with a static transition.
5. No two steps share a context key.
6. Every event used in a transition is declared by its step.
7. A terminal step (`Done`) has no transitions.
8. The graph is acyclic.
9. Every step is reachable from `start`.
10. Every path ends at `Done`: a step with no transitions is an error.
11. Every declared event has a transition (`Done`'s own event excepted).
12. Parallel branches of a fan-out meet at a join step before `Done`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hephaestus.core.definition import (
    BaseWorkflow,
    Route,
    RouteSpec,
    StepConfig,
    StepNode,
    WorkflowDefinition,
    check_metadata,
    check_route_shape,
    check_transition_key,
    parse_target,
    start_spec,
    workflow_name,
)
from hephaestus.core.graph import (
    descendants,
    find_cycle,
    postdominators,
    predecessors,
    reachable_from,
    topological_order,
)
from hephaestus.core.keys import Unique
from hephaestus.core.step import Step
from hephaestus.errors import (
    CycleError,
    DuplicateStepKeyError,
    EventNotDeclaredError,
    InvalidRouteError,
    InvalidStartError,
    InvalidStepError,
    InvalidTransitionError,
    InvalidUniqueError,
    InvalidVersionsError,
    LeafNotDoneError,
    MissingTransitionError,
    UnconvergedFanOutError,
    UnreachableStepError,
)

__all__ = ["build_definition"]


class _Collector:
    """Gathers the steps of one workflow class, keyed by context key, with one config each."""

    def __init__(self, workflow: str) -> None:
        self.workflow = workflow
        self.steps: dict[str, type[Step]] = {}
        self.configs: dict[str, StepConfig] = {}

    def add(self, step: type[Step], config: StepConfig, where: str) -> str:
        key = step.key
        known = self.steps.get(key)
        if known is not None and known is not step:
            raise DuplicateStepKeyError(
                f"workflow {self.workflow}: steps {known.__qualname__} and {step.__qualname__} "
                f"share the context key {key!r}; give one of them a distinct `key`"
            )
        self.steps[key] = step
        if config is not None:
            previous = self.configs.get(key)
            if previous is not None and previous != config:
                raise InvalidTransitionError(
                    f"workflow {self.workflow}: {where} gives step {step.__qualname__} the config "
                    f"{config!r}, but it already has {previous!r}; a step has one config per "
                    "workflow (subclass it to use it twice)"
                )
            self.configs[key] = config
        else:
            self.configs.setdefault(key, None)
        return key


def build_definition(cls: type[BaseWorkflow], routes: Sequence[Route]) -> WorkflowDefinition:
    """Check every rule on `cls` and return its frozen definition."""
    name = cls.__qualname__
    _check_unique_and_version(cls)
    steps = _Collector(name)

    raw_start = start_spec(cls)
    if raw_start is None:
        raise InvalidStartError(
            f"workflow {name} has no `start`: set start = FirstStep (or (FirstStep, config))"
        )
    start_step, start_config = parse_target(raw_start, f"workflow {name}: start", InvalidStartError)
    start = steps.add(start_step, start_config, "start")

    edges, successors = _collect_transitions(cls, steps)
    route_specs = _collect_routes(name, routes, steps, edges, successors)

    nodes: dict[str, StepNode] = {}
    for key, step in steps.steps.items():
        config = steps.configs.get(key)
        try:
            step.validate_config(config)
        except ValueError as exc:
            raise InvalidTransitionError(
                f"workflow {name}: config {config!r} of step {step.__qualname__} is invalid: {exc}"
            ) from exc
        events = step.events_for(config)
        if not events and not step.terminal:
            raise InvalidStepError(
                f"workflow {name}: step {step.__qualname__} declares no events; "
                'set events = ("done",) or similar'
            )
        nodes[key] = StepNode(key=key, step=step, config=config, events=tuple(events))

    for step_key, event in [*edges, *route_specs]:
        node = nodes[step_key]
        if event not in node.events:
            raise EventNotDeclaredError(
                f"workflow {name}: the transition ({node.name}, {event!r}) uses an event that "
                f"{node.name} does not declare; its events are {list(node.events)}"
            )

    graph = {key: tuple(successors.get(key, ())) for key in nodes}
    # Checked before cycles: a transition out of Done usually closes a loop back into the
    # graph, and "Done cannot have transitions" is the message that points at the mistake.
    for key, node in nodes.items():
        if node.step.terminal and graph[key]:
            raise InvalidTransitionError(
                f"workflow {name}: {node.name} is terminal and cannot have transitions; "
                f"remove the transition(s) from {node.name}"
            )

    cycle = find_cycle(graph)
    if cycle is not None:
        path = " -> ".join(nodes[key].name for key in cycle)
        raise CycleError(f"workflow {name} has a cycle: {path}; workflows must be acyclic")

    reachable = reachable_from(graph, [start])
    unreachable = sorted(nodes[key].name for key in nodes if key not in reachable)
    if unreachable:
        raise UnreachableStepError(
            f"workflow {name}: step(s) {', '.join(unreachable)} cannot be reached from "
            f"start ({nodes[start].name}); add a transition to them or remove them"
        )

    for key, node in nodes.items():
        if node.step.terminal:
            continue
        if not graph[key]:
            raise LeafNotDoneError(
                f"workflow {name}: the path through {node.name} ends there; every path must "
                f"end at Done: add a transition ({node.name}, {node.events[0]!r}): Done"
            )
        missing = [e for e in node.events if (key, e) not in edges and (key, e) not in route_specs]
        if missing:
            raise MissingTransitionError(
                f"workflow {name}: step {node.name} declares event(s) {missing} without a "
                "transition; add one for each, or remove the event from `events`"
            )

    order = topological_order(graph)
    _check_fan_out_convergence(name, nodes, edges, graph, order)

    preds = predecessors(graph)
    return WorkflowDefinition(
        name=workflow_name(cls),
        version=cls.version,
        unique=cls.unique,
        start=start,
        nodes=nodes,
        edges=edges,
        routes=route_specs,
        successors=graph,
        predecessors=preds,
        descendants=descendants(graph, order),
        joins=frozenset(key for key, p in preds.items() if len(p) > 1),
        order=tuple(order),
        tags=_tags(cls),
        metadata=check_metadata(cls),
    )


def _tags(cls: type[BaseWorkflow]) -> tuple[str, ...]:
    tags = cls.tags
    if isinstance(tags, str) or not all(isinstance(tag, str) for tag in tags):
        raise InvalidTransitionError(
            f"workflow {cls.__qualname__}: tags must be a tuple of str, e.g. tags = ({tags!r},)"
        )
    return tuple(tags)


def _check_unique_and_version(cls: type[BaseWorkflow]) -> None:
    name = cls.__qualname__
    # A class without `unique` is accepted here: a version class leaves it to the umbrella
    # that lists it; one that no umbrella lists is refused when it is started.
    if cls.unique is not None and not isinstance(cls.unique, Unique):
        raise InvalidUniqueError(
            f"workflow {name}: unique must be a Unique(key=..., scope=...), got {cls.unique!r}"
        )
    version = cls.version
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise InvalidVersionsError(f"workflow {name}: version must be an int >= 1, got {version!r}")


def _collect_transitions(
    cls: type[BaseWorkflow], steps: _Collector
) -> tuple[dict[tuple[str, str], tuple[str, ...]], dict[str, list[str]]]:
    name = cls.__qualname__
    if not isinstance(cls.transitions, Mapping):
        raise InvalidTransitionError(f"workflow {name}: transitions must be a dict")
    edges: dict[tuple[str, str], tuple[str, ...]] = {}
    successors: dict[str, list[str]] = {}
    for raw_key, raw_target in cls.transitions.items():
        step, event = check_transition_key(raw_key, name)
        where = f"transition ({step.__qualname__}, {event!r})"
        source = steps.add(step, None, where)
        raw_targets: list[Any] = raw_target if isinstance(raw_target, list) else [raw_target]
        if not raw_targets:
            raise InvalidTransitionError(f"workflow {name}: {where} has an empty list of targets")
        targets: list[str] = []
        for raw in raw_targets:
            target, config = parse_target(raw, f"workflow {name}: {where}", InvalidTransitionError)
            key = steps.add(target, config, where)
            if key in targets:
                raise InvalidTransitionError(
                    f"workflow {name}: {where} lists {target.__qualname__} twice"
                )
            targets.append(key)
        edges[(source, event)] = tuple(targets)
        _extend_unique(successors.setdefault(source, []), targets)
    return edges, successors


def _collect_routes(
    workflow: str,
    routes: Sequence[Route],
    steps: _Collector,
    edges: Mapping[tuple[str, str], tuple[str, ...]],
    successors: dict[str, list[str]],
) -> dict[tuple[str, str], RouteSpec]:
    specs: dict[tuple[str, str], RouteSpec] = {}
    for found in routes:
        function_name = getattr(found.choose, "__name__", repr(found.choose))
        where = f"workflow {workflow}: @route {function_name}"
        check_route_shape(found, where)
        source = steps.add(found.step, None, where)
        key = (source, found.event)
        if key in edges or key in specs:
            raise InvalidRouteError(
                f"{where}: ({found.step.__qualname__}, {found.event!r}) already has a "
                "transition; a (step, event) pair has either a transition or a route"
            )
        targets: list[str] = []
        for raw in found.targets:
            target, config = parse_target(raw, where, InvalidRouteError)
            target_key = steps.add(target, config, where)
            if target_key in targets:
                raise InvalidRouteError(f"{where} lists {target.__qualname__} twice in targets")
            targets.append(target_key)
        specs[key] = RouteSpec(
            step=source,
            event=found.event,
            choose=found.choose,
            targets=tuple(targets),
            function_name=function_name,
        )
        _extend_unique(successors.setdefault(source, []), targets)
    return specs


def _extend_unique(into: list[str], items: Sequence[str]) -> None:
    for item in items:
        if item not in into:
            into.append(item)


def _check_fan_out_convergence(
    workflow: str,
    nodes: Mapping[str, StepNode],
    edges: Mapping[tuple[str, str], tuple[str, ...]],
    graph: Mapping[str, tuple[str, ...]],
    order: list[str],
) -> None:
    """Parallel branches must share a non-terminal step on all their paths to `Done`."""
    pdom = postdominators(graph, order)
    for (source, event), targets in edges.items():
        if len(targets) < 2:
            continue
        common = set(pdom[targets[0]])
        for target in targets[1:]:
            common &= pdom[target]
        if not any(not nodes[key].step.terminal for key in common):
            branches = ", ".join(nodes[key].name for key in targets)
            raise UnconvergedFanOutError(
                f"workflow {workflow}: the fan-out ({nodes[source].name}, {event!r}) -> "
                f"[{branches}] never converges before Done; route every branch into one "
                "join step that then goes to Done"
            )
