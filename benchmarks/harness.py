"""The machinery every scenario shares: counters, timing, fresh processes, the registry.

Counting is done from the outside, in the benchmark process: ``os.fsync`` and
``os.fdatasync`` are replaced by counting wrappers, and psycopg's cursors, commits and
transactions are wrapped to count the write transactions that reach the server. The
library keeps no counter for the benchmark.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import gc
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import threading
import time
import traceback
import tracemalloc
import weakref
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import duravoke

ROOT = Path(__file__).resolve().parent.parent
RUN_PY = Path(__file__).resolve().parent / "run.py"

now_ns = time.perf_counter_ns

#: The floors call the real functions; the library sees the counting wrappers.
REAL_FSYNC = os.fsync
REAL_FDATASYNC: Callable[[Any], None] | None = getattr(os, "fdatasync", None)


# --- counters -------------------------------------------------------------------------------


class SyncCounter:
    """Counts ``os.fsync`` and ``os.fdatasync`` calls made anywhere in this process.

    The library calls them through the ``os`` module at call time, so it sees the
    wrappers once :meth:`install` ran. A module doing ``from os import fsync`` before
    that would escape the count: none does today.
    """

    def __init__(self) -> None:
        self.count = 0
        self._guard = threading.Lock()

    def _wrap(self, real: Callable[[Any], None]) -> Callable[[Any], None]:
        def counted(fd: Any) -> None:
            real(fd)
            with self._guard:
                self.count += 1

        return counted

    def install(self) -> None:
        """Put the counting wrappers in place of the real functions, for good."""
        # setattr: the wrappers take what the real functions take, typed loosely.
        setattr(os, "fsync", self._wrap(REAL_FSYNC))  # noqa: B010
        if REAL_FDATASYNC is not None:
            setattr(os, "fdatasync", self._wrap(REAL_FDATASYNC))  # noqa: B010


# A statement that changes data or schema: its transaction makes the server flush WAL.
# A SELECT that only reads (or takes an advisory lock) commits nothing durable.
_WRITES = re.compile(
    rb"\b(INSERT|UPDATE|DELETE|MERGE|CREATE|DROP|ALTER|TRUNCATE|COPY)\b", re.IGNORECASE
)


def _query_bytes(query: Any) -> bytes:
    if isinstance(query, bytes):
        return query
    if isinstance(query, str):
        return query.encode()
    return str(query).encode()  # psycopg.sql.Composed: its repr names the SQL parts


class CommitCounter:
    """Counts Postgres transactions that wrote and committed, by wrapping psycopg.

    A connection becomes dirty when a statement that writes runs on it; when it is next
    seen idle (autocommit statement finished, ``commit()``, the outermost
    ``transaction()`` block left without error, an explicit ``COMMIT``) one commit is
    counted. Rollbacks and failed statements count nothing. Sync and async psycopg
    classes are both wrapped.
    """

    def __init__(self) -> None:
        self.count = 0
        self._dirty: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()
        self._guard = threading.Lock()

    def _settle(self, conn: Any, *, ok: bool) -> None:
        from psycopg.pq import TransactionStatus

        if conn is None or conn.info.transaction_status != TransactionStatus.IDLE:
            return
        with self._guard:
            if self._dirty.pop(conn, False) and ok:
                self.count += 1

    def _mark(self, conn: Any, query: Any) -> None:
        if conn is not None and _WRITES.search(_query_bytes(query)):
            with self._guard:
                self._dirty[conn] = True

    def _wrap(
        self, real: Callable[..., Any], *, cursor: bool, commits: bool, is_async: bool
    ) -> Callable[..., Any]:
        """``real`` wrapped: a cursor's statement marks its connection; after any call
        the connection is settled (``commits`` False for rollbacks)."""

        def conn_of(obj: Any) -> Any:
            return obj.connection if cursor or hasattr(obj, "savepoint_name") else obj

        def before(obj: Any, args: tuple[Any, ...]) -> None:
            if cursor and args:
                self._mark(conn_of(obj), args[0])

        def after(obj: Any, args: tuple[Any, ...], ok: bool) -> None:
            # Transaction.__exit__(exc_type, ...): a block left by an exception rolls back.
            clean = not (hasattr(obj, "savepoint_name") and args and args[0] is not None)
            self._settle(conn_of(obj), ok=ok and commits and clean)

        if is_async:

            async def awrapper(obj: Any, *args: Any, **kwargs: Any) -> Any:
                before(obj, args)
                ok = False
                try:
                    result = await real(obj, *args, **kwargs)
                    ok = True
                    return result
                finally:
                    after(obj, args, ok)

            return awrapper

        def wrapper(obj: Any, *args: Any, **kwargs: Any) -> Any:
            before(obj, args)
            ok = False
            try:
                result = real(obj, *args, **kwargs)
                ok = True
                return result
            finally:
                after(obj, args, ok)

        return wrapper

    def install(self) -> bool:
        """Wrap psycopg's classes; False when psycopg is not installed."""
        try:
            import psycopg
        except ImportError:
            return False
        targets: list[tuple[type, str, bool, bool, bool]] = [
            # (class, method, is a cursor, can commit, async)
            (psycopg.Connection, "commit", False, True, False),
            (psycopg.Connection, "rollback", False, False, False),
            (psycopg.AsyncConnection, "commit", False, True, True),
            (psycopg.AsyncConnection, "rollback", False, False, True),
            (psycopg.Transaction, "__exit__", False, True, False),
            (psycopg.AsyncTransaction, "__aexit__", False, True, True),
        ]
        cursors: list[tuple[type, bool]] = [
            (psycopg.Cursor, False),
            (psycopg.ClientCursor, False),
            (psycopg.AsyncCursor, True),
            (psycopg.AsyncClientCursor, True),
        ]
        for ccls, is_async in cursors:
            targets += [(ccls, name, True, True, is_async) for name in ("execute", "executemany")]
        for cls, name, cursor, commits, is_async in targets:
            if name in vars(cls):  # subclasses that inherit it are wrapped through the base
                real = vars(cls)[name]
                setattr(
                    cls, name, self._wrap(real, cursor=cursor, commits=commits, is_async=is_async)
                )
        return True


FSYNCS = SyncCounter()
COMMITS = CommitCounter()
_installed = False


def install_counters() -> None:
    """Install both counters in this process (once)."""
    global _installed
    if not _installed:
        FSYNCS.install()
        COMMITS.install()
        _installed = True


def durable_writes(store_kind: str) -> int:
    """What makes steps durable in ``store_kind``, counted so far: commits or fsyncs."""
    return COMMITS.count if store_kind == "postgres" else FSYNCS.count


# --- stores ---------------------------------------------------------------------------------

STORE_KINDS = ("directory", "kkv", "postgres")


def make_store(kind: str, folder: Path, dsn: str | None, durability: str = "fsync") -> Any:
    """A fresh store object of ``kind``, as a new run of the program would build it."""
    if kind == "directory":
        return duravoke.DirectoryStore(folder, durability=durability)  # type: ignore[arg-type]
    if kind == "kkv":
        return duravoke.PersistedKKV(folder / "state.json", durability=durability)  # type: ignore[arg-type]
    if kind == "postgres":
        if dsn is None:
            raise ValueError("a postgres store needs --postgres DSN")
        return duravoke.open_store(dsn, durability=durability)  # type: ignore[arg-type]
    raise ValueError(f"unknown store kind {kind!r}")


def with_schema(dsn: str, schema: str) -> str:
    """``dsn`` with a ``schema`` query parameter: each run gets a schema of its own."""
    return dsn + ("&" if "?" in dsn else "?") + "schema=" + schema


def drop_schema(dsn: str, schema: str) -> None:
    """Drop a benchmark schema; errors are ignored (the server may be gone)."""
    with contextlib.suppress(Exception):
        import psycopg

        base = re.sub(r"[?&]schema=[^&]*", "", dsn)
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'.encode())


def folder_bytes(folder: Path) -> int:
    """Sum of the sizes of the files under ``folder`` (a file that a checkpoint running
    in the background deletes meanwhile counts for nothing)."""
    total = 0
    for root, _, names in os.walk(folder):
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                total += (Path(root) / name).stat().st_size
    return total


# --- fresh processes ------------------------------------------------------------------------

CHILD_MARK = "@@bench-result@@ "


class ChildError(Exception):
    """A scenario's fresh process raised, timed out or printed no result."""


#: --smoke: call the "fresh process" functions in this process (seconds, not minutes).
INLINE = [False]


def _inline(target: str, kwargs: dict[str, Any]) -> Any:
    import importlib

    module, _, name = target.partition(":")
    try:
        result = getattr(importlib.import_module(module), name)(**kwargs)
    except Exception as exc:
        raise ChildError(describe(exc)) from exc
    return json.loads(json.dumps(result))


def in_child(
    target: str,
    timeout: float = 300.0,
    env: dict[str, str] | None = None,
    fresh: bool = False,
    **kwargs: Any,
) -> Any:
    """Run ``module:function(**kwargs)`` of this folder in a fresh Python process.

    The child installs the counters, calls the function and prints its JSON result;
    an exception in the child becomes :class:`ChildError` with its last line.
    """
    if INLINE[0] and not env and not fresh:
        return _inline(target, kwargs)
    child_env = {**os.environ, **(env or {})}
    child_env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *filter(None, [child_env.get("PYTHONPATH")])]
    )
    cmd = [sys.executable, str(RUN_PY), "--child", target, json.dumps(kwargs)]
    try:
        out = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, env=child_env, check=False
        )
    except subprocess.TimeoutExpired:
        raise ChildError(f"timed out after {timeout:.0f} s") from None
    for line in reversed(out.stdout.splitlines()):
        if line.startswith(CHILD_MARK):
            result = json.loads(line[len(CHILD_MARK) :])
            if isinstance(result, dict) and "__error__" in result:
                raise ChildError(result["__error__"])
            return result
    tail = (out.stderr.strip().splitlines() or ["no output"])[-1]
    raise ChildError(f"exit {out.returncode}: {tail[:200]}")


def child_main(target: str, kwargs_json: str) -> int:
    """The child's side of :func:`in_child`."""
    import importlib

    install_counters()
    module, _, name = target.partition(":")
    fn = getattr(importlib.import_module(module), name)
    try:
        gc.collect()
        result = fn(**json.loads(kwargs_json))
    except BaseException as exc:  # report every failure as a row, never a crash
        traceback.print_exc()
        result = {"__error__": describe(exc)}
    print(CHILD_MARK + json.dumps(result), flush=True)
    return 0


def describe(exc: BaseException) -> str:
    """One line for a failure, digging into exception groups for the first cause."""
    while getattr(exc, "exceptions", None):  # an ExceptionGroup (a builtin from 3.11)
        exc = exc.exceptions[0]  # type: ignore[attr-defined]
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:400]


# --- results --------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


@dataclasses.dataclass
class Table:
    """What a scenario prints: rows of cells, each row with its floor and ratio to it.

    Cells are numbers, strings (a failure reads ``"fails: ..."``, a missing feature
    ``"n/a: ..."``) or None (printed ``-``). Every table has the columns ``floor`` and
    ``x floor`` (the row's figure divided by the floor's, so 1.0 means "as fast as the
    floor" and bigger is slower).
    """

    name: str
    title: str
    columns: list[str]
    rows: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)

    def add(self, cells: dict[str, Any]) -> None:
        """Append a row; columns it does not name are left empty."""
        unknown = set(cells) - set(self.columns)
        if unknown:
            raise KeyError(f"table {self.name!r} has no columns {sorted(unknown)}")
        self.rows.append({c: cells.get(c) for c in self.columns})


def ratio(value: float | None, floor: float | None) -> float | None:
    if value is None or floor is None or floor <= 0:
        return None
    return value / floor


# --- the registry ---------------------------------------------------------------------------


@dataclasses.dataclass
class Sizes:
    """How big each scenario is in a mode: full, --quick, or --smoke (the pytest)."""

    steps: dict[int, int]  # steps per workflow -> reps
    concurrent: tuple[int, ...]
    concurrent_reps: int
    threads: tuple[int, ...]
    thread_workflows: int
    list_counts: tuple[int, ...]
    memory_steps: int
    resume_total: int
    resume_due: int
    sleeping: int
    typed_steps: int
    group_steps: int


SIZES = {
    "full": Sizes({100: 5, 1_000: 3, 10_000: 3}, (1, 10, 100, 500), 3, (1, 8, 32), 128,
                  (1_000, 10_000), 100_000, 10_000, 100, 10_000, 1_000, 1_000),
    "quick": Sizes({100: 3, 1_000: 1}, (500,), 1, (1, 32), 32,
                   (500,), 10_000, 1_000, 100, 1_000, 300, 1_000),
    "smoke": Sizes({100: 1}, (1, 4), 1, (1, 2), 4, (20,), 300, 20, 5, 20, 30, 50),
}  # fmt: skip


@dataclasses.dataclass
class Context:
    """What a scenario gets: where to work, how big, which backends and stores."""

    base: Path
    mode: str  # "full", "quick" or "smoke"
    dsn_base: str | None  # the Postgres DSN given, if a store could use it; else None
    backends: tuple[str, ...]
    stores: tuple[str, ...]
    #: The run's own Postgres schema (dropped at the end), so no row meets another run's.
    schema: str = "duravoke_bench"
    floors: dict[str, Any] = dataclasses.field(default_factory=dict)
    schemas: list[str] = dataclasses.field(default_factory=list)
    made: int = 0

    @property
    def dsn(self) -> str | None:
        """The DSN for PostgresStore: the given one, with the run's schema."""
        return None if self.dsn_base is None else with_schema(self.dsn_base, self.schema)

    def fresh_schema(self, name: str) -> str:
        """A DSN with a schema of its own (for a scenario that counts every workflow)."""
        if self.dsn_base is None:
            raise ValueError("no Postgres DSN")
        schema = f"{self.schema}_{name}"
        self.schemas.append(schema)
        return with_schema(self.dsn_base, schema)

    @property
    def size(self) -> Sizes:
        return SIZES[self.mode]

    def folder(self, name: str) -> Path:
        """A fresh private folder under the run's base folder."""
        self.made += 1
        path = self.base / f"{self.made:04d}-{name}"  # unique even if names repeat
        path.mkdir(mode=0o700, parents=True)
        return path

    def memo(self, key: str, compute: Callable[[], Any]) -> Any:
        """A floor measured once per run and shared by the scenarios that compare to it."""
        if key not in self.floors:
            self.floors[key] = compute()
        return self.floors[key]


@dataclasses.dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    fn: Callable[[Context], list[Table]]
    #: Attributes of the ``duravoke`` module it needs; missing ones make an "n/a" row.
    needs: tuple[str, ...] = ()


SCENARIOS: dict[str, Scenario] = {}


def scenario(
    name: str, title: str, *, needs: tuple[str, ...] = ()
) -> Callable[[Callable[[Context], list[Table]]], Callable[[Context], list[Table]]]:
    """Register a scenario: a function of the run's :class:`Context` returning tables."""

    def register(fn: Callable[[Context], list[Table]]) -> Callable[[Context], list[Table]]:
        if name in SCENARIOS:
            raise ValueError(f"scenario {name!r} registered twice")
        SCENARIOS[name] = Scenario(name, title, fn, needs)
        return fn

    return register


def missing_api(needs: Sequence[str]) -> str | None:
    gone = [n for n in needs if not hasattr(duravoke, n)]
    return None if not gone else "n/a: needs " + ", ".join(f"duravoke.{n}" for n in gone)


def run_scenario(sc: Scenario, ctx: Context) -> list[Table]:
    """Run one scenario; a missing API or an unexpected error becomes a one-row table."""
    why = missing_api(sc.needs)
    if why is None:
        try:
            return sc.fn(ctx)
        except Exception as exc:
            traceback.print_exc()
            why = f"fails: {describe(exc)}"
    table = Table(sc.name, sc.title, ["scenario", "result", "floor", "x floor"])
    table.add({"scenario": sc.name, "result": why})
    return [table]


# --- machine facts --------------------------------------------------------------------------


def filesystem(path: Path) -> str:
    """The filesystem type, device and mount point that hold ``path``."""
    real = os.path.realpath(path)
    best: tuple[str, str, str] | None = None
    with contextlib.suppress(OSError), open("/proc/mounts", encoding="utf-8") as f:
        for line in f:
            device, mount, fstype = line.split()[:3]
            mount = mount.replace("\\040", " ")
            inside = real == mount or real.startswith(mount.rstrip("/") + "/")
            if inside and (best is None or len(mount) > len(best[1])):
                best = (device, mount, fstype)
    where = "unknown" if best is None else f"{best[2]} ({best[0]} on {best[1]})"
    st = os.statvfs(real)
    return f"{where}, {st.f_bavail * st.f_frsize / 2**30:.0f} GiB free"


def machine_facts(base: Path) -> dict[str, Any]:
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "duravoke": getattr(duravoke, "__version__", "?"),
        "folder": str(base),
        "filesystem": filesystem(base),
    }


@contextlib.contextmanager
def timer() -> Iterator[list[float]]:
    """``with timer() as t:`` leaves the elapsed seconds in ``t[0]``."""
    out: list[float] = []
    t0 = now_ns()
    try:
        yield out
    finally:
        out.append((now_ns() - t0) / 1e9)


@contextlib.contextmanager
def peak_memory(trace: bool) -> Iterator[list[int]]:
    """``with peak_memory(trace) as m:`` leaves the peak bytes of the block in ``m[0]``.

    ``trace``: the tracemalloc peak (Python allocations only). Otherwise the growth of
    the process's peak RSS (``ru_maxrss``) over the block: meant for a fresh process,
    whose earlier peak is its imports, and never run with tracemalloc (which inflates it).
    """
    import resource

    out: list[int] = []
    if trace:
        tracemalloc.start()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        yield out
    finally:
        if trace:
            out.append(tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()
        else:
            after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            out.append(max(after - before, 0) * 1024)  # KiB on Linux


def progress(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)
