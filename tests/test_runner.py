"""Runs that finish by themselves: start, resume passes, the long-lived Runner, cancel,
retry and retention; with real processes for kills, races, poison runs and removed code."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import close_store, finished

import duravoke
from duravoke._registry import lookup, register

ROOT = Path(__file__).resolve().parent.parent
PROCS = Path(__file__).resolve().parent / "procs"

# --- in-process workflows: one instance whose store each test sets ---------------------

D = duravoke.Duravoke(duravoke.InMemoryKKV())
CALLS: Counter[str] = Counter()
GATE = threading.Event()


@pytest.fixture
def rt(store: duravoke.Store) -> Iterator[None]:
    """The in-process workflows record into ``store`` (every kind in turn)."""
    D.store = store
    CALLS.clear()
    GATE.clear()
    yield
    GATE.set()


@D.duravoke(name="rt.add")
def add(a: int, b: int) -> int:
    CALLS[f"add {a} {b}"] += 1
    return a + b


@D.duravoke(name="rt.pipeline")
def pipeline(n: int) -> int:
    return add(n, 1) + add(n, 2)


@D.duravoke(name="rt.apipeline")
async def apipeline(n: int) -> int:
    return add(n, 1) * 2


@D.duravoke(name="rt.flaky")
def flaky(n: int) -> int:
    CALLS["flaky"] += 1
    if CALLS["flaky"] < 2:
        raise RuntimeError("first time fails")
    return n


@D.duravoke(name="rt.ctrl_c")
def ctrl_c(n: int) -> int:
    CALLS["ctrl_c"] += 1
    if CALLS["ctrl_c"] == 1:
        raise KeyboardInterrupt
    return add(n, n)


@D.duravoke(name="rt.gated")
def gated(n: int) -> int:
    add(n, 0)
    assert GATE.wait(20), "the test never opened the gate"
    return add(n, 100)


def _status(workflow_id: str) -> str:
    return duravoke.get_workflow(workflow_id, D.store).status


# --- start ----------------------------------------------------------------------------


def test_start_records_a_pending_call_once_and_runs_nothing(rt: None) -> None:
    first = duravoke.start(pipeline, 1)
    assert duravoke.start(pipeline, 1) == first
    assert duravoke.start(pipeline, n=1) == first  # the same call, however it is spelled
    assert not CALLS
    info = duravoke.get_workflow(first, D.store)
    assert (info.status, info.entry, info.runs) == ("pending", "rt.pipeline", 0)
    report = duravoke.resume(D.store)
    assert [(o.workflow_id, o.status) for o in report.outcomes] == [(first, "completed")]
    assert CALLS == {"add 1 1": 1, "add 1 2": 1}
    # Calling it directly now replays: it is the same workflow.
    assert pipeline(1) == 5
    assert CALLS == {"add 1 1": 1, "add 1 2": 1}
    assert duravoke.resume(D.store).outcomes == []


def test_start_as_gives_the_workflow_an_id_of_ones_own(rt: None) -> None:
    assert duravoke.start_as("order-42", pipeline, 42) == "order-42"
    duravoke.start_as("order-42", pipeline, 7)  # an id that exists: nothing changes
    report = duravoke.resume(D.store)
    assert [o.status for o in report.outcomes] == ["completed"]
    info = duravoke.get_workflow("order-42", D.store)
    assert info.status == "completed"
    assert {s.function for s in info.steps} == {"rt.pipeline", "rt.add"}
    assert CALLS == {"add 42 1": 1, "add 42 2": 1}


async def test_start_async_and_resume_async(rt: None, anyio_backend: str) -> None:
    workflow_id = await duravoke.start_async(apipeline, 3)
    assert await duravoke.start_as_async("mine", apipeline, 4) == "mine"
    report = await duravoke.resume_async(D.store)
    assert sorted(o.workflow_id for o in report.completed) == sorted([workflow_id, "mine"])
    assert CALLS == {"add 3 1": 1, "add 4 1": 1}


def test_start_refuses_what_a_runner_could_not_find(rt: None) -> None:
    @D.duravoke
    def local(n: int) -> int:
        return n

    with pytest.raises(ValueError, match="top level of a module"):
        duravoke.start(local, 1)
    with pytest.raises(TypeError, match="decorated"):
        duravoke.start(print, 1)
    with pytest.raises(duravoke.SerializationError):
        duravoke.start(pipeline, object())  # type: ignore[arg-type]
    assert duravoke.list_workflows(D.store) == []


def test_two_functions_claiming_one_name_is_an_error_at_decoration() -> None:
    def other(a: int, b: int) -> int:
        return a

    other.__qualname__ = "other"  # as if defined at module level
    with pytest.raises(ValueError, match=r"rt\.add"):
        D.duravoke(name="rt.add")(other)
    registered = lookup("rt.add")
    assert registered is not None
    assert registered.function is add
    # Decorating the same module-level function again replaces its registration.
    again = D.duravoke(name="rt.add")(add.__wrapped__)  # type: ignore[attr-defined]
    registered = lookup("rt.add")
    assert registered is not None
    assert registered.function is again
    register("rt.add", add.__wrapped__, add, D)  # type: ignore[attr-defined]


def test_a_direct_call_records_its_entry_point_and_a_runner_resumes_it(rt: None) -> None:
    with pytest.raises(KeyboardInterrupt):
        ctrl_c(5)
    workflow_id = duravoke.get_workflow(duravoke.list_workflows(D.store)[0].id, D.store).id
    info = duravoke.get_workflow(workflow_id, D.store)
    assert (info.status, info.entry, info.attempts) == ("interrupted", "rt.ctrl_c", 0)
    report = duravoke.resume(D.store)
    assert [o.status for o in report.outcomes] == ["completed"]
    assert CALLS == {"ctrl_c": 2, "add 5 5": 1}


def test_a_named_workflow_block_is_never_resumed_by_a_runner(rt: None) -> None:
    def script() -> None:
        with D.workflow("script-run"):
            add(1, 1)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        script()
    assert _status("script-run") == "failed"
    assert duravoke.resume(D.store).outcomes == []


# --- failures, retries, cancel, retention ---------------------------------------------


def test_a_failed_run_is_retried_with_backoff_then_capped(rt: None) -> None:
    workflow_id = duravoke.start(flaky, 1)
    report = duravoke.resume(D.store, backoff=0)
    assert [o.status for o in report.outcomes] == ["failed"]
    assert "first time fails" in (report.outcomes[0].detail or "")
    assert report.exit_code == 1
    # The first retry is immediate; it succeeds.
    assert [o.status for o in duravoke.resume(D.store).outcomes] == ["completed"]
    assert _status(workflow_id) == "completed"


def test_backoff_delays_the_second_retry_and_the_cap_holds(rt: None) -> None:
    CALLS["flaky"] = -100  # fails every time in this test
    workflow_id = duravoke.start(flaky, 2)
    for _ in range(2):
        assert [o.status for o in duravoke.resume(D.store, backoff=60).outcomes] == ["failed"]
    # Two attempts failed: the next waits 60 s (the policy of the runner that ran the
    # last attempt is recorded with it, and decides), so nothing is due now.
    assert duravoke.resume(D.store, backoff=0).outcomes == []
    assert CALLS["flaky"] == -98
    workflow_id = duravoke.start(flaky, 3)
    for _ in range(5):
        duravoke.resume(D.store, backoff=0, max_attempts=3)
    info = duravoke.get_workflow(workflow_id, D.store)
    assert (info.status, info.attempts) == ("failed", 3)
    assert CALLS["flaky"] == -95
    with pytest.raises(duravoke.WorkflowError):
        duravoke.retry(duravoke.start(pipeline, 0), D.store)  # pending: nothing to retry
    duravoke.retry(workflow_id, D.store)
    info = duravoke.get_workflow(workflow_id, D.store)
    assert (info.status, info.attempts) == ("pending", 0)


def test_cancel_a_pending_workflow_and_a_running_one(rt: None) -> None:
    pending = duravoke.start(pipeline, 9)
    assert duravoke.cancel(pending, D.store) == "cancelled"
    assert _status(pending) == "cancelled"
    assert duravoke.resume(D.store).outcomes == []
    with pytest.raises(duravoke.DuravokeError, match="cancelled"):
        pipeline(9)  # called directly, a cancelled workflow does not run either
    assert not CALLS

    running = duravoke.start(gated, 1)
    result: list[duravoke.Report] = []
    thread = threading.Thread(target=lambda: result.append(duravoke.resume(D.store)))
    thread.start()
    deadline = time.monotonic() + 20
    while not CALLS["add 1 0"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert duravoke.cancel(running, D.store) == "requested"
    time.sleep(0.6)  # the run looks for a cancellation at most every 0.5 s
    GATE.set()
    thread.join(30)
    assert [o.status for o in result[0].outcomes] == ["cancelled"]
    assert _status(running) == "cancelled"
    assert "add 1 100" not in CALLS  # it stopped at its next step
    with pytest.raises(duravoke.WorkflowNotFoundError):
        duravoke.cancel("no-such-workflow", D.store)


@D.duravoke(name="rt.astep")
async def astep(n: int) -> int:
    CALLS[f"astep {n}"] += 1
    return n


@D.duravoke(name="rt.agated")
async def agated(n: int) -> int:
    await astep(n)
    with anyio.fail_after(20):
        while not GATE.is_set():  # noqa: ASYNC110 - a threading.Event, set by the test
            await anyio.sleep(0.01)
    return await astep(n + 100)


async def test_cancel_a_running_async_workflow(rt: None, anyio_backend: str) -> None:
    workflow_id = await duravoke.start_async(agated, 1)
    async with duravoke.Runner(D.store, poll_interval=0.05) as runner:
        with anyio.fail_after(20):
            while not CALLS["astep 1"]:  # noqa: ASYNC110
                await anyio.sleep(0.01)
        assert await anyio.to_thread.run_sync(duravoke.cancel, workflow_id, D.store) == (
            "requested"
        )
        await anyio.sleep(0.6)  # the run looks for a cancellation at most every 0.5 s
        GATE.set()
        with anyio.fail_after(20):
            while not runner.report.outcomes:  # noqa: ASYNC110
                await anyio.sleep(0.01)
    assert [o.status for o in runner.report.outcomes] == ["cancelled"]
    assert _status(workflow_id) == "cancelled"
    assert "astep 101" not in CALLS  # it stopped before its next step


def test_forget_many_by_status_and_age(rt: None) -> None:
    done = [duravoke.start(pipeline, n) for n in range(3)]
    waiting = duravoke.start(pipeline, 99)
    duravoke.cancel(waiting, D.store)
    duravoke.resume(D.store)
    assert duravoke.forget_many(D.store, older_than=timedelta(days=1)) == []
    assert sorted(duravoke.forget_many(D.store, statuses=["completed"])) == sorted(done)
    assert [w.id for w in duravoke.list_workflows(D.store)] == [waiting]
    with pytest.raises(ValueError, match="running"):
        duravoke.forget_many(D.store, statuses=["running"])


# --- the long-lived runner ------------------------------------------------------------


def _wait_for(predicate: Any, what: str, limit: float = 15.0) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


async def test_runner_in_an_async_app_picks_up_new_starts(rt: None, anyio_backend: str) -> None:
    async with duravoke.Runner(D.store, poll_interval=0.1) as runner:
        workflow_id = await duravoke.start_async(pipeline, 11)
        with anyio.fail_after(15):
            while not runner.report.completed:  # noqa: ASYNC110 - polling what a test watches
                await anyio.sleep(0.02)
        other = await duravoke.start_async(apipeline, 12)
        with anyio.fail_after(15):
            while len(runner.report.completed) < 2:  # noqa: ASYNC110
                await anyio.sleep(0.02)
    assert {o.workflow_id for o in runner.report.completed} == {workflow_id, other}
    assert CALLS == {"add 11 1": 1, "add 11 2": 1, "add 12 1": 1}


def test_runner_in_a_thread_for_a_sync_app_and_its_retention(rt: None) -> None:
    runner = duravoke.Runner(D.store, poll_interval=0.1, forget_after=timedelta(0))
    thread = runner.start_thread()
    try:
        workflow_id = duravoke.start(pipeline, 21)
        _wait_for(lambda: runner.report.completed, "the runner to run the workflow")
    finally:
        runner.stop()
        thread.join(15)
    assert not thread.is_alive()
    assert runner.report.completed[0].workflow_id == workflow_id
    # Retention ran at its first pass after the completion, or runs at the next one.
    retention = duravoke.Runner(D.store, poll_interval=0.05, forget_after=timedelta(0))
    thread = retention.start_thread()
    _wait_for(lambda: not duravoke.list_workflows(D.store), "retention to forget it")
    retention.stop()
    thread.join(15)


def test_runner_arguments_are_checked(rt: None) -> None:
    for bad in ({"concurrency": 0}, {"max_attempts": 0}, {"backoff": -1.0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            duravoke.Runner(D.store, **bad)
    with pytest.raises(ValueError, match="poll_interval"):
        duravoke.Runner(D.store, poll_interval=0)


# --- real processes ---------------------------------------------------------------------


def _env(spec: str, log: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra)
    env["JOBS_STORE"] = spec
    env["JOBS_LOG"] = str(log)
    env["PYTHONPATH"] = os.pathsep.join([str(PROCS), str(ROOT), env.get("PYTHONPATH", "")])
    return env


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "duravoke", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _resume(env: dict[str, str], spec: str, *args: str) -> subprocess.CompletedProcess[str]:
    return _cli(env, "resume", "--store", spec, "--import", "runner_jobs", *args)


def _starter(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(PROCS / "runner_starter.py"), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _log(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _steps(lines: list[str]) -> Counter[tuple[int, int]]:
    return Counter((int(p[1]), int(p[2])) for p in (x.split() for x in lines) if p[0] == "step")


def _recorded_steps(spec: str) -> set[tuple[int, int]]:
    store = duravoke.open_store(spec)
    try:
        return {
            (s.args["n"], s.args["i"])
            for listed in duravoke.list_workflows(store)  # listed without their steps
            for s in duravoke.get_workflow(listed.id, store).steps
            if s.function == "jobs.step" and s.status == "completed"
        }
    finally:
        close_store(store)


def _statuses(spec: str) -> Counter[str]:
    store = duravoke.open_store(spec)
    try:
        return Counter(w.status for w in duravoke.list_workflows(store))
    finally:
        close_store(store)


def test_a_killed_process_is_finished_by_resume_without_rerunning_recorded_steps(
    spec: str, tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    log = tmp_path / "log"
    env = _env(spec, log, JOBS_STEP_DELAY="0.005")
    starter = _starter(env, "100", "--run")
    procs.append(starter)
    _wait_for(lambda: len(_log(log)) >= 60 or starter.poll() is not None, "60 steps", 60)
    starter.send_signal(signal.SIGKILL)
    starter.communicate()
    before = _log(log)
    recorded = _recorded_steps(spec)
    assert len(recorded) >= 40  # several steps were recorded, the run was cut short
    result = _resume(env, spec)
    assert result.returncode == 0, result.stdout + result.stderr
    after = _log(log)[len(before) :]
    again = set(_steps(after)) & recorded
    assert not again, f"recorded steps ran again: {sorted(again)[:5]}"
    assert set(_steps(before + after)) == {(n, i) for n in range(100) for i in range(5)}
    assert _statuses(spec) == {"completed": 100}


def test_two_runner_processes_race_and_each_step_runs_once(
    spec: str, tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    log = tmp_path / "log"
    env = _env(spec, log, JOBS_STEP_DELAY="0.002")
    out, _ = finished(_starter(env, "100"))
    assert out.splitlines()[-1] == "started"
    runners = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "duravoke",
                "resume",
                "--store",
                spec,
                "--import",
                "runner_jobs",
                "--json",
                # Each workflow a runner runs holds a Postgres connection (its lock): keep
                # the server, shared with other test sessions, below its connection limit.
                "--concurrency",
                "4",
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    procs.extend(runners)
    reports = [json.loads(finished(r)[0]) for r in runners]
    completed = [o["id"] for r in reports for o in r["outcomes"] if o["status"] == "completed"]
    assert len(completed) == len(set(completed)) == 100  # together, everything, once
    counts = _steps(_log(log))
    assert set(counts) == {(n, i) for n in range(100) for i in range(5)}
    assert set(counts.values()) == {1}, [k for k, v in counts.items() if v > 1][:5]
    assert _statuses(spec) == {"completed": 100}


def test_poison_and_failing_runs_are_capped_and_do_not_block_the_rest(
    tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    spec = str(tmp_path / "store")
    log = tmp_path / "log"
    env = _env(spec, log)
    ids = {}
    for kind, count in (("job", 10), ("failing", 1), ("poison", 1)):
        out, _ = finished(_starter(env, str(count), "--kind", kind))
        ids[kind] = out.splitlines()[:-1]
    codes = []
    for _ in range(12):
        # One at a time, so that the poison run (its id sorts last) kills no other run.
        result = _resume(env, spec, "--max-attempts", "3", "--backoff", "0", "--concurrency", "1")
        codes.append(result.returncode)
        if result.returncode == 0 or "nothing due" in result.stdout:
            break
    lines = _log(log)
    assert sum(x.startswith("failing") for x in lines) == 3
    assert sum(x.startswith("poison") for x in lines) == 3
    assert -signal.SIGKILL in codes
    store = duravoke.open_store(spec)
    for workflow_id in ids["job"]:
        assert duravoke.get_workflow(workflow_id, store).status == "completed"
    failing = duravoke.get_workflow(ids["failing"][0], store)
    poison = duravoke.get_workflow(ids["poison"][0], store)
    assert (failing.status, failing.attempts) == ("failed", 3)
    assert "RuntimeError" in (failing.error or "")
    assert poison.status == "failed"
    assert "gave up after 3 attempts" in (poison.error or "")
    # retry makes it due again.
    assert _cli(env, "retry", "--store", spec, ids["failing"][0]).returncode == 0
    assert duravoke.get_workflow(ids["failing"][0], store).status == "pending"


def test_a_removed_entry_point_is_reported_and_left_intact(
    tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    spec = str(tmp_path / "store")
    env = _env(spec, tmp_path / "log")
    out, _ = finished(_starter(env, "1", "--kind", "removed"))
    workflow_id = out.splitlines()[0]
    result = _resume(env, spec, "--json")
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    [outcome] = report["outcomes"]
    assert outcome["status"] == "skipped"
    assert "jobs.removed" in outcome["detail"]
    assert "runner_old_jobs" in outcome["detail"]
    store = duravoke.open_store(spec)
    info = duravoke.get_workflow(workflow_id, store)
    assert (info.status, info.entry) == ("pending", "jobs.removed")
    # With the module imported again, it runs.
    result = _cli(env, "resume", "--store", spec, "--import", "runner_old_jobs")
    assert result.returncode == 0, result.stdout + result.stderr
    assert duravoke.get_workflow(workflow_id, store).status == "completed"


def test_a_function_of_a_script_cannot_be_resumed_elsewhere_and_the_report_says_why(
    tmp_path: Path,
) -> None:
    script = tmp_path / "script.py"
    script.write_text(
        "import duravoke\n"
        "@duravoke.duravoke\n"
        "def hello(n: int) -> int:\n"
        "    return n\n"
        "print(duravoke.start(hello, 1))\n"
    )
    env = _env(str(tmp_path / "unused"), tmp_path / "log")
    run = subprocess.run(
        [sys.executable, str(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert run.stdout.startswith("__main__.hello:")
    result = _cli(env, "resume")
    assert result.returncode == 1
    assert "__main__" in result.stdout
    assert "move the function into a module" in result.stdout


def test_cli_resume_usage_errors(tmp_path: Path) -> None:
    env = _env(str(tmp_path / "store"), tmp_path / "log")
    assert _cli(env, "resume", "--import", "no_such_module_here").returncode == 2
    assert _cli(env, "resume", "--concurrency", "0").returncode == 2
    result = _cli(env, "resume", "--store", str(tmp_path / "store"))
    assert (result.returncode, result.stdout.strip()) == (0, "resume: nothing due")
    assert _cli(env, "cancel", "--store", str(tmp_path / "store"), "nope").returncode == 1
    assert _cli(env, "forget", "--older-than", "3d").returncode == 2
    assert _cli(env, "forget", "--status", "completed", "--older-than", "x").returncode == 2


def test_cli_forget_by_status_and_age(tmp_path: Path) -> None:
    spec = str(tmp_path / "store")
    env = _env(spec, tmp_path / "log")
    out, _ = finished(_starter(env, "3"))
    ids = out.splitlines()[:-1]
    assert _resume(env, spec).returncode == 0
    assert _cli(env, "cancel", "--store", spec, ids[0]).returncode == 1  # completed already
    result = _cli(
        env, "forget", "--store", spec, "--status", "completed", "--older-than", "1d", "--yes"
    )
    assert (result.returncode, result.stdout.strip()) == (0, "Forgot 0 workflows.")
    result = _cli(env, "forget", "--store", spec, "--status", "completed", "--yes")
    assert (result.returncode, result.stdout.strip()) == (0, "Forgot 3 workflows.")
    assert _statuses(spec) == Counter()
