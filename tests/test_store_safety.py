"""Store safety: where state lives, how it is written, who may read it, and damage.

Writes are observed for real (strace on a subprocess, when strace is available), files
are damaged for real, and every claim is checked on the bytes left on disk. The file
stores keep one store-wide log (``log/log.NNNNNNNN`` segments of checksummed frames) and
snapshots that checkpoints fold the log into; the README documents both.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import platformdirs
import pytest

import duravoke

STEP_NAME = "safety.step"

# The same step as ``make_step`` below, for a separate process that may crash on purpose.
WORKER = """
import os, sys
import duravoke

kind, path, wid, n, mode = sys.argv[1:6]
if kind == "directory":
    store = duravoke.DirectoryStore(path)
else:
    store = duravoke.PersistedKKV(path)
d = duravoke.Duravoke(store)

@d.duravoke(name="safety.step")
def step(i):
    return {"i": i, "v": f"value-{i}"}

with d.workflow(wid):
    for i in range(int(n)):
        step(i)
    if mode == "crash":
        # Die with its frames in the log, unfolded, as a killed process would.
        os._exit(1)
"""


def expected(i: int) -> dict[str, Any]:
    """What step ``i`` returns, in every process."""
    return {"i": i, "v": f"value-{i}"}


def make_step(d: duravoke.Duravoke, calls: list[int]) -> Callable[[int], Any]:
    """The worker's step, in this process, counting the calls that execute."""

    @d.duravoke(name=STEP_NAME)
    def step(i: int) -> dict[str, Any]:
        calls.append(i)
        return expected(i)

    return step


def store_path(kind: str, base: Path) -> Path:
    """Where a store of ``kind`` keeps its state under ``base``."""
    return base / "store" if kind == "directory" else base / "kkv" / "state.json"


def open_kind(kind: str, path: Path) -> duravoke.Store:
    """A store of ``kind`` at ``path``."""
    if kind == "directory":
        return duravoke.DirectoryStore(path)
    return duravoke.PersistedKKV(path)


def run_worker(
    tmp_path: Path,
    kind: str,
    path: Path,
    wid: str,
    n: int,
    mode: str,
    trace: Path | None = None,
) -> None:
    """Run ``WORKER`` in a fresh interpreter (under strace when ``trace`` is given)."""
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    cmd = [sys.executable, str(script), kind, str(path), wid, str(n), mode]
    if trace is not None:
        syscalls = "openat,open,creat,rename,renameat,renameat2,fsync,fdatasync,"
        syscalls += "ftruncate,truncate,unlink,unlinkat,write,pwrite64"
        cmd = ["strace", "-f", "-y", "-qq", "-e", f"trace={syscalls}", "-o", str(trace), *cmd]
    proc = subprocess.run(
        cmd, check=False, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == (1 if mode == "crash" else 0), proc.stderr


def id_hash(wid: str) -> str:
    """The hash part of a workflow's file names (documented layout)."""
    return hashlib.sha256(wid.encode("utf-8")).hexdigest()[:32]


def files_of(folder: Path, wid: str, suffix: str) -> Path:
    """The one file of workflow ``wid`` with ``suffix`` in ``folder``."""
    (found,) = [p for p in folder.iterdir() if id_hash(wid) in p.name and p.suffix == suffix]
    return found


def checkpoint(store: duravoke.Store) -> None:
    """Fold the log of a file store into its state files and index."""
    assert isinstance(store, duravoke.DirectoryStore | duravoke.PersistedKKV)
    store.checkpoint()


def fingerprint(path: Path) -> tuple[bytes, int]:
    """Content and modification time: together they show a file was not rewritten."""
    return path.read_bytes(), path.stat().st_mtime_ns


def walk(root: Path) -> set[Path]:
    """Every file and folder beneath ``root``."""
    return {Path(dirpath) / name for dirpath, dirs, files in os.walk(root) for name in dirs + files}


def log_folder(kind: str, path: Path) -> Path:
    """The store-wide log's folder of a store of ``kind`` at ``path`` (documented layout)."""
    return path / "log" if kind == "directory" else path.with_name(path.name + ".d") / "log"


SEGMENT = re.compile(r"log\.\d{8}")


def segments(log: Path) -> list[Path]:
    """The log's segment files, oldest first."""
    return sorted(p for p in log.iterdir() if SEGMENT.fullmatch(p.name))


FRAME_HEAD = re.compile(rb"#([0-9a-f]{8}) ([0-9a-f]{8})\n")


def parse_frames(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """The intact frames at the start of a segment, [(offset, payload)], and what follows.

    Written from the documented format (``#<len hex8> <crc hex8>\\n`` then the payload),
    independently of the library's reader.
    """
    frames = []
    position = 0
    while True:
        head = FRAME_HEAD.match(data, position)
        if head is None:
            break
        length, crc = int(head.group(1), 16), int(head.group(2), 16)
        payload = data[head.end() : head.end() + length]
        if len(payload) != length or zlib.crc32(payload) != crc:
            break
        frames.append((position, payload))
        position = head.end() + length
    return frames, data[position:]


def frame_entries(payload: bytes) -> list[Any]:
    """The ``[workflow id, record]`` lines of a frame."""
    return [json.loads(line) for line in payload.splitlines()]


def assert_clean_segment(path: Path) -> list[tuple[int, bytes]]:
    """A segment holds a header frame, intact frames, then zeros only; return its frames."""
    frames, rest = parse_frames(path.read_bytes())
    assert frames, f"{path} has no intact header"
    header = json.loads(frames[0][1])
    assert header == {"format": "duravoke-log", "version": 1, "segment": int(path.name[4:])}
    assert not rest.strip(b"\0"), f"{path}: bytes other than zeros after its frames"
    for _, payload in frames[1:]:
        assert all(isinstance(w, str) and isinstance(r, dict) for w, r in frame_entries(payload))
    return frames


def completed_results(state: dict[str, Any]) -> dict[int, Any]:
    """{i: result} of the completed steps of a state (our steps take one argument)."""
    serializer = duravoke.JSONSerializer()
    out = {}
    for step in state["steps"].values():
        if step["status"] == "completed":
            value: Any = serializer.decode(step["result"])
            out[value["i"]] = value
    return out


# --- where state lives ---------------------------------------------------------------


def test_default_location_is_the_user_state_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DURAVOKE_HOME")
    home = str(platformdirs.user_state_path("duravoke"))
    # Only compare paths: nothing may be written to the real user folder.
    assert duravoke.DirectoryStore().location == home
    assert duravoke.open_store(None).location == home
    assert duravoke.default_instance().store.location == home


def test_duravoke_home_holds_the_module_level_state(
    duravoke_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []

    @duravoke.duravoke(name="safety.greet")
    def greet(who: str) -> str:
        calls.append(who)
        return f"hello {who}"

    before = walk(tmp_path)
    assert greet("ada") == "hello ada"
    with duravoke.workflow("safety-home"):
        assert greet("bob") == "hello bob"
    created = walk(tmp_path) - before
    assert created, "the module-level calls wrote nothing"
    assert all(duravoke_home in p.parents or p == duravoke_home for p in created), created
    assert segments(duravoke_home / "log")  # the steps are in the log until a checkpoint
    checkpoint(duravoke.default_instance().store)
    states = [json.loads(p.read_text()) for p in duravoke_home.glob("*.json")]
    ids = {wid for doc in states for wid in doc["workflows"]}
    assert "safety-home" in ids
    (implicit,) = ids - {"safety-home"}
    assert implicit.startswith("safety.greet:")
    assert "hello ada" in json.dumps(states)

    assert greet("ada") == "hello ada"  # replayed from DURAVOKE_HOME
    assert calls == ["ada", "bob"]

    # The variable is read on each use: a new home is a new, empty store.
    other = tmp_path / "other-home"
    monkeypatch.setenv("DURAVOKE_HOME", str(other))
    assert greet("ada") == "hello ada"
    assert calls == ["ada", "bob", "ada"]
    assert segments(other / "log")
    checkpoint(duravoke.default_instance().store)
    assert list(other.glob("*.json"))


# --- how state is written: observed with strace --------------------------------------

_SYSCALL = re.compile(r"^(\d+)\s+(\w+)\((.*)\)\s+=\s+(-?\d+)(.*)$")
_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')
_FD = re.compile(r"^(?:AT_FDCWD|\d+)<([^>]*)>")


def parse_strace(trace: Path, cwd: Path) -> list[dict[str, Any]]:
    """The successful calls of an ``strace -f -y`` log, with absolute paths."""
    pending: dict[str, str] = {}
    events = []
    for logged in trace.read_text(errors="replace").splitlines():
        pid = logged.split(None, 1)[0]
        if logged.endswith("<unfinished ...>"):
            pending[pid] = logged[: -len("<unfinished ...>")].rstrip()
            continue
        raw = logged
        resumed = re.match(r"^(\d+)\s+<\.\.\. \w+ resumed>(.*)$", logged)
        if resumed:
            raw = pending.pop(pid, "") + resumed.group(2)
        m = _SYSCALL.match(raw)
        if m is None or int(m.group(4)) < 0:
            continue
        name, args, tail = m.group(2), m.group(3), m.group(5)
        fd = _FD.match(args)
        strings = [os.path.normpath(os.path.join(cwd, s)) for s in _STRING.findall(args)]
        event: dict[str, Any] = {"call": name, "raw": raw}
        if name in ("openat", "open", "creat"):
            opened = re.match(r"<([^>]*)>", tail.strip())
            event["path"] = opened.group(1) if opened else strings[0]
            flags = re.search(r"\bO_[A-Z_|]+", args.rpartition('"')[2])
            event["flags"] = set(flags.group(0).split("|")) if flags else set()
            if name == "creat":
                event["flags"] |= {"O_CREAT", "O_WRONLY", "O_TRUNC"}
        elif name.startswith("rename"):
            event["src"], event["dst"] = strings[0], strings[1]
        elif name in ("unlink", "unlinkat", "truncate"):
            event["path"] = strings[0]
        elif fd is not None:  # fsync, fdatasync, ftruncate, write, pwrite64
            event["path"] = fd.group(1)
        else:
            continue
        events.append(event)
    return events


def _pwrite(raw: str) -> tuple[int, int, bool]:
    """(offset, bytes written, whether it wrote zeros) of a traced ``pwrite64`` call."""
    m = re.search(r", (\d+), (\d+)\)\s+=\s+(\d+)", raw)
    assert m is not None, raw
    return int(m.group(2)), int(m.group(3)), raw.split('>, "', 1)[1].startswith("\\0")


def check_log_discipline(
    events: list[dict[str, Any]], root: Path, ends: dict[str, list[int]]
) -> dict[str, int]:
    """Assert the write discipline of section 7 on one traced run; count what was seen.

    ``ends`` carries [end of frames, end of file] of each segment from one run (process)
    to the next, so that append-only is checked across processes too.
    """
    inside = str(root) + os.sep
    seen = dict.fromkeys(
        ["snapshots", "indexes", "segments_created", "frames", "segments_deleted"], 0
    )
    writing = {"O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC"}
    index_durable = False  # a new index, and its folder's fsync, happened in this run
    for i, ev in enumerate(events):
        paths = [ev.get("path"), ev.get("src"), ev.get("dst")]
        if not any(p and p.startswith(inside) for p in paths):
            continue
        call, path = ev["call"], ev.get("path") or ""
        name = os.path.basename(path)
        later = events[i + 1 :]
        assert call not in ("truncate", "ftruncate"), f"truncated in place: {ev['raw']}"
        if call in ("openat", "open", "creat") and ev["flags"] & writing:
            if name == "lock" or name.endswith(".lock"):
                continue
            assert "O_TRUNC" not in ev["flags"], f"opened with O_TRUNC: {ev['raw']}"
            if SEGMENT.fullmatch(name):
                # Created fresh (O_EXCL) or reopened as it is; never truncated.
                if "O_CREAT" in ev["flags"]:
                    assert "O_EXCL" in ev["flags"], ev["raw"]
                    assert path not in ends, f"a segment name used twice: {ev['raw']}"
                    ends[path] = [0, 0]
                    seen["segments_created"] += 1
                    # Its name is durable before any frame in it is acknowledged.
                    folder = os.path.dirname(path)
                    assert any(e["call"] == "fsync" and e.get("path") == folder for e in later), (
                        f"segment created without a folder fsync: {ev['raw']}"
                    )
            else:
                assert name.endswith(".tmp"), f"opened for writing in place: {ev['raw']}"
                assert {"O_CREAT", "O_EXCL"} <= ev["flags"], ev["raw"]
        if call in ("unlink", "unlinkat"):
            assert not name.endswith(".json"), f"state file or index deleted: {ev['raw']}"
            if SEGMENT.fullmatch(name):
                # Only segments that a durable index says are folded into the snapshots.
                assert index_durable, f"segment deleted before the index covered it: {ev['raw']}"
                seen["segments_deleted"] += 1
        if call in ("write", "pwrite64") and SEGMENT.fullmatch(name):
            assert call == "pwrite64", f"log written at an implicit offset: {ev['raw']}"
            offset, length, zeros = _pwrite(ev["raw"])
            end = ends.setdefault(path, [0, 0])
            if zeros:
                # Growing the file ahead of the frames: only ever into new space.
                assert offset >= end[1], f"zeros written over the segment: {ev['raw']}"
                end[1] = max(end[1], offset + length)
                continue
            # Append-only: a frame never lands on an earlier one.
            assert offset >= end[0], f"frame overwritten: {ev['raw']}"
            end[0] = offset + length
            end[1] = max(end[1], end[0])
            seen["frames"] += 1
            # Durable when the call returns: fsync before the next write or exit.
            nxt = next((e for e in later if e.get("path") == path and e["call"] != "openat"), None)
            assert nxt is not None, f"frame never fsynced: {ev['raw']}"
            assert nxt["call"] in ("fsync", "fdatasync"), f"frame not fsynced: {ev['raw']}"
        if call.startswith("rename"):
            src, dst = ev["src"], ev["dst"]
            assert dst.endswith(".json"), ev["raw"]
            assert src.endswith(".tmp"), ev["raw"]
            folder = os.path.dirname(dst)
            assert os.path.dirname(src) == folder, "temp file in another folder"
            on_src = [e for e in events[:i] if e.get("path") == src]
            writes = [k for k, e in enumerate(on_src) if e["call"] in ("write", "pwrite64")]
            syncs = [k for k, e in enumerate(on_src) if e["call"] in ("fsync", "fdatasync")]
            assert writes, f"nothing written to {src} before the rename"
            assert syncs, f"{src} never fsynced"
            assert syncs[-1] > writes[-1], f"{src} not fsynced after its last write"
            dir_sync = next(
                (k for k, e in enumerate(later) if e["call"] == "fsync" and e["path"] == folder),
                None,
            )
            assert dir_sync is not None, f"folder not fsynced after {ev['raw']}"
            # Nothing else changes the store before the rename is durable: no deletion (of
            # a folded segment above all), no replace in another folder (the index, which
            # must never cover snapshots that a power cut could still take away).
            for e in later[:dir_sync]:
                touched = [e.get("path"), e.get("src")]
                if any(p and p.startswith(inside) for p in touched):
                    assert not e["call"].startswith("unlink"), f"{e['raw']} before the fsync"
                    if e["call"].startswith("rename"):
                        assert os.path.dirname(e["dst"]) == folder, f"{e['raw']} before the fsync"
            if os.path.basename(dst) == "index.json":
                seen["indexes"] += 1
                index_durable = True
            else:
                seen["snapshots"] += 1
    return seen


@pytest.mark.parametrize("kind", ["directory", "kkv"])
def test_writes_are_atomic_and_the_log_append_only_under_strace(tmp_path: Path, kind: str) -> None:
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed (apt-get install -y strace)")
    path = store_path(kind, tmp_path)
    root = path if kind == "directory" else path.parent
    runs = [("w", 3, "ok"), ("w", 5, "crash"), ("w", 6, "ok"), ("w2", 2, "ok")]
    seen = []
    ends: dict[str, list[int]] = {}
    for n, (wid, steps, mode) in enumerate(runs):
        trace = tmp_path / f"trace{n}.txt"
        run_worker(tmp_path, kind, path, wid, steps, mode, trace=trace)
        seen.append(check_log_discipline(parse_strace(trace, tmp_path), root, ends))
    # Non-vacuous: every run appended frames (steps recorded together may share one).
    # A run that ends folds the log at exit (a checkpoint): its snapshot and the index
    # replaced once each, atomically, a new segment started, the folded one deleted.
    # The crashed run replaced nothing: the run after it folds its frames.
    assert all(s["frames"] >= 1 for s in seen), seen
    assert [s["snapshots"] for s in seen] == [1, 0, 1, 1], seen
    assert [s["indexes"] for s in seen] == [1, 0, 1, 1], seen
    assert [s["segments_created"] for s in seen] == [2, 0, 1, 1], seen
    assert [s["segments_deleted"] for s in seen] == [1, 0, 1, 1], seen
    for segment in segments(log_folder(kind, path)):
        assert_clean_segment(segment)
    assert completed_results(open_kind(kind, path).read("w") or {}) == {
        i: expected(i) for i in range(6)
    }


# --- who may read it --------------------------------------------------------------


def modes(root: Path) -> dict[Path, int]:
    """Permission bits of everything beneath ``root``."""
    return {p: stat.S_IMODE(p.stat().st_mode) for p in walk(root)}


@pytest.mark.parametrize("umask", [0o022, 0o000])
@pytest.mark.parametrize("kind", ["directory", "kkv"])
def test_created_folders_are_0700_and_files_0600(tmp_path: Path, kind: str, umask: int) -> None:
    top = tmp_path / "new"
    path = store_path(kind, top / "deeper")
    calls: list[int] = []
    during: dict[Path, int] = {}
    old = os.umask(umask)
    try:
        d = duravoke.Duravoke(open_kind(kind, path))
        step = make_step(d, calls)
        with d.workflow("perm"):
            step(0)
            during = modes(top)  # the log holds the steps while the run goes on
        with d.workflow("perm2"):
            step(1)
        checkpoint(d.store)  # snapshots, the index, a new segment: under the umask too
    finally:
        os.umask(old)
    after = modes(top)
    log = log_folder(kind, path)
    assert log in during, during
    assert [p for p in during if SEGMENT.fullmatch(p.name)], during
    assert log / "lock" in during, during
    names = {p.name for p in after}
    assert {"index.json", "checkpoint.lock"} <= names, names
    assert sum(n.endswith(".lock") for n in names) >= 3, names
    assert sum(n.endswith(".json") for n in names) >= 2, names  # a snapshot and the index
    for p, mode in {**during, **after}.items():
        want = 0o700 if p.is_dir() else 0o600
        assert mode == want, f"{p} is {oct(mode)}, want {oct(want)} (umask {oct(umask)})"
    assert stat.S_IMODE(top.stat().st_mode) == 0o700


@pytest.mark.parametrize("umask", [0o022, 0o000])
@pytest.mark.parametrize("kind", ["directory", "kkv"])
def test_an_existing_folder_keeps_its_mode(tmp_path: Path, kind: str, umask: int) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    os.chmod(mine, 0o755)
    path = mine if kind == "directory" else mine / "state.json"
    old = os.umask(umask)
    try:
        d = duravoke.Duravoke(open_kind(kind, path))
        with d.workflow("keep"):
            make_step(d, [])(0)
        checkpoint(d.store)
    finally:
        os.umask(old)
    assert stat.S_IMODE(mine.stat().st_mode) == 0o755
    inner = modes(mine)
    assert inner
    for p, mode in inner.items():
        assert mode == (0o700 if p.is_dir() else 0o600), f"{p} is {oct(mode)}"


# --- hostile workflow ids ------------------------------------------------------------


def hostile_ids(tmp_path: Path) -> list[str]:
    """Ids that would escape, collide or fail if used as file names."""
    return [
        "../../x",
        "../store",
        "/etc/passwd",
        str(tmp_path / "escape" / "x.json"),
        "x" * 10_240,
        "a\x00b",
        "😀🔥",
        "-n",
        ".",
        "..",
        "CON",
        "Abc",
        "abc",
        "a/b",
        "a_b",
        "a\\b",
        " ",
        "\n",
        "state.json.d",
    ]


@pytest.mark.parametrize("kind", ["directory", "kkv"])
def test_hostile_workflow_ids_stay_inside_and_apart(
    tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Deep enough that "../.." from the store or the cwd still lands inside tmp_path,
    # where the walk below would see it.
    base = tmp_path / "a" / "b" / "c"
    base.mkdir(parents=True)
    monkeypatch.chdir(base)
    path = store_path(kind, base)
    root = path if kind == "directory" else path.parent
    ids = hostile_ids(tmp_path)
    assert len(set(ids)) == len(ids)
    passwd = os.stat("/etc/passwd").st_mtime_ns

    current = [""]
    calls: list[tuple[str, int]] = []
    d = duravoke.Duravoke(open_kind(kind, path))

    @d.duravoke(name="safety.hostile")
    def step(i: int) -> dict[str, Any]:
        calls.append((current[0], i))
        return {"wid": current[0], "i": i}

    log = log_folder(kind, path)
    before_all = walk(tmp_path)
    for wid in ids:
        before = walk(tmp_path)
        current[0] = wid
        with d.workflow(wid):
            assert step(0) == {"wid": wid, "i": 0}
            assert step(1) == {"wid": wid, "i": 1}
        new = walk(tmp_path) - before - {root}
        # Only new files of its own (its lock file): none shared with an earlier id. The
        # log, shared by every workflow, is the store's.
        own = {
            p
            for p in new
            if p.name not in ("state.json", "state.json.d") and log not in (p, *p.parents)
        }
        assert len(own) == 1, (wid[:50], own)
        assert all(root in p.parents for p in new), (wid[:50], new)
    before = walk(tmp_path)
    checkpoint(d.store)
    snapshots = walk(tmp_path) - before
    # A checkpoint writes each id's own state file (or the one shared file).
    if kind == "directory":
        own_files = [p for p in snapshots if p.suffix == ".json" and p.parent == root]
        assert len(own_files) == len(ids), snapshots
    created = walk(tmp_path) - before_all
    assert all(root in p.parents or p == root for p in created), created
    assert not [p for p in created if p.suffix in (".tmp", ".journal")]
    assert os.stat("/etc/passwd").st_mtime_ns == passwd
    assert len(calls) == 2 * len(ids)

    # A new process's view: every id replays its own results and only those.
    calls.clear()
    store = open_kind(kind, path)
    d2 = duravoke.Duravoke(store)
    step2 = d2.duravoke(name="safety.hostile")(step.__wrapped__)  # type: ignore[attr-defined]
    for wid in ids:
        current[0] = "wrong"
        with d2.workflow(wid):
            assert step2(0) == {"wid": wid, "i": 0}
            assert step2(1) == {"wid": wid, "i": 1}
        state = store.read(wid)
        assert state is not None
        assert state["status"] == "completed"
        assert len(state["steps"]) == 2
    assert calls == []
    assert sorted(store.workflow_ids()) == sorted(ids)


# --- damaged state files -------------------------------------------------------------


_MARK = b'\n "workflows": '


def _checksum(data: bytes) -> str:
    """The documented checksum: CRC-32 of every byte after the line's ``"workflows": ``."""
    return f"crc32:{zlib.crc32(data[data.index(_MARK) + len(_MARK) :]):08x}"


def _state_file(workflows: object) -> bytes:
    """A state file with a correct checksum around ``workflows``, whatever their shape."""
    body = json.dumps(workflows).encode() + b"\n}\n"
    head = b'{"format": "duravoke", "version": 1, "checksum": "crc32:%08x",' % zlib.crc32(body)
    return head + _MARK + body


def _with(data: bytes, **changes: object) -> bytes:
    doc = json.loads(data)
    doc.update(changes)
    return json.dumps(doc).encode()


def _middle_byte(data: bytes) -> bytes:
    mid = len(data) // 2
    return data[:mid] + (b"#" if data[mid : mid + 1] != b"#" else b"!") + data[mid + 1 :]


def _edited_value(data: bytes) -> bytes:
    assert b'"value-1"' in data
    return data.replace(b'"value-1"', b'"value-7"')


def _bad_shape(data: bytes) -> bytes:
    return _state_file({"victim": {"status": "completed", "steps": "not a dict"}})


DAMAGE: dict[str, Callable[[bytes], bytes]] = {
    "empty": lambda b: b"",
    "truncated-1": lambda b: b[:1],
    "truncated-third": lambda b: b[: len(b) // 3],
    "truncated-half": lambda b: b[: len(b) // 2],
    "truncated-end": lambda b: b[:-2],
    "middle-byte": _middle_byte,
    "edited-value": _edited_value,
    "garbage": lambda b: b"\x00\xff\xfe garbage \x89PNG\r\n\x1a\n" * 20,
    "json-list": lambda b: b"[1, 2, 3]\n",
    "json-other-object": lambda b: b'{"hello": "world"}\n',
    "no-checksum": lambda b: json.dumps(
        {k: v for k, v in json.loads(b).items() if k != "checksum"}
    ).encode(),
    "bad-shape-good-checksum": _bad_shape,
    "other-format": lambda b: _with(b, format="not-duravoke"),
    "version-2": lambda b: _with(b, version=2),
}

ACTIONS = ("move it aside", "restore", "forget", "upgrade", "delete", "remove")


def assert_corrupt_error(exc: duravoke.CorruptStateError, path: Path) -> None:
    """The error names the file and says what to do."""
    message = str(exc)
    assert exc.path == str(path)
    assert str(path) in message
    assert any(word in message.lower() for word in ACTIONS), message


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_state_file_is_reported_and_left_untouched(tmp_path: Path, damage: str) -> None:
    folder = tmp_path / "store"
    calls: list[int] = []
    d = duravoke.Duravoke(duravoke.DirectoryStore(folder))
    step = make_step(d, calls)
    with d.workflow("victim"):
        [step(i) for i in range(3)]
    with d.workflow("other"):
        [step(i) for i in range(2)]
    checkpoint(d.store)  # into the state files
    victim = files_of(folder, "victim", ".json")
    victim.write_bytes(DAMAGE[damage](victim.read_bytes()))
    print_ = fingerprint(victim)
    listing = sorted(folder.iterdir())

    calls.clear()
    store = duravoke.DirectoryStore(folder)
    d2 = duravoke.Duravoke(store)
    step2 = make_step(d2, calls)
    with pytest.raises(duravoke.CorruptStateError) as info:
        with d2.workflow("victim"):
            step2(0)
    assert_corrupt_error(info.value, victim)
    assert isinstance(info.value, ValueError)
    with pytest.raises(duravoke.CorruptStateError) as info:
        store.read("victim")
    assert_corrupt_error(info.value, victim)
    assert fingerprint(victim) == print_
    assert sorted(folder.iterdir()) == listing
    assert calls == []

    # The other workflows of the folder do not care.
    with d2.workflow("other"):
        assert [step2(i) for i in range(2)] == [expected(0), expected(1)]
    assert calls == []
    with d2.workflow("fresh"):
        assert step2(5) == expected(5)
    with d2.workflow("fresh"):
        assert step2(5) == expected(5)
    assert calls == [5]
    assert set(store.workflow_ids()) >= {"other", "fresh"}
    # A checkpoint folds the others' records and never touches the damaged file.
    store.checkpoint()
    assert files_of(folder, "fresh", ".json").exists()
    assert fingerprint(victim) == print_


def test_a_state_file_of_another_workflow_is_reported_and_left_untouched(
    tmp_path: Path,
) -> None:
    # A whole, valid file in the wrong place (copied or renamed by hand).
    folder = tmp_path / "store"
    d = duravoke.Duravoke(duravoke.DirectoryStore(folder))
    step = make_step(d, [])
    for wid in ("victim", "other"):
        with d.workflow(wid):
            step(0)
    checkpoint(d.store)
    victim = files_of(folder, "victim", ".json")
    shutil.copyfile(files_of(folder, "other", ".json"), victim)
    print_ = fingerprint(victim)
    store = duravoke.DirectoryStore(folder)
    with pytest.raises(duravoke.CorruptStateError) as info:
        with duravoke.Duravoke(store).workflow("victim"):
            pass
    assert_corrupt_error(info.value, victim)
    assert fingerprint(victim) == print_
    other = store.read("other")
    assert other is not None
    assert completed_results(other) == {0: expected(0)}


@pytest.mark.parametrize("damage", ["truncated-half", "middle-byte", "garbage", "version-2"])
def test_a_damaged_shared_file_is_never_overwritten(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "state.json"
    d = duravoke.Duravoke(duravoke.PersistedKKV(path))
    step = make_step(d, [])
    for wid in ("victim", "other"):
        with d.workflow(wid):
            step(0)
    checkpoint(d.store)
    path.write_bytes(DAMAGE[damage](path.read_bytes()))
    print_ = fingerprint(path)

    store = duravoke.PersistedKKV(path)
    d2 = duravoke.Duravoke(store)
    step2 = make_step(d2, [])
    # Every workflow shares the file, so each refuses; none may write over it.
    for wid in ("victim", "other", "fresh"):
        with pytest.raises(duravoke.CorruptStateError) as info:
            with d2.workflow(wid):
                step2(1)
        assert_corrupt_error(info.value, path)
    # Nor may a checkpoint (it would have to rewrite the file).
    with contextlib.suppress(duravoke.CorruptStateError):
        store.checkpoint()
    assert fingerprint(path) == print_


def test_a_damaged_index_is_rebuilt_and_nothing_is_lost(tmp_path: Path) -> None:
    # The index only summarizes the snapshots and says which segments they cover.
    folder = tmp_path / "store"
    d = duravoke.Duravoke(duravoke.DirectoryStore(folder))
    step = make_step(d, [])
    with d.workflow("a"):
        step(0)
    checkpoint(d.store)
    with d.workflow("b"):  # in the log only
        step(1)
    index = folder / "log" / "index.json"
    index.write_bytes(index.read_bytes()[:20])
    store = duravoke.DirectoryStore(folder)
    assert sorted(store.workflow_ids()) == ["a", "b"]
    for wid, i in (("a", 0), ("b", 1)):
        assert completed_results(store.read(wid) or {}) == {i: expected(i)}
    store.checkpoint()
    assert json.loads(index.read_bytes())["format"] == "duravoke-index"
    assert sorted(duravoke.DirectoryStore(folder).workflow_ids()) == ["a", "b"]


# --- damaged log -----------------------------------------------------------------------


@pytest.fixture
def crashed(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A store whose workflow "w" has steps 0-1 in its state file and 2-4 in the log.

    The first run ended (its checkpoint folded the log into the state file); the second
    was killed. Returns (folder, state file, the log's one segment).
    """
    folder = tmp_path / "store"
    run_worker(tmp_path, "directory", folder, "w", 2, "ok")
    run_worker(tmp_path, "directory", folder, "w", 5, "crash")
    (segment,) = segments(folder / "log")
    # The segment is grown ahead of its frames with zeros; cut them off here, so that
    # the damage below is applied to the frames themselves (the zeros are tested too).
    segment.write_bytes(segment.read_bytes().rstrip(b"\0"))
    frames, rest = parse_frames(segment.read_bytes())
    # header, [running event, step 2], [step 3], [step 4]
    assert [len(frame_entries(p)) for _, p in frames[1:]] == [2, 1, 1], frames
    assert rest == b""
    return folder, files_of(folder, "w", ".json"), segment


def frame_bounds(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of each intact frame of a segment."""
    frames, _ = parse_frames(data)
    ends = [offset for offset, _ in frames[1:]] + [len(data) - len(parse_frames(data)[1])]
    return [(offset, end) for (offset, _), end in zip(frames, ends, strict=True)]


def _flip_in_frame(data: bytes, index: int) -> bytes:
    start, end = frame_bounds(data)[index]
    out = bytearray(data)
    out[(start + end) // 2] ^= 0x01
    return bytes(out)


@pytest.mark.parametrize("frame", [0, 1, 2], ids=["header", "event-and-step", "3rd-step"])
def test_log_damage_before_an_intact_frame_is_corruption_and_salvage_keeps_the_rest(
    crashed: tuple[Path, Path, Path], frame: int
) -> None:
    folder, state_file, segment = crashed
    start, end = frame_bounds(segment.read_bytes())[frame]
    damaged = _flip_in_frame(segment.read_bytes(), frame)
    segment.write_bytes(damaged)
    prints = fingerprint(segment), fingerprint(state_file)
    store = duravoke.DirectoryStore(folder)
    calls: list[int] = []
    d = duravoke.Duravoke(store)
    step = make_step(d, calls)
    with pytest.raises(duravoke.CorruptStateError) as info:
        with d.workflow("w"):
            step(0)
    assert_corrupt_error(info.value, segment)
    message = str(info.value)
    # The exact command, and what it costs.
    assert f"`duravoke salvage --store {folder}`" in message, message
    assert "nothing is deleted" in message
    # The log is store-wide: every workflow is refused, none is written.
    for wid in ("w", "other"):
        with pytest.raises(duravoke.CorruptStateError):
            store.read(wid)
    with pytest.raises(duravoke.CorruptStateError):
        with d.workflow("other"):
            step(9)
    assert (fingerprint(segment), fingerprint(state_file)) == prints
    assert calls == []

    proc = subprocess.run(
        [sys.executable, "-m", "duravoke", "salvage", "--store", str(folder)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    # Every intact frame is kept, before and after the damaged one.
    kept = {0: 4, 1: 2, 2: 3}[frame]
    assert f"kept {kept} intact records" in proc.stdout, proc.stdout
    assert f"{end - start} bytes unreadable" in proc.stdout, proc.stdout
    # The damaged segment was moved aside, not deleted, byte for byte.
    (aside,) = (folder / "log").glob(f"{segment.name}.damaged-*")
    assert aside.read_bytes() == damaged
    assert not segment.exists()
    for fresh in segments(folder / "log"):
        assert_clean_segment(fresh)
    lost = {0: set(), 1: {2}, 2: {3}}[frame]
    state = duravoke.DirectoryStore(folder).read("w")
    assert state is not None
    assert set(completed_results(state)) == {0, 1, 2, 3, 4} - lost
    calls.clear()
    d = duravoke.Duravoke(duravoke.DirectoryStore(folder))
    step = make_step(d, calls)
    with d.workflow("w"):
        assert [step(i) for i in range(5)] == [expected(i) for i in range(5)]
    assert calls == sorted(lost)
    # Salvaging a store that reads cleanly changes nothing.
    before = {p: p.read_bytes() for p in walk(folder) if p.is_file()}
    report = duravoke.salvage(str(folder))
    assert (report.kept, report.moved) == (0, ())
    assert {p: p.read_bytes() for p in walk(folder) if p.is_file()} == before


def _half_frame_appended(data: bytes) -> bytes:
    start, end = frame_bounds(data)[-1]
    return data + data[start : (start + end) // 2]


def _last_frame_cut(data: bytes) -> bytes:
    start, end = frame_bounds(data)[-1]
    return data[: (start + end) // 2]


def _last_frame_zeroed(data: bytes) -> bytes:
    # A power cut kept the file's size but not the last pages of its last write.
    start, end = frame_bounds(data)[-1]
    middle = (start + end) // 2
    return data[:middle] + bytes(end - middle)


@pytest.mark.parametrize(
    ("cut", "first_executed"),
    [(_half_frame_appended, 5), (_last_frame_cut, 4), (_last_frame_zeroed, 4)],
    ids=["half-frame-appended", "last-frame-cut", "last-frame-zeroed"],
)
def test_a_torn_last_frame_is_dropped_and_its_step_runs_again(
    crashed: tuple[Path, Path, Path], cut: Callable[[bytes], bytes], first_executed: int
) -> None:
    folder, _, segment = crashed
    torn = cut(segment.read_bytes())
    segment.write_bytes(torn)
    store = duravoke.DirectoryStore(folder)
    state = store.read("w")
    assert state is not None
    assert completed_results(state) == {i: expected(i) for i in range(first_executed)}

    calls: list[int] = []
    d = duravoke.Duravoke(store)
    step = make_step(d, calls)
    with d.workflow("w"):
        assert [step(i) for i in range(7)] == [expected(i) for i in range(7)]
    assert calls == list(range(first_executed, 7))
    # Nothing was written after the torn end: the run went on in a new segment.
    assert segment.read_bytes() == torn
    (_, fresh) = segments(folder / "log")
    assert_clean_segment(fresh)
    # The following run loads cleanly and replays everything.
    calls.clear()
    with d.workflow("w"):
        assert [step(i) for i in range(7)] == [expected(i) for i in range(7)]
    assert calls == []
    # A checkpoint folds the intact frames and drops the torn segment with its torn end.
    store.checkpoint()
    assert not segment.exists()
    state = duravoke.DirectoryStore(folder).read("w")
    assert state is not None
    assert completed_results(state) == {i: expected(i) for i in range(7)}


TORN_TAILS: dict[str, Callable[[bytes], bytes]] = {
    "half-frame-appended": _half_frame_appended,
    "last-frame-cut": _last_frame_cut,
    "last-frame-zeroed": _last_frame_zeroed,
    "frame-newline-lost": lambda b: b[:-1],
    "empty": lambda b: b"",
    "header-cut": lambda b: b[:20],
    "header-only": lambda b: b[: frame_bounds(b)[0][1]],
    "header-zeroed": lambda b: bytes(frame_bounds(b)[0][1]),
    "zero-filled": lambda b: b + bytes(4096),
    "half-frame-then-zeros": lambda b: _half_frame_appended(b) + bytes(100),
}


@pytest.mark.parametrize("tail", sorted(TORN_TAILS))
def test_no_frame_is_ever_written_after_a_torn_end(
    tmp_path: Path, crashed: tuple[Path, Path, Path], tail: str
) -> None:
    folder, _, segment = crashed
    damaged = TORN_TAILS[tail](segment.read_bytes())
    segment.write_bytes(damaged)
    frames, rest = parse_frames(damaged)
    clean = bool(frames) and not rest.strip(b"\0")  # a whole header, nothing torn after it
    # A second crash, after new records: the torn segment is never written again, and
    # every segment written holds intact frames only.
    run_worker(tmp_path, "directory", folder, "w", 7, "crash")
    found = segments(folder / "log")
    if clean:
        assert found == [segment], found
        assert_clean_segment(segment)
    else:
        assert segment.read_bytes() == damaged, f"written after a torn end ({tail})"
        assert len(found) == 2, found
        assert_clean_segment(found[1])

    store = duravoke.DirectoryStore(folder)
    state = store.read("w")
    assert state is not None
    assert completed_results(state) == {i: expected(i) for i in range(7)}
    calls: list[int] = []
    d = duravoke.Duravoke(store)
    step = make_step(d, calls)
    with d.workflow("w"):
        assert [step(i) for i in range(8)] == [expected(i) for i in range(8)]
    assert calls == [7]
    state = store.read("w")
    assert state is not None
    assert state["status"] == "completed"


# --- the format carries a version -----------------------------------------------------


@pytest.mark.parametrize("kind", ["directory", "kkv"])
def test_the_on_disk_format_carries_a_version(tmp_path: Path, kind: str) -> None:
    path = store_path(kind, tmp_path)
    store = open_kind(kind, path)
    d = duravoke.Duravoke(store)
    step = make_step(d, [])
    log = log_folder(kind, path)
    with d.workflow("versioned"):
        step(0)
        (segment,) = segments(log)
        frames = assert_clean_segment(segment)  # its header names format and version
        entries = [e for _, payload in frames[1:] for e in frame_entries(payload)]
        assert {w for w, _ in entries} == {"versioned"}
    checkpoint(store)
    index = json.loads((log / "index.json").read_bytes())
    assert (index["format"], index["version"]) == ("duravoke-index", 1)
    assert index["covers"] == 1
    assert list(index["workflows"]) == ["versioned"]
    state_file = files_of(path, "versioned", ".json") if kind == "directory" else path
    data = state_file.read_bytes()
    doc = json.loads(data)
    assert doc["format"] == "duravoke"
    assert doc["version"] == 1
    assert doc["checksum"] == _checksum(data)
    assert list(doc["workflows"]) == ["versioned"]


def _frame(payload: bytes) -> bytes:
    return b"#%08x %08x\n%s" % (len(payload), zlib.crc32(payload), payload)


def test_a_segment_of_a_newer_format_is_refused_and_left_untouched(
    crashed: tuple[Path, Path, Path],
) -> None:
    folder, _, segment = crashed
    data = segment.read_bytes()
    end = frame_bounds(data)[0][1]
    newer = _frame(b'{"format":"duravoke-log","version":2,"segment":2}\n') + data[end:]
    segment.write_bytes(newer)
    with pytest.raises(duravoke.CorruptStateError, match="Upgrade duravoke") as info:
        duravoke.DirectoryStore(folder).read("w")
    assert info.value.path == str(segment)
    # Salvage does not take a newer format for damage either.
    with pytest.raises(duravoke.CorruptStateError, match="Upgrade duravoke"):
        duravoke.salvage(str(folder))
    assert segment.read_bytes() == newer


# --- journals of duravoke 0.2 -------------------------------------------------------------


def v1_line(record: dict[str, Any]) -> bytes:
    """A version 1 journal line: ``<crc32> <compact JSON>``."""
    body = json.dumps(record, separators=(",", ":")).encode()
    return b"%08x %s\n" % (zlib.crc32(body), body)


def v1_journal(tmp_path: Path, workflow_id: str, steps: list[int]) -> bytes:
    """A journal of duravoke 0.2 holding a run of ``make_step`` steps.

    Its records are taken from a real run's log, so that a new run replays them.
    """
    source = tmp_path / "source"
    d = duravoke.Duravoke(duravoke.DirectoryStore(source))
    step = make_step(d, [])
    with d.workflow(workflow_id):
        for i in steps:
            step(i)
    records: list[dict[str, Any]] = [
        {"format": "duravoke-journal", "version": 1, "workflow": workflow_id}
    ]
    for segment in segments(source / "log"):
        for _, payload in parse_frames(segment.read_bytes())[0][1:]:
            records += [r for w, r in frame_entries(payload) if w == workflow_id]
    assert records[1]["event"] == "running"
    return b"".join(v1_line(r) for r in records[:-1])  # the run had not ended


def test_a_journal_of_duravoke_0_2_is_read_and_folded_by_a_checkpoint(tmp_path: Path) -> None:
    folder = tmp_path / "store"
    folder.mkdir(mode=0o700)
    journal = folder / f"{_stem('old')}.journal"
    journal.write_bytes(v1_journal(tmp_path, "old", [0, 1]) + bytes(1000))
    store = duravoke.DirectoryStore(folder)
    assert completed_results(store.read("old") or {}) == {0: expected(0), 1: expected(1)}
    assert store.workflow_ids() == ["old"]
    store.checkpoint()  # nothing in the log yet: the journal stays as it is
    assert journal.exists()
    d = duravoke.Duravoke(store)
    with d.workflow("old"):
        pass
    store.checkpoint()
    assert not journal.exists()
    state = duravoke.DirectoryStore(folder).read("old")
    assert state is not None
    assert completed_results(state) == {0: expected(0), 1: expected(1)}
    assert state["status"] == "completed"


def test_salvage_of_a_journal_of_duravoke_0_2_damaged_in_the_middle(tmp_path: Path) -> None:
    folder = tmp_path / "store"
    folder.mkdir(mode=0o700)
    journal = folder / f"{_stem('old')}.journal"
    lines = v1_journal(tmp_path, "old", [0, 1, 2]).split(b"\n")
    lines[3] = lines[3].replace(b"value-1", b"value-7")  # damage, followed by an intact line
    damaged = b"\n".join(lines)
    journal.write_bytes(damaged)
    store = duravoke.DirectoryStore(folder)
    with pytest.raises(duravoke.CorruptStateError) as info:
        store.read("old")
    assert f"`duravoke salvage --store {folder}`" in str(info.value)
    report = duravoke.salvage(store)
    assert report.kept == 2  # the running event and step 0
    assert report.unreadable == len(damaged) - len(b"\n".join(lines[:3])) - 1
    (moved,) = report.moved
    assert Path(moved).read_bytes() == damaged
    assert not journal.exists()
    assert completed_results(store.read("old") or {}) == {0: expected(0)}
    calls: list[int] = []
    d = duravoke.Duravoke(store)
    step = make_step(d, calls)
    with d.workflow("old"):
        assert [step(i) for i in range(3)] == [expected(i) for i in range(3)]
    assert calls == [1, 2]  # recorded after the damage: they run again


def _stem(wid: str) -> str:
    """A workflow's file name stem (documented: a safe prefix, then a hash of the id)."""
    return f"{wid}.{id_hash(wid)}"


def test_salvage_of_a_shared_file_store_keeps_the_order_of_later_segments(
    tmp_path: Path,
) -> None:
    # Damage in an older segment of a PersistedKKV's log, with a newer segment after it:
    # the newer one's frames are copied after the salvaged ones, in order, and moved
    # aside too (never deleted), so that nothing is applied twice or out of order.
    path = tmp_path / "kkv" / "state.json"
    log = log_folder("kkv", path)
    run_worker(tmp_path, "kkv", path, "w", 3, "crash")
    (first,) = segments(log)
    data = first.read_bytes().rstrip(b"\0")
    bounds = frame_bounds(data)
    # A torn end (so the next process starts a new segment), then the next process.
    first.write_bytes(data + data[bounds[-1][0] : bounds[-1][0] + 30])
    run_worker(tmp_path, "kkv", path, "w2", 2, "crash")
    second = segments(log)[1]
    damaged = _flip_in_frame(first.read_bytes(), 2)  # [header, [running, 0], [1], [2]]
    first.write_bytes(damaged)
    with pytest.raises(duravoke.CorruptStateError) as info:
        duravoke.PersistedKKV(path).read("w2")
    assert f"`duravoke salvage --store {path}`" in str(info.value)
    copied = second.read_bytes()

    report = duravoke.salvage(str(path))
    assert report.kept == 2 + 1 + 3  # [running, 0] and [2] of w; w2's running and steps
    assert sorted(Path(p).name.split("-")[0] for p in report.moved) == [
        f"{first.name}.damaged",
        f"{second.name}.copied",
    ]
    moved = {Path(p).name.split(".")[2].split("-")[0]: Path(p) for p in report.moved}
    assert moved["damaged"].read_bytes() == damaged
    assert moved["copied"].read_bytes() == copied
    assert report.segment is not None
    assert [Path(report.segment)] == segments(log)
    assert_clean_segment(Path(report.segment))
    store = duravoke.PersistedKKV(path)
    assert set(completed_results(store.read("w") or {})) == {0, 2}
    assert completed_results(store.read("w2") or {}) == {0: expected(0), 1: expected(1)}


def test_a_checksummed_frame_that_is_not_json_is_refused_and_salvaged(
    crashed: tuple[Path, Path, Path],
) -> None:
    # Intact framing and checksum around something no duravoke wrote.
    folder, _, segment = crashed
    data = segment.read_bytes()
    (start, end) = frame_bounds(data)[2]  # [header, [running, 2], [3], [4]]
    alien = _frame(b"not json\n")
    segment.write_bytes(data[:start] + alien + data[end:])
    with pytest.raises(duravoke.CorruptStateError) as info:
        duravoke.DirectoryStore(folder).read("w")
    assert info.value.path == str(segment)
    assert f"`duravoke salvage --store {folder}`" in str(info.value)
    report = duravoke.salvage(str(folder))
    assert (report.kept, report.unreadable) == (3, len(alien))
    state = duravoke.DirectoryStore(folder).read("w")
    assert set(completed_results(state or {})) == {0, 1, 2, 4}
    proc = subprocess.run(
        [sys.executable, "-m", "duravoke", "salvage", "--store", str(folder)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "nothing to salvage" in proc.stdout, proc.stdout
