"""The storage engine's own rules: one write per step, journals grown ahead, compaction."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import duravoke


def _steps(d: duravoke.Duravoke, calls: list[int]):  # type: ignore[no-untyped-def]
    @d.duravoke(name="step")
    def step(i: int) -> str:
        calls.append(i)
        return f"value {i}" * 10

    return step


def _journals(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.journal"))


def test_a_step_costs_one_fsync_of_its_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The real os.fsync is called; only the calls are counted.
    counted: list[int] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        counted.append(fd)
        real_fsync(fd)

    d = duravoke.Duravoke(duravoke.DirectoryStore(tmp_path / "s"))
    step = _steps(d, [])
    with d.workflow("w"):
        step(0)  # creates the journal: header, fsync, folder fsync
        monkeypatch.setattr(os, "fsync", counting_fsync)
        for i in range(1, 51):
            step(i)
        monkeypatch.setattr(os, "fsync", real_fsync)
    assert len(counted) == 50
    assert len(set(counted)) == 1  # always the journal's descriptor


def test_the_journal_is_grown_ahead_and_its_size_does_not_change_per_step(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    d = duravoke.Duravoke(duravoke.DirectoryStore(folder))
    step = _steps(d, [])
    sizes = []
    with d.workflow("w"):
        for i in range(20):
            step(i)
            (journal,) = _journals(folder)
            sizes.append(journal.stat().st_size)
        data = journal.read_bytes()
    assert sizes == [64 * 1024] * 20
    records, _, zeros = data.partition(b"\x00")
    assert records.count(b"\n") == 22  # header, running event, 20 steps
    assert not zeros.strip(b"\x00")
    assert _journals(folder) == []  # folded into the state file when the run ended


def test_a_run_after_a_crash_writes_on_into_the_same_journal(tmp_path: Path) -> None:
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
    (journal,) = _journals(folder)
    inode = journal.stat().st_ino
    assert run(5, "crash") == ["3", "4"]
    (journal,) = _journals(folder)
    assert journal.stat().st_ino == inode  # the same file, no compaction needed
    assert run(6, "ok") == ["5"]
    assert _journals(folder) == []
    state = duravoke.DirectoryStore(folder).read("w")
    assert state is not None
    assert state["status"] == "completed"
    assert sorted(s["result"] for s in state["steps"].values()) == [0, 2, 4, 6, 8, 10]


def test_a_large_shared_file_is_rewritten_only_when_a_journal_has_grown(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    calls: list[int] = []
    d = duravoke.Duravoke(duravoke.PersistedKKV(path))
    step = _steps(d, calls)
    for w in range(40):  # fill the shared file past 256 KiB
        with d.workflow(f"filler-{w}"):
            for i in range(80):
                step(i)
    size = path.stat().st_size
    assert size > 256 * 1024
    before = path.read_bytes()
    kept = _journals(tmp_path / "state.json.d")  # the fillers that ran after it grew so
    assert kept

    with d.workflow("small"):
        step(1)
    # The shared file was not rewritten for one step; the journal beside it holds it all.
    assert path.read_bytes() == before
    (small,) = set(_journals(tmp_path / "state.json.d")) - set(kept)
    calls.clear()
    d2 = duravoke.Duravoke(duravoke.PersistedKKV(path))
    step2 = _steps(d2, calls)
    state = d2.store.read("small")
    assert state is not None
    assert state["status"] == "completed"
    with d2.workflow("small"):
        assert step2(1) == "value 1" * 10
    assert calls == []

    # Once the journal holds a quarter of the file's size, the run folds it in.
    with d2.workflow("small"):
        for i in range(2, 2 + size // 4 // 150):
            step2(i)
    assert not small.exists()
    assert path.read_bytes() != before
    state = duravoke.PersistedKKV(path).read("small")
    assert state is not None
    assert state["status"] == "completed"
    assert len(state["steps"]) == 1 + size // 4 // 150
    # Every workflow reads back whole, from the file or from its journal.
    store = duravoke.PersistedKKV(path)
    assert len(store.workflow_ids()) == 41
    for w in range(40):
        filler = store.read(f"filler-{w}")
        assert filler is not None
        assert (filler["status"], len(filler["steps"])) == ("completed", 80)


def test_temporary_files_of_a_killed_writer_are_cleaned_up(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    d = duravoke.Duravoke(duravoke.DirectoryStore(folder))
    step = _steps(d, [])
    with d.workflow("w"):
        step(0)
    (state_file,) = folder.glob("*.json")
    # What a run killed while writing the state leaves: its journal, a temporary file.
    leftover = folder / f".{state_file.name}.k1ll3d.tmp"
    leftover.write_bytes(b"half a state file")
    other = folder / ".another.json.k1ll3d.tmp"  # not this workflow's: left alone
    other.write_bytes(b"")
    with d.workflow("w"):
        step(1)
    assert leftover.exists()  # a run that finds no journal has no reason to look

    with d.workflow("w"):
        step(2)
        # Simulate the kill: the journal stays behind, as after a SIGKILL.
        (journal,) = _journals(folder)
        kept = journal.read_bytes()
    journal.write_bytes(kept)
    with d.workflow("w"):
        step(3)
    assert not leftover.exists()
    assert other.exists()

    path = tmp_path / "state.json"
    kkv = duravoke.Duravoke(duravoke.PersistedKKV(path))
    kkv_step = _steps(kkv, [])
    stale = tmp_path / ".state.json.k1ll3d.tmp"
    stale.write_bytes(b"half a state file")
    with kkv.workflow("w"):
        kkv_step(0)
    assert not stale.exists()  # removed under the store's lock, before writing
