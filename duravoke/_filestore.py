"""The stores that keep state in files: one folder of workflows, or one shared file.

Both keep the same two things:

- the *log* (``_log``): every record of every workflow, appended in checksummed frames
  to one store-wide file, so that records of many workflows written at the same moment
  share one write and one fsync, and starting or finishing a workflow costs no fsync of
  its own;
- the *snapshots*: readable JSON state files (one per workflow, or one for all), into
  which a checkpoint folds the log from time to time, with an index of every workflow's
  summary, so that listing workflows or finding the due ones reads one file.

A workflow's state is its snapshot with its records from the log applied on top.
Applying a record twice changes nothing, so a checkpoint interrupted anywhere loses
nothing. Only the holder of a workflow's lock appends that workflow's steps; messages
are appended by anyone, without the lock.
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import functools
import hashlib
import json
import os
import re
import shlex
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import platformdirs

from ._errors import CorruptStateError
from ._files import (
    FileLock,
    atomic_write,
    ensure_folder,
    fsync_folder,
    read_bytes,
    remove,
    remove_leftovers,
)
from ._groupcommit import Done, Then, Ticket, Waitable
from ._identity import check_workflow_id
from ._journal import read_legacy_journal
from ._log import Entry, Log, View, check_header, decode_entries, read_frames
from ._logging import logger
from ._snapshot import dump_snapshot, load_snapshot
from ._state import Record, State, apply, new_state, now_iso, summarize
from ._store import Durability, Lease, Store, check_durability

__all__ = ["DirectoryStore", "PersistedKKV", "default_folder"]

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_INDEX_FORMAT = "duravoke-index"
_INDEX_VERSION = 1
#: A checkpoint starts once the log's active segment has grown this large.
_CHECKPOINT_BYTES = 4 * 1024 * 1024
#: ...or once this much is logged and no run of this store object is going on.
_IDLE_CHECKPOINT_BYTES = 256 * 1024
#: A small PersistedKKV file is folded once no run has ended for this long (seconds).
_QUIET = 0.1
#: Never set: waiting on it is a sleep.
_never = threading.Event()

_homes: dict[str, Path] = {}


def default_folder() -> Path:
    """The default store folder: ``$DURAVOKE_HOME``, else the user state folder.

    A relative ``$DURAVOKE_HOME`` is resolved against the working directory of the first
    use, once: a later ``chdir`` must not split the store in two.
    """
    home = os.environ.get("DURAVOKE_HOME")
    if not home:
        return platformdirs.user_state_path("duravoke").absolute()
    folder = _homes.get(home)
    if folder is None:
        folder = _homes[home] = Path(home).absolute()
    return folder


def _file_stem(workflow_id: str) -> str:
    # Never the raw id: a readable, safe prefix for people, then a hash for uniqueness.
    # No leading "-" (a file named like an option) or "." (hidden).
    return _stems(workflow_id)[0]


@functools.lru_cache(maxsize=4096)  # every open and read names the files again
def _stems(workflow_id: str) -> tuple[str, str]:
    """(the stem of the workflow's files, the stem duravoke 0.2 gave them)."""
    digest = hashlib.sha256(workflow_id.encode("utf-8")).hexdigest()[:32]
    slug = _UNSAFE.sub("_", workflow_id)[:48]
    new, old = slug.strip("_-."), slug.strip("_")
    return (f"{new}.{digest}" if new else digest), (f"{old}.{digest}" if old else "")


def _existing(folder: Path, workflow_id: str, suffix: str) -> Path:
    """The workflow's file with ``suffix``: under its name, or under the name that
    duravoke 0.2 gave it (a leading "-" or "." was kept then) if only that exists."""
    stem, old = _stems(workflow_id)
    path = os.path.join(folder, stem + suffix)
    if old and old != stem and not os.path.exists(path):
        old_path = os.path.join(folder, old + suffix)
        if os.path.exists(old_path):
            return Path(old_path)
    return Path(path)


class _FileStore(Store):
    """What both file stores share: locks, the log, checkpoints, the index.

    Subclasses implement four hooks: where the folder is, and how snapshots are read,
    written and listed.
    """

    #: Whether every workflow's snapshot is in one file (rewritten by every checkpoint).
    _one_file = False

    def __init__(self, durability: Durability) -> None:
        self.durability: Durability = check_durability(durability)
        self._logs: dict[Path, Log] = {}
        self._guard = threading.Lock()
        self._open_leases = 0
        self._last_close = 0.0  # time.monotonic() when a run last ended
        self._fold_waiting = False  # a thread waits for a quiet moment to fold
        self._checkpointing = threading.Lock()
        _open_stores.add(self)

    # --- hooks ----------------------------------------------------------------------------

    def _folder(self) -> Path:
        """The folder of lock files, the log and the index."""
        raise NotImplementedError

    def _read_snapshot(self, workflow_id: str) -> State | None:
        """The workflow's snapshot, if any."""
        raise NotImplementedError

    def _write_snapshots(self, states: dict[str, State | None]) -> None:
        """Replace (or, for None, delete) these workflows' snapshots, durably."""
        raise NotImplementedError

    def _snapshot_states(self) -> dict[str, State]:
        """Every snapshot (used once, to build the index of a store that has none)."""
        raise NotImplementedError

    # --- Store ----------------------------------------------------------------------------

    def try_lock(self, workflow_id: str) -> Lease | None:
        """Take the workflow's lock file without waiting."""
        folder = self._folder()
        ensure_folder(folder)
        lock = FileLock(folder / f"{_file_stem(check_workflow_id(workflow_id))}.lock")
        if not lock.acquire(blocking=False):
            return None
        with self._guard:
            self._open_leases += 1
        return _FileLease(self, workflow_id, lock)

    def load_many(self, leases: list[Lease]) -> list[State | Exception]:
        """The workflows' states, read with one look at the log (their locks are held)."""
        log = self.log()
        view = log.view()  # caught up once, now that the locks are held
        states: list[State | Exception] = []
        for lease in leases:
            assert isinstance(lease, _FileLease)
            lease._log = log
            try:
                states.append(self._read(lease.workflow_id, view) or new_state())
            except Exception as exc:
                states.append(exc)
        log.make_durable(view)  # before any of it is replayed
        return states

    def read(self, workflow_id: str) -> State | None:
        """Snapshot plus log, without the lock (a torn last frame is ignored)."""
        return self._read(check_workflow_id(workflow_id))

    def _read(self, workflow_id: str, view: View | None = None) -> State | None:
        forgotten, records = self._log_entries(workflow_id, view)
        state = None if forgotten else self._base_state(workflow_id)
        if records:
            state = state or new_state()
            for record in records:
                apply(state, record)
        return state

    def workflow_ids(self) -> list[str]:
        """Every workflow with recorded state."""
        return sorted(self.summaries())

    def summaries(self) -> dict[str, State]:
        """Every workflow's summary (its state without steps), from the index and the log."""
        if not self._folder().is_dir():
            return {}
        view = self.log().view()
        return {w: dict(s) for w, s in view.summaries.items()}

    # --- messages: records of the log, appended without the workflow's lock ---------------

    def send(self, workflow_id: str, topic: str, data: str) -> int:
        """Append a message to the log (durable on return); see :meth:`Store.send`."""
        check_workflow_id(workflow_id)
        record: Record = {"msg": topic, "seq": None, "data": json.loads(data), "at": now_iso()}
        self.log().append([(workflow_id, record)])
        return int(record["seq"])  # given by the writer, in the order of the log

    def messages(self, workflow_id: str, topic: str, after: int) -> list[tuple[int, Any]]:
        """The messages on ``topic`` after ``after``: the state's inbox and the log's."""
        state = self.read(workflow_id)
        inbox = [] if state is None else state.get("inbox", {}).get(topic, [])
        return [(seq, data) for seq, data, _at in inbox if seq > after]

    def with_messages(self, topic: str, workflow_ids: Iterable[str]) -> set[str]:
        """From the view of the log and the index (as of at most 50 ms ago): no state
        file or frame is read."""
        ids = [check_workflow_id(w) for w in workflow_ids]
        if not self._has_log():
            return set()
        # Polled answers: a view caught up 50 ms ago will do (this process's own sends
        # are in it at once).
        seqs = self.log().view(max_age=0.05).seqs
        return {w for w in ids if seqs.get((w, topic), 0) > 0}

    def drop_messages(self, workflow_id: str) -> bool:
        """Messages go with the workflow's ``forget`` record; nothing else to delete."""
        return False

    def _has_message(self, summary: State, workflow_id: str) -> bool:
        # The summary knows the last message of each topic: no state is read.
        if summary["status"] != "waiting" or not isinstance(summary.get("topic"), str):
            return False
        last = summary.get("inbox", {}).get(summary["topic"], 0)
        if isinstance(last, list):  # a whole state: its messages, not only the last number
            last = last[-1][0] if last else 0
        return bool(last > int(summary.get("after") or 0))

    def suspects(self, summaries: dict[str, State]) -> set[str]:
        """Workflows whose state file is not as the last checkpoint wrote it."""
        return {
            workflow_id
            for workflow_id, summary in summaries.items()
            if summary.get("file") != self._snapshot_stamp(workflow_id)
            and (summary.get("file") is not None or self._has_snapshot(workflow_id))
        }

    def _snapshot_stamp(self, workflow_id: str) -> list[int] | None:
        """Size and modification time of the workflow's state file (None: none)."""
        return None

    def close(self) -> None:
        """Fold the log into the snapshots and close the log's file."""
        if self._folder().is_dir():
            self.checkpoint()
        with self._guard:
            logs, self._logs = list(self._logs.values()), {}
        for log in logs:
            log.close()

    # --- the log and checkpoints ------------------------------------------------------------

    def log(self) -> Log:
        """The log of this store's folder, as this store object uses it."""
        home = self._folder()
        log = self._logs.get(home)  # the common case, without building a path
        if log is not None:
            return log
        folder = home / "log"
        with self._guard:
            log = self._logs.get(home)
            if log is None:
                ensure_folder(folder)
                log = self._logs[home] = Log(
                    folder,
                    sync=self.durability == "fsync",
                    base=self._index,
                    salvage=self.salvage_command(),
                )
            return log

    def salvage_command(self) -> str:
        """The shell command that salvages this store (``duravoke salvage --store ...``)."""
        return f"duravoke salvage --store {shlex.quote(self.location)}"

    def _has_log(self) -> bool:
        """Whether the store has a log (reading must not create one)."""
        home = self._folder()
        return home in self._logs or (home / "log").is_dir()

    def _log_entries(self, workflow_id: str, view: View | None) -> tuple[bool, list[Record]]:
        if view is None and not self._has_log():
            return False, []
        return self.log().entries(workflow_id, view)

    def _base_state(self, workflow_id: str) -> State | None:
        """The snapshot with an old-format journal (written by duravoke 0.2) on top."""
        state = self._read_snapshot(workflow_id)
        records = read_legacy_journal(
            self._legacy_journal(workflow_id), workflow_id, self.salvage_command()
        )
        if records:
            state = state or new_state()
            for record in records:
                apply(state, record)
        return state

    def _knows(self, workflow_id: str) -> bool:
        """Whether anything is recorded for the workflow (without reading its state)."""
        view = self.log().view()
        if workflow_id in view.summaries:
            return True
        return workflow_id not in view.forgotten and (
            self._has_snapshot(workflow_id) or self._legacy_journal(workflow_id).exists()
        )

    def _has_snapshot(self, workflow_id: str) -> bool:
        return workflow_id in self._snapshot_states()

    def _drop_files(self, workflow_id: str) -> None:
        """Delete what a forgotten workflow has in files of its own (the lock is held)."""
        remove(self._legacy_journal(workflow_id))

    def _legacy_journal(self, workflow_id: str) -> Path:
        return _existing(self._folder(), workflow_id, ".journal")

    def _index_path(self) -> Path:
        return self._folder() / "log" / "index.json"

    def _index(self) -> tuple[int, dict[str, State], dict[tuple[str, str], int]]:
        """(covers, summaries, message seqs) as of the last checkpoint."""
        data = read_bytes(self._index_path())
        if data is None:
            return self._build_index()
        try:
            doc = json.loads(data)
            if doc.get("format") != _INDEX_FORMAT or doc.get("version") != _INDEX_VERSION:
                raise ValueError
            seqs = {(w, t): n for w, t, n in doc["seqs"]}
            return int(doc["covers"]), dict(doc["workflows"]), seqs
        except (ValueError, KeyError, TypeError):
            # The index only summarizes the snapshots: rebuild it rather than fail.
            logger.warning("rebuilding the damaged index %s", self._index_path())
            return self._build_index()

    def _build_index(self) -> tuple[int, dict[str, State], dict[tuple[str, str], int]]:
        """Summaries of every snapshot and old-format journal (a store without an index)."""
        states = dict(self._snapshot_states())
        for path in self._folder().glob("*.journal"):
            workflow_id = _legacy_journal_id(path)
            if workflow_id is not None:
                try:
                    state = self._base_state(workflow_id)
                except CorruptStateError:
                    # That workflow's own loads report it; the others must keep working.
                    logger.warning("skipping unreadable journal %s", path)
                    continue
                if state is not None:
                    states[workflow_id] = state
        seqs = {
            (w, topic): msgs[-1][0]
            for w, s in states.items()
            for topic, msgs in s.get("inbox", {}).items()
            if msgs
        }
        return 0, {w: summarize(s) for w, s in states.items()}, seqs

    def checkpoint(self) -> None:
        """Fold the log into the snapshots and the index, then delete what they hold.

        Runs in the background of ordinary use (when the log has grown, when a run ends
        with nothing else going on) and at exit; call it to make the state files current.
        A checkpoint of this store object in progress (in the background) is waited for
        first: it may have sealed the log before the newest records.
        """
        self._checkpoint(wait=True)

    def _checkpoint(self, *, wait: bool) -> None:
        with contextlib.ExitStack() as stack:
            if not self._checkpointing.acquire(blocking=wait):
                return  # this store object is at it already (in the background)
            stack.callback(self._checkpointing.release)
            lock = FileLock(self._folder() / "log" / "checkpoint.lock")
            if not lock.acquire(blocking=False):
                return  # another process is at it
            stack.callback(lock.release)
            self._fold()

    def _fold(self) -> None:
        log = self.log()
        sealed = log.start_checkpoint()
        if sealed is None:
            return
        covers, summaries, seqs = self._index()
        folded = [n for n in log.segment_numbers() if covers < n <= sealed]
        touched, forgotten = _records_of(log, folded)
        states: dict[str, State | None] = {}
        for workflow_id, records in touched.items():
            state = None if workflow_id in forgotten else self._base_state(workflow_id)
            for record in records:
                state = state or new_state()
                apply(state, record)
            states[workflow_id] = state
            for key in [k for k in seqs if k[0] == workflow_id]:
                del seqs[key]
            if state is None:
                summaries.pop(workflow_id, None)
                continue
            summaries[workflow_id] = summarize(state)
            for topic, msgs in state.get("inbox", {}).items():
                seqs[(workflow_id, topic)] = msgs[-1][0]
        self._write_snapshots(states)
        for workflow_id, summary in summaries.items():
            # How its state file looked when written, to notice later changes by hand.
            if workflow_id in states or self._one_file:
                summary["file"] = self._snapshot_stamp(workflow_id)
        index = {
            "format": _INDEX_FORMAT,
            "version": _INDEX_VERSION,
            "covers": sealed,
            "seqs": [[w, t, n] for (w, t), n in seqs.items()],
            "workflows": summaries,
        }
        atomic_write(self._index_path(), json.dumps(index).encode(), sync=log.sync)
        for workflow_id in states:
            remove(self._legacy_journal(workflow_id), sync=False)
        for number in folded:
            # No fsync of the folder: a deletion that is lost brings back a segment the
            # index already covers, which is skipped.
            remove(log.segment_path(number), sync=False)
        log.reset()

    def _lease_closed(self) -> None:
        """A lease was closed: start a checkpoint in the background if one is due."""
        with self._guard:
            self._open_leases -= 1
            idle = self._open_leases == 0
            self._last_close = time.monotonic()
        # Asked outside the guard: it may build the log, which takes the guard.
        if idle and self._fold_when_idle():
            with self._guard:
                start, self._fold_waiting = not self._fold_waiting, True
            if start:  # else the thread waiting already sees this run's end
                self._in_background(self._fold_when_quiet)
            return
        due = self._idle_checkpoint_due() if idle else self.log().active_size() > _CHECKPOINT_BYTES
        if due and not self._checkpointing.locked():
            # Nothing waits for it, not even the caller of the run that just ended; when
            # nothing else of this store runs here, this makes the state files current
            # soon, and exit makes them current at once.
            self._in_background(self._checkpoint_quietly)

    def _in_background(self, work: Callable[[], None]) -> None:
        threading.Thread(target=work, name="duravoke-checkpoint", daemon=True).start()

    def _fold_when_quiet(self) -> None:
        """Fold once no run of this store object has ended for :data:`_QUIET` seconds:
        runs that follow one another (a loop of sync workflows) share one fold, and a
        script's file is current a moment after its last run (and at exit)."""
        while True:
            with self._guard:
                wait = self._last_close + _QUIET - time.monotonic()
                if wait <= 0:
                    self._fold_waiting = False
                    busy = self._open_leases > 0  # its end schedules the fold again
                    break
            # Not time.sleep: programs (and their tests) that replace it for their own
            # waits must not see the library's.
            _never.wait(wait)
        if not busy:
            self._checkpoint_quietly()

    def _checkpoint_quietly(self) -> None:
        """A background checkpoint: a failure is logged, not raised in a thread nobody
        joins. It loses nothing: the log keeps every record, and the next one retries."""
        try:
            self._checkpoint(wait=False)
        except Exception as exc:
            logger.warning(
                "a background checkpoint of %s failed (%r); every record stays in the log"
                " and the next checkpoint tries again",
                self.location,
                exc,
            )

    def _idle_checkpoint_due(self) -> bool:
        return self.log().active_size() > _IDLE_CHECKPOINT_BYTES

    def _fold_when_idle(self) -> bool:
        """Whether to fold soon after the last run of this store ends (see
        :meth:`_fold_when_quiet`), however little the log holds."""
        return False


def _records_of(log: Log, numbers: list[int]) -> tuple[dict[str, list[Record]], set[str]]:
    """The records of each workflow in these segments (after its last "forget"), and the
    workflows that were forgotten."""
    touched: dict[str, list[Record]] = {}
    forgotten: set[str] = set()
    for number in numbers:
        path = log.segment_path(number)
        data = read_bytes(path) or b""
        frames, _end, _torn = read_frames(data, 0, str(path), log.salvage)
        for offset, payload in frames:
            if offset == 0:
                check_header(payload, str(path))
                continue
            for workflow_id, record in decode_entries(payload, str(path), log.salvage):
                if record.get("forget"):
                    touched[workflow_id] = []
                    forgotten.add(workflow_id)
                else:
                    touched.setdefault(workflow_id, []).append(record)
    return touched, forgotten


def _legacy_journal_id(path: Path) -> str | None:
    try:
        with path.open("rb") as f:
            header = f.readline()
        workflow = json.loads(header[9:])["workflow"]
    except (OSError, ValueError, KeyError, TypeError):
        logger.warning("skipping unreadable journal %s", path)
        return None
    return workflow if isinstance(workflow, str) else None


class _FileLease(Lease):
    def __init__(self, store: _FileStore, workflow_id: str, lock: FileLock) -> None:
        super().__init__(workflow_id)
        self._store = store
        self._lock = lock
        self._log: Log | None = None

    def load(self) -> State:
        state = self._store.load_many([self])[0]
        if isinstance(state, Exception):
            raise state
        return state

    def append(self, records: Sequence[Record]) -> None:
        self.enqueue(records).wait()

    def enqueue(self, records: Sequence[Record]) -> Ticket:
        log = self._log or self._store.log()
        entries: list[Entry] = [(self.workflow_id, r) for r in records]
        return log.enqueue(entries)

    def close(self) -> None:
        try:
            self._lock.release()
        finally:
            self._store._lease_closed()

    def release(self, records: Sequence[Record]) -> Waitable:
        # The records ride in a group-commit batch; unlocking a file lock never waits (and
        # any checkpoint it makes due runs in a thread), so an async caller does it on its
        # event loop.
        return Then(self.enqueue(records) if records else Done(), self.close)

    def forget(self) -> bool:
        # Whatever its state holds, damaged or not: forgetting is how a damaged workflow
        # starts afresh, so its files are not read.
        found = self._store._knows(self.workflow_id)
        if found:
            self.append([{"forget": True}])
            self._store._drop_files(self.workflow_id)
        return found


class DirectoryStore(_FileStore):
    """The default store: a folder with one state file per workflow.

    Args:
        path: the folder. None means ``$DURAVOKE_HOME`` if set, else the user state
            folder that platformdirs gives for "duravoke" (looked up on each use, so
            setting the variable later still counts).
        durability: ``"fsync"`` (a recorded step survives power loss) or ``"flush"``
            (it survives the process crashing, not the machine; much faster).

    Files: ``<name>.json`` (a workflow's state as of the last checkpoint) and
    ``<name>.lock``, where ``<name>`` is a filesystem-safe prefix of the workflow id
    followed by a hash of the whole id; ``log/`` holds the store-wide log and the index.
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
        return _existing(self._folder(), workflow_id, ".json")

    def _has_snapshot(self, workflow_id: str) -> bool:
        return self._snapshot_path(workflow_id).exists()

    def _snapshot_stamp(self, workflow_id: str) -> list[int] | None:
        try:
            st = os.stat(self._snapshot_path(workflow_id))
        except FileNotFoundError:
            return None
        return [st.st_size, st.st_mtime_ns]

    def _drop_files(self, workflow_id: str) -> None:
        super()._drop_files(workflow_id)
        # The log's "forget" record makes any state file of it void; deleting it now keeps
        # the folder tidy (a checkpoint would delete it too).
        remove(self._snapshot_path(workflow_id))

    def _read_snapshot(self, workflow_id: str) -> State | None:
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

    def _write_snapshots(self, states: dict[str, State | None]) -> None:
        sync = self.durability == "fsync"
        remove_leftovers(*(self._snapshot_path(w) for w in states))
        for workflow_id, state in states.items():
            path = self._snapshot_path(workflow_id)
            if state is None:
                remove(path, sync=False)
            else:
                atomic_write(path, dump_snapshot({workflow_id: state}), sync=sync, folder=False)
        if sync and states:
            fsync_folder(self._folder())

    def _snapshot_states(self) -> dict[str, State]:
        states: dict[str, State] = {}
        for path in self._folder().glob("*.json"):
            try:
                states.update(load_snapshot(path.read_bytes(), str(path)))
            except (OSError, CorruptStateError):
                logger.warning("skipping unreadable state file %s", path)
        return states


class PersistedKKV(_FileStore):
    """All workflows in one readable JSON file (the original duravoke store).

    Args:
        path: the state file, e.g. ``"./duravoke_state.json"``. The log, the index and
            lock files live beside it in the folder ``<path>.d``.
        durability: as for :class:`DirectoryStore`.

    A checkpoint rewrites the whole file (atomically). While the file is at most 256 KiB,
    it runs a moment (0.1 s) after the last run of the store ends, and at exit (so a
    script's file is current when it ends); otherwise once the log has grown, so that
    the cost per step stays constant. Prefer :class:`DirectoryStore` for many workflows.
    """

    def __init__(self, path: str | os.PathLike[str], *, durability: Durability = "fsync") -> None:
        super().__init__(durability)
        self.path = Path(path).absolute()
        self._parsed: tuple[tuple[int, int, int], dict[str, State]] | None = None

    @property
    def location(self) -> str:
        """The state file."""
        return str(self.path)

    def _folder(self) -> Path:
        return self.path.with_name(self.path.name + ".d")

    def _fold_when_idle(self) -> bool:
        # A small file is kept current soon after every run, as its readers expect of one
        # JSON file; rewriting it costs a few fsyncs, which runs that follow one another
        # share.
        try:
            small = os.stat(self.path).st_size <= 256 * 1024
        except FileNotFoundError:
            small = True
        return small and self.log().active_size() > 0

    _one_file = True

    def _snapshot_stamp(self, workflow_id: str) -> list[int] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return [st.st_size, st.st_mtime_ns]

    def _snapshot_states(self) -> dict[str, State]:
        # Parsed once per version of the file (it is only ever replaced whole), not at
        # every workflow start. Callers must not change what it returns.
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return {}
        version = (st.st_ino, st.st_size, st.st_mtime_ns)
        cached = self._parsed
        if cached is not None and cached[0] == version:
            return cached[1]
        data = read_bytes(self.path)
        workflows = {} if data is None else load_snapshot(data, str(self.path))
        self._parsed = (version, workflows)
        return workflows

    def _read_snapshot(self, workflow_id: str) -> State | None:
        state = self._snapshot_states().get(workflow_id)
        return None if state is None else copy.deepcopy(state)

    def _write_snapshots(self, states: dict[str, State | None]) -> None:
        remove_leftovers(self.path)
        workflows = dict(self._snapshot_states())
        for workflow_id, state in states.items():
            if state is None:
                workflows.pop(workflow_id, None)
            else:
                workflows[workflow_id] = state
        atomic_write(self.path, dump_snapshot(workflows), sync=self.durability == "fsync")


# Fold the logs of the stores still open when the interpreter exits, so that state files
# are current after a script ends (a killed process leaves its log, which is as good).
_open_stores: weakref.WeakSet[_FileStore] = weakref.WeakSet()


@atexit.register
def _checkpoint_at_exit() -> None:
    for store in list(_open_stores):
        with contextlib.suppress(Exception):
            if store._logs:
                store.checkpoint()
