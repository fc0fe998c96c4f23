"""Group commit: the writes of many instances, ready at the same moment, share one transaction.

Each `put` queues its write and waits; one writer task takes everything
queued, hands the batch to the adapter (one transaction), then answers every
waiting `put` with its own outcome. While a batch commits, the next one
gathers. Nothing is acknowledged before the commit that holds it returned.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from hephaestus.errors import HephaestusError, StorageError

__all__ = ["GroupCommit"]

W = TypeVar("W")

BatchWriter = Callable[[list[W]], Awaitable[list[HephaestusError | None]]]


class GroupCommit(Generic[W]):
    """Queues writes of type `W` and commits them in batches through `write_batch`.

    `write_batch(batch)` commits the batch in one transaction and returns, per
    write, `None` (written) or the error that refused it (nothing of it
    written). If it raises, the whole batch failed. `name` prefixes messages;
    `interrupted` is the message for writes cut off by a cancellation.
    """

    def __init__(self, write_batch: BatchWriter[W], *, name: str, interrupted: str) -> None:
        self._write_batch = write_batch
        self._name = name
        self._interrupted = interrupted
        self._pending: list[tuple[W, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def submit(self, write: W) -> None:
        """Queue `write`; return once it is committed, or raise why it was not."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((write, future))
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_queued(), name=f"{self._name} writer")
        await future

    async def drain(self) -> None:
        """Wait until every queued write is committed (or failed)."""
        while self._writer is not None:
            await asyncio.shield(self._writer)

    async def _write_queued(self) -> None:
        """Commit queued writes, batch after batch, until the queue is empty."""
        batch: list[tuple[W, asyncio.Future[None]]] = []
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    outcomes = await self._write_batch([write for write, _ in batch])
                except Exception as exc:
                    # The whole transaction failed: every write of the batch failed with it.
                    message = (
                        str(exc) if isinstance(exc, StorageError) else f"{self._name}: {exc!r}"
                    )
                    _fail(batch, message, exc)
                else:
                    for (_, future), outcome in zip(batch, outcomes, strict=True):
                        if future.done():  # its caller was cancelled
                            continue
                        if outcome is None:
                            future.set_result(None)
                        else:
                            future.set_exception(outcome)
                batch = []
        except BaseException as exc:
            # Cancelled (the event loop is shutting down): nobody will commit these now.
            _fail([*batch, *self._pending], self._interrupted, exc)
            self._pending = []
            raise
        finally:
            self._writer = None


def _fail(writes: list[tuple[W, asyncio.Future[None]]], message: str, cause: BaseException) -> None:
    """Answer each still-waiting write with its own `StorageError`."""
    for _, future in writes:
        if not future.done():
            failure = StorageError(message)
            failure.__cause__ = cause
            future.set_exception(failure)
