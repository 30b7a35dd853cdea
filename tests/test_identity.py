"""When is a call "the same call"? (DESIGN section 3), on every store kind.

Every test counts real executions (a list the body appends to) and simulates "the program
runs again" with ``reopen()``: a new instance on the same state, with the decorated
functions defined again on it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import anyio
import anyio.lowlevel
import pytest

import duravoke

Reopen = Callable[[], duravoke.Duravoke]


class Boom(Exception):
    """A failure the tests raise on purpose."""


# ---------------------------------------------------------------------------------------
# Argument binding: positional, keyword and defaults are one call


def _adder(d: duravoke.Duravoke, calls: list[Any]) -> Callable[..., int]:
    @d.duravoke
    def add(x: int, y: int = 2) -> int:
        calls.append((x, y))
        return x + y

    return add


def test_positional_keyword_and_default_are_one_call(d: duravoke.Duravoke, reopen: Reopen) -> None:
    calls: list[Any] = []
    with d.workflow("w"):
        assert _adder(d, calls)(1) == 3
    spells: tuple[Callable[[Callable[..., int]], int], ...] = (
        lambda f: f(x=1),
        lambda f: f(1, y=2),
        lambda f: f(1, 2),
        lambda f: f(y=2, x=1),
    )
    for spell in spells:
        inst = reopen()
        with inst.workflow("w"):
            assert spell(_adder(inst, calls)) == 3
    assert calls == [(1, 2)]
    # A different argument is a different call: the counting above can see executions.
    inst = reopen()
    with inst.workflow("w"):
        assert _adder(inst, calls)(1, y=3) == 4
    assert calls == [(1, 2), (1, 3)]


@pytest.mark.anyio
async def test_positional_keyword_and_default_are_one_call_async(
    d: duravoke.Duravoke, reopen: Reopen
) -> None:
    calls: list[Any] = []

    def define(inst: duravoke.Duravoke) -> Callable[..., Any]:
        @inst.duravoke
        async def add(x: int, *, y: int = 2) -> int:
            await anyio.lowlevel.checkpoint()
            calls.append((x, y))
            return x + y

        return add

    async with d.workflow("w"):
        assert await define(d)(1) == 3
    for kwargs in ({"x": 1}, {"x": 1, "y": 2}):
        inst = reopen()
        async with inst.workflow("w"):
            assert await define(inst)(**kwargs) == 3
    assert calls == [(1, 2)]


def test_argument_digest_keeps_types_and_ignores_order(
    d: duravoke.Duravoke, reopen: Reopen
) -> None:
    calls: list[Any] = []

    def define(inst: duravoke.Duravoke) -> Callable[[Any], str]:
        @inst.duravoke
        def show(v: Any) -> str:
            calls.append(v)
            return repr(v)

        return show

    with d.workflow("w"):
        show = define(d)
        show((1, 2))
        show([1, 2])  # a tuple is not a list
        show({"a": 1, "b": 2})
        show({3, 1, 2})
        show(1)
        show(True)  # True is not 1
    assert len(calls) == 6
    inst = reopen()
    with inst.workflow("w"):
        show = define(inst)
        assert show([1, 2]) == "[1, 2]"
        assert show((1, 2)) == "(1, 2)"
        assert show({"b": 2, "a": 1}) == repr({"a": 1, "b": 2})  # key order does not matter
        assert show({2, 3, 1}) == repr({1, 2, 3})
        assert show(True) == "True"
        assert show(1) == "1"
    assert len(calls) == 6


# ---------------------------------------------------------------------------------------
# key=


class User:
    """Not JSON: only key= lets it identify a call."""

    def __init__(self, uid: int, name: str) -> None:
        self.uid = uid
        self.name = name


def test_equal_keys_are_one_call(d: duravoke.Duravoke, reopen: Reopen) -> None:
    calls: list[Any] = []

    def define(inst: duravoke.Duravoke) -> Callable[[dict[str, Any]], str]:
        @inst.duravoke(key=lambda user: user["id"])
        def greet(user: dict[str, Any]) -> str:
            calls.append(user["name"])
            return f"hello {user['name']}"

        return greet

    with d.workflow("w"):
        assert define(d)({"id": 1, "name": "ann"}) == "hello ann"
    inst = reopen()
    with inst.workflow("w"):
        # Other arguments, same key: the recorded call.
        assert define(inst)({"id": 1, "name": "ANN (renamed)"}) == "hello ann"
        assert define(inst)({"id": 2, "name": "bob"}) == "hello bob"
    assert calls == ["ann", "bob"]


@pytest.mark.anyio
async def test_key_makes_non_json_arguments_fine(d: duravoke.Duravoke, reopen: Reopen) -> None:
    calls: list[str] = []

    def define(inst: duravoke.Duravoke) -> Callable[..., Any]:
        @inst.duravoke(key=lambda user, greeting="hi": [user.uid, greeting])
        async def greet(user: User, greeting: str = "hi") -> str:
            calls.append(user.name)
            return f"{greeting} {user.name}"

        return greet

    async with d.workflow("w"):
        assert await define(d)(User(7, "ann")) == "hi ann"
    inst = reopen()
    async with inst.workflow("w"):
        assert await define(inst)(User(7, "someone else")) == "hi ann"
        assert await define(inst)(User(7, "ann"), greeting="yo") == "yo ann"
    assert calls == ["ann", "ann"]


# ---------------------------------------------------------------------------------------
# name=


def test_name_keeps_identity_across_a_rename(d: duravoke.Duravoke, reopen: Reopen) -> None:
    calls: list[str] = []

    @d.duravoke(name="fetch-page")
    def fetch(url: str) -> str:
        calls.append("fetch")
        return url.upper()

    with d.workflow("w"):
        assert fetch("a") == "A"

    inst = reopen()

    @inst.duravoke(name="fetch-page")
    def download(url: str) -> str:  # renamed in the new version of the program
        calls.append("download")
        return "new body"

    with inst.workflow("w"):
        assert download("a") == "A"
    assert calls == ["fetch"]
    steps = reopen().store.read("w")["steps"]  # type: ignore[index]
    assert [s["fn"] for s in steps.values()] == ["fetch-page"]


def test_without_name_a_rename_runs_again(d: duravoke.Duravoke, reopen: Reopen) -> None:
    calls: list[str] = []

    @d.duravoke
    def fetch(url: str) -> str:
        calls.append("fetch")
        return "old"

    with d.workflow("w"):
        assert fetch("a") == "old"

    inst = reopen()

    @inst.duravoke
    def download(url: str) -> str:
        calls.append("download")
        return "new"

    with inst.workflow("w"):
        assert download("a") == "new"
    assert calls == ["fetch", "download"]
    fns = {s["fn"] for s in reopen().store.read("w")["steps"].values()}  # type: ignore[index]
    assert fns == {f"{__name__}.{q}" for q in (fetch.__qualname__, download.__qualname__)}


# ---------------------------------------------------------------------------------------
# Occurrences


def _ticker(inst: duravoke.Duravoke, counter: itertools.count[int], calls: list[int]) -> Any:
    @inst.duravoke
    def tick(x: int) -> int:
        value = next(counter)
        calls.append(value)
        return value

    return tick


def test_identical_calls_in_one_run_are_two_records(d: duravoke.Duravoke, reopen: Reopen) -> None:
    calls: list[int] = []
    with d.workflow("w"):
        tick = _ticker(d, itertools.count(1), calls)
        assert [tick(1), tick(1)] == [1, 2]
    assert len(reopen().store.read("w")["steps"]) == 2  # type: ignore[index]
    inst = reopen()
    with inst.workflow("w"):
        tick = _ticker(inst, itertools.count(100), calls)
        # Both replay, in order, each with its own value; a third is new.
        assert [tick(1), tick(1), tick(1)] == [1, 2, 100]
    assert calls == [1, 2, 100]


@pytest.mark.anyio
async def test_identical_calls_in_one_run_are_two_records_async(
    d: duravoke.Duravoke, reopen: Reopen
) -> None:
    calls: list[int] = []

    def define(inst: duravoke.Duravoke, counter: itertools.count[int]) -> Callable[..., Any]:
        @inst.duravoke
        async def tick(x: int) -> int:
            await anyio.lowlevel.checkpoint()
            calls.append(next(counter))
            return calls[-1]

        return tick

    async with d.workflow("w"):
        tick = define(d, itertools.count(1))
        assert [await tick(1), await tick(1)] == [1, 2]
    inst = reopen()
    async with inst.workflow("w"):
        tick = define(inst, itertools.count(100))
        assert [await tick(1), await tick(1)] == [1, 2]
    assert calls == [1, 2]


def _family(
    inst: duravoke.Duravoke, counter: itertools.count[int], calls: list[str], crash_on: int | None
) -> Any:
    @inst.duravoke
    def child(x: int) -> int:
        calls.append(f"child({x})")
        return next(counter)

    @inst.duravoke
    def parent(n: int) -> list[int]:
        calls.append(f"parent({n})")
        first = child(5)
        if n == crash_on:
            raise Boom(f"crash in parent({n})")
        return [n, first, child(6)]

    return parent


def test_a_parent_called_twice_gives_each_call_its_own_children(
    d: duravoke.Duravoke, reopen: Reopen
) -> None:
    calls: list[str] = []
    with d.workflow("w"):
        parent = _family(d, itertools.count(1), calls, None)
        assert parent(1) == [1, 1, 2]
        assert parent(2) == [2, 3, 4]  # not parent(1)'s child values
    inst = reopen()
    calls.clear()
    with inst.workflow("w"):
        parent = _family(inst, itertools.count(100), calls, None)
        assert parent(1) == [1, 1, 2]
        assert parent(2) == [2, 3, 4]
    assert calls == []


def test_replayed_parent_and_resumed_parent_keep_their_children_apart(
    d: duravoke.Duravoke, reopen: Reopen
) -> None:
    calls: list[str] = []

    def first_run() -> None:
        with d.workflow("w"):
            parent = _family(d, itertools.count(1), calls, crash_on=2)
            assert parent(1) == [1, 1, 2]
            parent(2)  # its child(5) returns 3, then it crashes

    with pytest.raises(Boom):
        first_run()
    assert calls == ["parent(1)", "child(5)", "child(6)", "parent(2)", "child(5)"]
    calls.clear()
    inst = reopen()
    with inst.workflow("w"):
        parent = _family(inst, itertools.count(100), calls, crash_on=None)
        assert parent(1) == [1, 1, 2]  # replayed
        # Resumed: its child(5) is its own (3), not parent(1)'s (1); child(6) is new.
        assert parent(2) == [2, 3, 100]
    assert calls == ["parent(2)", "child(6)"]


@pytest.mark.anyio
async def test_replayed_parent_and_resumed_parent_async(
    d: duravoke.Duravoke, reopen: Reopen
) -> None:
    calls: list[str] = []

    def define(inst: duravoke.Duravoke, counter: itertools.count[int], crash: bool) -> Any:
        @inst.duravoke
        async def child(x: int) -> int:
            calls.append(f"child({x})")
            await anyio.lowlevel.checkpoint()
            return next(counter)

        @inst.duravoke
        async def parent(n: int) -> list[int]:
            calls.append(f"parent({n})")
            first = await child(5)
            if crash and n == 2:
                raise Boom
            return [n, first]

        return parent

    async def first_run() -> None:
        async with d.workflow("w"):
            parent = define(d, itertools.count(1), crash=True)
            assert await parent(1) == [1, 1]
            await parent(2)

    with pytest.raises(Boom):
        await first_run()
    calls.clear()
    inst = reopen()
    async with inst.workflow("w"):
        parent = define(inst, itertools.count(100), crash=False)
        assert await parent(1) == [1, 1]
        assert await parent(2) == [2, 2]
    assert calls == ["parent(2)"]


# ---------------------------------------------------------------------------------------
# Editing the workflow between runs


def _newsletter(inst: duravoke.Duravoke, sent: list[str], down: set[str]) -> Any:
    @inst.duravoke(key=lambda user: user["email"])
    def send(user: dict[str, str]) -> str:
        if user["email"] in down:
            raise Boom(f"smtp refused {user['email']}")
        sent.append(user["email"])
        return f"sent to {user['email']}"

    @inst.duravoke
    def mail_everyone(users: list[dict[str, str]]) -> int:
        return len([send(u) for u in users])

    return mail_everyone


def _users(*names: str) -> list[dict[str, str]]:
    return [{"email": f"{n}@example.com", "name": n} for n in names]


def test_a_grown_list_does_not_mail_anyone_twice_after_success(
    d: duravoke.Duravoke, reopen: Reopen
) -> None:
    sent: list[str] = []
    with d.workflow("newsletter"):
        assert _newsletter(d, sent, set())(_users("ann", "bob")) == 2
    inst = reopen()
    with inst.workflow("newsletter"):
        assert _newsletter(inst, sent, set())(_users("ann", "bob", "cid")) == 3
    assert sent == ["ann@example.com", "bob@example.com", "cid@example.com"]


def test_a_grown_list_does_not_mail_anyone_twice_after_a_crash(
    d: duravoke.Duravoke, reopen: Reopen
) -> None:
    sent: list[str] = []
    with pytest.raises(Boom), d.workflow("newsletter"):
        _newsletter(d, sent, {"cid@example.com"})(_users("ann", "bob", "cid", "dan"))
    assert sent == ["ann@example.com", "bob@example.com"]
    inst = reopen()
    with inst.workflow("newsletter"):
        assert _newsletter(inst, sent, set())(_users("ann", "bob", "cid", "dan", "eve")) == 5
    assert sorted(sent) == sorted(set(sent)), f"someone was mailed twice: {sent}"
    assert len(sent) == 5


def test_reordered_and_inserted_steps_run_only_the_new_ones(
    d: duravoke.Duravoke, reopen: Reopen
) -> None:
    calls: list[str] = []

    def define(inst: duravoke.Duravoke) -> dict[str, Callable[[], str]]:
        def make(label: str) -> Callable[[], str]:
            @inst.duravoke(name=label)
            def step() -> str:
                calls.append(label)
                return f"{label}-{len(calls)}"

            return step

        return {label: make(label) for label in "abcn"}

    with d.workflow("w"):
        s = define(d)
        first = {k: s[k]() for k in "abc"}
    assert calls == ["a", "b", "c"]
    inst = reopen()
    with inst.workflow("w"):
        s = define(inst)
        assert s["c"]() == first["c"]
        assert s["n"]() == "n-4"  # inserted between runs
        assert s["a"]() == first["a"]
        assert s["b"]() == first["b"]
    assert calls == ["a", "b", "c", "n"]


def test_the_caller_path_tells_the_same_call_apart(d: duravoke.Duravoke, reopen: Reopen) -> None:
    calls: list[str] = []

    def define(inst: duravoke.Duravoke, counter: itertools.count[int]) -> Any:
        @inst.duravoke
        def child(x: int) -> int:
            calls.append("child")
            return next(counter)

        @inst.duravoke
        def billing() -> int:
            return child(1)

        @inst.duravoke
        def shipping() -> int:
            return child(1)

        return child, billing, shipping

    with d.workflow("w"):
        child, billing, shipping = define(d, itertools.count(1))
        assert (billing(), shipping(), child(1)) == (1, 2, 3)
    assert len(calls) == 3
    inst = reopen()
    with inst.workflow("w"):
        child, billing, shipping = define(inst, itertools.count(100))
        # Replayed in another order: each caller gets back its own child's value.
        assert (child(1), shipping(), billing()) == (3, 2, 1)
    assert len(calls) == 3
    paths = sorted(tuple(s["path"]) for s in inst.store.read("w")["steps"].values())  # type: ignore[index]
    names = [p[-1].rpartition(".")[2] for p in paths if p]
    assert sorted(names) == ["billing", "shipping"]


# ---------------------------------------------------------------------------------------
# Implicit workflows


def test_implicit_workflow_is_the_call_and_its_arguments(
    d: duravoke.Duravoke, reopen: Reopen
) -> None:
    calls: list[int] = []

    def define(inst: duravoke.Duravoke) -> Callable[[int], int]:
        @inst.duravoke
        def square(x: int) -> int:
            calls.append(x)
            return x * x

        return square

    square = define(d)
    assert square(3) == 9
    assert square(3) == 9  # its own workflow again: replayed
    assert calls == [3]
    square = define(reopen())
    assert square(3) == 9
    assert square(4) == 16  # other arguments: another workflow
    assert calls == [3, 4]
    ids = reopen().store.workflow_ids()
    assert len(ids) == 2
    prefix = f"{__name__}.{square.__qualname__}:"
    assert all(i.startswith(prefix) and len(i) == len(prefix) + 16 for i in ids), ids


@pytest.mark.anyio
async def test_implicit_workflow_async(d: duravoke.Duravoke, reopen: Reopen) -> None:
    calls: list[int] = []

    def define(inst: duravoke.Duravoke) -> Any:
        @inst.duravoke
        async def child(x: int) -> int:
            calls.append(-x)
            return -x

        @inst.duravoke
        async def top(x: int) -> int:
            calls.append(x)
            return await child(x) * 10

        return top

    assert await define(d)(2) == -20
    assert await define(reopen())(2) == -20
    assert calls == [2, -2]
    assert await define(reopen())(5) == -50
    assert calls == [2, -2, 5, -5]
    # The child belongs to its caller's implicit workflow, not to one of its own.
    assert len(reopen().store.workflow_ids()) == 2


# ---------------------------------------------------------------------------------------
# idempotency_key()


def test_idempotency_key_is_stable_across_a_failed_attempt(
    d: duravoke.Duravoke, reopen: Reopen
) -> None:
    keys: list[str] = []

    def define(inst: duravoke.Duravoke, fail: bool) -> Any:
        @inst.duravoke
        def charge(amount: int) -> str:
            keys.append(duravoke.idempotency_key())
            if fail:
                raise Boom("network went away after the charge")
            return "ok"

        @inst.duravoke
        def refund(amount: int) -> str:
            keys.append(duravoke.idempotency_key())
            return "ok"

        return charge, refund

    with pytest.raises(Boom), d.workflow("w"):
        define(d, fail=True)[0](10)
    inst = reopen()
    with inst.workflow("w"):
        charge, refund = define(inst, fail=False)
        charge(10)
        charge(10)  # a second identical call is another step
        refund(10)
        charge(20)
    first, again, second, refunded, other = keys
    assert first == again
    assert isinstance(first, str)
    assert first
    assert len({first, second, refunded, other}) == 4, keys


def test_idempotency_key_differs_between_workflows(d: duravoke.Duravoke) -> None:
    keys: list[str] = []

    @d.duravoke
    def charge() -> None:
        keys.append(duravoke.idempotency_key())

    for wid in ("order-1", "order-2"):
        with d.workflow(wid):
            charge()
    assert keys[0] != keys[1]


@pytest.mark.anyio
async def test_idempotency_key_in_async_steps(d: duravoke.Duravoke, reopen: Reopen) -> None:
    keys: list[str] = []

    def define(inst: duravoke.Duravoke, fail: bool) -> Any:
        @inst.duravoke
        async def charge() -> None:
            keys.append(duravoke.idempotency_key())
            await anyio.lowlevel.checkpoint()
            # Still this step's key after a checkpoint, whatever else ran meanwhile.
            assert duravoke.idempotency_key() == keys[-1]
            if fail:
                raise Boom

        return charge

    with pytest.raises(Boom):
        async with d.workflow("w"):
            await define(d, fail=True)()
    inst = reopen()
    async with inst.workflow("w"):
        await define(inst, fail=False)()
    assert keys[0] == keys[1]


def test_idempotency_key_outside_a_step_raises(d: duravoke.Duravoke) -> None:
    with pytest.raises(duravoke.OutsideStepError, match="outside"):
        duravoke.idempotency_key()
    with d.workflow("w"), pytest.raises(duravoke.OutsideStepError):
        duravoke.idempotency_key()  # a workflow is not a step

    @d.duravoke
    def step() -> str:
        return duravoke.idempotency_key()

    with d.workflow("w"):
        step()
        with pytest.raises(duravoke.OutsideStepError):
            duravoke.idempotency_key()  # the step is over
