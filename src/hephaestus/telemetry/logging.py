"""A telemetry handler that writes one log line per event through stdlib `logging`.

Logs are what most services already collect, so this is the cheapest way to
see what instances do. Each line starts with the instance id, so a grep for
one order finds its whole story:

    [orderid::abc] step validate_order stopped -> valid in 1.2 ms

and carries the event as structured `extra` fields (`telemetry_event`,
`instance_id`, `workflow`, `step`, `duration`, ...) for JSON formatters.

    from hephaestus.telemetry.logging import attach_logging_handler

    attach_logging_handler(levels={STEP_START: None, STEP_STOP: logging.DEBUG})
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from hephaestus.telemetry import events as ev
from hephaestus.telemetry._emit import attach, detach

__all__ = ["DEFAULT_LEVELS", "attach_logging_handler", "detach_logging_handler"]

DEFAULT_LEVELS: Mapping[str, int] = {
    ev.WORKFLOW_START: logging.INFO,
    ev.WORKFLOW_STOP: logging.INFO,
    ev.WORKFLOW_EXCEPTION: logging.ERROR,
    ev.WORKFLOW_TRANSITION: logging.DEBUG,
    ev.STEP_START: logging.DEBUG,
    ev.STEP_STOP: logging.INFO,
    # A failure that will be retried is a warning; the last one an error (see `_level`).
    ev.STEP_EXCEPTION: logging.WARNING,
    ev.STEP_ASYNC: logging.INFO,
    ev.STEP_RESUME: logging.INFO,
    ev.ENGINE_ADVANCE: logging.DEBUG,
    ev.RUNNER_INIT: logging.INFO,
}
"""The level each event is logged at; `step.exception` is ERROR once no retry is left."""

DEFAULT_LOGGER = "hephaestus.events"

# Attributes every LogRecord has: an `extra` key with one of these names would make
# `Logger.makeRecord` raise, so such keys are logged as `hephaestus_<name>` instead.
_RESERVED = frozenset(
    {*logging.LogRecord("", logging.INFO, "", 0, "", (), None).__dict__, "message", "asctime"}
)


def attach_logging_handler(
    logger: logging.Logger | str | None = None,
    *,
    levels: Mapping[str, int | str | None] | None = None,
    handler_id: str = "hephaestus-logging",
) -> None:
    """Log every telemetry event to `logger` (default: the `hephaestus.events` logger).

    `levels` overrides `DEFAULT_LEVELS` per event name: a level (`logging.DEBUG`
    or `"DEBUG"`), or `None` to not log that event. Setting `step.exception`
    logs every failed attempt at that one level. Raises `ValueError` for an
    unknown event or level, or if `handler_id` is already attached.
    """
    resolved: dict[str, int | None] = dict(DEFAULT_LEVELS)
    for event, level in (levels or {}).items():
        if event not in DEFAULT_LEVELS:
            raise ValueError(f"unknown telemetry event {event!r}; known: {list(DEFAULT_LEVELS)}")
        resolved[event] = _as_level(event, level)
    if logger is None or isinstance(logger, str):
        logger = logging.getLogger(logger or DEFAULT_LOGGER)
    config = _Config(
        logger=logger,
        levels={event: level for event, level in resolved.items() if level is not None},
        fixed_exception_level=levels is not None and ev.STEP_EXCEPTION in levels,
    )
    if config.levels:
        attach(handler_id, list(config.levels), _handle, config)


def detach_logging_handler(handler_id: str = "hephaestus-logging") -> bool:
    """Stop logging events; returns whether the handler was attached."""
    return detach(handler_id)


class _Config:
    __slots__ = ("fixed_exception_level", "levels", "logger")

    def __init__(
        self, logger: logging.Logger, levels: dict[str, int], fixed_exception_level: bool
    ) -> None:
        self.logger = logger
        self.levels = levels
        self.fixed_exception_level = fixed_exception_level


def _as_level(event: str, level: int | str | None) -> int | None:
    if level is None or (isinstance(level, int) and not isinstance(level, bool)):
        return level
    if isinstance(level, str):
        number = logging.getLevelNamesMapping().get(level.upper())
        if number is not None:
            return number
    raise ValueError(
        f"level for {event} must be a logging level (logging.INFO or 'INFO') or None, got {level!r}"
    )


def _handle(
    event: str, measurements: Mapping[str, Any], metadata: Mapping[str, Any], config: _Config
) -> None:
    level = config.levels[event]
    if event == ev.STEP_EXCEPTION and not config.fixed_exception_level:
        level = logging.WARNING if metadata.get("will_retry") else logging.ERROR
    if not config.logger.isEnabledFor(level):
        return
    extra: dict[str, Any] = {"telemetry_event": event}
    for source in (metadata, measurements):
        for key, value in source.items():
            extra[f"hephaestus_{key}" if key in _RESERVED else key] = value
    instance_id = metadata.get("instance_id")
    line = _describe(event, measurements, metadata)
    if instance_id is not None:
        line = f"[{instance_id}] {line}"
    config.logger.log(level, "%s", line, extra=extra)


def _describe(event: str, m: Mapping[str, Any], md: Mapping[str, Any]) -> str:
    step = md.get("step")
    attempt = md.get("attempt", 1)
    tries = f" (attempt {attempt})" if attempt != 1 else ""
    workflow = _short(md.get("workflow"))
    if event == ev.STEP_START:
        return f"step {step} started (attempt {attempt})"
    if event == ev.STEP_STOP:
        return f"step {step} stopped -> {md.get('event')} in {_duration(m['duration'])}{tries}"
    if event == ev.STEP_EXCEPTION:
        after = "will retry" if md.get("will_retry") else "no retry left"
        return (
            f"step {step} failed in {_duration(m['duration'])}{tries}: {md.get('reason')}; {after}"
        )
    if event == ev.STEP_ASYNC:
        return f"step {step} is waiting (ran {_duration(m['duration'])}){tries}"
    if event == ev.STEP_RESUME:
        waited = m.get("wait_duration")
        after = f" after {_duration(waited)}" if waited is not None else ""
        return f"step {step} resumed by {md.get('resume_event')!r} ({md.get('source')}){after}"
    if event == ev.WORKFLOW_TRANSITION:
        targets = ", ".join(md.get("targets", ()))
        fan_out = " (fan-out)" if md.get("fan_out") else ""
        return f"{md.get('from_step')} --{md.get('event')}--> {targets}{fan_out}"
    if event == ev.WORKFLOW_START:
        first = ", ".join(md.get("initial_step", ()))
        return f"workflow {workflow} v{md.get('workflow_version')} started at {first}"
    if event == ev.WORKFLOW_STOP:
        return (
            f"workflow {workflow} {md.get('status')} in {_duration(m['duration'])} "
            f"({m.get('step_count')} steps)"
        )
    if event == ev.WORKFLOW_EXCEPTION:
        return f"workflow {workflow} failed after {_duration(m['duration'])}: {md.get('reason')}"
    if event == ev.ENGINE_ADVANCE:
        return (
            f"engine advanced in {_duration(m['duration'])}: {m.get('completed_in_advance')} "
            f"step(s) completed, {m.get('active_steps_count')} active, "
            f"status {md.get('status_after')}"
        )
    if event == ev.RUNNER_INIT:
        return f"runner {md.get('runner')} started on {md.get('storage')}"
    return event


def _short(workflow: Any) -> str:
    """`shop.flows.OrderFlow` -> `OrderFlow`: the full path is in the `workflow` field."""
    return str(workflow).rpartition(".")[2]


def _duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms"
    if seconds < 120:
        return f"{seconds:.2f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"
