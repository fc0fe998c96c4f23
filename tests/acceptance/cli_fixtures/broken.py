"""A workflow module that fails to import: its graph has a cycle, caught as the class is made."""

from __future__ import annotations

from hephaestus import Done, Step, Unique, Workflow


class Draft(Step):
    events = ("drafted",)


class Edit(Step):
    events = ("edited", "finished")


class BrokenFlow(Workflow):
    unique = Unique(key="draft")
    start = Draft
    transitions = {
        (Draft, "drafted"): Edit,
        (Edit, "edited"): Draft,
        (Edit, "finished"): Done,
    }
