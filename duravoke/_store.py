"""The store interface: what every kind of store (files, memory, Postgres) provides.

A store hands out :class:`Lease` objects: holding one means holding the workflow's
lock, so exactly one process or thread runs that workflow. Through the lease the
runner loads the workflow's state, appends records durably, and finally hands the
finished state back. Stores never decide anything about replay; that logic lives in
one place for all of them.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Iterator, Sequence
from typing import Literal

from ._errors import WorkflowBusyError, WorkflowNotFoundError
from ._groupcommit import Waitable
from ._logging import logger
from ._state import Record, State

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
        finally:
            lease.close()
        if not found:
            raise WorkflowNotFoundError(
                f"no workflow {workflow_id!r} in {self.location}; `duravoke list` shows them.",
                workflow_id=workflow_id,
            )

    def close(self) -> None:  # noqa: B027 - most stores keep nothing open
        """Release what the store keeps open (connections, files); it can be used again."""


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
