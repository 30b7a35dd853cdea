"""Small, careful file operations: private folders and files, atomic replace, fsync.

Platform differences are decided once, here, at import time.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import filelock

__all__ = [
    "FileLock",
    "atomic_write",
    "ensure_folder",
    "fsync_folder",
    "read_bytes",
    "remove",
    "remove_leftovers",
]

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

# Windows cannot open a directory to fsync it; there os.replace is as durable as it gets.
_CAN_FSYNC_FOLDERS = os.name == "posix"
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)


def fsync_folder(folder: Path) -> None:
    """Make a creation, rename or removal inside ``folder`` durable."""
    if not _CAN_FSYNC_FOLDERS:
        return
    fd = os.open(folder, os.O_RDONLY | _O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# Folders whose name this process has made durable (see ensure_folder).
_durable_folders: set[Path] = set()


def ensure_folder(folder: Path) -> None:
    """Create ``folder`` (and its parents) readable by its owner only, if missing.

    An existing folder keeps its permissions: it may be the user's own. Its name is made
    durable once per process, even if it exists: a process killed between creating it
    and the fsync of its parent leaves a name that a power cut can still take away,
    with everything written inside it since.
    """
    if folder.is_dir():
        if folder not in _durable_folders:
            fsync_folder(folder.parent)
            _durable_folders.add(folder)
        return
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    for p in reversed(missing):
        with contextlib.suppress(FileExistsError):
            p.mkdir(mode=0o700)
            # mkdir's mode is filtered by the umask; say it again to be sure.
            os.chmod(p, 0o700)
        fsync_folder(p.parent)
    _durable_folders.add(folder)


def atomic_write(path: Path, data: bytes, *, sync: bool = True, folder: bool = True) -> None:
    """Replace ``path`` with ``data`` so that readers see the old or the new file, whole.

    Write a temporary file in the same folder, flush and fsync it, ``os.replace`` it
    over the target, then fsync the folder (unless ``folder`` is false: a caller that
    replaces many files fsyncs their folder once). The target is never truncated in place.
    """
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if sync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if sync and folder:
        fsync_folder(path.parent)


def _temp_prefix(path: Path) -> str:
    return f".{path.name[:200]}."


def remove_leftovers(*paths: Path) -> None:
    """Delete the temporary files that writers of ``paths`` killed mid-write left behind.

    Only for a caller that holds the lock under which ``paths`` are written: the temporary
    file of a writer still at work would go too. One listing of each folder serves all.
    """
    by_folder: dict[Path, set[str]] = {}
    for path in paths:
        by_folder.setdefault(path.parent, set()).add(_temp_prefix(path))
    for folder, prefixes in by_folder.items():
        try:
            names = os.listdir(folder)
        except FileNotFoundError:
            continue
        for name in names:
            if name.endswith(".tmp") and name.startswith(".") and _prefix_of(name) in prefixes:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(folder / name)


def _prefix_of(name: str) -> str:
    # ".<target name>.<random>.tmp" -> ".<target name>."
    return name[: name.rfind(".", 0, len(name) - 4) + 1]


def read_bytes(path: Path) -> bytes | None:
    """The content of ``path``, or None when it does not exist."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def remove(path: Path, *, sync: bool = True) -> bool:
    """Delete ``path`` if it exists (durably); tell whether it did."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    if sync:
        fsync_folder(path.parent)
    return True


class FileLock:
    """A cross-process lock on a lock file, cheap enough to take for every write.

    filelock opens the lock file on every acquire and keeps bookkeeping that, measured
    here, cost 0.5-0.8 ms an acquire: more than the write of a step it guards. On POSIX
    this is ``flock`` on the file (kept open between acquires when ``keep_open``); on
    other systems it is a :class:`filelock.FileLock`. Like filelock's locks, it never
    deletes its file (deleting a lock file races with its next user). Not reentrant:
    callers serialize their own threads.
    """

    def __init__(self, path: Path, *, keep_open: bool = False) -> None:
        self.path = path
        self._keep_open = keep_open
        self._fd: int | None = None
        self._pid = 0
        self._held = False
        self._fallback = None if fcntl is not None else filelock.FileLock(path, mode=0o600)

    def acquire(self, *, blocking: bool = True) -> bool:
        """Take the lock (waiting for it if ``blocking``); tell whether it was taken."""
        if self._fallback is not None:  # pragma: no cover - not POSIX
            try:
                self._fallback.acquire(timeout=-1 if blocking else 0)
            except filelock.Timeout:
                return False
            return True
        if self._fd is None or self._pid != os.getpid():
            # A forked child must not share its parent's open file (and with it the lock).
            self._fd, self._pid = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600), os.getpid()
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._close()
            return False
        self._held = True
        return True

    def release(self) -> None:
        """Release the lock."""
        if self._fallback is not None:  # pragma: no cover - not POSIX
            self._fallback.release()
            return
        assert self._fd is not None
        self._held = False
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._close()

    def _close(self) -> None:
        if not self._keep_open:
            self.close()

    def close(self) -> None:
        """Close the lock file, unless the lock is held (then its release closes it)."""
        if self._held:
            self._keep_open = False
            return
        fd, self._fd = self._fd, None  # forgotten first: never closed twice
        if fd is not None and self._pid == os.getpid():
            os.close(fd)

    def __enter__(self) -> None:
        self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
