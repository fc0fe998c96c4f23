"""`SyncClient`: Hephaestus in client mode for synchronous code (Flask, Django, cron scripts).

    from hephaestus.sync import SyncClient

    client = SyncClient("sqlite:///hephaestus.db")     # or a Storage object
    order_id = client.start(OrderFlow, "abc123", {"item_count": 3})
    client.resume(order_id, "payment_confirmed", data={"by": "ada"})
    instance = client.wait(order_id, timeout=30)
    client.close()

The runtime is asyncio; a WSGI view or a script has no event loop, and
starting one per call (`asyncio.run`) would open and close the storage every
time. So the client owns one event loop on one background thread for its
whole life, opens a client-mode `Hephaestus(storage, runner=None)` on it once,
and every method sends a coroutine to that loop and blocks until it is done.
Nothing runs a step here: the runners that share the storage
(`hephaestus worker`) do the work, as for any client-mode app.

- **Threads.** Any number of threads may call one client at once (a
  threaded WSGI server serves requests from many); their calls run
  concurrently on the loop, and the storage batches their writes.
- **Errors** are the ones `Hephaestus` raises (`InstanceNotFoundError`,
  `InvalidEventError`, `WaitTimeoutError`, ...), raised in the calling thread
  with their own type.
- **Lifetime.** The loop and the storage open at the first call (or at
  `open()` / `with`), not when the client is made, so a module-level client
  costs nothing at import and a server that forks its workers after import
  (`gunicorn --preload`) opens it in each worker. `close()` closes the
  storage and stops the thread; calls after it raise `StorageError`. A client
  that is never closed is closed when it is garbage-collected or when the
  interpreter exits, best effort; nothing is lost either way, since each call
  returns only after its write is stored.
- **Async code** should use `Hephaestus` itself. A `SyncClient` called from
  a coroutine works but blocks that coroutine's whole event loop until the
  call returns.
"""

from __future__ import annotations

import asyncio
import builtins
import concurrent.futures
import logging
import os
import threading
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from types import TracebackType
from typing import Any, Literal, TypeVar

from hephaestus.app import Hephaestus
from hephaestus.core.definition import BaseWorkflow
from hephaestus.core.instance import Instance, Status
from hephaestus.core.step import Step
from hephaestus.errors import HephaestusError, StorageError
from hephaestus.storage.base import RunnerRecord, Storage

__all__ = ["SyncClient"]

logger = logging.getLogger("hephaestus.sync")

T = TypeVar("T")

#: How long closing at garbage collection or interpreter exit may take, in seconds.
_FINAL_CLOSE_TIMEOUT = 5.0


class _Loop:
    """The background thread, its event loop and the app opened on it.

    Kept apart from `SyncClient` so that the finalizer that closes it holds no
    reference to the client (which would keep the client alive forever).
    """

    def __init__(self, app: Hephaestus) -> None:
        self.app = app
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        #: The calls running on the loop; touched only from the loop's thread.
        self.calls: set[asyncio.Task[Any]] = set()
        self.thread = threading.Thread(
            target=self._serve, name="hephaestus-sync-client", daemon=True
        )
        self.thread.start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            try:
                self.loop.run_until_complete(self.loop.shutdown_asyncgens())
                self.loop.run_until_complete(self.loop.shutdown_default_executor())
            finally:
                self.loop.close()

    def in_loop_thread(self) -> bool:
        return threading.get_ident() == self.thread.ident

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    async def call(self, fn: Callable[[Hephaestus], Awaitable[T]]) -> T:
        """Run one client call, registered so that `close()` can cancel it."""
        task = asyncio.current_task()
        assert task is not None
        self.calls.add(task)
        try:
            return await fn(self.app)
        finally:
            self.calls.discard(task)

    async def open_app(self) -> None:
        await self.app.open()

    async def close_app(self) -> None:
        """Cancel the calls still running (a `wait()` could last forever), then close the app."""
        running = [task for task in self.calls if not task.done()]
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        await self.app.close()

    def stop(self, timeout: float | None = None) -> None:
        """Stop the loop and wait for its thread; the thread closes the loop as it ends."""
        try:
            self.loop.call_soon_threadsafe(self.loop.stop)
        except RuntimeError:
            return  # already closed
        self.thread.join(timeout)

    def shutdown(self, timeout: float | None = None, quiet: bool = False) -> None:
        """Close the app, then stop the loop; `quiet` logs a failure instead of raising it.

        Called by `SyncClient.close()` (no timeout, errors raised), and by the
        finalizer when the client is garbage-collected or the interpreter exits
        (bounded, quiet: exit must not hang or print tracebacks).
        """
        if os.getpid() != self.pid:
            return  # a forked child: the thread and loop exist only in the parent
        if self.in_loop_thread():
            # Garbage-collected on its own loop: nothing may block here.
            task = self.loop.create_task(self.close_app())
            task.add_done_callback(lambda _: self.loop.stop())
            return
        try:
            self.submit(self.close_app()).result(timeout)
        except BaseException as exc:
            if not quiet:
                raise
            # At exit, the storage's own threads may already be gone; every
            # acknowledged write is already stored, so there is nothing to lose.
            logger.debug("closing a SyncClient that was left open failed: %r", exc)
        finally:
            self.stop(timeout)


class SyncClient:
    """A blocking, thread-safe client of a Hephaestus storage; see the module docstring.

    `storage` is a `Storage` object (`SQLiteStorage`, `PostgresStorage`,
    `MemoryStorage`) or a storage URL (`sqlite:///app.db`,
    `postgresql://host/db`; see `hephaestus.cli._storage_url`). Use it as
    `with SyncClient(...) as client:` in scripts, or keep one per process (a
    module-level object) in a web app.
    """

    def __init__(self, storage: Storage | str) -> None:
        if isinstance(storage, str):
            # Imported here: the URL parser is part of the cli package, which
            # otherwise has nothing to do with a client (it needs no click).
            from hephaestus.cli._storage_url import storage_from_url

            storage = storage_from_url(storage)
        elif not isinstance(storage, Storage):
            raise StorageError(
                f"SyncClient needs a Storage object or a storage URL string, got {storage!r}"
            )
        # The app lives on a private loop: workflow facade calls made on another loop
        # (`await Flow.start(...)` in async code of this process) must not find it.
        self._app = Hephaestus(storage=storage, runner=None, facade=False)
        self._lock = threading.Lock()
        self._state: Literal["new", "open", "closed"] = "new"
        self._loop: _Loop | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None

    def __repr__(self) -> str:
        return f"SyncClient({self._app.storage!r}, {self._state})"

    # -- lifetime --

    def open(self) -> None:
        """Open the storage now rather than at the first call; does nothing if it is open.

        Opening early makes a wrong URL or an unreachable database fail at
        startup instead of in the first request.
        """
        with self._lock:
            self._open_locked()

    def close(self) -> None:
        """Cancel the calls in progress, close the storage and stop the thread; idempotent.

        Calls still in progress, in other threads, raise `StorageError`
        (whether their write was stored is then unknown: `get` tells). Calls
        made after `close()` raise `StorageError`.
        """
        with self._lock:
            loop = self._loop
            if loop is not None and loop.in_loop_thread():
                raise HephaestusError(
                    "SyncClient.close() was called on the client's own event loop thread; "
                    "call it from another thread"
                )
            self._state = "closed"
            finalizer, self._finalizer = self._finalizer, None
        if finalizer is not None and finalizer.detach() is not None and loop is not None:
            loop.shutdown()

    def __enter__(self) -> SyncClient:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _open_locked(self) -> _Loop:
        """The open loop, opening it first if needed; the caller holds `self._lock`."""
        if self._state == "closed":
            raise StorageError(
                "the SyncClient is closed; make a new SyncClient to use the storage again"
            )
        loop = self._loop
        if loop is not None:
            if loop.pid != os.getpid():
                raise StorageError(
                    f"this SyncClient was opened in process {loop.pid}, and this process is "
                    "a fork of it: its thread and connections stayed in the parent. Make the "
                    "client in the forked process, or make no call before the fork (a "
                    "module-level client opens at its first call)"
                )
            return loop
        loop = _Loop(self._app)
        try:
            loop.submit(loop.open_app()).result()
        except BaseException:
            loop.stop()
            raise
        self._loop = loop
        self._state = "open"
        self._finalizer = weakref.finalize(
            self, loop.shutdown, timeout=_FINAL_CLOSE_TIMEOUT, quiet=True
        )
        return loop

    # -- calls --

    def _call(self, fn: Callable[[Hephaestus], Awaitable[T]]) -> T:
        """Run `fn(app)` on the client's loop and block until it returns or raises."""
        with self._lock:
            loop = self._open_locked()
            if loop.in_loop_thread():
                raise HephaestusError(
                    "a SyncClient was called on its own event loop thread (from a telemetry "
                    "handler?): it would wait for itself forever; use the async Hephaestus API"
                )
            # Submitted under the lock, so close() sees every call it has to cancel.
            future = loop.submit(loop.call(fn))
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            if self._state == "closed":
                raise StorageError(
                    "the SyncClient was closed while this call was in progress; whether it "
                    "took effect is unknown (check with get())"
                ) from None
            raise
        except BaseException:
            future.cancel()  # KeyboardInterrupt in a script: stop the call too
            raise

    def start(
        self,
        workflow: type[BaseWorkflow],
        value: str,
        context: Mapping[str, Any] | None = None,
        *,
        version: int | None = None,
        telemetry_metadata: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> str:
        """Start `workflow` for business value `value`; returns the id (`key::value`).

        As `await Flow.start(value, context)`: the id comes from the workflow's
        `unique`; extra keyword `options` go to an umbrella's `version_for`.
        Raises `AlreadyRunningError` if an active instance holds it.
        """
        return self._call(
            lambda app: app.start_business(
                workflow,
                value,
                context,
                version=version,
                telemetry_metadata=telemetry_metadata,
                **options,
            )
        )

    def start_instance(
        self,
        workflow: type[BaseWorkflow],
        context: Mapping[str, Any] | None = None,
        *,
        id: str,
        version: int | None = None,
        telemetry_metadata: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> str:
        """Start `workflow` with the explicit id `key::value`; see `Hephaestus.start_instance`."""
        return self._call(
            lambda app: app.start_instance(
                workflow,
                context,
                id=id,
                version=version,
                telemetry_metadata=telemetry_metadata,
                **options,
            )
        )

    def resume(
        self,
        id: str,
        event: str,
        *,
        step: str | type[Step] | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> None:
        """Deliver `event` with JSON `data`; returns once it is stored. See `Hephaestus.resume`."""
        self._call(lambda app: app.resume(id, event, step=step, data=data))

    def get(self, id: str) -> Instance:
        """The stored instance; raises `InstanceNotFoundError`."""
        return self._call(lambda app: app.get(id))

    def list(self, **filters: Any) -> builtins.list[Instance]:
        """Stored instances in id order, filtered as `Hephaestus.list` says."""
        return self._call(lambda app: app.list(**filters))

    def cancel(self, id: str) -> None:
        """Cancel a running or waiting instance (its runner stops the steps that run)."""
        self._call(lambda app: app.cancel(id))

    def retry(self, id: str) -> None:
        """Run a failed instance again from its failed steps; see `Hephaestus.retry`."""
        self._call(lambda app: app.retry(id))

    def wait(
        self,
        id: str,
        *,
        timeout: float | None = None,
        status: Status | str | Iterable[Status | str] | None = None,
    ) -> Instance:
        """Block until the instance is final (or in `status`); see `Hephaestus.wait`.

        In a web request, pass a `timeout`: the request's thread waits as long
        as the instance takes, and `WaitTimeoutError` is raised after it.
        """
        return self._call(lambda app: app.wait(id, timeout=timeout, status=status))

    def runners(self) -> builtins.list[RunnerRecord]:
        """The runner processes registered in the storage: is anyone there to do the work?"""
        return self._call(lambda app: app.runners())

    def business_id(self, workflow: type[BaseWorkflow], value: str) -> str:
        """The id `key::value` of `workflow`'s instance for `value`; computed, nothing is read."""
        return self._app.business_id(workflow, value)
