"""Properties of the pure engine over random valid workflows and random runs.

The strategy composes small graphs from linear chains, exclusive choices
(static events or a dynamic route) whose branches rejoin or end at `Done`,
fan-outs whose branches meet at a join, and nestings of these. Steps may
park (`Async`, with or without a timer) and may fail a few times before
their retry policy runs out. A driver then plays the runner: it picks which
running step finishes next, what it returns, when a parked step is resumed
and when timers fire, and checks the instance after every call.
"""

from __future__ import annotations

import itertools
import operator
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hephaestus import (
    AmbiguousEventError,
    Async,
    Context,
    Done,
    Error,
    Instance,
    InvalidEventError,
    Ok,
    Retry,
    Status,
    Step,
    Unique,
    Workflow,
    route,
)
from hephaestus.core import engine
from hephaestus.core.commands import Command, RunStep, StopSteps
from hephaestus.core.definition import WorkflowDefinition
from hephaestus.core.engine import Advance
from hephaestus.core.facts import (
    AttemptFailed,
    InstanceCancelled,
    InstanceCompleted,
    InstanceFailed,
    StepCompleted,
    StepParked,
    StepResumed,
)
from hephaestus.core.frozen import FrozenDict

T0 = datetime(2026, 3, 1, tzinfo=UTC)
MAX_STEPS = 14
#: Class names are unique across examples; step keys only need to be unique within a workflow.
_names = itertools.count()

# --- the shape of a workflow --------------------------------------------------------------


@dataclass
class Behaviour:
    """How the driver runs one step."""

    waits: bool = False
    timer: bool = False
    max_attempts: int = 1


@dataclass
class Task:
    behaviour: Behaviour


@dataclass
class Choice:
    behaviour: Behaviour
    #: One entry per event (or route target); `None` is "straight to what follows".
    branches: list[list[Any] | None]
    #: Branches that end at `Done` instead of rejoining (never inside a fan-out).
    to_done: list[bool]
    routed: bool = False


@dataclass
class FanOut:
    behaviour: Behaviour
    join: Behaviour
    #: At most one `None`: that branch goes straight to the join.
    branches: list[list[Any] | None]


@dataclass
class Budget:
    steps: int = 0


behaviours = st.builds(
    Behaviour,
    waits=st.booleans(),
    timer=st.booleans(),
    max_attempts=st.integers(min_value=1, max_value=3),
)


@st.composite
def segments(draw: st.DrawFn, budget: Budget, in_fan_out: bool, depth: int) -> list[Any]:
    """A non-empty chain of items; each item is a step, a choice or a fan-out."""
    items: list[Any] = []
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        room = MAX_STEPS - budget.steps
        if items and room <= 0:
            break
        kinds = ["task"]
        if depth < 3 and room >= 3:
            kinds += ["choice", "route", "fan_out"]
        kind = draw(st.sampled_from(kinds))
        if kind == "task":
            budget.steps += 1
            items.append(Task(draw(behaviours)))
        elif kind in ("choice", "route"):
            budget.steps += 1
            routed = kind == "route"
            width = draw(st.integers(min_value=2, max_value=3))
            branches: list[list[Any] | None] = []
            for _ in range(width):
                # A route lists each target once, so at most one of its branches may be empty.
                may_be_empty = not routed or None not in branches
                empty = may_be_empty and (budget.steps >= MAX_STEPS or draw(st.booleans()))
                branches.append(None if empty else draw(segments(budget, in_fan_out, depth + 1)))
            # The first branch always continues, so what follows the choice stays reachable.
            to_done = [False] + [not in_fan_out and draw(st.booleans()) for _ in range(width - 1)]
            behaviour = Behaviour() if routed else draw(behaviours)
            items.append(Choice(behaviour, branches, to_done, routed))
        else:
            budget.steps += 2
            width = draw(st.integers(min_value=2, max_value=3))
            fan_branches: list[list[Any] | None] = []
            for _ in range(width):
                empty = None not in fan_branches and draw(st.booleans())
                fan_branches.append(None if empty else draw(segments(budget, True, depth + 1)))
            items.append(FanOut(draw(behaviours), draw(behaviours), fan_branches))
    return items


# --- building classes from a shape --------------------------------------------------------


@dataclass
class Built:
    workflow: type[Workflow]
    behaviours: dict[str, Behaviour]
    #: Route steps and the target keys their `pick` index chooses from.
    routes: dict[str, list[str]]

    @property
    def definition(self) -> WorkflowDefinition:
        return self.workflow.definition()


@dataclass
class _Builder:
    transitions: dict[Any, Any] = field(default_factory=dict)
    behaviours: dict[str, Behaviour] = field(default_factory=dict)
    routes: dict[str, list[str]] = field(default_factory=dict)
    namespace: dict[str, Any] = field(default_factory=dict)
    #: Keys count from 0 in each workflow, so the same draws give the same keys (and orders).
    keys: itertools.count[int] = field(default_factory=itertools.count)

    def step(self, events: tuple[str, ...], behaviour: Behaviour) -> type[Step]:
        attributes: dict[str, Any] = {"events": events, "key": f"s{next(self.keys):02d}"}
        if behaviour.max_attempts > 1:
            attributes["retry"] = Retry(
                max_attempts=behaviour.max_attempts, backoff="constant", base=1.0
            )
        cls = type(f"PropStep{next(_names)}", (Step,), attributes)
        self.behaviours[cls.key] = behaviour
        return cls

    def chain(self, items: list[Any], then: type[Step]) -> type[Step]:
        for item in reversed(items):
            then = self.item(item, then)
        return then

    def item(self, item: Any, then: type[Step]) -> type[Step]:
        if isinstance(item, Task):
            cls = self.step(("go",), item.behaviour)
            self.transitions[(cls, "go")] = then
            return cls
        if isinstance(item, FanOut):
            fork = self.step(("split",), item.behaviour)
            join = self.step(("go",), item.join)
            self.transitions[(join, "go")] = then
            self.transitions[(fork, "split")] = [
                join if branch is None else self.chain(branch, join) for branch in item.branches
            ]
            return fork
        assert isinstance(item, Choice)
        targets = [
            Done if done else (then if branch is None else self.chain(branch, then))
            for branch, done in zip(item.branches, item.to_done, strict=True)
        ]
        if not item.routed:
            events = tuple(f"e{i}" for i in range(len(targets)))
            cls = self.step(events, item.behaviour)
            for event, target in zip(events, targets, strict=True):
                self.transitions[(cls, event)] = target
            return cls
        cls = self.step(("routed",), item.behaviour)
        # Branches ending at `Done` (or empty ones when `Done` follows) name the same target.
        unique_targets = list(dict.fromkeys(targets))
        key = cls.key

        def choose(context: Context, _key: str = key) -> type[Step]:
            return unique_targets[context.steps[_key]["pick"]]

        choose.__name__ = f"route_{key}"
        self.namespace[f"route_{key}"] = route(cls, "routed", targets=unique_targets)(choose)
        self.routes[key] = [t.key for t in unique_targets]
        return cls


@st.composite
def workflows(draw: st.DrawFn) -> Built:
    shape = draw(segments(Budget(), in_fan_out=False, depth=0))
    builder = _Builder()
    first = builder.chain(shape, Done)
    namespace = {
        **builder.namespace,
        "unique": Unique(key="prop"),
        "start": first,
        "transitions": builder.transitions,
    }
    workflow = type(f"PropFlow{next(_names)}", (Workflow,), namespace)
    return Built(workflow, builder.behaviours, builder.routes)


# --- driving the engine -------------------------------------------------------------------


@dataclass
class Run:
    """The driver's view: what is in flight, what was issued, the instance after each call."""

    built: Built
    instance: Instance
    now: datetime = T0
    in_flight: dict[str, int] = field(default_factory=dict)
    issued: Counter[tuple[str, int]] = field(default_factory=Counter)
    delivered: list[tuple[str, int, Any]] = field(default_factory=list)
    picks: dict[str, str] = field(default_factory=dict)
    stopped: bool = False

    def apply(self, advance: Advance) -> None:
        before, after = self.instance, advance.instance
        if after is not before:
            assert after.revision == before.revision + 1, "revision must grow by one per change"
            assert after.updated_at == self.now
        else:
            assert advance.commands == []
        self.instance = after
        self.take(advance.commands, before)
        check_instance(self)
        check_facts(before, advance)

    def take(self, commands: list[Command], before: Instance | None = None) -> None:
        for command in commands:
            if isinstance(command, RunStep):
                run = (command.step, command.attempt)
                assert self.issued[run] == 0, f"{run} was issued twice"
                assert command.step not in self.instance.completed_steps
                assert command.step not in self.in_flight
                self.issued[run] += 1
                self.in_flight[command.step] = command.attempt
            else:
                assert isinstance(command, StopSteps)
                assert self.instance.status in (Status.FAILED, Status.CANCELLED)
                assert before is not None
                assert command.steps <= before.active_steps
                self.stopped = True
                self.in_flight.clear()


def backing_off(instance: Instance) -> set[str]:
    return {t.step for t in instance.timers if t.kind == "retry"}


def check_instance(run: Run) -> None:
    instance = run.instance
    assert Instance.from_json(instance.to_json()) == instance
    active, waiting, completed = (
        instance.active_steps,
        instance.waiting_steps,
        instance.completed_steps,
    )
    history = [entry.step for entry in instance.execution_history]
    assert len(history) == len(set(history)), f"a step is in the history twice: {history}"
    assert set(history) == completed
    if instance.status.is_final:
        return
    assert not active & waiting
    assert not active & completed
    assert not waiting & completed
    assert active == set(run.in_flight) | backing_off(instance)
    assert set(instance.attempts) >= active
    assert instance.status is (Status.RUNNING if active else Status.WAITING)
    if instance.status is Status.RUNNING:
        assert set(engine.recover(instance)) == {RunStep(s, a) for s, a in run.in_flight.items()}


def check_shared(before: Instance, after: Instance) -> None:
    """What the engine answers is made of plain read-only values, and it shares what did not
    change with `before`: storages find what changed by identity, not by comparing."""
    assert type(after.completed_steps) is frozenset
    assert type(after.execution_history) is tuple
    assert type(after.context.steps) is FrozenDict
    if after.completed_steps == before.completed_steps:
        assert after.completed_steps is before.completed_steps
    old = before.execution_history
    if len(after.execution_history) >= len(old) and after.execution_history[: len(old)] == old:
        assert all(map(operator.is_, after.execution_history, old))
    if after.context.steps is not before.context.steps:
        assert after.context.changes is not None


def check_facts(before: Instance, advance: Advance) -> None:
    """The facts tell exactly the change from `before` to the instance answered."""
    after, facts = advance.instance, advance.facts
    if after is before:
        assert facts == ()
        return
    check_shared(before, after)
    completed = advance.facts_of(StepCompleted)
    added = after.execution_history[len(before.execution_history) :]
    assert [(f.step, f.event, f.targets) for f in completed] == [
        (e.step, e.event, e.targets) for e in added
    ]
    present = before.active_steps | before.waiting_steps | before.completed_steps
    new = (after.active_steps | after.waiting_steps | after.completed_steps) - present
    started = [step for fact in completed for step in fact.started]
    assert sorted(started) == sorted(new), "each new step is started by one completion"
    for resumed in advance.facts_of(StepResumed):
        assert resumed.step in before.waiting_steps
    for parked in advance.facts_of(StepParked):
        assert parked.step in after.waiting_steps | after.completed_steps or after.status.is_final
        assert parked.timer is None or parked.timer in after.timers or after.status.is_final
    for failed in advance.facts_of(AttemptFailed):
        if failed.will_retry:
            assert failed.retry in after.timers or after.status.is_final
        else:
            assert after.status is Status.FAILED
    ended = {InstanceCompleted: Status.COMPLETED, InstanceFailed: Status.FAILED}
    ended[InstanceCancelled] = Status.CANCELLED
    for kind, status in ended.items():
        became = after.status is status and before.status is not status
        assert len(advance.facts_of(kind)) == (1 if became else 0), (kind, facts)
    for failure in advance.facts_of(InstanceFailed):
        assert failure.reason == after.error


def reached(run: Run) -> set[str]:
    """The steps a run must have completed, following the events it actually emitted."""
    definition = run.built.definition
    emitted = {entry.step: entry.event for entry in run.instance.execution_history}
    seen = {definition.start}
    frontier = [definition.start]
    while frontier:
        step = frontier.pop()
        event = emitted.get(step)
        if event is None:
            continue
        if (step, event) in definition.routes:
            targets: tuple[str, ...] = (run.picks[step],)
        else:
            targets = definition.edges.get((step, event), ())
        for target in targets:
            if target not in seen:
                seen.add(target)
                frontier.append(target)
    return seen


Decide = Callable[[st.SearchStrategy[Any]], Any]


def finish_one(run: Run, draw: Decide, fatal: bool) -> Advance:
    definition = run.built.definition
    step = draw(st.sampled_from(sorted(run.in_flight)))
    attempt = run.in_flight.pop(step)
    behaviour = run.built.behaviours[step]
    node = definition.nodes[step]
    outcome: Any
    if attempt < behaviour.max_attempts and draw(st.booleans()):
        outcome = Error(f"attempt {attempt} failed")
    elif fatal and draw(st.integers(min_value=0, max_value=9)) == 0:
        outcome = Error("gave up")
    elif behaviour.waits:
        if behaviour.timer:
            outcome = Async(resume_after=draw(st.integers(0, 30)), timeout_event=node.events[0])
        else:
            outcome = Async()
    elif step in run.built.routes:
        targets = run.built.routes[step]
        pick = draw(st.integers(min_value=0, max_value=len(targets) - 1))
        run.picks[step] = targets[pick]
        outcome = Ok("routed", {"pick": pick})
    else:
        event = draw(st.sampled_from(node.events))
        outcome = Ok(event, {"attempt": attempt}) if draw(st.booleans()) else event
    run.delivered.append((step, attempt, outcome))
    return engine.complete_step(
        definition, run.instance, step, outcome, attempt=attempt, now=run.now, duration=0.01
    )


def resume_one(run: Run, draw: Decide) -> Advance:
    definition = run.built.definition
    step = draw(st.sampled_from(sorted(run.instance.waiting_steps)))
    event = draw(st.sampled_from(definition.nodes[step].events))
    declaring = [w for w in run.instance.waiting_steps if event in definition.nodes[w].events]
    before = run.instance.to_json()
    if len(declaring) > 1:
        with pytest.raises(AmbiguousEventError):
            engine.resume(definition, run.instance, event, now=run.now)
    with pytest.raises(InvalidEventError):
        engine.resume(definition, run.instance, "never-declared", now=run.now)
    assert run.instance.to_json() == before
    explicit = len(declaring) > 1 or draw(st.booleans())
    return engine.resume(
        definition, run.instance, event, now=run.now, step=step if explicit else None
    )


def drive(built: Built, draw: Decide, *, fatal: bool = False, cancel: bool = False) -> Run:
    advance = engine.new_instance(
        built.definition, instance_id="prop::1", context=Context.new({"n": 1}), now=T0
    )
    run = Run(built, advance.instance)
    run.take(advance.commands)
    check_instance(run)
    replays = 0
    for _ in range(500):
        if run.instance.status.is_final:
            break
        actions = []
        if run.in_flight:
            actions.append("finish")
        if run.instance.waiting_steps:
            actions.append("resume")
        if run.instance.timers:
            actions.append("timers")
        if run.delivered and replays < 3:
            actions.append("replay")
        if cancel:
            actions.append("cancel")
        assert {"finish", "resume", "timers"} & set(actions), "the instance is stuck"
        action = draw(st.sampled_from(actions))
        run.now += timedelta(seconds=1)
        if action == "finish":
            run.apply(finish_one(run, draw, fatal))
        elif action == "resume":
            run.apply(resume_one(run, draw))
        elif action == "timers":
            next_at = run.instance.next_timer_at
            assert next_at is not None
            run.now = max(run.now, next_at)
            run.apply(engine.fire_timers(built.definition, run.instance, run.now))
        elif action == "replay":
            replays += 1
            step, attempt, outcome = draw(st.sampled_from(run.delivered))
            advance = engine.complete_step(
                built.definition, run.instance, step, outcome, attempt=attempt, now=run.now
            )
            assert advance.instance is run.instance, f"a duplicate result of {step} was applied"
            assert advance.commands == []
        else:
            run.apply(engine.cancel(run.instance, now=run.now))
    else:
        raise AssertionError("the run did not finish within 500 engine calls")
    return run


# --- properties ---------------------------------------------------------------------------

# About 5 seconds for both properties together; raise max_examples locally when changing the engine.
HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large]


@settings(max_examples=500, deadline=None, suppress_health_check=HEALTH)
@given(built=workflows(), data=st.data())
def test_every_run_completes_once_along_the_path_it_took(built: Built, data: st.DataObject) -> None:
    run = drive(built, data.draw)
    instance = run.instance

    assert instance.status is Status.COMPLETED, instance.error
    assert not run.stopped
    history = [entry.step for entry in instance.execution_history]
    assert history.count("done") == 1
    assert history[-1] == "done"
    assert set(history) == instance.completed_steps
    assert instance.completed_steps == reached(run)
    assert instance.active_steps == frozenset()
    assert instance.waiting_steps == frozenset()
    assert instance.timers == ()
    assert run.in_flight == {}
    for step, count in Counter(step for step, attempt in run.issued if attempt == 1).items():
        assert count == 1, f"{step} was started twice"
    for join in built.definition.joins & instance.completed_steps:
        assert history.count(join) == 1


@settings(max_examples=300, deadline=None, suppress_health_check=HEALTH)
@given(built=workflows(), data=st.data())
def test_failure_or_cancellation_ends_the_run_for_good(built: Built, data: st.DataObject) -> None:
    run = drive(built, data.draw, fatal=True, cancel=True)
    instance = run.instance

    assert instance.status in (Status.COMPLETED, Status.FAILED, Status.CANCELLED)
    if instance.status is Status.FAILED:
        assert instance.error is not None
        assert "gave up" in instance.error
    if instance.status is not Status.COMPLETED:
        assert instance.timers == ()
        assert engine.recover(instance) == []
        for step, attempt, outcome in run.delivered:
            late = engine.complete_step(
                built.definition, instance, step, outcome, attempt=attempt, now=run.now
            )
            assert late.instance is instance
        later = engine.fire_timers(built.definition, instance, run.now + timedelta(days=1))
        assert later.instance is instance


def test_the_generator_covers_every_shape() -> None:
    """Guards the strategy itself: joins, routes, fan-outs and parked steps all show up."""
    seen: Counter[str] = Counter()

    @settings(max_examples=60, deadline=None, database=None)
    @given(built=workflows())
    def collect(built: Built) -> None:
        definition = built.definition
        seen["join"] += bool(definition.joins - {"done"})
        seen["route"] += bool(definition.routes)
        seen["fan_out"] += any(len(t) > 1 for t in definition.edges.values())
        seen["waits"] += any(b.waits for b in built.behaviours.values())
        seen["retries"] += any(b.max_attempts > 1 for b in built.behaviours.values())
        seen["max_nodes"] = max(seen["max_nodes"], len(definition.nodes))

    collect()
    assert all(seen[shape] > 0 for shape in ("join", "route", "fan_out", "waits", "retries"))
    assert seen["max_nodes"] <= 2 * MAX_STEPS
