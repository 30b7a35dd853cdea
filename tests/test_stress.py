"""Many processes and threads on one store: no update lost, no completed step run twice.

8 processes x 4 threads run 200 workflows. Each workflow is entered by several threads
of several processes (all 32, but for a PersistedKKV) which tend to arrive together, so they
wait for each other: the first one in runs its steps, every later one replays them.
"""

from __future__ import annotations

import collections
import os
import random
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from conftest import close_store

import duravoke

PROCS = Path(__file__).parent / "procs"

PROCESSES = 8
THREADS = 4
WORKFLOWS = 200
#: How many of the 32 threads enter each workflow: all of them, on every kind of store.
ENTRANTS = dict.fromkeys(["directory", "kkv", "postgres"], PROCESSES * THREADS)


def steps_of(k: int) -> int:
    """How many steps workflow ``k`` has; the same rule as in procs/stress_worker.py."""
    return 5 + k % 6


@pytest.mark.slow
def test_processes_and_threads_share_one_store(spec_kind: str, spec: str, tmp_path: Path) -> None:
    spec_text = spec
    entrants = ENTRANTS[spec_kind]
    seed = int(os.environ.get("DURAVOKE_STRESS_SEED", random.randrange(2**32)))
    print(f"stress seed {seed}")
    prefix = f"stress-{uuid.uuid4().hex[:12]}"
    logs = [tmp_path / f"exec-{p}.log" for p in range(PROCESSES)]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(PROCS / "stress_worker.py"),
                spec_text,
                str(log),
                prefix,
                *map(str, (WORKFLOWS, PROCESSES, THREADS, entrants, seed, p)),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for p, log in enumerate(logs)
    ]
    deadline = time.monotonic() + 300
    failures = []
    waits = 0
    for p, proc in enumerate(procs):
        try:
            out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for other in procs:
                other.kill()
            pytest.fail(f"stress workers hung (seed {seed})")
        if proc.returncode != 0:
            failures.append(f"worker {p} exited {proc.returncode}:\n{out}{err}")
        else:
            waits += int(out.split()[-1])
    assert not failures, f"seed {seed}\n" + "\n".join(failures)
    print(f"{waits} entries found their workflow busy and waited")
    assert waits > 0, f"no thread ever waited for another: the test did not contend (seed {seed})"

    execs = collections.Counter(
        line for log in logs if log.exists() for line in log.read_text().splitlines()
    )
    expected = {f"exec {prefix}-{k} {i}" for k in range(WORKFLOWS) for i in range(steps_of(k))}
    twice = {line: n for line, n in execs.items() if n != 1}
    assert not twice, f"steps ran more than once (seed {seed}): {sorted(twice.items())[:10]}"
    assert set(execs) == expected, (
        f"seed {seed}: missing {sorted(expected - set(execs))[:10]},"
        f" unexpected {sorted(set(execs) - expected)[:10]}"
    )

    store = duravoke.open_store(spec_text)
    try:
        check_states(store, prefix, entrants, seed)
    finally:
        close_store(store)


def check_states(store: duravoke.Store, prefix: str, entrants: int, seed: int) -> None:
    """Every workflow completed, with its shared steps and every entrant's own step."""
    decode = duravoke.JSONSerializer().decode
    for k in range(WORKFLOWS):
        workflow_id = f"{prefix}-{k}"
        state = store.read(workflow_id)
        assert state is not None, f"{workflow_id} has no state (seed {seed})"
        assert state["status"] == "completed", (workflow_id, state["status"], seed)
        steps = state["steps"].values()
        assert all(s["status"] == "completed" for s in steps), (workflow_id, seed)
        results = [decode(s["result"]) for s in steps]
        visits = sorted(r[1] for r in results if r[0] == "visit")
        shared = sorted(r for r in results if r[0] != "visit")
        assert shared == [[workflow_id, i] for i in range(steps_of(k))], (workflow_id, seed)
        # Every entrant's own step is there: no run's records were lost.
        assert len(visits) == len(set(visits)) == entrants, (workflow_id, visits, seed)
