"""Many workflows at once: shared durable writes, and bounded Postgres connections.

A web app or worker runs hundreds of workflows in one process. Their records share
writes (group commit across workflows), and the Postgres store uses a fixed number of
connections however many run, so a server with ``max_connections=100`` serves 8
processes of 200 workflows each.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from conftest import POSTGRES_DSN, counting_fsyncs, make_store, postgres_schema

import duravoke
from duravoke._postgres import POOL_SIZE

pytestmark = pytest.mark.anyio

STEPS = 3


def define(d: duravoke.Duravoke, calls: list[tuple[str, int]]) -> Any:
    @d.duravoke(name="many.step")
    async def step(workflow_id: str, i: int) -> list[object]:
        calls.append((workflow_id, i))
        await anyio.lowlevel.checkpoint()
        return [workflow_id, i]

    return step


async def run_many(d: duravoke.Duravoke, count: int, calls: list[tuple[str, int]]) -> None:
    step = define(d, calls)

    async def one(k: int) -> None:
        async with d.workflow(f"many-{k}"):
            for i in range(STEPS):
                assert await step(f"many-{k}", i) == [f"many-{k}", i]

    async with anyio.create_task_group() as tg:
        for k in range(count):
            tg.start_soon(one, k)


@pytest.mark.parametrize("kind", ["directory", "kkv"])
async def test_records_of_many_workflows_share_fsyncs(kind: str, tmp_path: Path) -> None:
    store = make_store(kind, tmp_path)
    d = duravoke.Duravoke(store)
    calls: list[tuple[str, int]] = []
    with counting_fsyncs() as counted:
        await run_many(d, 200, calls)
    fsyncs = len(counted)
    steps = 200 * STEPS
    assert len(calls) == steps
    # One fsync per step would be 600 (and each workflow's start and end more): batches
    # of different workflows share them.
    assert fsyncs < steps / 4, f"{fsyncs} fsyncs for {steps} steps"
    fresh = make_store(kind, tmp_path)
    assert len(fresh.workflow_ids()) == 200
    for k in (0, 99, 199):
        state = fresh.read(f"many-{k}")
        assert state is not None
        assert state["status"] == "completed"
        assert len(state["steps"]) == STEPS


def _server_sessions(schema_marker: str) -> int:
    import psycopg

    with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
            [schema_marker],
        ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.skipif(not POSTGRES_DSN, reason="DURAVOKE_TEST_POSTGRES_DSN is not set")
async def test_a_thousand_workflows_on_a_bounded_number_of_connections(tmp_path: Path) -> None:
    import psycopg

    marker = f"duravoke-many-{os.getpid()}"
    # This store's connections carry their own application_name, so the server can count them.
    dsn = psycopg.conninfo.make_conninfo(POSTGRES_DSN, application_name=marker)
    store = duravoke.PostgresStore(dsn, schema=postgres_schema(tmp_path))
    d = duravoke.Duravoke(store)
    calls: list[tuple[str, int]] = []
    peak = 0
    done = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _server_sessions(marker))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        await run_many(d, 1000, calls)
    finally:
        done.set()
        watcher.join()
    assert len(calls) == 1000 * STEPS
    assert 1 <= peak <= POOL_SIZE + 1, peak
    assert len(store.workflow_ids()) == 1000
    store.close()


MANY_PROCESSES = textwrap.dedent(
    """
    import sys
    import anyio
    import duravoke

    dsn, prefix, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    d = duravoke.Duravoke(duravoke.PostgresStore(dsn))

    @d.duravoke(name="many.step")
    async def step(workflow_id, i):
        await anyio.sleep(0.001)
        return [workflow_id, i]

    async def one(k):
        async with d.workflow(f"{prefix}-{k}"):
            for i in range(3):
                await step(f"{prefix}-{k}", i)

    async def main():
        async with anyio.create_task_group() as tg:
            for k in range(count):
                tg.start_soon(one, k)

    anyio.run(main)
    print("done", flush=True)
    """
)


@pytest.mark.skipif(not POSTGRES_DSN, reason="DURAVOKE_TEST_POSTGRES_DSN is not set")
def test_eight_processes_of_200_workflows_fit_the_server(tmp_path: Path) -> None:
    import psycopg

    with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
        row = conn.execute("SHOW max_connections").fetchone()
    assert row is not None
    store = make_store("postgres", tmp_path)
    assert isinstance(store, duravoke.PostgresStore)
    store.workflow_ids()  # creates the schema once
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", MANY_PROCESSES, store.location, f"p{n}", "200"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(8)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
        assert out.strip() == "done"
    # 8 x 200 workflows needed at most 8 x (POOL_SIZE + 1) connections, well under the
    # server's limit (100 here), where one connection per workflow needed 1,600.
    assert int(row[0]) > 8 * (POOL_SIZE + 1)
    ids = store.workflow_ids()
    assert len(ids) == 1600
    for wid in (ids[0], ids[-1]):
        state = store.read(wid)
        assert state is not None
        assert (state["status"], len(state["steps"])) == ("completed", 3)


KILL_WORKER = textwrap.dedent(
    """
    import os, sys
    import anyio
    import duravoke

    spec, log, workflows, steps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    d = duravoke.Duravoke(duravoke.open_store(spec))
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    @d.duravoke(name="batch.step")
    async def step(k, i):
        os.write(fd, f"exec {k} {i}\\n".encode())
        await anyio.sleep(0)
        return [k, i]

    async def one(k):
        async with d.workflow(f"batch-{k}"):
            for i in range(steps):
                await step(k, i)
                os.write(fd, f"done {k} {i}\\n".encode())

    async def main():
        async with anyio.create_task_group() as tg:
            for k in range(workflows):
                tg.start_soon(one, k)

    anyio.run(main)
    print("all done", flush=True)
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["directory", "kkv", *(["postgres"] if POSTGRES_DSN else [])])
def test_sigkill_in_the_middle_of_cross_workflow_batches(kind: str, tmp_path: Path) -> None:
    # 50 workflows write their steps together: most frames (or COMMITs) hold records of
    # many workflows. Kill the process at random moments, run again until all finished:
    # no step whose call returned ever runs again, and every workflow completes.
    seed = random.SystemRandom().randrange(2**32)
    rng = random.Random(seed)
    store = make_store(kind, tmp_path)
    spec = store.location
    store.close()
    log = tmp_path / "exec.log"
    kills = 0
    deadline = time.monotonic() + 120
    for _ in range(40):
        proc = subprocess.Popen(
            [sys.executable, "-c", KILL_WORKER, spec, str(log), "50", "20"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        if kills < 3:
            # Kill it once it has made a random amount of progress: surely mid-run, with
            # batches of many workflows in flight, however fast the machine is.
            lines = len(log.read_bytes().splitlines()) if log.exists() else 0
            target = lines + rng.randint(20, 400)
            give_up = time.monotonic() + 30
            while proc.poll() is None and time.monotonic() < give_up:
                if log.exists() and len(log.read_bytes().splitlines()) >= target:
                    break
                time.sleep(0.002)
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
                kills += 1
                continue
        out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
        assert proc.returncode == 0, f"seed {seed}: {err}"
        assert "all done" in out
        break
    else:
        pytest.fail(f"seed {seed}: never finished after {kills} kills")
    assert time.monotonic() < deadline, f"seed {seed}: too slow"
    done: set[tuple[str, str]] = set()
    for line in log.read_text().splitlines():
        kind_, k, i = line.split()
        # A kill can cut the line "done" after a step returned; never an "exec" after it.
        assert not (kind_ == "exec" and (k, i) in done), f"seed {seed}: step {k} {i} ran again"
        if kind_ == "done":
            done.add((k, i))
    assert len(done) == 50 * 20, f"seed {seed}"
    assert kills == 3, f"seed {seed}: a run finished before its kill"
    fresh = make_store(kind, tmp_path)
    for n in (0, 25, 49):
        state = fresh.read(f"batch-{n}")
        assert state is not None
        assert (state["status"], len(state["steps"])) == ("completed", 20), f"seed {seed}"
    print(f"seed {seed}: {kills} kills")


# --- opening many workflows at once --------------------------------------------------------


def _batch_sizes(store: duravoke.Store) -> list[int]:
    """Record how many workflows each lock attempt of ``store`` asks for. The first one
    takes 0.2 s, as a slow disk or server would: the other tasks queue meanwhile."""
    sizes: list[int] = []
    try_lock_many = store.try_lock_many

    def counting(workflow_ids: list[str]) -> list[duravoke.Lease | None]:
        if not sizes:
            time.sleep(0.2)
        sizes.append(len(workflow_ids))
        return try_lock_many(workflow_ids)

    store.try_lock_many = counting  # type: ignore[method-assign]
    return sizes


async def test_workflows_entered_together_are_opened_together(store: duravoke.Store) -> None:
    # 200 tasks enter their workflows at the same moment: the store's opener thread opens
    # whatever is queued in one go (one lock attempt, one load, one look for
    # cancellations), not one thread hand-off and round trip per workflow.
    sizes = _batch_sizes(store)
    calls: list[tuple[str, int]] = []
    with anyio.fail_after(120):
        await run_many(duravoke.Duravoke(store), 200, calls)
    assert len(calls) == 200 * STEPS
    assert sum(sizes) == 200  # each opened once: none was found busy
    assert len(sizes) <= 5, sizes  # those queued during the first were opened together


async def test_a_damaged_workflow_opened_with_others_fails_alone(tmp_path: Path) -> None:
    store = make_store("directory", tmp_path)
    d = duravoke.Duravoke(store)
    calls: list[tuple[str, int]] = []
    await run_many(d, 20, calls)
    store.checkpoint()
    (damaged,) = (tmp_path / "store").glob("many-7.*.json")
    damaged.write_text('{"format": "duravoke-state", "workflows": {')  # cut short
    step = define(d, calls)
    outcomes: dict[int, str] = {}

    async def one(k: int) -> None:
        try:
            async with d.workflow(f"many-{k}"):
                for i in range(STEPS + 1):
                    await step(f"many-{k}", i)
            outcomes[k] = "done"
        except duravoke.CorruptStateError as exc:
            outcomes[k] = f"corrupt: {exc}"

    calls.clear()
    async with anyio.create_task_group() as tg:
        for k in range(20):
            tg.start_soon(one, k)
    assert outcomes.pop(7).startswith("corrupt"), "the damaged workflow must say so"
    assert set(outcomes.values()) == {"done"}  # the others were opened and ran
    assert sorted(calls) == sorted((f"many-{k}", STEPS) for k in range(20) if k != 7)
    lease = store.try_lock("many-7")  # its lock was released
    assert lease is not None
    lease.close()
    assert damaged.read_text() == '{"format": "duravoke-state", "workflows": {'  # untouched


async def test_cancelled_while_being_opened_leaves_no_lock_behind(store: duravoke.Store) -> None:
    # Cancelled while the opener thread takes their locks: every lock taken is entered
    # and released on the way out, or released by the opener, never left held.
    d = duravoke.Duravoke(store)
    entered: list[int] = []

    async def one(k: int) -> None:
        async with d.workflow(f"cancel-{k}"):
            entered.append(k)
            await anyio.sleep_forever()

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for k in range(100):
                tg.start_soon(one, k)
            await anyio.lowlevel.checkpoint()  # each task queued to be opened
            tg.cancel_scope.cancel()
    for k in range(100):
        lease = store.try_lock(f"cancel-{k}")
        assert lease is not None, f"cancel-{k} is still locked ({len(entered)} entered)"
        lease.close()
