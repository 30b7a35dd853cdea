"""Typed results: the return annotation rebuilds the value (DESIGN section 12, issue 14).

Every case runs twice: a first run that records, then a fresh instance on the same
folder that must replay without running the body, and both must give a value equal
to the original and of the same types all the way down. This module evaluates its
annotations (no ``from __future__ import annotations``; tests/test_typed_future.py
is the one that postpones them), so a forward reference here is a string.
"""

import dataclasses
import datetime as dt
import enum
import io
import json
import subprocess
import sys
import threading
import typing
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any, Literal, NamedTuple
from zoneinfo import ZoneInfo

import pydantic
import pytest
from typing_extensions import TypedDict  # pydantic needs it before Python 3.12

import duravoke
from duravoke._typed import ResultCodec

PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")


# --- the types of the issue ----------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: int


@dataclasses.dataclass(slots=True)
class Line:
    start: Point
    end: Point
    label: str = ""


@dataclasses.dataclass
class Item:
    name: str
    when: dt.datetime
    price: float


@dataclasses.dataclass
class Invoice:
    number: int
    items: list[Item]
    lines: dict[str, Line]
    tags: frozenset[str]
    due: dt.date
    color: "Color"  # a forward reference: Color is defined below
    note: str | None = None


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Perm(enum.Flag):
    READ = 1
    WRITE = 2
    EXEC = 4


class Mode(str, enum.Enum):  # a StrEnum before 3.11
    FAST = "fast"
    SLOW = "slow"


class Customer(pydantic.BaseModel):
    id: int
    name: str
    since: dt.datetime
    home: Point
    levels: list[Level] = []


class Cat(pydantic.BaseModel):
    kind: Literal["cat"] = "cat"
    lives: int


class Dog(pydantic.BaseModel):
    kind: Literal["dog"] = "dog"
    good: bool


class Movie(TypedDict):
    title: str
    year: int
    when: dt.datetime


class Pair(NamedTuple):
    left: int
    right: Color


MEETING = dt.datetime(2026, 3, 29, 1, 30, tzinfo=PARIS)  # the night clocks change
SUMMER = dt.datetime(2026, 7, 1, 9, 0, tzinfo=NEW_YORK)
INVOICE = Invoice(
    7,
    [Item("pen", MEETING, 1.5), Item("ink", SUMMER, 2.0)],
    {"a": Line(Point(0, 0), Point(1, 1), "diag")},
    frozenset({"x", "y"}),
    dt.date(2026, 4, 1),
    Color.GREEN,
)
CUSTOMER = Customer(id=1, name="Ada", since=MEETING, home=Point(3, 4), levels=[Level.HIGH])
MOVIE: Movie = {"title": "Alien", "year": 1979, "when": SUMMER}

CASES: list[tuple[str, Any, Any]] = [
    ("dataclass-frozen", Point, Point(1, 2)),
    ("dataclass-slots-nested", Line, Line(Point(1, 2), Point(3, 4))),
    ("dataclass-deep", Invoice, INVOICE),
    ("enum", Color, Color.RED),
    ("intenum", Level, Level.HIGH),
    ("flag", Perm, Perm.READ | Perm.EXEC),
    ("str-enum", Mode, Mode.SLOW),
    ("pydantic", Customer, CUSTOMER),
    ("typeddict", Movie, MOVIE),
    ("namedtuple", Pair, Pair(1, Color.RED)),
    ("zoned-datetime", dt.datetime, MEETING),
    ("zoned-datetime-summer", dt.datetime, SUMMER),
    ("list", list[Point], [Point(1, 2), Point(3, 4)]),
    ("list-of-models", list[Customer], [CUSTOMER, CUSTOMER]),
    ("list-of-zoned", list[dt.datetime], [MEETING, SUMMER, dt.datetime(2026, 1, 1)]),
    ("dict", dict[str, Invoice], {"a": INVOICE}),
    ("dict-enum-keys", dict[Color, Level], {Color.RED: Level.LOW, Color.GREEN: Level.HIGH}),
    ("dict-point-values", dict[str, list[Point]], {"p": [Point(0, 1)], "q": []}),
    ("tuple", tuple[Point, Color, Customer], (Point(5, 6), Color.GREEN, CUSTOMER)),
    ("tuple-var", tuple[Level, ...], (Level.LOW, Level.HIGH, Level.LOW)),
    ("set", set[Point], {Point(1, 2), Point(2, 1)}),
    ("set-enum", set[Color], {Color.RED, Color.GREEN}),
    ("frozenset-namedtuple", frozenset[Pair], frozenset({Pair(1, Color.RED), Pair(2, Color.RED)})),
    ("optional-some", Point | None, Point(9, 9)),
    ("optional-none", Point | None, None),
    ("optional-model", typing.Optional[Customer], CUSTOMER),  # noqa: UP045
    ("union-cat", Cat | Dog, Cat(lives=9)),
    ("union-dog", Cat | Dog, Dog(good=True)),
    ("list-of-union", list[Cat | Dog], [Dog(good=False), Cat(lives=3)]),
    ("union-dataclass-model", Point | Customer, CUSTOMER),
    ("optional-in-list", list[Color | None], [Color.RED, None]),
]
if sys.version_info >= (3, 11):
    Size = enum.StrEnum("Size", {"S": "s", "M": "m"})  # type: ignore[misc]
    CASES.append(("strenum", Size, Size.M))


def same(a: Any, b: Any, where: str = "value") -> None:
    """Assert ``b`` equals ``a`` and has the same type, all the way down."""
    assert type(a) is type(b), f"{where}: {type(a)} != {type(b)}"
    assert a == b, f"{where}: {a!r} != {b!r}"
    if isinstance(a, dict):
        for k in a:
            same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            same(x, y, f"{where}[{i}]")
    elif dataclasses.is_dataclass(a):
        for f in dataclasses.fields(a):
            same(getattr(a, f.name), getattr(b, f.name), f"{where}.{f.name}")
    elif isinstance(a, pydantic.BaseModel):
        for name in type(a).model_fields:
            same(getattr(a, name), getattr(b, name), f"{where}.{name}")
    elif isinstance(a, dt.datetime):
        assert a.tzinfo is b.tzinfo or a.tzinfo == b.tzinfo, f"{where}: {a.tzinfo!r}"
        assert a.utcoffset() == b.utcoffset(), where
        assert a.tzname() == b.tzname(), where


def annotated(annotation: Any, body: Callable[..., Any]) -> Callable[..., Any]:
    """``body`` with ``annotation`` as its return annotation (read at the first call)."""
    body.__annotations__ = {"return": annotation}
    return body


def store_dir(tmp_path: Path) -> Path:
    return tmp_path / "store"


def instance(tmp_path: Path) -> duravoke.Duravoke:
    return duravoke.Duravoke(duravoke.DirectoryStore(store_dir(tmp_path)))


def recorded_results(tmp_path: Path) -> list[Any]:
    store = duravoke.DirectoryStore(store_dir(tmp_path))
    results = []
    for workflow_id in store.workflow_ids():
        state = store.read(workflow_id)
        assert state is not None
        results += [s["result"] for s in state["steps"].values() if "result" in s]
    return results


# --- first run and replay ------------------------------------------------------


@pytest.mark.parametrize(("annotation", "value"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_typed_results_round_trip_sync(tmp_path: Path, annotation: Any, value: Any) -> None:
    calls: list[int] = []

    def make() -> Callable[[], Any]:
        def step() -> Any:
            calls.append(1)
            return value

        return instance(tmp_path).duravoke(name="step")(annotated(annotation, step))

    fn = make()
    first = fn()
    same(value, first)
    if not isinstance(value, (enum.Enum, type(None))):  # members are singletons
        assert first is not value  # the first run returns the copy a replay returns
    assert calls == [1]
    fn = make()
    same(value, fn())
    assert calls == [1]
    typed = [
        r for r in recorded_results(tmp_path) if isinstance(r, dict) and r.get("$t") == "typed"
    ]
    assert len(typed) == 1
    assert "Point" not in json.dumps(typed)
    assert "Customer" not in json.dumps(typed)


@pytest.mark.anyio
@pytest.mark.parametrize(("annotation", "value"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_typed_results_round_trip_async(tmp_path: Path, annotation: Any, value: Any) -> None:
    calls: list[int] = []

    def make() -> Callable[[], Any]:
        async def step() -> Any:
            calls.append(1)
            return value

        return instance(tmp_path).duravoke(name="step")(annotated(annotation, step))

    same(value, await make()())
    same(value, await make()())
    assert calls == [1]


def test_results_inside_a_workflow_replay_in_order(tmp_path: Path) -> None:
    calls: list[str] = []

    def run() -> tuple[Point, Invoice, Level]:
        d = instance(tmp_path)

        @d.duravoke
        def point(i: int) -> Point:
            calls.append("point")
            return Point(i, i)

        @d.duravoke
        def invoice() -> Invoice:
            calls.append("invoice")
            return INVOICE

        @d.duravoke
        def level(p: Point) -> Level:
            calls.append("level")
            return Level.HIGH if p.x else Level.LOW

        with d.workflow("billing"):
            p = point(1)
            return p, invoice(), level(p)

    first = run()
    again = run()
    same(first, again)
    assert calls == ["point", "invoice", "level"]


def test_untyped_results_are_recorded_exactly_as_before(tmp_path: Path) -> None:
    d = instance(tmp_path)
    naive = dt.datetime(2026, 1, 1, 12)
    values = {
        "none": (None, None),
        "int": (int, 5),
        "list": (list[int], [1, 2]),
        "dict-any": (dict[str, Any], {"a": (1, 2)}),
        "datetime": (dt.datetime, naive),
        "optional-datetime": (dt.datetime | None, naive),
        "object": (object, {1, 2}),
        "missing": (dt.timedelta, dt.timedelta(1)),
    }
    encoded = {}
    for name, (annotation, value) in values.items():

        def step(value: Any = value) -> Any:
            return value

        if annotation is not None:
            step = annotated(annotation, step)
        with d.workflow(name):
            same(value, d.duravoke(name=name)(step)())
        encoded[name] = duravoke.JSONSerializer().encode(value)
    results = recorded_results(tmp_path)
    assert sorted(map(json.dumps, results)) == sorted(map(json.dumps, encoded.values()))


def test_an_old_record_of_a_now_annotated_function_still_loads(tmp_path: Path) -> None:
    # Recorded before the annotation was added: untyped data, decoded as it was.
    d = instance(tmp_path)
    with d.workflow("w"):
        assert d.duravoke(name="f")(lambda: dt.datetime(2026, 1, 1))() == dt.datetime(2026, 1, 1)
        assert d.duravoke(name="g")(lambda: {"x": 1, "y": 2})() == {"x": 1, "y": 2}

    def f() -> dt.datetime:
        raise AssertionError("replayed")

    def g() -> Point:
        raise AssertionError("replayed")

    d = instance(tmp_path)
    with d.workflow("w"):
        assert d.duravoke(name="f")(f)() == dt.datetime(2026, 1, 1)
        old: Any = d.duravoke(name="g")(g)()  # the dict it was, not a Point
        assert old == {"x": 1, "y": 2}


def test_a_zoned_datetime_under_a_plain_annotation_is_typed_only_when_needed(
    tmp_path: Path,
) -> None:
    d = instance(tmp_path)
    naive = dt.datetime(2026, 1, 1)

    def step(value: dt.datetime) -> dt.datetime:
        return value

    fn = d.duravoke(step)
    with d.workflow("w"):
        same(naive, fn(naive))
        same(MEETING, fn(MEETING))
    results = recorded_results(tmp_path)
    assert {"$t": "datetime", "v": "2026-01-01T00:00:00"} in results
    zoned = {"$t": "zdatetime", "v": ["2026-03-29T01:30:00+01:00", "Europe/Paris"]}
    assert {"$t": "typed", "v": zoned} in results


def test_zones_survive_folds_and_gaps(tmp_path: Path) -> None:
    d = instance(tmp_path)
    # The second 01:30 of a fall-back night, and a time that does not exist (spring gap).
    fold = dt.datetime(2026, 11, 1, 1, 30, fold=1, tzinfo=NEW_YORK)
    values = [fold, dt.datetime(2026, 10, 25, 2, 30, fold=1, tzinfo=PARIS)]

    @d.duravoke
    def step(i: int) -> list[dt.datetime]:
        return values

    for _ in range(2):
        with d.workflow("w"):
            got = step(1)
            assert [v.utcoffset() for v in got] == [v.utcoffset() for v in values]
            assert [v.tzinfo for v in got] == [NEW_YORK, PARIS]


# --- forward references --------------------------------------------------------


LATER_CALLS: list[int] = []


def later_step() -> "LaterResult":  # decorated below, before LaterResult exists
    LATER_CALLS.append(1)
    return LaterResult(Point(1, 1), [Color.RED])


forward = duravoke.Duravoke(duravoke.InMemoryKKV())
durable_later_step = forward.duravoke(later_step)


@dataclasses.dataclass
class LaterResult:
    at: Point
    colors: "list[Color]"


def test_forward_references_resolve_at_the_first_call() -> None:
    for _ in range(2):
        with forward.workflow("forward"):
            same(LaterResult(Point(1, 1), [Color.RED]), durable_later_step())
    assert LATER_CALLS == [1]


# --- arguments -----------------------------------------------------------------


def test_typed_arguments_identify_calls(tmp_path: Path) -> None:
    d = instance(tmp_path)
    calls: list[Any] = []

    @d.duravoke
    def use(p: Any) -> int:
        calls.append(p)
        return len(calls)

    with d.workflow("w"):
        a = use(Point(1, 2))
        b = use(Level.HIGH)
        c = use(CUSTOMER)
        z = use(MEETING)
        t = use([Pair(1, Color.RED), {Color.GREEN}])
    with d.workflow("w"):
        # Equal values built anew are the same calls: all replayed.
        assert use(Point(1, 2)) == a
        assert use(Level.HIGH) == b
        assert use(CUSTOMER.model_copy(deep=True)) == c
        assert use(dt.datetime(2026, 3, 29, 1, 30, tzinfo=PARIS)) == z
        assert use([Pair(1, Color.RED), {Color.GREEN}]) == t
    assert len(calls) == 5
    with d.workflow("w2"):
        use(Point(1, 2))
        use(Point(2, 1))  # other values are other calls
        use({"x": 1, "y": 2})  # a dict is not the dataclass of its fields
        use(2)  # an IntEnum is not its value
        use(dt.datetime(2026, 3, 29, 1, 30, tzinfo=dt.timezone(dt.timedelta(hours=1))))
    assert len(calls) == 10


def test_plain_argument_identities_are_unchanged() -> None:
    from duravoke._identity import CallIdentity

    def f(a: Any, b: Any = (1, 2)) -> None: ...

    identity = CallIdentity(f, "f", None)
    _encoded, text = identity.encode((dt.datetime(2026, 1, 1), {3, 1}), {})
    assert text == json.dumps(
        {
            "a": {"$t": "datetime", "v": "2026-01-01T00:00:00"},
            "b": {"$t": "set", "v": [1, 3]},
        },
        sort_keys=True,
        separators=(",", ":"),
    )


def test_an_object_argument_still_shows_the_key_fix(tmp_path: Path) -> None:
    d = instance(tmp_path)

    @d.duravoke
    def use(p: Any) -> int:
        raise AssertionError("must not run")

    with pytest.raises(duravoke.SerializationError, match="key=") as info:
        use(Point(1, object()))  # type: ignore[arg-type]
    assert info.value.where == "p.y"
    assert info.value.type_name == "object"


# --- refused early -------------------------------------------------------------


class Plain:
    """A class with no fields duravoke could know of."""


REFUSED: list[tuple[str, Any, str]] = [
    ("open-file", io.TextIOWrapper, "TextIOWrapper"),
    ("typing-io", typing.TextIO, "TextIO"),
    ("lock", threading.Lock, "lock"),
    ("lock-type", type(threading.Lock()), "lock"),
    ("generator", Generator[int, None, None], "generator"),
    ("iterator", Iterator[Point], "iterator"),
    ("callable", Callable[[], int], "callable"),
    ("plain-class", Plain, "Plain"),
    ("list-of-plain-class", list[Plain], "Plain"),
    ("optional-file", io.BufferedReader | None, "BufferedReader"),
]


@pytest.mark.parametrize(
    ("annotation", "name"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED]
)
def test_unrecordable_annotations_are_refused_before_the_body_runs(
    tmp_path: Path, annotation: Any, name: str
) -> None:
    d = instance(tmp_path)
    ran: list[int] = []

    def step() -> Any:
        ran.append(1)
        return []

    fn = d.duravoke(annotated(annotation, step))
    for _ in range(2):  # refused at every call, never run
        with pytest.raises(duravoke.SerializationError) as info:
            fn()
        assert name.lower() in str(info.value).lower()
        assert "Return data instead" in str(info.value)
        assert info.value.function is not None
        assert info.value.where == "result"
    assert ran == []


@pytest.mark.anyio
async def test_unrecordable_annotations_are_refused_before_the_body_runs_async(
    tmp_path: Path,
) -> None:
    d = instance(tmp_path)
    ran: list[int] = []

    @d.duravoke
    async def step() -> Plain:
        ran.append(1)
        return Plain()

    with pytest.raises(duravoke.SerializationError, match="Plain"):
        await step()
    assert ran == []


def test_missing_pydantic_names_the_extra(tmp_path: Path) -> None:
    code = """
import sys, dataclasses, datetime
sys.modules["pydantic"] = None  # as if it were not installed
import duravoke
assert "pydantic_core" not in sys.modules
@dataclasses.dataclass
class P:
    x: int
d = duravoke.Duravoke(duravoke.InMemoryKKV())
@d.duravoke
def plain() -> list[int]:
    return [1]
@d.duravoke
def when() -> datetime.datetime:  # plain unless a zoned value needs the typed form
    return datetime.datetime(2026, 1, 1)
@d.duravoke
def f() -> P:
    raise AssertionError("ran")
assert plain() == [1]
assert when() == datetime.datetime(2026, 1, 1)
assert "pydantic_core" not in sys.modules
try:
    f()
except duravoke.SerializationError as exc:
    print(exc)
"""
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert "pip install 'duravoke[typed]'" in proc.stdout


def test_import_duravoke_does_not_import_pydantic() -> None:
    code = "import sys, duravoke; print('pydantic' in sys.modules)"
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert proc.stdout.strip() == "False"


# --- values that do not match their annotation ----------------------------------


@dataclasses.dataclass
class Report:
    items: list[Item]


def test_a_value_that_does_not_match_is_refused_with_its_path(tmp_path: Path) -> None:
    d = instance(tmp_path)
    bad = Report([Item("a", MEETING, 1.0), Item("b", MEETING, 2.0), Item("c", "now", 3.0)])  # type: ignore[arg-type]
    calls: list[int] = []

    @d.duravoke
    def report() -> Report:
        calls.append(1)
        return bad

    for _ in range(2):  # not recorded: it runs again
        with pytest.raises(duravoke.SerializationError) as info:
            report()
        assert info.value.where == "result.items[2].when"
        assert "result.items[2].when" in str(info.value)
    assert calls == [1, 1]


@pytest.mark.parametrize(
    ("annotation", "value", "where"),
    [
        (Point, Point(1, "2"), "result.y"),  # type: ignore[arg-type]  # would become 2
        (Point, {"x": 1, "y": 2}, "result"),  # a dict is not the dataclass
        (list[Level], [Level.LOW, 2], "result[1]"),  # an int is not the IntEnum
        (dict[str, Any], {"p": Point(1, 2)}, "result['p']"),  # Any cannot rebuild a Point
        (Line, Line(Point(1, 2), Point(3, object())), "result.end.y"),  # type: ignore[arg-type]
        (Color, "red", "result"),
    ],
    ids=["coerced-field", "dict-for-dataclass", "int-for-enum", "any", "object-deep", "value"],
)
def test_values_that_would_change_are_refused(
    tmp_path: Path, annotation: Any, value: Any, where: str
) -> None:
    d = instance(tmp_path)
    fn = d.duravoke(annotated(annotation, lambda: value))
    with pytest.raises(duravoke.SerializationError) as info:
        fn()
    assert info.value.where == where, info.value


@pytest.mark.anyio
async def test_a_value_that_does_not_match_is_refused_async(tmp_path: Path) -> None:
    d = instance(tmp_path)

    @d.duravoke
    async def step() -> list[Point]:
        return [Point(1, 2), Point(3, None)]  # type: ignore[arg-type]

    with pytest.raises(duravoke.SerializationError) as info:
        await step()
    assert info.value.where == "result[1].y"


# --- the state never chooses the class -------------------------------------------


_MEMORY: dict[Path, duravoke.InMemoryKKV] = {}


def memory(tmp_path: Path) -> duravoke.Duravoke:
    """An instance on the in-memory store of this test, whose state a test can edit."""
    return duravoke.Duravoke(_MEMORY.setdefault(tmp_path, duravoke.InMemoryKKV()))


def edit_result(tmp_path: Path, edit: Callable[[Any], Any]) -> None:
    """Rewrite the recorded results, as someone editing the state by hand would."""
    for state in _MEMORY[tmp_path]._states.values():
        for step in state["steps"].values():
            if "result" in step:
                step["result"] = edit(step["result"])


class Evil:
    built = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        Evil.built = True


def test_a_class_name_in_the_state_is_ignored(tmp_path: Path) -> None:
    d = memory(tmp_path)
    with d.workflow("w"):
        d.duravoke(name="p")(annotated(Point, lambda: Point(1, 2)))()
    evil = {"__class__": f"{__name__}.Evil", "__init__": "os.system", "x": 5, "y": 6}
    edit_result(tmp_path, lambda r: {"$t": "typed", "v": evil})
    d = memory(tmp_path)
    with d.workflow("w"):
        got = d.duravoke(name="p")(annotated(Point, lambda: Point(1, 2)))()
    same(Point(5, 6), got)
    assert not Evil.built


@pytest.mark.parametrize(
    "payload",
    [
        {"$t": "pickle", "v": "gASVAAAAAAAAAAA="},
        {"$t": "fields", "v": {"x": 1, "y": 2}},
        {"$t": "zdatetime", "v": ["2026-01-01T00:00:00+00:00", "../../../etc/passwd"]},
        {"x": "one", "y": 2},
        {"$t": "dict", "v": [[{"a": 1}, 2]]},
    ],
    ids=["pickle-tag", "identity-tag", "zone-path", "bad-field", "unhashable-key"],
)
def test_an_edited_state_cannot_build_another_class(tmp_path: Path, payload: Any) -> None:
    d = memory(tmp_path)
    with d.workflow("w"):
        d.duravoke(name="p")(annotated(Point, lambda: Point(1, 2)))()
    edit_result(tmp_path, lambda r: {"$t": "typed", "v": payload})
    d = memory(tmp_path)
    with pytest.raises(duravoke.CorruptStateError), d.workflow("w"):
        d.duravoke(name="p")(annotated(Point, lambda: Point(1, 2)))()
    assert not Evil.built


def test_the_annotation_decides_the_class_not_the_data(tmp_path: Path) -> None:
    d = memory(tmp_path)
    with d.workflow("w"):
        d.duravoke(name="pet")(annotated(Cat | Dog, lambda: Cat(lives=9)))()
    # Edited to the data of a Dog: under `Cat | Dog` it is a Dog, which that annotation
    # allows; under `Cat` alone no Dog can be built.
    edit_result(tmp_path, lambda r: {"$t": "typed", "v": {"kind": "dog", "good": True}})
    d = memory(tmp_path)
    with d.workflow("w"):
        got = d.duravoke(name="pet")(annotated(Cat | Dog, lambda: Cat(lives=9)))()
        assert type(got) is Dog
    d = memory(tmp_path)
    with pytest.raises(duravoke.CorruptStateError), d.workflow("w"):
        d.duravoke(name="pet")(annotated(Cat, lambda: Cat(lives=9)))()


def test_a_typed_record_under_a_removed_annotation_is_reported(tmp_path: Path) -> None:
    d = memory(tmp_path)
    with d.workflow("w"):
        d.duravoke(name="p")(annotated(Point, lambda: Point(1, 2)))()
    d = memory(tmp_path)
    with pytest.raises(duravoke.CorruptStateError), d.workflow("w"):
        d.duravoke(name="p")(lambda: Point(1, 2))()


# --- the codec on its own --------------------------------------------------------


def test_codec_encodes_no_class_names_and_decodes_by_annotation() -> None:
    def f() -> list[Point | Customer]:
        raise NotImplementedError

    json_serializer = duravoke.JSONSerializer()
    codec = ResultCodec(f, "f")
    codec.prepare(json_serializer)
    data, value = codec.record([Point(1, 2), CUSTOMER], json_serializer)
    assert data == {
        "$t": "typed",
        "v": [
            {"x": 1, "y": 2},
            {
                "id": 1,
                "name": "Ada",
                "since": {"$t": "zdatetime", "v": ["2026-03-29T01:30:00+01:00", "Europe/Paris"]},
                "home": {"x": 3, "y": 4},
                "levels": [2],
            },
        ],
    }
    same([Point(1, 2), CUSTOMER], value)
    same([Point(1, 2), CUSTOMER], codec.decode(json.loads(json.dumps(data)), json_serializer))


def test_a_custom_serializer_is_left_alone(tmp_path: Path) -> None:
    d = duravoke.Duravoke(duravoke.DirectoryStore(store_dir(tmp_path)), duravoke.PickleSerializer())

    @d.duravoke
    def step() -> Plain:  # refused with JSON; pickle records it as it always did
        return Plain()

    assert type(step()) is Plain


def test_unresolvable_annotations_fall_back_to_untyped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    d = instance(tmp_path)

    def step() -> Any:
        return [1]

    step.__annotations__ = {"return": "NoSuchName"}
    assert d.duravoke(step)() == [1]
    assert "cannot be resolved" in caplog.text


class Left(pydantic.BaseModel):
    x: int


class Right(pydantic.BaseModel):
    x: int


@dataclasses.dataclass
class Loose:
    extra: Any


@pytest.mark.parametrize(
    ("annotation", "value", "where"),
    [
        (Left | Right, Right(x=1), "result"),  # the data fits Left first
        (list[Left | Right], [Left(x=1), Right(x=2)], "result[1]"),
        (Loose, Loose(Point(1, 2)), "result.extra"),  # Any rebuilds a dict
        (Loose, Loose((1, 2)), None),  # ...but tagged values keep their type under Any
    ],
    ids=["look-alike-union", "look-alike-in-list", "dataclass-under-any", "tuple-under-any"],
)
def test_ambiguous_annotations_refuse_what_would_change(
    tmp_path: Path, annotation: Any, value: Any, where: str | None
) -> None:
    d = instance(tmp_path)
    fn = d.duravoke(annotated(annotation, lambda: value))
    if where is None:
        same(value, fn())
        return
    with pytest.raises(duravoke.SerializationError, match="come back as") as info:
        fn()
    assert info.value.where == where


@pytest.mark.parametrize(
    ("annotation", "value", "where"),
    [
        (Pair, (1, Color.RED), "result"),  # a tuple equals the NamedTuple it would become
        (Loose, Loose(Level.HIGH), "result.extra"),  # under Any an IntEnum becomes its int
        (dict[str, Mode], {"m": "fast"}, "result['m']"),  # a str equals its str-Enum member
    ],
    ids=["tuple-for-namedtuple", "intenum-under-any", "str-for-str-enum"],
)
def test_equal_values_of_another_type_are_refused(
    tmp_path: Path, annotation: Any, value: Any, where: str
) -> None:
    d = instance(tmp_path)
    fn = d.duravoke(annotated(annotation, lambda: value))
    with pytest.raises(duravoke.SerializationError, match="come back as") as info:
        fn()
    assert info.value.where == where


def test_an_unresolvable_parameter_annotation_does_not_untype_the_result(tmp_path: Path) -> None:
    d = instance(tmp_path)

    def step(x: "OnlyForTypeCheckers") -> Point:  # type: ignore[name-defined]  # noqa: F821
        return Point(x, x)

    fn = d.duravoke(step)
    for _ in range(2):
        with d.workflow("w"):
            same(Point(1, 1), fn(1))


@dataclasses.dataclass(eq=False)
class Node:
    name: str
    children: "list[Node]"


def test_a_value_that_contains_itself_is_refused(tmp_path: Path) -> None:
    d = instance(tmp_path)
    loop = Node("a", [])
    loop.children.append(loop)
    fn = d.duravoke(annotated(Node, lambda: loop))
    with pytest.raises(duravoke.SerializationError, match="contains itself"):
        fn()


def test_dataclasses_without_eq_still_round_trip(tmp_path: Path) -> None:
    d = instance(tmp_path)
    tree = Node("root", [Node("leaf", [])])
    fn = d.duravoke(annotated(Node, lambda: tree))
    for _ in range(2):
        with d.workflow("w"):
            got = fn()
            assert type(got) is Node
            assert got.children[0].name == "leaf"
            assert type(got.children[0]) is Node
