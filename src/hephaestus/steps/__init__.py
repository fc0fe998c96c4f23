"""The built-in steps: `Done`, `Wait`, `WaitForEvent`, `Debug`."""

from hephaestus.steps.debug import Debug
from hephaestus.steps.done import Done
from hephaestus.steps.wait import Wait, delay_seconds
from hephaestus.steps.wait_for_event import WaitForEvent

__all__ = ["Debug", "Done", "Wait", "WaitForEvent", "delay_seconds"]
