"""The journal: records appended to a file, one fsync per write, shared by concurrent writers.

Each record is one line carrying its own checksum (see ``_state.journal_line``), so a
crash mid-write damages at most the end of the file, which loading then drops. Writing
a step costs one ``pwrite`` and, in ``"fsync"`` durability, one ``fsync``, whatever the
size of the file: this is what keeps the cost of a step constant as a workflow grows.

The file is grown ahead of the records in zero-filled chunks, as databases do with
their write-ahead logs: writing a record then changes neither the file's size nor its
block map, so its fsync flushes one data page and no filesystem metadata, which is
what makes it cheap. Loading reads the zeros after the last record as the torn end of
an interrupted run: they are dropped along with anything a crash left half-written.

Threads that write at the same time share a single write and fsync (group commit).
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

_FIRST_CHUNK = 64 * 1024
_MAX_CHUNK = 4 * 1024 * 1024


class Journal:
    """Writes records to one journal file; created with its header on first use.

    ``end``, for a journal that is there and intact, is where its records end (see
    ``_state.parse_journal``): new records go there, over the zeros after them.
    """

    def __init__(self, path: Path, workflow_id: str, *, sync: bool, end: int | None) -> None:
        self.path = path
        self._workflow_id = workflow_id
        self._sync = sync
        self._fd: int | None = None
        self._end = 0  # where the next record goes
        self._size = 0  # the file's size: records, then zeros
        if end is not None:
            self._fd = os.open(path, os.O_WRONLY)
            self._size = os.fstat(self._fd).st_size
            self._end = end
        self._commit = GroupCommit(self._write, self._error)

    def append(self, records: Sequence[Record]) -> None:
        """Write ``records`` and (in fsync mode) fsync them before returning."""
        self.enqueue(records)()

    def enqueue(self, records: Sequence[Record]) -> Callable[[], None]:
        """Queue ``records``; the returned function writes (or waits for) them."""
        ticket = self._commit.enqueue(b"".join(map(journal_line, records)))
        return functools.partial(self._commit.wait, ticket)

    @property
    def end(self) -> int:
        """Where the records written so far end (0 before the file exists)."""
        return self._end

    def close(self) -> None:
        """Close the file (pending writes must have returned)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _write(self, batch: list[bytes]) -> None:
        if self._fd is None:
            self._create()
        self._put(b"".join(batch))
        if self._sync:
            self._fsync()

    def _put(self, data: bytes) -> None:
        assert self._fd is not None
        if self._end + len(data) > self._size:
            self._grow(self._end + len(data))
        view = memoryview(data)
        while view:
            written = os.pwrite(self._fd, view, self._end)
            self._end += written
            view = view[written:]

    def _grow(self, need: int) -> None:
        assert self._fd is not None
        size = max(need, self._size + min(max(self._size, _FIRST_CHUNK), _MAX_CHUNK))
        zeros = bytes(min(size - self._size, _MAX_CHUNK))
        while self._size < size:
            self._size += os.pwrite(self._fd, zeros[: size - self._size], self._size)

    def _fsync(self) -> None:
        assert self._fd is not None
        os.fsync(self._fd)

    def _create(self) -> None:
        header = {"format": JOURNAL_FORMAT, "version": VERSION, "workflow": self._workflow_id}
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self._put(journal_line(header))
        if self._sync:
            self._fsync()
            fsync_folder(self.path.parent)

    def _error(self, failure: BaseException) -> StoreError:
        # A partial write may have left a torn line; the next run drops it on load.
        return StoreError(
            f"could not append to {self.path}: {failure!r}. What was recorded before"
            " is kept; fix the cause (disk full? permissions?) and run the workflow again.",
            path=self.path,
        )
