"""Runners carry out the engine's decisions: `LocalRunner` in one process."""

from hephaestus.runners.base import Runner, TimerHandle
from hephaestus.runners.local import LocalRunner

__all__ = ["LocalRunner", "Runner", "TimerHandle"]
