"""Data a storage would refuse: NUL characters, lone surrogates, nesting 100,000 deep,
and more than the 16 MB of JSON one value may be.

PostgreSQL cannot store a NUL character in text or JSON; no storage can
encode a lone surrogate as UTF-8; deep nesting exhausts the recursion of the
JSON encoders. Such data is refused where it enters, naming where it is, so
it never reaches a storage write: a start raises before anything is written,
and a step that returns it fails with the real cause in `instance.error`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import pytest

from hephaestus import (
    Context,
    ContextSerializationError,
    Done,
    Error,
    Instance,
    InstanceNotFoundError,
    Ok,
    Retry,
    Status,
    Step,
    Unique,
    Workflow,
)
from hephaestus.app import Hephaestus
from hephaestus.core.context import MAX_JSON_BYTES

pytestmark = pytest.mark.both_runners

# Attempts each step saw, by instance id.
RT_ATTEMPTS: dict[str, list[int]] = {}


def nested(levels: int) -> dict[str, Any]:
    """`{"a": {"a": ...}}`, `levels` dicts deep, built without recursion."""
    value: dict[str, Any] = {}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


HOSTILE: dict[str, tuple[dict[str, Any], str]] = {
    "nul-value": ({"a": [1, 2, "x\x00y"]}, r"\['a'\]\[2\]: string contains a NUL character"),
    "nul-key": ({"a": {"k\x00": 1}}, r"\['a'\]: key 'k\\x00': string contains a NUL character"),
    "surrogate-value": ({"name": "caf\udce9"}, r"\['name'\]: string contains a lone surrogate"),
    "surrogate-key": ({"\ud800": 1}, r": key '\\ud800': string contains a lone surrogate"),
    "deep": (nested(100_000), r"nest more than 100 levels deep"),
    "too-big": ({"blob": "x" * MAX_JSON_BYTES}, r"is 16\.0 MB as JSON, more than the 16 MB"),
}


class Charge(Step):
    """Returns the hostile data its instance names, as its updates or as its metadata."""

    events = ("charged",)
    retry = Retry(max_attempts=2, backoff="constant", base=0.01)

    def execute(self, instance: Instance, config: Mapping[str, Any] | None, context: Context) -> Ok:
        RT_ATTEMPTS.setdefault(instance.id, []).append(context.attempt)
        if context.initial["case"] == "none":
            return Ok("charged", {"fine": True})
        data, _ = HOSTILE[context.initial["case"]]
        if context.initial["as"] == "metadata":
            return Ok("charged", metadata=data)
        return Ok("charged", data)


class ChargeFlow(Workflow):
    unique = Unique(key="charge")
    start = Charge
    transitions = {(Charge, "charged"): Done}


@pytest.mark.parametrize("place", ["updates", "metadata"])
@pytest.mark.parametrize("case", list(HOSTILE))
async def test_a_step_returning_data_no_storage_keeps_fails_with_the_real_cause(
    app: Hephaestus, wait_for: Any, case: str, place: str
) -> None:
    iid = await app.start_instance(
        ChargeFlow, {"case": case, "as": place}, id=f"charge::{case.replace('-', '')}"
    )
    calm = await app.start_instance(ChargeFlow, {"case": "none", "as": place}, id="charge::calm")

    failed = await wait_for(app, iid, lambda i: i.status.is_final)
    assert failed.status is Status.FAILED
    assert failed.error is not None
    assert failed.error.startswith(f"ContextSerializationError: {place} of step Charge")
    _, named = HOSTILE[case]
    assert re.search(named, failed.error), failed.error
    # A result that breaks a rule is not retried: the same data would come back.
    assert RT_ATTEMPTS[iid] == [1]
    assert failed.execution_history == ()
    assert Instance.from_json(failed.to_json()) == failed
    # The calm instance, and the runner, are fine.
    done = await wait_for(app, calm, lambda i: i.status.is_final)
    assert done.status is Status.COMPLETED, done.error


@pytest.mark.parametrize("case", list(HOSTILE))
@pytest.mark.parametrize("where", ["context", "telemetry_metadata"])
async def test_a_start_with_such_data_raises_before_anything_is_written(
    app: Hephaestus, snapshot: Any, case: str, where: str
) -> None:
    data, named = HOSTILE[case]
    before = await snapshot(app.storage)
    kwargs: dict[str, Any] = {"telemetry_metadata": data} if where == "telemetry_metadata" else {}
    context = data if where == "context" else {"case": "none", "as": "updates"}
    with pytest.raises(ContextSerializationError, match=named) as info:
        await app.start_instance(
            ChargeFlow, context, id=f"charge::start{case.replace('-', '')}", **kwargs
        )
    assert str(info.value).startswith(where)
    assert await snapshot(app.storage) == before
    with pytest.raises(InstanceNotFoundError):
        await app.get(f"charge::start{case.replace('-', '')}")


class Refuses(Step):
    """Fails with a reason that holds a NUL character and a lone surrogate (bytes decoded badly)."""

    events = ("done",)
    retry = Retry(max_attempts=2, backoff="constant", base=0.01)

    def execute(
        self, instance: Instance, config: Mapping[str, Any] | None, context: Context
    ) -> Error:
        RT_ATTEMPTS.setdefault(instance.id, []).append(context.attempt)
        reason = "gateway said b'\x00\xff': \udcff"
        if context.initial["raise"]:
            raise ValueError(reason)
        return Error(reason)


class RefusingFlow(Workflow):
    unique = Unique(key="refusing")
    start = Refuses
    transitions = {(Refuses, "done"): Done}


@pytest.mark.parametrize("raises", [True, False], ids=["raised", "returned"])
async def test_a_failure_reason_no_storage_keeps_is_stored_escaped(
    app: Hephaestus, wait_for: Any, raises: bool
) -> None:
    iid = await app.start_instance(
        RefusingFlow, {"raise": raises}, id=f"refusing::{str(raises).lower()}"
    )

    failed = await wait_for(app, iid, lambda i: i.status.is_final)
    assert failed.status is Status.FAILED
    assert RT_ATTEMPTS[iid] == [1, 2]
    prefix = "ValueError: " if raises else ""
    reason, *traceback = failed.error.split("\n")
    assert reason == (
        f"step Refuses failed after 2 attempts: {prefix}gateway said b'\\x00\xff': \\udcff"
    )
    # A raised error keeps the end of its traceback, escaped the same way.
    assert bool(traceback) is raises
    assert "\x00" not in failed.error
