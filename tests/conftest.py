"""Shared fixtures: a private store folder for every test, every store kind, both async backends."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

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


#: The store kinds every behaviour test runs against.
STORE_KINDS = ["directory", "kkv", "memory"]


def make_store(kind: str, folder: Path) -> duravoke.Store:
    """A fresh store of ``kind`` whose files (if any) live under ``folder``."""
    if kind == "directory":
        return duravoke.DirectoryStore(folder / "store")
    if kind == "kkv":
        return duravoke.PersistedKKV(folder / "duravoke_state.json")
    if kind == "memory":
        return duravoke.InMemoryKKV()
    raise ValueError(kind)


@pytest.fixture(params=STORE_KINDS)
def store_kind(request: pytest.FixtureRequest) -> str:
    """The name of the store kind under test."""
    return str(request.param)


@pytest.fixture
def store(store_kind: str, tmp_path: Path) -> Iterator[duravoke.Store]:
    """A fresh store of every kind in turn."""
    yield make_store(store_kind, tmp_path)


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

