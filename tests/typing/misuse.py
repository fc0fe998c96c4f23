"""Calls mypy --strict must reject: `test_typing.py` checks each line is reported."""

from __future__ import annotations

from hephaestus import Done, Ok, Step, Unique, Workflow


class First(Step):
    events = ("done",)

    def execute(self, instance: object, config: object, context: object) -> Ok:
        return Ok("done")


class Flow(Workflow):
    unique = Unique(key="flow")
    start = First
    transitions = {(First, "done"): Done}


async def main() -> None:
    await Flow.start(42)  # error: value is a str
    await Flow.start("v", {"a": 1}, versoin=2)  # error: no such keyword
    count: int = await Flow.start("v")  # error: the id is a str
    print(count)
