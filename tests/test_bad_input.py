"""Bad input gets a clear error, and whatever was recorded before it is kept."""

from __future__ import annotations

import enum
import os
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from conftest import make_store

import duravoke

Reopen = Callable[[], duravoke.Duravoke]


class Thing:
    """An object JSON has no word for."""


class Color(enum.IntEnum):
    RED = 1


class Point(NamedTuple):
    x: int
    y: int


class Boom(Exception):
    """A failure the tests raise on purpose."""


def _setup(inst: duravoke.Duravoke, calls: list[str]) -> Callable[[], str]:
    @inst.duravoke
    def setup() -> str:
        calls.append("setup")
        return "done"

    return setup


def _assert_kept(reopen: Reopen, calls: list[str], wid: str = "w") -> None:
    """The step recorded before the error replays on the next run."""
    before = list(calls)
    inst = reopen()
    with inst.workflow(wid, timeout=10):
        assert _setup(inst, calls)() == "done"
    assert calls == before, "a step recorded before the error ran again"


# ---------------------------------------------------------------------------------------
# Arguments that cannot identify a call


def test_non_json_argument_names_function_parameter_and_key(
    d: duravoke.Duravoke, reopen: Reopen
) -> None:
    calls: list[str] = []

    @d.duravoke
    def ship(order_id: int, parcel: Thing) -> None:
        calls.append("ship")

    with d.workflow("w"):
        _setup(d, calls)()
        with pytest.raises(duravoke.SerializationError) as info:
            ship(1, Thing())
    message = str(info.value)
    assert "ship" in message
    assert "'parcel'" in message
    assert "key=" in message
    assert "Thing" in message
    assert info.value.function is not None
    assert info.value.function.endswith("ship")
    assert isinstance(info.value, TypeError)
    assert calls == ["setup"]  # the body never ran
    _assert_kept(reopen, calls)


def test_a_methods_self_needs_key(d: duravoke.Duravoke, reopen: Reopen) -> None:
    calls: list[str] = []

    class Client:
        @d.duravoke
        def fetch(self, url: str) -> str:
            calls.append(url)
            return url

    with d.workflow("w"):
        _setup(d, calls)()
        with pytest.raises(duravoke.SerializationError, match=r"'self'.*key=") as info:
            Client().fetch("https://example.com")
    assert "fetch" in str(info.value)
    assert calls == ["setup"]
    _assert_kept(reopen, calls)


def test_non_json_argument_without_a_workflow(d: duravoke.Duravoke) -> None:
    @d.duravoke
    def use(thing: Thing) -> None:
        raise AssertionError("must not run")

    with pytest.raises(duravoke.SerializationError, match="thing"):
        use(Thing())
    assert d.store.workflow_ids() == []


def test_key_returning_non_json_is_explained(d: duravoke.Duravoke) -> None:
    @d.duravoke(key=lambda thing: thing)
    def use(thing: Thing) -> None:
        raise AssertionError("must not run")

    with pytest.raises(duravoke.SerializationError, match="key="), d.workflow("w"):
        use(Thing())


# ---------------------------------------------------------------------------------------
# Results that cannot be recorded


@pytest.mark.parametrize(
    ("value", "type_name", "where"),
    [
        (Thing(), "Thing", "result"),
        ([1, {"when": Thing()}], "Thing", "result[1]['when']"),
        (Color.RED, "Color", "result"),
        (Point(1, 2), "Point", "result"),
        ({"nested": [Point(1, 2)]}, "Point", "result['nested'][0]"),
        (OrderedDict(a=1), "OrderedDict", "result"),
    ],
    ids=["object", "nested-object", "intenum", "namedtuple", "nested-namedtuple", "ordereddict"],
)
def test_unrecordable_result_is_refused_and_runs_again(
    d: duravoke.Duravoke, reopen: Reopen, value: Any, type_name: str, where: str
) -> None:
    calls: list[str] = []

    @d.duravoke
    def compute() -> Any:
        calls.append("compute")
        return value

    with d.workflow("w"):
        _setup(d, calls)()
        with pytest.raises(duravoke.SerializationError) as info:
            compute()
    message = str(info.value)
    assert "compute" in message
    assert type_name in message
    assert where in message
    assert info.value.where == where
    assert calls == ["setup", "compute"]
    steps = d.store.read("w")["steps"].values()  # type: ignore[index]
    assert sorted(s["status"] for s in steps) == ["completed", "failed"]
    assert all("result" not in s for s in steps if s["status"] == "failed")
    _assert_kept(reopen, calls)

    inst = reopen()

    @inst.duravoke
    def compute() -> Any:  # the fixed version
        calls.append("compute")
        return "fine"

    with inst.workflow("w"):
        assert compute() == "fine"
    assert calls == ["setup", "compute", "compute"]


@pytest.mark.anyio
async def test_unrecordable_async_result(d: duravoke.Duravoke, reopen: Reopen) -> None:
    calls: list[str] = []

    @d.duravoke
    async def compute() -> Any:
        return Color.RED

    async with d.workflow("w"):
        _setup(d, calls)()
        with pytest.raises(duravoke.SerializationError, match="Color"):
            await compute()
    _assert_kept(reopen, calls)


# ---------------------------------------------------------------------------------------
# Generators


def test_generators_are_refused_at_decoration(d: duravoke.Duravoke, reopen: Reopen) -> None:
    calls: list[str] = []
    with d.workflow("w"):
        _setup(d, calls)()

    def numbers() -> Iterator[int]:
        yield 1

    async def anumbers() -> AsyncIterator[int]:
        yield 1

    for decorate in (
        d.duravoke,
        d.duravoke(name="x"),
        duravoke.duravoke,
        duravoke.duravoke(key=lambda: 1),
    ):
        for fn in (numbers, anumbers):
            with pytest.raises(TypeError, match="generator") as info:
                decorate(fn)  # type: ignore[arg-type]
            assert fn.__name__ in str(info.value)
    _assert_kept(reopen, calls)


# ---------------------------------------------------------------------------------------
# Misuse of workflow()


def test_nesting_the_same_workflow_is_refused(d: duravoke.Duravoke, reopen: Reopen) -> None:
    calls: list[str] = []
    with d.workflow("w"):
        _setup(d, calls)()
        with pytest.raises(duravoke.WorkflowError, match=r"'w'.*already running"):
            with d.workflow("w"):
                raise AssertionError("must not enter")
        # The outer workflow keeps working.
        with d.workflow("other"):
            pass
    assert d.store.read("w")["status"] == "completed"  # type: ignore[index]
    _assert_kept(reopen, calls)


@pytest.mark.anyio
async def test_nesting_the_same_workflow_is_refused_async(
    d: duravoke.Duravoke, reopen: Reopen
) -> None:
    calls: list[str] = []
    async with d.workflow("w"):
        _setup(d, calls)()
        with pytest.raises(duravoke.WorkflowError, match="already running"):
            async with d.workflow("w"):
                raise AssertionError("must not enter")
        with pytest.raises(duravoke.WorkflowError, match="already running"):
            with d.workflow("w"):
                raise AssertionError("must not enter")
    _assert_kept(reopen, calls)


@pytest.mark.anyio
async def test_entering_one_workflow_object_twice_is_refused(
    d: duravoke.Duravoke, reopen: Reopen
) -> None:
    calls: list[str] = []
    wf = d.workflow("w")
    with wf:
        _setup(d, calls)()
    with pytest.raises(duravoke.WorkflowError, match="already entered"), wf:
        raise AssertionError("must not enter")
    with pytest.raises(duravoke.WorkflowError, match="already entered"):
        async with wf:
            raise AssertionError("must not enter")
    _assert_kept(reopen, calls)


@pytest.mark.parametrize("bad", [1, None, b"bytes", ("a",)])
def test_a_workflow_id_must_be_a_str(d: duravoke.Duravoke, reopen: Reopen, bad: Any) -> None:
    calls: list[str] = []
    with d.workflow("w"):
        _setup(d, calls)()
        with pytest.raises(TypeError, match="str"):
            d.workflow(bad)
    with pytest.raises(TypeError, match="str"):
        duravoke.workflow(bad)
    _assert_kept(reopen, calls)


@pytest.mark.parametrize("kind", ["directory", "kkv"])
def test_nesting_the_same_workflow_through_another_spelling_of_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    # Two instances on one folder, once relative and once absolute: entering the same id
    # inside itself would wait for its own lock forever, so it must be refused too.
    monkeypatch.chdir(tmp_path)
    relative = make_store(kind, Path())
    absolute = make_store(kind, tmp_path)
    with duravoke.Duravoke(relative).workflow("w"):
        with pytest.raises(duravoke.WorkflowError, match="already running"):
            # timeout: fail the test rather than hang if the nesting is not detected
            with duravoke.Duravoke(absolute).workflow("w", timeout=2):
                raise AssertionError("must not enter")


HOSTILE_IDS = {
    "dotdot": "../../x",
    "dotdot-deep": "../" * 30 + "etc/passwd",
    "dot": ".",
    "dotdot-only": "..",
    "huge": "a" * 10_000,
    "nul": "a\x00b",
    "emoji": "📧 newsletter/2026 ✓",
    "dash": "-rf --all",
    "backslash": "..\\..\\x",
    "newline": "line\nbreak\r",
}


@pytest.mark.parametrize("key", list(HOSTILE_IDS))
def test_hostile_workflow_ids_work_and_stay_inside_the_store(
    d: duravoke.Duravoke, reopen: Reopen, store_kind: str, tmp_path: Path, key: str
) -> None:
    wid = HOSTILE_IDS[key]
    calls: list[str] = []
    with d.workflow(wid):
        assert _setup(d, calls)() == "done"
    _assert_kept(reopen, calls, wid)
    assert wid in reopen().store.workflow_ids()
    state = reopen().store.read(wid)
    assert state is not None
    assert state["status"] == "completed"
    _assert_files_inside(store_kind, tmp_path)


def test_the_empty_workflow_id_is_refused(d: duravoke.Duravoke) -> None:
    # It would be a blank cell in `duravoke list` and impossible to pass back to `show`.
    with pytest.raises(ValueError, match="must not be empty"):
        d.workflow("")


def test_an_absolute_path_id_stays_inside_the_store(
    d: duravoke.Duravoke, reopen: Reopen, store_kind: str, tmp_path: Path
) -> None:
    target = tmp_path / "outside" / "target"
    calls: list[str] = []
    for wid in (str(target), str(target) + ".json", str(target) + ".lock"):
        with d.workflow(wid):
            _setup(d, calls)()
        _assert_kept(reopen, calls, wid)
    assert not (tmp_path / "outside").exists()
    _assert_files_inside(store_kind, tmp_path)


def test_similar_hostile_ids_are_different_workflows(d: duravoke.Duravoke, reopen: Reopen) -> None:
    ids = ["a" * 9_999 + "b", "a" * 9_999 + "c", "x/y", "x_y", "x\x00y", "X/Y", "é", "e\u0301"]
    results = {}
    for i, wid in enumerate(ids):

        @d.duravoke(name="number")
        def number(i: int = i) -> int:
            return i

        with d.workflow(wid):
            results[wid] = number()
    inst = reopen()
    assert sorted(inst.store.workflow_ids()) == sorted(ids)
    for i, wid in enumerate(ids):

        @inst.duravoke(name="number")
        def number(i: int = i) -> int:
            return -1  # would show if another workflow's record were replayed

        with inst.workflow(wid):
            assert number() == i, f"workflow {wid[:20]!r} replayed another id's record"


def _assert_files_inside(store_kind: str, tmp_path: Path) -> None:
    allowed = {
        "directory": [tmp_path / "store"],
        "kkv": [tmp_path / "duravoke_state.json", tmp_path / "duravoke_state.json.d"],
        "memory": [],
        "postgres": [],  # state lives in the database: no file at all
    }[store_kind]
    found = []
    for root, dirs, files in os.walk(tmp_path):
        for name in files + dirs:
            path = Path(root) / name
            if path in allowed or any(a in path.parents for a in allowed):
                continue
            if path == tmp_path / "duravoke-home" and not any(path.iterdir()):
                continue  # the default store's folder, created empty by nobody here
            found.append(path)
    assert found == [], f"files outside the store: {found}"


def test_the_outside_check_can_fail(tmp_path: Path) -> None:
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "fine.json").write_text("{}")
    _assert_files_inside("directory", tmp_path)
    (tmp_path / "x").write_text("escaped")
    with pytest.raises(AssertionError, match="outside the store"):
        _assert_files_inside("directory", tmp_path)
