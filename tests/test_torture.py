"""Crash torture: SIGKILL a long workflow at random moments, re-run it, and check the promise.

A worker (procs/torture_worker.py) runs a 200-step workflow (or 100 async steps started
at once, whose records share fsyncs). We kill it at a random moment after it starts,
run it again, kill it again... ``DURAVOKE_TORTURE_KILLS`` times (50 by default), starting
a fresh workflow whenever one finishes, then let the last one finish. Throughout:

- no run ever meets a CorruptStateError: a crash only ever tears the last record;
- a step whose call had returned (so its record was written) never runs again;
- every run that finishes prints the right sum, and the store holds every step,
  also of the workflows finished before (the last few are kept and checked again).

The seed is printed at the start (``pytest -s``) and in every assertion message;
``DURAVOKE_TORTURE_SEED`` replays a run. Killing stops after
``DURAVOKE_TORTURE_SECONDS`` (default 120, or 0.5 s per kill when more are asked for).
"""

from __future__ import annotations

import dataclasses
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from conftest import close_store

import duravoke

PROCS = Path(__file__).parent / "procs"

KILLS = int(os.environ.get("DURAVOKE_TORTURE_KILLS", "50"))
SECONDS = float(os.environ.get("DURAVOKE_TORTURE_SECONDS", max(120.0, 0.5 * KILLS)))
CORRUPT_EXIT = 4
#: How many finished workflows stay in the store (and are checked again) while we go on.
KEEP = 4


@pytest.fixture
def seed() -> int:
    value = int(os.environ.get("DURAVOKE_TORTURE_SEED", random.randrange(2**32)))
    print(f"\ntorture seed {value} (DURAVOKE_TORTURE_SEED={value} replays it)")
    return value


@dataclasses.dataclass
class Round:
    """One workflow, run (and killed) until a run of it finishes."""

    workflow_id: str
    log: Path
    steps: int

    @property
    def total(self) -> int:
        return sum(i * i for i in range(self.steps))

    def lines(self) -> list[tuple[str, int]]:
        if not self.log.exists():
            return []
        return [(kind, int(i)) for kind, i in map(str.split, self.log.read_text().splitlines())]

    def check_log(self, context: str) -> int:
        """Assert no step ran after its call had returned; the number of at-least-once re-runs."""
        returned: set[int] = set()
        started: set[int] = set()
        reruns = 0
        for kind, i in self.lines():
            if kind == "exec":
                assert i not in returned, f"step {i} ran again after it had returned ({context})"
                reruns += i in started
                started.add(i)
            else:
                assert kind == "returned", (kind, context)
                returned.add(i)
        assert returned == set(range(self.steps)), f"steps never returned ({context})"
        return reruns

    def check_store(self, spec: str, context: str) -> None:
        store = duravoke.open_store(spec)
        try:
            state = store.read(self.workflow_id)
        finally:
            close_store(store)
        assert state is not None, context
        assert state["status"] == "completed", context
        steps = list(state["steps"].values())
        assert all(s["status"] == "completed" for s in steps), context
        decode = duravoke.JSONSerializer().decode
        results = sorted(decode(s["result"]) for s in steps)
        assert results == [i * i for i in range(self.steps)], context


def read_ready(fd: int) -> str:
    """The worker's first line, "ready" (or less if it died first).

    Read from the pipe itself: a buffered readline could swallow the lines after it,
    which communicate() would then never see.
    """
    data = b""
    while len(data) < len(b"ready\n"):
        chunk = os.read(fd, len(b"ready\n") - len(data))
        if not chunk:
            break
        data += chunk
    return data.decode()


def run_worker(
    spec: str, rnd: Round, mode: str, delay: float | None, context: str
) -> tuple[bool, int, float]:
    """Run the worker once, SIGKILLing it ``delay`` s after it is ready (None: never).

    Returns (killed, exec lines this run wrote, seconds from ready to exit).
    """
    before = len(rnd.lines())
    cmd = [sys.executable, str(PROCS / "torture_worker.py"), spec, rnd.workflow_id]
    proc = subprocess.Popen(
        [*cmd, str(rnd.log), str(rnd.steps), *mode.split()],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    try:
        first = read_ready(proc.stdout.fileno())
        ready = time.monotonic()
        if delay is not None and first == "ready\n":
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate(timeout=120)
        span = time.monotonic() - ready
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = first + out
    assert "CORRUPT-STATE" not in out, f"CorruptStateError ({context}):\n{out}"
    assert proc.returncode != CORRUPT_EXIT, f"CorruptStateError ({context}):\n{out}{err}"
    executed = sum(kind == "exec" for kind, _ in rnd.lines()[before:])
    if proc.returncode == -signal.SIGKILL:
        return True, executed, span
    assert proc.returncode == 0, f"worker exited {proc.returncode} ({context}):\n{out}{err}"
    assert out.splitlines()[-1] == f"result {rnd.total}", f"wrong result ({context}):\n{out}"
    return False, executed, span


def torture(spec: str, tmp_path: Path, seed: int, steps: int, modes: list[str]) -> None:
    """Kill, re-run, start a new workflow when one finishes; check every finished one."""
    rng = random.Random(seed)
    tag = uuid.uuid4().hex[:12]
    deadline = time.monotonic() + SECONDS
    kills = mid_run_kills = reruns = 0
    rounds: list[Round] = []
    # How long an uninterrupted run of each mode takes from "ready" to its exit (startup
    # of an event loop is slow); kills are spread over that span whatever the machine.
    spans: dict[str, float] = {}
    while True:
        rnd = Round(f"torture-{tag}-{len(rounds)}", tmp_path / f"log-{len(rounds)}", steps)
        rounds.append(rnd)
        while True:
            mode = rng.choice(modes)
            killing = mode in spans and kills < KILLS and time.monotonic() < deadline
            # Anywhere in the run (loading, steps, compaction), sometimes after its end.
            delay = rng.uniform(0, 1.2 * spans.get(mode, 0))
            context = f"seed {seed}, workflow {len(rounds) - 1}, kill {kills}, mode {mode}"
            killed, executed, span = run_worker(
                spec, rnd, mode, delay if killing else None, context
            )
            if not killed:
                spans.setdefault(mode, span)
                break
            kills += 1
            mid_run_kills += executed > 0
        context = f"seed {seed}, workflow {len(rounds) - 1}"
        reruns += rnd.check_log(context)
        # The workflows finished before are intact too (a PersistedKKV rewrites them all
        # whenever one finishes); older ones are forgotten to keep the store small.
        for old in rounds[-KEEP:]:
            old.check_store(spec, f"{context}, checking {old.workflow_id}")
        if len(rounds) > KEEP:
            store = duravoke.open_store(spec)
            try:
                store.forget(rounds[-KEEP - 1].workflow_id)
            finally:
                close_store(store)
        if set(spans) == set(modes) and not (kills < KILLS and time.monotonic() < deadline):
            break
    print(
        f"{kills} kills ({mid_run_kills} while steps ran), {len(rounds)} workflows finished,"
        f" {reruns} steps re-run because a kill came before their record;"
        f" run spans {', '.join(f'{m} {s * 1000:.0f} ms' for m, s in spans.items())}"
    )
    assert kills >= min(KILLS, 1), f"no kill happened (seed {seed})"
    if KILLS >= 20:  # with so many kills, some surely land in the middle of the steps
        assert mid_run_kills > 0, f"no kill landed while steps were running (seed {seed})"


@pytest.mark.slow
def test_sigkill_sync_workflow(spec: str, tmp_path: Path, seed: int) -> None:
    torture(spec, tmp_path, seed, steps=200, modes=["sync"])


@pytest.mark.slow
def test_sigkill_during_group_commit(spec: str, tmp_path: Path, seed: int) -> None:
    torture(spec, tmp_path, seed, steps=100, modes=["asyncio", "trio"])


# A kill between creating the journal and writing its header, or in the middle of the
# header, is a window too narrow for random kills to hit often: make it happen.
@pytest.mark.parametrize("cut", ["empty", "torn-header", "header-only"])
def test_kill_while_creating_the_journal(spec: str, tmp_path: Path, cut: str) -> None:
    if spec.startswith(("postgresql://", "postgres://")):
        pytest.skip("a Postgres store has no journal file")
    rnd = Round(f"torture-{uuid.uuid4().hex[:12]}", tmp_path / "log", 20)
    # A real SIGKILL at a known point (after step 5 returned) leaves a journal...
    assert run_worker(spec, rnd, "sync 5", None, cut)[0]
    folder = Path(f"{spec}.d") if spec.endswith(".json") else Path(spec)
    journals = list(folder.glob("*.journal"))
    assert len(journals) == 1, journals
    # ...which we cut back to what a kill while creating it would have left,
    data = journals[0].read_bytes()
    header = data.index(b"\n") + 1
    journals[0].write_bytes(data[: {"empty": 0, "torn-header": header // 2}.get(cut, header)])
    # then the next run is killed too (after step 10), and the one after that finishes.
    assert run_worker(spec, rnd, "sync 10", None, cut)[0]
    assert not run_worker(spec, rnd, "sync", None, cut)[0]
    rnd.check_store(spec, cut)
