"""One runner per workflow: across processes and threads, sync and async.

Ordering is checked with event files and flags, never with wall-clock thresholds: a
holder creates its "leaving" marker before it leaves, so a second entrant that sees
no marker when it gets in has entered a workflow that was still running.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import close_store, finished

import duravoke

PROCS = Path(__file__).parent / "procs"


def read_state(spec: str, workflow_id: str) -> dict[str, Any] | None:
    """A workflow's state as a fresh store object (another program) sees it."""
    store = duravoke.open_store(spec)
    try:
        return store.read(workflow_id)
    finally:
        close_store(store)


@pytest.fixture
def wid() -> str:
    """A workflow id no other test uses (a Postgres database is shared)."""
    return f"lock-{uuid.uuid4().hex}"


def start(spec: str, workflow_id: str, *args: object) -> subprocess.Popen[str]:
    cmd = [sys.executable, str(PROCS / "locker.py"), spec, workflow_id, *map(str, args)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen[str], expect: int = 0) -> str:
    """Wait for ``proc`` (bounded) and check its exit code; its stderr."""
    return finished(proc, expect)[1]


def wait_for(path: Path, proc: subprocess.Popen[str], timeout: float = 60) -> None:
    """Poll until ``path`` exists; fail if ``proc`` exits first or it takes too long."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            pytest.fail(
                f"process exited ({proc.returncode}) before creating {path}:\n" + finish(proc)
            )
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"{path} did not appear within {timeout} s")
        time.sleep(0.01)


# ---------------------------------------------------------------------------- processes


def test_second_process_waits_until_first_leaves(
    spec: str, wid: str, tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    ready, release, leaving = tmp_path / "a-ready", tmp_path / "release", tmp_path / "a-leaving"
    a = start(spec, wid, "--ready", ready, "--hold-until", release, "--leaving", leaving)
    procs.append(a)
    wait_for(ready, a)
    trying, entered = tmp_path / "b-trying", tmp_path / "b-in"
    b = start(spec, wid, "--trying", trying, "--entered", entered, "--check", leaving)
    procs.append(b)
    wait_for(trying, b)
    # B is at the door: give it time to get in wrongly, then let A leave.
    time.sleep(0.3)
    release.touch()
    finish(b)
    finish(a)
    seen = json.loads(entered.read_text())["seen"]
    assert seen == {str(leaving): True}, "B got into the workflow while A was still inside it"
    state = read_state(spec, wid)
    assert state is not None
    assert len(state["steps"]) == 2  # one greeting per process: each ran its own step


def test_second_process_with_timeout_raises_busy(
    spec: str, wid: str, tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    ready, release, entered = tmp_path / "a-ready", tmp_path / "release", tmp_path / "b-in"
    a = start(spec, wid, "--ready", ready, "--hold-until", release)
    procs.append(a)
    wait_for(ready, a)
    b = start(spec, wid, "--timeout", 0.2, "--entered", entered)
    procs.append(b)
    err = finish(b, expect=3)
    assert f"WorkflowBusyError workflow_id={wid!r} is_timeout=True" in err
    assert wid in err.split(": ", 1)[1], "the message itself names the workflow"
    assert not entered.exists()
    release.touch()
    finish(a)
    # Once A has left, a timeout is no obstacle.
    c = start(spec, wid, "--timeout", 5, "--entered", entered)
    procs.append(c)
    finish(c)
    assert entered.exists()


def test_different_workflows_do_not_wait_for_each_other(
    spec: str, tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    tag = uuid.uuid4().hex
    ready, release, leaving = tmp_path / "a-ready", tmp_path / "release", tmp_path / "a-leaving"
    a = start(spec, f"a-{tag}", "--ready", ready, "--hold-until", release, "--leaving", leaving)
    procs.append(a)
    wait_for(ready, a)
    # A holds "a" until we release it, which we only do once B has finished "b".
    entered = tmp_path / "b-in"
    b = start(spec, f"b-{tag}", "--entered", entered, "--check", leaving)
    procs.append(b)
    finish(b)
    assert a.poll() is None, "A left before it was released"
    release.touch()
    finish(a)
    assert json.loads(entered.read_text())["seen"] == {str(leaving): False}
    for workflow_id in (f"a-{tag}", f"b-{tag}"):
        state = read_state(spec, workflow_id)
        assert state is not None
        assert state["status"] == "completed"


# ------------------------------------------------------------------------------ threads


def marker(d: duravoke.Duravoke) -> Callable[[str], str]:
    """A step that records who ran it, to tell afterwards which runs got in."""

    @d.duravoke(name="mark")
    def mark(who: str) -> str:
        return who

    return mark


def marks(d: duravoke.Duravoke, workflow_id: str) -> list[str]:
    """Who ran the workflow, from its recorded ``mark`` steps."""
    state = d.store.read(workflow_id)
    assert state is not None
    return sorted(str(d.serializer.decode(s["result"])) for s in state["steps"].values())


class Holder:
    """A thread that holds a workflow until released (or 20 s pass)."""

    def __init__(self, d: duravoke.Duravoke, workflow_id: str) -> None:
        mark = marker(d)
        self.ready = threading.Event()
        self.release = threading.Event()
        self.leaving = threading.Event()
        self.errors: list[BaseException] = []

        def run() -> None:
            try:
                with d.workflow(workflow_id):
                    mark("holder")
                    self.ready.set()
                    self.release.wait(20)
                    self.leaving.set()
            except BaseException as exc:
                self.errors.append(exc)
                self.ready.set()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert self.ready.wait(30), "the holder thread never got in"
        assert not self.errors, self.errors

    def stop(self) -> None:
        self.release.set()
        self.thread.join(30)
        assert not self.thread.is_alive()
        assert not self.errors, self.errors


@pytest.fixture
def d(spec: str) -> Iterator[duravoke.Duravoke]:
    instance = duravoke.Duravoke(duravoke.open_store(spec))
    yield instance
    close_store(instance.store)


@pytest.mark.parametrize("own_instance", [False, True], ids=["shared", "own-instance"])
def test_second_thread_waits(
    d: duravoke.Duravoke, spec: str, wid: str, own_instance: bool, request: pytest.FixtureRequest
) -> None:
    holding = Holder(d, wid)
    # Threads usually share an instance; one with its own store object must wait too.
    other = duravoke.Duravoke(duravoke.open_store(spec)) if own_instance else d
    request.addfinalizer(lambda: close_store(other.store))
    saw_leaving: list[bool] = []
    entered = threading.Event()

    def second() -> None:
        with other.workflow(wid):
            saw_leaving.append(holding.leaving.is_set())
            entered.set()

    thread = threading.Thread(target=second, daemon=True)
    thread.start()
    # Give the second thread every chance to get in wrongly; it must not.
    assert not entered.wait(0.3), "a second thread entered a workflow that was running"
    holding.stop()
    thread.join(30)
    assert saw_leaving == [True]


def test_busy_error_carries_workflow_id(d: duravoke.Duravoke, wid: str) -> None:
    holding = Holder(d, wid)
    try:
        with pytest.raises(TimeoutError) as info, d.workflow(wid, timeout=0.2):
            pytest.fail("entered a busy workflow")
        assert isinstance(info.value, duravoke.WorkflowBusyError)
        assert info.value.workflow_id == wid
        assert wid in str(info.value)
    finally:
        holding.stop()


# -------------------------------------------------------------------------------- async


@pytest.mark.anyio
async def test_async_with_timeout_raises_busy(d: duravoke.Duravoke, wid: str) -> None:
    holding = Holder(d, wid)
    try:
        with pytest.raises(duravoke.WorkflowBusyError) as info:
            async with d.workflow(wid, timeout=0.2):
                pytest.fail("entered a busy workflow")
        assert isinstance(info.value, TimeoutError)
        assert info.value.workflow_id == wid
    finally:
        holding.stop()
    async with d.workflow(wid, timeout=5):
        pass


@pytest.mark.anyio
async def test_async_wait_does_not_block_the_event_loop(d: duravoke.Duravoke, wid: str) -> None:
    holding = Holder(d, wid)
    ticks = 0
    ticks_when_entered: list[int] = []

    async def waiter() -> None:
        async with d.workflow(wid):
            ticks_when_entered.append(ticks)

    async def ticker() -> None:
        # Release the holder only after ticking while the waiter waits: if waiting
        # blocked the loop, we would never tick, and the holder's own 20 s limit would
        # let the waiter in with too few ticks.
        nonlocal ticks
        while not ticks_when_entered and ticks < 10_000:
            ticks += 1
            if ticks == 20:
                holding.release.set()
            await anyio.sleep(0.005)

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            tg.start_soon(ticker)
    holding.stop()
    assert ticks_when_entered, "the waiter never got in"
    assert ticks_when_entered[0] >= 20, f"the event loop was blocked: {ticks_when_entered}"


@pytest.mark.anyio
async def test_async_waiter_can_be_cancelled(d: duravoke.Duravoke, wid: str) -> None:
    holding = Holder(d, wid)
    mark = marker(d)
    try:
        with anyio.move_on_after(0.3) as scope:
            async with d.workflow(wid):
                mark("cancelled waiter")
        assert scope.cancelled_caught
        # The event loop stays usable right after the cancellation.
        await anyio.sleep(0.01)
    finally:
        holding.stop()

    # The cancelled waiter left no lock behind: another thread gets in, then this task.
    def other_thread() -> None:
        with d.workflow(wid, timeout=5):
            mark("other thread")

    await anyio.to_thread.run_sync(other_thread)
    async with d.workflow(wid, timeout=5):
        mark("this task")
    assert marks(d, wid) == ["holder", "other thread", "this task"]
