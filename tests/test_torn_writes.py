"""Torn writes: whatever a crash or bit rot does to the files, no wrong value comes back.

A real store is built once by real processes (one that finishes, whose checkpoint folds
the log into the state file, and one that dies with its frames in the log). Hypothesis
then truncates and flips bytes of the state file and of the log segment in copies of it. Each
damaged copy must load either as ``CorruptStateError`` or as an exact prefix of what
was recorded, with exactly the recorded results, and a run on it must replay that
prefix and execute the rest. Hypothesis prints the failing example and a
``@reproduce_failure`` blob on failure: that is the seed.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import duravoke

WID = "torn"
N = 4  # steps recorded by the run that finished (in the state file)
K = 4  # further steps recorded by the run that crashed (in the log)

WORKER = """
import os, sys
import duravoke

folder, n, k = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
d = duravoke.Duravoke(duravoke.DirectoryStore(folder))

@d.duravoke(name="torn.step")
def step(i):
    return {"label": f"step-{i}", "v": [f"value-{i}", (i, i * i)]}

@d.duravoke(name="torn.boom")
def boom():
    raise ValueError("boom")

@d.duravoke(name="torn.parent")
def parent():
    return {"label": "parent", "kids": [step(100), step(101)]}

with d.workflow("torn"):
    for i in range(n + k):
        step(i)
        if i == n + 1:
            try:
                boom()
            except ValueError:
                pass
    if k:
        parent()
        # Die with the frames in the log, unfolded, as a killed process would.
        os._exit(1)
"""


def step_value(i: int) -> dict[str, Any]:
    """What ``torn.step(i)`` returns."""
    return {"label": f"step-{i}", "v": [f"value-{i}", (i, i * i)]}


def parent_value() -> dict[str, Any]:
    """What ``torn.parent()`` returns."""
    return {"label": "parent", "kids": [step_value(100), step_value(101)]}


def run_workflow(d: duravoke.Duravoke, calls: list[str], hook: Callable[[], None]) -> None:
    """The worker's workflow, completed, in this process; ``calls`` gets what executed.

    ``hook`` runs inside the workflow after the last step.
    """

    @d.duravoke(name="torn.step")
    def step(i: int) -> dict[str, Any]:
        calls.append(f"step-{i}")
        return step_value(i)

    @d.duravoke(name="torn.boom")
    def boom() -> None:
        calls.append("boom")
        raise ValueError("boom")

    @d.duravoke(name="torn.parent")
    def parent() -> dict[str, Any]:
        calls.append("parent")
        return {"label": "parent", "kids": [step(100), step(101)]}

    with d.workflow(WID):
        for i in range(N + K):
            # Never a wrong value, whether replayed or executed.
            assert step(i) == step_value(i)
            if i == N + 1:
                with pytest.raises(ValueError, match="boom"):
                    boom()
        assert parent() == parent_value()
        hook()


def completed(state: dict[str, Any]) -> dict[str, Any]:
    """{sid: decoded result} of the completed steps, in recorded order."""
    serializer = duravoke.JSONSerializer()
    return {
        sid: serializer.decode(step["result"])
        for sid, step in state["steps"].items()
        if step["status"] == "completed"
    }


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[str, Any]]]:
    """(store folder, the completed steps as recorded: [(sid, result)] in order)."""
    base = tmp_path_factory.mktemp("torn")
    script = base / "worker.py"
    script.write_text(WORKER)
    folder = base / "store"
    for k, rc in ((0, 0), (K, 1)):
        proc = subprocess.run(
            [sys.executable, str(script), str(folder), str(N), str(k)],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == rc, proc.stderr
    assert len(list((folder / "log").glob("log.*"))) == 1
    assert len(list(folder.glob("*.json"))) == 1
    state = duravoke.DirectoryStore(folder).read(WID)
    assert state is not None
    original = list(completed(state).items())
    labels = [result["label"] for _, result in original]
    # Steps 0..N-1 from the state file, N..N+K-1 and the parent's family from the log.
    assert labels == [f"step-{i}" for i in range(N + K)] + ["step-100", "step-101", "parent"]
    assert any(step["status"] == "failed" for step in state["steps"].values())
    return folder, original


SEGMENT = "segment"


def file_of(folder: Path, target: str) -> Path:
    """The store's one log segment (``SEGMENT``), or its one file with suffix ``target``."""
    (path,) = (folder / "log").glob("log.*") if target == SEGMENT else folder.glob(f"*{target}")
    return path


@st.composite
def damages(draw: st.DrawFn, sizes: dict[str, int], edges: list[int]) -> list[tuple[str, str, Any]]:
    """1 to 3 truncations or byte flips, each of the log segment or the state file.

    The segment is the likelier target: any damage to the state file is refused,
    while damage to the log exercises every prefix length.
    """
    ops: list[tuple[str, str, Any]] = []
    for _ in range(draw(st.integers(1, 3))):
        target = draw(st.sampled_from([SEGMENT, SEGMENT, SEGMENT, ".json"]))
        if draw(st.booleans()):
            offsets = st.integers(0, sizes[target])
            if target == SEGMENT:
                # Cuts at, just before and just after a frame's or line's end are the classic
                # torn writes; plain integers rarely land there.
                offsets = st.one_of(offsets, st.sampled_from(edges))
            ops.append(("truncate", target, draw(offsets)))
        else:
            flips = draw(
                st.lists(
                    st.tuples(st.integers(0, sizes[target] - 1), st.integers(1, 255)),
                    min_size=1,
                    max_size=3,
                )
            )
            ops.append(("flip", target, flips))
    return ops


def damage(folder: Path, ops: list[tuple[str, str, Any]]) -> None:
    """Apply ``ops`` to the files of the store in ``folder``."""
    for op, target, arg in ops:
        path = file_of(folder, target)
        data = bytearray(path.read_bytes())
        if op == "truncate":
            del data[arg:]
        else:
            for pos, mask in arg:
                if pos < len(data):  # an earlier truncation may have cut it off
                    data[pos] ^= mask
        path.write_bytes(bytes(data))


def sizes_of(folder: Path) -> dict[str, int]:
    """Sizes of the pristine state file, and of the frames of the segment (and a little
    of the zeros grown ahead of them: damage far into the zeros changes nothing)."""
    used = len(file_of(folder, SEGMENT).read_bytes().rstrip(b"\0"))
    return {SEGMENT: used + 64, ".json": file_of(folder, ".json").stat().st_size}


def edges_of(folder: Path) -> list[int]:
    """Offsets around the end of every frame and line of the segment."""
    data = file_of(folder, SEGMENT).read_bytes().rstrip(b"\0")
    ends = [i + 1 for i, byte in enumerate(data) if byte == ord("\n")]
    return sorted(
        {e + delta for e in [0, *ends] for delta in (-1, 0, 1)} & set(range(len(data) + 1))
    )


def files_snapshot(folder: Path) -> dict[str, bytes]:
    """Every file's bytes, to show that a refused load changed nothing."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def load(store: duravoke.DirectoryStore) -> dict[str, Any] | None:
    """The completed steps after loading, or None when the load was refused."""
    try:
        state = store.read(WID)
    except duravoke.CorruptStateError as exc:
        # Refusals name the damaged file (the state file, or the log segment).
        if exc.path is None or Path(store.location) not in Path(exc.path).parents:
            raise
        return None
    assert state is not None
    return completed(state)


SETTINGS = settings(
    max_examples=150,
    deadline=None,
    # The autouse DURAVOKE_HOME fixture is function-scoped; nothing here uses it.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@SETTINGS
@given(data=st.data())
def test_damaged_store_loads_a_prefix_or_refuses(
    pristine: tuple[Path, list[tuple[str, Any]]], data: st.DataObject
) -> None:
    source, original = pristine
    ops = data.draw(damages(sizes_of(source), edges_of(source)), label="damage")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "store"
        shutil.copytree(source, folder)
        damage(folder, ops)
        before = files_snapshot(folder)
        store = duravoke.DirectoryStore(folder, durability="flush")

        found = load(store)
        event("refused" if found is None else f"prefix of {len(found)}/{len(original)}")
        assert files_snapshot(folder) == before, "read() changed the files"
        calls: list[str] = []
        d = duravoke.Duravoke(store)
        if found is None:
            with pytest.raises(duravoke.CorruptStateError):
                run_workflow(d, calls, lambda: None)
            assert calls == []
            assert files_snapshot(folder) == before, "a refused load changed the files"
            return

        # An exact prefix of the recorded steps, with exactly the recorded results.
        prefix = len(found)
        assert found == dict(original[:prefix]), ops
        run_workflow(d, calls, lambda: None)
        executed = sorted(result["label"] for _, result in original[prefix:])
        assert sorted(c for c in calls if c != "boom") == executed, (prefix, ops)
        assert calls.count("boom") == 1

        # The run completed everything; the next load is clean and whole.
        after = store.read(WID)
        assert after is not None
        assert after["status"] == "completed"
        assert completed(after) == dict(original)
        # A checkpoint folds every intact frame and drops the torn ones with their segment.
        store.checkpoint()
        (segment,) = (folder / "log").glob("log.*")
        assert not segment.read_bytes().rstrip(b"\0").count(b"\n#"), "frames left unfolded"
        folded = duravoke.DirectoryStore(folder).read(WID)
        assert folded is not None
        assert completed(folded) == dict(original)


@SETTINGS
@given(data=st.data())
def test_a_crash_after_damage_leaves_a_loadable_store(
    pristine: tuple[Path, list[tuple[str, Any]]], data: st.DataObject
) -> None:
    """Resume a damaged store, "crash" at the end, and load what the disk then holds.

    The crash image is a copy of the folder taken inside the workflow, after every
    step returned: exactly what a process killed at that moment leaves on disk.
    """
    source, original = pristine
    ops = data.draw(damages(sizes_of(source), edges_of(source)), label="damage")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "store"
        image = Path(tmp) / "image"
        shutil.copytree(source, folder)
        damage(folder, ops)
        store = duravoke.DirectoryStore(folder, durability="flush")
        if load(store) is None:
            return  # refused loads are the other test's business

        def crash_image() -> None:
            shutil.copytree(folder, image)

        run_workflow(duravoke.Duravoke(store), [], crash_image)
        try:
            state = duravoke.DirectoryStore(image).read(WID)
        except duravoke.CorruptStateError as exc:
            pytest.fail(f"a crash after resuming {ops} left an unloadable store: {exc}")
        assert state is not None
        assert completed(state) == dict(original), ops
        assert state["status"] == "running"
