"""Small workflows for the CLI tests: one waits for an approval, one fails, one is an umbrella."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hephaestus import Context, Done, Instance, Ok, Step, Unique, WaitForEvent, Workflow


class Submit(Step):
    events = ("submitted",)

    def execute(self, instance: Instance, config: Mapping[str, Any] | None, context: Context) -> Ok:
        return Ok("submitted", {"title": context.initial["title"]})


class AwaitApproval(WaitForEvent):
    """Parks the document until a reviewer approves it, or an hour passes."""


class Publish(Step):
    events = ("published",)

    def execute(self, instance: Instance, config: Mapping[str, Any] | None, context: Context) -> Ok:
        return Ok("published", {"published_title": context.steps["submit"]["title"]})


class Expire(Step):
    events = ("expired",)

    def execute(
        self, instance: Instance, config: Mapping[str, Any] | None, context: Context
    ) -> str:
        return "expired"


class ApprovalFlow(Workflow):
    unique = Unique(key="doc")
    start = Submit
    transitions = {
        (Submit, "submitted"): (
            AwaitApproval,
            {"event_name": "approved", "timeout_ms": 3_600_000},
        ),
        (AwaitApproval, "approved"): Publish,
        (AwaitApproval, "timeout"): Expire,
        (Publish, "published"): Done,
        (Expire, "expired"): Done,
    }


class Explode(Step):
    events = ("exploded",)

    def execute(
        self, instance: Instance, config: Mapping[str, Any] | None, context: Context
    ) -> str:
        raise RuntimeError("the printer caught fire")


class FailingFlow(Workflow):
    unique = Unique(key="job")
    start = Explode
    transitions = {(Explode, "exploded"): Done}


class ReviewV1(Workflow):
    unique = Unique(key="review")
    version = 1
    start = Submit
    transitions = {(Submit, "submitted"): Done}


class ReviewV2(Workflow):
    unique = Unique(key="review")
    version = 2
    start = Submit
    transitions = {(Submit, "submitted"): Publish, (Publish, "published"): Done}


class Review(Workflow):
    unique = Unique(key="review")
    versions = {1: ReviewV1, 2: ReviewV2}
    current = 2


class PrintPages(Step):
    """With `jammed`, fails until an operator has retried the instance; then it prints."""

    events = ("printed",)

    def execute(self, instance: Instance, config: Mapping[str, Any] | None, context: Context) -> Ok:
        retried = any(e.event == "hephaestus:retry" for e in instance.execution_history)
        if context.initial.get("jammed") and not retried:
            raise RuntimeError("the printer is out of paper")
        return Ok("printed", {"pages": 2})


class PrintFlow(Workflow):
    unique = Unique(key="print")
    start = PrintPages
    transitions = {(PrintPages, "printed"): Done}
