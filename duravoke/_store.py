"""The store interface: what every kind of store (files, memory, Postgres) provides.

A store hands out :class:`Lease` objects: holding one means holding the workflow's
lock, so exactly one process or thread runs that workflow. Through the lease the
runner loads the workflow's state, appends records durably, and finally hands the
finished state back. Stores never decide anything about replay; that logic lives in
one place for all of them.
"""

from __future__ import annotations

import abc
import contextlib
import functools
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from ._errors import CorruptStateError, WorkflowBusyError, WorkflowNotFoundError
from ._groupcommit import Later, Waitable
from ._logging import logger
from ._state import Record, State, decide, summarize

__all__ = ["Durability", "Lease", "Store", "check_durability", "waits"]

Durability = Literal["fsync", "flush"]


class Lease(abc.ABC):
    """The right to run one workflow, and the way to its state. Not reentrant."""

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

    @abc.abstractmethod
    def enqueue(self, records: Sequence[Record]) -> Waitable:
        """Queue ``records`` without blocking; wait on the result to make them durable.

        The order of enqueue calls is the order of the records. Many tasks queue first
        and then share one write (group commit).
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Release the lock (what was appended is recorded already)."""

    def release(self, records: Sequence[Record]) -> Waitable:
        """Queue a run's last ``records`` (maybe none), then the lock's release.

        Waiting on the result returns once the records are durable and the lock is
        released; if writing fails, it raises, with the lock released all the same. This
        default does both in the waiting call (a worker thread, for async callers);
        stores that can, make them part of a group-commit batch, so that an async run
        ends without a thread hand-off of its own.
        """
        return Later(functools.partial(_append_then_close, self, records))

    @abc.abstractmethod
    def forget(self) -> bool:
        """Delete every record of the workflow; tell whether there was any."""


class Store(abc.ABC):
    """Where workflows keep their state.

    Subclasses implement :meth:`try_lock`, :meth:`read`, :meth:`workflow_ids`,
    the inbox (:meth:`send`, :meth:`messages`, :meth:`drop_messages`) and describe
    themselves with :attr:`location`. :meth:`due` has a generic implementation that
    reads every workflow; a store with an index of due workflows overrides it.
    """

    @property
    @abc.abstractmethod
    def location(self) -> str:
        """Where the state lives, for messages and ``duravoke where``."""

    @abc.abstractmethod
    def try_lock(self, workflow_id: str) -> Lease | None:
        """Take the workflow's lock without waiting; None when someone else holds it."""

    def try_lock_many(self, workflow_ids: list[str]) -> list[Lease | None]:
        """:meth:`try_lock` for several workflows at once (a store that can, in one round
        trip): workflows that start together are opened together."""
        return [self.try_lock(workflow_id) for workflow_id in workflow_ids]

    def load_many(self, leases: list[Lease]) -> list[State | Exception]:
        """Each lease's :meth:`Lease.load`, in order; a workflow whose state cannot be
        loaded gets its error, which is its own (a store that reads all in one round trip
        may instead raise for all)."""
        return [_load_or_error(lease) for lease in leases]

    @abc.abstractmethod
    def read(self, workflow_id: str) -> State | None:
        """The recorded state of a workflow without taking its lock; None if unknown."""

    @abc.abstractmethod
    def workflow_ids(self) -> list[str]:
        """The ids of every workflow with recorded state."""

    def summaries(self) -> dict[str, State]:
        """Every workflow's summary: its state without the steps, with step counts (see
        ``_state.summarize``). Stores override this to answer without reading every
        workflow; this default reads each one, skipping those that cannot be read."""
        found = {}
        for workflow_id in self.workflow_ids():
            with contextlib.suppress(CorruptStateError):
                state = self.read(workflow_id)
                if state is not None:
                    found[workflow_id] = summarize(state)
        return found

    def suspects(self, summaries: dict[str, State]) -> set[str]:
        """Which of ``summaries`` (from :meth:`summaries`) may not match their workflow's
        state, e.g. because a file was changed behind the store's back: a listing reads
        these in full."""
        return set()

    def lock(self, workflow_id: str, timeout: float | None = None) -> Lease:
        """Take the workflow's lock, waiting at most ``timeout`` seconds (None: forever).

        For tools that hold a workflow without running it; ``workflow()`` uses the same
        waiting rule.

        Raises:
            WorkflowBusyError: it was not free within ``timeout``.
        """
        for delay in waits(workflow_id, timeout):
            lease = self.try_lock(workflow_id)
            if lease is not None:
                return lease
            time.sleep(delay)
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
            found = self.drop_messages(workflow_id) or found
        finally:
            lease.close()
        if not found:
            raise WorkflowNotFoundError(
                f"no workflow {workflow_id!r} in {self.location}; `duravoke list` shows them.",
                workflow_id=workflow_id,
            )

    def checkpoint(self) -> None:  # noqa: B027 - most stores have nothing to do
        """Make what the store keeps for people to read current (the file stores fold their
        log into their state files); other stores write everything in place already."""

    def due(self, now: datetime) -> list[str]:
        """The ids of the workflows a runner should run (or give up on) now.

        Pending ones; interrupted ones (recorded as running: whether their lock is free
        is for the runner to find out); failed ones with attempts left and their
        backoff passed; sleeping ones past their wake time; waiting ones whose message
        arrived or whose timeout passed. See :func:`duravoke._state.decide`.

        Decided from the summaries (:meth:`summaries`): the file stores and Postgres
        answer from an index, without reading every workflow.
        """
        return [
            workflow_id
            for workflow_id, summary in self.summaries().items()
            if decide(summary, now, self._has_message(summary, workflow_id))
        ]

    def _has_message(self, summary: State, workflow_id: str) -> bool:
        """Whether a message waits for a workflow waiting on a topic."""
        if summary["status"] != "waiting" or not isinstance(summary.get("topic"), str):
            return False
        return bool(self.messages(workflow_id, summary["topic"], int(summary.get("after") or 0)))

    def send(self, workflow_id: str, topic: str, data: str) -> int:
        """Add a message to a workflow's inbox, durably, without its lock.

        Args:
            workflow_id: the receiving workflow; it need not exist yet.
            topic: the topic it is received under.
            data: the message's value, already encoded as JSON text.

        Returns:
            Its sequence number: 1, 2, 3... per workflow and topic, in send order.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot hold messages")

    def messages(self, workflow_id: str, topic: str, after: int) -> list[tuple[int, Any]]:
        """The messages on ``topic`` with a sequence number above ``after``, in order.

        Each is (sequence number, decoded JSON). Receiving records which sequence number
        it took, so the inbox itself never changes on receive.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot hold messages")

    def with_messages(self, topic: str, workflow_ids: Iterable[str]) -> set[str]:
        """Which of ``workflow_ids`` ever had a message on ``topic``, in one lookup where
        the store can (the file stores answer from their view of the log, Postgres in
        one query)."""
        return {w for w in workflow_ids if self.messages(w, topic, 0)}

    def drop_messages(self, workflow_id: str) -> bool:
        """Delete a workflow's inbox; tell whether it had one."""
        return False

    def close(self) -> None:  # noqa: B027 - most stores keep nothing open
        """Release what the store keeps open (connections, files); it can be used again."""


_T = TypeVar("_T")


class PerStore(Generic[_T]):
    """One object per store in this process (``make(store)`` builds it on first use),
    freed with the store: what it makes must not hold the store strongly."""

    def __init__(self, make: Callable[[Store], _T]) -> None:
        self._make = make
        self._made: weakref.WeakKeyDictionary[Store, _T] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def __call__(self, store: Store) -> _T:
        """The object of ``store``."""
        with self._lock:
            made = self._made.get(store)
            if made is None:
                made = self._made[store] = self._make(store)
            return made


def _load_or_error(lease: Lease) -> State | Exception:
    try:
        return lease.load()
    except Exception as exc:
        return exc


def _append_then_close(lease: Lease, records: Sequence[Record]) -> None:
    try:
        if records:
            lease.append(records)
    finally:
        lease.close()


def check_durability(durability: object) -> Durability:
    """``durability`` if it names a durability mode (``"fsync"`` or ``"flush"``)."""
    if durability not in ("fsync", "flush"):
        raise ValueError(f"durability must be 'fsync' or 'flush', not {durability!r}")
    return durability


def waits(workflow_id: str, timeout: float | None) -> Iterator[float]:
    """How long to sleep between lock attempts: a growing delay, up to ``timeout`` in all.

    Polling: file locks cannot be awaited, and polling is what lets an async waiter be
    cancelled cleanly. Logs once that the workflow is busy.

    Raises:
        WorkflowBusyError: when the next attempt would pass ``timeout``.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    delay = 0.001
    waited = False
    while True:
        left = None if deadline is None else deadline - time.monotonic()
        yield delay if left is None else max(0.0, min(delay, left))
        if left is not None and left <= 0:
            raise WorkflowBusyError(
                f"workflow {workflow_id!r} is being run by another process or thread and did"
                f" not become free within {timeout} s; wait for it, or raise timeout=.",
                workflow_id=workflow_id,
            )
        if not waited:
            waited = True
            logger.info("workflow %r is being run elsewhere; waiting for it", workflow_id)
        delay = min(delay * 2, 0.05)
