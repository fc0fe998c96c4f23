"""`Context` is read-only all the way down, yet reads, compares and serialises like plain JSON."""

from __future__ import annotations

import copy
import json
import pickle
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from hephaestus import Context, Done, Step, Trigger, Unique, Workflow
from hephaestus.core import engine
from hephaestus.core.context import find_trigger
from hephaestus.core.frozen import FrozenDict, FrozenList, freeze
from hephaestus.core.instance import ExecutionEntry, Instance

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
INITIAL = {"order": {"id": "A-1", "lines": [{"sku": "lamp", "qty": 1}]}, "tags": ["new"]}


class UrFirst(Step):
    events = ("done",)

    def execute(self, instance: Any, config: Any, context: Any) -> str:
        return "done"


class UrFlow(Workflow):
    unique = Unique(key="ur")
    start = UrFirst
    transitions = {(UrFirst, "done"): Done}


def _context() -> Context:
    return Context.new(INITIAL).with_updates("charge", {"ref": "c-1", "items": [{"n": 1}]})


MUTATIONS: dict[str, Callable[[Context], object]] = {
    "set a key of initial": lambda c: c.initial.__setitem__("x", 1),
    "delete a key of initial": lambda c: c.initial.__delitem__("tags"),
    "update initial": lambda c: c.initial.update(x=1),  # type: ignore[attr-defined]
    "pop from initial": lambda c: c.initial.pop("tags"),  # type: ignore[attr-defined]
    "clear initial": lambda c: c.initial.clear(),  # type: ignore[attr-defined]
    "setdefault on initial": lambda c: c.initial.setdefault("x", 1),  # type: ignore[attr-defined]
    "|= on initial": lambda c: c.initial.__ior__({"x": 1}),  # type: ignore[attr-defined]
    "set a nested key": lambda c: c.initial["order"].__setitem__("id", "B"),
    "append to a nested list": lambda c: c.initial["tags"].append("x"),
    "+= on a nested list": lambda c: c.initial["tags"].__iadd__(["x"]),
    "sort a nested list": lambda c: c.initial["tags"].sort(),
    "set an item of a nested list": lambda c: c.initial["tags"].__setitem__(0, "x"),
    "change a list in a list": lambda c: c.initial["order"]["lines"][0].__setitem__("qty", 9),
    "add a step entry": lambda c: c.steps.__setitem__("other", {}),
    "change a step's output": lambda c: c.steps["charge"].__setitem__("ref", "x"),
    "change a list in a step's output": lambda c: c.steps["charge"]["items"].pop(),
}


@pytest.mark.parametrize("mutate", MUTATIONS.values(), ids=MUTATIONS.keys())
def test_every_change_in_place_raises_type_error(mutate: Callable[[Context], object]) -> None:
    context = _context()
    before = json.dumps(context.to_dict())

    with pytest.raises(TypeError, match=r"the context is read-only: a step returns its changes"):
        mutate(context)

    assert json.dumps(context.to_dict()) == before


def test_reading_works_as_with_plain_json() -> None:
    context = _context()

    assert context.initial == INITIAL
    assert context.steps == {"charge": {"ref": "c-1", "items": [{"n": 1}]}}
    assert isinstance(context.initial, dict)
    assert isinstance(context.initial["tags"], list)
    assert context.initial["tags"] == ["new"]
    assert json.loads(json.dumps(context.initial)) == INITIAL
    assert repr(context.initial["tags"]) == "['new']"


def test_copies_are_plain_and_mutable() -> None:
    context = _context()

    initial: Any = context.initial
    for copied in (dict(initial), initial.copy(), initial | {"x": 1}):
        assert type(copied) is dict
        copied["y"] = 2
    tags = context.initial["tags"] + ["x"]
    assert type(tags) is list
    assert context.initial == INITIAL


def test_pickle_and_deepcopy_keep_it_frozen() -> None:
    frozen = freeze(INITIAL)
    for again in (pickle.loads(pickle.dumps(frozen)), copy.deepcopy(frozen), copy.copy(frozen)):
        assert again == INITIAL
        assert type(again) is FrozenDict
        assert type(again["tags"]) is FrozenList


def test_an_instance_round_trips_through_json_and_comes_back_frozen() -> None:
    advance = engine.new_instance(
        UrFlow.definition(), instance_id="ur::1", context=Context.new(INITIAL), now=NOW
    )
    instance = advance.instance.evolve(
        context=advance.instance.context.with_updates("ur_first", {"a": [1, {"b": None}]})
    )

    again = Instance.from_json(instance.to_json())

    assert again == instance
    assert again.to_json() == instance.to_json()
    assert again.context.steps["ur_first"] == {"a": [1, {"b": None}]}
    with pytest.raises(TypeError):
        again.context.steps["ur_first"]["a"].append(2)
    with pytest.raises(TypeError):
        again.context.initial["order"]["lines"].clear()


def test_freezing_a_frozen_context_again_is_free() -> None:
    context = _context()
    again = Context(initial=context.initial, steps=context.steps, attempt=2)

    assert again.initial is context.initial
    assert again.steps is context.steps
    # `with_updates` keeps the earlier steps' outputs as they are.
    assert context.with_updates("next", {}).steps["charge"] is context.steps["charge"]


def _entry(step: str, event: str, targets: tuple[str, ...], data: Any = None) -> ExecutionEntry:
    return ExecutionEntry(step, event, NOW, context_updates=data, targets=targets)


def test_the_trigger_is_the_last_completion_that_led_to_the_step() -> None:
    history = (
        _entry("validate", "valid", ("charge", "reserve"), {"ok": True}),
        _entry("charge", "charged", ("confirm",), {"ref": "c-1"}),
        _entry("reserve", "reserved", ("confirm",)),  # the join's last arrival activated it
        _entry("confirm", "payment_confirmed", ("ship",), {"bank_ref": "B-77"}),
    )

    assert find_trigger(history, "validate") is None
    assert find_trigger(history, "charge") == Trigger("validate", "valid", {"ok": True})
    assert find_trigger(history, "confirm") == Trigger("reserve", "reserved", {})
    ship = find_trigger(history, "ship")
    assert ship == Trigger("confirm", "payment_confirmed", {"bank_ref": "B-77"})
    assert ship is not None
    with pytest.raises(TypeError):
        ship.data["bank_ref"] = "x"  # type: ignore[index]


def test_the_trigger_is_not_persisted_nor_compared() -> None:
    plain = _context()
    triggered = Context(
        initial=plain.initial, steps=plain.steps, trigger=Trigger("a", "done", freeze({}))
    )

    assert triggered == plain
    assert "trigger" not in triggered.to_dict()
    assert Context.from_dict(json.loads(json.dumps(triggered.to_dict()))).trigger is None


def test_the_trigger_reuses_the_stored_output_when_it_is_the_same() -> None:
    history = (_entry("charge", "charged", ("ship",), {"ref": "c-1"}),)
    steps = freeze({"charge": {"ref": "c-1"}})

    reused = find_trigger(history, "ship", steps)
    assert reused is not None
    assert reused.data is steps["charge"]

    # Should the stored output ever differ, the history's own data is what led here.
    other = find_trigger(history, "ship", freeze({"charge": {"ref": "other"}}))
    assert other == Trigger("charge", "charged", {"ref": "c-1"})
    assert other is not None
    assert type(other.data) is FrozenDict
