"""Cancellation requests (``duravoke cancel``): a message that running workflows look for.

A run looks at most every :data:`CANCEL_CHECK_INTERVAL` seconds, and the runs of one
process on one store look together: one store lookup answers for all of them, so
hundreds of workflows in flight cost a couple of lookups a second, not hundreds, and an
async step reads the answer on its event loop without a thread hand-off.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import Counter
from typing import TYPE_CHECKING

from ._groupcommit import Batcher
from ._store import PerStore

if TYPE_CHECKING:
    from ._store import Store

__all__ = ["CANCEL_CHECK_INTERVAL", "CANCEL_TOPIC", "CancelWatch", "watch_of"]

#: The inbox topic that asks a running workflow to stop (``duravoke cancel``).
CANCEL_TOPIC = "duravoke.cancel"

#: How often a run looks for a cancellation request, at most, in seconds.
CANCEL_CHECK_INTERVAL = 0.5


class CancelWatch:
    """Which of this process's running workflows on one store were asked to cancel.

    A request is never taken back, so answers only ever turn from no to yes.
    """

    def __init__(self, store: Store) -> None:
        # Weak: the registry of watches (PerStore) is keyed weakly by store, and a strong
        # reference from its value would keep every store (and its open files) alive.
        self._store = weakref.ref(store)
        # Held only for a few dict operations (never across a lookup): fine on a loop.
        self._lock = threading.Lock()
        self._running: Counter[str] = Counter()  # runs in this process, per workflow id
        self._asked: set[str] = set()
        self._checked = -CANCEL_CHECK_INTERVAL
        self._looking = False
        # The first look of runs that start together is one lookup.
        self._first: Batcher[str, bool] = Batcher(self._first_look, False)

    def first_look(self, workflow_ids: list[str]) -> list[bool]:
        """Whether each of these workflows, about to run, was asked to cancel: a request
        sent before a run started counts before its first step. It may wait for the
        store (a worker thread's work); runs that start together share one lookup."""
        return self._first.get_many(workflow_ids)

    def watch(self, workflow_id: str, asked: bool) -> None:
        """Look for requests to ``workflow_id`` until :meth:`unwatch`, starting from the
        answer of :meth:`first_look`. Never waits."""
        with self._lock:
            self._running[workflow_id] += 1
            if asked:
                self._asked.add(workflow_id)

    def unwatch(self, workflow_id: str) -> None:
        """The run of ``workflow_id`` ended."""
        with self._lock:
            self._running[workflow_id] -= 1
            if self._running[workflow_id] <= 0:
                del self._running[workflow_id]
                self._asked.discard(workflow_id)

    def asked(self, workflow_id: str) -> bool:
        """The answer as of the last lookup; never waits."""
        return workflow_id in self._asked

    def due(self) -> bool:
        """Whether the caller should look now, with :meth:`look` (it then does so for
        every run of the process: the others keep using the last answers meanwhile).
        Never waits."""
        with self._lock:
            if self._looking or time.monotonic() - self._checked < CANCEL_CHECK_INTERVAL:
                return False
            self._looking = True
            return True

    def look(self) -> None:
        """Look up every watched run, after :meth:`due` said so (it may wait for the
        store: never call it on an event loop)."""
        try:
            with self._lock:
                ids = list(self._running)
            asked = _asked(self._store(), ids)
            with self._lock:
                self._asked |= asked & set(self._running)
        finally:
            with self._lock:
                self._checked = time.monotonic()
                self._looking = False

    def _first_look(self, workflow_ids: list[str]) -> dict[str, bool]:
        return dict.fromkeys(_asked(self._store(), workflow_ids), True)


def _asked(store: Store | None, workflow_ids: list[str]) -> set[str]:
    if store is None:  # gone: nobody runs on it any more
        return set()
    try:
        return store.with_messages(CANCEL_TOPIC, workflow_ids)
    except NotImplementedError:  # a store without an inbox cannot be cancelled remotely
        return set()


#: The one :class:`CancelWatch` of a store in this process.
watch_of: PerStore[CancelWatch] = PerStore(CancelWatch)
