"""Small, careful file operations: private folders and files, atomic replace, fsync.

Platform differences are decided once, here, at import time.
"""

from __future__ import annotations

import contextlib
import glob
import os
import tempfile
from pathlib import Path

__all__ = [
    "atomic_write",
    "ensure_folder",
    "fsync_folder",
    "read_bytes",
    "remove",
    "remove_leftovers",
]

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


def remove_leftovers(path: Path) -> None:
    """Delete the temporary files that writers of ``path`` killed mid-write left behind.

    Only for a caller that holds the lock under which ``path`` is written: the temporary
    file of a writer still at work would go too.
    """
    for leftover in path.parent.glob(glob.escape(_temp_prefix(path)) + "*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            leftover.unlink()


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
