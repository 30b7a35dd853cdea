"""The store-wide log: records of every workflow, appended in checksummed frames.

A file store keeps one log for all its workflows, in numbered segment files
(``log.00000001``, ...). Every process that uses the store appends to the newest
segment, one process at a time under ``log.lock``, and each append is one *frame*::

    #<payload length, 8 hex> <crc32 of the payload, 8 hex>\\n
    [<workflow id>, <record>]\\n
    [<workflow id>, <record>]\\n
    ...

A frame is the unit of atomicity: whatever one write held is kept whole or dropped
whole. Within a process, records of different workflows queued at the same moment share
one frame and one fsync (group commit across workflows). Before appending, a writer
fsyncs what another process wrote since its own last fsync, so at most one frame is ever
unsynced: after a power cut only the last frame can be torn, and a torn last frame is
dropped silently. For the same reason a run makes the frames it is about to replay
durable (:meth:`Log.make_durable`), and a process that reopens a segment fsyncs its
folder (the process that created it may have died before doing so). Damage before an
intact frame cannot come from a crash and raises :class:`CorruptStateError`.

The segment grows ahead of its frames in zero-filled chunks, so that an fsync flushes
data pages and no file-system metadata; zeros after the last frame are free space.

Each process keeps a :class:`View` of the log: which frames hold records of which
workflow, and every workflow's summary (its state without steps), so that listing and
finding due workflows never reads a state file. Old segments are folded into the
snapshots (the readable state files) by a checkpoint, then deleted.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ._errors import CorruptStateError, StoreError
from ._files import FileLock, fsync_folder
from ._groupcommit import GroupCommit, Ticket
from ._json import compact_bytes
from ._state import Record, State, apply_summary, new_summary

__all__ = [
    "LOG_FORMAT",
    "LOG_VERSION",
    "Entry",
    "Log",
    "View",
    "check_header",
    "encode_frame",
    "frame_at",
    "read_frames",
]

LOG_FORMAT = "duravoke-log"
LOG_VERSION = 1

#: One record of the log: (workflow id, record).
Entry = tuple[str, Record]

_HEADER = 19  # "#" + 8 hex + " " + 8 hex + "\n"
_FIRST_CHUNK = 64 * 1024
_MAX_CHUNK = 4 * 1024 * 1024
_SEGMENT = re.compile(r"log\.(\d{8})")


def encode_frame(lines: Iterable[bytes]) -> bytes:
    """One frame holding ``lines`` (each ends with a newline)."""
    payload = b"".join(lines)
    return b"#%08x %08x\n%s" % (len(payload), zlib.crc32(payload), payload)


def entry_line(workflow_id: str, record: Record) -> bytes:
    """The line of one log entry."""
    return compact_bytes([workflow_id, record]) + b"\n"


def read_frames(
    data: bytes, start: int, path: str, salvage: str = "duravoke salvage"
) -> tuple[list[tuple[int, bytes]], int, bool]:
    """Decode the frames of ``data`` from ``start``: ([(offset, payload)], end, torn).

    ``end`` is where the intact frames end. Zeros after them are free space. A damaged
    frame with nothing intact after it is the torn end of an interrupted write
    (``torn``); followed by an intact frame it is real damage and raises
    :class:`CorruptStateError`, whose message advises ``salvage`` (the exact command).
    """
    frames: list[tuple[int, bytes]] = []
    position = start
    size = len(data)
    while position < size and data[position] != 0:
        payload = frame_at(data, position)
        if payload is None:
            if _intact_frame_after(data, position + 1):
                raise CorruptStateError(
                    f"cannot load {path}: the frame at byte {position} is damaged and intact"
                    " records follow it, which no crash or power cut can leave (a disk error or"
                    " an edit can). The file was left untouched, and no workflow of this store"
                    f" can be loaded until `{salvage}` is run: it copies every intact frame,"
                    " before and after the damage, into a new segment, moves the damaged one"
                    " aside (nothing is deleted) and says how many records it kept and how many"
                    " bytes were unreadable.",
                    path=path,
                )
            return frames, position, True
        frames.append((position, payload))
        position += _HEADER + len(payload)
    torn = any(data[position:size])  # anything but zeros after the last frame
    return frames, position, torn


def check_header(payload: bytes, path: str) -> None:
    """Refuse a segment whose first frame is not a header of the format this code reads."""
    try:
        header = json.loads(payload)
        fmt, version = header.get("format"), header.get("version")
    except (ValueError, AttributeError):
        fmt = version = None
    if fmt != LOG_FORMAT:
        raise CorruptStateError(
            f"cannot load {path}: it is not a duravoke log segment (its first frame is not"
            " a header). It was left untouched; move it out of the log folder.",
            path=path,
        )
    if version != LOG_VERSION:
        raise CorruptStateError(
            f"{path} has log format version {version!r}, but this duravoke reads version"
            f" {LOG_VERSION}. Upgrade duravoke to read it; the file was left untouched.",
            path=path,
        )


def frame_at(data: bytes, position: int) -> bytes | None:
    """The payload of the intact frame at ``position`` of ``data``, or None."""
    head = data[position : position + _HEADER]
    if len(head) < _HEADER or head[:1] != b"#" or head[9:10] != b" " or head[18:] != b"\n":
        return None
    try:
        length, crc = int(head[1:9], 16), int(head[10:18], 16)
    except ValueError:
        return None
    payload = data[position + _HEADER : position + _HEADER + length]
    if len(payload) != length or zlib.crc32(payload) != crc:
        return None
    return payload


def _intact_frame_after(data: bytes, position: int) -> bool:
    while True:
        position = data.find(b"#", position)
        if position < 0:
            return False
        if frame_at(data, position) is not None:
            return True
        position += 1


def decode_entries(payload: bytes, path: str, salvage: str = "duravoke salvage") -> Iterator[Entry]:
    """The entries of one frame's payload (``salvage``: the command errors advise)."""
    for line in payload.splitlines():
        try:
            workflow_id, record = json.loads(line)
        except ValueError:
            raise CorruptStateError(
                f"cannot load {path}: a checksummed record is not JSON (was it written by"
                f" another program?). The file was left untouched; `{salvage}` keeps every"
                " other frame and moves the file aside (nothing is deleted).",
                path=path,
            ) from None
        if not isinstance(workflow_id, str) or not isinstance(record, dict):
            raise CorruptStateError(
                f"cannot load {path}: a record has an unexpected shape. The file was left"
                f" untouched; `{salvage}` keeps every other frame and moves the file aside"
                " (nothing is deleted).",
                path=path,
            )
        yield workflow_id, record


@dataclass
class _Segment:
    number: int
    path: Path
    end: int = 0  # where the frames read so far end
    frames: int = 0
    torn: bool = False  # bytes other than zeros follow the last intact frame
    synced: int = 0  # how far this process knows the segment to be durable


@dataclass
class View:
    """What a process knows of the log: where each workflow's records are, and summaries.

    Attributes:
        covers: segments up to this number are folded into the snapshots.
        summaries: every workflow's state without its steps (see ``_state.summary``).
    """

    covers: int = 0
    summaries: dict[str, State] = field(default_factory=dict)
    segments: dict[int, _Segment] = field(default_factory=dict)
    #: (segment number, frame offset) of the frames that hold records of each workflow.
    places: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    #: The last message sequence number of each (workflow id, topic).
    seqs: dict[tuple[str, str], int] = field(default_factory=dict)
    #: The workflows whose last record in the log is "forget": a state file of theirs
    #: (which a checkpoint running meanwhile may write) is void.
    forgotten: set[str] = field(default_factory=set)

    def take(self, number: int, offset: int, entries: Iterable[Entry]) -> None:
        """Learn the entries of the frame at ``offset`` of segment ``number``."""
        for workflow_id, record in entries:
            places = self.places.setdefault(workflow_id, [])
            if not places or places[-1] != (number, offset):
                places.append((number, offset))
            if record.get("forget"):
                self.summaries.pop(workflow_id, None)
                self.forgotten.add(workflow_id)
                self.places[workflow_id] = [(number, offset)]
                for key in [k for k in self.seqs if k[0] == workflow_id]:
                    del self.seqs[key]
                continue
            self.forgotten.discard(workflow_id)
            summary = self.summaries.get(workflow_id)
            if summary is None:
                summary = self.summaries[workflow_id] = new_summary()
            apply_summary(summary, record)
            topic = record.get("msg")
            if topic is not None:
                key = (workflow_id, topic)
                self.seqs[key] = max(self.seqs.get(key, 0), record["seq"])


class Log:
    """The log of one store folder, as used by one store object in one process.

    Args:
        folder: where the segments live.
        sync: fsync each frame (``durability="fsync"``) or not (``"flush"``).
        base: reads the snapshot side for a fresh view: (covers, summaries, seqs).
        salvage: the command that errors about a damaged segment advise.
    """

    def __init__(
        self,
        folder: Path,
        *,
        sync: bool,
        base: Callable[[], tuple[int, dict[str, State], dict[tuple[str, str], int]]],
        salvage: str = "duravoke salvage",
    ) -> None:
        self.folder = folder
        self.salvage = salvage
        self.sync = sync
        self._base = base
        self._lock = FileLock(folder / "lock", keep_open=True)
        # The view and the active segment's fd, and, taken before the lock file, one
        # writer thread at a time: flock is per open file, so threads sharing the lock
        # file's descriptor would each "take" it.
        self._guard = threading.RLock()
        self._view: View | None = None
        self._caught_up = 0.0  # time.monotonic() of the view's last catch-up
        self._fd: int | None = None  # the active segment, open for writing
        self._active: _Segment | None = None
        self._size = 0  # the active segment's size: frames, then zeros
        self._synced = 0  # where our last fsync of the active segment reached
        # (active segment's number, the name of the one after it), built once per segment
        self._next_name: tuple[int, str] | None = None
        # Not sticky: after a failed write (disk full) the next one re-reads the segment
        # and, finding its end torn, starts a new one.
        self._commit: GroupCommit[list[Entry]] = GroupCommit(
            self._write, self._error, sticky=False, write_now=None if sync else self._write_now
        )

    # --- reading -----------------------------------------------------------------------

    def view(self, max_age: float = 0.0) -> View:
        """The view, caught up with everything the log holds now (torn end excluded).

        ``max_age``: a view caught up less than this many seconds ago will do (for
        answers that are polled anyway, such as "was a message sent").
        """
        with self._guard:
            if self._view is not None and time.monotonic() - self._caught_up < max_age:
                return self._view
            numbers = self.segment_numbers()
            view = self._view
            if view is not None and any(
                n > view.covers and n not in numbers for n in view.segments
            ):
                # Another process's checkpoint folded segments this view had read into the
                # snapshots and the index: start again from the index.
                view = None
            if view is None:
                covers, summaries, seqs = self._base()
                view = self._view = View(covers=covers, summaries=summaries, seqs=seqs)
            self._catch_up(view, numbers)
            self._caught_up = time.monotonic()
            return view

    def make_durable(self, view: View | None = None) -> None:
        """Make durable every frame the view holds, before a run relies on them.

        Another process may have written a frame and died before its fsync: its steps
        would replay from the page cache, and a power cut could then take them back
        after their results were returned. Costs nothing when this process wrote (and
        synced) the frames itself.
        """
        if not self.sync:
            return
        with self._guard:
            view = view or self.view()
            pending = [(s, s.end) for s in view.segments.values() if s.end > s.synced]
        for segment, end in pending:
            with contextlib.suppress(FileNotFoundError):  # folded and deleted meanwhile
                fd = os.open(segment.path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
                segment.synced = max(segment.synced, end)

    def reset(self) -> None:
        """Forget the view (after a checkpoint folded segments into the snapshots)."""
        with self._guard:
            self._view = None

    def entries(self, workflow_id: str, view: View | None = None) -> tuple[bool, list[Record]]:
        """(whether the workflow was forgotten, its records in the log since then), in order,
        as ``view`` (default: the view caught up now) knows them."""
        with self._guard:
            view = view or self.view()
            places = list(view.places.get(workflow_id, ()))
            segments = dict(view.segments)
        found: list[Record] = []
        forgotten = False
        fds: dict[int, int | None] = {}
        try:
            for number, offset in places:
                segment = segments.get(number)
                if segment is None:
                    continue
                if number not in fds:
                    fds[number] = _open_or_none(segment.path)
                fd = fds[number]
                # Only this workflow's frames are read, not the segment (up to megabytes).
                payload = None if fd is None else _pread_frame(fd, offset)
                if payload is None:  # pragma: no cover - the view only lists intact frames
                    continue
                for wid, record in decode_entries(payload, str(segment.path), self.salvage):
                    if wid != workflow_id:
                        continue
                    if record.get("forget"):
                        found.clear()
                        forgotten = True
                    else:
                        found.append(record)
        finally:
            for fd in fds.values():
                if fd is not None:
                    os.close(fd)
        return forgotten, found

    def segment_numbers(self) -> list[int]:
        """The numbers of the segments in the folder, oldest first."""
        try:
            names = os.listdir(self.folder)
        except FileNotFoundError:
            return []
        return sorted(int(m[1]) for m in map(_SEGMENT.fullmatch, names) if m)

    def _catch_up(self, view: View, numbers: list[int]) -> None:
        for number in numbers:
            if number <= view.covers:
                continue
            segment = view.segments.get(number)
            if segment is None:
                segment = view.segments[number] = _Segment(number, self.segment_path(number))
            data = _read_used(segment.path, segment.end)
            if not data:
                continue
            frames, end, segment.torn = read_frames(data, 0, str(segment.path), self.salvage)
            for offset, payload in frames:
                if offset == 0 and segment.end == 0:
                    check_header(payload, str(segment.path))
                    continue
                view.take(
                    number,
                    segment.end + offset,
                    decode_entries(payload, str(segment.path), self.salvage),
                )
            segment.frames += len(frames)
            segment.end += end
        for number in [n for n in view.segments if n <= view.covers]:
            del view.segments[number]

    def segment_path(self, number: int) -> Path:
        """The file of segment ``number``."""
        return self.folder / f"log.{number:08d}"

    # --- writing -----------------------------------------------------------------------

    def append(self, entries: list[Entry]) -> None:
        """Append ``entries`` in one frame with whatever else is queued; durable on return."""
        self._commit.submit(entries)

    def enqueue(self, entries: list[Entry]) -> Ticket:
        """Queue ``entries``; wait on the ticket for them to be durable."""
        return self._commit.ticket(entries)

    def active_size(self) -> int:
        """How far the active segment's frames reach, as this process knows it (0 while
        it holds nothing but its header)."""
        active = self._active
        return 0 if active is None or active.frames <= 1 else active.end

    def _write(self, batch: list[list[Entry]]) -> None:
        try:
            with self._guard, self._lock:
                if not self._unchanged():
                    self._writable(self.view())
                self._append(batch)
        except BaseException:
            self.close()  # its end is unknown now: look again before the next write
            raise

    def _write_now(self, batch: list[list[Entry]]) -> bool:
        """Write ``batch`` if nothing can make that wait, else say no: in flush mode, with
        the log lock free and nothing new in the log to read first. An event loop writes
        so, without waking a thread (a write to the page cache does not wait on the disk;
        growing the segment ahead writes up to 4 MiB of zeros, once per 4 MiB)."""
        if self.sync or not self._guard.acquire(blocking=False):
            return False
        try:
            if not self._lock.acquire(blocking=False):
                return False
            try:
                if not self._unchanged():
                    return False  # catching up reads other processes' frames: a thread's work
                self._append(batch)
                return True
            except BaseException:
                self.close()  # its end is unknown now: look again before the next write
                raise
            finally:
                self._lock.release()
        finally:
            self._guard.release()

    def _append(self, batch: list[list[Entry]]) -> None:
        """Write ``batch`` as one frame at the end of the active segment, open for writing
        and caught up (the locks are held)."""
        view, segment = self._view, self._active
        assert self._fd is not None
        assert view is not None
        assert segment is not None
        if self.sync and segment.end > self._synced:
            # Another process wrote since our last fsync and may have died before its
            # own: flush its frame first, so that ours is never durable without it.
            os.fsync(self._fd)
        entries = [entry for entries in batch for entry in entries]
        for workflow_id, record in entries:
            if record.get("msg") is not None and record.get("seq") is None:
                key = (workflow_id, record["msg"])
                record["seq"] = view.seqs[key] = view.seqs.get(key, 0) + 1
        frame = encode_frame(entry_line(w, r) for w, r in entries)
        offset = segment.end
        self._put(segment, frame)
        if self.sync:
            os.fsync(self._fd)
            self._synced = segment.synced = segment.end
        view.take(segment.number, offset, entries)
        segment.frames += 1

    def _unchanged(self) -> bool:
        """Whether nobody wrote since our last frame (the log lock is held): the common
        case of one writing process, checked without reading the folder or the log."""
        active = self._active
        if active is None or self._fd is None or self._view is None:
            return False
        if self._view.segments.get(active.number) is not active:
            return False
        if os.fstat(self._fd).st_nlink == 0:
            return False  # folded into the snapshots and deleted by a checkpoint
        if self._next_name is None or self._next_name[0] != active.number:
            self._next_name = (active.number, str(self.segment_path(active.number + 1)))
        if os.path.exists(self._next_name[1]):
            return False  # sealed by a checkpoint, or torn and abandoned
        return not any(os.pread(self._fd, 64, active.end))

    def _writable(self, view: View) -> _Segment:
        """The active segment, open for writing at its end; a new one after damage."""
        numbers = self.segment_numbers()
        newest = numbers[-1] if numbers else 0
        segment = view.segments.get(newest) if newest > view.covers else None
        if segment is not None and segment is self._active and self._fd is not None:
            return segment
        fd, self._fd, self._active = self._fd, None, None  # forgotten first
        if fd is not None:
            os.close(fd)
        # A segment without its header frame is one whose creation a crash interrupted:
        # a frame written at its start would be taken for the header.
        if segment is not None and not segment.torn and segment.frames:
            self._fd = os.open(segment.path, os.O_RDWR)
            if self.sync:
                # Its creator may have been killed before making its name durable (the
                # fsync of the folder); a power cut would then take our frames with it.
                fsync_folder(self.folder)
            self._size = os.fstat(self._fd).st_size
            self._active, self._synced = segment, 0
            return segment
        # None yet, or a crash tore its end: nothing is ever written after damage. Never a
        # number the index covers (its segments may all be gone): it would be skipped.
        return self.rotate(view, max(newest, view.covers) + 1)

    def rotate(self, view: View, number: int) -> _Segment:
        """Start segment ``number`` (the log lock is held); it becomes the active one."""
        # Forgotten first: if the open below fails, a later close() must not close this
        # number again (the process may have reused it for another file).
        fd, self._fd, self._active = self._fd, None, None
        if fd is not None:
            os.close(fd)
        path = self.segment_path(number)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        self._size = 0
        segment = view.segments[number] = _Segment(number, path)
        self._active = segment
        header = {"format": LOG_FORMAT, "version": LOG_VERSION, "segment": number}
        self._put(segment, encode_frame([compact_bytes(header) + b"\n"]))
        segment.frames = 1
        if self.sync:
            os.fsync(self._fd)
            fsync_folder(self.folder)
            segment.synced = segment.end
        self._synced = segment.end
        return segment

    def _put(self, segment: _Segment, data: bytes) -> None:
        assert self._fd is not None
        need = segment.end + len(data)
        if need > self._size:
            # Another process may have grown the file (and written beyond our idea of its
            # size): zeros go only past its real end.
            self._size = max(self._size, os.fstat(self._fd).st_size)
        if need > self._size:
            size = max(need, self._size + min(max(self._size, _FIRST_CHUNK), _MAX_CHUNK))
            zeros = bytes(min(size - self._size, _MAX_CHUNK))
            while self._size < size:
                self._size += os.pwrite(self._fd, zeros[: size - self._size], self._size)
        view = memoryview(data)
        while view:
            written = os.pwrite(self._fd, view, segment.end)
            segment.end += written
            view = view[written:]

    def start_checkpoint(self) -> int | None:
        """Seal the active segment: later frames go to a new one. Returns the number of
        the newest sealed segment (None when the log is empty)."""
        with self._guard, self._lock:
            view = self.view()
            numbers = [n for n in self.segment_numbers() if n > view.covers]
            if not any(view.segments[n].frames > 1 for n in numbers):
                return None  # nothing but segment headers
            self.rotate(view, numbers[-1] + 1)
            return numbers[-1]

    def __del__(self) -> None:
        # A log dropped without close() (its store garbage collected) gives its file
        # descriptors back: a process that opens many stores must not run out of them.
        with contextlib.suppress(Exception):
            self.close()

    def close(self) -> None:
        """Close the active segment's file and the lock file."""
        with self._guard:
            fd, self._fd, self._active = self._fd, None, None  # forgotten first
            if fd is not None:
                os.close(fd)
            self._lock.close()

    def _error(self, failure: BaseException) -> StoreError:
        return StoreError(
            f"could not append to the log in {self.folder}: {failure!r}. What was recorded"
            " before is kept; fix the cause (disk full? permissions?) and run again.",
            path=self.folder,
        )


def _read_used(path: Path, offset: int) -> bytes:
    """The bytes of ``path`` from ``offset`` up to the zeros grown ahead of the frames."""
    chunk = 4096
    with contextlib.suppress(FileNotFoundError), open(path, "rb") as f:
        while True:
            f.seek(offset)
            data = f.read(chunk)
            zeros = data.find(b"\0" * min(64, len(data) or 1))
            # Frames never hold NUL bytes (JSON escapes them), so a run of zeros is the
            # free space after the last frame; without one, read on.
            if zeros >= 0 or len(data) < chunk:
                return data if zeros < 0 else data[:zeros]
            chunk *= 4
    return b""


def _open_or_none(path: Path) -> int | None:
    try:
        return os.open(path, os.O_RDONLY)
    except FileNotFoundError:  # folded into the snapshots and deleted meanwhile
        return None


def _pread_frame(fd: int, offset: int) -> bytes | None:
    """The payload of the intact frame at ``offset`` of the open file ``fd``, or None."""
    head = os.pread(fd, _HEADER, offset)
    try:
        length = int(head[1:9], 16)
    except ValueError:
        return None
    return frame_at(head + os.pread(fd, length, offset + _HEADER), 0)
