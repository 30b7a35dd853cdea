"""Celery workers on RabbitMQ, state in Postgres, killed at random: every order done once.

Runs examples/celery_app.py as it is meant to run: four real ``celery worker`` processes
(prefork pool, concurrency 2) consume one queue of 200 orders (a tenth of them published
twice with the same task id, so that two workers get one task at once), while the test
SIGKILLs busy pool processes and whole workers and restarts the workers it killed. Once
every workflow completed and the queue and the workers are idle, it checks:

- every workflow completed, with its four steps;
- no step body ran after its call had returned somewhere (its record existed then), as
  in tests/test_torture.py: a body that ran but was killed before its record may run
  again, nothing more;
- no process entered a workflow while another held it (the duplicates met at the lock);
- the fake payment provider made exactly one charge per order, the one the workflow
  recorded, whatever number of requests the re-runs sent with the same idempotency key;
- nothing is left in the queue, and no worker holds a task.

The seed is printed at the start (``pytest -s``) and in every assertion message;
``DURAVOKE_CELERY_SEED`` replays its choices (the kills still land where the timing puts
them). Needs PostgreSQL (``DURAVOKE_TEST_POSTGRES_DSN``) and RabbitMQ on 127.0.0.1:5672
(``DURAVOKE_TEST_AMQP_URL``); .ci/run starts both.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import random
import signal
import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import POSTGRES_DSN, POSTGRES_SCHEMA_PREFIX
from psycopg import sql

import duravoke

celery = pytest.importorskip("celery")
kombu = pytest.importorskip("kombu")

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
BROKER = os.environ.get("DURAVOKE_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
TASK = "celery_app.process_order"
STEPS = ("reserve_stock", "charge_card", "ship", "send_receipt")

WORKERS = 4
CONCURRENCY = 2
ORDERS = 200
DUPLICATES = 20
KILLS = int(os.environ.get("DURAVOKE_CELERY_KILLS", "16"))
STEP_SECONDS = 0.12  # each workflow takes about half a second: long enough to be hit
LOCK_WAIT = 0.5  # short, so that some duplicates wait and others retry later
START_SECONDS = 60.0  # for the workers to say "ready"
RUN_SECONDS = 150.0  # for every workflow to complete, kills included
DRAIN_SECONDS = 60.0  # for the queue and the workers to fall idle afterwards
HOST = "duravoke-test"


@dataclasses.dataclass
class Worker:
    """One ``celery worker`` process group (its main process and its pool)."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def ready(self) -> bool:
        return self.log.exists() and f"{self.name} ready." in self.log.read_text(errors="replace")


@dataclasses.dataclass
class Run:
    """Everything one test run shares: names, environment, workers, the event log."""

    tag: str
    seed: int
    folder: Path
    queue: str
    schema: str
    events: Path
    env: dict[str, str]
    workers: list[Worker] = dataclasses.field(default_factory=list)
    started: int = 0

    @property
    def payments_schema(self) -> str:
        return f"{self.schema}_payments"

    def start_worker(self, slot: int) -> Worker:
        name = f"w{slot}-{self.started}-{self.tag}@{HOST}"
        log = self.folder / f"worker-{self.started}.log"
        self.started += 1
        with log.open("wb") as out:
            command = [sys.executable, "-m", "celery", "-A", "celery_app", "worker"]
            command += ["--pool", "prefork", "--concurrency", str(CONCURRENCY), "-Q", self.queue]
            command += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
            command += ["-n", name, "--loglevel", "INFO"]
            proc = subprocess.Popen(
                command,
                cwd=self.folder,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: killpg takes the pool too
            )
        worker = Worker(name, proc, log)
        if slot < len(self.workers):
            self.workers[slot] = worker
        else:
            self.workers.append(worker)
        return worker

    def note(self, line: str) -> None:
        """Append a line of the test's own to the event log, as the tasks do."""
        fd = os.open(self.events, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)

    def where(self) -> str:
        logs = "".join(
            f"\n--- {w.name} (exit {w.proc.poll()}) ---\n"
            + "\n".join(w.log.read_text(errors="replace").splitlines()[-15:])
            for w in self.workers
        )
        return f"seed {self.seed} (DURAVOKE_CELERY_SEED), folder {self.folder}{logs}"


@dataclasses.dataclass
class Findings:
    """What the event log shows, once it has been checked line by line."""

    reruns: int = 0  # step bodies that ran again (killed before their record)
    busy: int = 0  # deliveries that found the workflow held and let Celery retry
    overlaps: dict[int, int] = dataclasses.field(default_factory=dict)  # order: deliveries
    kills_inside: int = 0  # kills that hit a process inside a workflow
    executed: set[tuple[int, str]] = dataclasses.field(default_factory=set)
    returned: set[tuple[int, str]] = dataclasses.field(default_factory=set)


def read_events(path: Path) -> list[list[str]]:
    if not path.exists():
        return []
    return [line.split() for line in path.read_text().splitlines() if line]


def check_events(events: list[list[str]], where: str) -> Findings:
    """Replay the event log: no step body after its return, one holder per workflow."""
    found = Findings()
    parent: dict[int, int] = {}
    inside: dict[int, set[int]] = collections.defaultdict(set)  # order: pids holding it
    delivering: dict[int, set[int]] = collections.defaultdict(set)  # order: pids running it
    runs: collections.Counter[tuple[int, str]] = collections.Counter()
    for number, words in enumerate(events, 1):
        kind = words[0]
        if kind in ("kill", "killgroup"):
            # Written just before the SIGKILL: a holder's lock ends at this line at the
            # earliest, so another process entering after it is no evidence of a bug.
            pid = int(words[3])
            dead = {pid} | (
                {p for p, pp in parent.items() if pp == pid} if kind == "killgroup" else set()
            )
            found.kills_inside += any(pids & dead for pids in inside.values())
            for holders in (*inside.values(), *delivering.values()):
                holders.difference_update(dead)
            continue
        order, step, pid = int(words[1]), words[2], int(words[3])
        parent[pid] = int(words[4])
        context = f"event line {number} {' '.join(words)!r}: {where}"
        if kind == "deliver":
            if delivering[order] - {pid}:
                found.overlaps[order] = found.overlaps.get(order, 0) + 1
            delivering[order].add(pid)
        elif kind == "enter":
            assert not inside[order] - {pid}, (
                f"process {pid} entered order {order} while {inside[order]} held it: {context}"
            )
            inside[order].add(pid)
        elif kind == "exit":
            inside[order].discard(pid)
        elif kind in ("done", "busy"):
            delivering[order].discard(pid)
            found.busy += kind == "busy"
        elif kind == "exec":
            assert (order, step) not in found.returned, (
                f"{step} of order {order} ran again after its call had returned: {context}"
            )
            found.reruns += runs[order, step] > 0
            runs[order, step] += 1
            found.executed.add((order, step))
        else:
            assert kind == "returned", context
            found.returned.add((order, step))
    return found


def children(ppid: int) -> list[int]:
    """The processes whose parent is ``ppid`` (the pool of a worker)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # The command in field 2 may hold spaces; the parent is 2 fields after its ")".
            if int(stat.rpartition(")")[2].split()[1]) == ppid:
                found.append(int(entry.name))
    return found


def busy_pids(events: list[list[str]]) -> set[int]:
    """Processes inside a workflow now, as far as the event log tells."""
    inside: set[int] = set()
    for words in events:
        if words[0] == "enter":
            inside.add(int(words[3]))
        elif words[0] in ("exit", "kill"):
            inside.discard(int(words[3]))
    return inside


def kill_something(run: Run, rng: random.Random) -> str:
    """SIGKILL a pool process that runs a workflow, or a whole worker (then restart it)."""
    mains = {w.proc.pid: slot for slot, w in enumerate(run.workers) if w.proc.poll() is None}
    if rng.random() < 0.6:
        ours = {pid for main in mains for pid in children(main)}
        targets = sorted(busy_pids(read_events(run.events)) & ours) or sorted(ours)
        if targets:
            pid = rng.choice(targets)
            run.note(f"kill - - {pid} -")
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:  # it exited by itself: nothing killed
                return ""
            return "child"
    slot = rng.randrange(len(run.workers))
    worker = run.workers[slot]
    run.note(f"killgroup - - {worker.proc.pid} -")
    os.killpg(worker.proc.pid, signal.SIGKILL)
    worker.proc.wait(timeout=30)
    run.start_worker(slot)
    return "worker"


def open_store(run: Run) -> duravoke.PostgresStore:
    return duravoke.PostgresStore(POSTGRES_DSN, schema=run.schema)


def completed(store: duravoke.PostgresStore) -> int:
    count = 0
    for order in range(ORDERS):
        state = store.read(f"order-{order}")
        count += state is not None and state["status"] == "completed"
    return count


def idle(run: Run, client: Any) -> bool:
    """No message waits in the queue and no worker holds a task (running, prefetched, ETA)."""
    with kombu.Connection(BROKER) as conn:
        _, waiting, _ = conn.default_channel.queue_declare(run.queue, passive=True)
    if waiting:
        return False
    names = [w.name for w in run.workers]
    inspect = client.control.inspect(destination=names, timeout=2.0)
    for held in (inspect.active(), inspect.reserved(), inspect.scheduled()):
        if not held or set(held) != set(names) or any(held.values()):
            return False
    return True


@pytest.fixture
def seed() -> int:
    value = int(os.environ.get("DURAVOKE_CELERY_SEED") or random.randrange(2**32))
    print(f"\ncelery seed {value} (DURAVOKE_CELERY_SEED={value} replays its choices)")
    return value


@pytest.fixture
def run(tmp_path: Path, seed: int) -> Iterator[Run]:
    if not POSTGRES_DSN:
        pytest.skip("DURAVOKE_TEST_POSTGRES_DSN is not set: the Celery test needs PostgreSQL")
    try:
        with kombu.Connection(BROKER, connect_timeout=5) as conn:
            conn.ensure_connection(max_retries=1)
    except Exception as exc:
        pytest.skip(f"RabbitMQ does not answer at {BROKER}: {exc!r}")
    tag = uuid.uuid4().hex[:10]
    events = tmp_path / "events.log"
    pythonpath = [str(EXAMPLES), str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    schema = f"{POSTGRES_SCHEMA_PREFIX}celery_{tag}"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(pythonpath),
        "DURAVOKE_CELERY_BROKER": BROKER,
        "DURAVOKE_CELERY_DSN": POSTGRES_DSN,
        "DURAVOKE_CELERY_SCHEMA": schema,
        "DURAVOKE_CELERY_QUEUE": f"duravoke-test-{tag}",
        "DURAVOKE_CELERY_STEP_SECONDS": str(STEP_SECONDS),
        "DURAVOKE_CELERY_LOCK_WAIT": str(LOCK_WAIT),
        "DURAVOKE_EXAMPLE_LOG": str(events),
    }
    value = Run(tag, seed, tmp_path, env["DURAVOKE_CELERY_QUEUE"], schema, events, env)
    try:
        yield value
    finally:
        for worker in value.workers:
            if worker.proc.poll() is None:
                os.killpg(worker.proc.pid, signal.SIGKILL)
                worker.proc.wait(timeout=30)
        with kombu.Connection(BROKER) as conn:
            conn.default_channel.queue_delete(value.queue)
        with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
            for name in (value.schema, value.payments_schema):
                conn.execute(
                    sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name))
                )


def test_import_duravoke_never_imports_celery() -> None:
    """Celery is the example's dependency, not duravoke's."""
    code = "import sys, duravoke; print(sorted(m for m in sys.modules if 'celery' in m))"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout


def test_celery_workers_killed_at_random_finish_every_order_once(run: Run) -> None:
    """200 orders on 4 workers that die again and again: each completes, charged once."""
    rng = random.Random(run.seed)
    for slot in range(WORKERS):
        run.start_worker(slot)
    deadline = time.monotonic() + START_SECONDS
    while not all(w.ready() for w in run.workers):
        assert all(w.proc.poll() is None for w in run.workers), f"a worker died: {run.where()}"
        assert time.monotonic() < deadline, f"workers not ready in time: {run.where()}"
        time.sleep(0.2)

    # The duplicates go out back to back, so that two idle pool processes take them at once.
    client = celery.Celery("duravoke-test", broker=BROKER)
    duplicated = set(rng.sample(range(ORDERS), DUPLICATES))
    began = time.monotonic()
    for order in range(ORDERS):
        for _ in range(2 if order in duplicated else 1):
            client.send_task(
                TASK, args=[order], queue=run.queue, task_id=f"order-{order}-{run.tag}"
            )

    store = open_store(run)
    kinds: collections.Counter[str] = collections.Counter()
    try:
        deadline = began + RUN_SECONDS
        while True:
            time.sleep(rng.uniform(0.2, 0.8))
            # Kill only while tasks run; once the kills are spent, wait for the rest.
            if sum(kinds.values()) < KILLS and busy_pids(read_events(run.events)):
                kind = kill_something(run, rng)
                if kind:
                    kinds[kind] += 1
            elif completed(store) == ORDERS:
                break
            assert time.monotonic() < deadline, (
                f"{completed(store)} of {ORDERS} orders completed in {RUN_SECONDS} s,"
                f" after kills {dict(kinds)}: {run.where()}"
            )
        ran = time.monotonic() - began

        # Nothing pending: the queue is empty and no worker holds a task, twice in a row
        # (a retried duplicate may be on its way back to the queue in between).
        deadline = time.monotonic() + DRAIN_SECONDS
        quiet = 0
        while quiet < 2:
            quiet = quiet + 1 if idle(run, client) else 0
            assert time.monotonic() < deadline, f"tasks still pending: {run.where()}"
            time.sleep(0.5)
        for worker in run.workers:  # warm shutdown: finish what runs, give back the rest
            worker.proc.send_signal(signal.SIGTERM)
        for worker in run.workers:
            assert worker.proc.wait(timeout=30) == 0, f"{worker.name}: {run.where()}"
        with kombu.Connection(BROKER) as conn:
            _, left, _ = conn.default_channel.queue_declare(run.queue, passive=True)
        assert left == 0, f"{left} messages left in the queue: {run.where()}"

        check_outcome(run, store, kinds, duplicated, ran)
    finally:
        store.close()
        client.close()


def check_outcome(
    run: Run,
    store: duravoke.PostgresStore,
    kinds: collections.Counter[str],
    duplicated: set[int],
    ran: float,
) -> None:
    """The state, the event log, the payment provider and the workers' logs agree."""
    where = run.where()
    found = check_events(read_events(run.events), where)
    every_step = {(order, step) for order in range(ORDERS) for step in STEPS}
    assert found.executed == every_step, where
    assert found.returned == every_step, where

    assert sorted(store.workflow_ids()) == sorted(f"order-{o}" for o in range(ORDERS)), where
    decode = duravoke.JSONSerializer().decode
    recorded_charges: dict[int, object] = {}
    for order in range(ORDERS):
        state = store.read(f"order-{order}")
        assert state is not None, f"order {order}: {where}"
        assert state["status"] == "completed", f"order {order}: {state}: {where}"
        steps = list(state["steps"].values())
        names = sorted(s["fn"].rpartition(".")[2] for s in steps)
        assert names == sorted(STEPS), f"order {order}: {steps}: {where}"
        assert all(s["status"] == "completed" for s in steps), f"order {order}: {steps}: {where}"
        (charge,) = (s for s in steps if s["fn"].endswith(".charge_card"))
        recorded_charges[order] = decode(charge["result"])

    with psycopg.connect(POSTGRES_DSN) as conn:
        schema = sql.Identifier(run.payments_schema)
        charges = conn.execute(
            sql.SQL("SELECT id, order_id, amount_cents FROM {}.charges").format(schema)
        ).fetchall()
        requests = conn.execute(sql.SQL("SELECT count(*) FROM {}.requests").format(schema))
        (request_count,) = requests.fetchone() or (0,)
    per_order = collections.Counter(order for _, order, _ in charges)
    twice = {order: n for order, n in per_order.items() if n != 1}
    assert not twice, f"orders charged more than once: {twice}: {where}"
    assert sorted(per_order) == list(range(ORDERS)), where
    for charge_id, order, amount in charges:
        assert amount == 1000 + 25 * order, where
        assert recorded_charges[order] == f"ch_{charge_id}", f"order {order}: {where}"

    # A task that failed (rather than died or retried) would have lost its workflow.
    for worker in run.workers:
        assert "raised unexpected" not in worker.log.read_text(errors="replace"), where
    for log in run.folder.glob("worker-*.log"):
        assert "raised unexpected" not in log.read_text(errors="replace"), f"{log}: {where}"

    kills = sum(kinds.values())
    overlapping = {o: n for o, n in found.overlaps.items() if o in duplicated}
    print(
        f"{ORDERS} orders ({len(duplicated)} published twice) completed in {ran:.1f} s;"
        f" {kills} kills ({dict(kinds)}), {found.kills_inside} inside a workflow;"
        f" {found.reruns} step bodies ran again (killed before their record);"
        f" {request_count - len(charges)} repeated payment requests deduplicated;"
        f" {len(overlapping)} duplicates delivered to two processes at once,"
        f" {found.busy} deliveries found their workflow busy and retried later"
    )
    assert kills >= min(KILLS, 10), f"only {dict(kinds)} kills: {where}"
    # Pool processes are chosen among those inside a workflow, so most kills land there.
    assert found.kills_inside >= min(KILLS, 10) // 2, f"few kills hit a workflow: {where}"
    # The duplicates really were consumed at once, so the lock had something to do.
    assert overlapping, f"no duplicate was delivered twice at once: {where}"
    if request_count == len(charges):
        warnings.warn(
            "no kill landed between a charge and its record, so no payment was repeated"
            f" and the idempotency key went unexercised this time: {where}",
            stacklevel=1,
        )
