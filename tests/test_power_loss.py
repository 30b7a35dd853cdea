"""Power loss: whatever a power cut leaves, every acknowledged step loads, and nothing blocks.

Each test records what the file stores ask of the disk while workflows run (see
``tests/powerloss.py``): frames appended to the store-wide log, segments created,
checkpoints folding the log into the state files and the index. It then rebuilds every
disk a power cut could leave at every moment that matters, and loads each: no
``CorruptStateError``, and every step that had returned is there with its exact value
(every workflow that had finished is finished). Each crash state is then used the way
the next process uses it (taking each workflow's lock and loading it, then a
checkpoint), and read again.

Controls run the same simulation against deliberately broken protocols and require
it to find a violation: a simulation that cannot fail proves nothing.

Sampling uses ``SEED`` (printed in every violation); ``DURAVOKE_POWERLOSS_SEED`` replays one.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest
from powerloss import Ack, Killed, Recorder, Sync, Violation, Write, explore

import duravoke
import duravoke._log

SEED = int(os.environ.get("DURAVOKE_POWERLOSS_SEED", random.SystemRandom().randrange(2**32)))
WID = "pl"


@pytest.fixture(autouse=True)
def _print_seed() -> Iterator[None]:
    yield
    print(f"power-loss seed: {SEED} (DURAVOKE_POWERLOSS_SEED={SEED} replays it)")


def value_of(label: str, size: int = 40) -> dict[str, Any]:
    """What the step labelled ``label`` returns: a tuple and padding, to span pages."""
    return {"label": label, "v": (label, "x" * size)}


FileStore = duravoke.DirectoryStore | duravoke.PersistedKKV


def make_store(kind: str, root: Path) -> FileStore:
    """The store of ``kind`` under ``root`` (the same files for the rebuilt disks)."""
    if kind == "directory":
        return duravoke.DirectoryStore(root / "store")
    return duravoke.PersistedKKV(root / "state.json")


def completed(state: dict[str, Any] | None) -> dict[str, Any]:
    """{label: decoded result} of the completed steps of ``state``."""
    if state is None:
        return {}
    serializer = duravoke.JSONSerializer()
    found = {}
    for step in state["steps"].values():
        if step["status"] == "completed":
            result = serializer.decode(step["result"])
            assert isinstance(result, dict)
            found[result["label"]] = result
    return found


def checker(kind: str, workflow_ids: list[str]) -> Callable[[Path, list[Ack]], None]:
    """The check of one crash state: every acknowledgement holds, read, loaded, folded."""

    def verify(store: duravoke.Store, acks: list[Ack]) -> None:
        states = {wid: store.read(wid) for wid in workflow_ids}
        steps: dict[str, Any] = {}
        for state in states.values():
            steps.update(completed(state))
        for ack in acks:
            if ack.label.startswith("finished:"):
                wid = ack.label.removeprefix("finished:")
                state = states[wid]
                assert state is not None, f"finished workflow {wid!r} lost"
                # Finished as acknowledged, unless a later run has started since.
                now = (state["runs"], state["status"] == "completed")
                assert now >= (ack.value, True), (wid, state["runs"], state["status"])
            else:
                assert ack.label in steps, f"acknowledged step {ack.label} lost"
                assert steps[ack.label] == ack.value, ack.label

    def check(folder: Path, acks: list[Ack]) -> None:
        store = make_store(kind, folder)
        verify(store, acks)
        # What a new process does: take a workflow's lock and load it; fold the log.
        for wid in workflow_ids:
            lease = store.try_lock(wid)
            assert lease is not None
            try:
                lease.load()
            finally:
                lease.close()
        store.checkpoint()
        verify(make_store(kind, folder), acks)
        store.close()

    return check


def sync_workflow(
    d: duravoke.Duravoke, rec: Recorder, wid: str, labels: list[str], size: int = 40
) -> None:
    """Run ``wid``: a step per label (one with two children), acknowledging each."""

    @d.duravoke(name="pl.step")
    def step(label: str) -> dict[str, Any]:
        return value_of(label, size)

    @d.duravoke(name="pl.parent")
    def parent(label: str) -> dict[str, Any]:
        for child in ("a", "b"):
            rec.ack(f"{label}.{child}", step(f"{label}.{child}"))
        return value_of(label, size)

    with d.workflow(wid):
        for n, label in enumerate(labels):
            rec.ack(label, parent(label) if n == 1 else step(label))
    rec.ack(f"finished:{wid}", finished_run(d, wid))


def finished_run(d: duravoke.Duravoke, wid: str) -> int:
    """The number of the run of ``wid`` that just finished (it must read as completed)."""
    state = d.store.read(wid)
    assert state is not None
    assert state["status"] == "completed"
    return int(state["runs"])


def frames_written(rec: Recorder) -> list[list[str]]:
    """The workflow ids of the entries of each log frame written (documented format)."""
    frames = []
    for op in rec.log:
        if isinstance(op, Write) and op.data.startswith(b"#"):
            lines = op.data.partition(b"\n")[2].splitlines()
            if b'"format":"duravoke-log"' not in lines[0]:
                frames.append([json.loads(line)[0] for line in lines])
    return frames


def live_root(tmp_path: Path, name: str = "live") -> Path:
    """A fresh folder for the recorded run."""
    root = tmp_path / name
    root.mkdir()
    return root


def explore_all(rec: Recorder, kind: str, wids: list[str], tmp_path: Path, **options: Any) -> int:
    """Explore the crash states of ``rec`` with the checker of ``wids``; at least 40."""
    options.setdefault("max_states", 600)
    options.setdefault("max_seconds", 25.0)
    options.setdefault("min_states", 40)
    options.setdefault("seed", SEED)
    return explore(rec, checker(kind, wids), tmp_path / "crashes", **options)


# --- the promise under the simulation ---------------------------------------------------


@pytest.mark.parametrize("kind", ["directory", "kkv"])
def test_sync_steps_and_checkpoints_survive_power_loss(tmp_path: Path, kind: str) -> None:
    root = live_root(tmp_path)
    with Recorder(root) as rec:
        store = make_store(kind, root)
        d = duravoke.Duravoke(store)
        sync_workflow(d, rec, WID, ["s0", "s1", "s2", "s3"])
        # A second run replays, then records more, on top of what the first left.
        sync_workflow(d, rec, WID, ["s0", "s1", "s2", "s3", "s4", "s5"])
        store.checkpoint()  # a power cut anywhere in it
        sync_workflow(d, rec, WID, ["s0", "s1", "s2", "s3", "s4", "s5", "s6"])
    assert [op.label for op in rec.acks].count(f"finished:{WID}") == 3
    renames = [op for op in rec.log if type(op).__name__ == "Rename"]
    assert len(renames) >= 2, "no checkpoint was recorded"  # a snapshot and the index
    states = explore_all(rec, kind, [WID], tmp_path)
    print(f"{kind}: {len(rec.log)} operations, {states} crash states")


@pytest.mark.parametrize("kind", ["directory", "kkv"])
def test_a_multi_page_frame_torn_anywhere_is_dropped(tmp_path: Path, kind: str) -> None:
    # Steps whose records are larger than a page: every frame spans a page boundary, and
    # a power cut can keep a later page of it without an earlier one (issue 10).
    root = live_root(tmp_path)
    with Recorder(root) as rec:
        d = duravoke.Duravoke(make_store(kind, root))
        sync_workflow(d, rec, WID, ["big0", "big1", "big2"], size=6000)
    frames = [op for op in rec.log if isinstance(op, Write) and op.data[:1] == b"#"]
    assert sum(len(op.data) > 4096 for op in frames) >= 5, [len(op.data) for op in frames]
    states = explore_all(rec, kind, [WID], tmp_path)
    print(f"{kind}: {states} crash states")


async def async_workflow(d: duravoke.Duravoke, rec: Recorder, wid: str, n: int) -> None:
    """``n`` concurrent steps of ``wid`` in a task group, acknowledging each."""

    @d.duravoke(name="pl.astep")
    async def astep(label: str) -> dict[str, Any]:
        await anyio.lowlevel.checkpoint()
        return value_of(label, 700)

    async def one(label: str) -> None:
        rec.ack(label, await astep(label))

    async with d.workflow(wid):
        async with anyio.create_task_group() as tg:
            for i in range(n):
                tg.start_soon(one, f"{wid}.a{i}")
    rec.ack(f"finished:{wid}", finished_run(d, wid))


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["directory", "kkv"])
async def test_many_workflows_interleaved_survive_power_loss(tmp_path: Path, kind: str) -> None:
    # Concurrent async steps of many workflows: group commit puts records of several
    # workflows in one frame, written and fsynced once.
    root = live_root(tmp_path)
    wids = [f"w{i}" for i in range(6)]
    with Recorder(root) as rec:
        d = duravoke.Duravoke(make_store(kind, root))
        async with anyio.create_task_group() as tg:
            for wid in wids:
                tg.start_soon(async_workflow, d, rec, wid, 4)
    frames = frames_written(rec)
    # Group commit across workflows did happen: a frame holds records of several.
    assert max(len(set(f)) for f in frames) >= 3, frames
    assert len(frames) < sum(map(len, frames)), frames
    states = await anyio.to_thread.run_sync(
        lambda: explore_all(rec, kind, wids, tmp_path, max_seconds=12)
    )
    print(f"{kind}: {len(frames)} frames of {sum(map(len, frames))} records, {states} states")


def test_a_persisted_kkv_file_appended_across_runs_survives_power_loss(tmp_path: Path) -> None:
    # While the shared file is larger than 256 KiB, runs append to the log and leave the
    # folding to a later checkpoint; here several runs, then one.
    root = live_root(tmp_path)
    store = duravoke.PersistedKKV(root / "state.json")
    d = duravoke.Duravoke(store)

    @d.duravoke(name="pl.filler")
    def filler(i: int) -> dict[str, Any]:
        return value_of(f"filler{i}", 70_000)

    with d.workflow("filler"):
        for i in range(4):
            filler(i)
    store.close()
    assert (root / "state.json").stat().st_size > 256 * 1024
    with Recorder(root) as rec:
        store = duravoke.PersistedKKV(root / "state.json")
        d = duravoke.Duravoke(store)
        sync_workflow(d, rec, "one", ["k0", "k1"])
        sync_workflow(d, rec, "two", ["t0", "t1", "t2"])
        # A run that appends after reloading what its last run left in the log.
        sync_workflow(d, rec, "one", ["k0", "k1", "k2", "k3"])
        store.checkpoint()
    states = explore_all(rec, "kkv", ["one", "two", "filler"], tmp_path)
    print(f"{states} crash states")


def kill_points(
    tmp_path: Path, kind: str, scenario: Callable[[duravoke.Duravoke, Recorder], None]
) -> list[int]:
    """The changes after which to kill the first run: just before each fsync, and a few more."""
    root = tmp_path / "dry"
    root.mkdir()
    with Recorder(root) as rec:
        scenario(duravoke.Duravoke(make_store(kind, root)), rec)
    points, changes = [], 0
    for op in rec.log:
        if isinstance(op, Sync):
            points.append(changes)  # killed between a change and its fsync
        if not isinstance(op, Ack):
            changes += 1
    rng = random.Random(SEED)
    others = rng.sample(range(1, changes), min(4, changes - 1))
    return sorted(set(points + others))


def first_run(d: duravoke.Duravoke, rec: Recorder) -> None:
    sync_workflow(d, rec, WID, ["r0", "r1", "r2", "r3"])


def second_run(d: duravoke.Duravoke, rec: Recorder) -> None:
    sync_workflow(d, rec, WID, ["r0", "r1", "r2", "r3", "r4", "r5"])


def killed_then_resumed(
    tmp_path: Path,
    kind: str,
    kill: int,
    name: str,
    first: Callable[[duravoke.Duravoke, Recorder], None] = first_run,
    second: Callable[[duravoke.Duravoke, Recorder], None] = second_run,
) -> Recorder:
    """Record a first run killed after ``kill`` changes, then a run that resumes it."""
    root = live_root(tmp_path, name)
    with Recorder(root) as rec:
        rec.kill_after(kill)
        with contextlib.suppress(Killed, duravoke.StoreError):
            first(duravoke.Duravoke(make_store(kind, root)), rec)
        # A kill leaves the page cache: the next process reads what the last one wrote.
        rec.revive()
        second(duravoke.Duravoke(make_store(kind, root)), rec)
    return rec


@pytest.mark.parametrize("kind", ["directory", "kkv"])
def test_a_resumed_run_appending_after_a_kill_survives_power_loss(
    tmp_path: Path, kind: str
) -> None:
    points = kill_points(tmp_path, kind, first_run)
    total = 0
    for kill in points:
        rec = killed_then_resumed(tmp_path, kind, kill, f"kill-{kill}")
        total += explore_all(
            rec,
            kind,
            [WID],
            tmp_path / f"k{kill}",
            seed=SEED + kill,
            max_states=80,
            max_seconds=2,
            min_states=1,
        )
    print(f"{kind}: killed after each of {points} changes; {total} crash states")


def run_then_checkpoint(d: duravoke.Duravoke, rec: Recorder) -> None:
    sync_workflow(d, rec, WID, ["c0", "c1", "c2"])
    sync_workflow(d, rec, "other", ["o0"])
    assert isinstance(d.store, FileStore)
    d.store.checkpoint()


@pytest.mark.parametrize("kind", ["directory", "kkv"])
def test_a_checkpoint_interrupted_at_every_step_loses_nothing(tmp_path: Path, kind: str) -> None:
    # Killed at each change the checkpoint makes (snapshots, index, segments deleted),
    # then a new process appends and folds again; and a power cut on top of that.
    root = live_root(tmp_path, "dry")
    with Recorder(root) as rec:
        d = duravoke.Duravoke(make_store(kind, root))
        sync_workflow(d, rec, WID, ["c0", "c1", "c2"])
        # A PersistedKKV with a small file folds its log when a run ends: there, the
        # checkpoint is the end of the run of "other".
        before = rec.mutations
        sync_workflow(d, rec, "other", ["o0"])
        if kind == "directory":
            before = rec.mutations
        assert isinstance(d.store, FileStore)
        d.store.checkpoint()
        after = rec.mutations
    assert after - before >= 4, "the checkpoint changed nothing"

    def resume(d: duravoke.Duravoke, rec: Recorder) -> None:
        sync_workflow(d, rec, WID, ["c0", "c1", "c2", "c3"])
        assert isinstance(d.store, FileStore)
        d.store.checkpoint()

    total = 0
    for kill in range(before, after + 1):
        rec = killed_then_resumed(tmp_path, kind, kill, f"kill-{kill}", run_then_checkpoint, resume)
        total += explore_all(
            rec,
            kind,
            [WID, "other"],
            tmp_path / f"k{kill}",
            seed=SEED + kill,
            max_states=40,
            max_seconds=1.5,
            min_states=1,
        )
    print(f"{kind}: killed at each of {after - before + 1} changes; {total} crash states")


def in_turn(stores: tuple[FileStore, FileStore], rec: Recorder, size: int) -> None:
    """Two store objects on one folder (two processes) record steps in turn."""
    a, b = (duravoke.Duravoke(s) for s in stores)
    sync_workflow(a, rec, "pa", ["a0", "a1"], size)
    sync_workflow(b, rec, "pb", ["b0"], size)
    sync_workflow(a, rec, "pa", ["a0", "a1", "a2"], size)
    sync_workflow(b, rec, "pb", ["b0", "b1"], size)


@pytest.mark.parametrize("kind", ["directory", "kkv"])
def test_two_processes_appending_in_turn_survive_power_loss(tmp_path: Path, kind: str) -> None:
    root = live_root(tmp_path)
    with Recorder(root) as rec:
        in_turn((make_store(kind, root), make_store(kind, root)), rec, 40)
    states = explore_all(rec, kind, ["pa", "pb"], tmp_path)
    print(f"{kind}: {states} crash states")


def killed_writer_then_other(tmp_path: Path, kill: int | None, name: str) -> tuple[Recorder, int]:
    """Process B runs a workflow; while it is in it, process A appends big frames and is
    killed after ``kill`` changes (None: not killed); then B appends after A's frames.

    B loaded its workflow before A wrote, so only the rule "fsync what others wrote
    before appending" protects B's frames from A's unsynced one. Returns the recording
    and the index in its log where A's part starts.
    """
    root = live_root(tmp_path, name)
    with Recorder(root) as rec:
        a = duravoke.Duravoke(make_store("directory", root))
        b = duravoke.Duravoke(make_store("directory", root))

        @b.duravoke(name="pl.step")
        def step(label: str) -> dict[str, Any]:
            return value_of(label)

        with b.workflow("pb"):
            rec.ack("b0", step("b0"))
            start = len(rec.log)
            if kill is not None:
                rec.kill_after(kill)
            with contextlib.suppress(Killed, duravoke.StoreError):
                sync_workflow(a, rec, "pa", ["a0", "a1", "a2"], 6000)
            rec.revive()
            rec.ack("b1", step("b1"))
        rec.ack("finished:pb", finished_run(b, "pb"))
    return rec, start


def writes_then_fsync_points(tmp_path: Path) -> list[int]:
    """The kills of A between a big frame's write and its fsync (``killed_writer_then_other``)."""
    rec, start = killed_writer_then_other(tmp_path, None, "dry")
    points = []
    changes = 0  # what A changed so far: each operation but an acknowledgement is one
    previous: Any = None
    for op in rec.log[start:]:
        if isinstance(op, Ack):
            continue
        big = (
            isinstance(previous, Write) and previous.data[:1] == b"#" and len(previous.data) > 4096
        )
        if isinstance(op, Sync) and big and b'"pa"' in previous.data[:100]:
            points.append(changes)  # A dies at this fsync, its frame in the page cache
        changes += 1
        previous = op
    assert points
    return points


def test_a_process_appending_after_a_killed_one_survives_power_loss(tmp_path: Path) -> None:
    total = 0
    for kill in writes_then_fsync_points(tmp_path):
        rec, _ = killed_writer_then_other(tmp_path, kill, f"kill-{kill}")
        total += explore_all(
            rec,
            "directory",
            ["pa", "pb"],
            tmp_path / f"k{kill}",
            seed=SEED + kill,
            max_states=150,
            max_seconds=4,
            min_states=1,
        )
    print(f"{total} crash states")


# --- controls: the simulation catches a broken protocol ---------------------------------


def test_the_simulation_builds_the_disks_of_the_model(tmp_path: Path) -> None:
    # An unsynced write over two pages: every subset of its pages, and zeros when only
    # the size arrived; a synced write: always whole.
    root = live_root(tmp_path)
    with Recorder(root) as rec:
        fd = os.open(root / "f", os.O_WRONLY | os.O_CREAT, 0o600)
        os.pwrite(fd, b"a" * 4096, 0)
        os.fsync(fd)
        os.pwrite(fd, b"b" * 4096 + b"c" * 4096, 4096)
        os.close(fd)
    seen: set[bytes] = set()

    def note(folder: Path, acks: list[Ack]) -> None:
        seen.add((folder / "f").read_bytes() if (folder / "f").exists() else b"-")

    explore(rec, note, tmp_path / "crashes", seed=SEED)
    a, b, c, zero = b"a" * 4096, b"b" * 4096, b"c" * 4096, bytes(4096)
    # Before the fsync the name itself was not durable; after it, only the data is.
    assert {b"-", a, a + b + c, a + zero + c, a + b + zero, a + zero + zero} <= seen, len(seen)
    # Once the second write happened, the first was durable: whole, whatever else.
    assert all(x.startswith(a) for x in seen if len(x) > 4096)
    assert zero in seen  # before that fsync: the size grew, the data did not arrive


def test_control_no_fsync_before_acknowledging_is_caught(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_init = duravoke._log.Log.__init__

    def never_sync(self: Any, folder: Path, **kwargs: Any) -> None:
        real_init(self, folder, **{**kwargs, "sync": False})

    monkeypatch.setattr(duravoke._log.Log, "__init__", never_sync)
    root = live_root(tmp_path)
    with Recorder(root) as rec:
        sync_workflow(duravoke.Duravoke(make_store("directory", root)), rec, WID, ["c0", "c1"])
    with pytest.raises(Violation, match="lost"):
        explore(rec, checker("directory", [WID]), tmp_path / "crashes", seed=SEED)


def test_control_no_folder_fsync_after_creating_a_segment_is_caught(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(duravoke._log, "fsync_folder", lambda folder: None)
    root = live_root(tmp_path)
    with Recorder(root) as rec:
        sync_workflow(duravoke.Duravoke(make_store("directory", root)), rec, WID, ["c0", "c1"])
    with pytest.raises(Violation, match="lost"):
        explore(rec, checker("directory", [WID]), tmp_path / "crashes", seed=SEED)


def test_control_skipping_the_fsync_of_others_frames_is_caught(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without fsyncing what another process wrote (and may have died before syncing), a
    # power cut can keep this process's frame and tear the other's before it: damage
    # before an intact frame, and the store refuses to load.
    real = duravoke._log.Log._writable

    def skip_rule(self: Any, view: Any) -> Any:
        segment = real(self, view)
        self._synced = max(self._synced, segment.end)
        return segment

    monkeypatch.setattr(duravoke._log.Log, "_writable", skip_rule)
    points = writes_then_fsync_points(tmp_path)  # where they are without the rule's fsync
    found = []
    for kill in points:
        rec, _ = killed_writer_then_other(tmp_path, kill, f"kill-{kill}")
        try:
            explore(rec, checker("directory", ["pa", "pb"]), tmp_path / f"c-{kill}", seed=SEED)
        except Violation as exc:
            found.append(str(exc))
            break
    assert found, "the simulation missed appending after another process's unsynced frame"
    assert "CorruptStateError" in found[0] or "lost" in found[0], found[0]
