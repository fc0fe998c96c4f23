"""Behaviour that matches the original hephaestus_core 0.3.1, on both runners."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from hephaestus import (
    Context,
    Done,
    Instance,
    InstanceNotFoundError,
    Ok,
    Status,
    Step,
    Unique,
    VersionOptionsError,
    WaitForEvent,
    Workflow,
)
from hephaestus.app import Hephaestus

pytestmark = pytest.mark.both_runners


class StepA(Step):
    events = ("done",)

    def execute(
        self, instance: Instance, config: Mapping[str, Any] | None, context: Context
    ) -> str:
        return "done"


class WaitForGo(WaitForEvent):
    key = "wait_for_event"


class StepB(Step):
    events = ("done",)

    def execute(self, instance: Instance, config: Mapping[str, Any] | None, context: Context) -> Ok:
        return Ok("done", {"processed": True})


class PaResumed(Workflow):
    unique = Unique(key="paresumed")
    start = StepA
    transitions = {
        (StepA, "done"): (WaitForGo, {"event_name": "go"}),
        (WaitForGo, "go"): StepB,
        (StepB, "done"): Done,
    }


async def test_every_completed_step_has_an_entry_after_an_event_resume(
    app: Hephaestus, wait_for: Any
) -> None:
    iid = await PaResumed.start("r1", {})
    waiting = await wait_for(app, iid, lambda i: i.status is Status.WAITING)
    assert waiting.context.steps == {"step_a": {}}
    assert waiting.step_configs == {"wait_for_event": {"event_name": "go"}}

    await PaResumed.resume("r1", "go")
    done = await wait_for(app, iid, lambda i: i.status.is_final)

    assert done.status is Status.COMPLETED
    assert done.context.steps == {
        "step_a": {},
        "wait_for_event": {},
        "step_b": {"processed": True},
        "done": {},
    }
    assert done.step_configs == {}  # each entry went when its step completed


# --- version_for and the caller's options ------------------------------------------------


class PaVersionedV1(Workflow):
    version = 1  # no unique: the umbrella's applies
    start = StepA
    transitions = {(StepA, "done"): Done}


class PaVersionedV2(Workflow):
    version = 2
    start = StepA
    transitions = {(StepA, "done"): StepB, (StepB, "done"): Done}


class Versioned(Workflow):
    unique = Unique(key="paversioned")
    versions = {1: PaVersionedV1, 2: PaVersionedV2}
    current = 2

    @classmethod
    def version_for(cls, versions: Mapping[int, type[Any]], opts: Mapping[str, Any]) -> int | None:
        if opts.get("force_v1") or opts.get("tenant") == "legacy":
            return 1
        return None  # current


class Unrouted(Workflow):
    unique = Unique(key="paunrouted")
    versions = {1: PaVersionedV1, 2: PaVersionedV2}
    current = 2


async def test_start_options_reach_version_for(app: Hephaestus, wait_for: Any) -> None:
    by_id = await app.start_instance(Versioned, {}, id="paversioned::a", force_v1=True)
    by_value = await Versioned.start("b", {}, tenant="legacy")
    current = await Versioned.start("c", {}, tenant="other")
    plain = await Versioned.start("d", {})

    versions = {}
    for iid in (by_id, by_value, current, plain):
        done = await wait_for(app, iid, lambda i: i.status.is_final)
        assert done.status is Status.COMPLETED
        versions[iid] = done.workflow_version
    assert versions == {by_id: 1, by_value: 1, current: 2, plain: 2}
    # The options chose the version; they are not stored.
    assert "force_v1" not in (await app.get(by_id)).to_json()


async def test_start_options_nobody_reads_are_refused_before_anything_is_stored(
    app: Hephaestus,
) -> None:
    with pytest.raises(VersionOptionsError, match=r"Unrouted got option\(s\) force_v1"):
        await Unrouted.start("x", {}, force_v1=True)
    with pytest.raises(VersionOptionsError, match=r"PaResumed got option\(s\) tenant"):
        await app.start_instance(PaResumed, {}, id="paresumed::x", tenant="t1")
    with pytest.raises(VersionOptionsError, match=r"version=2: the explicit version"):
        await Versioned.start("x", {}, version=2, force_v1=True)
    for iid in ("paunrouted::x", "paresumed::x", "paversioned::x"):
        with pytest.raises(InstanceNotFoundError):
            await app.get(iid)


async def test_a_version_class_without_unique_is_addressed_by_its_umbrellas_key(
    app: Hephaestus, wait_for: Any
) -> None:
    iid = await PaVersionedV1.start("direct", {})

    assert iid == "paversioned::direct"
    done = await wait_for(app, iid, lambda i: i.status.is_final)
    assert (done.workflow, done.workflow_version) == (
        f"{__name__}.PaVersionedV1",
        1,
    )
