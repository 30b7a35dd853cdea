"""The Postgres store against a real server: schema, replay, locks, group commit, crashes.

The server comes from ``DURAVOKE_TEST_POSTGRES_DSN`` (e.g.
``postgresql://postgres@127.0.0.1:5432/test``); without it the tests that need one are
skipped, visibly. Every store here lives in a schema of its own, which conftest drops at
the end of the session. The whole behaviour suite also runs against Postgres through the
``store`` fixture.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import POSTGRES_DSN, finished, make_store

import duravoke

psycopg = pytest.importorskip("psycopg")

from duravoke._postgres import SCHEMA_VERSION, _lock_key  # noqa: E402

needs_server = pytest.mark.skipif(
    not POSTGRES_DSN,
    reason="DURAVOKE_TEST_POSTGRES_DSN is not set (e.g. postgresql://postgres@127.0.0.1:5432/test):"
    " the Postgres store is not tested",
)


@pytest.fixture
def pg(tmp_path: Path) -> duravoke.PostgresStore:
    """A fresh Postgres store in a schema of its own."""
    store = make_store("postgres", tmp_path)
    assert isinstance(store, duravoke.PostgresStore)
    return store


@pytest.fixture
def db() -> Iterator[Any]:
    """A plain connection, to look at the tables as a person with psql would."""
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
        yield conn


def spawn(procs: list[subprocess.Popen[str]], code: str, *args: object) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-c", textwrap.dedent(code), *map(str, args)]
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parent,
    )
    procs.append(proc)
    return proc


def read_line(proc: subprocess.Popen[str], timeout: float = 60) -> str:
    """The next line ``proc`` prints; fail if it exits or stays silent too long."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline() if ready else ""
    if not line:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"the child printed nothing (exit {proc.returncode}); stderr:\n{err}")
    return line.strip()


def finish(proc: subprocess.Popen[str], expect: int = 0) -> str:
    """Wait (bounded) for ``proc`` to exit with ``expect``; its stdout."""
    return finished(proc, expect)[0]


def define_steps(d: duravoke.Duravoke, calls: list[Any]) -> Any:
    @d.duravoke(name="square")
    def square(x: int) -> int:
        calls.append(x)
        return x * x

    return square


# ------------------------------------------------------------------------ without a server


def test_location_masks_the_password_and_names_the_schema() -> None:
    # Constructing a store does not connect: these need no server.
    store = duravoke.PostgresStore("postgresql://app:s3cret@db.example:5433/prod")
    assert store.location == "postgresql://app:***@db.example:5433/prod"
    assert store.schema == "duravoke"
    assert "s3cret" not in repr(store)
    query = duravoke.PostgresStore("postgresql://app@db/prod?password=s3cret&sslmode=require")
    assert query.location == "postgresql://app@db/prod?password=***&sslmode=require"
    keywords = duravoke.PostgresStore("host=db password=s3cret dbname=prod", schema="t1")
    assert keywords.location == "host=db password=*** dbname=prod (schema 't1')"

    tenant = duravoke.PostgresStore("postgresql://app@db/prod?schema=tenant_a")
    assert tenant.schema == "tenant_a"
    assert tenant.location == "postgresql://app@db/prod?schema=tenant_a"
    # The location opens the same store again, as a file store's path does.
    again = duravoke.open_store(tenant.location)
    assert isinstance(again, duravoke.PostgresStore)
    assert (again.schema, again.location) == ("tenant_a", tenant.location)
    odd = duravoke.PostgresStore("postgresql://app@db/prod", schema="a b&c")
    assert duravoke.PostgresStore(odd.location).schema == "a b&c"


def test_bad_arguments_are_refused_without_echoing_the_password() -> None:
    with pytest.raises(ValueError, match="differs"):
        duravoke.PostgresStore("postgresql://db/x?schema=a", schema="b")
    with pytest.raises(ValueError, match="durability"):
        duravoke.PostgresStore("postgresql://db/x", durability="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="schema"):
        duravoke.PostgresStore("postgresql://db/x", schema="x" * 64)
    with pytest.raises(ValueError, match="not a Postgres DSN") as info:
        duravoke.PostgresStore("postgresql://u:s3cret@db/x?nonsense=1")
    assert "s3cret" not in str(info.value)


def test_an_unreachable_server_is_a_store_error_naming_it() -> None:
    store = duravoke.PostgresStore("postgresql://postgres:pw@127.0.0.1:1/test")
    with pytest.raises(duravoke.StoreError, match=r"127\.0\.0\.1:1") as info:
        store.workflow_ids()
    assert "pw" not in str(info.value)
    assert info.value.path == store.location
    with pytest.raises(duravoke.StoreError), duravoke.Duravoke(store).workflow("w"):
        pass


def test_psycopg_is_imported_only_for_the_postgres_store(tmp_path: Path) -> None:
    code = """
        import sys
        import duravoke
        assert "psycopg" not in sys.modules, "import duravoke imported psycopg"
        duravoke.Duravoke(duravoke.open_store(sys.argv[1]))
        assert "psycopg" not in sys.modules, "a file store imported psycopg"
        sys.modules["psycopg"] = None  # as if it were not installed
        from duravoke import *  # works without psycopg
        try:
            PostgresStore("postgresql://127.0.0.1/test")
        except ImportError as exc:
            print(exc)
    """
    cmd = [sys.executable, "-c", textwrap.dedent(code), str(tmp_path / "store")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "install duravoke[postgres]" in done.stdout


# ---------------------------------------------------------------------------- the schema


@needs_server
def test_the_schema_is_created_on_first_use_with_its_version(
    pg: duravoke.PostgresStore, db: Any
) -> None:
    def tables() -> list[str]:
        rows = db.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
            [pg.schema],
        )
        return sorted(r[0] for r in rows)

    assert tables() == []
    assert pg.workflow_ids() == []
    assert tables() == ["messages", "meta", "steps", "workflows"]
    meta = f'"{pg.schema}".meta'
    assert db.execute(f"SELECT version FROM {meta}").fetchall() == [(SCHEMA_VERSION,)]
    # Another store (another machine) on the same schema uses what is there.
    other = duravoke.PostgresStore(POSTGRES_DSN, schema=pg.schema)
    assert other.workflow_ids() == []
    other.close()
    assert db.execute(f"SELECT version FROM {meta}").fetchall() == [(SCHEMA_VERSION,)]


@needs_server
def test_an_unknown_layout_version_is_refused_and_left_alone(
    pg: duravoke.PostgresStore, db: Any
) -> None:
    d = duravoke.Duravoke(pg)
    define_steps(d, [])(3)
    db.execute(f'UPDATE "{pg.schema}".meta SET version = 2')
    newer = duravoke.PostgresStore(POSTGRES_DSN, schema=pg.schema)
    with pytest.raises(duravoke.CorruptStateError, match="version 2") as info:
        newer.workflow_ids()
    assert "Upgrade duravoke" in str(info.value)
    assert info.value.path == newer.location
    with pytest.raises(duravoke.CorruptStateError):
        newer.try_lock("w")
    assert db.execute(f'SELECT version FROM "{pg.schema}".meta').fetchall() == [(2,)]
    assert db.execute(f'SELECT count(*) FROM "{pg.schema}".steps').fetchone() == (1,)


@needs_server
def test_concurrent_first_use_by_several_processes(
    pg: duravoke.PostgresStore, tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    code = """
        import os, sys, threading, time
        import duravoke
        location, folder, n = sys.argv[1], sys.argv[2], sys.argv[3]
        stores = [duravoke.open_store(location) for _ in range(4)]
        open(os.path.join(folder, "ready-" + n), "w").close()
        deadline = time.monotonic() + 60
        while not os.path.exists(os.path.join(folder, "go")) and time.monotonic() < deadline:
            time.sleep(0.001)
        # Four first uses per process, each on its own connection, all at once.
        errors = []
        def first_use(store):
            try:
                store.workflow_ids()
            except Exception as exc:
                errors.append(repr(exc))
        threads = [threading.Thread(target=first_use, args=(s,)) for s in stores]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            sys.exit(repr(errors))
        d = duravoke.Duravoke(stores[0])
        @d.duravoke
        def hello(n): return "hello " + n
        with d.workflow("first-use-" + n):
            print(hello(n))
    """
    children = [spawn(procs, code, pg.location, tmp_path, n) for n in range(4)]
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("ready-*"))) < len(children) and time.monotonic() < deadline:
        time.sleep(0.01)
    (tmp_path / "go").touch()  # all at once, onto a schema that does not exist yet
    outputs = [finish(child) for child in children]
    assert outputs == [f"hello {n}\n" for n in range(4)]
    assert pg.workflow_ids() == [f"first-use-{n}" for n in range(4)]


# ------------------------------------------------------------------- recording and replay


@needs_server
def test_record_and_replay_across_reopen(
    pg: duravoke.PostgresStore, tmp_path: Path, db: Any
) -> None:
    calls: list[Any] = []
    first = duravoke.Duravoke(pg)
    square = define_steps(first, calls)
    with first.workflow("w"):
        assert [square(x) for x in range(5)] == [0, 1, 4, 9, 16]
    # A new process would build a new store from the same DSN; an empty run first.
    with duravoke.Duravoke(make_store("postgres", tmp_path)).workflow("w"):
        pass
    reopened = duravoke.Duravoke(make_store("postgres", tmp_path))
    square = define_steps(reopened, calls)
    with reopened.workflow("w"):
        assert [square(x) for x in range(6)] == [0, 1, 4, 9, 16, 25]
    assert calls == [0, 1, 2, 3, 4, 5], "a recorded step ran again"

    state = reopened.store.read("w")
    assert state is not None
    assert (state["status"], state["error"]) == ("completed", None)
    assert [s["args"]["x"] for s in state["steps"].values()] == [0, 1, 2, 3, 4, 5]
    # The tables read as a person would expect: status in the workflow row, one row per
    # step in the order they first ran, and no copy of the steps in the workflow row.
    s = f'"{pg.schema}"'
    row = db.execute(f"SELECT state, updated FROM {s}.workflows WHERE id = 'w'").fetchone()
    assert row[0]["status"] == "completed"
    assert "steps" not in row[0]
    assert row[1] is not None
    rows = db.execute(
        f"SELECT record->'args'->>'x', record->>'status' FROM {s}.steps"
        " WHERE workflow_id = 'w' ORDER BY seq"
    ).fetchall()
    assert rows == [(str(x), "completed") for x in range(6)]


@needs_server
def test_a_failed_step_is_rewritten_in_place_when_it_succeeds(pg: duravoke.PostgresStore) -> None:
    d = duravoke.Duravoke(pg)
    attempts: list[int] = []

    @d.duravoke(name="flaky")
    def flaky(x: int) -> int:
        attempts.append(x)
        if len(attempts) == 2:
            raise RuntimeError("flaky")
        return x

    square = define_steps(d, [])

    def first_run() -> None:
        with d.workflow("w"):
            flaky(1)
            flaky(2)

    with pytest.raises(RuntimeError):
        first_run()
    with d.workflow("w"):
        flaky(1)
        square(7)
        flaky(2)
    state = pg.read("w")
    assert state is not None
    steps = list(state["steps"].values())
    # The retried step keeps its place (its first seq); its record is the new one.
    assert [(s["fn"], s["status"]) for s in steps] == [
        ("flaky", "completed"),
        ("flaky", "completed"),
        ("square", "completed"),
    ]
    assert attempts == [1, 2, 2]
    assert (state["status"], state["runs"]) == ("completed", 2)


@needs_server
def test_odd_ids_and_values_round_trip(pg: duravoke.PostgresStore, db: Any) -> None:
    d = duravoke.Duravoke(pg)

    @d.duravoke(name="echo")
    def echo(value: Any) -> Any:
        return value

    # Postgres text cannot hold NUL; key order and the spelling of numbers are part of
    # a result (jsonb would lose both): all must still come back as they were.
    ids = ["plain", "nul\x00id", "%00", "per%cent", "emoji 🎉", "../../etc/passwd", "x" * 10_000]
    values = [
        "nul \x00 inside",
        "a literal \\u0000",
        {"k\x00": [b"\x00\xff", ("t",)]},
        {"b": 1, "a": 2, "ab": 3},
        [1e16, -0.0, 1.0, 0.1, 10**30],
    ]
    for wid in ids:
        with d.workflow(wid):
            assert [echo(v) for v in values] == values
    assert pg.workflow_ids() == sorted(ids)
    for wid in ids:
        with d.workflow(wid):
            replayed = [echo(v) for v in values]
        assert repr(replayed) == repr(values), wid
        assert list(replayed[3]) == ["b", "a", "ab"]
        state = pg.read(wid)
        assert state is not None
        assert state["status"] == "completed", wid
        assert len(state["steps"]) == len(values)
    # Rows are plain json, queryable by people (except where a string holds NUL).
    s = f'"{pg.schema}"'
    done = db.execute(f"SELECT count(*) FROM {s}.workflows WHERE state->>'status' = 'completed'")
    assert done.fetchone() == (len(ids),)
    texts = db.execute(
        f"SELECT record::text FROM {s}.steps WHERE workflow_id = 'plain' ORDER BY seq"
    ).fetchall()
    assert "1e+16,-0.0,1.0,0.1," in texts[4][0], "the stored text is not as written"


@needs_server
def test_forget_read_and_workflow_ids(pg: duravoke.PostgresStore) -> None:
    assert pg.workflow_ids() == []
    assert pg.read("nothing") is None
    d = duravoke.Duravoke(pg)
    square = define_steps(d, [])
    for wid in ("b", "a", "c"):
        with d.workflow(wid):
            square(len(wid))
    assert pg.workflow_ids() == ["a", "b", "c"]
    pg.forget("b")
    assert pg.read("b") is None
    assert pg.workflow_ids() == ["a", "c"]
    with pytest.raises(duravoke.WorkflowNotFoundError) as info:
        pg.forget("b")
    assert info.value.workflow_id == "b"
    lease = pg.try_lock("a")
    assert lease is not None
    try:
        with pytest.raises(duravoke.WorkflowBusyError):
            pg.forget("a")
        # Reading needs no lock.
        state = pg.read("a")
        assert state is not None
        assert state["status"] == "completed"
    finally:
        lease.close()
    pg.forget("a")
    assert pg.workflow_ids() == ["c"]


@needs_server
def test_a_damaged_row_raises_corrupt_state_and_other_workflows_work(
    pg: duravoke.PostgresStore, db: Any
) -> None:
    d = duravoke.Duravoke(pg)
    square = define_steps(d, [])
    for wid in ("bad", "good"):
        with d.workflow(wid):
            square(2)
    db.execute(f"""UPDATE "{pg.schema}".steps SET record = '"oops"' WHERE workflow_id = 'bad'""")
    with pytest.raises(duravoke.CorruptStateError, match="'bad'"):
        pg.read("bad")
    with pytest.raises(duravoke.CorruptStateError), d.workflow("bad"):
        pass
    with d.workflow("good"):
        assert square(2) == 4
    # The damaged workflow was not locked for good by the failed attempt.
    lease = pg.try_lock("bad")
    assert lease is not None
    lease.close()


# ------------------------------------------------------------------------------- locking


@needs_server
def test_workflow_busy_across_processes(
    pg: duravoke.PostgresStore, procs: list[subprocess.Popen[str]]
) -> None:
    code = """
        import sys
        import duravoke
        with duravoke.Duravoke(duravoke.open_store(sys.argv[1])).workflow(sys.argv[2]):
            print("locked", flush=True)
            sys.stdin.readline()
        print("released", flush=True)
    """
    child = spawn(procs, code, pg.location, "shared")
    assert read_line(child) == "locked"
    d = duravoke.Duravoke(pg)
    assert pg.try_lock("shared") is None
    with pytest.raises(duravoke.WorkflowBusyError) as info, d.workflow("shared", timeout=0.2):
        pytest.fail("entered a workflow another process holds")
    assert info.value.workflow_id == "shared"
    with d.workflow("another"):  # other workflows are free meanwhile
        pass
    assert child.stdin is not None
    child.stdin.write("\n")
    child.stdin.flush()
    assert read_line(child) == "released"
    finish(child)
    with d.workflow("shared", timeout=30):
        pass
    assert pg.read("shared") is not None


@needs_server
def test_the_same_id_in_two_schemas_does_not_collide(tmp_path: Path) -> None:
    one, two = make_store("postgres", tmp_path / "1"), make_store("postgres", tmp_path / "2")
    first = one.try_lock("same")
    assert first is not None
    try:
        second = two.try_lock("same")
        assert second is not None
        second.close()
        assert one.try_lock("same") is None
    finally:
        first.close()


CRASHER = """
    import sys, time
    import duravoke
    location, log, kill_at, durability = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    d = duravoke.Duravoke(duravoke.PostgresStore(location, durability=durability))

    @d.duravoke(name="step")
    def step(i):
        with open(log, "a") as f:
            f.write(f"{i}\\n")
        if i == kill_at:
            print("ready", flush=True)
            time.sleep(120)
        return i * i

    with d.workflow("crash", timeout=30):
        print(sum(step(i) for i in range(10)), flush=True)
"""


@needs_server
@pytest.mark.parametrize("durability", ["fsync", "flush"])
def test_sigkill_mid_workflow_frees_the_lock_and_the_rerun_resumes(
    pg: duravoke.PostgresStore,
    tmp_path: Path,
    procs: list[subprocess.Popen[str]],
    durability: str,
) -> None:
    log = tmp_path / "log"
    victim = spawn(procs, CRASHER, pg.location, log, 5, durability)
    assert read_line(victim) == "ready"
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(30)
    # The server ends the dead process's session and its lock: the re-run gets in
    # (it waits at most 30 s, then fails with WorkflowBusyError).
    rerun = spawn(procs, CRASHER, pg.location, log, -1, durability)
    assert finish(rerun) == f"{sum(i * i for i in range(10))}\n"
    runs = Counter(int(line) for line in log.read_text().split())
    # Steps 0-4 completed before the kill; 5 was running when it came, so it ran again.
    assert runs == Counter({**dict.fromkeys(range(10), 1), 5: 2})
    state = pg.read("crash")
    assert state is not None
    assert (state["status"], state["runs"], len(state["steps"])) == ("completed", 2, 10)


@needs_server
def test_flush_durability_turns_synchronous_commit_off(tmp_path: Path) -> None:
    folder = tmp_path / "flush"
    store = make_store("postgres", folder)
    assert isinstance(store, duravoke.PostgresStore)
    fast = duravoke.PostgresStore(store.location, durability="flush")
    calls: list[Any] = []
    d = duravoke.Duravoke(fast)
    square = define_steps(d, calls)
    with d.workflow("w") as wf:
        square(3)
        lease: Any = wf._run.lease  # type: ignore[union-attr]
        assert lease._session.conn.execute("SHOW synchronous_commit").fetchone() == ("off",)
    fast.close()
    # What it recorded is there for a store in the default durability.
    slow = duravoke.Duravoke(make_store("postgres", folder))
    square = define_steps(slow, calls)
    with slow.workflow("w") as wf:
        assert square(3) == 9
        lease = wf._run.lease  # type: ignore[union-attr]
        assert lease._session.conn.execute("SHOW synchronous_commit").fetchone() != ("off",)
    assert calls == [3]


@needs_server
def test_a_lost_connection_fails_the_run_and_frees_the_workflow(
    pg: duravoke.PostgresStore, db: Any
) -> None:
    d = duravoke.Duravoke(pg)
    calls: list[Any] = []
    square = define_steps(d, calls)
    key = _lock_key("workflow", pg.schema, "w") & 0xFFFF_FFFF_FFFF_FFFF  # as two oids

    def interrupted_run() -> None:
        with d.workflow("w"):
            square(1)
            # The server ends the runner's session, as a restart or a network cut would.
            db.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory'"
                " AND classid = %s::oid AND objid = %s::oid",
                [key >> 32, key & 0xFFFF_FFFF],
            )
            square(2)

    with pytest.raises(duravoke.StoreError, match="could not record a step of workflow 'w'"):
        interrupted_run()
    with d.workflow("w", timeout=30):
        assert [square(1), square(2), square(3)] == [1, 4, 9]
    assert calls == [1, 2, 2, 3]


@needs_server
def test_idle_connections_the_server_dropped_are_replaced(
    pg: duravoke.PostgresStore, db: Any
) -> None:
    d = duravoke.Duravoke(pg)
    square = define_steps(d, [])
    with d.workflow("w"):
        square(1)
    assert pg.read("w") is not None  # so the idle session's last query names the schema
    # A server restart or an idle timeout ends the sessions the store keeps for reuse.
    ended = db.execute(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
        " WHERE pid <> pg_backend_pid() AND strpos(query, %s) > 0",
        [f'"{pg.schema}"'],
    ).fetchone()
    assert ended[0] >= 1
    assert pg.workflow_ids() == ["w"]
    with d.workflow("w"):
        assert square(1) == 1


# -------------------------------------------------------------------------- group commit


@needs_server
@pytest.mark.anyio
async def test_concurrent_async_steps_share_transactions(
    pg: duravoke.PostgresStore, db: Any
) -> None:
    d = duravoke.Duravoke(pg)

    @d.duravoke(name="tiny")
    async def tiny(i: int) -> int:
        return i

    async with d.workflow("many"):
        async with anyio.create_task_group() as tg:
            for i in range(1000):
                tg.start_soon(tiny, i)
    # Rows written by one transaction share its id (xmin): count the transactions.
    steps, transactions = db.execute(
        f'SELECT count(*), count(DISTINCT xmin::text) FROM "{pg.schema}".steps'
        " WHERE workflow_id = 'many'"
    ).fetchone()
    assert steps == 1000
    assert transactions <= 500, f"{transactions} transactions for 1000 steps: no group commit"
