"""A power-loss simulator: record what a store asks of the disk, rebuild what a power cut leaves.

:class:`Recorder` wraps the ``os`` functions that change files (``open`` with
``O_CREAT``, ``write``, ``pwrite``, ``fsync``, ``fdatasync``, ``ftruncate``,
``rename``, ``replace``, ``unlink``, ``remove``, ``mkdir``, and ``fdopen`` so that
buffered writes go through ``os.write``) for paths under one folder, and logs each
operation in the order it completed. The library carries no hook for it: the wrappers
are installed on the ``os`` module for the duration of a ``with`` block. The test marks
what the code acknowledged (a step that returned) with :meth:`Recorder.ack`.

:func:`crash_states` then builds the disks a power cut could leave, under this model:

- an operation is durable once an fsync of its file (for a name: of its folder) that
  *started* after it has completed;
- any other operation may be kept or lost, independently of the others;
- a write may be kept for only some of its 4096-byte pages, a later page without an
  earlier one; a write that extends its file may leave zeros (the size grew, the data
  did not arrive).

A crash may happen at any moment, but the moments just before an fsync completes are
the only ones that matter: every other moment allows a subset of the disks allowed by
the next one, with a subset of its acknowledgements. Small cases are enumerated
exhaustively, large ones sampled with a seed; both are bounded in count and in time.

A process that is killed (not a power cut) keeps its page cache: :meth:`Recorder.kill_after`
makes the n-th change and all later ones fail with :class:`Killed` before they happen,
and :meth:`Recorder.revive` lets a new "process" carry on over the same files.
"""

from __future__ import annotations

import itertools
import os
import random
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

__all__ = [
    "PAGE",
    "Ack",
    "Crash",
    "Killed",
    "Recorder",
    "Violation",
    "crash_states",
    "explore",
]

PAGE = 4096

T = TypeVar("T")


class Killed(BaseException):
    """The simulated process died: this change (and every later one) never happened."""


class Violation(AssertionError):
    """A crash state that breaks a promise; the message says how to reproduce it."""


# --- the log --------------------------------------------------------------------------


@dataclass(frozen=True)
class Write:
    """``data`` written at ``offset`` of ``inode``, whose size was ``old_size`` before."""

    inode: int
    offset: int
    data: bytes
    old_size: int


@dataclass(frozen=True)
class Truncate:
    """``inode`` cut (or grown) to ``size``."""

    inode: int
    size: int


@dataclass(frozen=True)
class Sync:
    """An fsync of ``inode`` (a file or a folder), started when the log had ``begin`` entries."""

    inode: int
    begin: int


@dataclass(frozen=True)
class Link:
    """``name`` created in folder ``folder`` for ``inode``."""

    folder: int
    name: str
    inode: int


@dataclass(frozen=True)
class Rename:
    """``inode`` moved from ``src`` to ``dst`` (folder, name), replacing what was there."""

    src: tuple[int, str]
    dst: tuple[int, str]
    inode: int


@dataclass(frozen=True)
class Unlink:
    """``name`` removed from folder ``folder`` (it was ``inode``)."""

    folder: int
    name: str
    inode: int


@dataclass(frozen=True)
class Ack:
    """The code under test acknowledged ``label`` (e.g. a step returned ``value``)."""

    label: str
    value: Any


Op = Write | Truncate | Sync | Link | Rename | Unlink | Ack


@dataclass
class _Base:
    """The files when recording started (all durable): inode kinds, folders, contents."""

    dirs: dict[int, dict[str, int]] = field(default_factory=dict)
    files: dict[int, bytes] = field(default_factory=dict)


# --- recording ------------------------------------------------------------------------


class _RawFile:
    """What ``os.fdopen(fd, "wb")`` returns while recording: writes go through ``os.write``."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]
        return len(data)

    def flush(self) -> None:
        pass

    def fileno(self) -> int:
        return self._fd

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def __enter__(self) -> _RawFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Recorder:
    """Records every change to files under ``root`` while it is entered (see the module).

    Args:
        root: the folder to watch; it must exist. What it holds when recording starts
            is taken as durable.
    """

    def __init__(self, root: Path) -> None:
        self.root = os.path.abspath(root)
        self.log: list[Op] = []
        self.base = _Base()
        self.mutations = 0  # changes made so far (what kill_after counts)
        self._lock = threading.RLock()
        self._inodes: dict[tuple[int, int], int] = {}
        self._kinds: dict[int, str] = {}
        self._fds: dict[int, int] = {}
        self._dead = False
        self._kill_at: int | None = None
        self._real: dict[str, Any] = {}

    # -- control ----------------------------------------------------------------------

    def ack(self, label: str, value: Any = None) -> None:
        """Note that the code under test acknowledged ``label`` (ignored once killed)."""
        with self._lock:
            if not self._dead:
                self.log.append(Ack(label, value))

    def kill_after(self, changes: int) -> None:
        """Let ``changes`` more changes happen; the next one kills the process."""
        with self._lock:
            self._kill_at = self.mutations + changes

    def revive(self) -> None:
        """A new process starts over the same files (the page cache survived the kill)."""
        with self._lock:
            self._dead = False
            self._kill_at = None

    @property
    def dead(self) -> bool:
        """Whether the simulated process was killed."""
        return self._dead

    @property
    def acks(self) -> list[Ack]:
        """Every acknowledgement logged so far."""
        return [op for op in self.log if isinstance(op, Ack)]

    # -- installing the wrappers ---------------------------------------------------------

    def __enter__(self) -> Recorder:
        self._capture_base()
        names = ["open", "close", "write", "pwrite", "fsync", "fdatasync", "ftruncate"]
        names += ["rename", "replace", "unlink", "remove", "mkdir", "fdopen"]
        for name in names:
            self._real[name] = getattr(os, name)
            setattr(os, name, getattr(self, f"_{name}"))
        return self

    def __exit__(self, *exc: object) -> None:
        for name, real in self._real.items():
            setattr(os, name, real)
        self._real.clear()

    def _capture_base(self) -> None:
        root_stat = os.stat(self.root)
        self._inodes[(root_stat.st_dev, root_stat.st_ino)] = 0
        self._kinds[0] = "dir"
        self.base.dirs[0] = {}
        for dirpath, dirnames, filenames in os.walk(self.root):
            folder = self._inode_of(dirpath)
            for name in dirnames + filenames:
                path = os.path.join(dirpath, name)
                st = os.lstat(path)
                inode = self._new_inode(st, "dir" if stat.S_ISDIR(st.st_mode) else "file")
                self.base.dirs[folder][name] = inode
                if stat.S_ISDIR(st.st_mode):
                    self.base.dirs[inode] = {}
                else:
                    with open(path, "rb") as f:
                        self.base.files[inode] = f.read()

    # -- bookkeeping --------------------------------------------------------------------

    def _inside(self, path: Any) -> str | None:
        if isinstance(path, int):
            return None
        text = os.path.abspath(os.fsdecode(os.fspath(path)))
        return text if text == self.root or text.startswith(self.root + os.sep) else None

    def _new_inode(self, st: os.stat_result, kind: str) -> int:
        inode = len(self._kinds)
        self._inodes[(st.st_dev, st.st_ino)] = inode
        self._kinds[inode] = kind
        return inode

    def _inode_of(self, path: str) -> int:
        st = os.lstat(path)
        return self._inodes[(st.st_dev, st.st_ino)]

    def _where(self, path: str) -> tuple[int, str]:
        return self._inode_of(os.path.dirname(path)), os.path.basename(path)

    def _change(self) -> None:
        """Called (with the lock held) before each change: the kill happens here."""
        if self._dead or (self._kill_at is not None and self.mutations >= self._kill_at):
            self._dead = True
            raise Killed
        self.mutations += 1

    # -- the wrappers ---------------------------------------------------------------------

    def _open(self, path: Any, flags: int, mode: int = 0o777, **kwargs: Any) -> int:
        inside = self._inside(path)
        if inside is None or kwargs:
            return self._real["open"](path, flags, mode, **kwargs)  # type: ignore[no-any-return]
        with self._lock:
            creating = bool(flags & os.O_CREAT) and not os.path.lexists(inside)
            truncating = bool(flags & os.O_TRUNC) and not creating
            if creating or truncating:
                self._change()
            fd: int = self._real["open"](inside, flags, mode)
            st = os.fstat(fd)
            if creating:
                inode = self._new_inode(st, "file")
                self._append(Link(*self._where(inside), inode))
            else:
                inode = self._inodes[(st.st_dev, st.st_ino)]
                if truncating:
                    self._append(Truncate(inode, 0))
            self._fds[fd] = inode
            return fd

    def _close(self, fd: int) -> None:
        with self._lock:
            self._fds.pop(fd, None)
        self._real["close"](fd)

    def _write(self, fd: int, data: Any) -> int:
        inode = self._fds.get(fd)
        if inode is None:
            return self._real["write"](fd, data)  # type: ignore[no-any-return]
        with self._lock:
            self._change()
            offset = os.lseek(fd, 0, os.SEEK_CUR)
            size = os.fstat(fd).st_size
            written: int = self._real["write"](fd, data)
            self._append(Write(inode, offset, bytes(data[:written]), size))
            return written

    def _pwrite(self, fd: int, data: Any, offset: int) -> int:
        inode = self._fds.get(fd)
        if inode is None:
            return self._real["pwrite"](fd, data, offset)  # type: ignore[no-any-return]
        with self._lock:
            self._change()
            size = os.fstat(fd).st_size
            written: int = self._real["pwrite"](fd, data, offset)
            self._append(Write(inode, offset, bytes(data[:written]), size))
            return written

    def _sync(self, name: str, fd: int) -> None:
        inode = self._fds.get(fd)
        if inode is None:
            self._real[name](fd)
            return
        with self._lock:
            self._change()
            begin = len(self.log)
        # Not under the lock: other threads' writes meanwhile are not covered (begin).
        self._real[name](fd)
        with self._lock:
            self._append(Sync(inode, begin))

    def _fsync(self, fd: int) -> None:
        self._sync("fsync", fd)

    def _fdatasync(self, fd: int) -> None:
        self._sync("fdatasync", fd)

    def _ftruncate(self, fd: int, length: int) -> None:
        inode = self._fds.get(fd)
        if inode is None:
            self._real["ftruncate"](fd, length)
            return
        with self._lock:
            self._change()
            self._real["ftruncate"](fd, length)
            self._append(Truncate(inode, length))

    def _move(self, name: str, src: Any, dst: Any, **kwargs: Any) -> None:
        inside = self._inside(src), self._inside(dst)
        if None in inside or kwargs:
            assert inside == (None, None), f"a rename across the watched folder: {src} {dst}"
            self._real[name](src, dst, **kwargs)
            return
        source, target = inside
        assert source is not None
        assert target is not None
        with self._lock:
            self._change()
            inode = self._inode_of(source)
            where = self._where(source), self._where(target)
            self._real[name](source, target)
            self._append(Rename(where[0], where[1], inode))

    def _rename(self, src: Any, dst: Any, **kwargs: Any) -> None:
        self._move("rename", src, dst, **kwargs)

    def _replace(self, src: Any, dst: Any, **kwargs: Any) -> None:
        self._move("replace", src, dst, **kwargs)

    def _remove_name(self, name: str, path: Any, **kwargs: Any) -> None:
        inside = self._inside(path)
        if inside is None or kwargs:
            self._real[name](path, **kwargs)
            return
        with self._lock:
            self._change()
            inode = self._inodes.get(_key(inside))
            where = self._where(inside)
            self._real[name](inside)  # raises FileNotFoundError before we log anything
            assert inode is not None, f"unknown file removed: {inside}"
            self._append(Unlink(*where, inode))

    def _unlink(self, path: Any, **kwargs: Any) -> None:
        self._remove_name("unlink", path, **kwargs)

    def _remove(self, path: Any, **kwargs: Any) -> None:
        self._remove_name("remove", path, **kwargs)

    def _mkdir(self, path: Any, mode: int = 0o777, **kwargs: Any) -> None:
        inside = self._inside(path)
        if inside is None or kwargs:
            self._real["mkdir"](path, mode, **kwargs)
            return
        with self._lock:
            if os.path.lexists(inside):
                self._real["mkdir"](inside, mode)  # raises FileExistsError
            self._change()
            self._real["mkdir"](inside, mode)
            inode = self._new_inode(os.lstat(inside), "dir")
            self._append(Link(*self._where(inside), inode))

    def _fdopen(self, fd: int, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if fd in self._fds and "w" in mode and "b" in mode:
            return _RawFile(fd)
        return self._real["fdopen"](fd, mode, *args, **kwargs)

    def _append(self, op: Op) -> None:
        self.log.append(op)

    @property
    def kinds(self) -> dict[int, str]:
        """The kind ("file" or "dir") of every inode seen."""
        return dict(self._kinds)


def _key(path: str) -> tuple[int, int]:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return (-1, -1)
    return st.st_dev, st.st_ino


# --- crash states ---------------------------------------------------------------------


@dataclass
class Crash:
    """One disk a power cut could leave: the log up to ``point``, with choices for the rest.

    Attributes:
        point: the crash happened after ``log[:point]``.
        kept: for each operation that was not durable, what of it reached the disk: for a
            write, the set of its kept page numbers and whether its size change was kept;
            for anything else, True or False.
        acks: what had been acknowledged before the crash.
        label: how this state was chosen, for the failure message.
    """

    point: int
    kept: dict[int, Any]
    acks: list[Ack]
    label: str

    def materialize(self, recorder: Recorder, dest: Path) -> None:
        """Write this disk's files under ``dest`` (which must not exist) as under the root."""
        materialize(recorder, self, dest)


def _pages(op: Write) -> list[int]:
    if not op.data:
        return []
    return list(range(op.offset // PAGE, (op.offset + len(op.data) - 1) // PAGE + 1))


def _zero_growth(op: Write) -> bool:
    """A write of zeros past the old end: whether its pages arrive makes no difference."""
    return op.offset >= op.old_size and not op.data.strip(b"\0")


def _choices(op: Op) -> list[tuple[str, Any]]:
    """The independent parts of a non-durable operation: (kind, identifier) per bit."""
    if isinstance(op, Write):
        bits: list[tuple[str, Any]] = []
        if not _zero_growth(op):
            bits += [("page", p) for p in _pages(op)]
        if op.offset + len(op.data) > op.old_size:
            bits.append(("size", None))
        return bits
    if isinstance(op, Sync | Ack):
        return []
    return [("op", None)]


def _decide(op: Op, bits: list[tuple[str, Any]], values: list[bool]) -> Any:
    if isinstance(op, Write):
        pages = {
            ident for (kind, ident), v in zip(bits, values, strict=True) if kind == "page" and v
        }
        if _zero_growth(op):
            pages = set(_pages(op))
        size = any(v for (kind, _), v in zip(bits, values, strict=True) if kind == "size")
        return (frozenset(pages), size)
    return values[0]


def crash_states(
    recorder: Recorder,
    *,
    seed: int,
    exhaustive_bits: int = 8,
    samples: int = 48,
    points: list[int] | None = None,
) -> Iterator[Crash]:
    """Every crash moment that matters, each with its possible disks (see the module).

    With at most ``exhaustive_bits`` independent choices at a moment, every combination
    is produced; beyond that, the natural orders (each prefix of the operations kept
    whole), each choice lost alone and kept alone, and ``samples`` random combinations
    drawn with ``seed``.
    """
    log = recorder.log
    if points is None:
        points = [i for i, op in enumerate(log) if isinstance(op, Sync)] + [len(log)]
    rng = random.Random(seed)
    for point in points:
        durable_before = _durable_marks(log, point)
        free: list[int] = []
        for i, op in enumerate(log[:point]):
            if isinstance(op, Sync | Ack):
                continue
            if i >= durable_before.get(_target(op), 0):
                free.append(i)
        bits = [(i, b) for i in free for b in _choices(log[i])]
        acks = [op for op in log[:point] if isinstance(op, Ack)]
        for label, values in _assignments(bits, rng, exhaustive_bits, samples):
            kept: dict[int, Any] = {}
            for i in free:
                mine = [(b, v) for (j, b), v in zip(bits, values, strict=True) if j == i]
                kept[i] = _decide(log[i], [b for b, _ in mine], [v for _, v in mine])
            yield Crash(point, kept, acks, label)


def _target(op: Op) -> int:
    """The inode whose fsync makes ``op`` durable."""
    if isinstance(op, Write | Truncate):
        return op.inode
    if isinstance(op, Link | Unlink):
        return op.folder
    if isinstance(op, Rename):
        # Within one folder in this library; the target folder makes the new name durable.
        return op.dst[0]
    raise TypeError(op)


def _durable_marks(log: list[Op], point: int) -> dict[int, int]:
    """{inode: the operations before this index are durable} at ``point``."""
    marks: dict[int, int] = {}
    for op in log[:point]:
        if isinstance(op, Sync):
            marks[op.inode] = max(marks.get(op.inode, 0), op.begin)
    return marks


def _assignments(
    bits: list[Any], rng: random.Random, exhaustive_bits: int, samples: int
) -> Iterator[tuple[str, list[bool]]]:
    n = len(bits)
    if n <= exhaustive_bits:
        for values in itertools.product([False, True], repeat=n):
            yield "exhaustive", list(values)
        return
    seen: set[tuple[bool, ...]] = set()

    def once(label: str, values: list[bool]) -> Iterator[tuple[str, list[bool]]]:
        if tuple(values) not in seen:
            seen.add(tuple(values))
            yield label, values

    for cut in range(n + 1):  # what a disk writing in order would leave
        yield from once(f"prefix {cut}", [i < cut for i in range(n)])
    for i in range(n):
        yield from once(f"only {i} lost", [j != i for j in range(n)])
        yield from once(f"only {i} kept", [j == i for j in range(n)])
    for k in range(samples):
        yield from once(f"random {k}", [rng.random() < 0.5 for _ in range(n)])


def materialize(recorder: Recorder, crash: Crash, dest: Path) -> None:
    """Build the disk of ``crash`` under ``dest`` (the watched root's counterpart)."""
    base = recorder.base
    kinds = recorder.kinds
    dirs = {d: dict(entries) for d, entries in base.dirs.items()}
    data = {i: bytearray(base.files.get(i, b"")) for i, k in kinds.items() if k == "file"}
    sizes = {i: len(base.files.get(i, b"")) for i in data}
    for i, op in enumerate(recorder.log[: crash.point]):
        if isinstance(op, Sync | Ack):
            continue
        decision = crash.kept.get(i, "durable")
        if isinstance(op, Write):
            end = op.offset + len(op.data)
            if decision == "durable":
                pages, grow = frozenset(_pages(op)), True
            else:
                pages, grow = decision
            buffer = data[op.inode]
            if len(buffer) < end:
                buffer.extend(bytes(end - len(buffer)))
            for page in pages:
                lo, hi = max(op.offset, page * PAGE), min(end, (page + 1) * PAGE)
                buffer[lo:hi] = op.data[lo - op.offset : hi - op.offset]
            if grow:
                sizes[op.inode] = max(sizes[op.inode], end)
            continue
        if decision is False:
            continue
        if isinstance(op, Truncate):
            del data[op.inode][op.size :]
            sizes[op.inode] = op.size
        elif isinstance(op, Link):
            dirs.setdefault(op.folder, {})[op.name] = op.inode
            if kinds[op.inode] == "dir":
                dirs.setdefault(op.inode, {})
        elif isinstance(op, Unlink):
            if dirs.get(op.folder, {}).get(op.name) == op.inode:
                del dirs[op.folder][op.name]
        elif isinstance(op, Rename):
            if dirs.get(op.src[0], {}).get(op.src[1]) == op.inode:
                del dirs[op.src[0]][op.src[1]]
            dirs.setdefault(op.dst[0], {})[op.dst[1]] = op.inode

    def build(folder: int, path: Path) -> None:
        path.mkdir(mode=0o700)
        for name, inode in dirs.get(folder, {}).items():
            if kinds[inode] == "dir":
                build(inode, path / name)
            else:
                content = bytes(data[inode][: sizes[inode]])
                content += bytes(sizes[inode] - len(content))
                (path / name).write_bytes(content)
                (path / name).chmod(0o600)

    build(0, dest)


def explore(
    recorder: Recorder,
    check: Callable[[Path, list[Ack]], None],
    workdir: Path,
    *,
    seed: int,
    max_states: int = 3000,
    max_seconds: float = 60.0,
    min_states: int = 1,
    **options: Any,
) -> int:
    """Materialize crash states under ``workdir`` and ``check`` each; return how many ran.

    ``check(folder, acks)`` gets the rebuilt root and what was acknowledged before the
    crash; any exception it raises becomes a :class:`Violation` naming the seed, the
    crash moment and the choices, so the failure can be replayed.

    Raises:
        Violation: a crash state failed ``check``, or fewer than ``min_states`` states
            were explored within the bounds (a simulation that checks nothing must fail).
    """
    deadline = time.monotonic() + max_seconds
    workdir.mkdir(parents=True, exist_ok=True)
    count = 0
    for count, crash in enumerate(crash_states(recorder, seed=seed, **options), 1):
        dest = workdir / f"crash-{count}"
        crash.materialize(recorder, dest)
        try:
            check(dest, crash.acks)
        except BaseException as exc:
            if not isinstance(exc, Exception | AssertionError):
                raise
            raise Violation(
                f"crash state #{count} (seed {seed}, after {crash.point} of"
                f" {len(recorder.log)} operations, {crash.label}; the last operations:"
                f" {_describe(recorder, crash)}): {type(exc).__name__}: {exc}"
            ) from exc
        finally:
            _rmtree(dest)
        if count >= max_states or time.monotonic() > deadline:
            break
    if count < min_states:
        raise Violation(f"only {count} crash states explored (seed {seed}); expected {min_states}")
    return count


def _describe(recorder: Recorder, crash: Crash) -> str:
    parts = []
    for i in range(max(0, crash.point - 6), crash.point):
        op = recorder.log[i]
        fate = crash.kept.get(i, "durable")
        text = repr(op)
        if len(text) > 120:
            text = text[:117] + "..."
        parts.append(f"[{i}] {text} -> {fate}")
    return "; ".join(parts)


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
