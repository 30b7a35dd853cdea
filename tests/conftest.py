"""Shared fixtures: a private store folder for every test, every store kind, both async backends."""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import duravoke


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Every async test runs on asyncio and on trio."""
    return str(request.param)


@pytest.fixture(autouse=True)
def duravoke_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the default store at a fresh folder, so no test touches the user's state."""
    home = tmp_path / "duravoke-home"
    monkeypatch.setenv("DURAVOKE_HOME", str(home))
    return home


#: A Postgres server for the "postgres" store kind (and tests/test_postgres.py), if any.
POSTGRES_DSN = os.environ.get("DURAVOKE_TEST_POSTGRES_DSN", "")
#: Every Postgres store a test makes gets a schema of its own, named with this prefix
#: (unique to this pytest session, as the server may be shared) and dropped at the end.
POSTGRES_SCHEMA_PREFIX = f"dvtest_{secrets.token_hex(4)}_"
_postgres_stores: list[duravoke.PostgresStore] = []

#: The store kinds every behaviour test runs against.
STORE_KINDS = ["directory", "kkv", "memory", *(["postgres"] if POSTGRES_DSN else [])]


def postgres_schema(folder: Path) -> str:
    """The schema of the Postgres stores made for ``folder``: the same for a reopen."""
    return POSTGRES_SCHEMA_PREFIX + hashlib.sha256(str(folder).encode()).hexdigest()[:16]


def make_store(kind: str, folder: Path) -> duravoke.Store:
    """A fresh store of ``kind`` whose files (if any) live under ``folder``."""
    if kind == "directory":
        return duravoke.DirectoryStore(folder / "store")
    if kind == "kkv":
        return duravoke.PersistedKKV(folder / "duravoke_state.json")
    if kind == "memory":
        return duravoke.InMemoryKKV()
    if kind == "postgres":
        store = duravoke.PostgresStore(POSTGRES_DSN, schema=postgres_schema(folder))
        _postgres_stores.append(store)
        return store
    raise ValueError(kind)


@pytest.fixture(autouse=True)
def _close_postgres_stores() -> Iterator[None]:
    """Close the idle connections of this test's Postgres stores (the server has a limit)."""
    yield
    while _postgres_stores:
        _postgres_stores.pop().close()


@pytest.fixture(autouse=True, scope="session")
def _drop_postgres_schemas() -> Iterator[None]:
    """Drop the schemas this session's Postgres stores created."""
    yield
    if not POSTGRES_DSN:
        return
    import psycopg
    from psycopg import sql

    with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, %s)",
            [POSTGRES_SCHEMA_PREFIX],
        ).fetchall()
        for (name,) in rows:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture(params=STORE_KINDS)
def store_kind(request: pytest.FixtureRequest) -> str:
    """The name of the store kind under test."""
    return str(request.param)


@pytest.fixture
def store(store_kind: str, tmp_path: Path) -> duravoke.Store:
    """A fresh store of every kind in turn."""
    return make_store(store_kind, tmp_path)


@pytest.fixture
def d(store: duravoke.Store) -> duravoke.Duravoke:
    """A Duravoke instance on a fresh store (of every kind in turn)."""
    return duravoke.Duravoke(store)


@pytest.fixture
def reopen(store_kind: str, tmp_path: Path, store: duravoke.Store):  # type: ignore[no-untyped-def]
    """Make a new instance on the same state, as a re-run of the program would.

    For the memory store, the same store object stands for "the same state".
    """

    def _reopen() -> duravoke.Duravoke:
        if store_kind == "memory":
            return duravoke.Duravoke(store)
        return duravoke.Duravoke(make_store(store_kind, tmp_path))

    return _reopen


#: Kinds of store that worker processes open from a spec string (see :func:`spec`).
SPEC_KINDS = ["directory", "kkv", *(["postgres"] if POSTGRES_DSN else [])]


def store_specs(tmp_path: Path) -> list[str]:
    """Spec strings for ``open_store``, one per :data:`SPEC_KINDS`.

    The Postgres store gets a schema of its own, which is dropped after the session.
    """
    folder = tmp_path / "store"
    specs = [str(folder), str(folder / "state.json")]
    if POSTGRES_DSN:
        glue = "&" if "?" in POSTGRES_DSN else "?"
        specs.append(f"{POSTGRES_DSN}{glue}schema={postgres_schema(tmp_path)}")
    return specs


def close_store(store: duravoke.Store) -> None:
    """Let go of a store's connections, if it has any (the Postgres server has a limit)."""
    closer = getattr(store, "close", None)
    if closer is not None:
        closer()


@pytest.fixture(params=SPEC_KINDS)
def spec_kind(request: pytest.FixtureRequest) -> str:
    """The kind of store a worker process opens."""
    return str(request.param)


@pytest.fixture
def spec(spec_kind: str, tmp_path: Path) -> str:
    """A spec string of kind ``spec_kind``; Postgres is skipped (visibly) if it cannot open."""
    value = store_specs(tmp_path)[SPEC_KINDS.index(spec_kind)]
    try:
        close_store(duravoke.open_store(value))
    except ImportError as exc:
        pytest.skip(f"PostgresStore cannot be opened: {exc!r}")
    return value


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    """Child processes to kill if a test fails while they still run."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def finished(proc: subprocess.Popen[str], expect: int = 0) -> tuple[str, str]:
    """Wait (bounded) for ``proc`` to exit with code ``expect``; its (stdout, stderr)."""
    try:
        out, err = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"child process hung; stderr:\n{err}")
    assert proc.returncode == expect, f"exit {proc.returncode}; stdout:\n{out}\nstderr:\n{err}"
    return out, err


@contextlib.contextmanager
def counting_fsyncs() -> Iterator[list[int]]:
    """Inside the block, every ``os.fsync`` call (the real one is made) appends its file
    descriptor to the yielded list. Checkpoints running in the background when the block
    starts (an earlier test's store folding its file) are waited for first: their fsyncs
    are not the block's."""
    for thread in threading.enumerate():
        if thread.name == "duravoke-checkpoint":
            thread.join(60)
    counted: list[int] = []
    real_fsync = os.fsync

    def counting_fsync(fd: Any) -> None:
        counted.append(fd)
        real_fsync(fd)

    os.fsync = counting_fsync
    try:
        yield counted
    finally:
        os.fsync = real_fsync


def wait_for(predicate: Callable[[], object], what: str, limit: float = 15.0) -> None:
    """Poll ``predicate`` until it holds; fail saying ``what`` after ``limit`` seconds."""
    deadline = time.monotonic() + limit
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
