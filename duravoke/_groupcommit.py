"""Group commit: threads that write at the same time share one durable write.

The first caller in becomes the writer for everything queued so far; the others wait
for it and return once their items are written. One fsync (or one transaction) then
serves many steps, which is what makes concurrent async steps cheap.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["GroupCommit"]

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
