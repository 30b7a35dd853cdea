"""The store that keeps state in PostgreSQL, so the same durable code runs on many machines.

Its tables live in a schema of their own (``duravoke`` unless told otherwise), created
on first use::

    meta      (version)                        one row: the layout's version, 1
    workflows (id, state, updated)             a workflow's state without its steps
    steps     (workflow_id, sid, record, seq)  one row per step, in first-written order
    messages  (id, workflow_id, topic, seq, data, sent)  the inboxes (``send``)

One runner per workflow across machines: a lease holds a session-level advisory lock
on a connection of its own, which the server also releases when that connection ends,
even if the process was killed. Records appended at the same time share one
transaction (group commit).
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

# psycopg is optional: `import duravoke` (and `from duravoke import *`) works without it,
# and PostgresStore says what to install when it is missing.
try:
    import psycopg
    from psycopg.pq import TransactionStatus
except ImportError:  # pragma: no cover - depends on what is installed
    psycopg = None  # type: ignore[assignment]

from ._errors import CorruptStateError, StoreError
from ._groupcommit import GroupCommit
from ._identity import check_workflow_id
from ._json import compact
from ._state import Record, State, apply, new_state
from ._store import Durability, Lease, Store, check_durability

if TYPE_CHECKING:
    Connection = psycopg.Connection[tuple[Any, ...]]

__all__ = ["SCHEMA_VERSION", "PostgresStore"]

#: The version of the table layout, kept in the ``meta`` table.
SCHEMA_VERSION = 1

_DEFAULT_SCHEMA = "duravoke"
_IDLE_CONNECTIONS = 4
_CONNECT_DEFAULTS = {"connect_timeout": "10", "application_name": "duravoke"}

# json, not jsonb: jsonb reorders keys, rewrites numbers (1e16 comes back an int) and
# refuses "\u0000", while a record must come back exactly as it was written.
_CREATE = """
CREATE SCHEMA IF NOT EXISTS {s};
CREATE TABLE IF NOT EXISTS {s}.meta (version integer NOT NULL);
CREATE TABLE IF NOT EXISTS {s}.workflows (
    id text PRIMARY KEY,
    state json NOT NULL,
    updated timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS {s}.steps (
    workflow_id text NOT NULL,
    sid text NOT NULL,
    record json NOT NULL,
    seq bigserial NOT NULL,
    PRIMARY KEY (workflow_id, sid)
);
CREATE TABLE IF NOT EXISTS {s}.messages (
    id bigserial PRIMARY KEY,
    workflow_id text NOT NULL,
    topic text NOT NULL,
    seq bigint NOT NULL,
    data json NOT NULL,
    sent timestamptz NOT NULL DEFAULT now(),
    UNIQUE (workflow_id, topic, seq)
);
INSERT INTO {s}.meta (version) SELECT {version} WHERE NOT EXISTS (SELECT FROM {s}.meta);
"""

# One statement, so one snapshot: a reader never sees half of a transaction.
_LOAD = """
SELECT 0, 0::bigint, state FROM {s}.workflows WHERE id = %(id)s
UNION ALL
SELECT 1, seq, record FROM {s}.steps WHERE workflow_id = %(id)s
ORDER BY 1, 2
"""

# One statement, so one transaction: the workflow row and its new step records.
# A rewritten step keeps its seq, as a rewritten dict key keeps its place.
_SAVE = """
WITH workflow AS (
    INSERT INTO {s}.workflows (id, state, updated) VALUES (%(id)s, %(state)s::json, now())
    ON CONFLICT (id) DO UPDATE SET state = excluded.state, updated = excluded.updated
)
INSERT INTO {s}.steps (workflow_id, sid, record)
SELECT %(id)s, sid, record
FROM unnest(%(sids)s::text[], %(records)s::json[]) WITH ORDINALITY AS r (sid, record, n)
ORDER BY n
ON CONFLICT (workflow_id, sid) DO UPDATE SET record = excluded.record
"""

_FORGET = """
WITH s AS (DELETE FROM {s}.steps WHERE workflow_id = %(id)s RETURNING 1),
     w AS (DELETE FROM {s}.workflows WHERE id = %(id)s RETURNING 1)
SELECT (SELECT count(*) FROM s) + (SELECT count(*) FROM w)
"""

_IDS = "SELECT id FROM {s}.workflows"

# Senders to one workflow and topic queue on a transaction-level advisory lock, so the
# sequence numbers follow commit order: a receiver never sees 5 before 4 is visible.
_SEND = """
INSERT INTO {s}.messages (workflow_id, topic, seq, data)
SELECT %(id)s, %(topic)s, coalesce(max(seq), 0) + 1, %(data)s::json
FROM {s}.messages WHERE workflow_id = %(id)s AND topic = %(topic)s
RETURNING seq
"""

_MESSAGES = """
SELECT seq, data FROM {s}.messages
WHERE workflow_id = %(id)s AND topic = %(topic)s AND seq > %(after)s ORDER BY seq
"""

_DROP_MESSAGES = "DELETE FROM {s}.messages WHERE workflow_id = %(id)s"

_VERSION = "SELECT version FROM {s}.meta"

_TRY_LOCK = b"SELECT pg_try_advisory_lock(%s)"

_ESCAPED = re.compile("%(25|00)")


def _db_id(workflow_id: str) -> str:
    # Postgres text cannot hold NUL; escape it, and % so that the escape is reversible.
    if "%" in workflow_id or "\0" in workflow_id:
        return workflow_id.replace("%", "%25").replace("\0", "%00")
    return workflow_id


def _py_id(text: str) -> str:
    if "%" not in text:
        return text
    return _ESCAPED.sub(lambda m: "%" if m[1] == "25" else "\0", text)


def _lock_key(*parts: str) -> int:
    """A signed 64-bit advisory lock key; the parts never contain NUL except the last."""
    digest = hashlib.sha256("\0".join(("duravoke", *parts)).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _reason(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _split_schema(dsn: str) -> tuple[str, str | None]:
    """(the DSN without its ``schema`` query parameter, that parameter's value)."""
    parts = urlsplit(dsn)
    if not parts.scheme or not parts.query:
        return dsn, None
    kept, schema = [], None
    for item in parts.query.split("&"):
        name, _, value = item.partition("=")
        if unquote(name) == "schema":
            schema = unquote(value)
        else:
            kept.append(item)
    return urlunsplit(parts._replace(query="&".join(kept))), schema


def _mask(dsn: str) -> str:
    """``dsn`` with its password, if any, replaced by ``***``."""
    parts = urlsplit(dsn)
    if not parts.scheme:  # keyword=value form
        return re.sub(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1***", dsn)
    user, at, hosts = parts.netloc.rpartition("@")
    netloc = f"{user.partition(':')[0]}:***@{hosts}" if at and ":" in user else parts.netloc
    query = "&".join(
        "password=***" if unquote(item.partition("=")[0]) == "password" else item
        for item in parts.query.split("&")
    )
    return urlunsplit(parts._replace(netloc=netloc, query=query if parts.query else ""))


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


class _Pool:
    """Idle connections kept for reuse: connecting costs a server process each time."""

    def __init__(self) -> None:
        self.guard = threading.Lock()
        self.idle: list[Connection] = []
        self.pid = os.getpid()

    def take(self) -> Connection | None:
        with self.guard:
            if self.pid != os.getpid():
                # A forked child shares its parent's sockets: never use or close them.
                _INHERITED.extend(self.idle)
                self.idle, self.pid = [], os.getpid()
            while self.idle:
                conn = self.idle.pop()
                if not conn.closed:
                    return conn
        return None

    def give(self, conn: Connection) -> None:
        if conn.info.transaction_status == TransactionStatus.IDLE:
            with self.guard:
                if self.pid == os.getpid() and len(self.idle) < _IDLE_CONNECTIONS:
                    self.idle.append(conn)
                    return
        conn.close()

    def close(self) -> None:
        with self.guard:
            idle, self.idle = self.idle, []
            if self.pid != os.getpid():
                _INHERITED.extend(idle)
                return
        for conn in idle:
            conn.close()


_INHERITED: list[Connection] = []


@contextmanager
def _guarded(conn: Connection, store: PostgresStore, what: str) -> Iterator[Connection]:
    """On failure, drop the connection (its state is unknown); a database error becomes
    a :class:`StoreError` saying that ``what`` failed."""
    try:
        yield conn
    except psycopg.Error as exc:
        conn.close()
        raise store._error(what, exc) from exc
    except BaseException:
        conn.close()
        raise


class PostgresStore(Store):
    """A store in a PostgreSQL database, shared by every machine that reaches it.

    Args:
        dsn: where the database is, e.g. ``"postgresql://app@db.internal/app"`` (any
            libpq connection string). A ``schema`` query parameter names the schema.
        durability: ``"fsync"`` (a recorded step is committed to the server's disk) or
            ``"flush"`` (``synchronous_commit = off``, faster: a recorded step survives
            this process crashing, but a crash of the server may lose the steps of its
            last fraction of a second, which then run again).
        schema: the schema holding the tables; default: the DSN's ``schema``
            parameter, else ``"duravoke"``. Created with its tables on first use.

    Needs psycopg 3 (``pip install 'duravoke[postgres]'``). Each running workflow holds
    one connection; up to four idle ones are kept for reuse.

    Raises:
        StoreError: the server cannot be reached or a statement fails.
        CorruptStateError: the schema holds tables of another layout version.
    """

    def __init__(
        self, dsn: str, *, durability: Durability = "fsync", schema: str | None = None
    ) -> None:
        if psycopg is None:  # pragma: no cover - depends on what is installed
            raise ImportError(
                "duravoke.PostgresStore needs psycopg 3: install duravoke[postgres]"
                " (pip install 'duravoke[postgres]')."
            )
        libpq_dsn, dsn_schema = _split_schema(dsn)
        if schema is not None and dsn_schema is not None and schema != dsn_schema:
            raise ValueError(f"schema {schema!r} differs from the DSN's schema {dsn_schema!r}")
        schema = schema or dsn_schema or _DEFAULT_SCHEMA
        if "\0" in schema or len(schema.encode("utf-8")) > 63:
            raise ValueError(f"{schema!r} is not a valid Postgres schema name (at most 63 bytes)")
        try:
            params = psycopg.conninfo.conninfo_to_dict(libpq_dsn)
        except psycopg.Error as exc:
            raise ValueError(f"{_mask(dsn)!r} is not a Postgres DSN: {_reason(exc)}") from None
        self.durability: Durability = check_durability(durability)
        self.schema = schema
        options = {k: v for k, v in _CONNECT_DEFAULTS.items() if k not in params}
        self._conninfo = psycopg.conninfo.make_conninfo(libpq_dsn, **options)
        location = _mask(libpq_dsn)
        if schema != _DEFAULT_SCHEMA:
            # As a query parameter, so that open_store(location) opens this very store.
            if urlsplit(location).scheme:
                location += ("&" if urlsplit(location).query else "?") + "schema=" + quote(schema)
            else:
                location += f" (schema {schema!r})"
        self._location = location
        s = _quote(schema)
        self._create = _CREATE.format(s=s, version=SCHEMA_VERSION).encode()
        self._load_sql = _LOAD.format(s=s).encode()
        self._save_sql = _SAVE.format(s=s).encode()
        self._forget_sql = _FORGET.format(s=s).encode()
        self._ids_sql = _IDS.format(s=s).encode()
        self._send_sql = _SEND.format(s=s).encode()
        self._messages_sql = _MESSAGES.format(s=s).encode()
        self._drop_messages_sql = _DROP_MESSAGES.format(s=s).encode()
        self._version_sql = _VERSION.format(s=s).encode()
        self._ready = False
        self._pool = _Pool()
        weakref.finalize(self, self._pool.close)

    def __repr__(self) -> str:
        return f"PostgresStore({self._location!r})"

    @property
    def location(self) -> str:
        """The DSN with any password masked (and the schema, when not the default)."""
        return self._location

    def try_lock(self, workflow_id: str) -> Lease | None:
        """Take the workflow's advisory lock without waiting."""
        key = _lock_key("workflow", self.schema, check_workflow_id(workflow_id))
        conn, rows = self._query(f"lock workflow {workflow_id!r}", _TRY_LOCK, [key])
        if not rows[0][0]:
            self._pool.give(conn)
            return None
        return _PostgresLease(self, workflow_id, conn, key)

    def read(self, workflow_id: str) -> State | None:
        """The workflow's recorded state, read in one snapshot without its lock."""
        what = f"read workflow {check_workflow_id(workflow_id)!r}"
        conn, rows = self._query(what, self._load_sql, {"id": _db_id(workflow_id)})
        self._pool.give(conn)
        return self._rebuild(workflow_id, rows)

    def workflow_ids(self) -> list[str]:
        """Every workflow with recorded state."""
        conn, rows = self._query("list workflows", self._ids_sql)
        self._pool.give(conn)
        return sorted(_py_id(row[0]) for row in rows)

    def send(self, workflow_id: str, topic: str, data: str) -> int:
        """Insert a message row in its own transaction; never takes the workflow's lock."""
        key = _lock_key("inbox", self.schema, check_workflow_id(workflow_id), topic)
        what = f"send a message to workflow {workflow_id!r}"
        conn = self._pool.take() or self._connect()
        with _guarded(conn, self, what), conn.transaction():
            conn.execute(b"SELECT pg_advisory_xact_lock(%s)", [key])
            row = conn.execute(
                self._send_sql, {"id": _db_id(workflow_id), "topic": topic, "data": data}
            ).fetchone()
        self._pool.give(conn)
        assert row is not None
        return int(row[0])

    def messages(self, workflow_id: str, topic: str, after: int) -> list[tuple[int, Any]]:
        """The message rows on ``topic`` after ``after``."""
        what = f"read the messages of workflow {check_workflow_id(workflow_id)!r}"
        params = {"id": _db_id(workflow_id), "topic": topic, "after": after}
        conn, rows = self._query(what, self._messages_sql, params)
        self._pool.give(conn)
        return [(int(seq), data) for seq, data in rows]

    def drop_messages(self, workflow_id: str) -> bool:
        """Delete the workflow's message rows."""
        what = f"delete the messages of workflow {check_workflow_id(workflow_id)!r}"
        conn = self._pool.take() or self._connect()
        with _guarded(conn, self, what):
            cur = conn.execute(self._drop_messages_sql, {"id": _db_id(workflow_id)})
        self._pool.give(conn)
        return cur.rowcount > 0

    def close(self) -> None:
        """Close the idle connections kept for reuse (running workflows keep theirs)."""
        self._pool.close()

    def _query(
        self, what: str, query: bytes, params: Sequence[Any] | dict[str, Any] | None = None
    ) -> tuple[Connection, list[tuple[Any, ...]]]:
        """Run one statement; the caller hands the connection back (or keeps it)."""
        conn = self._pool.take()
        if conn is not None:
            try:
                return conn, conn.execute(query, params).fetchall()
            except psycopg.OperationalError:
                # It died while idle (a server restart, an idle timeout): once more on
                # a new connection; these statements are all safe to repeat.
                conn.close()
            except BaseException as exc:
                conn.close()
                if isinstance(exc, psycopg.Error):
                    raise self._error(what, exc) from exc
                raise
        conn = self._connect()
        with _guarded(conn, self, what):
            return conn, conn.execute(query, params).fetchall()

    def _connect(self) -> Connection:
        try:
            conn: Connection = psycopg.connect(self._conninfo, autocommit=True)
        except psycopg.Error as exc:
            raise StoreError(
                f"could not connect to the Postgres server at {self._location}: {_reason(exc)}",
                path=self._location,
            ) from exc
        with _guarded(conn, self, "set up the duravoke tables"):
            if self.durability == "flush":
                conn.execute(b"SET synchronous_commit = off")
            if not self._ready:
                self._setup(conn)
                self._ready = True
        return conn

    def _setup(self, conn: Connection) -> None:
        with conn.transaction():
            meta = f"{_quote(self.schema)}.meta"
            messages = f"{_quote(self.schema)}.messages"
            row = conn.execute(
                b"SELECT to_regclass(%s) IS NOT NULL AND to_regclass(%s) IS NOT NULL",
                [meta, messages],
            ).fetchone()
            # Tables made by an older duravoke lack "messages": the CREATEs add just it.
            if row is None or not row[0]:
                # Serialize concurrent first uses: CREATE ... IF NOT EXISTS alone can race.
                key = _lock_key("schema", self.schema)
                conn.execute(b"SELECT pg_advisory_xact_lock(%s)", [key])
                conn.execute(self._create)
            versions = [r[0] for r in conn.execute(self._version_sql)]
        if versions != [SCHEMA_VERSION]:
            raise CorruptStateError(
                f"the duravoke tables in schema {self.schema!r} of {self._location} have layout"
                f" version {versions[0] if versions else None!r}, but this duravoke reads version"
                f" {SCHEMA_VERSION}. Upgrade duravoke, or use another schema; nothing was changed.",
                path=self._location,
            )

    def _error(self, what: str, exc: BaseException) -> StoreError:
        return StoreError(
            f"could not {what} in the Postgres store at {self._location}: {_reason(exc)}."
            " What was recorded before is kept.",
            path=self._location,
        )

    def _rebuild(self, workflow_id: str, rows: list[tuple[Any, ...]]) -> State | None:
        # The workflow row holds every field as of its last record: steps only fill
        # "steps" (apply() would move "updated" back to the last step's start).
        if not rows:
            return None
        state = new_state()
        for kind, _seq, doc in rows:
            if not isinstance(doc, dict) or (kind == 1 and not isinstance(doc.get("sid"), str)):
                raise CorruptStateError(
                    f"a row of workflow {workflow_id!r} in {self._location} has an unexpected"
                    " shape; it was left untouched. Forget the workflow to start it afresh.",
                    path=self._location,
                )
            if kind == 0:
                state.update(doc, steps=state["steps"])
            else:
                state["steps"][doc["sid"]] = doc
        return state


class _PostgresLease(Lease):
    blocking = True

    def __init__(self, store: PostgresStore, workflow_id: str, conn: Connection, key: int) -> None:
        super().__init__(workflow_id)
        self._store = store
        self._conn = conn
        self._key = key
        self._id = _db_id(workflow_id)
        self._header = new_state()  # the workflow row; "steps" is scratch space for apply()
        self._written: dict[str, Record] = {}  # the step records known to be in the table
        self._commit: GroupCommit[Sequence[Record]] = GroupCommit(self._write, self._failed)
        #: Write transactions committed, for benchmarks and tests of group commit.
        self.commits = 0

    def load(self) -> State:
        with _guarded(self._conn, self._store, f"load workflow {self.workflow_id!r}"):
            rows = self._conn.execute(self._store._load_sql, {"id": self._id}).fetchall()
        state = self._store._rebuild(self.workflow_id, rows) or new_state()
        self._header = {**state, "steps": {}}
        self._written = dict(state["steps"])
        return state

    def append(self, records: Sequence[Record]) -> None:
        self._commit.submit(records)

    def enqueue(self, records: Sequence[Record]) -> Callable[[], None]:
        return functools.partial(self._commit.wait, self._commit.enqueue(records))

    def _write(self, batch: list[Sequence[Record]]) -> None:
        steps: dict[str, Record] = {}
        for records in batch:
            for record in records:
                apply(self._header, record)
                if record.get("sid") is not None:
                    steps[record["sid"]] = record
        self._header["steps"].clear()
        self._save(self._header, steps)
        self._written.update(steps)
        self.commits += 1

    def _save(self, state: State, steps: dict[str, Record]) -> None:
        header = {k: v for k, v in state.items() if k != "steps"}
        params = {
            "id": self._id,
            "state": compact(header),
            "sids": list(steps),
            "records": [compact(r) for r in steps.values()],
        }
        self._conn.execute(self._store._save_sql, params)

    def _failed(self, failure: BaseException) -> StoreError:
        return StoreError(
            f"could not record a step of workflow {self.workflow_id!r} in"
            f" {self._store.location}: {_reason(failure)}. What was recorded before is kept;"
            " run the workflow again once the server is reachable.",
            path=self._store.location,
        )

    def close(self, state: State | None) -> None:
        conn = self._conn
        if conn.closed:  # dropped after a failure, which also ended the lock
            return
        what = f"store the final state of workflow {self.workflow_id!r}"
        with _guarded(conn, self._store, what):
            if state is not None:
                # Steps whose append failed are written now, as a file store's snapshot would.
                steps = state["steps"]
                self._save(state, {s: r for s, r in steps.items() if self._written.get(s) is not r})
            row = conn.execute(b"SELECT pg_advisory_unlock(%s)", [self._key]).fetchone()
        if row is not None and row[0]:
            self._store._pool.give(conn)
        else:
            conn.close()

    def forget(self) -> bool:
        with _guarded(self._conn, self._store, f"forget workflow {self.workflow_id!r}"):
            row = self._conn.execute(self._store._forget_sql, {"id": self._id}).fetchone()
        return row is not None and row[0] > 0
