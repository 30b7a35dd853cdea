"""Salvage: keep the intact records of a damaged log or journal, and move the damage aside.

A crash or a power cut never damages the log in a way that blocks the store (see
``_log``): it can only tear the last frame, which is dropped. A disk error or an edit
can damage a frame with intact frames after it; then every load refuses the store with
:class:`CorruptStateError` and leaves the files untouched. Frames delimit themselves
and carry checksums, so salvage finds every intact frame, before *and* after the
damage, copies them in order into a fresh segment, and renames the damaged segment to
``<name>.damaged-<UTC time>``: nothing is deleted, and the steps whose records were
lost run again.

A per-workflow journal of duravoke 0.2 is salvaged the old way: the intact records
before its first damage are appended to the log for the workflow its header names, and
the journal is moved aside.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from ._errors import CorruptStateError, WorkflowBusyError
from ._files import FileLock, fsync_folder, read_bytes
from ._filestore import _FileStore, _legacy_journal_id
from ._info import resolve_store, short_repr
from ._journal import parse_journal
from ._log import (
    LOG_FORMAT,
    LOG_VERSION,
    check_header,
    decode_entries,
    encode_frame,
    frame_at,
    read_frames,
)
from ._state import Record
from ._store import Store

__all__ = ["SalvageReport", "salvage"]


@dataclass(frozen=True)
class SalvageReport:
    """What :func:`salvage` did.

    Attributes:
        location: the store.
        kept: records copied from the damaged files (log entries and journal records).
        unreadable: bytes of the damaged files that no intact frame or record held.
        moved: where each damaged file now is (empty when nothing was damaged: then
            nothing was changed).
        segment: the fresh log segment that holds the salvaged frames, if one was written.
    """

    location: str
    kept: int
    unreadable: int
    moved: tuple[str, ...]
    segment: str | None


def salvage(store: Store | str | os.PathLike[str] | None = None) -> SalvageReport:
    """Keep every intact record of a store's damaged log segments and journals.

    Run it when loading raised :class:`CorruptStateError` about a log segment (or a
    ``.journal`` file). A store that reads cleanly is left as it is.

    Args:
        store: a store, a string for :func:`duravoke.open_store`, or None for the store
            of the default instance.

    Returns:
        What was kept, what was unreadable, and where the damaged files went.

    Raises:
        WorkflowBusyError: a workflow with a damaged journal is running right now.
        CorruptStateError: a segment is of a newer format (upgrade duravoke instead).
        ValueError: the store keeps no log (Postgres, memory).
    """
    target = resolve_store(store)
    if not isinstance(target, _FileStore):
        raise ValueError(  # noqa: TRY004 - a store of the wrong kind is a bad value, for the CLI
            f"{target.location} keeps no log files: only DirectoryStore and PersistedKKV"
            " stores can be salvaged."
        )
    kept, unreadable = 0, 0
    moved: list[str] = []
    # The log first: the records salvaged from journals are appended to it.
    found_log = _salvage_log(target)
    segment = None
    if found_log is not None:
        kept, unreadable, moved, segment = found_log
    for path in sorted(target._folder().glob("*.journal")):
        found = _salvage_journal(target, path)
        if found is not None:
            kept += found[0]
            unreadable += found[1]
            moved.append(found[2])
    return SalvageReport(target.location, kept, unreadable, tuple(moved), segment)


def _salvage_journal(store: _FileStore, path: Path) -> tuple[int, int, str] | None:
    """(records kept, bytes unreadable, where it went) for a damaged journal, else None."""
    workflow_id = _legacy_journal_id(path)
    if workflow_id is None:
        return None  # its header is unreadable: no workflow to give its records to
    data = read_bytes(path)
    if data is None:
        return None
    try:
        parse_journal(data, str(path), workflow_id)
        return None  # it loads as it is
    except CorruptStateError:
        pass
    lease = store.try_lock(workflow_id)
    if lease is None:
        raise WorkflowBusyError(
            f"workflow {short_repr(workflow_id)} is running right now; salvage once it stops.",
            workflow_id=workflow_id,
        )
    try:
        records, end = _intact_prefix(data, str(path), workflow_id)
        if records:
            # Durable in the log before the journal goes aside.
            store.log().append([(workflow_id, r) for r in records])
        aside = _move_aside(path)
    finally:
        lease.close()
    unreadable = len(data.rstrip(b"\0")) - end
    return len(records), max(unreadable, 0), aside


def _intact_prefix(data: bytes, path: str, workflow_id: str) -> tuple[list[Record], int]:
    """The records of the longest prefix of whole lines that parses, and where it ends."""
    lines = data.split(b"\n")
    cut = 0
    best: tuple[list[Record], int] = ([], 0)
    for n in range(1, len(lines)):
        cut += len(lines[n - 1]) + 1
        try:
            records, _torn, end = parse_journal(data[:cut], path, workflow_id)
        except CorruptStateError:
            break
        if end == cut:
            best = (records, end)
        else:
            break
    return best


def _salvage_log(store: _FileStore) -> tuple[int, int, list[str], str] | None:
    """Copy the intact frames from the first damaged segment on into a fresh segment."""
    log = store.log()
    if not log.folder.is_dir():
        return None
    checkpoint = FileLock(log.folder / "checkpoint.lock")
    with checkpoint, log._guard, log._lock:
        covers = _covers(store)
        numbers = [n for n in log.segment_numbers() if n > covers]
        damaged_from = None
        for number in numbers:
            path = log.folder / f"log.{number:08d}"
            try:
                frames, _end, _torn = read_frames(read_bytes(path) or b"", 0, str(path))
                for offset, payload in frames:
                    if offset == 0:
                        check_header(payload, str(path))
                    else:
                        list(decode_entries(payload, str(path)))
            except CorruptStateError:
                damaged_from = number
                break
        if damaged_from is None:
            return None
        # Later segments are copied too, so that records keep their order; they are moved
        # aside as well (never deleted), since the fresh segment holds them all.
        lines: list[bytes] = []
        kept = unreadable = 0
        moved: list[tuple[Path, str]] = []
        for number in [n for n in numbers if n >= damaged_from]:
            path = log.folder / f"log.{number:08d}"
            data = read_bytes(path) or b""
            found, lost, damaged = _intact_frames(data, str(path))
            for payload in found:
                lines += payload.splitlines(keepends=True)
                kept += payload.count(b"\n")
            unreadable += lost
            moved.append((path, "damaged" if damaged else "copied"))
        fresh_number = numbers[-1] + 1
        fresh = log.folder / f"log.{fresh_number:08d}"
        header = f'{{"format":"{LOG_FORMAT}","version":{LOG_VERSION},"segment":{fresh_number}}}\n'
        content = encode_frame([header.encode()])
        if lines:
            content += encode_frame(lines)
        fd = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(content)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_folder(log.folder)  # the fresh segment is durable before anything moves
        log.close()
        asides = [_move_aside(path, kind, sync=False) for path, kind in moved]
        fsync_folder(log.folder)
        log.reset()
    return kept, unreadable, asides, str(fresh)


def _covers(store: _FileStore) -> int:
    """The segments the index says are folded (0 without a readable index: copying a
    folded segment again is harmless, records apply twice to the same effect)."""
    try:
        return int(json.loads(read_bytes(store._index_path()) or b"")["covers"])
    except (ValueError, KeyError, TypeError):
        return 0


def _intact_frames(data: bytes, path: str) -> tuple[list[bytes], int, bool]:
    """(payloads of the intact entry frames, unreadable bytes, whether any were damaged).

    A frame's header names its length and checksum, so after damage the next intact
    frame is found by trying each ``#``; the zeros grown ahead of the frames are not
    counted as unreadable.
    """
    used = len(data.rstrip(b"\0"))
    payloads: list[bytes] = []
    position = covered = 0
    damaged = False
    while position < used:
        payload = frame_at(data, position)
        if payload is None:
            damaged = True
            found = data.find(b"#", position + 1, used)
            position = used if found < 0 else found
            continue
        covered += _frame_size(payload)
        if position == 0:
            check_header(payload, path)
        else:
            try:
                list(decode_entries(payload, path))
                payloads.append(payload)
            except CorruptStateError:
                damaged = True
                covered -= _frame_size(payload)
        position += _frame_size(payload)
    return payloads, used - covered, damaged


def _frame_size(payload: bytes) -> int:
    return len(encode_frame([payload]))


def _move_aside(path: Path, kind: str = "damaged", *, sync: bool = True) -> str:
    """Rename ``path`` to a name beside it that nothing has; the file is never overwritten."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    for n in range(1000):
        aside = path.with_name(f"{path.name}.{kind}-{stamp}" + (f"-{n}" if n else ""))
        with contextlib.suppress(FileExistsError):
            os.link(path, aside)  # fails rather than replace an existing file
            os.unlink(path)
            if sync:
                fsync_folder(path.parent)
            return str(aside)
    raise FileExistsError(path)
