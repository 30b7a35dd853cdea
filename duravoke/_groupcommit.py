"""Group commit: threads that write at the same time share one durable write.

The first caller in becomes the writer for everything queued so far; the others wait
for it and return once their items are written. One fsync (or one transaction) then
serves many steps, which is what makes concurrent async steps cheap.

Async callers queue on the event loop and wait without blocking it: in each event loop,
one task (the first to wait) waits for the writer in a worker thread, and the others
wait for that task, so a batch costs one thread hand-off, not one per step.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

import anyio
from anyio.lowlevel import RunVar

__all__ = ["Done", "GroupCommit", "Ticket", "Waitable"]

T = TypeVar("T")


class GroupCommit(Generic[T]):
    """Calls ``write(batch)`` with everything submitted while the previous write ran.

    A failed write raises ``on_error(failure)`` in every caller whose item it held. With
    ``sticky`` (the default), every later :meth:`submit` raises it too: a failed write
    may have left a partial record, after which nothing may be added. Without, the next
    batch is written as usual (the writer must then recover from a partial write itself).
    """

    def __init__(
        self,
        write: Callable[[list[T]], None],
        on_error: Callable[[BaseException], Exception],
        *,
        sticky: bool = True,
    ) -> None:
        self._write = write
        self._on_error = on_error
        self._sticky = sticky
        self._cond = threading.Condition(threading.Lock())
        self._queue: list[T] = []
        self._queued = 0  # tickets handed out
        self._done = 0  # tickets durably written
        self._writing = False
        self._failure: BaseException | None = None
        self._failed: list[tuple[int, int, BaseException]] = []

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
        with self._cond:
            self._queue.append(item)
            self._queued += 1
            return self._queued

    def wait(self, ticket: int) -> None:
        """Return once the item of ``ticket`` is written, writing it if nobody else is."""
        with self._cond:
            while self._done < ticket:
                if self._failure is not None:
                    raise self._on_error(self._failure) from self._failure
                if self._writing:
                    self._cond.wait()
                    continue
                batch, self._queue = self._queue, []
                first, upto, self._writing = self._done + 1, self._queued, True
                self._cond.release()
                failure: BaseException | None = None
                try:
                    self._write(batch)
                except BaseException as exc:
                    failure = exc
                finally:
                    self._cond.acquire()
                    self._writing = False
                    self._cond.notify_all()
                if failure is not None and self._sticky:
                    self._failure = failure
                    raise self._on_error(failure) from failure
                self._done = upto
                if failure is not None:
                    # Kept for the waiters of that batch; a few suffice, since they are
                    # woken right now.
                    self._failed = [*self._failed[-63:], (first, upto, failure)]
            for first, upto, failure in self._failed:
                if first <= ticket <= upto:
                    raise self._on_error(failure) from failure


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


# Per event loop: the task that waits for the writer in a worker thread right now, as an
# event the other tasks of that loop wait on.
_flushing: RunVar[dict[int, anyio.Event]] = RunVar("duravoke_flushing")


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
        commit, number = self._commit, self._number
        try:
            flushing = _flushing.get()
        except LookupError:
            flushing = {}
            _flushing.set(flushing)
        key = id(commit)
        while not commit.done(number):
            event = flushing.get(key)
            if event is not None:
                await event.wait()
                continue
            event = flushing[key] = anyio.Event()
            try:
                # Everything queued so far, this loop's other tasks' items included. A
                # failure of other items' batch is theirs to raise, below.
                with contextlib.suppress(Exception):
                    await anyio.to_thread.run_sync(commit.wait, commit.queued())
            finally:
                del flushing[key]
                event.set()
            break
        commit.wait(number)  # done: returns, or raises the failure of its batch
