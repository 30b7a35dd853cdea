"""Group commit: threads that write at the same time share one durable write.

The first caller in becomes the writer for everything queued so far; the others wait
for it and return once their items are written. One fsync (or one transaction) then
serves many steps, which is what makes concurrent async steps cheap.

Async callers queue on the event loop and never block it: a dedicated writer thread,
started on demand and gone after a second idle, writes what they queued and wakes each
waiting event loop once per batch (``call_soon_threadsafe``, or trio's token). In each
loop one task waits for that wake-up and the others wait for that task, so a batch
costs one wake-up per loop, and no generic thread hand-off per step.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import sys
import threading
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

import anyio
import anyio.lowlevel
import anyio.to_thread

__all__ = ["Batcher", "Done", "GroupCommit", "Later", "Then", "Ticket", "Waitable", "copy_failure"]

T = TypeVar("T")
K = TypeVar("K")
V = TypeVar("V")


class GroupCommit(Generic[T]):
    """Calls ``write(batch)`` with everything submitted while the previous write ran.

    A failed write raises ``on_error(failure)`` in every caller whose item it held. With
    ``sticky`` (the default), every later :meth:`submit` raises it too: a failed write
    may have left a partial record, after which nothing may be added. Without, the next
    batch is written as usual (the writer must then recover from a partial write itself).
    ``name`` names the thread that writes for async callers. ``write_now(batch)``, if
    given, writes a batch on an event loop when that cannot wait (it says no otherwise):
    an async caller then needs no thread at all.
    """

    def __init__(
        self,
        write: Callable[[list[T]], None],
        on_error: Callable[[BaseException], Exception],
        *,
        sticky: bool = True,
        name: str = "duravoke-writer",
        write_now: Callable[[list[T]], bool] | None = None,
    ) -> None:
        self._write = write
        self._write_now = write_now
        self._name = name  # of the thread that serves async waiters
        self._on_error = on_error
        self._sticky = sticky
        self._cond = threading.Condition(threading.Lock())
        self._queue: list[T] = []
        self._queued = 0  # tickets handed out
        self._done = 0  # tickets durably written
        self._writing = False
        self._failure: BaseException | None = None
        self._failed: list[tuple[int, int, BaseException]] = []
        # Called (on the writer's thread) after each batch: wake async waiters' loops.
        self._wakers: list[Callable[[], None]] = []
        self._thread: threading.Thread | None = None
        # Per event loop, the task that waits for the writer thread right now, as an
        # event the other tasks of that loop wait on.
        self._leaders: dict[object, anyio.Event] = {}

    def ticket(self, item: T) -> Ticket:
        """Queue ``item``; the ticket waits for it to be written (sync or async)."""
        return Ticket(self, self.enqueue(item))

    def queued(self) -> int:
        """The ticket of the last item queued."""
        return self._queued

    def done(self, ticket: int) -> bool:
        """Whether the item of ``ticket`` was written (or its write failed)."""
        return self._done >= ticket or self._failure is not None

    def submit(self, item: T) -> None:
        """Queue ``item`` and return once it has been written."""
        self.wait(self.enqueue(item))

    def enqueue(self, item: T) -> int:
        """Queue ``item`` without waiting; pass the returned ticket to :meth:`wait`.

        Async callers enqueue on the event loop and wait in a worker thread: every task
        of a task group gets its item queued before the first worker thread even starts,
        so one write serves them all.
        """
        return self.enqueue_many([item])

    def enqueue_many(self, items: list[T]) -> int:
        """Queue ``items`` at once, so that one batch holds them all; the ticket of the last."""
        with self._cond:
            self._queue.extend(items)
            self._queued += len(items)
            return self._queued

    def wait(self, ticket: int) -> None:
        """Return once the item of ``ticket`` is written, writing it if nobody else is."""
        with self._cond:
            while self._done < ticket:
                if self._failure is not None:
                    raise self._on_error(self._failure) from self._failure
                if self._writing:
                    self._cond.wait()
                else:
                    self._write_queued()
            self._raise_failure_of(ticket)

    async def wait_async(self, ticket: int) -> None:
        """:meth:`wait` without blocking the event loop: the writer thread writes."""
        key, call_soon = _running_loop()
        while not self.done(ticket):
            leader = self._leaders.get(key)
            if leader is not None:
                await leader.wait()
                continue
            leader = self._leaders[key] = anyio.Event()
            try:
                if self._write_now is not None:
                    # This loop's other ready tasks queue theirs first: one write for all.
                    await anyio.lowlevel.checkpoint()
                    if self._wrote_now(self._write_now):
                        continue
                # Everything queued so far, this loop's other tasks' items included.
                await self._written_async(self.queued(), call_soon)
            finally:
                del self._leaders[key]
                leader.set()
        self.wait(ticket)  # done: returns, or raises the failure of its batch

    def _wrote_now(self, write_now: Callable[[list[T]], bool]) -> bool:
        """Whether what is queued was just written with ``write_now`` (on the loop)."""
        with self._cond:
            if not self._queue or self._writing or self._failure is not None:
                return False
            return self._write_queued(write_now)

    async def _written_async(self, ticket: int, call_soon: Callable[[Any], object]) -> None:
        while True:
            with self._cond:
                if self.done(ticket):
                    return
                woken = anyio.Event()
                self._wakers.append(functools.partial(_wake, call_soon, woken.set))
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(
                        target=self._serve, name=self._name, daemon=True
                    )
                    self._thread.start()
                else:
                    self._cond.notify_all()
            await woken.wait()

    def _serve(self) -> None:
        """The writer thread: writes what is queued, exits after a second with nothing."""
        with self._cond:
            while True:
                if self._queue and not self._writing and self._failure is None:
                    self._write_queued()
                elif not self._cond.wait(timeout=_IDLE) and not (
                    self._queue and self._failure is None
                ):
                    self._thread = None
                    return

    def _write_queued(self, write_now: Callable[[list[T]], bool] | None = None) -> bool:
        """Write the queued batch (the condition is held, and released while writing);
        with ``write_now``, only if it can (else the batch goes back in the queue and
        this returns False)."""
        batch, self._queue = self._queue, []
        first, upto, self._writing = self._done + 1, self._queued, True
        self._cond.release()
        failure: BaseException | None = None
        wrote = True
        try:
            if write_now is None:
                self._write(batch)
            else:
                wrote = write_now(batch)
        except BaseException as exc:
            failure = exc
        self._cond.acquire()
        self._writing = False
        if not wrote:
            self._queue[:0] = batch  # ahead of what was queued meanwhile: order is kept
            self._cond.notify_all()
            return False
        if failure is not None:
            if self._sticky:
                self._failure = failure
            # Kept for the waiters of that batch; a few suffice, since they are woken
            # right now.
            self._failed = [*self._failed[-63:], (first, upto, failure)]
        self._done = upto
        wakers, self._wakers = self._wakers, []
        self._cond.notify_all()
        for wake in wakers:
            wake()
        return True

    def _raise_failure_of(self, ticket: int) -> None:
        for first, upto, failure in self._failed:
            if first <= ticket <= upto:
                raise self._on_error(failure) from failure


#: How long the writer thread waits for work before it exits.
_IDLE = 1.0


def _wake(call_soon: Callable[[Any], object], callback: Callable[[], object]) -> None:
    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
        call_soon(callback)


def _running_loop() -> tuple[object, Callable[[Any], object]]:
    """The running event loop (a key) and its thread-safe "call this soon"."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        trio = sys.modules.get("trio")
        if trio is None:
            raise
        token = trio.lowlevel.current_trio_token()
        return token, token.run_sync_soon
    return loop, loop.call_soon_threadsafe


class Waitable(Protocol):
    """Records queued for writing: wait until they are durable."""

    def wait(self) -> None:
        """Block until the records are durable."""

    async def wait_async(self) -> None:
        """Wait until the records are durable, without blocking the event loop."""


class Done:
    """Records that were durable as soon as they were queued (an in-memory store)."""

    def wait(self) -> None:
        """Nothing to wait for."""

    async def wait_async(self) -> None:
        """Nothing to wait for."""


class Ticket:
    """An item queued in a :class:`GroupCommit`; wait for it with :meth:`wait` or
    :meth:`wait_async`."""

    __slots__ = ("_commit", "_number")

    def __init__(self, commit: GroupCommit[Any], number: int) -> None:
        self._commit = commit
        self._number = number

    def wait(self) -> None:
        """Block until the item is written; raise if its write failed."""
        self._commit.wait(self._number)

    async def wait_async(self) -> None:
        """Wait until the item is written without blocking the event loop."""
        await self._commit.wait_async(self._number)


class Later:
    """Work done by whoever waits: in the waiting thread, or in a worker thread for an
    async waiter (it may block)."""

    __slots__ = ("_work",)

    def __init__(self, work: Callable[[], None]) -> None:
        self._work = work

    def wait(self) -> None:
        """Do the work."""
        self._work()

    async def wait_async(self) -> None:
        """Do the work in a worker thread."""
        await anyio.to_thread.run_sync(self._work)


class Then:
    """Wait for ``first``, then (even if it failed) call ``then``, which an async waiter
    calls on its event loop: it must never block."""

    __slots__ = ("_first", "_then")

    def __init__(self, first: Waitable, then: Callable[[], None]) -> None:
        self._first = first
        self._then = then

    def wait(self) -> None:
        """Wait for the first part, then do the second."""
        try:
            self._first.wait()
        finally:
            self._then()

    async def wait_async(self) -> None:
        """Wait for the first part without blocking the loop, then do the second."""
        try:
            await self._first.wait_async()
        finally:
            self._then()


class Batcher(Generic[K, V]):
    """Answers lookups that threads make at the same time with one call of ``lookup``.

    ``lookup(keys)`` returns the answers it has (a key it leaves out gets ``default``).
    The first caller in looks up every key queued so far, as group commit writes, so
    500 workflows opened at once cost a few queries rather than 500. With ``exclusive``,
    the answer is something taken (a lock): of several requests for one key in a batch,
    only the first gets it, the others get ``default``.
    """

    def __init__(
        self, lookup: Callable[[list[K]], dict[K, V]], default: V, *, exclusive: bool = False
    ) -> None:
        self._lookup = lookup
        self._default = default
        self._exclusive = exclusive
        self._commit: GroupCommit[_Request[K, V]]
        self._commit = GroupCommit(self._run, copy_failure, sticky=False)

    def get(self, key: K) -> V:
        """The answer for ``key`` (it may wait for the lookup: not on an event loop)."""
        return self.get_many([key])[0]

    def get_many(self, keys: list[K]) -> list[V]:
        """The answers for ``keys``, looked up together (and with other callers' keys)."""
        requests = [_Request(key, self._default) for key in keys]
        self._commit.wait(self._commit.enqueue_many(requests))
        return [request.value for request in requests]

    def _run(self, batch: list[_Request[K, V]]) -> None:
        found = self._lookup(list(dict.fromkeys(r.key for r in batch)))
        for request in batch:
            if request.key in found:
                request.value = found.pop(request.key) if self._exclusive else found[request.key]


class _Request(Generic[K, V]):
    __slots__ = ("key", "value")

    def __init__(self, key: K, value: V) -> None:
        self.key = key
        self.value = value


def copy_failure(failure: BaseException) -> Exception:
    """What each waiter of a failed batch raises: an exception of its own (same type and
    message), so that no two tasks raise (and add tracebacks to) one object."""
    if isinstance(failure, Exception):
        try:
            return copy.copy(failure)
        except Exception:  # pragma: no cover - an exception that cannot be copied
            return failure
    return RuntimeError(f"the lookup was interrupted: {failure!r}")
