"""Behaviour that matches the original hephaestus_core 0.3.1, checked on the pure core."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from hephaestus import (
    Async,
    Context,
    Done,
    Error,
    InvalidMetadataError,
    InvalidUniqueError,
    Ok,
    Status,
    Step,
    Unique,
    VersionConflictError,
    VersionOptionsError,
    Workflow,
)
from hephaestus.core import engine
from hephaestus.core.definition import BaseWorkflow, resolve_version, unique_of
from hephaestus.core.facts import InstanceFailed

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
UNIQUE = Unique(key="parity")


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


class PaStepA(Step):
    events = ("done",)


class PaWaitForEvent(Step):
    events = ("go",)


class PaStepB(Step):
    events = ("done",)


class PaEventFlow(Workflow):
    unique = UNIQUE
    start = PaStepA
    transitions = {
        (PaStepA, "done"): PaWaitForEvent,
        (PaWaitForEvent, "go"): PaStepB,
        (PaStepB, "done"): Done,
    }


def run(flow: type[BaseWorkflow], step: str, outcome: Any, instance: Any, seconds: float) -> Any:
    return engine.complete_step(
        flow.definition(),
        instance,
        step,
        outcome,
        attempt=instance.attempts[step],
        now=at(seconds),
    ).instance


# --- 1. every completed step has an entry in context.steps ---------------------------------


def test_every_completed_step_has_an_entry_after_an_event_resume() -> None:
    definition = PaEventFlow.definition()
    instance = engine.new_instance(
        definition, instance_id="parity::1", context=Context.new({}), now=T0
    ).instance
    instance = run(PaEventFlow, "pa_step_a", Ok("done"), instance, 1)
    instance = run(PaEventFlow, "pa_wait_for_event", Async(), instance, 2)
    assert instance.context.steps == {"pa_step_a": {}}
    instance = engine.resume(definition, instance, "go", now=at(3)).instance
    instance = run(PaEventFlow, "pa_step_b", Ok("done", {"processed": True}), instance, 4)

    assert instance.status is Status.COMPLETED
    assert instance.context.steps == {
        "pa_step_a": {},
        "pa_wait_for_event": {},
        "pa_step_b": {"processed": True},
        "done": {},
    }
    # The history still says which steps returned updates.
    assert [entry.context_updates for entry in instance.execution_history] == [
        None,
        None,
        {"processed": True},
        None,
    ]


def test_an_event_with_data_stores_the_data_as_the_waiting_steps_output() -> None:
    definition = PaEventFlow.definition()
    instance = engine.new_instance(
        definition, instance_id="parity::1", context=Context.new({}), now=T0
    ).instance
    instance = run(PaEventFlow, "pa_step_a", "done", instance, 1)
    instance = run(PaEventFlow, "pa_wait_for_event", Async(), instance, 2)
    instance = engine.resume(definition, instance, "go", now=at(3), data={"by": "ops"}).instance

    assert instance.context.steps == {"pa_step_a": {}, "pa_wait_for_event": {"by": "ops"}}


# --- 2, 3. version_for gets the caller's options; None means current -----------------------


class PaV1(Workflow):
    version = 1
    start = PaStepA
    transitions = {(PaStepA, "done"): Done}


class PaV2(Workflow):
    unique = UNIQUE  # agrees with the umbrella's
    version = 2
    start = PaStepA
    transitions = {(PaStepA, "done"): PaStepB, (PaStepB, "done"): Done}


class PaRouted(Workflow):
    unique = UNIQUE
    versions = {1: PaV1, 2: PaV2}
    current = 2

    @classmethod
    def version_for(cls, versions: Any, opts: Any) -> int | None:
        if opts.get("force_v1"):
            return 1
        if opts.get("tenant") == "beta":
            return 2
        return None  # current


class PaPlain(Workflow):
    unique = UNIQUE
    versions = {1: PaV1, 2: PaV2}
    current = 1


def test_version_for_receives_the_callers_options() -> None:
    assert resolve_version(PaRouted, options={"force_v1": True}) is PaV1
    assert resolve_version(PaRouted, opts={"id": "parity::x"}, options={"tenant": "beta"}) is PaV2


def test_version_for_returning_none_starts_on_current() -> None:
    assert resolve_version(PaRouted) is PaV2
    assert resolve_version(PaRouted, options={"tenant": "other"}) is PaV2


def test_options_nobody_reads_are_refused() -> None:
    with pytest.raises(
        VersionOptionsError, match=r"PaPlain got option\(s\) force_v1, but it does not override"
    ):
        resolve_version(PaPlain, options={"force_v1": True})
    with pytest.raises(VersionOptionsError, match=r"PaEventFlow got option\(s\) a, b, which only"):
        resolve_version(PaEventFlow, options={"b": 1, "a": 2})
    with pytest.raises(VersionOptionsError, match=r"and version=1: the explicit version is used"):
        resolve_version(PaRouted, 1, options={"tenant": "beta"})


# --- 4. version and versions together --------------------------------------------------------


def test_a_class_with_both_version_and_versions_is_refused() -> None:
    with pytest.raises(
        VersionConflictError, match=r"Both cannot use both `version` and `versions`"
    ):

        class Both(Workflow):
            unique = UNIQUE
            version = 2
            versions = {1: PaV1}
            current = 1


# --- 5. version classes may leave unique to their umbrella -----------------------------------


def test_a_version_without_unique_uses_its_umbrellas() -> None:
    assert PaV1.definition().unique is None
    assert unique_of(PaV1) == UNIQUE
    assert resolve_version(PaV1) is PaV1  # listed by an umbrella: it can be started


def test_a_version_whose_unique_disagrees_with_its_umbrella_is_refused() -> None:
    class Other(Workflow):
        unique = Unique(key="other")
        version = 1
        start = PaStepA
        transitions = {(PaStepA, "done"): Done}

    with pytest.raises(
        InvalidUniqueError,
        match=re.escape("Other declares unique = Unique(key='other'"),
    ):

        class Disagrees(Workflow):
            unique = UNIQUE
            versions = {1: Other}
            current = 1


# --- 6. the failed step is named ----------------------------------------------------------------


class PaFails(Step):
    events = ("done",)


class PaFailFlow(Workflow):
    unique = UNIQUE
    start = PaStepA
    transitions = {(PaStepA, "done"): PaFails, (PaFails, "done"): Done}


def test_a_failed_instance_names_the_step_that_failed_it() -> None:
    definition = PaFailFlow.definition()
    instance = engine.new_instance(
        definition, instance_id="parity::1", context=Context.new({}), now=T0
    ).instance
    instance = run(PaFailFlow, "pa_step_a", "done", instance, 1)
    advance = engine.complete_step(
        definition, instance, "pa_fails", Error("down"), attempt=1, now=at(2)
    )

    assert advance.facts_of(InstanceFailed) == [
        InstanceFailed(advance.instance.error or "", "pa_fails")
    ]
    assert advance.status_before is Status.RUNNING
    assert engine.fail(instance, "gave up", now=at(3)).facts == (InstanceFailed("gave up"),)


# --- 7. step configs and workflow metadata ----------------------------------------------------


class PaConfigured(Step):
    events = ("done",)


class PaConfigFlow(Workflow):
    unique = UNIQUE
    metadata = {"team": "payments", "sla": {"hours": 4}}
    start = (PaConfigured, {"limit": 3})
    transitions = {(PaConfigured, "done"): (PaStepB, {"mode": "fast"}), (PaStepB, "done"): Done}


def test_a_step_config_is_dropped_from_the_instance_when_its_step_completes() -> None:
    definition = PaConfigFlow.definition()
    instance = engine.new_instance(
        definition, instance_id="parity::1", context=Context.new({}), now=T0
    ).instance
    assert instance.step_configs == {"pa_configured": {"limit": 3}}
    instance = run(PaConfigFlow, "pa_configured", "done", instance, 1)
    assert instance.step_configs == {"pa_step_b": {"mode": "fast"}}
    instance = run(PaConfigFlow, "pa_step_b", "done", instance, 2)
    assert instance.status is Status.COMPLETED
    assert instance.step_configs == {}


def test_workflow_metadata_is_on_the_definition() -> None:
    assert PaConfigFlow.definition().metadata == {"team": "payments", "sla": {"hours": 4}}
    assert PaEventFlow.definition().metadata == {}


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        (["team"], r"metadata must be a dict with str keys, got list"),
        ({1: "x"}, r"metadata of workflow BadMeta has a non-str key 1"),
        ({"at": datetime(2026, 1, 1)}, r"metadata of workflow BadMeta\['at'\] .*not JSON"),
    ],
)
def test_workflow_metadata_must_be_a_json_dict(metadata: object, message: str) -> None:
    with pytest.raises(InvalidMetadataError, match=message):
        type(
            "BadMeta",
            (Workflow,),
            {
                "unique": UNIQUE,
                "metadata": metadata,
                "start": PaStepA,
                "transitions": {(PaStepA, "done"): Done},
            },
        )


def test_umbrella_metadata_is_checked_too() -> None:
    with pytest.raises(InvalidMetadataError, match=r"BadUmbrella: metadata must be a dict"):

        class BadUmbrella(Workflow):
            unique = UNIQUE
            metadata = ("x",)
            versions = {1: PaV1}
            current = 1
