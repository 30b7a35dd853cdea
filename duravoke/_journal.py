"""An append-only journal file with group commit.

Each record is one line carrying its own checksum (see ``_state.journal_line``), so a
crash mid-write damages at most the last line, which loading then drops. Appending
costs one ``write`` and, in ``"fsync"`` durability, one ``fsync``, whatever the size of
the file: this is what keeps the cost of a step constant as a workflow grows.

Threads that append at the same time share a single write and fsync: the first one
in becomes the writer for everything queued so far, the others wait for it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path

from ._errors import StoreError
from ._files import fsync_folder
from ._state import JOURNAL_FORMAT, VERSION, Record, journal_line

__all__ = ["Journal"]


class Journal:
    """Appends records to one journal file; created with its header on first use."""

    def __init__(self, path: Path, workflow_id: str, *, sync: bool, exists: bool) -> None:
        self.path = path
        self._workflow_id = workflow_id
        self._sync = sync
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND) if exists else None
        self._cond = threading.Condition(threading.Lock())
        self._queue: list[bytes] = []
        self._queued = 0  # tickets handed out
        self._done = 0  # tickets durably written
        self._writing = False
        self._failure: BaseException | None = None
        #: fsync calls issued, for benchmarks and tests of group commit.
        self.fsyncs = 0

    def append(self, records: Sequence[Record]) -> None:
        """Write ``records`` and (in fsync mode) fsync them before returning."""
        data = b"".join(map(journal_line, records))
        with self._cond:
            self._queue.append(data)
            self._queued += 1
            ticket = self._queued
            while self._done < ticket:
                if self._failure is not None:
                    raise self._error() from self._failure
                if self._writing:
                    self._cond.wait()
                    continue
                batch, self._queue = b"".join(self._queue), []
                upto, self._writing = self._queued, True
                self._cond.release()
                try:
                    self._write(batch)
                except BaseException as exc:
                    failure: BaseException | None = exc
                else:
                    failure = None
                finally:
                    self._cond.acquire()
                    self._writing = False
                    self._cond.notify_all()
                if failure is not None:
                    # A partial write may have left a torn line; refuse further appends so
                    # nothing lands after it. The next run drops the torn line on load.
                    self._failure = failure
                    raise self._error() from failure
                self._done = upto

    def close(self) -> None:
        """Close the file (pending appends must have returned)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _write(self, data: bytes) -> None:
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

    def _error(self) -> StoreError:
        return StoreError(
            f"could not append to {self.path}: {self._failure!r}. What was recorded before"
            " is kept; fix the cause (disk full? permissions?) and run the workflow again.",
            path=self.path,
        )
