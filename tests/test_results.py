"""Results come back with their exact types, on the first run and on replay (DESIGN section 4)."""

from __future__ import annotations

import copy
import datetime as dt
import math
import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

import duravoke

Reopen = Callable[[], duravoke.Duravoke]

UTC = dt.timezone.utc
PLUS_0530 = dt.timezone(dt.timedelta(hours=5, minutes=30))
MINUS_0345 = dt.timezone(dt.timedelta(hours=-3, minutes=-45))
ID = uuid.UUID("12345678-1234-5678-1234-567812345678")

VALUES: dict[str, Any] = {
    "tuple": (1, "a", None, 2.5),
    "nested-tuple": ((1, 2), [3, (4,)], ()),
    "set": {3, 1, 2},
    "set-of-tuples": {(1, 2), (3, "x")},
    "frozenset": frozenset({"b", "a"}),
    "set-of-frozensets": {frozenset({1}), frozenset()},
    "bytes": b"\x00\xff\x80 raw",
    "empty-bytes": b"",
    "datetime-naive": dt.datetime(2026, 11, 3, 8, 30, 15, 123456),
    "datetime-utc": dt.datetime(2026, 11, 3, 8, 30, tzinfo=UTC),
    "datetime-plus": dt.datetime(2026, 1, 1, tzinfo=PLUS_0530),
    "datetime-minus": dt.datetime(1999, 12, 31, 23, 59, 59, tzinfo=MINUS_0345),
    "date": dt.date(2026, 2, 28),
    "time-naive": dt.time(23, 59, 59, 999999),
    "time-aware": dt.time(8, 0, tzinfo=PLUS_0530),
    "timedelta": dt.timedelta(days=-1, seconds=5, microseconds=7),
    "uuid": ID,
    "decimal": Decimal("1.10"),
    "decimal-huge": Decimal("-12345678901234567890.000000000000000001"),
    "decimal-nan": Decimal("NaN"),
    "path-absolute": Path("/tmp/some dir/file.txt"),
    "path-relative": Path("relative/p"),
    "dict-int-keys": {1: "one", 2: "two", -3: "minus three"},
    "dict-mixed-keys": {1: "int", "1": "str", (1, 2): "tuple", None: "none"},
    "dict-with-tag-key": {"$t": "tuple", "v": [1, 2]},
    "dict-order": {"b": 1, "a": {"z": 1, "y": 2}},
    "bool-is-not-int": [True, 1, False, 0],
    "floats": [1.5, -0.0, math.inf, -math.inf],
    "big-int": 2**100,
    "text": "nul \x00, accents é, emoji 😀, \u2028",
    "empties": [(), set(), frozenset(), {}, [], ""],
    "nested-mix": {
        "when": [dt.datetime(2026, 5, 1, tzinfo=UTC), {"ids": {ID}, "amount": Decimal("9.99")}],
        "raw": b"abc",
        "where": (Path("/a"), dt.date(2026, 5, 1)),
        "by-id": {7: (dt.timedelta(seconds=1), frozenset({b"x"}))},
    },
}


def assert_same(got: Any, want: Any, where: str = "result") -> None:
    """Equal, and of exactly the same types all the way down (and same tz, same digits)."""
    assert type(got) is type(want), f"{where}: {type(got).__name__} != {type(want).__name__}"
    if isinstance(want, (list, tuple)):
        assert len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same(g, w, f"{where}[{i}]")
    elif isinstance(want, dict):
        assert len(got) == len(want), where
        # Same keys in the same order (a dict's order is part of what a caller sees).
        for (gk, g), (wk, w) in zip(got.items(), want.items()):
            assert_same(gk, wk, f"<key of {where}>")
            assert_same(g, w, f"{where}[{wk!r}]")
    elif isinstance(want, (set, frozenset)):
        assert {(type(x), x) for x in got} == {(type(x), x) for x in want}, where
    else:
        # repr tells apart what == forgives: -0.0, Decimal("1.1") vs "1.10", tzinfo, NaN.
        assert repr(got) == repr(want), where


def _define(inst: duravoke.Duravoke, calls: list[Any]) -> Callable[[str], Any]:
    @inst.duravoke
    def produce(name: str) -> Any:
        value = copy.deepcopy(VALUES[name])
        calls.append(value)
        return value

    return produce


@pytest.mark.parametrize("name", list(VALUES))
def test_result_round_trips_with_its_exact_type(
    d: duravoke.Duravoke, reopen: Reopen, name: str
) -> None:
    calls: list[Any] = []
    with d.workflow("w"):
        first = _define(d, calls)(name)
    assert_same(first, VALUES[name])
    assert len(calls) == 1
    inst = reopen()
    with inst.workflow("w"):
        again = _define(inst, calls)(name)
    assert_same(again, VALUES[name])
    assert len(calls) == 1


def test_first_run_returns_the_round_tripped_value(d: duravoke.Duravoke) -> None:
    returned: list[Any] = []

    @d.duravoke
    def build() -> list[Any]:
        inner = [1, 2]
        value = [(1, 2), inner, {"k": inner}]
        returned.append(value)
        return value

    with d.workflow("w"):
        got = build()
    original = returned[0]
    assert got == original
    assert got is not original
    assert got[1] is not original[1]
    assert type(got[0]) is tuple
    # The round trip does not keep aliasing: a replay could not either.
    assert got[1] is not got[2]["k"]
    original[1].append(3)
    assert got == [(1, 2), [1, 2], {"k": [1, 2]}]


@pytest.mark.anyio
async def test_async_result_round_trips(d: duravoke.Duravoke, reopen: Reopen) -> None:
    calls: list[Any] = []

    def define(inst: duravoke.Duravoke) -> Callable[[str], Any]:
        @inst.duravoke
        async def produce(name: str) -> Any:
            await anyio.lowlevel.checkpoint()
            value = copy.deepcopy(VALUES[name])
            calls.append(value)
            return value

        return produce

    async with d.workflow("w"):
        first = await define(d)("nested-mix")
    assert_same(first, VALUES["nested-mix"])
    assert first is not calls[0]
    inst = reopen()
    async with inst.workflow("w"):
        assert_same(await define(inst)("nested-mix"), VALUES["nested-mix"])
    assert len(calls) == 1


def test_named_fixed_offset_keeps_its_name_or_is_refused(d: duravoke.Duravoke) -> None:
    # timezone(offset, "CET") compares equal to timezone(offset), but tzname() and
    # strftime("%Z") differ: the name must survive, or the value must be refused.
    when = dt.datetime(2026, 1, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=1), "CET"))

    @d.duravoke
    def meeting() -> dt.datetime:
        return when

    with d.workflow("w"):
        try:
            got = meeting()
        except duravoke.SerializationError:
            return
    assert got.tzname() == "CET", f"the zone name was silently dropped: {got!r}"


def test_assert_same_sees_type_differences() -> None:
    # The checker above must be able to fail, or the tests prove nothing.
    for got, want in [
        ([1, 2], (1, 2)),
        ({1: "a"}, {"1": "a"}),
        (True, 1),
        (Decimal("1.1"), Decimal("1.10")),
        (dt.datetime(2026, 1, 1, tzinfo=UTC), dt.datetime(2026, 1, 1, 5, 30, tzinfo=PLUS_0530)),
        ({1}, {True}),
        ({"a": 1, "b": 2}, {"b": 2, "a": 1}),
        ([(1,)], [[1]]),
    ]:
        with pytest.raises(AssertionError):
            assert_same(got, want)
