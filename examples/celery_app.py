"""Durable workflows as Celery tasks: many workers on RabbitMQ, the state in Postgres.

Each order is a Celery task whose body is a durable workflow of four steps. Celery
delivers a task again when the worker running it dies (``acks_late`` with
``reject_on_worker_lost``); the redelivered task enters the same workflow, replays the
steps that completed and runs only the rest. The payment step sends
``duravoke.idempotency_key()``, so a charge whose record was lost with its worker is
not made twice. Two deliveries of one task at once (a broker redelivering to a second
worker while the first still runs it) meet at the workflow's lock: one runs, the other
waits, and after ``LOCK_WAIT`` seconds hands the task back to Celery to retry later.

Start RabbitMQ and PostgreSQL on 127.0.0.1, then, from this folder::

    python -m celery -A celery_app worker --pool prefork --concurrency 2
    python celery_app.py 20          # in another shell: send orders 0..19

Settings come from the environment: ``DURAVOKE_CELERY_BROKER`` (default: RabbitMQ's
guest account on 127.0.0.1), ``DURAVOKE_CELERY_DSN`` (PostgreSQL), ``DURAVOKE_CELERY_SCHEMA``
(duravoke's tables; the fake payment provider's go in ``<schema>_payments``),
``DURAVOKE_CELERY_QUEUE``, ``DURAVOKE_CELERY_STEP_SECONDS`` (pretend work per step) and
``DURAVOKE_CELERY_LOCK_WAIT``. ``note()`` writes the event log that tests/test_celery.py
reads; it does nothing unless ``DURAVOKE_EXAMPLE_LOG`` is set.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import psycopg
from celery import Celery, Task
from psycopg import sql

import duravoke

BROKER = os.environ.get("DURAVOKE_CELERY_BROKER", "amqp://guest:guest@127.0.0.1:5672//")
DSN = os.environ.get("DURAVOKE_CELERY_DSN", "postgresql://postgres@127.0.0.1:5432/test")
SCHEMA = os.environ.get("DURAVOKE_CELERY_SCHEMA", "duravoke_celery")
QUEUE = os.environ.get("DURAVOKE_CELERY_QUEUE", "duravoke-orders")
STEP_SECONDS = float(os.environ.get("DURAVOKE_CELERY_STEP_SECONDS", "0.05"))
#: How long a task waits for a workflow that another worker holds before it lets Celery
#: retry it: waiting longer would tie up this worker process for nothing.
LOCK_WAIT = float(os.environ.get("DURAVOKE_CELERY_LOCK_WAIT", "5"))
_LOG = os.environ.get("DURAVOKE_EXAMPLE_LOG")

app = Celery("celery_app", broker=BROKER)
app.conf.update(
    # Acknowledge a message once its task has finished, not when a worker takes it, and
    # put it back in the queue when the pool process running it dies: a task whose worker
    # was killed is delivered again, which is what resumes its workflow.
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    # One message per pool process: a killed worker strands no backlog of prefetched tasks.
    worker_prefetch_multiplier=1,
    task_default_queue=QUEUE,
    # The workflow's state is the result; no result backend is needed.
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
)

d = duravoke.Duravoke(duravoke.PostgresStore(DSN, schema=SCHEMA))


def note(event: str, order_id: int, step: str = "-") -> None:
    """Append ``event order step pid ppid`` to the test's log, if there is one.

    One ``write`` on a file opened for appending: lines from many processes never mix,
    and a line written survives its process being killed.
    """
    if _LOG is None:
        return
    line = f"{event} {order_id} {step} {os.getpid()} {os.getppid()}\n"
    fd = os.open(_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


class FakePaymentAPI:
    """A payment provider, faked in a Postgres schema of its own so that it outlives workers.

    Like Stripe, it makes at most one charge per idempotency key: a request with a key seen
    before returns the charge made the first time (and is refused if its parameters differ).
    Every request is also logged in ``requests``, to show how many were repeats.
    """

    def __init__(self, dsn: str, schema: str) -> None:
        self.dsn = dsn
        self.schema = sql.Identifier(schema)
        self._ready = False

    def _setup(self, conn: psycopg.Connection[Any]) -> None:
        if self._ready:
            return
        with conn.transaction():
            # Workers start together; the lock keeps their CREATE ... IF NOT EXISTS apart.
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [self.schema.as_string()])
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(self.schema))
            conn.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {}.charges (id bigserial PRIMARY KEY,"
                    " idempotency_key text UNIQUE NOT NULL, order_id integer NOT NULL,"
                    " amount_cents integer NOT NULL)"
                ).format(self.schema)
            )
            conn.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {}.requests (id bigserial PRIMARY KEY,"
                    " idempotency_key text NOT NULL, order_id integer NOT NULL)"
                ).format(self.schema)
            )
        self._ready = True

    def charge(self, order_id: int, amount_cents: int, *, idempotency_key: str) -> str:
        """Charge an order once per ``idempotency_key``; return the charge's id."""
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            self._setup(conn)
            with conn.transaction():
                conn.execute(
                    sql.SQL(
                        "INSERT INTO {}.requests (idempotency_key, order_id) VALUES (%s, %s)"
                    ).format(self.schema),
                    [idempotency_key, order_id],
                )
                row = conn.execute(
                    sql.SQL(
                        "INSERT INTO {}.charges (idempotency_key, order_id, amount_cents)"
                        " VALUES (%s, %s, %s) ON CONFLICT (idempotency_key) DO NOTHING"
                        " RETURNING id, order_id, amount_cents"
                    ).format(self.schema),
                    [idempotency_key, order_id, amount_cents],
                ).fetchone()
                if row is None:  # a repeat: the charge made the first time
                    row = conn.execute(
                        sql.SQL(
                            "SELECT id, order_id, amount_cents FROM {}.charges"
                            " WHERE idempotency_key = %s"
                        ).format(self.schema),
                        [idempotency_key],
                    ).fetchone()
                    assert row is not None
            if (row[1], row[2]) != (order_id, amount_cents):
                raise ValueError(f"idempotency key {idempotency_key!r} reused for another charge")
            return f"ch_{row[0]}"


payments = FakePaymentAPI(DSN, f"{SCHEMA}_payments")


def _work() -> None:
    time.sleep(STEP_SECONDS)  # stands for the I/O a real step does


def amount_of(order_id: int) -> int:
    """What order ``order_id`` costs, in cents."""
    return 1000 + 25 * order_id


@d.duravoke
def reserve_stock(order_id: int) -> str:
    """Reserve the order's items; return the reservation."""
    note("exec", order_id, "reserve_stock")
    _work()
    return f"rsv-{order_id}"


@d.duravoke
def charge_card(order_id: int, amount_cents: int) -> str:
    """Charge the order through the payment API; return the charge id."""
    note("exec", order_id, "charge_card")
    charge_id = payments.charge(order_id, amount_cents, idempotency_key=duravoke.idempotency_key())
    # Killed here, the card is charged but the step not recorded: the redelivered task
    # charges again with the same key, and the provider returns the first charge.
    _work()
    return charge_id


@d.duravoke
def ship(order_id: int, reservation: str) -> str:
    """Hand the reserved items to the carrier; return the tracking number."""
    note("exec", order_id, "ship")
    _work()
    return f"trk-{order_id}-{reservation}"


@d.duravoke
def send_receipt(order_id: int, charge_id: str, tracking: str) -> str:
    """E-mail the receipt; return the message id."""
    note("exec", order_id, "send_receipt")
    _work()
    return f"msg-{order_id}-{charge_id}-{tracking}"


def fulfil(order_id: int) -> dict[str, str]:
    """The workflow: each step runs at most once to completion, whoever runs the task."""
    # note("returned", ...) follows each call: from then on the step is recorded.
    reservation = reserve_stock(order_id)
    note("returned", order_id, "reserve_stock")
    charge_id = charge_card(order_id, amount_of(order_id))
    note("returned", order_id, "charge_card")
    tracking = ship(order_id, reservation)
    note("returned", order_id, "ship")
    message = send_receipt(order_id, charge_id, tracking)
    note("returned", order_id, "send_receipt")
    return {"charge": charge_id, "tracking": tracking, "receipt": message}


@app.task(bind=True, name="celery_app.process_order")
def process_order(self: Task, order_id: int) -> dict[str, str]:
    """Run (or finish, or replay) order ``order_id``'s workflow."""
    note("deliver", order_id)
    try:
        with d.workflow(f"order-{order_id}", timeout=LOCK_WAIT):
            note("enter", order_id)
            receipt = fulfil(order_id)
            note("exit", order_id)
    except duravoke.WorkflowBusyError as exc:
        # Another worker runs this order right now. It will finish it, or die and free the
        # lock; either way a later delivery completes or replays it. Free this process.
        note("busy", order_id)
        raise self.retry(exc=exc, countdown=1, max_retries=None) from None
    note("done", order_id)
    return receipt


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    for order in range(count):
        process_order.delay(order)
    print(f"sent {count} orders to queue {QUEUE!r}")
