"""The store interface, and the store that keeps everything in memory.

A store hands out :class:`Lease` objects: holding one means holding the workflow's
lock, so exactly one process or thread runs that workflow. Through the lease the
runner loads the workflow's state, appends records durably, and finally hands the
finished state back. Stores never decide anything about replay; that logic lives in
one place for all of them.
"""

from __future__ import annotations

import abc
import copy
import functools
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Literal

import anyio

from ._errors import WorkflowBusyError, WorkflowNotFoundError
from ._state import Record, State, apply, new_state

__all__ = ["Durability", "InMemoryKKV", "Lease", "Store"]

Durability = Literal["fsync", "flush"]


class Lease(abc.ABC):
    """The right to run one workflow, and the way to its state. Not reentrant."""

    #: Whether :meth:`append` may block on disk (async callers then use a worker thread).
    blocking: bool = False

    def __init__(self, workflow_id: str) -> None:
        self.workflow_id = workflow_id

    @abc.abstractmethod
    def load(self) -> State:
        """The workflow's recorded state; the caller owns the returned dict."""

    @abc.abstractmethod
    def append(self, records: Sequence[Record]) -> None:
        """Record ``records`` in order; they are durable when this returns.

        Safe to call from several threads at once: concurrent callers share one
        write and one fsync (group commit).
        """

    def enqueue(self, records: Sequence[Record]) -> Callable[[], None]:
        """Queue ``records`` without blocking; call the returned function to make them durable.

        The order of enqueue calls is the order of the records. Stores with group commit
        override this so that many tasks queue first and share one write; by default the
        returned function simply calls :meth:`append`.
        """
        return functools.partial(self.append, records)

    @abc.abstractmethod
    def close(self, state: State | None) -> None:
        """Store ``state`` (the final state of this run) if given, and release the lock."""

    @abc.abstractmethod
    def forget(self) -> bool:
        """Delete every record of the workflow; tell whether there was any."""


class Store(abc.ABC):
    """Where workflows keep their state.

    Subclasses implement :meth:`try_lock`, :meth:`read`, :meth:`workflow_ids` and
    describe themselves with :attr:`location`.
    """

    @property
    @abc.abstractmethod
    def location(self) -> str:
        """Where the state lives, for messages and ``duravoke where``."""

    @abc.abstractmethod
    def try_lock(self, workflow_id: str) -> Lease | None:
        """Take the workflow's lock without waiting; None when someone else holds it."""

    @abc.abstractmethod
    def read(self, workflow_id: str) -> State | None:
        """The recorded state of a workflow without taking its lock; None if unknown."""

    @abc.abstractmethod
    def workflow_ids(self) -> list[str]:
        """The ids of every workflow with recorded state."""

    def lock(self, workflow_id: str, timeout: float | None = None) -> Lease:
        """Take the workflow's lock, waiting at most ``timeout`` seconds (None: forever)."""
        for delay in self._waits(workflow_id, timeout):
            lease = self.try_lock(workflow_id)
            if lease is not None:
                return lease
            time.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    async def alock(self, workflow_id: str, timeout: float | None = None) -> Lease:
        """:meth:`lock` for async code: waits without blocking the event loop."""
        for delay in self._waits(workflow_id, timeout):
            lease = self.try_lock(workflow_id)
            if lease is not None:
                return lease
            await anyio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def forget(self, workflow_id: str) -> None:
        """Delete a workflow's state; it must not be running.

        Raises:
            WorkflowBusyError: the workflow is running right now.
            WorkflowNotFoundError: nothing is recorded under that id.
        """
        lease = self.try_lock(workflow_id)
        if lease is None:
            raise WorkflowBusyError(
                f"workflow {workflow_id!r} is running; forget it once it has stopped.",
                workflow_id=workflow_id,
            )
        try:
            found = lease.forget()
        finally:
            lease.close(None)
        if not found:
            raise WorkflowNotFoundError(
                f"no workflow {workflow_id!r} in {self.location}; `duravoke list` shows them.",
                workflow_id=workflow_id,
            )

    def _waits(self, workflow_id: str, timeout: float | None) -> Iterator[float]:
        # Polling with a growing delay: file locks cannot be awaited, and polling is
        # what lets an async waiter be cancelled cleanly.
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.001
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            yield delay if left is None else max(0.0, min(delay, left))
            if left is not None and left <= 0:
                raise WorkflowBusyError(
                    f"workflow {workflow_id!r} is being run by another process or thread and"
                    f" did not become free within {timeout} s; wait for it, or raise timeout=.",
                    workflow_id=workflow_id,
                )
            delay = min(delay * 2, 0.05)


class InMemoryKKV(Store):
    """A store that lives in this process's memory and vanishes with it.

    Useful in tests and for code that only wants replay within one process. It obeys
    the same locking rules as the file stores, across threads.
    """

    def __init__(self) -> None:
        self._states: dict[str, State] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    @property
    def location(self) -> str:
        """``memory:`` followed by this store's id."""
        return f"memory:{id(self):x}"

    def try_lock(self, workflow_id: str) -> Lease | None:
        """Take the workflow's lock without waiting."""
        with self._guard:
            lock = self._locks.setdefault(workflow_id, threading.Lock())
        return _MemoryLease(self, workflow_id, lock) if lock.acquire(blocking=False) else None

    def read(self, workflow_id: str) -> State | None:
        """A copy of the workflow's state."""
        with self._guard:
            state = self._states.get(workflow_id)
            return None if state is None else copy.deepcopy(state)

    def workflow_ids(self) -> list[str]:
        """Every workflow with recorded state."""
        with self._guard:
            return list(self._states)


class _MemoryLease(Lease):
    def __init__(self, store: InMemoryKKV, workflow_id: str, lock: threading.Lock) -> None:
        super().__init__(workflow_id)
        self._store = store
        self._lock = lock

    def load(self) -> State:
        return self._store.read(self.workflow_id) or new_state()

    def append(self, records: Sequence[Record]) -> None:
        with self._store._guard:
            state = self._store._states.setdefault(self.workflow_id, new_state())
            for record in records:
                apply(state, copy.deepcopy(record))

    def close(self, state: State | None) -> None:
        try:
            if state is not None:
                with self._store._guard:
                    self._store._states[self.workflow_id] = copy.deepcopy(state)
        finally:
            self._lock.release()

    def forget(self) -> bool:
        with self._store._guard:
            return self._store._states.pop(self.workflow_id, None) is not None
