"""The store that keeps state in PostgreSQL, so the same durable code runs on many machines.

Its tables live in a schema of their own (``duravoke`` unless told otherwise), created
on first use::

    meta      (version)                        one row: the layout's version, 1
    workflows (id, state, updated)             a workflow's state without its steps
    steps     (workflow_id, sid, record, seq)  one row per step, in first-written order
    messages  (id, workflow_id, topic, seq, data, sent)  the inboxes (``send``)

Connections are bounded, however many workflows run: each store object in a process
has one *session* connection and a small pool for reads (psycopg_pool). The session
holds the advisory lock of every workflow the process runs, so the server releases them
all when the process dies, and it writes: records that workflows append at the same
moment are one statement, one transaction, one COMMIT (group commit across workflows).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import threading
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

# psycopg is optional: `import duravoke` (and `from duravoke import *`) works without it,
# and PostgresStore says what to install when it is missing.
try:
    import psycopg
    import psycopg_pool
except ImportError:  # pragma: no cover - depends on what is installed
    psycopg = None  # type: ignore[assignment]
    psycopg_pool = None  # type: ignore[assignment]

from ._errors import CorruptStateError, StoreError
from ._groupcommit import Batcher, GroupCommit, Ticket, Waitable
from ._identity import check_workflow_id
from ._json import compact
from ._state import Record, State, apply, new_state
from ._store import Durability, Lease, Store, check_durability

if TYPE_CHECKING:
    Connection = psycopg.Connection[tuple[Any, ...]]

__all__ = ["POOL_SIZE", "SCHEMA_VERSION", "PostgresStore"]

#: The version of the table layout, kept in the ``meta`` table.
SCHEMA_VERSION = 1

_DEFAULT_SCHEMA = "duravoke"
#: Connections of the read pool of one store object (the session is one more).
POOL_SIZE = 4
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
SELECT id, 0, 0::bigint, state FROM {s}.workflows WHERE id = ANY(%(ids)s)
UNION ALL
SELECT workflow_id, 1, seq, record FROM {s}.steps WHERE workflow_id = ANY(%(ids)s)
ORDER BY 1, 2, 3
"""

# One statement, so one transaction: the workflow rows and their new step records.
# A rewritten step keeps its seq, as a rewritten dict key keeps its place. The rows come
# as two JSON documents of strings, [[id, state], ...] and [[workflow id, sid, record],
# ...], each state and record its JSON text: the server parses them in C, where text
# arrays would cost psycopg a regular-expression escape of every quote of every record.
# As strings, a "\u0000" in a record is no escape of the document (which the server would
# refuse to turn into text), and a json value (not jsonb) keeps its text as sent.
_SAVE = """
WITH workflow AS (
    INSERT INTO {s}.workflows (id, state, updated)
    SELECT w->>0, (w->>1)::json, now() FROM json_array_elements(%(states)s::json) AS w
    ON CONFLICT (id) DO UPDATE SET state = excluded.state, updated = excluded.updated
)
INSERT INTO {s}.steps (workflow_id, sid, record)
SELECT r->>0, r->>1, (r->>2)::json
FROM json_array_elements(%(records)s::json) WITH ORDINALITY AS x (r, n)
ORDER BY n
ON CONFLICT (workflow_id, sid) DO UPDATE SET record = excluded.record
"""

_FORGET = """
WITH s AS (DELETE FROM {s}.steps WHERE workflow_id = %(id)s RETURNING 1),
     w AS (DELETE FROM {s}.workflows WHERE id = %(id)s RETURNING 1)
SELECT (SELECT count(*) FROM s) + (SELECT count(*) FROM w)
"""

_IDS = "SELECT id FROM {s}.workflows"

# Every workflow row with its step counts, in one statement.
_SUMMARIES = """
SELECT w.id, w.state, coalesce(c.done, 0), coalesce(c.failing, '{{}}')
FROM {s}.workflows w LEFT JOIN (
    SELECT workflow_id,
           count(*) FILTER (WHERE record->>'status' = 'completed') AS done,
           array_agg(sid) FILTER (WHERE record->>'status' <> 'completed') AS failing
    FROM {s}.steps GROUP BY workflow_id
) c ON c.workflow_id = w.id
"""

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

_WITH_MESSAGES = """
SELECT DISTINCT workflow_id FROM {s}.messages
WHERE workflow_id = ANY(%(ids)s) AND topic = %(topic)s
"""

_DROP_MESSAGES = "DELETE FROM {s}.messages WHERE workflow_id = %(id)s"

_VERSION = "SELECT version FROM {s}.meta"

_TRY_LOCKS = b"SELECT k, pg_try_advisory_lock(k) FROM unnest(%s::bigint[]) AS k"
_UNLOCK_MANY = b"SELECT pg_advisory_unlock(k) FROM unnest(%s::bigint[]) AS k"

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

    Needs psycopg 3 and psycopg_pool (``pip install 'duravoke[postgres]'``). One store
    object uses at most ``pool_size + 1`` connections in a process, however many
    workflows run: one session that holds the workflows' locks and writes every record,
    and a pool of ``pool_size`` for reads.

    Raises:
        StoreError: the server cannot be reached or a statement fails.
        CorruptStateError: the schema holds tables of another layout version.
    """

    def __init__(
        self,
        dsn: str,
        *,
        durability: Durability = "fsync",
        schema: str | None = None,
        pool_size: int = POOL_SIZE,
    ) -> None:
        if psycopg is None or psycopg_pool is None:  # pragma: no cover - depends on installs
            raise ImportError(
                "duravoke.PostgresStore needs psycopg 3 and psycopg_pool: install"
                " duravoke[postgres] (pip install 'duravoke[postgres]')."
            )
        if pool_size < 1:
            raise ValueError(f"pool_size must be at least 1, not {pool_size!r}")
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
        self._loads: Batcher[str, State | None] = Batcher(self._read_many, None)
        self._save_sql = _SAVE.format(s=s).encode()
        self._forget_sql = _FORGET.format(s=s).encode()
        self._ids_sql = _IDS.format(s=s).encode()
        self._summaries_sql = _SUMMARIES.format(s=s).encode()
        self._send_sql = _SEND.format(s=s).encode()
        self._messages_sql = _MESSAGES.format(s=s).encode()
        self._drop_messages_sql = _DROP_MESSAGES.format(s=s).encode()
        self._with_messages_sql = _WITH_MESSAGES.format(s=s).encode()
        self._version_sql = _VERSION.format(s=s).encode()
        self._pool_size = pool_size
        self._ready = False
        self._guard = threading.Lock()
        self._pid = os.getpid()
        self._pool: psycopg_pool.ConnectionPool[Connection] | None = None
        self._session: _Session | None = None
        weakref.finalize(self, _close_quietly, self._resources)

    def __repr__(self) -> str:
        return f"PostgresStore({self._location!r})"

    @property
    def location(self) -> str:
        """The DSN with any password masked (and the schema, when not the default)."""
        return self._location

    # --- Store ----------------------------------------------------------------------------

    def try_lock(self, workflow_id: str) -> Lease | None:
        """Take the workflow's advisory lock without waiting (on this process's session)."""
        return self.try_lock_many([workflow_id])[0]

    def try_lock_many(self, workflow_ids: list[str]) -> list[Lease | None]:
        """Take advisory locks without waiting, in one statement with whatever other
        threads attempt at the same time."""
        keys = [_lock_key("workflow", self.schema, check_workflow_id(w)) for w in workflow_ids]
        session = self._current_session()
        taken = session.attempts.get_many(keys)
        return [
            _PostgresLease(self, session, workflow_id, key) if ok else None
            for workflow_id, key, ok in zip(workflow_ids, keys, taken, strict=True)
        ]

    def load_many(self, leases: list[Lease]) -> list[State | Exception]:
        """The workflows' states in one statement (with the loads other threads make at
        the same time); a state that cannot be read fails them all."""
        states = self._loads.get_many([lease.workflow_id for lease in leases])
        loaded: list[State | Exception] = []
        for lease, found in zip(leases, states, strict=True):
            assert isinstance(lease, _PostgresLease)
            state = found or new_state()
            lease.header = {**state, "steps": {}}
            loaded.append(state)
        return loaded

    def read(self, workflow_id: str) -> State | None:
        """The workflow's recorded state, read in one snapshot without its lock."""
        return self._read_many([check_workflow_id(workflow_id)])[workflow_id]

    def _read_many(self, workflow_ids: list[str]) -> dict[str, State | None]:
        """Workflows' states in one statement, so one snapshot (the loads of runs that
        start at the same time share it)."""
        if len(workflow_ids) == 1:
            what = f"read workflow {workflow_ids[0]!r}"
        else:
            what = f"read {len(workflow_ids)} workflows"
        params = {"ids": [_db_id(w) for w in workflow_ids]}
        rows: dict[str, list[tuple[Any, ...]]] = {}
        for db_id, *row in self._query(what, self._load_sql, params):
            rows.setdefault(_py_id(db_id), []).append(tuple(row))
        return {w: self._rebuild(w, rows.get(w, [])) for w in workflow_ids}

    def workflow_ids(self) -> list[str]:
        """Every workflow with recorded state."""
        rows = self._query("list workflows", self._ids_sql)
        return sorted(_py_id(row[0]) for row in rows)

    def summaries(self) -> dict[str, State]:
        """Every workflow's summary, in one query."""
        found = {}
        for db_id, header, done, failing in self._query("list workflows", self._summaries_sql):
            if isinstance(header, dict):
                found[_py_id(db_id)] = {**header, "done": done, "failing": list(failing)}
        return found

    def send(self, workflow_id: str, topic: str, data: str) -> int:
        """Insert a message row in its own transaction; never takes the workflow's lock."""
        key = _lock_key("inbox", self.schema, check_workflow_id(workflow_id), topic)
        params = {"id": _db_id(workflow_id), "topic": topic, "data": data}
        self._ensure_ready()
        try:
            with self._read_pool().connection(timeout=10) as conn, conn.transaction():
                # Senders to one workflow and topic take turns, so that sequence numbers
                # follow commit order.
                conn.execute(b"SELECT pg_advisory_xact_lock(%s)", [key])
                row = conn.execute(self._send_sql, params).fetchone()
        except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
            raise self._error(f"send a message to workflow {workflow_id!r}", exc) from exc
        assert row is not None
        return int(row[0])

    def messages(self, workflow_id: str, topic: str, after: int) -> list[tuple[int, Any]]:
        """The message rows on ``topic`` after ``after``."""
        what = f"read the messages of workflow {check_workflow_id(workflow_id)!r}"
        params = {"id": _db_id(workflow_id), "topic": topic, "after": after}
        return [(int(seq), data) for seq, data in self._query(what, self._messages_sql, params)]

    def with_messages(self, topic: str, workflow_ids: Iterable[str]) -> set[str]:
        """One query for all of ``workflow_ids``."""
        params = {"ids": [_db_id(check_workflow_id(w)) for w in workflow_ids], "topic": topic}
        rows = self._query(f"read the messages on {topic!r}", self._with_messages_sql, params)
        return {_py_id(row[0]) for row in rows}

    def drop_messages(self, workflow_id: str) -> bool:
        """Delete the workflow's message rows."""
        self._ensure_ready()
        try:
            with self._read_pool().connection(timeout=10) as conn:
                cur = conn.execute(self._drop_messages_sql, {"id": _db_id(workflow_id)})
        except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
            raise self._error(f"delete the messages of workflow {workflow_id!r}", exc) from exc
        return cur.rowcount > 0

    def close(self) -> None:
        """Close the read pool, and the session once no workflow holds it."""
        _close_quietly(self._resources)

    # --- connections ----------------------------------------------------------------------

    def _resources(self) -> tuple[Any, ...]:
        # What close() and the finalizer release; never what a forked parent opened.
        with self._guard:
            if self._pid != os.getpid():
                return ()
            pool, self._pool = self._pool, None
            session = self._session
            if session is not None and not session.held:
                self._session = None
            else:
                session = None
            return tuple(x for x in (pool, session) if x is not None)

    def _forked(self) -> None:
        """After a fork: the parent's connections are the parent's; open our own."""
        if self._pid != os.getpid():
            # Never use or close them here: closing would end the parent's sessions.
            _INHERITED.extend(x for x in (self._pool, self._session) if x is not None)
            self._pool, self._session, self._pid = None, None, os.getpid()

    def _current_session(self) -> _Session:
        with self._guard:
            self._forked()
            session = self._session
            if session is None or session.dead:
                session = self._session = _Session(self)
            return session

    def _read_pool(self) -> psycopg_pool.ConnectionPool[Connection]:
        with self._guard:
            self._forked()
            if self._pool is None:
                self._pool = psycopg_pool.ConnectionPool(
                    self._conninfo,
                    min_size=0,
                    max_size=self._pool_size,
                    kwargs={"autocommit": True},
                    configure=self._set_durability,
                    check=psycopg_pool.ConnectionPool.check_connection,
                    open=False,
                    name="duravoke",
                )
                self._pool.open(wait=False)
            return self._pool

    def _query(
        self, what: str, query: bytes, params: Sequence[Any] | dict[str, Any] | None = None
    ) -> list[tuple[Any, ...]]:
        """Run one read-only statement on a pooled connection."""
        self._ensure_ready()
        try:
            with self._read_pool().connection(timeout=10) as conn:
                return conn.execute(query, params).fetchall()
        except psycopg_pool.PoolTimeout as exc:
            raise self._unreachable(exc) from exc
        except psycopg.OperationalError as exc:
            raise self._unreachable(exc) from exc
        except psycopg.Error as exc:
            raise self._error(what, exc) from exc

    def _ensure_ready(self) -> None:
        if not self._ready:
            # The first connection sets up the tables, and fails fast (the pool retries).
            self._current_session()

    def _connect(self) -> Connection:
        try:
            conn: Connection = psycopg.connect(self._conninfo, autocommit=True)
        except psycopg.Error as exc:
            raise self._unreachable(exc) from exc
        try:
            self._configure(conn)
        except BaseException as exc:
            conn.close()
            if isinstance(exc, psycopg.Error):
                raise self._error("set up the duravoke tables", exc) from exc
            raise
        return conn

    def _set_durability(self, conn: Connection) -> None:
        if self.durability == "flush":
            conn.execute(b"SET synchronous_commit = off")

    def _configure(self, conn: Connection) -> None:
        self._set_durability(conn)
        if not self._ready:
            self._setup(conn)
            self._ready = True

    def _unreachable(self, exc: BaseException) -> StoreError:
        return StoreError(
            f"could not connect to the Postgres server at {self._location}: {_reason(exc)}",
            path=self._location,
        )

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


class _Session:
    """One connection that holds this process's workflow locks and writes every record.

    Its statements are serialized by a thread lock. When it dies (a server restart, a
    network cut), the server has released its locks: every lease on it fails from then
    on, and the store opens a new session for new leases.
    """

    def __init__(self, store: PostgresStore) -> None:
        self.store = store
        self.conn = store._connect()
        self.lock = threading.Lock()
        self.held: set[int] = set()  # advisory lock keys taken through this session
        self.dead = False
        self.failed_ids = ""
        # (lease, its records, whether to release its lock once they are committed)
        self.commit: GroupCommit[tuple[_PostgresLease, Sequence[Record], bool]] = GroupCommit(
            self._write, self._failed
        )
        self.attempts: Batcher[int, bool] = Batcher(self._try_locks, False, exclusive=True)

    def _try_locks(self, keys: list[int]) -> dict[int, bool]:
        with self.lock:
            # Held here already: another thread of this process runs it.
            fresh = [key for key in keys if key not in self.held]
            if not fresh:
                return {}
            what = f"lock {len(fresh)} workflow(s)"
            taken = {k for k, ok in self._execute(what, _TRY_LOCKS, [fresh]) if ok}
            self.held |= taken
            return dict.fromkeys(taken, True)

    def unlock(self, key: int, what: str) -> None:
        with self.lock:
            self.held.discard(key)
            if not self.dead:
                self._execute(what, b"SELECT pg_advisory_unlock(%s)", [key])
            self._close_if_replaced()

    def _close_if_replaced(self) -> None:
        if not self.held and self.store._session is not self:
            self.close()  # replaced (or the store closed) while in use

    def _execute(
        self, what: str, query: bytes, params: Sequence[Any] | dict[str, Any]
    ) -> psycopg.Cursor[tuple[Any, ...]]:
        try:
            return self.conn.execute(query, params)
        except BaseException as exc:
            # Its state is unknown now, and with it the locks: drop it.
            self.dead = True
            self.conn.close()
            if isinstance(exc, psycopg.Error):
                raise self.store._error(what, exc) from exc
            raise

    def _write(self, batch: list[tuple[_PostgresLease, Sequence[Record], bool]]) -> None:
        headers: dict[str, str] = {}
        steps: dict[tuple[str, str], str] = {}
        releases = [lease._key for lease, _records, release in batch if release]
        for lease, records, _release in batch:
            if not records:
                continue
            for record in records:
                apply(lease.header, record)
                sid = record.get("sid")
                if sid is not None:
                    steps[(lease.db_id, sid)] = compact(record)
            lease.header["steps"].clear()
            headers[lease.db_id] = compact({k: v for k, v in lease.header.items() if k != "steps"})
        params = {
            "states": json.dumps(list(headers.items())),
            "records": json.dumps([(w, s, r) for (w, s), r in steps.items()]),
        }
        with self.lock:
            try:
                if self.dead:
                    raise StoreError("the session to the server was lost")
                if headers:
                    self.conn.execute(self.store._save_sql, params)
                if releases:
                    # After the COMMIT above: the next holder of a lock sees every record.
                    self.conn.execute(_UNLOCK_MANY, [releases])
                    self.held.difference_update(releases)
                    self._close_if_replaced()
            except BaseException:
                self.close()  # its state, and with it the locks, is unknown now
                self.failed_ids = ", ".join(sorted({repr(_py_id(i)) for i in headers}))
                raise

    def _failed(self, failure: BaseException) -> StoreError:
        return StoreError(
            f"could not record a step of workflow {self.failed_ids} in {self.store.location}:"
            f" {_reason(failure)}. What was recorded before is kept; run the workflow again"
            " once the server is reachable.",
            path=self.store.location,
        )

    def close(self) -> None:
        self.dead = True
        self.conn.close()


class _PostgresLease(Lease):
    def __init__(self, store: PostgresStore, session: _Session, workflow_id: str, key: int) -> None:
        super().__init__(workflow_id)
        self._store = store
        self._session = session
        self._key = key
        self.db_id = _db_id(workflow_id)
        #: The workflow row as written so far; "steps" is scratch space for apply().
        self.header = new_state()

    def load(self) -> State:
        state = self._store.load_many([self])[0]
        assert not isinstance(state, Exception)  # it raises for all instead
        return state

    def append(self, records: Sequence[Record]) -> None:
        self.enqueue(records).wait()

    def enqueue(self, records: Sequence[Record]) -> Ticket:
        return self._session.commit.ticket((self, records, False))

    def close(self) -> None:
        self._session.unlock(self._key, f"release workflow {self.workflow_id!r}")

    def release(self, records: Sequence[Record]) -> Waitable:
        # The unlock rides in the batch (one statement for all the runs that end in it),
        # so an async run ends without a thread hand-off and a round trip of its own.
        # Nothing to do after it: the batch forgets the key as it unlocks it (forgetting
        # it later could forget another thread's new hold of it), and a failed batch
        # kills the session, with every lock it held.
        return self._session.commit.ticket((self, records, True))

    def forget(self) -> bool:
        what = f"forget workflow {self.workflow_id!r}"
        with self._session.lock:
            row = self._session._execute(what, self._store._forget_sql, {"id": self.db_id})
            found = row.fetchone()
        return found is not None and found[0] > 0


_INHERITED: list[Any] = []


def _close_quietly(resources: Callable[[], tuple[Any, ...]]) -> None:
    for resource in resources():
        with contextlib.suppress(Exception):
            resource.close()
