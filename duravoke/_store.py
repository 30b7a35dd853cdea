"""The store interface: what every kind of store (files, memory, Postgres) provides.

A store hands out :class:`Lease` objects: holding one means holding the workflow's
lock, so exactly one process or thread runs that workflow. Through the lease the
runner loads the workflow's state, appends records durably, and finally hands the
finished state back. Stores never decide anything about replay; that logic lives in
one place for all of them.
"""

from __future__ import annotations

import abc
import functools
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Literal

from ._errors import CorruptStateError, WorkflowBusyError, WorkflowNotFoundError
from ._logging import logger
from ._state import Record, State, decide

__all__ = ["Durability", "Lease", "Store", "check_durability"]

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
            found = self.drop_messages(workflow_id) or found
        finally:
            lease.close(None)
        if not found:
            raise WorkflowNotFoundError(
                f"no workflow {workflow_id!r} in {self.location}; `duravoke list` shows them.",
                workflow_id=workflow_id,
            )

    def due(self, now: datetime) -> list[str]:
        """The ids of the workflows a runner should run (or give up on) now.

        Pending ones; interrupted ones (recorded as running: whether their lock is free
        is for the runner to find out); failed ones with attempts left and their
        backoff passed; sleeping ones past their wake time; waiting ones whose message
        arrived or whose timeout passed. See :func:`duravoke._state.decide`.

        This generic version reads every workflow's state; damaged ones are skipped
        with a warning.
        """
        found = []
        for workflow_id in self.workflow_ids():
            try:
                state = self.read(workflow_id)
            except CorruptStateError as exc:
                logger.warning("skipping workflow %r: %s", workflow_id, exc)
                continue
            if state is not None and decide(state, now, self._has_message(state, workflow_id)):
                found.append(workflow_id)
        return found

    def _has_message(self, state: State, workflow_id: str) -> bool:
        if state["status"] != "waiting" or not isinstance(state.get("topic"), str):
            return False
        return bool(self.messages(workflow_id, state["topic"], int(state.get("after") or 0)))

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

    def drop_messages(self, workflow_id: str) -> bool:
        """Delete a workflow's inbox; tell whether it had one."""
        return False

    def close(self) -> None:  # noqa: B027 - most stores keep nothing open
        """Release what the store keeps open (connections, files); it can be used again."""


def check_durability(durability: object) -> Durability:
    """``durability`` if it names a durability mode (``"fsync"`` or ``"flush"``)."""
    if durability not in ("fsync", "flush"):
        raise ValueError(f"durability must be 'fsync' or 'flush', not {durability!r}")
    return durability
