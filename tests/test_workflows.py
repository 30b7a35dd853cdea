"""workflow(): with and async with, following tasks and threads, status, instances."""

from __future__ import annotations

import contextvars
import functools
import inspect
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest
from conftest import make_store

import duravoke

Reopen = Callable[[], duravoke.Duravoke]


class Boom(Exception):
    """A failure the tests raise on purpose."""


def _fns(inst: duravoke.Duravoke, wid: str = "w") -> list[str]:
    """The short names of the functions recorded in workflow ``wid``, sorted."""
    state = inst.store.read(wid)
    assert state is not None, f"nothing recorded for {wid!r}"
    return sorted(s["fn"].rpartition(".")[2] for s in state["steps"].values())


def _define(inst: duravoke.Duravoke, calls: list[Any]) -> Any:
    @inst.duravoke
    def sync_step(x: int) -> int:
        calls.append(("sync", x))
        return x * 10

    @inst.duravoke
    async def async_step(x: int) -> int:
        await anyio.lowlevel.checkpoint()
        calls.append(("async", x))
        return x * 100

    return sync_step, async_step


def test_with_records_into_the_workflow(d: duravoke.Duravoke, reopen: Reopen) -> None:
    calls: list[Any] = []
    sync_step, _ = _define(d, calls)
    with d.workflow("w") as wf:
        assert wf.workflow_id == "w"
        assert sync_step(1) == 10
    assert _fns(d) == ["sync_step"]
    state = d.store.read("w")
    assert state is not None
    assert (state["status"], state["error"], state["runs"]) == ("completed", None, 1)
    assert d.store.workflow_ids() == ["w"]
    inst = reopen()
    sync_step, _ = _define(inst, calls)
    with inst.workflow("w"):
        assert sync_step(1) == 10
    assert calls == [("sync", 1)]
    # A run that only replayed, with the same outcome, writes nothing at all.
    assert inst.store.read("w") == state


@pytest.mark.anyio
async def test_async_with_records_into_the_workflow(d: duravoke.Duravoke, reopen: Reopen) -> None:
    calls: list[Any] = []
    sync_step, async_step = _define(d, calls)
    async with d.workflow("w") as wf:
        assert wf.workflow_id == "w"
        assert await async_step(1) == 100
        assert sync_step(2) == 20  # a sync step called from async code
    assert _fns(d) == ["async_step", "sync_step"]
    assert d.store.read("w")["status"] == "completed"  # type: ignore[index]
    inst = reopen()
    sync_step, async_step = _define(inst, calls)
    async with inst.workflow("w"):
        assert (await async_step(1), sync_step(2)) == (100, 20)
    assert len(calls) == 2


@pytest.mark.anyio
async def test_the_workflow_follows_tasks_in_a_task_group(
    d: duravoke.Duravoke, reopen: Reopen
) -> None:
    calls: list[Any] = []
    results: dict[int, int] = {}

    async def run(inst: duravoke.Duravoke) -> None:
        _, async_step = _define(inst, calls)

        async def task(i: int) -> None:
            results[i] = await async_step(i)

        async with inst.workflow("w"):
            async with anyio.create_task_group() as tg:
                for i in range(5):
                    tg.start_soon(task, i)

    await run(d)
    assert _fns(d) == ["async_step"] * 5
    assert d.store.workflow_ids() == ["w"]  # no task formed a workflow of its own
    assert results == {i: i * 100 for i in range(5)}
    results.clear()
    await run(reopen())
    assert results == {i: i * 100 for i in range(5)}
    assert len(calls) == 5


@pytest.mark.anyio
async def test_the_workflow_follows_to_thread_run_sync(
    d: duravoke.Duravoke, reopen: Reopen
) -> None:
    calls: list[Any] = []

    async def run(inst: duravoke.Duravoke) -> list[int]:
        sync_step, _ = _define(inst, calls)
        async with inst.workflow("w"):
            first = await anyio.to_thread.run_sync(sync_step, 3)
            second = await anyio.to_thread.run_sync(functools.partial(sync_step, x=4))
        return [first, second]

    assert await run(d) == [30, 40]
    assert _fns(d) == ["sync_step", "sync_step"]
    assert d.store.workflow_ids() == ["w"]
    assert await run(reopen()) == [30, 40]
    assert len(calls) == 2


def test_the_workflow_follows_a_copied_context_into_a_thread(
    d: duravoke.Duravoke, reopen: Reopen
) -> None:
    calls: list[Any] = []

    def run(inst: duravoke.Duravoke) -> list[int]:
        sync_step, _ = _define(inst, calls)
        out: list[int] = []
        with inst.workflow("w"):
            ctx = contextvars.copy_context()
            thread = threading.Thread(target=ctx.run, args=(lambda: out.append(sync_step(5)),))
            thread.start()
            thread.join(timeout=30)
            assert not thread.is_alive()
        return out

    assert run(d) == [50]
    assert _fns(d) == ["sync_step"]
    assert d.store.workflow_ids() == ["w"]
    assert run(reopen()) == [50]
    assert calls == [("sync", 5)]


def test_a_plain_thread_does_not_inherit_the_workflow(d: duravoke.Duravoke) -> None:
    # threading.Thread starts with an empty context: its call is a workflow of its own.
    calls: list[Any] = []
    sync_step, _ = _define(d, calls)
    with d.workflow("w"):
        thread = threading.Thread(target=sync_step, args=(6,))
        thread.start()
        thread.join(timeout=30)
    assert calls == [("sync", 6)]
    ids = d.store.workflow_ids()
    assert len(ids) == 2
    assert "w" in ids
    assert d.store.read("w")["steps"] == {}  # type: ignore[index]


def test_status_failed_with_the_errors_repr_then_completed(
    d: duravoke.Duravoke, reopen: Reopen
) -> None:
    calls: list[Any] = []
    sync_step, _ = _define(d, calls)
    error = Boom("disk full", 42)

    def first_run() -> None:
        with d.workflow("w"):
            sync_step(1)
            raise error  # outside any step: the workflow fails, the step is kept

    with pytest.raises(Boom):
        first_run()
    state = d.store.read("w")
    assert state is not None
    assert state["status"] == "failed"
    assert state["error"] == repr(error)
    assert _fns(d) == ["sync_step"]
    inst = reopen()
    sync_step, _ = _define(inst, calls)
    with inst.workflow("w"):
        assert sync_step(1) == 10
    state = inst.store.read("w")
    assert state is not None
    assert (state["status"], state["error"], state["runs"]) == ("completed", None, 2)
    assert len(calls) == 1


@pytest.mark.anyio
async def test_status_failed_async(d: duravoke.Duravoke) -> None:
    with pytest.raises(Boom):
        async with d.workflow("w"):
            raise Boom("async")
    state = d.store.read("w")
    assert state is not None
    assert (state["status"], state["error"]) == ("failed", repr(Boom("async")))


def test_a_nested_workflow_takes_the_calls_inside_it(d: duravoke.Duravoke) -> None:
    calls: list[Any] = []
    sync_step, _ = _define(d, calls)
    with d.workflow("outer"):
        sync_step(1)
        with d.workflow("inner"):
            sync_step(2)
        sync_step(3)
    steps = {wid: d.store.read(wid)["steps"].values() for wid in ("outer", "inner")}  # type: ignore[index]
    assert sorted(s["args"]["x"] for s in steps["outer"]) == [1, 3]
    assert [s["args"]["x"] for s in steps["inner"]] == [2]


def test_two_instances_record_into_their_own_stores(store_kind: str, tmp_path: Path) -> None:
    stores = [make_store(store_kind, tmp_path / name) for name in ("a", "b")]
    da, db = (duravoke.Duravoke(s) for s in stores)
    calls: list[Any] = []
    a_step, _ = _define(da, calls)
    b_step, _ = _define(db, calls)
    # The same id in both, even nested: different stores, different locks.
    with da.workflow("w"), db.workflow("w"):
        a_step(1)
        b_step(2)
    assert [s["args"] for s in stores[0].read("w")["steps"].values()] == [{"x": 1}]  # type: ignore[index]
    assert [s["args"] for s in stores[1].read("w")["steps"].values()] == [{"x": 2}]  # type: ignore[index]

    # An instance's function called inside another instance's workflow is not part of it.
    with da.workflow("only-a"):
        b_step(3)
    assert stores[0].read("only-a")["steps"] == {}  # type: ignore[index]
    assert "only-a" not in stores[1].workflow_ids()
    assert len(stores[1].workflow_ids()) == 2  # "w" and b_step(3)'s implicit workflow


def test_the_module_level_api_records_in_duravoke_home(duravoke_home: Path) -> None:
    calls: list[int] = []

    def define() -> Callable[[int], int]:
        @duravoke.duravoke
        def triple(x: int) -> int:
            calls.append(x)
            return 3 * x

        return triple

    with duravoke.workflow("module-level"):
        assert define()(2) == 6
    with duravoke.workflow("module-level"):
        assert define()(2) == 6
    assert calls == [2]
    assert any(duravoke_home.iterdir())
    store = duravoke.DirectoryStore(duravoke_home)
    assert store.read("module-level")["status"] == "completed"  # type: ignore[index]


def _documented(x: int, y: str = "a", *, z: float = 1.0) -> str:
    """Docstring of the sync function."""
    return f"{x}{y}{z}"


async def _adocumented(x: int, y: str = "a", *, z: float = 1.0) -> str:
    """Docstring of the async function."""
    return f"{x}{y}{z}"


@pytest.mark.parametrize("fn", [_documented, _adocumented], ids=["sync", "async"])
def test_the_decorator_keeps_the_functions_metadata(
    d: duravoke.Duravoke, fn: Callable[..., Any]
) -> None:
    for decorate in (
        d.duravoke,
        d.duravoke(name=f"named-{fn.__name__}"),  # one name, one function (a registry)
        duravoke.duravoke,
        duravoke.duravoke(key=lambda x, y="a", z=1.0: x),
    ):
        wrapped = decorate(fn)
        assert wrapped.__name__ == fn.__name__
        assert wrapped.__qualname__ == fn.__qualname__
        assert wrapped.__module__ == fn.__module__
        assert wrapped.__doc__ == fn.__doc__
        assert wrapped.__wrapped__ is fn  # type: ignore[attr-defined]
        assert inspect.signature(wrapped) == inspect.signature(fn)
        assert inspect.iscoroutinefunction(wrapped) == inspect.iscoroutinefunction(fn)
