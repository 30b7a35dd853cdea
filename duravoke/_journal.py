"""An append-only journal file with group commit.

Each record is one line carrying its own checksum (see ``_state.journal_line``), so a
crash mid-write damages at most the last line, which loading then drops. Appending
costs one ``write`` and, in ``"fsync"`` durability, one ``fsync``, whatever the size of
the file: this is what keeps the cost of a step constant as a workflow grows.

Threads that append at the same time share a single write and fsync (group commit).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from ._errors import StoreError
from ._files import fsync_folder
from ._groupcommit import GroupCommit
from ._state import JOURNAL_FORMAT, VERSION, Record, journal_line

__all__ = ["Journal"]


class Journal:
    """Appends records to one journal file; created with its header on first use."""

    def __init__(self, path: Path, workflow_id: str, *, sync: bool, exists: bool) -> None:
        self.path = path
        self._workflow_id = workflow_id
        self._sync = sync
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND) if exists else None
        self._commit = GroupCommit(self._write, self._error)
        #: fsync calls issued, for benchmarks and tests of group commit.
        self.fsyncs = 0

    def append(self, records: Sequence[Record]) -> None:
        """Write ``records`` and (in fsync mode) fsync them before returning."""
        self._commit.submit(b"".join(map(journal_line, records)))

    def enqueue(self, records: Sequence[Record]) -> Callable[[], None]:
        """Queue ``records``; the returned function writes (or waits for) them."""
        ticket = self._commit.enqueue(b"".join(map(journal_line, records)))
        return functools.partial(self._commit.wait, ticket)

    def close(self) -> None:
        """Close the file (pending appends must have returned)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _write(self, batch: list[bytes]) -> None:
        data = b"".join(batch)
        if self._fd is None:
            self._create()
        assert self._fd is not None
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]
        if self._sync:
            os.fsync(self._fd)
            self.fsyncs += 1

    def _create(self) -> None:
        header = {"format": JOURNAL_FORMAT, "version": VERSION, "workflow": self._workflow_id}
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, journal_line(header))
            if self._sync:
                os.fsync(fd)
                fsync_folder(self.path.parent)
                self.fsyncs += 2
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def _error(self, failure: BaseException) -> StoreError:
        # A partial write may have left a torn line; the next run drops it on load.
        return StoreError(
            f"could not append to {self.path}: {failure!r}. What was recorded before"
            " is kept; fix the cause (disk full? permissions?) and run the workflow again.",
            path=self.path,
        )
