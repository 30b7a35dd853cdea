"""The storage engine's own rules: one write per step, the log grown ahead, checkpoints."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

from conftest import counting_fsyncs, wait_for

import duravoke


def _steps(d: duravoke.Duravoke, calls: list[int]):  # type: ignore[no-untyped-def]
    @d.duravoke(name="step")
    def step(i: int) -> str:
        calls.append(i)
        return f"value {i}" * 10

    return step


def _segments(folder: Path) -> list[Path]:
    return sorted((folder / "log").glob("log.*"))


def test_a_step_costs_one_fsync_of_the_log(tmp_path: Path) -> None:
    d = duravoke.Duravoke(duravoke.DirectoryStore(tmp_path / "s"))
    step = _steps(d, [])
    with d.workflow("w"):
        step(0)  # creates the log: header, fsync, folder fsync
        with counting_fsyncs() as counted:
            for i in range(1, 51):
                step(i)
    assert len(counted) == 50
    assert len(set(counted)) == 1  # always the log's descriptor


def test_the_log_is_grown_ahead_and_its_size_does_not_change_per_step(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    d = duravoke.Duravoke(duravoke.DirectoryStore(folder))
    step = _steps(d, [])
    sizes = []
    with d.workflow("w"):
        for i in range(20):
            step(i)
            (segment,) = _segments(folder)
            sizes.append(segment.stat().st_size)
    data = segment.read_bytes()
    assert sizes == [64 * 1024] * 20
    frames, _, zeros = data.partition(b"\x00")
    assert frames.count(b"\n#") == 21  # a header frame, one frame a step, the outcome
    assert frames.count(b'"sid"') == 20
    assert not zeros.strip(b"\x00")


def test_starting_and_finishing_a_workflow_cost_no_fsync_of_their_own(tmp_path: Path) -> None:
    d = duravoke.Duravoke(duravoke.DirectoryStore(tmp_path / "s"))
    step = _steps(d, [])
    with d.workflow("first"):
        step(0)
    with counting_fsyncs() as counted:
        for w in range(10):
            with d.workflow(f"w{w}"):
                step(1)
    # One frame for the first step (with the "running" event), one for the outcome.
    assert len(counted) == 20
    assert list((tmp_path / "s").glob("w*.json")) == []  # no state file written per run


def test_a_run_after_a_crash_writes_on_into_the_same_segment(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    program = textwrap.dedent(
        f"""
        import os, sys, duravoke
        d = duravoke.Duravoke(duravoke.DirectoryStore({str(folder)!r}))
        @d.duravoke(name="step")
        def step(i):
            print("exec", i, flush=True)
            return i * 2
        with d.workflow("w"):
            for i in range(int(sys.argv[1])):
                step(i)
            if sys.argv[2] == "crash":
                os._exit(9)
        """
    )

    def run(n: int, mode: str) -> list[str]:
        proc = subprocess.run(
            [sys.executable, "-c", program, str(n), mode],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == (9 if mode == "crash" else 0), proc.stderr
        return proc.stdout.split()[1::2]

    assert run(3, "crash") == ["0", "1", "2"]
    (segment,) = _segments(folder)
    inode = segment.stat().st_ino
    assert run(5, "crash") == ["3", "4"]
    (segment,) = _segments(folder)
    assert segment.stat().st_ino == inode  # the same file
    assert run(6, "ok") == ["5"]
    state = duravoke.DirectoryStore(folder).read("w")
    assert state is not None
    assert state["status"] == "completed"
    assert sorted(s["result"] for s in state["steps"].values()) == [0, 2, 4, 6, 8, 10]
    # The clean exit folded the log into the state file.
    (state_file,) = folder.glob("w.*.json")
    assert b'"completed"' in state_file.read_bytes()


def test_a_checkpoint_folds_the_log_into_state_files_and_index(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    store = duravoke.DirectoryStore(folder)
    d = duravoke.Duravoke(store)
    step = _steps(d, [])
    for w in range(5):
        with d.workflow(f"w{w}"):
            step(w)
    assert list(folder.glob("*.json")) == []
    store.checkpoint()
    assert len(list(folder.glob("w*.json"))) == 5
    (segment,) = _segments(folder)  # the old ones are gone; a fresh one holds nothing
    assert segment.read_bytes().count(b"#") == 1
    index = (folder / "log" / "index.json").read_bytes()
    assert index.count(b'"completed"') == 5
    fresh = duravoke.DirectoryStore(folder)
    assert fresh.workflow_ids() == [f"w{w}" for w in range(5)]
    state = fresh.read("w3")
    assert state is not None
    assert [s["result"] for s in state["steps"].values()] == ["value 3" * 10]


def test_a_large_shared_file_is_rewritten_only_when_the_log_has_grown(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    calls: list[int] = []
    d = duravoke.Duravoke(duravoke.PersistedKKV(path))
    step = _steps(d, calls)
    for w in range(40):  # fill the shared file past 256 KiB
        with d.workflow(f"filler-{w}"):
            for i in range(80):
                step(i)
    d.store.checkpoint()
    size = path.stat().st_size
    assert size > 256 * 1024
    before = path.read_bytes()

    with d.workflow("small"):
        step(1)
    # The shared file was not rewritten for one step; the log beside it holds it.
    assert path.read_bytes() == before
    calls.clear()
    d2 = duravoke.Duravoke(duravoke.PersistedKKV(path))
    step2 = _steps(d2, calls)
    state = d2.store.read("small")
    assert state is not None
    assert state["status"] == "completed"
    with d2.workflow("small"):
        assert step2(1) == "value 1" * 10
    assert calls == []

    # Once the log holds more than 256 KiB, the end of a run folds it in (in the
    # background: nothing waits for it).
    with d2.workflow("small"):
        for i in range(2, 2 + 300 * 1024 // 150):
            step2(i)
    wait_for(lambda: path.read_bytes() != before, "the shared file rewritten", limit=30)
    state = duravoke.PersistedKKV(path).read("small")
    assert state is not None
    assert state["status"] == "completed"
    assert len(state["steps"]) == 1 + 300 * 1024 // 150
    store = duravoke.PersistedKKV(path)
    assert len(store.workflow_ids()) == 41
    for w in range(40):
        filler = store.read(f"filler-{w}")
        assert filler is not None
        assert (filler["status"], len(filler["steps"])) == ("completed", 80)


def test_temporary_files_of_a_killed_writer_are_cleaned_up(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    store = duravoke.DirectoryStore(folder)
    d = duravoke.Duravoke(store)
    step = _steps(d, [])
    with d.workflow("w"):
        step(0)
    store.checkpoint()
    (state_file,) = folder.glob("*.json")
    # What a checkpoint killed while writing the state file leaves: a temporary file.
    leftover = folder / f".{state_file.name}.k1ll3d.tmp"
    leftover.write_bytes(b"half a state file")
    other = folder / ".another.json.k1ll3d.tmp"  # not this workflow's: left alone
    other.write_bytes(b"")
    with d.workflow("w"):
        step(1)
    store.checkpoint()
    assert not leftover.exists()  # removed under the checkpoint lock, before writing
    assert other.exists()

    path = tmp_path / "state.json"
    kkv = duravoke.Duravoke(duravoke.PersistedKKV(path))
    kkv_step = _steps(kkv, [])
    stale = tmp_path / ".state.json.k1ll3d.tmp"
    stale.write_bytes(b"half a state file")
    with kkv.workflow("w"):
        kkv_step(0)
    # A small shared file is rewritten soon after a run ends.
    wait_for(lambda: not stale.exists(), "the stale temporary file removed", limit=30)


def test_runs_that_follow_one_another_share_the_fold_of_a_small_shared_file(
    tmp_path: Path,
) -> None:
    # A small PersistedKKV file is folded a moment after the last run ends, not at the
    # end of every run: a loop of sync workflows would otherwise pay a checkpoint (a
    # handful of fsyncs) for each one.
    path = tmp_path / "state.json"
    d = duravoke.Duravoke(duravoke.PersistedKKV(path))
    step = _steps(d, [])
    with counting_fsyncs() as counted:
        for w in range(20):
            with d.workflow(f"w{w}"):
                step(w)
        during = len(counted)
    wait_for(
        lambda: b'"w19"' in (path.read_bytes() if path.exists() else b""),
        "the file to catch up",
        limit=30,
    )
    # Each run: its step and its end in one fsync, and the first run's segment and
    # folders; a checkpoint per run would add at least 4 more each.
    assert during < 20 * 2 + 10, f"{during} fsyncs for 20 runs of one step"
    store = duravoke.PersistedKKV(path)
    state = store.read("w19")
    assert state is not None
    assert state["status"] == "completed"
    assert json.loads(path.read_bytes())["workflows"]["w19"]["status"] == "completed"


def test_exit_waits_for_a_background_checkpoint(tmp_path: Path) -> None:
    # An async run ends by starting its checkpoint in the background; a script that exits
    # right after must still leave its state file current (exit waits for that one).
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent(
            """
            import asyncio
            import duravoke

            d = duravoke.Duravoke(duravoke.PersistedKKV("state.json"))

            @d.duravoke
            async def step(i: int) -> int:
                return i

            @d.duravoke
            async def main() -> int:
                return sum([await step(i) for i in range(20)])

            print(asyncio.run(main()))
            """
        )
    )
    for run in range(5):
        for stale in tmp_path.glob("state.json*"):
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
        proc = subprocess.run(
            [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
            timeout=120, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == "190"
        assert (tmp_path / "state.json").exists(), f"run {run}: no state file at exit"
        assert "main" in (tmp_path / "state.json").read_text()
