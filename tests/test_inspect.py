"""list_workflows, get_workflow and forget: what users see of their recorded runs."""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest

import duravoke
from duravoke import StepInfo, WorkflowInfo

Child = Callable[[int], tuple[int, int]]
Parent = Callable[[int], list[tuple[int, int]]]


def _steps(d: duravoke.Duravoke) -> tuple[Child, Parent, Callable[[], None]]:
    @d.duravoke(name="child")
    def child(x: int) -> tuple[int, int]:
        return (x, x * x)

    @d.duravoke(name="parent")
    def parent(n: int) -> list[tuple[int, int]]:
        return [child(i) for i in range(n)]

    @d.duravoke(name="boom")
    def boom() -> None:
        raise ValueError("nope")

    return child, parent, boom


def test_empty_store(store: duravoke.Store) -> None:
    assert duravoke.list_workflows(store) == []
    with pytest.raises(duravoke.WorkflowNotFoundError) as info:
        duravoke.get_workflow("nothing", store)
    assert info.value.workflow_id == "nothing"
    assert store.location in str(info.value)


def test_completed_workflow_in_detail(d: duravoke.Duravoke, store: duravoke.Store) -> None:
    _, parent, boom = _steps(d)
    before = datetime.now().astimezone()
    with d.workflow("order-42"):
        assert parent(2) == [(0, 0), (1, 1)]
        with pytest.raises(ValueError, match="nope"):
            boom()

    info = duravoke.get_workflow("order-42", store)
    assert isinstance(info, WorkflowInfo)
    assert (info.id, info.status, info.runs, info.error) == ("order-42", "completed", 1, None)
    assert (info.steps_done, info.steps_failed) == (3, 1)
    assert info.started is not None
    assert info.updated is not None
    assert before <= info.started <= info.updated
    assert all(isinstance(s, StepInfo) for s in info.steps)

    by_fn = {s.function: [x for x in info.steps if x.function == s.function] for s in info.steps}
    (top,) = by_fn["parent"]
    children = by_fn["child"]
    (failed,) = by_fn["boom"]
    assert top.parent is None
    assert top.path == ()
    assert top.args == {"n": 2}
    assert top.result_preview == "[(0, 0), (1, 1)]"  # decoded: the tuples are tuples
    assert top.status == "completed"
    assert top.error is None
    assert [c.parent for c in children] == [top.sid, top.sid]
    assert [c.path for c in children] == [("parent",), ("parent",)]
    assert sorted(c.args["x"] for c in children) == [0, 1]
    assert all(c.occurrence == 0 for c in children)
    assert failed.status == "failed"
    assert failed.error == "ValueError('nope')"
    assert failed.result_preview == ""
    # In the order they started: the parent before its children.
    assert list(info.steps) == sorted(info.steps, key=lambda s: s.started)
    assert info.steps.index(top) < info.steps.index(children[0])
    assert all(s.duration >= 0 for s in info.steps)
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.status = "failed"  # type: ignore[misc]


def test_failed_workflow_and_occurrences(d: duravoke.Duravoke, store: duravoke.Store) -> None:
    child, _, _ = _steps(d)

    def run() -> None:
        with d.workflow("w"):
            child(7)
            child(7)
            raise RuntimeError("stop")

    with pytest.raises(RuntimeError):
        run()
    info = duravoke.get_workflow("w", store)
    assert info.status == "failed"
    assert info.error == "RuntimeError('stop')"
    assert sorted(s.occurrence for s in info.steps) == [0, 1]


def test_long_result_preview_is_shortened(d: duravoke.Duravoke, store: duravoke.Store) -> None:
    @d.duravoke
    def big() -> str:
        return "x" * 1000

    with d.workflow("w"):
        big()
    (step,) = duravoke.get_workflow("w", store).steps
    assert len(step.result_preview) <= 60
    assert step.result_preview.startswith("'xxx")
    assert step.result_preview.endswith("...")


def test_pickled_result_preview_does_not_unpickle(tmp_path: Path) -> None:
    d = duravoke.Duravoke(duravoke.DirectoryStore(tmp_path / "s"), duravoke.PickleSerializer())

    @d.duravoke
    def value() -> complex:
        return 1 + 2j

    with d.workflow("w"):
        value()
    (step,) = duravoke.get_workflow("w", d.store).steps
    assert "pickle" in step.result_preview


def test_list_newest_first(d: duravoke.Duravoke, store: duravoke.Store) -> None:
    child, _, _ = _steps(d)
    for wid in ("a", "b", "c"):
        with d.workflow(wid):
            child(1)
    with d.workflow("a"):  # a second run of "a" makes it the most recent
        child(2)
    listed = duravoke.list_workflows(store)
    assert [w.id for w in listed] == ["a", "c", "b"]
    assert listed[0].runs == 2
    assert listed[0].steps_done == 2


def _hold(d: duravoke.Duravoke, wid: str) -> tuple[threading.Thread, threading.Event]:
    """Run workflow ``wid`` in a thread, stopped inside it until ``release`` is set."""
    entered, release = threading.Event(), threading.Event()

    @d.duravoke(name="step")
    def step(x: int) -> int:
        return x

    def run() -> None:
        with d.workflow(wid):
            step(1)
            entered.set()
            assert release.wait(30)
            step(2)

    thread = threading.Thread(target=run)
    thread.start()
    assert entered.wait(30)
    return thread, release


def test_running_is_seen_and_not_disturbed(d: duravoke.Duravoke, store: duravoke.Store) -> None:
    child, _, _ = _steps(d)
    with d.workflow("done"):
        child(1)
    thread, release = _hold(d, "busy")
    try:
        assert duravoke.get_workflow("busy", store).status == "running"
        statuses = {w.id: w.status for w in duravoke.list_workflows(store)}
        assert statuses == {"busy": "running", "done": "completed"}
        with pytest.raises(duravoke.WorkflowBusyError) as info:
            duravoke.forget("busy", store)
        assert info.value.workflow_id == "busy"
        assert "running" in str(info.value)
    finally:
        release.set()
        thread.join(30)
    # Looking at it from the same process left the run intact: it finished normally.
    info2 = duravoke.get_workflow("busy", store)
    assert info2.status == "completed"
    assert info2.steps_done == 2
    assert store.try_lock("busy") is not None


def test_forget(d: duravoke.Duravoke, store: duravoke.Store) -> None:
    child, _, _ = _steps(d)
    for wid in ("a", "b"):
        with d.workflow(wid):
            child(1)
    duravoke.forget("a", store)
    assert [w.id for w in duravoke.list_workflows(store)] == ["b"]
    with pytest.raises(duravoke.WorkflowNotFoundError):
        duravoke.get_workflow("a", store)
    with pytest.raises(duravoke.WorkflowNotFoundError) as info:
        duravoke.forget("a", store)
    assert info.value.workflow_id == "a"


def test_a_state_file_written_back_after_forget_is_void(tmp_path: Path) -> None:
    # A checkpoint that read the log before a "forget" can write the workflow's state
    # file after forget deleted it. The log's forget record wins until the next fold.
    store = duravoke.DirectoryStore(tmp_path / "s")
    d = duravoke.Duravoke(store)
    child, _, _ = _steps(d)
    with d.workflow("gone"):
        child(1)
    store.checkpoint()
    (state_file,) = (tmp_path / "s").glob("gone.*.json")
    stale = state_file.read_bytes()
    duravoke.forget("gone", store)
    assert not state_file.exists()
    state_file.write_bytes(stale)  # what the late checkpoint writes
    assert duravoke.list_workflows(store) == []
    with pytest.raises(duravoke.WorkflowNotFoundError):
        duravoke.get_workflow("gone", store)
    with pytest.raises(duravoke.WorkflowNotFoundError):
        duravoke.forget("gone", store)
    store.checkpoint()  # folds the forget record: the stale file goes
    assert not state_file.exists()


def test_default_store_and_store_strings(tmp_path: Path, duravoke_home: Path) -> None:
    @duravoke.duravoke(name="inspect-default")
    def f(x: int) -> int:
        return x + 1

    with duravoke.workflow("in-default"):
        f(1)
    assert [w.id for w in duravoke.list_workflows()] == ["in-default"]
    assert duravoke.get_workflow("in-default").steps_done == 1
    assert [w.id for w in duravoke.list_workflows(str(duravoke_home))] == ["in-default"]
    assert [w.id for w in duravoke.list_workflows(duravoke_home)] == ["in-default"]

    kkv = tmp_path / "state.json"
    d = duravoke.Duravoke(duravoke.PersistedKKV(kkv))
    with d.workflow("in-kkv"), duravoke.workflow("in-default-2"):
        f(2)
    assert [w.id for w in duravoke.list_workflows(str(kkv))] == ["in-kkv"]
    duravoke.forget("in-default-2")
    assert [w.id for w in duravoke.list_workflows()] == ["in-default"]


def test_damaged_state_is_listed_as_corrupt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = duravoke.DirectoryStore(tmp_path / "s")
    d = duravoke.Duravoke(store)
    child, _, _ = _steps(d)
    for wid in ("good", "bad"):
        with d.workflow(wid):
            child(1)
    store.checkpoint()  # write the state files
    (damaged,) = (tmp_path / "s").glob("bad.*.json")
    damaged.write_bytes(damaged.read_bytes()[:100])
    with caplog.at_level(logging.WARNING, logger="duravoke"):
        listed = duravoke.list_workflows(store)
    assert [(w.id, w.status, w.path) for w in listed] == [
        ("bad", "corrupt", str(damaged)),  # the index still knows whose file it is
        ("good", "completed", None),
    ]
    assert listed[0].error is not None
    assert str(damaged) in listed[0].error
    assert str(damaged) in caplog.text
    with pytest.raises(duravoke.CorruptStateError) as info:
        duravoke.get_workflow("bad", store)
    assert info.value.path == str(damaged)
    assert damaged.read_bytes()  # left as it was
    duravoke.forget("bad", store)  # forgetting is the way to start it afresh
    assert not damaged.exists()


def test_damage_in_the_log_is_a_clear_error_naming_the_segment(tmp_path: Path) -> None:
    # Damage that no crash can leave (a flipped byte before an intact frame) in the
    # store-wide log: nobody can tell which workflows it held, so the store refuses to
    # guess, names the segment and says how to salvage the intact records.
    store = duravoke.DirectoryStore(tmp_path / "s")
    d = duravoke.Duravoke(store)
    child, _, _ = _steps(d)
    for wid in ("one", "two"):
        with d.workflow(wid):
            child(1)
    (segment,) = (tmp_path / "s" / "log").glob("log.*")
    data = bytearray(segment.read_bytes())
    data[data.index(b'"one"') + 2] ^= 0x01
    segment.write_bytes(bytes(data))
    fresh = duravoke.DirectoryStore(tmp_path / "s")
    with pytest.raises(duravoke.CorruptStateError) as info:
        duravoke.get_workflow("two", fresh)
    assert info.value.path == str(segment)
    assert "salvage" in str(info.value)
    assert bytes(data) == segment.read_bytes()  # left as it was


_KILL_MID_RUN = textwrap.dedent(
    """
    import os, signal, sys
    import duravoke

    d = duravoke.Duravoke(duravoke.open_store(sys.argv[1]))

    @d.duravoke
    def step(x):
        return x

    with d.workflow(sys.argv[2]):
        step(1)
        os.kill(os.getpid(), signal.SIGKILL)
    """
)


def _kill_mid_run(spec: str, workflow_id: str) -> None:
    """Record one step of ``workflow_id`` in a subprocess, then SIGKILL it."""
    proc = subprocess.run(
        [sys.executable, "-c", _KILL_MID_RUN, spec, workflow_id], timeout=60, check=False
    )
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
@pytest.mark.parametrize("kind", ["directory", "kkv"])
def test_killed_run_is_interrupted(tmp_path: Path, kind: str) -> None:
    spec = str(tmp_path / ("s" if kind == "directory" else "s.json"))
    _kill_mid_run(spec, "killed")
    info = duravoke.get_workflow("killed", spec)
    assert info.status == "interrupted"
    assert info.steps_done == 1
    assert [w.status for w in duravoke.list_workflows(spec)] == ["interrupted"]
    # Inspecting it did not repair or rewrite anything: a re-run resumes it.
    d = duravoke.Duravoke(duravoke.open_store(spec))
    calls = []

    @d.duravoke(name="__main__.step")
    def step(x: int) -> int:
        calls.append(x)
        return x

    with d.workflow("killed"):
        assert step(1) == 1
    assert calls == []
    assert duravoke.get_workflow("killed", spec).status == "completed"


def test_read_only_store_is_still_listed(tmp_path: Path) -> None:
    if os.name != "posix" or os.geteuid() == 0:
        pytest.skip("needs POSIX permissions and a non-root user")
    folder = tmp_path / "s"
    d = duravoke.Duravoke(duravoke.DirectoryStore(folder))
    child, _, _ = _steps(d)
    with d.workflow("ro"):
        child(1)
    for lock in folder.glob("*.lock"):
        lock.unlink()
    folder.chmod(0o500)
    try:
        assert [(w.id, w.status) for w in duravoke.list_workflows(str(folder))] == [
            ("ro", "completed")
        ]
    finally:
        folder.chmod(0o700)


class _ReadOnlyStore(duravoke.DirectoryStore):
    """A store whose lock files cannot be created, as in a folder one may only read."""

    def try_lock(self, workflow_id: str) -> duravoke.Lease | None:
        raise PermissionError(13, "Permission denied", workflow_id)


def test_unlockable_store_reports_recorded_status(tmp_path: Path) -> None:
    d = duravoke.Duravoke(duravoke.DirectoryStore(tmp_path / "s"))
    child, _, _ = _steps(d)
    with d.workflow("ro"):
        child(1)
    store = _ReadOnlyStore(tmp_path / "s")
    assert [(w.id, w.status) for w in duravoke.list_workflows(store)] == [("ro", "completed")]


def test_inspecting_from_inside_the_running_workflow(
    d: duravoke.Duravoke, store: duravoke.Store
) -> None:
    child, _, _ = _steps(d)
    with d.workflow("self"):
        child(1)
        assert duravoke.get_workflow("self", store).status == "running"
        assert [w.status for w in duravoke.list_workflows(store)] == ["running"]
        child(2)
    info = duravoke.get_workflow("self", store)
    assert (info.status, info.steps_done) == ("completed", 2)


_KILL_AFTER_COMPACTION = textwrap.dedent(
    """
    import os, signal, sys
    import duravoke, duravoke._filestore as filestore

    real_remove = filestore.remove

    def remove(path, **kwargs):
        # The crash window of a checkpoint: state files and index written, the folded
        # log segment not yet deleted.
        if "log." in str(path):
            os.kill(os.getpid(), signal.SIGKILL)
        return real_remove(path, **kwargs)

    filestore.remove = remove
    d = duravoke.Duravoke(duravoke.DirectoryStore(sys.argv[1]))

    @d.duravoke
    def step(x):
        return x

    with d.workflow("w"):
        step(1)
    d.store.checkpoint()
    """
)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_killed_right_after_the_final_snapshot_is_completed(tmp_path: Path) -> None:
    # The run finished and was folded into its state file and the index. Only the log
    # segment's removal was cut short: applying it again must change nothing.
    folder = str(tmp_path / "s")
    proc = subprocess.run(
        [sys.executable, "-c", _KILL_AFTER_COMPACTION, folder], timeout=60, check=False
    )
    assert proc.returncode == -signal.SIGKILL
    assert list((tmp_path / "s").glob("w.*.json"))  # the crash happened where intended
    assert len(list((tmp_path / "s" / "log").glob("log.*"))) == 2
    info = duravoke.get_workflow("w", folder)
    assert (info.status, info.steps_done, info.runs) == ("completed", 1, 1)
