"""Failures are never recorded as results, propagate unchanged, and lose nothing (section 4)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import anyio.lowlevel
import pytest

import duravoke

Reopen = Callable[[], duravoke.Duravoke]


class Boom(Exception):
    """A failure the tests raise on purpose."""


def _steps(inst: duravoke.Duravoke, wid: str = "w") -> list[dict[str, Any]]:
    state = inst.store.read(wid)
    assert state is not None, f"nothing recorded for {wid!r}"
    return list(state["steps"].values())


def _by_name(steps: list[dict[str, Any]], short: str) -> list[dict[str, Any]]:
    return [s for s in steps if s["fn"].rpartition(".")[2] == short]


def _define(inst: duravoke.Duravoke, calls: list[str], error: BaseException | None) -> Any:
    @inst.duravoke
    def before() -> str:
        calls.append("before")
        return "recorded"

    @inst.duravoke
    def risky(x: int) -> int:
        calls.append("risky")
        if error is not None:
            raise error
        return x * 2

    return before, risky


def _run_before_and_risky(
    inst: duravoke.Duravoke, calls: list[str], error: BaseException | None
) -> None:
    before, risky = _define(inst, calls, error)
    with inst.workflow("w"):
        assert before() == "recorded"
        risky(1)


def test_an_exception_propagates_unchanged_and_runs_again(
    d: duravoke.Duravoke, reopen: Reopen
) -> None:
    calls: list[str] = []
    error = Boom("payment gateway down")
    with pytest.raises(Boom) as info:
        _run_before_and_risky(d, calls, error)
    assert info.value is error
    assert error.__cause__ is None
    assert error.__context__ is None
    [failed] = _by_name(_steps(d), "risky")
    assert failed["status"] == "failed"
    assert "result" not in failed
    assert failed["error"] == repr(error)
    assert d.store.read("w")["status"] == "failed"  # type: ignore[index]

    calls.clear()
    inst = reopen()
    before, risky = _define(inst, calls, None)
    with inst.workflow("w"):
        assert before() == "recorded"  # replayed: nothing lost
        assert risky(1) == 2
    assert calls == ["risky"]


def test_a_step_that_failed_once_then_succeeded_is_recorded_once(
    d: duravoke.Duravoke, reopen: Reopen
) -> None:
    calls: list[str] = []
    with pytest.raises(Boom), d.workflow("w"):
        _define(d, calls, Boom())[1](3)
    for _ in range(2):
        inst = reopen()
        with inst.workflow("w"):
            assert _define(inst, calls, None)[1](3) == 6
    assert calls == ["risky", "risky"]
    [step] = _by_name(_steps(reopen()), "risky")
    assert step["status"] == "completed"
    assert "error" not in step


@pytest.mark.anyio
async def test_an_exception_propagates_unchanged_async(
    d: duravoke.Duravoke, reopen: Reopen
) -> None:
    calls: list[str] = []

    def define(inst: duravoke.Duravoke, error: Exception | None) -> Any:
        @inst.duravoke
        async def first() -> int:
            calls.append("first")
            return 1

        @inst.duravoke
        async def risky() -> int:
            calls.append("risky")
            await anyio.lowlevel.checkpoint()
            if error is not None:
                raise error
            return 2

        return first, risky

    error = Boom("async failure")
    first, risky = define(d, error)

    async def first_run() -> None:
        async with d.workflow("w"):
            await first()
            await risky()

    with pytest.raises(Boom) as info:
        await first_run()
    assert info.value is error
    assert error.__context__ is None
    assert [s["status"] for s in _by_name(_steps(d), "risky")] == ["failed"]
    calls.clear()
    inst = reopen()
    first, risky = define(inst, None)
    async with inst.workflow("w"):
        assert (await first(), await risky()) == (1, 2)
    assert calls == ["risky"]


def test_keyboard_interrupt_is_not_recorded(d: duravoke.Duravoke, reopen: Reopen) -> None:
    calls: list[str] = []
    interrupt = KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt) as info:
        _run_before_and_risky(d, calls, interrupt)
    assert info.value is interrupt
    assert _by_name(_steps(d), "risky") == []
    state = d.store.read("w")
    assert state is not None
    # An interruption, not a failure: it reads as such in `duravoke list`, and resumes.
    assert state["status"] == "interrupted"
    assert "KeyboardInterrupt" in state["error"]
    assert duravoke.get_workflow("w", d.store).status == "interrupted"

    calls.clear()
    inst = reopen()
    before, risky = _define(inst, calls, None)
    with inst.workflow("w", timeout=10):  # the lock was released
        assert before() == "recorded"
        assert risky(1) == 2
    assert calls == ["risky"]


def test_system_exit_is_not_recorded(d: duravoke.Duravoke, reopen: Reopen) -> None:
    calls: list[str] = []
    with pytest.raises(SystemExit), d.workflow("w"):
        _define(d, calls, SystemExit(3))[1](1)
    assert _by_name(_steps(d), "risky") == []
    inst = reopen()
    with inst.workflow("w", timeout=10):
        assert _define(inst, calls, None)[1](1) == 2
    assert calls == ["risky", "risky"]


def _cancellable(inst: duravoke.Duravoke, calls: list[str], started: anyio.Event | None) -> Any:
    @inst.duravoke
    async def first() -> str:
        calls.append("first")
        return "kept"

    @inst.duravoke
    async def slow(x: int) -> int:
        calls.append("slow")
        if started is not None:
            started.set()
            await anyio.sleep_forever()
        return x + 1

    return first, slow


@pytest.mark.anyio
async def test_a_cancelled_step_is_not_recorded(d: duravoke.Duravoke, reopen: Reopen) -> None:
    calls: list[str] = []
    started = anyio.Event()
    first, slow = _cancellable(d, calls, started)
    async with d.workflow("w"):
        assert await first() == "kept"
        async with anyio.create_task_group() as tg:
            tg.start_soon(slow, 1)
            await started.wait()
            tg.cancel_scope.cancel()  # while slow() is in the middle of its body
    assert calls == ["first", "slow"]
    assert _by_name(_steps(d), "slow") == []
    assert d.store.read("w")["status"] == "completed"  # type: ignore[index]

    calls.clear()
    inst = reopen()
    first, slow = _cancellable(inst, calls, None)
    async with inst.workflow("w", timeout=10):
        assert await first() == "kept"
        assert await slow(1) == 2
    assert calls == ["slow"]


@pytest.mark.anyio
async def test_cancelling_the_whole_workflow_loses_nothing(
    d: duravoke.Duravoke, reopen: Reopen
) -> None:
    calls: list[str] = []
    started = anyio.Event()
    first, slow = _cancellable(d, calls, started)
    async with anyio.create_task_group() as tg:

        async def run() -> None:
            async with d.workflow("w"):
                await first()
                await slow(1)

        tg.start_soon(run)
        await started.wait()
        tg.cancel_scope.cancel()
    state = d.store.read("w")
    assert state is not None
    assert state["status"] == "interrupted"  # the run ended by cancellation
    assert [s["status"] for s in state["steps"].values()] == ["completed"]

    calls.clear()
    inst = reopen()
    first, slow = _cancellable(inst, calls, None)
    async with inst.workflow("w", timeout=10):  # the lock was released despite the cancel
        assert await first() == "kept"
        assert await slow(1) == 2
    assert calls == ["slow"]


def test_a_parent_that_handles_its_childs_failure_is_recorded(
    d: duravoke.Duravoke, reopen: Reopen
) -> None:
    calls: list[str] = []

    def define(inst: duravoke.Duravoke) -> Callable[[], str]:
        @inst.duravoke
        def child() -> str:
            calls.append("child")
            raise Boom("flaky")

        @inst.duravoke
        def parent() -> str:
            calls.append("parent")
            try:
                return child()
            except Boom:
                return "fallback"

        return parent

    with d.workflow("w"):
        assert define(d)() == "fallback"
    inst = reopen()
    with inst.workflow("w"):
        assert define(inst)() == "fallback"
    assert calls == ["parent", "child"]
    statuses = sorted(s["status"] for s in _steps(inst))
    assert statuses == ["completed", "failed"]


def test_a_failed_run_keeps_every_step_recorded_before_it(
    d: duravoke.Duravoke, reopen: Reopen
) -> None:
    calls: list[int] = []

    def define(inst: duravoke.Duravoke, fail_at: int | None) -> Callable[[int], int]:
        @inst.duravoke
        def work(i: int) -> int:
            calls.append(i)
            if i == fail_at:
                raise Boom(i)
            return i * i

        return work

    def first_run() -> None:
        with d.workflow("w"):
            work = define(d, fail_at=7)
            for i in range(10):
                work(i)

    with pytest.raises(Boom):
        first_run()
    assert calls == list(range(8))
    calls.clear()
    inst = reopen()
    with inst.workflow("w"):
        work = define(inst, fail_at=None)
        assert [work(i) for i in range(10)] == [i * i for i in range(10)]
    assert calls == [7, 8, 9]
