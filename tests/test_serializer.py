"""JSONSerializer and PickleSerializer: exact round-trips, canonical output, clear refusals."""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import decimal
import enum
import json
import math
import pathlib
import uuid
from typing import Any, NamedTuple

import pytest
from hypothesis import given
from hypothesis import strategies as st

from duravoke._errors import DuravokeError, SerializationError
from duravoke._serializer import (
    JSONSerializer,
    JSONValue,
    PickleSerializer,
    Serializer,
    canonical_json,
)

JSON = JSONSerializer()


def same(a: object, b: object, ordered: bool = True) -> bool:
    """Equal value *and* identical types, all the way down (NaN equals NaN, -0.0 is not 0.0).

    With ``ordered`` (the default) dicts must also list their items in the same order.
    """
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        assert isinstance(b, float)
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, decimal.Decimal):
        assert isinstance(b, decimal.Decimal)
        return a.compare_total(b) == 0  # tells 1.0 from 1.00, -0 from 0; NaN equals NaN
    if isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple))
        return len(a) == len(b) and all(same(x, y, ordered) for x, y in zip(a, b))
    if isinstance(a, dict):
        assert isinstance(b, dict)
        if not ordered:
            return len(a) == len(b) and all(
                any(same(ka, kb, ordered) and same(va, vb, ordered) for kb, vb in b.items())
                for ka, va in a.items()
            )
        return len(a) == len(b) and all(
            same(ka, kb) and same(va, vb) for (ka, va), (kb, vb) in zip(a.items(), b.items())
        )
    if isinstance(a, (set, frozenset)):
        assert isinstance(b, (set, frozenset))
        return len(a) == len(b) and all(any(same(x, y, ordered) for y in b) for x in a)
    if isinstance(a, (dt.datetime, dt.time)):
        assert isinstance(b, (dt.datetime, dt.time))
        # == ignores the offset of aware values; isoformat shows it (and microseconds).
        return (
            a == b
            and a.isoformat() == b.isoformat()
            and a.tzinfo == b.tzinfo
            and a.tzname() == b.tzname()  # timezone equality ignores the name
        )
    return a == b


def roundtrip(value: object, serializer: Serializer = JSON, **kwargs: Any) -> object:
    """Encode, go through strict JSON text as a state file would, decode."""
    text = json.dumps(serializer.encode(value, **kwargs), allow_nan=False)
    return serializer.decode(json.loads(text))


def test_same_helper_is_strict() -> None:
    # The round-trip tests are only as good as this comparison.
    assert not same(1, True)
    assert not same(1, 1.0)
    assert not same(0.0, -0.0)
    assert not same((1,), [1])
    assert not same({"a": 1, "b": 2}, {"b": 2, "a": 1})
    assert same({"a": 1, "b": 2}, {"b": 2, "a": 1}, ordered=False)
    assert not same({"a": 1, "b": 2}, {"b": 2, "a": 1.0}, ordered=False)
    assert not same({1}, {True})
    assert not same(decimal.Decimal("1.0"), decimal.Decimal("1.00"))
    assert not same([[1]], [[1.0]])
    utc = dt.datetime(2024, 1, 1, 12, tzinfo=dt.timezone.utc)
    assert not same(utc, utc.astimezone(dt.timezone(dt.timedelta(hours=2))))
    assert not same(
        dt.time(1, tzinfo=PLUS_0530),
        dt.time(1, tzinfo=dt.timezone(PLUS_0530.utcoffset(None), "IST")),
    )
    assert same(float("nan"), float("nan"))


UTC = dt.timezone.utc
PLUS_0530 = dt.timezone(dt.timedelta(hours=5, minutes=30))
MINUS_ODD = dt.timezone(-dt.timedelta(hours=3, seconds=7, microseconds=11))
CET = dt.timezone(dt.timedelta(hours=1), "CET")

VALUES = [
    None,
    True,
    False,
    0,
    -1,
    2**200,
    -(2**200),
    0.0,
    -0.0,
    1.5,
    1e308,
    5e-324,
    float("nan"),
    float("inf"),
    float("-inf"),
    "",
    'héllo ✓ \x00 \n "quoted" \\',
    "$t",
    [],
    (),
    {},
    set(),
    frozenset(),
    [1, "a", None, [2, [3.5]]],
    (1,),
    (1, (2, (3,)), [4, (5,)]),
    {"a": 1, "b": [1, 2], "c": {"d": (1, 2)}},
    {"b": 1, "a": 2},
    {1: "one", 2: "two"},
    {1: "int", "1": "str", None: "none", 2.5: "float"},
    {(1, 2): "tuple key", frozenset({3}): "frozenset key"},
    {"$t": "tuple", "v": [1, 2]},
    {"$t": 1},
    {"outer": {"$t": "float", "v": "nan"}},
    {1, 2, 3},
    {"a", (1, 2), None, 2.5},
    frozenset({frozenset({1}), frozenset()}),
    b"",
    b"\x00\xff binary \x80",
    dt.datetime(2024, 2, 29, 23, 59, 58, 123456),
    dt.datetime(2024, 2, 29, 23, 59, 58, tzinfo=UTC),
    dt.datetime(1, 1, 1, tzinfo=PLUS_0530),
    dt.datetime(2024, 1, 1, tzinfo=dt.timezone(dt.timedelta(0))),
    dt.datetime(2024, 1, 1, tzinfo=dt.timezone(dt.timedelta(0), "UTC")),  # the name it gets back
    dt.datetime(2024, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=1), "UTC+01:00")),
    dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=MINUS_ODD),
    dt.date(2024, 2, 29),
    dt.time(0, 0),
    dt.time(13, 14, 15, 16),
    dt.time(13, 14, 15, 16, tzinfo=PLUS_0530),
    dt.timedelta(0),
    dt.timedelta(days=-1, seconds=5, microseconds=10),
    dt.timedelta.max,
    dt.timedelta.min,
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
    decimal.Decimal("1.10"),
    decimal.Decimal("-0"),
    decimal.Decimal("1E+2"),
    decimal.Decimal("NaN"),
    decimal.Decimal("-sNaN123"),
    decimal.Decimal("-Infinity"),
    decimal.Decimal("3.14159265358979323846264338327950288419716939937510"),
    pathlib.Path("/tmp/some dir/file.txt"),
    pathlib.Path("relative"),
    pathlib.PurePosixPath("/etc/hosts"),
    pathlib.PureWindowsPath(r"C:\Users\me"),
    [
        {"when": dt.datetime(2024, 1, 1, tzinfo=UTC), "ids": {uuid.UUID(int=1)}},
        ({b"k": [dt.date(2000, 1, 1)]}, frozenset({(1, "x")})),
        {dt.timedelta(1): decimal.Decimal("0.1"), (): pathlib.Path("p")},
    ],
]


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_round_trip_keeps_exact_type_and_value(value: object) -> None:
    assert same(roundtrip(value), value)


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_canonical_encoding_round_trips_too(value: object) -> None:
    # Canonical output sorts the pairs of non-str-keyed dicts, so their order may change.
    assert same(roundtrip(value, canonical=True), value, ordered=False)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("s", "s"),
        ({"a": [1, None]}, {"a": [1, None]}),
        ((1, 2), {"$t": "tuple", "v": [1, 2]}),
        (float("nan"), {"$t": "float", "v": "nan"}),
        (float("-inf"), {"$t": "float", "v": "-inf"}),
        ({1: 2}, {"$t": "dict", "v": [[1, 2]]}),
        ({"$t": 0}, {"$t": "dict", "v": [["$t", 0]]}),
        ({3, 1, 2}, {"$t": "set", "v": [1, 2, 3]}),
        (frozenset({"b", "a"}), {"$t": "frozenset", "v": ["a", "b"]}),
        (b"hi", {"$t": "bytes", "v": "aGk="}),
        (
            dt.datetime(2024, 1, 2, 3, 4, 5, 6),
            {"$t": "datetime", "v": "2024-01-02T03:04:05.000006"},
        ),
        (dt.datetime(2024, 1, 2, tzinfo=UTC), {"$t": "datetime", "v": "2024-01-02T00:00:00+00:00"}),
        (dt.date(2024, 1, 2), {"$t": "date", "v": "2024-01-02"}),
        (dt.time(3, 4), {"$t": "time", "v": "03:04:00"}),
        (dt.timedelta(days=-1, seconds=2), {"$t": "timedelta", "v": [-1, 2, 0]}),
        (uuid.UUID(int=0), {"$t": "uuid", "v": "00000000-0000-0000-0000-000000000000"}),
        (decimal.Decimal("-0.10"), {"$t": "decimal", "v": "-0.10"}),
        (pathlib.Path("a/b"), {"$t": "path", "v": str(pathlib.Path("a/b"))}),
        (pathlib.PurePosixPath("a/b"), {"$t": "pureposixpath", "v": "a/b"}),
        (pathlib.PureWindowsPath("a/b"), {"$t": "purewindowspath", "v": "a\\b"}),
    ],
    ids=repr,
)
def test_wire_format(value: object, expected: JSONValue) -> None:
    # State files outlive releases: the format is pinned, not just "it round-trips".
    assert JSON.encode(value) == expected


def test_encode_and_decode_copy_containers() -> None:
    # A recorded value must not change when the caller mutates what it returned.
    inner = [1]
    value = {"k": inner}
    encoded = JSON.encode(value)
    assert isinstance(encoded, dict)
    assert encoded is not value
    assert encoded["k"] is not inner
    assert JSON.decode(encoded) is not encoded


def test_encoded_output_is_strict_json() -> None:
    value = [float("nan"), {1: float("inf")}, {float("-inf")}, decimal.Decimal("NaN")]
    json.dumps(JSON.encode(value), allow_nan=False)  # raises on a bare NaN


# --- Property: anything built from supported types round-trips exactly -------------------

_timezones = st.builds(
    dt.timezone,
    st.timedeltas(min_value=dt.timedelta(hours=-23, minutes=-59), max_value=dt.timedelta(hours=23)),
)
_decimals = st.decimals(allow_nan=True, allow_infinity=True)
_others = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text()
    | st.binary()
    | st.datetimes(timezones=st.none() | _timezones)
    | st.dates()
    | st.times(timezones=st.none() | _timezones)
    | st.timedeltas()
    | st.uuids()
    | st.text().map(pathlib.Path)
    | st.text().map(pathlib.PurePosixPath)
    | st.text().map(pathlib.PureWindowsPath)
)
_scalars = _others | _decimals
_hashables = st.recursive(
    _others | _decimals.filter(lambda d: not d.is_snan()),  # a signaling NaN cannot be hashed
    lambda inner: st.tuples(inner, inner) | st.frozensets(inner, max_size=3),
    max_leaves=8,
)
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=4).map(tuple)
        | st.dictionaries(st.text(max_size=3) | st.just("$t"), inner, max_size=4)
        | st.dictionaries(_hashables, inner, max_size=4)
        | st.sets(_hashables, max_size=4)
        | st.frozensets(_hashables, max_size=4)
    ),
    max_leaves=20,
)


@given(_values)
def test_property_round_trip(value: object) -> None:
    assert same(roundtrip(value), value)


@given(st.dictionaries(_hashables, st.integers(), max_size=6))
def test_property_canonical_ignores_insertion_order(value: dict[Any, int]) -> None:
    backwards = dict(reversed(value.items()))
    encoded = JSON.encode(value, canonical=True)
    assert canonical_json(encoded) == canonical_json(JSON.encode(backwards, canonical=True))


# --- Canonical output ---------------------------------------------------------------------


def canon(value: object) -> str:
    return canonical_json(JSON.encode(value, canonical=True))


def test_canonical_sets_do_not_depend_on_insertion_order() -> None:
    # 0 and 8 share a slot in a small set's table, so their iteration order follows insertion.
    first, second = {0}, {8}
    first.add(8)
    second.add(0)
    assert list(first) != list(second)  # the premise: iteration orders do differ
    assert canon(first) == canon(second)
    assert JSON.encode(first) == JSON.encode(second)  # sets are sorted even when not canonical


def test_canonical_dicts_do_not_depend_on_insertion_order() -> None:
    assert canon({"a": 1, "b": 2}) == canon({"b": 2, "a": 1})
    ints_ab, ints_ba = {1: "a", 2: "b"}, {2: "b", 1: "a"}
    assert canon(ints_ab) == canon(ints_ba)
    # Without canonical=True the recorded order is the dict's own.
    assert JSON.encode(ints_ab) != JSON.encode(ints_ba)


def test_canonical_keeps_distinct_values_apart() -> None:
    assert canon((1, 2)) != canon([1, 2])
    assert canon({1, 2}) != canon(frozenset({1, 2}))
    assert canon({1: "a"}) != canon({"1": "a"})
    assert canon(1) != canon(True) != canon(1.0)


def test_canonical_json_spelling() -> None:
    assert canonical_json({"b": [1, "é"], "a": None}) == '{"a":null,"b":[1,"é"]}'
    with pytest.raises(ValueError, match="JSON compliant"):
        canonical_json(float("nan"))


# --- Refusals ------------------------------------------------------------------------------


class Color(enum.IntEnum):
    RED = 1


class Point(NamedTuple):
    x: int
    y: int


class Name(str):
    pass


class Moment(dt.datetime):
    pass


class Zone(dt.tzinfo):
    """A tzinfo that is not datetime.timezone, like zoneinfo.ZoneInfo."""

    def utcoffset(self, when: dt.datetime | None) -> dt.timedelta:
        return dt.timedelta(hours=1)

    def dst(self, when: dt.datetime | None) -> dt.timedelta:
        return dt.timedelta(0)

    def tzname(self, when: dt.datetime | None) -> str:
        return "Zone"


def _generator() -> Any:
    yield 1


def _qual(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _self_list() -> list[Any]:
    value: list[Any] = [1]
    value.append(value)
    return value


def _self_dict() -> dict[str, Any]:
    value: dict[str, Any] = {"a": [1]}
    value["a"].append({"back": value})
    return value


REFUSED = [
    (object(), "result", "object"),
    (Color.RED, "result", _qual(Color)),
    (Point(1, 2), "result", _qual(Point)),
    (Name("x"), "result", _qual(Name)),
    (Moment(2024, 1, 1), "result", _qual(Moment)),
    (lambda: 1, "result", "function"),
    (_generator(), "result", "generator"),
    (collections.OrderedDict(a=1), "result", "collections.OrderedDict"),
    (collections.defaultdict(list), "result", "collections.defaultdict"),
    (bytearray(b"x"), "result", "bytearray"),
    (1 + 2j, "result", "complex"),
    ({"a": [1, {"when": object()}]}, "result['a'][1]['when']", "object"),
    ([0, (1, Color.RED)], "result[1][1]", _qual(Color)),
    ({frozenset({1}): {2: [Point(0, 0)]}}, "result[frozenset({1})][2][0]", _qual(Point)),
    ({Name("k"): 1}, "<key of result>", _qual(Name)),
    ({(1, Color.RED): 1}, "<key of result>[1]", _qual(Color)),
    ([{Color.RED}], "result[0]{...}", _qual(Color)),
    (_self_list(), "result[1]", "list"),
    (_self_dict(), "result['a'][1]['back']", "dict"),
    (dt.datetime(2024, 1, 1, tzinfo=Zone()), "result", _qual(Zone)),
    ({"t": dt.time(1, tzinfo=Zone())}, "result['t']", _qual(Zone)),
    # Equal to timezone(+1h), yet tzname() says "CET": the name would be lost.
    (dt.datetime(2024, 1, 1, tzinfo=CET), "result", "datetime.timezone"),
    (dt.time(1, tzinfo=CET), "result", "datetime.timezone"),
    (
        dt.datetime(2024, 1, 1, tzinfo=dt.timezone(dt.timedelta(0), "Z")),
        "result",
        "datetime.timezone",
    ),
]


@pytest.mark.parametrize(("value", "where", "type_name"), REFUSED, ids=repr)
def test_refused_with_location(value: object, where: str, type_name: str) -> None:
    with pytest.raises(SerializationError) as info:
        JSON.encode(value)
    assert info.value.where == where
    assert info.value.type_name == type_name
    assert info.value.function is None
    assert f"cannot record {where}:" in str(info.value)
    assert info.value.__context__ is None  # no internal exception leaks into the traceback


def test_refusal_names_the_type_and_the_exact_type_rule() -> None:
    with pytest.raises(SerializationError, match="IntEnum or NamedTuple") as info:
        JSON.encode([Color.RED])
    assert repr(_qual(Color)) in str(info.value)


def test_custom_root_name() -> None:
    with pytest.raises(SerializationError) as info:
        JSON.encode({"x": object()}, where="user")
    assert info.value.where == "user['x']"
    assert "cannot record user['x']:" in str(info.value)


def test_deep_nesting_is_a_serialization_error() -> None:
    value: list[Any] = []
    for _ in range(100_000):
        value = [value]
    with pytest.raises(SerializationError, match="nested deeper than the recursion limit") as info:
        JSON.encode(value)
    assert info.value.where == "result"


def test_shared_but_acyclic_values_are_fine() -> None:
    # The cycle check must look at the path, not at every object seen so far.
    shared = [1, 2]
    value = {"a": shared, "b": shared, "c": (shared, shared)}
    assert same(roundtrip(value), value)


def test_serialization_error_is_a_type_error_and_a_duravoke_error() -> None:
    with pytest.raises(SerializationError) as info:
        JSON.encode(object())
    assert isinstance(info.value, TypeError)
    assert isinstance(info.value, DuravokeError)


# --- Decoding damaged data -----------------------------------------------------------------

MALFORMED: list[Any] = [
    {"$t": "nope", "v": 1},
    {"$t": "pickle", "v": "gARLAS4="},  # JSONSerializer never unpickles
    {"$t": 3, "v": 1},
    {"$t": ["tuple"], "v": []},
    {"$t": "tuple"},
    {"$t": "tuple", "v": [], "extra": 1},
    {"$t": "tuple", "v": "abc"},
    {"$t": "set", "v": [[1]]},
    {"$t": "dict", "v": [[1]]},
    {"$t": "dict", "v": [1, 2]},
    {"$t": "float", "v": "1.5"},
    {"$t": "float", "v": 1.5},
    {"$t": "bytes", "v": "not base64!"},
    {"$t": "datetime", "v": "yesterday"},
    {"$t": "date", "v": 20240101},
    {"$t": "timedelta", "v": [1, 2]},
    {"$t": "timedelta", "v": [1, 2, 3.5]},
    {"$t": "uuid", "v": "zz"},
    {"$t": "decimal", "v": 1.5},
    {"$t": "decimal", "v": "one"},
    {"$t": "path", "v": None},
    [1, {"a": {"$t": "tuple", "v": {"$t": "bogus", "v": 0}}}],
    (1, 2),
]


@pytest.mark.parametrize("data", MALFORMED, ids=repr)
def test_decode_rejects_malformed_data_with_value_error(data: Any) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - ValueError is the documented contract
        JSON.decode(data)


# --- PickleSerializer ----------------------------------------------------------------------


@dataclasses.dataclass
class Custom:
    name: str
    items: list[object]


def test_pickle_round_trips_arbitrary_objects() -> None:
    pickler = PickleSerializer()
    value = Custom("x", [Color.RED, Point(1, 2), {1, 2}])
    encoded = pickler.encode(value)
    assert isinstance(encoded, dict)
    assert encoded["$t"] == "pickle"
    assert isinstance(encoded["v"], str)
    back = roundtrip(value, pickler)
    assert type(back) is Custom
    assert back == value
    assert type(back.items[0]) is Color


def test_pickle_refuses_canonical() -> None:
    with pytest.raises(SerializationError, match="canonical") as info:
        PickleSerializer().encode(1, where="arg", canonical=True)
    assert info.value.where == "arg"


def test_pickle_refuses_unpicklable_values() -> None:
    with pytest.raises(SerializationError) as info:
        PickleSerializer().encode(lambda: 1)
    assert info.value.type_name == "function"
    assert info.value.where == "result"


@pytest.mark.parametrize(
    "data",
    [
        {"$t": "tuple", "v": []},
        {"$t": "pickle", "v": "!!"},
        {"$t": "pickle", "v": "gARLAQ=="},  # truncated pickle
        {"$t": "pickle"},
        "text",
    ],
    ids=repr,
)
def test_pickle_decode_rejects_malformed_data(data: Any) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - ValueError is the documented contract
        PickleSerializer().decode(data)
