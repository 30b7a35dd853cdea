"""Durable sleep and messages: recorded waits, suspension under a runner, send from anywhere."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import close_store, finished, wait_for

import duravoke
from duravoke._run import Step

ROOT = Path(__file__).resolve().parent.parent
WAITER = Path(__file__).resolve().parent / "procs" / "waiter.py"

D = duravoke.Duravoke(duravoke.InMemoryKKV())
SEEN: list[Any] = []


@pytest.fixture
def w(store: duravoke.Store) -> None:
    """The workflows of this module record into ``store`` (every kind in turn)."""
    D.store = store
    SEEN.clear()


@D.duravoke(name="wt.note")
def note(value: Any) -> Any:
    SEEN.append(value)
    return value


@D.duravoke(name="wt.nap")
def nap(seconds: float) -> str:
    note("before")
    D.sleep(seconds)
    note("after")
    return "rested"


@D.duravoke(name="wt.confirm")
def confirm(user: str) -> Any:
    note(f"welcome {user}")
    answer = D.receive("confirmed", timeout=60)
    note(f"answer {answer}")
    return answer


@D.duravoke(name="wt.aconfirm")
async def aconfirm(user: str) -> Any:
    answer = await D.receive_async("confirmed", timeout=60)
    await D.sleep_async(timedelta(seconds=0.05))
    return answer


def _info(workflow_id: str) -> duravoke.WorkflowInfo:
    return duravoke.get_workflow(workflow_id, D.store)


# --- called directly: waits block, and are recorded ------------------------------------


def test_sleep_records_its_wake_time_and_a_rerun_does_not_sleep_again(
    w: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    slept: list[float] = []
    real_sleep = time.sleep

    def counting_sleep(seconds: float) -> None:
        slept.append(seconds)
        real_sleep(seconds)

    monkeypatch.setattr(time, "sleep", counting_sleep)
    assert nap(0.2) == "rested"
    assert len(slept) == 1
    assert 0 < slept[0] <= 0.2
    [sleep_step] = [
        s
        for s in _info(duravoke.list_workflows(D.store)[0].id).steps
        if s.function == "duravoke.sleep"
    ]
    assert sleep_step.status == "completed"
    slept.clear()
    with D.workflow("again"):
        D.sleep(0)
        D.sleep(0.05)
    with D.workflow("again"):  # replayed: both sleeps are over
        D.sleep(0)
        D.sleep(0.05)
    assert len(slept) == 1


def test_messages_arrive_in_send_order_each_once_even_before_the_workflow_exists(w: None) -> None:
    for value in ("a", {"b": (1, 2)}, datetime(2026, 1, 1, tzinfo=timezone.utc)):
        D.send("inbox-1", "t", value)
    assert D.send("inbox-1", "other", 0) == 1  # sequence numbers are per topic

    def body() -> list[Any]:
        with D.workflow("inbox-1"):
            got = [D.receive("t") for _ in range(3)]
            got.append(D.receive("t", timeout=0.05))
            got.append(D.receive("other"))
            return got

    expected = ["a", {"b": (1, 2)}, datetime(2026, 1, 1, tzinfo=timezone.utc), None, 0]
    assert body() == expected
    assert body() == expected  # a re-run receives the same values, None included
    D.send("inbox-1", "t", "late")
    with D.workflow("inbox-1"):
        replayed = [D.receive("t") for _ in range(3)]
        assert replayed == expected[:3]
        assert D.receive("t", timeout=0.05) is None  # recorded: the timeout stays
        assert D.receive("t", timeout=5) == "late"  # the next receive gets the next one


def test_a_receiver_killed_before_recording_receives_the_same_message_again(
    w: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    D.send("inbox-2", "t", 1)
    D.send("inbox-2", "t", 2)
    real = Step.complete

    def dies_once(self: Step, result: object) -> Any:
        if self.name == "duravoke.receive":
            monkeypatch.setattr(Step, "complete", real)
            raise KeyboardInterrupt  # as if the process died before the record
        return real(self, result)

    monkeypatch.setattr(Step, "complete", dies_once)
    with pytest.raises(KeyboardInterrupt), D.workflow("inbox-2"):
        D.receive("t")
    with D.workflow("inbox-2"):
        assert (D.receive("t"), D.receive("t")) == (1, 2)


def test_receive_blocks_until_a_message_is_sent_from_another_thread(w: None) -> None:
    sender = threading.Timer(0.2, lambda: D.send("inbox-3", "t", "hello"))
    sender.start()
    with D.workflow("inbox-3"):
        assert D.receive("t", timeout=20) == "hello"
    sender.join()


async def test_async_waits_never_block_the_loop(w: None, anyio_backend: str) -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await anyio.sleep(0.01)

    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        await anyio.sleep(0.05)
        await D.send_async("inbox-4", "later", "x")
        async with D.workflow("inbox-4"):
            before = ticks
            await D.sleep_async(0.2)
            assert await D.receive_async("nothing", timeout=0.2) is None
            assert await D.receive_async("later") == "x"
            assert ticks - before >= 5  # the loop kept running while they waited
        tg.cancel_scope.cancel()


def test_a_sleep_killed_half_way_waits_only_what_remains(
    spec_kind: str, spec: str, tmp_path: Path, procs: list[subprocess.Popen[str]], mode: str
) -> None:
    if spec_kind != "directory" and mode != "sync":
        pytest.skip("every store kind in sync code; both async backends on one store kind")
    log = tmp_path / "log"
    delay = 2.0
    command = [sys.executable, str(WAITER), "sleep", mode, spec, str(log), str(delay)]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    first = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    procs.append(first)
    wait_for(lambda: log.exists() and "before" in log.read_text(), "the first step", 60)
    began = float(log.read_text().split()[1])
    wait_for(lambda: time.time() >= began + delay / 2, "half the delay")
    first.send_signal(signal.SIGKILL)
    first.communicate()
    assert "after" not in log.read_text()
    second = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    procs.append(second)
    finished(second)
    lines = dict(line.split() for line in log.read_text().splitlines())
    elapsed = float(lines["after"]) - began
    # Close to the delay (a second process start on top), far from twice it.
    assert delay <= elapsed < delay * 1.5, elapsed


@pytest.fixture(params=["sync", "asyncio", "trio"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_8_processes_send_100_messages_each_while_the_workflow_runs(
    spec: str, tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    # What is tested is that concurrent senders lose nothing, not power loss: no fsyncs
    # (800 of them, one after the other under the inbox lock, would dominate).
    d = duravoke.Duravoke(duravoke.open_store(spec, durability="flush"))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    received: list[Any] = []
    ready = threading.Event()

    def receiver() -> None:
        with d.workflow("many"):  # holds the lock the whole time: senders never need it
            ready.set()
            received.extend(d.receive("t", timeout=60) for _ in range(800))

    thread = threading.Thread(target=receiver)
    thread.start()
    assert ready.wait(30)
    senders = [
        subprocess.Popen(
            [sys.executable, str(WAITER), "send", spec, "many", "t", str(n), "100", "flush"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(8)
    ]
    procs.extend(senders)
    for proc in senders:
        finished(proc)
    thread.join(120)
    assert not thread.is_alive()
    assert None not in received
    assert sorted(map(tuple, received)) == [(n, i) for n in range(8) for i in range(100)]
    for n in range(8):  # each sender's messages arrive in the order it sent them
        assert [i for s, i in received if s == n] == list(range(100))
    assert [seq for seq, _ in d.store.messages("many", "t", 0)] == list(range(1, 801))
    close_store(d.store)


# --- under a runner: suspended, resumed when due ---------------------------------------


def test_a_long_sleep_suspends_the_workflow_under_a_runner(w: None) -> None:
    workflow_id = duravoke.start(nap, 1.0)
    report = duravoke.resume(D.store, suspend_after=0.2)
    [outcome] = report.outcomes
    assert outcome.status == "sleeping"
    assert report.exit_code == 0
    info = _info(workflow_id)
    assert info.status == "sleeping"
    assert info.wake is not None
    assert info.wake > datetime.now(timezone.utc)
    lease = D.store.try_lock(workflow_id)  # nothing is held
    assert lease is not None
    lease.close()
    assert duravoke.resume(D.store, suspend_after=0.2).outcomes == []  # not before its time
    assert SEEN == ["before"]
    wait_for(lambda: D.store.due(datetime.now(timezone.utc)), "the wake time")
    assert [o.status for o in duravoke.resume(D.store, suspend_after=0.2).outcomes] == ["completed"]
    assert SEEN == ["before", "after"]


def test_a_long_receive_suspends_and_send_makes_it_due_at_once(w: None) -> None:
    workflow_id = duravoke.start(confirm, "ann")
    [outcome] = duravoke.resume(D.store).outcomes
    assert outcome.status == "waiting"
    info = _info(workflow_id)
    assert (info.status, info.topic) == ("waiting", "confirmed")
    assert info.wake is not None
    assert duravoke.resume(D.store).outcomes == []
    D.send(workflow_id, "confirmed", {"ok": True})
    assert D.store.due(datetime.now(timezone.utc)) == [workflow_id]
    assert [o.status for o in duravoke.resume(D.store).outcomes] == ["completed"]
    assert SEEN == ["welcome ann", "answer {'ok': True}"]


async def test_the_long_lived_runner_picks_up_a_message_within_about_a_second(
    w: None, anyio_backend: str
) -> None:
    async with duravoke.Runner(D.store, poll_interval=0.2, suspend_after=0.1) as runner:
        workflow_id = await duravoke.start_async(aconfirm, "bob")
        with anyio.fail_after(15):
            while _info(workflow_id).status != "waiting":  # noqa: ASYNC110
                await anyio.sleep(0.02)
        await D.send_async(workflow_id, "confirmed", "yes")
        with anyio.fail_after(15):
            while not runner.report.completed:  # noqa: ASYNC110
                await anyio.sleep(0.02)
    assert _info(workflow_id).status == "completed"
    assert [o.status for o in runner.report.outcomes] == ["waiting", "completed"]


def test_cli_list_and_show_say_what_a_workflow_waits_for(w: None, tmp_path: Path) -> None:
    if not isinstance(D.store, duravoke.DirectoryStore):
        pytest.skip("the CLI reads a store from its spec; one kind is enough")
    sleeping = duravoke.start(nap, 600)
    waiting = duravoke.start(confirm, "cy")
    duravoke.resume(D.store)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "duravoke", *args, "--store", D.store.location],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    listing = cli("list", "--wide").stdout
    assert "sleeping" in listing
    assert "until" in listing
    assert "waiting" in listing
    assert "for 'confirmed'" in listing
    assert "waiting for 'confirmed' until" in cli("show", waiting).stdout
    assert "sleeping until" in cli("show", sleeping).stdout
    assert cli("send", waiting, "confirmed", '{"ok": 1}').returncode == 0
    assert cli("send", waiting, "confirmed", "{not json").returncode == 2
    assert [o.workflow_id for o in duravoke.resume(D.store).completed] == [waiting]
    assert SEEN[-1] == "answer {'ok': 1}"
    assert cli("cancel", sleeping).returncode == 0
    assert duravoke.get_workflow(sleeping, D.store).status == "cancelled"


# --- bad input ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("delay", "error"),
    [
        (-1, ValueError),
        (math.nan, ValueError),
        (math.inf, ValueError),
        ("1", TypeError),
        (True, TypeError),
        (timedelta(seconds=-1), ValueError),
        (datetime(2030, 1, 1), TypeError),
    ],
)
def test_bad_delays_are_refused(w: None, delay: Any, error: type[Exception]) -> None:
    with D.workflow("bad"), pytest.raises(error):
        D.sleep(delay)
    with D.workflow("bad2"), pytest.raises(error):
        D.receive("t", timeout=delay)


def test_waits_outside_a_workflow_and_bad_messages_are_refused(w: None) -> None:
    with pytest.raises(duravoke.WorkflowError, match="outside a workflow"):
        duravoke.sleep(1)
    with pytest.raises(duravoke.WorkflowError, match="outside a workflow"):
        duravoke.receive("t")
    with pytest.raises(duravoke.SerializationError):
        D.send("x", "t", object())
    with pytest.raises(ValueError, match="topic"):
        D.send("x", "", 1)
    with pytest.raises(TypeError, match="topic"):
        D.send("x", 5, 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty"):
        D.send("", "t", 1)
    assert D.store.messages("x", "t", 0) == []  # nothing was written


def test_forget_deletes_a_workflows_messages(w: None) -> None:
    D.send("gone", "t", 1)
    with D.workflow("gone"):
        note(1)
    duravoke.forget("gone", D.store)
    assert D.store.messages("gone", "t", 0) == []


def test_a_torn_message_frame_is_dropped_and_later_messages_are_kept(tmp_path: Path) -> None:
    # Messages are frames of the store's log: a sender killed mid-write leaves a torn
    # last frame, which is dropped; the next sender writes on in a new segment.
    for make in (
        lambda: duravoke.DirectoryStore(tmp_path / "dir"),
        lambda: duravoke.PersistedKKV(tmp_path / "kkv.json"),
    ):
        store = make()
        assert store.send("torn", "t", '"one"') == 1
        (segment,) = sorted((Path(store._folder()) / "log").glob("log.*"))
        used = len(segment.read_bytes().rstrip(b"\0"))
        with segment.open("r+b") as f:
            f.seek(used)
            f.write(b'#00000040 0badc0de\n["torn",{"msg":"t","seq":2,"data":"ha')
        store = make()  # another process, after the kill
        assert store.messages("torn", "t", 0) == [(1, "one")]
        assert store.send("torn", "t", '"two"') == 2
        assert store.messages("torn", "t", 0) == [(1, "one"), (2, "two")]
        assert store.messages("torn", "t", 1) == [(2, "two")]
        assert len(list((Path(store._folder()) / "log").glob("log.*"))) == 2  # written on
        store.forget("torn")  # the messages go, and new ones start at 1
        assert store.messages("torn", "t", 0) == []
        assert store.send("torn", "t", '"three"') == 1
        assert store.messages("torn", "t", 0) == [(1, "three")]
