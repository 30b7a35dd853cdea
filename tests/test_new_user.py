"""What broke for a new user (issue 9): each test here failed on the code before the fix.

Locks left held by a cancellation at the wrong moment, an event loop blocked while
workflows enter, steps that silently left their workflow in a thread pool, Ctrl-C read
as a failure, errors that did not pickle, and the small traps a first day meets.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import functools
import json
import os
import pickle
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import textwrap
import time
import zoneinfo
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from conftest import POSTGRES_DSN, make_store

import duravoke

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def seed(request: pytest.FixtureRequest) -> Iterator[int]:
    """A seed for the random timings, printed when the test fails (replay: DURAVOKE_TEST_SEED)."""
    value = int(os.environ.get("DURAVOKE_TEST_SEED") or random.randrange(2**32))
    yield value
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:  # pragma: no cover - only on failure
        print(f"seed: DURAVOKE_TEST_SEED={value}")


# --- 9.1: a cancellation at the moment the lock is handed over -----------------------------

#: Handovers per test: each round hands the lock from a holder to waiting entrants, and
#: cancels them all at a random moment around the handover.
ROUNDS = 60
WAITERS = 4


@pytest.mark.anyio
async def test_a_cancelled_entrant_never_keeps_the_lock(
    d: duravoke.Duravoke, seed: int, anyio_backend: str
) -> None:
    rng = random.Random(seed)
    wid = "handover"
    deadline = time.monotonic() + 30
    entered = cancelled = 0
    for round_ in range(ROUNDS):
        if time.monotonic() > deadline:
            break
        released = anyio.Event()

        async def holder(*, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
            async with d.workflow(wid):
                task_status.started()
                await anyio.sleep(rng.uniform(0, 0.003))
            released.set()

        async def waiter() -> None:
            nonlocal entered
            async with d.workflow(wid):
                entered += 1
                await anyio.sleep(rng.uniform(0, 0.002))

        with anyio.CancelScope() as waiters:
            async with anyio.create_task_group() as tg:
                await tg.start(holder)
                for _ in range(WAITERS):
                    tg.start_soon(waiter)
                await released.wait()
                # Block the loop for a moment, so that the waiters' poll timers expire
                # meanwhile: one of them then wakes up and takes the lock in the same
                # loop iteration as this task runs again, and the cancellation lands just
                # before or just after the lock changes hands, as the loop orders them.
                time.sleep(rng.uniform(0, 0.006))  # noqa: ASYNC251 - blocking is the point
                for _ in range(rng.randrange(4)):
                    await anyio.lowlevel.checkpoint()
                waiters.cancel()
        cancelled += waiters.cancelled_caught
        # Whatever happened, the lock is free now: the next entrant gets in at once.
        try:
            async with d.workflow(wid, timeout=2):
                pass
        except duravoke.WorkflowBusyError:
            pytest.fail(
                f"round {round_}: the lock stayed held after the entrants were cancelled"
                f" (seed {seed}; {entered} entered, {cancelled} rounds cancelled before)"
            )
    assert cancelled > 0, f"no entrant was ever cancelled (seed {seed})"


# --- 9.2: entering workflows never blocks the event loop ------------------------------------

LAG_KINDS = ["directory", *(["postgres"] if POSTGRES_DSN else [])]
ENTRANTS = 200
#: The worst tolerated loop lag: this many durations of one recorded step, plus
#: LAG_NOISE seconds for a machine whose other processes take the CPU away for a while.
#: Before the fix, every lock attempt ran on the loop: 200 entrants stalled it for
#: 29 to 150 steps (100-500 ms) on the 2-core machine this was written on, every time;
#: after it, 2 to 4 steps, and 13-80 ms at worst with other processes busy.
LAG_STEPS = 20
LAG_NOISE = 0.02
#: A lag above the bound is measured again, up to this many times in all: noise comes and
#: goes, a loop blocked by store I/O is blocked every time.
LAG_ATTEMPTS = 3


@pytest.mark.anyio
@pytest.mark.parametrize("kind", LAG_KINDS)
async def test_entering_many_workflows_does_not_block_the_loop(
    kind: str, tmp_path: Path, anyio_backend: str
) -> None:
    d = duravoke.Duravoke(make_store(kind, tmp_path))

    @d.duravoke
    async def step(i: int) -> int:
        return i

    # A few worker threads, not anyio's default 40: forty threads taking turns at the GIL
    # (5 ms each) would stall the loop as much as the blocking this test looks for.
    anyio.to_thread.current_default_thread_limiter().total_tokens = 4
    # The Postgres store holds a connection per entered workflow until issue 11's pool
    # lands, and the server allows 100: a limiter keeps the entrants within that (they
    # still take their locks while the others run, which is what this test watches).
    limiter = anyio.CapacityLimiter(ENTRANTS if kind != "postgres" else 24)

    async def enter(workflow_id: str, i: int) -> None:
        async with limiter, d.workflow(workflow_id):
            await step(i)

    attempts = []
    for attempt in range(LAG_ATTEMPTS):
        # The yardstick, measured here and now: how long one recorded step takes.
        durations = []
        for i in range(21):
            async with d.workflow(f"warm-{attempt}-{i}"):
                t0 = time.perf_counter()
                await step(i)
                durations.append(time.perf_counter() - t0)
        one_step = statistics.median(durations)

        lags: list[float] = []
        done = anyio.Event()

        async def ticker() -> None:
            while not done.is_set():
                t0 = time.perf_counter()
                await anyio.sleep(0.001)
                lags.append(time.perf_counter() - t0 - 0.001)

        async with anyio.create_task_group() as tg:
            tg.start_soon(ticker)
            await anyio.sleep(0.01)
            with anyio.fail_after(120):
                async with anyio.create_task_group() as entrants:
                    for i in range(ENTRANTS):
                        entrants.start_soon(enter, f"busy-{attempt}-{i}", i)
            done.set()
        worst = max(lags)
        attempts.append(
            f"worst lag {worst * 1000:.1f} ms = {worst / one_step:.0f} steps of"
            f" {one_step * 1000:.2f} ms (median lag {statistics.median(lags) * 1000:.2f} ms)"
        )
        if worst < LAG_STEPS * one_step + LAG_NOISE:
            return
    pytest.fail("the event loop stalled while workflows entered: " + "; ".join(attempts))


# --- 9.3: steps in a thread pool inside a workflow ------------------------------------------


def _nightly(d: duravoke.Duravoke, ran: list[str]) -> Callable[[str], str]:
    @d.duravoke
    def export_table(table: str) -> str:
        ran.append(table)
        return f"exported {table}"

    return export_table


TABLES = ["users", "orders", "invoices"]


def test_a_plain_thread_pool_in_a_workflow_raises_an_error_that_names_the_fix(
    d: duravoke.Duravoke,
) -> None:
    ran: list[str] = []
    export_table = _nightly(d, ran)
    night = "2026-11-29"
    with (
        pytest.raises(duravoke.WorkflowError, match=r"duravoke\.ThreadPoolExecutor") as info,
        d.workflow(f"nightly-export-{night}"),
        concurrent.futures.ThreadPoolExecutor(2) as pool,
    ):
        list(pool.map(export_table, TABLES))
    assert "export_table" in str(info.value)
    assert ran == []  # refused before the body ran
    # Nothing was recorded anywhere else: no workflow of its own per table.
    assert [w.id for w in duravoke.list_workflows(d.store)] == [f"nightly-export-{night}"]


def test_run_in_executor_in_a_workflow_raises_an_error_that_names_the_fix(
    d: duravoke.Duravoke,
) -> None:
    import asyncio  # the asyncio default executor is the trap here; trio has none

    ran: list[str] = []
    export_table = _nightly(d, ran)

    async def main() -> None:
        async with d.workflow("nightly-export-2026-11-29"):
            await asyncio.get_running_loop().run_in_executor(None, export_table, "users")

    with pytest.raises(duravoke.WorkflowError, match=r"duravoke\.ThreadPoolExecutor"):
        asyncio.run(main())
    assert ran == []


def test_duravoke_thread_pool_records_the_steps_in_the_workflow(d: duravoke.Duravoke) -> None:
    ran: list[str] = []
    export_table = _nightly(d, ran)

    def nightly_export(night: str) -> list[str]:
        with d.workflow(f"nightly-export-{night}"), duravoke.ThreadPoolExecutor(3) as pool:
            return list(pool.map(export_table, TABLES))

    assert nightly_export("2026-11-29") == [f"exported {t}" for t in TABLES]
    assert sorted(ran) == sorted(TABLES)
    # The re-run of the same night replays them; the next night runs them again.
    assert nightly_export("2026-11-29") == [f"exported {t}" for t in TABLES]
    assert sorted(ran) == sorted(TABLES)
    assert nightly_export("2026-11-30") == [f"exported {t}" for t in TABLES]
    assert sorted(ran) == sorted(TABLES * 2)
    listed = sorted(w.id for w in duravoke.list_workflows(d.store))
    assert listed == ["nightly-export-2026-11-29", "nightly-export-2026-11-30"]
    for workflow_id in listed:
        info = duravoke.get_workflow(workflow_id, d.store)
        assert sorted(s.args["table"] for s in info.steps) == sorted(TABLES)


def test_duravoke_thread_pool_as_the_executor_of_run_in_executor(d: duravoke.Duravoke) -> None:
    import asyncio

    ran: list[str] = []
    export_table = _nightly(d, ran)

    async def main(night: str) -> list[str]:
        loop = asyncio.get_running_loop()
        async with d.workflow(f"nightly-export-{night}"):
            with duravoke.ThreadPoolExecutor(2) as pool:
                return list(
                    await asyncio.gather(
                        *(loop.run_in_executor(pool, export_table, t) for t in TABLES)
                    )
                )

    assert asyncio.run(main("2026-11-29")) == [f"exported {t}" for t in TABLES]
    assert asyncio.run(main("2026-11-29")) == [f"exported {t}" for t in TABLES]
    assert asyncio.run(main("2026-11-30")) == [f"exported {t}" for t in TABLES]
    assert sorted(ran) == sorted(TABLES * 2)


# --- 9.5: Ctrl-C and cancellation are interruptions, not failures ---------------------------

_CTRL_C = textwrap.dedent(
    """
    import sys, time
    import duravoke

    @duravoke.duravoke
    def fetch(i):
        return i

    @duravoke.duravoke
    def wait_forever():
        print("ready", flush=True)
        time.sleep(60)

    with duravoke.workflow("ctrl-c"):
        fetch(1)
        wait_forever()
    """
)


@pytest.mark.skipif(not hasattr(signal, "SIGINT"), reason="needs SIGINT")
def test_ctrl_c_reads_as_interrupted(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _CTRL_C],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert "KeyboardInterrupt" in err
    info = duravoke.get_workflow("ctrl-c")
    assert info.status == "interrupted", info
    assert info.error is not None
    assert "KeyboardInterrupt" in info.error
    assert [s.function for s in info.steps if s.status == "completed"] == ["__main__.fetch"]
    listed = _cli("list")
    assert listed.stdout.splitlines()[1].split()[:2] == ["ctrl-c", "interrupted"]
    shown = _cli("show", "ctrl-c").stdout.splitlines()
    assert shown[1].startswith("status    interrupted")
    # The step Ctrl-C stopped shows as in flight only once the engine records steps that
    # start (see the report to the lead); fetch(1) is recorded either way.
    assert any(line.startswith("__main__.fetch(i=1) ") for line in shown)


@pytest.mark.anyio
async def test_a_cancelled_request_reads_as_interrupted(
    d: duravoke.Duravoke, anyio_backend: str
) -> None:
    started = anyio.Event()

    @d.duravoke
    async def slow_call() -> str:
        started.set()
        await anyio.sleep(60)
        return "late"

    with anyio.move_on_after(30) as request_timeout:  # bounded, whatever happens
        async with anyio.create_task_group() as tg:

            async def handle_request() -> None:
                async with d.workflow("request-42"):
                    await slow_call()

            tg.start_soon(handle_request)
            await started.wait()
            tg.cancel_scope.cancel()  # the request timed out
    assert not request_timeout.cancel_called
    info = duravoke.get_workflow("request-42", d.store)
    assert info.status == "interrupted", info
    assert (info.error or "").startswith("CancelledError") or "Cancelled" in (info.error or "")
    assert [w.status for w in duravoke.list_workflows(d.store)] == ["interrupted"]


# --- errors cross process boundaries -----------------------------------------------------------

_ERROR_SAMPLES: dict[type[duravoke.DuravokeError], dict[str, Any]] = {
    duravoke.SerializationError: {"function": "app.f", "where": "result[2]", "type_name": "object"},
    duravoke.CorruptStateError: {"path": "/state/x.json"},
    duravoke.WorkflowBusyError: {"workflow_id": "nightly"},
    duravoke.WorkflowNotFoundError: {"workflow_id": "gone"},
    duravoke.StoreError: {"path": "/state"},
}


def _error_classes() -> list[type[duravoke.DuravokeError]]:
    return sorted(
        {
            v
            for v in vars(duravoke).values()
            if isinstance(v, type) and issubclass(v, duravoke.DuravokeError)
        },
        key=lambda cls: cls.__name__,
    )


def _sample(cls: type[duravoke.DuravokeError]) -> duravoke.DuravokeError:
    """An instance of ``cls`` with every keyword attribute set to a telling value."""
    if cls in _ERROR_SAMPLES:
        return cls(f"{cls.__name__} happened", **_ERROR_SAMPLES[cls])
    import inspect

    try:
        params = list(inspect.signature(cls).parameters.values())
    except ValueError:  # Exception's own __init__: a message and nothing else
        params = []
    kwargs = {p.name: f"<{p.name}>" for p in params if p.kind is p.KEYWORD_ONLY}
    return cls(f"{cls.__name__} happened", **kwargs)


@pytest.mark.parametrize("cls", _error_classes(), ids=lambda cls: cls.__name__)
def test_every_error_pickles_with_its_attributes(cls: type[duravoke.DuravokeError]) -> None:
    error = _sample(cls)
    for protocol in range(2, pickle.HIGHEST_PROTOCOL + 1):
        copy = pickle.loads(pickle.dumps(error, protocol))
        assert type(copy) is cls
        assert str(copy) == str(error)
        assert copy.args == error.args
        assert vars(copy) == vars(error)


def test_an_error_raised_in_a_process_pool_arrives_whole(tmp_path: Path) -> None:
    with concurrent.futures.ProcessPoolExecutor(1) as pool:
        future = pool.submit(_busy_in_child, str(tmp_path / "store"))
        with pytest.raises(duravoke.WorkflowBusyError) as info:
            future.result(timeout=60)
    assert info.value.workflow_id == "held"


def _busy_in_child(folder: str) -> None:
    store = duravoke.DirectoryStore(folder)
    d = duravoke.Duravoke(store)
    import threading

    entered, leave = threading.Event(), threading.Event()

    def hold() -> None:
        with d.workflow("held"):
            entered.set()
            leave.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        entered.wait(30)
        with duravoke.Duravoke(duravoke.DirectoryStore(folder)).workflow("held", timeout=0.01):
            pass
    finally:
        leave.set()
        holder.join(30)


# --- 9.9: the small ones ---------------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "duravoke", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
    )


def test_a_zoneinfo_argument_identifies_the_call_with_its_zone(d: duravoke.Duravoke) -> None:
    # Issue 14 (DESIGN section 12): a zoned datetime is data, identified by its instant
    # and its zone key, so the same reminder is the same call and another zone is not.
    calls: list[dt.datetime] = []

    @d.duravoke
    def remind(when: dt.datetime) -> str:
        calls.append(when)
        return "ok"

    paris = dt.datetime(2026, 11, 30, 9, tzinfo=zoneinfo.ZoneInfo("Europe/Paris"))
    for _ in range(2):
        with d.workflow("reminders"):
            assert remind(paris) == "ok"
            assert remind(paris.astimezone(dt.timezone.utc)) == "ok"
    assert calls == [paris, paris.astimezone(dt.timezone.utc)]


def test_a_zoneinfo_result_says_what_it_is_and_what_to_do(d: duravoke.Duravoke) -> None:
    paris = dt.datetime(2026, 11, 30, 9, tzinfo=zoneinfo.ZoneInfo("Europe/Paris"))

    @d.duravoke
    def next_slot():  # type: ignore[no-untyped-def]  # no annotation: the zone cannot be kept
        return paris

    with d.workflow("slots"), pytest.raises(duravoke.SerializationError) as info:
        next_slot()
    assert "datetime with a named zone" in str(info.value)
    assert "astimezone(datetime.timezone.utc)" in str(info.value)

    @d.duravoke
    def annotated_slot() -> dt.datetime:  # the annotation keeps the zone (issue 14)
        return paris

    with d.workflow("slots"):
        assert annotated_slot().tzinfo is paris.tzinfo


class _Greeter:
    def __call__(self, name: str) -> str:
        return f"hello {name}"


def _greet(greeting: str, name: str) -> str:
    return f"{greeting} {name}"


@pytest.mark.parametrize(
    "fn",
    [functools.partial(_greet, "hello"), _Greeter()],
    ids=["partial", "callable-object"],
)
def test_partials_and_callable_objects_need_a_name(d: duravoke.Duravoke, fn: Any) -> None:
    with pytest.raises(TypeError, match="name="):
        d.duravoke(fn)
    greet = d.duravoke(name="greet")(fn)
    with d.workflow("greetings"):
        assert greet(name="ada") == "hello ada"
    (step,) = duravoke.get_workflow("greetings", d.store).steps
    assert step.function == "greet"
    assert step.result == "hello ada"


def test_a_key_with_the_wrong_parameters_says_so(d: duravoke.Duravoke) -> None:
    @d.duravoke(key=lambda user: user["id"])
    def send(user: dict[str, Any], template: str) -> str:
        return template

    with d.workflow("mail"), pytest.raises(TypeError, match=r"key= must accept the same"):
        send({"id": 1}, "welcome")


def test_the_empty_workflow_id_is_refused(d: duravoke.Duravoke) -> None:
    with pytest.raises(ValueError, match="must not be empty"), d.workflow(""):
        pass
    assert duravoke.list_workflows(d.store) == []


def test_star_import_works_without_psycopg(tmp_path: Path) -> None:
    program = textwrap.dedent(
        """
        import sys
        sys.modules["psycopg"] = None  # as if it were not installed
        from duravoke import *
        print(sorted(n for n in ("workflow", "duravoke", "PostgresStore") if n in globals()))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "['PostgresStore', 'duravoke', 'workflow']"


def test_a_waiting_entrant_says_so_once(
    d: duravoke.Duravoke, caplog: pytest.LogCaptureFixture
) -> None:
    import logging
    import threading

    entered, leave = threading.Event(), threading.Event()

    def hold() -> None:
        with d.workflow("busy"):
            entered.set()
            leave.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert entered.wait(30)
        caplog.set_level(logging.INFO, logger="duravoke")
        with pytest.raises(duravoke.WorkflowBusyError), d.workflow("busy", timeout=0.3):
            pass  # pragma: no cover - never entered
    finally:
        leave.set()
        holder.join(30)
    waits = [r for r in caplog.records if "waiting" in r.getMessage()]
    assert len(waits) == 1, [r.getMessage() for r in caplog.records]
    assert "'busy'" in waits[0].getMessage()


def test_forget_counts_one_step_in_the_singular(duravoke_home: Path) -> None:
    @duravoke.duravoke
    def only(x: int) -> int:
        return x

    with duravoke.workflow("single"):
        only(1)
    proc = subprocess.run(
        [sys.executable, "-m", "duravoke", "forget", "single"],
        input="n\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "Forget workflow 'single' and its 1 recorded step? [y/N]" in proc.stderr


def _steps_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_state_file_names_never_start_with_a_dash(tmp_path: Path) -> None:
    store = duravoke.DirectoryStore(tmp_path / "store")
    d = duravoke.Duravoke(store)

    @d.duravoke
    def f() -> int:
        return 1

    for workflow_id in ("-rf", "--help", "- x", "_-y"):
        with d.workflow(workflow_id):
            f()
    store.checkpoint()  # write the state files
    names = _steps_in(tmp_path / "store")
    assert names
    assert not [n for n in names if n.startswith("-")], names


_RELATIVE_HOME = textwrap.dedent(
    """
    import os, sys
    import duravoke

    @duravoke.duravoke
    def f(x):
        return x

    with duravoke.workflow("first"):
        f(1)
    os.chdir(sys.argv[1])
    with duravoke.workflow("second"):
        f(2)
    print(duravoke.DirectoryStore().location)
    """
)


def test_a_relative_duravoke_home_is_resolved_once(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    proc = subprocess.run(
        [sys.executable, "-c", _RELATIVE_HOME, str(tmp_path / "b")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path / "a",
        env={**os.environ, "DURAVOKE_HOME": "state"},
    )
    assert proc.returncode == 0, proc.stderr
    # One store, where the program started: a chdir does not split it in two.
    assert proc.stdout.strip() == str(tmp_path / "a" / "state")
    ids = [w.id for w in duravoke.list_workflows(str(tmp_path / "a" / "state"))]
    assert sorted(ids) == ["first", "second"]
    assert not (tmp_path / "b" / "state").exists()


# --- 9.6 and 9.7: the CLI on a real store ----------------------------------------------------


def test_list_shows_damaged_workflows_as_corrupt_rows(duravoke_home: Path) -> None:
    @duravoke.duravoke
    def f(x: int) -> int:
        return x

    for workflow_id in ("only-one", "other"):
        with duravoke.workflow(workflow_id):
            f(1)
    duravoke.default_instance().store.close()  # folds the log into the state files
    damaged = sorted(duravoke_home.glob("*.json"))
    assert len(damaged) == 2
    for path in damaged:  # every file damaged: nothing can be read at all
        path.write_bytes(path.read_bytes()[:60])
    proc = _cli("list")
    assert proc.returncode == 1
    assert "no workflows" not in proc.stdout
    rows = proc.stdout.splitlines()[1:]
    assert len(rows) == 2
    for path in damaged:
        (row,) = [r for r in rows if str(path) in r]
        # The index still names the workflow whose state file is damaged.
        assert row.split()[1] == "corrupt"
        assert row.split()[0] in ("only-one", "other")
    assert all(str(path) in proc.stderr for path in damaged)  # and warned about
    as_json = json.loads(_cli("list", "--json").stdout)
    assert sorted(w["path"] for w in as_json) == [str(p) for p in damaged]
    assert {w["status"] for w in as_json} == {"corrupt"}


def test_show_marks_the_step_in_flight_when_the_run_stopped(duravoke_home: Path) -> None:
    @duravoke.duravoke
    def child(x: int) -> int:
        return x

    @duravoke.duravoke
    def parent() -> None:
        child(1)
        raise KeyboardInterrupt  # Ctrl-C while parent() runs, after child(1) returned

    with pytest.raises(KeyboardInterrupt), duravoke.workflow("stopped"):
        parent()
    lines = _cli("show", "stopped").stdout.splitlines()
    assert lines[1].startswith("status    interrupted: KeyboardInterrupt")
    steps = lines[lines.index("") + 1 :]
    assert steps[0].endswith("in flight when the run stopped"), steps
    assert "parent" in steps[0]
    assert steps[1].startswith("  ")  # beneath its caller
    assert "child(x=1)" in steps[1]
    assert "completed" in steps[1]


def _fill(ids: list[str]) -> None:
    @duravoke.duravoke
    def f(x: int) -> int:
        return x

    for workflow_id in ids:
        with duravoke.workflow(workflow_id):
            f(1)


def test_show_and_forget_take_a_unique_prefix(duravoke_home: Path) -> None:
    _fill(["billing-2026-11", "billing-2026-12", "newsletter-2026-11"])
    shown = _cli("show", "news")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[0] == "workflow  newsletter-2026-11"
    ambiguous = _cli("show", "billing")
    assert ambiguous.returncode == 1
    assert "matches 2 workflows" in ambiguous.stderr
    assert "'billing-2026-11'" in ambiguous.stderr
    assert "'billing-2026-12'" in ambiguous.stderr
    assert _cli("show", "nothing-like-it").returncode == 1
    forgot = _cli("forget", "billing-2026-1", "--yes")
    assert forgot.returncode == 1  # still two: nothing forgotten
    forgot = _cli("forget", "billing-2026-12", "--yes")
    assert forgot.stdout == "Forgot workflow 'billing-2026-12'.\n"
    forgot = _cli("forget", "billing", "--yes")  # unique now
    assert forgot.stdout == "Forgot workflow 'billing-2026-11'.\n"


def test_an_id_shortened_by_list_can_be_pasted_back(duravoke_home: Path) -> None:
    long_ids = [f"import-{'x' * 90}-{tail}" for tail in ("alpha", "omega")]
    _fill(long_ids)
    rows = _cli("list").stdout.splitlines()[1:]
    shortened = sorted(row.split()[0] for row in rows)
    assert all("\u2026" in text for text in shortened)
    for text, workflow_id in zip(shortened, sorted(long_ids), strict=True):
        shown = _cli("show", text)
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.splitlines()[0] == f"workflow  {workflow_id}"
    wide = _cli("list", "--wide").stdout
    assert all(workflow_id in wide for workflow_id in long_ids)


def test_list_filters_by_status_and_prefix_and_limits(duravoke_home: Path) -> None:
    _fill(["report-1", "report-2", "report-3", "sync-1"])

    @duravoke.duravoke
    def boom() -> None:
        raise ValueError("nope")

    with pytest.raises(ValueError, match="nope"), duravoke.workflow("report-broken"):
        boom()

    def ids(*args: str) -> list[str]:
        proc = _cli("list", "--json", *args)
        assert proc.returncode == 0, proc.stderr
        return [w["id"] for w in json.loads(proc.stdout)]

    assert ids("--status", "failed") == ["report-broken"]
    assert sorted(ids("--prefix", "report-")) == [
        "report-1",
        "report-2",
        "report-3",
        "report-broken",
    ]
    assert ids("--prefix", "report-", "--status", "completed", "--limit", "2") == [
        "report-3",
        "report-2",
    ]
    assert sorted(ids("--status", "failed,completed", "--prefix", "sync")) == ["sync-1"]
    assert ids("--limit", "0") == []
    assert _cli("list", "--limit", "-1").returncode == 2
    text = _cli("list", "--status", "interrupted")
    assert text.returncode == 0
    assert text.stdout.startswith("no workflows match")


def test_recorded_results_can_be_read_back(duravoke_home: Path) -> None:
    when = dt.datetime(2026, 11, 30, 9, 30, tzinfo=dt.timezone.utc)

    @duravoke.duravoke
    def slot(n: int) -> tuple[int, dt.datetime, str]:
        return (n, when, "x" * 100)

    with duravoke.workflow("slots"):
        slot(1)
    (step,) = duravoke.get_workflow("slots").steps
    assert step.result == (1, when, "x" * 100)  # decoded, types intact, not cut short
    assert type(step.result) is tuple
    assert step.result_preview.endswith("...")
    shown = json.loads(_cli("show", "slots", "--json").stdout)
    (recorded,) = shown["steps"]
    assert recorded["result"] == step.result_json
    assert recorded["result"]["$t"] == "tuple"
    assert duravoke.JSONSerializer().decode(recorded["result"]) == step.result


# --- 9.8: the README's demo command, twice in a row ---------------------------------------------

#: What the README's demo command sets up before running the demo: a virtual environment
#: with duravoke installed. The test runs in the environment that runs the tests (which
#: has duravoke), so it leaves that out and keeps the rest word for word.
_DEMO_SETUP = "python3 -m venv .venv && . .venv/bin/activate && pip install . && "


def _readme_block(name: str) -> str:
    """The shell block between <!-- NAME --> and <!-- /NAME --> in README.md, as .ci/run has it."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split(f"<!-- {name} -->", 1)[1].split(f"<!-- /{name} -->", 1)[0]
    lines = [line for line in block.splitlines() if line and not line.startswith("```")]
    return "\n".join(lines)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("bash") is None, reason="the demo command is a shell command")
def test_the_demo_command_works_twice_in_a_row(tmp_path: Path) -> None:
    command = _readme_block("demo-command")
    assert command.startswith(_DEMO_SETUP), command
    command = command[len(_DEMO_SETUP) :]
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    # `python` is the interpreter running the tests, whose environment has duravoke.
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(ROOT),
    }
    for attempt in (1, 2):
        try:
            proc = subprocess.run(
                ["bash", "-c", command],
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=180,  # about 10 crashes on average; a second run that replays
                check=False,  # and prints nothing would loop until killed here
                env=env,
            )
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"run {attempt} of the demo command never finished: {exc.stdout!r}")
        assert proc.returncode == 0, (attempt, proc.stdout, proc.stderr)
        assert "finished" in proc.stderr, (attempt, proc.stderr)  # tee'd to stderr
        assert re.findall(r"Sent email to user_id: (\d+)", proc.stderr)[-1] == "9"
