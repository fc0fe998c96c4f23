"""The append-only layout: any chain of instance values round-trips, and a write carries
only what changed (each history entry written once, the head small)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from hephaestus.core.context import Context
from hephaestus.core.instance import ExecutionEntry, Instance, Status
from hephaestus.storage._layout import INITIAL_SEQ, Known, RowWrite, assemble, delta, full, stored

T0 = datetime(2026, 1, 1, tzinfo=UTC)
KEYS = ["a", "b", "c", "d"]


class Rows:
    """What a SQL adapter keeps for one run: the head and the log rows by seq."""

    def __init__(self) -> None:
        self.head = ""
        self.log: dict[int, str] = {}

    def apply(self, rows: RowWrite) -> None:
        if rows.base_length is None:
            self.log = {seq: e for seq, e in self.log.items() if seq < rows.history_length}
        self.log.update(rows.entries)
        self.head = rows.head

    def load(self) -> Known:
        return assemble(self.head, self.log.items(), 1)


def base_instance(initial: dict[str, Any]) -> Instance:
    return Instance(
        id="order::1",
        workflow="Flow",
        workflow_version=1,
        status=Status.RUNNING,
        context=Context.new(initial),
        created_at=T0,
        updated_at=T0,
    )


def complete(instance: Instance, key: str, updates: dict[str, Any] | None) -> Instance:
    """What the engine does when step `key` completes: history, output, completed."""
    entry = ExecutionEntry(
        step=key,
        event="ok",
        timestamp=instance.updated_at + timedelta(seconds=1),
        context_updates=updates,
        attempt=1,
        duration=0.5,
        targets=("next",),
    )
    return instance.evolve(
        context=instance.context.with_updates(key, updates if updates is not None else {}),
        completed_steps=instance.completed_steps | {key},
        execution_history=(*instance.execution_history, entry),
        revision=instance.revision + 1,
        updated_at=entry.timestamp,
    )


# Text a context may hold: no NUL, no lone surrogate (the engine refuses both).
text = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=4)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner),
    max_leaves=6,
)
updates = st.none() | st.dictionaries(st.sampled_from(["x", "y"]), json_values, max_size=2)

# Changes: mostly what the engine does, and now and then what it never does (a value
# set or removed without a history entry, completed steps or the input replaced).
changes = st.one_of(
    st.tuples(st.just("complete"), st.sampled_from(KEYS), updates),
    st.tuples(st.just("set"), st.sampled_from(KEYS), updates.filter(lambda u: u is not None)),
    st.tuples(st.just("unset"), st.sampled_from(KEYS), st.none()),
    st.tuples(st.just("completed"), st.sampled_from(KEYS), st.none()),
    st.tuples(st.just("initial"), st.sampled_from(KEYS), json_values),
)


def change(instance: Instance, kind: str, key: str, value: Any) -> Instance:
    if kind == "complete":
        return complete(instance, key, value)
    steps = dict(instance.context.steps)
    if kind == "set":
        steps[key] = value
    elif kind == "unset":
        steps.pop(key, None)
    elif kind == "completed":
        return instance.evolve(
            completed_steps=instance.completed_steps ^ {key}, revision=instance.revision + 1
        )
    else:
        initial = {**instance.context.initial, key: value}
        return instance.evolve(
            context=Context(initial=initial, steps=instance.context.steps),
            revision=instance.revision + 1,
        )
    return instance.evolve(
        context=Context(initial=instance.context.initial, steps=steps),
        revision=instance.revision + 1,
    )


@settings(max_examples=200, deadline=None)
@given(
    initial=st.dictionaries(text, json_values, max_size=3),
    steps=st.lists(changes, max_size=12),
)
def test_any_chain_of_writes_loads_back_equal(initial: dict[str, Any], steps: list[Any]) -> None:
    rows_kept = Rows()
    instance = base_instance(initial)
    first = full(instance)
    rows_kept.apply(first)
    known = Known(instance, 1, first.overrides)
    assert rows_kept.load().instance == instance
    for kind, key, value in steps:
        instance = change(known.instance, kind, key, value)
        rows = delta(known, instance)
        rows_kept.apply(rows)
        loaded = rows_kept.load()
        assert loaded.instance == instance
        assert loaded.instance.completed_steps == instance.completed_steps
        assert dict(loaded.instance.context.steps) == dict(instance.context.steps)
        # The next write starts from what was written, as a storage's known states do;
        # half the time without the engine's note of what changed (then it looks).
        known = Known(instance, 1, rows.overrides)
        if len(instance.execution_history) % 2:
            stored(instance)
        # And a reader that loaded it would compute the same next write.
        assert loaded.overrides == rows.overrides


def test_an_engine_step_writes_its_entry_once_and_a_head_of_constant_size() -> None:
    instance = base_instance({"order": "x" * 1000})
    rows = full(instance)
    known = Known(instance, 1, rows.overrides)
    heads = []
    for n in range(300):
        instance = complete(instance, f"step_{n}", {"payload": "y" * 500, "n": n})
        rows = delta(known, instance)
        known = Known(instance, 1, rows.overrides)
        stored(instance)
        # One log row, the new entry with the step's output; nothing else rewritten.
        assert [seq for seq, _ in rows.entries] == [n]
        assert '"payload"' in rows.entries[0][1]
        heads.append(len(rows.head))
    assert rows.overrides.empty
    assert "y" * 500 not in rows.head
    assert "x" * 1000 not in rows.head
    assert heads[-1] - heads[0] < 20  # the head grows only with the digits of counters


def test_a_delta_against_another_history_writes_every_row() -> None:
    instance = complete(base_instance({}), "a", {"x": 1})
    other = complete(base_instance({}), "b", {"x": 2})
    rows = delta(Known(other, 1, full(other).overrides), complete(instance, "c", None))
    assert rows.base_length is None
    assert {seq for seq, _ in rows.entries} == {INITIAL_SEQ, 0, 1}
