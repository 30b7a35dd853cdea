"""The store interface: what every kind of store (files, memory, Postgres) provides.

A store hands out :class:`Lease` objects: holding one means holding the workflow's
lock, so exactly one process or thread runs that workflow. Through the lease the
runner loads the workflow's state, appends records durably, and finally hands the
finished state back. Stores never decide anything about replay; that logic lives in
one place for all of them.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Literal

from ._errors import WorkflowBusyError, WorkflowNotFoundError
from ._groupcommit import Waitable
from ._state import Record, State

__all__ = ["Durability", "Lease", "Store", "check_durability"]

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
