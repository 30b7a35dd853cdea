"""The stores that keep state in files: one folder of workflows, or one shared file.

Each workflow has a snapshot (the readable JSON state file) and, while it runs, a
journal of the records added since. Loading applies the journal over the snapshot;
finishing a run compacts the journal into the snapshot with an atomic replace and
removes it. Only the holder of the workflow's lock writes either file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import filelock
import platformdirs

from ._errors import CorruptStateError, StoreError
from ._files import (
    atomic_write,
    ensure_folder,
    fsync_folder,
    read_bytes,
    remove,
    remove_leftovers,
)
from ._identity import check_workflow_id
from ._journal import Journal
from ._logging import logger
from ._snapshot import dump_snapshot, load_snapshot
from ._state import (
    Record,
    State,
    _parse_line,
    apply,
    new_state,
    now_iso,
    parse_journal,
    status_event,
)
from ._store import Durability, Lease, Store, check_durability

__all__ = ["DirectoryStore", "PersistedKKV", "default_folder"]


_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def default_folder() -> Path:
    """The default store folder: ``$DURAVOKE_HOME``, else the user state folder."""
    home = os.environ.get("DURAVOKE_HOME")
    return (Path(home) if home else platformdirs.user_state_path("duravoke")).absolute()


def _file_stem(workflow_id: str) -> str:
    # Never the raw id: a readable, safe prefix for people, then a hash for uniqueness.
    digest = hashlib.sha256(workflow_id.encode("utf-8")).hexdigest()[:32]
    slug = _UNSAFE.sub("_", workflow_id)[:48].strip("_")
    return f"{slug}.{digest}" if slug else digest


class _FileStore(Store):
    """What both file stores share; subclasses place the files and the snapshot."""

    def __init__(self, durability: Durability) -> None:
        self.durability: Durability = check_durability(durability)

    def _folder(self) -> Path:
        raise NotImplementedError

    def _snapshot_state(self, workflow_id: str) -> State | None:
        raise NotImplementedError

    def _save_snapshot(self, workflow_id: str, state: State | None) -> bool:
        raise NotImplementedError

    def _remove_leftovers(self, workflow_id: str) -> None:
        """Delete temporary state files that a killed run left (the lock is held)."""

    def _journal_path(self, workflow_id: str) -> Path:
        return self._folder() / f"{_file_stem(workflow_id)}.journal"

    def try_lock(self, workflow_id: str) -> Lease | None:
        """Take the workflow's lock file without waiting."""
        folder = self._folder()
        ensure_folder(folder)
        lock_path = folder / f"{_file_stem(check_workflow_id(workflow_id))}.lock"
        lock = filelock.FileLock(lock_path, mode=0o600, thread_local=False)
        try:
            lock.acquire(blocking=False)
        except filelock.Timeout:
            return None
        return _FileLease(self, workflow_id, lock)

    def read(self, workflow_id: str) -> State | None:
        """Snapshot plus journal, without the lock (a torn last record is ignored)."""
        return self._load(check_workflow_id(workflow_id))[0]

    def _compacts(self, journal_bytes: int) -> bool:
        """Whether finishing a run folds a journal of this size into the snapshot."""
        return True

    def _load(self, workflow_id: str) -> tuple[State | None, int | None, bool]:
        """(state, where the journal's records end or None without one, journal torn)."""
        state = self._snapshot_state(workflow_id)
        path = self._journal_path(workflow_id)
        data = read_bytes(path)
        if data is None:
            return state, None, False
        records, torn, end = parse_journal(data, str(path), workflow_id)
        if records:
            state = state or new_state()
            for record in records:
                apply(state, record)
        return state, end, torn

    # --- the inbox: <stem>.inbox, one checksummed line per message, appended under
    # <stem>.inbox.lock (never the workflow's lock, so a running workflow blocks no sender).

    def _inbox_path(self, workflow_id: str) -> Path:
        return self._folder() / f"{_file_stem(check_workflow_id(workflow_id))}.inbox"

    def send(self, workflow_id: str, topic: str, data: str) -> int:
        """Append a message line to the workflow's inbox file (fsynced unless "flush")."""
        path = self._inbox_path(workflow_id)
        ensure_folder(path.parent)
        lock = filelock.FileLock(path.with_name(path.name + ".lock"), mode=0o600)
        with lock:
            last, messages = _INBOXES.read(path)
            seq = 1 + max((s for s, t, _ in messages if t == topic), default=0)
            body = (f'{{"t":{json.dumps(topic)},"s":{seq},"at":"{now_iso()}","d":{data}}}').encode()
            line = b"%08x %s\n" % (zlib.crc32(body), body)
            if last not in (b"", b"\n"):
                # A torn line from a sender that was killed: end it, so that it stays a
                # damaged line of its own (skipped) instead of spoiling this one.
                line = b"\n" + line
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line)
                if self.durability == "fsync":
                    os.fsync(fd)
            finally:
                os.close(fd)
            if not last and self.durability == "fsync":
                fsync_folder(path.parent)
        return seq

    def messages(self, workflow_id: str, topic: str, after: int) -> list[tuple[int, Any]]:
        """Read the inbox file without a lock: a message half-written is not seen yet."""
        _, messages = _INBOXES.read(self._inbox_path(workflow_id))
        found = {s: d for s, t, d in messages if t == topic and s > after}
        return sorted(found.items())

    def drop_messages(self, workflow_id: str) -> bool:
        """Delete the inbox file (its lock file stays, as lock files do)."""
        return remove(self._inbox_path(workflow_id))

    def _journal_ids(self, folder: Path) -> set[str]:
        ids = set()
        for path in folder.glob("*.journal"):
            try:
                with path.open("rb") as f:
                    header = f.readline()
                ids.add(_header_id(header))
            except (OSError, ValueError, KeyError, TypeError):
                logger.warning("skipping unreadable journal %s", path)
        return ids


class _InboxCache:
    """The parsed lines of inbox files, so that a read parses only what was appended since.

    Inbox files only grow, by whole lines (a torn one is ended by the next sender),
    until forget() deletes them. A cached file is known by its inode and its first
    line (inodes are reused), and read afresh when either differs.
    """

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._files: dict[Path, tuple[int, bytes, int, bytes, list[tuple[int, str, Any]]]] = {}

    def read(self, path: Path) -> tuple[bytes, list[tuple[int, str, Any]]]:
        """(the file's last byte, b"" if empty or missing; every intact message in it)."""
        try:
            with path.open("rb") as f:
                inode = os.fstat(f.fileno()).st_ino
                with self._guard:
                    cached = self._files.get(path)
                head = b""
                if cached is not None and cached[0] == inode:
                    _, head, end, last, messages = cached
                    if f.read(len(head)) == head:
                        f.seek(end)
                        data = f.read()
                    else:
                        cached = None
                if cached is None or cached[0] != inode:
                    f.seek(0)
                    end, last, messages, data = 0, b"", [], f.read()
                    head = data[: data.find(b"\n") + 1]
        except FileNotFoundError:
            with self._guard:
                self._files.pop(path, None)
            return b"", []
        whole = data.rfind(b"\n") + 1  # a line still being written is read next time
        if whole:
            messages = messages + _inbox(data[:whole])
            last = data[whole - 1 : whole]
        if head:
            with self._guard:
                self._files[path] = (inode, head, end + whole, last, messages)
        return (data[-1:] if data else last), messages


_INBOXES = _InboxCache()


def _inbox(data: bytes) -> list[tuple[int, str, Any]]:
    """(sequence number, topic, value) of every intact line; damaged lines are skipped."""
    out = []
    for line in data.split(b"\n"):
        record = _parse_line(line) if line else None
        if record is not None and isinstance(record.get("s"), int) and "t" in record:
            out.append((record["s"], str(record["t"]), record.get("d")))
    return out


def _header_id(line: bytes) -> str:
    workflow = json.loads(line[9:])["workflow"]
    if not isinstance(workflow, str):
        raise TypeError(line)
    return workflow


class _FileLease(Lease):
    def __init__(self, store: _FileStore, workflow_id: str, lock: filelock.BaseFileLock) -> None:
        super().__init__(workflow_id)
        self.blocking = store.durability == "fsync"
        self._store = store
        self._lock = lock
        self._journal: Journal | None = None

    def load(self) -> State:
        store, wid = self._store, self.workflow_id
        state, end, torn = store._load(wid)
        state = state or new_state()
        if end is not None or torn:
            # A journal left behind: its run was killed, perhaps while writing the state.
            store._remove_leftovers(wid)
        if torn:
            # A crash cut the last record short. Fold the intact part into the snapshot
            # and start a new journal, so that no new record lands after the torn one.
            store._save_snapshot(wid, state)
        if torn or end == 0:  # torn, or cut before even its header was written
            remove(store._journal_path(wid), sync=False)  # see close()
            end = None
        self._journal = Journal(store._journal_path(wid), wid, sync=self.blocking, end=end)
        return state

    def append(self, records: Sequence[Record]) -> None:
        assert self._journal is not None, "load() first"
        self._journal.append(records)

    def enqueue(self, records: Sequence[Record]) -> Callable[[], None]:
        assert self._journal is not None, "load() first"
        return self._journal.enqueue(records)

    def close(self, state: State | None) -> None:
        journal = self._journal
        try:
            if state is not None and journal is not None and not self._store._compacts(journal.end):
                # Keep the journal for now; it just needs the run's outcome.
                journal.append([status_event(state)])
                state = None
            if journal is not None:
                journal.close()
            if state is not None:
                self._store._save_snapshot(self.workflow_id, state)
                # No fsync of the folder: should the removal be lost, the journal comes back
                # holding only records that the (durable) state file has too; harmless.
                remove(self._store._journal_path(self.workflow_id), sync=False)
        except OSError as exc:
            raise StoreError(
                f"could not compact the state of workflow {self.workflow_id!r} in"
                f" {self._store.location}: {exc}. Its journal still holds every record.",
                path=self._store.location,
            ) from exc
        finally:
            self._lock.release()

    def forget(self) -> bool:
        found = self._store._save_snapshot(self.workflow_id, None)
        return remove(self._store._journal_path(self.workflow_id)) or found


class DirectoryStore(_FileStore):
    """The default store: a folder with one state file per workflow.

    Args:
        path: the folder. None means ``$DURAVOKE_HOME`` if set, else the user state
            folder that platformdirs gives for "duravoke" (looked up on each use, so
            setting the variable later still counts).
        durability: ``"fsync"`` (a recorded step survives power loss) or ``"flush"``
            (it survives the process crashing, not the machine; much faster).

    Files: ``<name>.json`` (the state), ``<name>.journal`` (records not yet folded in,
    while a run is going on or after a crash) and ``<name>.lock``, where ``<name>`` is a
    filesystem-safe prefix of the workflow id followed by a hash of the whole id.
    """

    def __init__(
        self, path: str | os.PathLike[str] | None = None, *, durability: Durability = "fsync"
    ) -> None:
        super().__init__(durability)
        # Absolute at once: a later chdir must not move the state.
        self._path = None if path is None else Path(path).absolute()

    @property
    def location(self) -> str:
        """The folder."""
        return str(self._folder())

    def _folder(self) -> Path:
        return self._path if self._path is not None else default_folder()

    def _snapshot_path(self, workflow_id: str) -> Path:
        return self._folder() / f"{_file_stem(workflow_id)}.json"

    def _remove_leftovers(self, workflow_id: str) -> None:
        remove_leftovers(self._snapshot_path(workflow_id))

    def _snapshot_state(self, workflow_id: str) -> State | None:
        path = self._snapshot_path(workflow_id)
        data = read_bytes(path)
        if data is None:
            return None
        workflows = load_snapshot(data, str(path))
        if list(workflows) != [workflow_id]:
            raise CorruptStateError(
                f"{path} does not hold workflow {workflow_id!r} (was it copied or renamed by"
                " hand?). It was left untouched; move it aside to start that workflow afresh.",
                path=path,
            )
        return workflows[workflow_id]

    def _save_snapshot(self, workflow_id: str, state: State | None) -> bool:
        path = self._snapshot_path(workflow_id)
        if state is None:
            return remove(path)
        atomic_write(path, dump_snapshot({workflow_id: state}))
        return True

    def workflow_ids(self) -> list[str]:
        """Every workflow with a state file or a journal in the folder."""
        folder = self._folder()
        if not folder.is_dir():
            return []
        ids = self._journal_ids(folder)
        for path in folder.glob("*.json"):
            try:
                ids.update(load_snapshot(path.read_bytes(), str(path)))
            except (OSError, CorruptStateError):
                logger.warning("skipping unreadable state file %s", path)
        return sorted(ids)


class PersistedKKV(_FileStore):
    """All workflows in one readable JSON file (the original duravoke store).

    Args:
        path: the state file, e.g. ``"./duravoke_state.json"``. Journals and lock files
            live beside it in the folder ``<path>.d``.
        durability: as for :class:`DirectoryStore`.

    Folding a workflow's journal into the file rewrites the whole file (atomically):
    at the end of each run that recorded steps while the file is at most 256 KiB, and
    beyond that only once the journal has grown to a quarter of the file, so that the
    cost per step stays constant. Prefer :class:`DirectoryStore` for many workflows.
    """

    def __init__(self, path: str | os.PathLike[str], *, durability: Durability = "fsync") -> None:
        super().__init__(durability)
        self.path = Path(path).absolute()

    @property
    def location(self) -> str:
        """The state file."""
        return str(self.path)

    def _folder(self) -> Path:
        return self.path.with_name(self.path.name + ".d")

    def _compacts(self, journal_bytes: int) -> bool:
        # Rewriting the shared file costs its whole size: keep it small and readable, and
        # once it is large, fold a journal in only when it has grown to a quarter of it.
        try:
            size = os.stat(self.path).st_size
        except FileNotFoundError:
            return True
        return size <= 256 * 1024 or journal_bytes * 4 >= size

    def _all(self) -> dict[str, State]:
        data = read_bytes(self.path)
        return {} if data is None else load_snapshot(data, str(self.path))

    def _snapshot_state(self, workflow_id: str) -> State | None:
        return self._all().get(workflow_id)

    def _save_snapshot(self, workflow_id: str, state: State | None) -> bool:
        ensure_folder(self._folder())
        # Read-modify-write of the shared file: one writer at a time across processes.
        with filelock.FileLock(self._folder() / "store.lock", mode=0o600, thread_local=False):
            remove_leftovers(self.path)
            workflows = self._all()
            if state is None:
                if workflow_id not in workflows:
                    return False
                del workflows[workflow_id]
            else:
                workflows[workflow_id] = state
            atomic_write(self.path, dump_snapshot(workflows))
            return True

    def workflow_ids(self) -> list[str]:
        """Every workflow in the file or with a journal beside it."""
        folder = self._folder()
        ids = self._journal_ids(folder) if folder.is_dir() else set()
        return sorted(ids | set(self._all()))
