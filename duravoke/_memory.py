"""The store that keeps everything in this process's memory."""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Sequence
from typing import Any

from ._groupcommit import Done, Then, Waitable
from ._state import Record, State, apply, new_state
from ._store import Lease, Store

__all__ = ["InMemoryKKV"]


class InMemoryKKV(Store):
    """A store that lives in this process's memory and vanishes with it.

    Useful in tests and for code that only wants replay within one process. It obeys
    the same locking rules as the file stores, across threads.
    """

    def __init__(self) -> None:
        self._states: dict[str, State] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._inboxes: dict[str, dict[str, list[str]]] = {}
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

    def send(self, workflow_id: str, topic: str, data: str) -> int:
        """Keep the message in this process's memory."""
        with self._guard:
            queue = self._inboxes.setdefault(workflow_id, {}).setdefault(topic, [])
            queue.append(data)
            return len(queue)

    def messages(self, workflow_id: str, topic: str, after: int) -> list[tuple[int, Any]]:
        """The messages on ``topic`` after ``after``."""
        with self._guard:
            queue = list(self._inboxes.get(workflow_id, {}).get(topic, ()))
        return [(n, json.loads(d)) for n, d in enumerate(queue, 1) if n > after]

    def drop_messages(self, workflow_id: str) -> bool:
        """Delete the workflow's messages."""
        with self._guard:
            return self._inboxes.pop(workflow_id, None) is not None


class _MemoryLease(Lease):
    def __init__(self, store: InMemoryKKV, workflow_id: str, lock: threading.Lock) -> None:
        super().__init__(workflow_id)
        self._store = store
        self._lock = lock

    def load(self) -> State:
        return self._store.read(self.workflow_id) or new_state()

    def enqueue(self, records: Sequence[Record]) -> Waitable:
        self.append(records)
        return Done()

    def append(self, records: Sequence[Record]) -> None:
        with self._store._guard:
            state = self._store._states.setdefault(self.workflow_id, new_state())
            for record in records:
                apply(state, copy.deepcopy(record))

    def close(self) -> None:
        self._lock.release()

    def release(self, records: Sequence[Record]) -> Waitable:
        # Nothing here waits: done at once, on an event loop too.
        return Then(self.enqueue(records), self.close)

    def forget(self) -> bool:
        with self._store._guard:
            return self._store._states.pop(self.workflow_id, None) is not None
