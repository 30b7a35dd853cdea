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

if TYPE_CHECKING:
    from ._store import Store

__all__ = ["CANCEL_CHECK_INTERVAL", "CANCEL_TOPIC", "CancelWatch", "watch_of"]

#: The inbox topic that asks a running workflow to stop (``duravoke cancel``).
CANCEL_TOPIC = "duravoke.cancel"

#: How often a run looks for a cancellation request, at most, in seconds.
CANCEL_CHECK_INTERVAL = 0.5


class CancelWatch:
    """Which of this process's running workflows on one store were asked to cancel."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._running: Counter[str] = Counter()  # runs in this process, per workflow id
        self._covered: set[str] = set()  # the ids the last lookup answered for
        self._asked: set[str] = set()
        self._checked = -CANCEL_CHECK_INTERVAL

    def watch(self, workflow_id: str) -> None:
        """Look for requests to ``workflow_id`` until :meth:`unwatch`; it may wait for the
        store (a worker thread's work): a request sent before the run started counts."""
        asked = _asked(self._store, [workflow_id])
        with self._lock:
            self._running[workflow_id] += 1
            self._covered.add(workflow_id)
            if asked:
                self._asked.add(workflow_id)

    def unwatch(self, workflow_id: str) -> None:
        """The run of ``workflow_id`` ended."""
        with self._lock:
            self._running[workflow_id] -= 1
            if self._running[workflow_id] <= 0:
                del self._running[workflow_id]

    def known(self, workflow_id: str) -> bool | None:
        """The answer for ``workflow_id`` if it is fresh, else None; never waits."""
        if time.monotonic() - self._checked >= CANCEL_CHECK_INTERVAL:
            return None
        if workflow_id in self._asked:
            return True
        return False if workflow_id in self._covered else None

    def check(self, workflow_id: str) -> bool:
        """The answer for ``workflow_id``, looked up for every watched run if it is not
        fresh (it may wait for the store: never call it on an event loop)."""
        with self._lock:
            known = self.known(workflow_id)
            if known is not None:
                return known
            ids = sorted({*self._running, workflow_id})
            # Other runs keep the answers they have until this lookup ends, rather than
            # all looking up at once.
            self._checked = time.monotonic()
            self._covered.add(workflow_id)
        try:
            asked = _asked(self._store, ids)
        except BaseException:
            with self._lock:
                self._checked = -CANCEL_CHECK_INTERVAL  # look again next time
            raise
        with self._lock:
            self._covered, self._asked = set(ids), asked
            self._checked = time.monotonic()
        return workflow_id in asked


def _asked(store: Store, workflow_ids: list[str]) -> set[str]:
    try:
        return store.with_messages(CANCEL_TOPIC, workflow_ids)
    except NotImplementedError:  # a store without an inbox cannot be cancelled remotely
        return set()


_watches: weakref.WeakKeyDictionary[Store, CancelWatch] = weakref.WeakKeyDictionary()
_watches_lock = threading.Lock()


def watch_of(store: Store) -> CancelWatch:
    """The one :class:`CancelWatch` of ``store`` in this process."""
    with _watches_lock:
        watch = _watches.get(store)
        if watch is None:
            watch = _watches[store] = CancelWatch(store)
        return watch
