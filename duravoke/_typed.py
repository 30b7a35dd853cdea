"""Typed results: the return annotation decides how a recorded result is rebuilt.

A step annotated ``-> Invoice`` (a dataclass), an enum, a pydantic model, a TypedDict,
a NamedTuple, a datetime with a ``zoneinfo`` zone, or any of these inside lists,
dicts, tuples, sets, ``X | None`` and unions, gets its result back as itself. The
work is split in two:

- **To data** (:func:`to_data`), driven by the *value*: dataclasses, models and
  NamedTuples become their fields, enums their value, zoned datetimes
  ``{"$t": "zdatetime", "v": [iso, key]}``; everything else is encoded exactly as
  :class:`JSONSerializer` encodes it (same tags). No class name is written.
- **Back** (:meth:`ResultCodec.decode`), driven by the *annotation*: the tags are
  undone, then pydantic's ``TypeAdapter`` for the annotation validates the data and
  builds the classes. The state never names a class, so a state file edited by hand
  can at most make the annotated type's own validation fail.

A typed result is recorded as ``{"$t": "typed", "v": <data>}``. Results of functions
without an annotation, or annotated with types :class:`JSONSerializer` keeps exactly
(``int``, ``list[str]``, ``dict[str, Any]``...), are recorded as before, untouched.
An annotation that contains ``datetime`` or ``time`` but nothing else typed keeps the
old format too, and only a value the serializer refuses (a zoned datetime) is
recorded typed. The same value-driven encoding, with class kinds tagged, lets such
values identify calls (:func:`identity_data`).

A fresh result is rebuilt at once (the first run returns what a replay will) and
compared with the original, so a value that would come back different (a ``"5"`` in
an ``int`` field, a dataclass under ``Any``, one of two look-alike union members) is
refused with its path instead of being silently changed.

Why pydantic v2 rather than cattrs or msgspec (measured once, on a dataclass holding a
list of dataclasses, an enum, a datetime and a set): all three lose a ``zoneinfo``
zone (hence ``zdatetime``); only pydantic rebuilds pydantic models, TypedDicts,
NamedTuples and unions with no hooks of ours, and says where validation failed
(``items[2].when``). msgspec is about 2x faster per value (3 us against 6 us to dump
and rebuild) but would need hand-written hooks for models; cattrs is slower than both
(11 us). pydantic is imported only when an annotation needs it (the ``typed`` extra).
"""

from __future__ import annotations

import collections.abc
import contextlib
import dataclasses
import datetime as dt
import decimal
import enum
import inspect
import io
import logging
import math
import pathlib
import sys
import threading
import types
import typing
import uuid
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

from ._errors import SerializationError
from ._serializer import JSONSerializer, JSONValue, Serializer, canonical_json
from ._serializer import _enc as _serializer_enc
from ._serializer import _Unsupported as _SerializerUnsupported

__all__ = ["ResultCodec", "identity_data", "result_codec"]

logger = logging.getLogger("duravoke")

_JSON = JSONSerializer()
_NoneType = type(None)
_TYPED_TAG = "typed"
_EXTRA_HINT = "pip install 'duravoke[typed]'"

# Types whose values JSONSerializer records exactly: an annotation made only of these
# (and of the containers below) needs no type-driven conversion.
_PLAIN_TYPES = frozenset(
    (
        _NoneType,
        bool,
        int,
        float,
        str,
        bytes,
        dt.date,
        dt.timedelta,
        uuid.UUID,
        decimal.Decimal,
        pathlib.Path,
        pathlib.PurePath,
        pathlib.PurePosixPath,
        pathlib.PureWindowsPath,
        list,
        dict,
        tuple,
        set,
        frozenset,
        object,
    )
)
# Plain too, except that a value with a zoneinfo zone needs the typed path to keep it.
_ZONED_TYPES = frozenset((dt.datetime, dt.time))
_CONTAINER_ORIGINS = frozenset((list, dict, tuple, set, frozenset))
# One-shot or live objects: recording them cannot give them back.
_REFUSED_ORIGINS = {
    collections.abc.Iterator: "an iterator",
    collections.abc.Iterable: "an iterable",
    collections.abc.Generator: "a generator",
    collections.abc.AsyncIterator: "an async iterator",
    collections.abc.AsyncIterable: "an async iterable",
    collections.abc.AsyncGenerator: "an async generator",
    collections.abc.Awaitable: "an awaitable",
    collections.abc.Coroutine: "a coroutine",
    collections.abc.Callable: "a callable",
    type: "a class",
}
_REFUSED_CLASSES: tuple[type, ...] = (
    io.IOBase,
    typing.IO,
    types.GeneratorType,
    types.CoroutineType,
    types.FunctionType,
    type(threading.Lock()),
    type(threading.RLock()),
    threading.Condition,
    threading.Thread,
)
_UNIONS: tuple[Any, ...] = (typing.Union, types.UnionType)

_PLAIN, _ZONED, _TYPED = 0, 1, 2


class _Refused(Exception):  # noqa: N818 - private signal, turned into SerializationError
    def __init__(self, type_name: str, why: str) -> None:
        super().__init__(why)
        self.type_name = type_name
        self.why = why


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        if tp.__module__ == "builtins":
            return tp.__qualname__
        return f"{tp.__module__}.{tp.__qualname__}"
    return repr(tp)


def _classify(tp: Any) -> int:
    """How an annotation's values are recorded: plain, plain-but-zoned, or typed."""
    if tp is None or tp is typing.Any or isinstance(tp, typing.TypeVar):
        return _PLAIN
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _classify(typing.get_args(tp)[0])
    if origin in _UNIONS or origin in _CONTAINER_ORIGINS:
        return max((_classify(a) for a in typing.get_args(tp) if a is not Ellipsis), default=0)
    if origin is typing.Literal:
        literal = typing.get_args(tp)
        return _TYPED if any(isinstance(a, enum.Enum) for a in literal) else _PLAIN
    if origin is not None:
        if origin in _REFUSED_ORIGINS:
            why = f"a result annotated {tp!r} is {_REFUSED_ORIGINS[origin]}"
            raise _Refused(_type_name(tp), why)
        return _TYPED  # Sequence[...], Mapping[...], defaultdict[...]: pydantic decides
    if tp in _REFUSED_ORIGINS:
        raise _Refused(_type_name(tp), f"a result annotated {tp!r} is {_REFUSED_ORIGINS[tp]}")
    if isinstance(tp, typing.NewType):
        return _classify(tp.__supertype__)
    if not isinstance(tp, type):
        raise _Refused(_type_name(tp), f"the return annotation {tp!r} is not a type")
    if issubclass(tp, _REFUSED_CLASSES):
        raise _Refused(_type_name(tp), f"a {_type_name(tp)} is a live object, not data")
    if tp in _PLAIN_TYPES:
        return _PLAIN
    if tp in _ZONED_TYPES:
        return _ZONED
    return _TYPED


# --- value to data -------------------------------------------------------------


class _Unsupported(Exception):  # noqa: N818 - private signal, never escapes
    def __init__(self, value: object, why: str = "") -> None:
        super().__init__(why)
        self.value = value
        self.why = why


_SCALARS = frozenset((str, int, bool, _NoneType))
_LEAVES = frozenset(
    (
        float,
        bytes,
        dt.datetime,
        dt.date,
        dt.time,
        dt.timedelta,
        uuid.UUID,
        decimal.Decimal,
        type(pathlib.Path()),
        pathlib.PurePosixPath,
        pathlib.PureWindowsPath,
    )
)


_OTHER, _DATACLASS, _NAMEDTUPLE, _MODEL, _ENUM = range(5)
#: type -> (kind, init field names): is_dataclass() and fields() cost more than the rest.
_KINDS: dict[type, tuple[int, tuple[str, ...]]] = {}


def _kind(t: type) -> tuple[int, tuple[str, ...]]:
    found = _KINDS.get(t)
    if found is None:
        pydantic = sys.modules.get("pydantic")  # a model exists only once pydantic is imported
        if dataclasses.is_dataclass(t):
            found = (_DATACLASS, tuple(f.name for f in dataclasses.fields(t) if f.init))
        elif issubclass(t, tuple) and hasattr(t, "_fields"):
            found = (_NAMEDTUPLE, tuple(t._fields))
        elif issubclass(t, enum.Enum):
            found = (_ENUM, ())
        elif pydantic is not None and issubclass(t, pydantic.BaseModel):
            found = (_MODEL, ())
        else:
            found = (_OTHER, ())
        _KINDS[t] = found
    return found


def _fields(value: Any, ident: bool) -> dict[str, Any] | None:
    """The fields of a dataclass, NamedTuple or pydantic model, else None."""
    kind, names = _kind(type(value))
    if kind == _DATACLASS:
        return {name: getattr(value, name) for name in names}
    if kind == _NAMEDTUPLE:
        # In a result a NamedTuple is rebuilt from its items, as a tuple.
        return dict(zip(names, value, strict=True)) if ident else None
    if kind == _MODEL:
        # Python mode keeps datetimes with their zone; json mode is the fallback for
        # what python mode cannot build (a set of models would be a set of dicts).
        try:
            return value.model_dump(mode="python", by_alias=True, round_trip=True)  # type: ignore[no-any-return]
        except (TypeError, ValueError):
            return value.model_dump(mode="json", by_alias=True, round_trip=True)  # type: ignore[no-any-return]
    return None


def _tag(tag: str, payload: Any) -> dict[str, Any]:
    return {"$t": tag, "v": payload}


def _to(v: Any, ident: bool) -> Any:
    t = type(v)
    if t in _SCALARS:
        return v
    if t is list:
        return [x if type(x) in _SCALARS else _to(x, ident) for x in v]
    if t is dict:
        if all(type(k) is str for k in v) and "$t" not in v:
            return {k: x if type(x) in _SCALARS else _to(x, ident) for k, x in v.items()}
        pairs = [[_to(k, ident), _to(x, ident)] for k, x in v.items()]
        if ident:
            pairs.sort(key=lambda pair: (canonical_json(pair[0]), canonical_json(pair[1])))
        return _tag("dict", pairs)
    if t is tuple:
        return _tag("tuple", [_to(x, ident) for x in v])
    if t is set or t is frozenset:
        items = [_to(x, ident) for x in v]
        if len(items) > 1:  # sorted, as iteration order varies between runs (str hashing)
            items.sort(key=canonical_json)
        return _tag(t.__name__, items)
    if t is dt.datetime and isinstance(v.tzinfo, ZoneInfo) and v.tzinfo.key is not None:
        return _tag("zdatetime", [v.isoformat(), v.tzinfo.key])
    if t in _LEAVES:
        try:
            return _serializer_enc(v, ident)  # the serializer's own tags, minus its checks
        except _SerializerUnsupported:
            pass
        try:
            _JSON.encode(v)  # raises, explaining why (a tzinfo that would be lost)
        except SerializationError as exc:
            raise _Unsupported(v, str(exc).partition(": ")[2]) from None
    kind, names = _kind(t)
    if kind == _DATACLASS:
        data = {}
        for name in names:
            x = getattr(v, name)
            data[name] = x if type(x) in _SCALARS else _to(x, ident)
        return _tag("fields", data) if ident else data
    if kind == _ENUM:
        # The annotation rebuilds the member from its value; an identity tags it, so
        # that Color.RED and 1 are two calls.
        return _tag("enum", _to(v.value, ident)) if ident else _to(v.value, ident)
    if kind != _OTHER:
        fields = _fields(v, ident)
        if fields is None:  # a NamedTuple in a result
            return _tag("tuple", [_to(x, ident) for x in v])
        data = {k: _to(x, ident) for k, x in fields.items()}
        return _tag("fields", data) if ident else data
    pydantic_core = sys.modules.get("pydantic_core")
    if not ident and pydantic_core is not None:
        # A pydantic type under an annotation (a Url, an IP address): its JSON form,
        # which the annotation turns back into it.
        try:
            return pydantic_core.to_jsonable_python(v)
        except (TypeError, ValueError):
            pass
    raise _Unsupported(v)


def _path_to(value: Any, target: object, where: str, seen: set[int]) -> str | None:
    """Where ``target`` sits inside ``value`` (a slow walk, for error messages only)."""
    if value is target:
        return where
    if id(value) in seen:
        return None
    seen.add(id(value))
    if isinstance(value, dict):
        children: Any = ((f"{where}[{k!r}]", x) for k, x in value.items())
    elif isinstance(value, (list, tuple)) and not hasattr(type(value), "_fields"):
        children = ((f"{where}[{i}]", x) for i, x in enumerate(value))
    elif isinstance(value, (set, frozenset)):
        children = ((f"{where}{{...}}", x) for x in value)
    else:
        fields = None if isinstance(value, (str, bytes)) else _fields(value, True)
        if fields is None:
            return None
        children = ((f"{where}.{k}", x) for k, x in fields.items())
    for child_where, child in children:
        found = _path_to(child, target, child_where, seen)
        if found is not None:
            return found
    return None


def _unsupported(value: Any, where: str, exc: _Unsupported, what: str) -> SerializationError:
    at = _path_to(value, exc.value, where, set()) or where
    name = _type_name(type(exc.value))
    why = exc.why or f"type {name!r} is not data duravoke can record"
    return SerializationError(f"cannot record {at} as {what}: {why}", where=at, type_name=name)


def to_data(value: object, *, where: str = "result") -> JSONValue:
    """Encode a value for a typed record (no class names; the annotation rebuilds it).

    Raises:
        SerializationError: part of the value is not data, with where it sits.
    """
    try:
        return _to(value, False)  # type: ignore[no-any-return]
    except _Unsupported as exc:
        raise _unsupported(value, where, exc, "typed data") from None
    except RecursionError:
        name = _type_name(type(value))
        why = "it contains itself, or is nested deeper than the recursion limit allows"
        raise SerializationError(
            f"cannot record {where}: {why}", where=where, type_name=name
        ) from None


def identity_data(value: object, *, where: str) -> JSONValue:
    """Canonical JSON data for an argument, dataclasses and enums included.

    Equal values give equal data: two equal dataclasses are the same call. Kinds
    are tagged (``"fields"``, ``"enum"``) so a dataclass is never the dict of its
    fields; class names are left out, so renaming a class keeps identities.

    Raises:
        SerializationError: part of the value is not data (an object, ``self``).
    """
    try:
        return _to(value, True)  # type: ignore[no-any-return]
    except (_Unsupported, RecursionError) as exc:
        cause = exc
    # Report it as JSONSerializer would have, unless the walk found the culprit.
    if isinstance(cause, _Unsupported) and cause.why:
        raise _unsupported(value, where, cause, "an argument")
    at = (
        _path_to(value, cause.value, where, set()) if isinstance(cause, _Unsupported) else None
    ) or where
    bad = cause.value if isinstance(cause, _Unsupported) else value
    name = _type_name(type(bad))
    raise SerializationError(
        f"cannot record {at}: type {name!r} is not data", where=at, type_name=name
    )


# --- data to value -------------------------------------------------------------


_JSON_SCALARS = frozenset((str, int, bool, float, _NoneType))


def _from(d: Any) -> Any:
    """Undo the tags of :func:`to_data`; the classes are built afterwards, by pydantic."""
    t = type(d)
    if t is list:
        return [x if type(x) in _JSON_SCALARS else _from(x) for x in d]
    if t is dict:
        if "$t" not in d:
            return {k: x if type(x) in _JSON_SCALARS else _from(x) for k, x in d.items()}
        tag = d["$t"]
        undo = _UNTAG.get(tag) if type(tag) is str else None
        if undo is None or len(d) != 2 or "v" not in d:
            return _JSON.decode(d)  # the serializer's own leaf tags; ValueError for others
        return undo(d["v"])
    if t in _JSON_SCALARS:
        return d
    raise ValueError(f"not JSON data: {t.__name__}")


def _items(v: Any) -> list[Any]:
    if type(v) is not list:
        raise ValueError(f"malformed tagged value: {v!r:.100}")
    return [x if type(x) in _JSON_SCALARS else _from(x) for x in v]


def _untag_set(build: Callable[[list[Any]], Any]) -> Callable[[Any], Any]:
    def undo(v: Any) -> Any:
        items = _items(v)
        try:
            return build(items)
        except TypeError:  # members that are dataclasses in the data: the annotation builds them
            return items

    return undo


def _untag_dict(v: Any) -> dict[Any, Any]:
    pairs = _items(v)
    if any(type(p) is not list or len(p) != 2 for p in pairs):
        raise ValueError("malformed 'dict' value: expected [key, value] pairs")
    try:
        return dict(pairs)
    except TypeError as exc:
        raise ValueError(f"malformed 'dict' value: {exc}") from None


def _untag_zoned(v: Any) -> dt.datetime:
    if type(v) is not list or len(v) != 2 or type(v[0]) is not str or type(v[1]) is not str:
        raise ValueError(f"malformed 'zdatetime' value: {v!r:.100}")
    try:
        # ZoneInfo refuses keys that are paths; the instant is kept, the zone restored.
        return dt.datetime.fromisoformat(v[0]).astimezone(ZoneInfo(v[1]))
    except (ValueError, LookupError, OSError) as exc:
        raise ValueError(f"malformed 'zdatetime' value {v!r:.100}: {exc}") from None


_UNTAG: dict[str, Callable[[Any], Any]] = {
    "tuple": lambda v: tuple(_items(v)),
    "set": _untag_set(set),
    "frozenset": _untag_set(frozenset),
    "dict": _untag_dict,
    "zdatetime": _untag_zoned,
}


# --- the codec -----------------------------------------------------------------


def _where(loc: tuple[int | str, ...], root: str) -> str:
    parts = [root]
    for part in loc:
        if isinstance(part, int):
            parts.append(f"[{part}]")
        elif part.isidentifier():
            parts.append(f".{part}")
        else:
            parts.append(f"[{part!r}]")
    return "".join(parts)


def _first_difference(a: Any, b: Any, where: str, depth: int = 0) -> tuple[str, Any, Any] | None:
    """Where the rebuilt value ``b`` first differs from ``a``, in type or value; None if nowhere.

    ``==`` alone would miss an int where an IntEnum was, a tuple where a NamedTuple
    was, or another zone for the same instant.
    """
    t = type(a)
    if t is not type(b):
        return where, a, b
    if t in _SCALARS:
        return None if a == b else (where, a, b)
    if depth > 100:
        return None if a == b else (where, a, b)
    if t is list or t is tuple or (t is not str and isinstance(a, tuple)):
        if len(a) != len(b):
            return where, a, b
        for i in range(len(a)):
            x, y = a[i], b[i]
            if type(x) in _SCALARS and type(y) is type(x):
                if x != y:
                    return f"{where}[{i}]", x, y
                continue
            found = _first_difference(x, y, f"{where}[{i}]", depth + 1)
            if found is not None:
                return found
        return None
    if isinstance(a, dict):
        if len(a) != len(b):
            return where, a, b
        for k, x in a.items():
            if k not in b:
                return where, a, b
            found = _first_difference(x, b[k], f"{where}[{k!r}]", depth + 1)
            if found is not None:
                return found
        return None
    if t is float:
        return None if a == b or (math.isnan(a) and math.isnan(b)) else (where, a, b)
    if t is dt.datetime or t is dt.time:
        same = a == b and a.tzinfo == b.tzinfo and a.fold == b.fold
        return None if same else (where, a, b)
    kind, names = _kind(t)
    if kind == _DATACLASS:
        for name in names:
            x, y = getattr(a, name), getattr(b, name)
            if type(x) in _SCALARS and type(y) is type(x) and x == y:
                continue
            found = _first_difference(x, y, f"{where}.{name}", depth + 1)
            if found is not None:
                return found
        return None
    if kind == _MODEL:
        for name in type(a).model_fields:
            found = _first_difference(
                getattr(a, name), getattr(b, name), f"{where}.{name}", depth + 1
            )
            if found is not None:
                return found
        return None if a == b else (where, a, b)
    return None if a == b else (where, a, b)


def _import_pydantic(annotation: Any) -> Any:
    try:
        import pydantic
    except ImportError:
        raise _Refused(
            _type_name(annotation),
            f"recording a result annotated {annotation!r} needs pydantic: {_EXTRA_HINT}",
        ) from None
    return pydantic


#: Building an adapter takes milliseconds: shared by every function (and instance)
#: annotated alike, as a program re-decorates its functions for each Duravoke instance.
_ADAPTERS: dict[Any, Any] = {}
_MAX_ADAPTERS = 1024


class ResultCodec:
    """Records and rebuilds one decorated function's results, by its return annotation.

    Built at decoration by :func:`result_codec`; the annotation is read at the first
    call (:meth:`prepare`), so forward references and ``from __future__ import
    annotations`` work, and an annotation that cannot be recorded is refused before
    the body first runs.
    """

    def __init__(self, fn: Callable[..., Any], name: str) -> None:
        self.name = name
        self._fn = fn
        self._lock = threading.Lock()
        self._kind: int | None = None
        self._annotation: Any = None
        self._adapter: Any = None
        self._validate: Callable[[Any], Any] | None = None
        #: Whether a rebuilt value can be equal to the original yet of another type
        #: (see _loose); then every record is compared type by type, not just with ==.
        self._exact = False

    def prepare(self, serializer: Serializer) -> None:
        """Read the return annotation once; refuse one that cannot be recorded.

        A serializer of the user's own (pickle) records what it records: then the
        annotation is not consulted.

        Raises:
            SerializationError: the annotation names something that cannot be recorded
                and rebuilt (a file, a lock, an iterator, a plain class), or needs
                pydantic and it is missing; says what to do instead.
        """
        if self._kind is not None or not isinstance(serializer, JSONSerializer):
            return
        with self._lock:
            if self._kind is None:
                self._resolve()

    def _resolve(self) -> None:
        target = inspect.unwrap(self._fn)
        raw = getattr(target, "__annotations__", {}).get("return", _NoneType)
        try:
            # Only the return annotation: a parameter's (a name imported for type
            # checkers only) must not stop its results from being typed.
            only = types.SimpleNamespace(__annotations__={"return": raw})
            globalns = getattr(target, "__globals__", {})
            annotation = typing.get_type_hints(only, globalns, include_extras=True)["return"]
        except Exception as exc:  # NameError, TypeError... from the user's annotation
            logger.warning(
                "%s(): its return annotation %r cannot be resolved (%r), so its results are"
                " recorded untyped",
                self.name,
                raw,
                exc,
            )
            self._kind = _PLAIN
            return
        try:
            kind = _classify(annotation)
            # A plain annotation holding a datetime needs pydantic only for a zoned value.
            self._annotation = annotation
            if kind == _TYPED:
                self._use(self._build(annotation))
        except _Refused as exc:
            raise self._refused(exc) from None
        self._kind = kind

    def _refused(self, exc: _Refused) -> SerializationError:
        return SerializationError(
            f"{self.name}(): its results cannot be recorded: {exc.why}. Return data"
            " instead: JSON types, a dataclass, an Enum, a NamedTuple, a TypedDict or a"
            " pydantic model (nested as you like), and annotate the function with it.",
            function=self.name,
            where="result",
            type_name=exc.type_name,
        )

    def _use(self, adapter: Any) -> None:
        self._adapter = adapter
        self._exact = _loose(adapter.core_schema)
        # The adapter's compiled validator itself: TypeAdapter.validate_python is a
        # Python wrapper around it that costs a microsecond per replay.
        self._validate = adapter.validator.validate_python

    def _ensure_adapter(self) -> None:
        """Build the adapter of a plain-but-zoned annotation, once it is needed."""
        if self._adapter is None and self._kind == _ZONED:
            with self._lock:
                if self._adapter is None:
                    try:
                        self._use(self._build(self._annotation))
                    except _Refused as exc:
                        raise self._refused(exc) from None

    @staticmethod
    def _build(annotation: Any) -> Any:
        try:
            cached = _ADAPTERS.get(annotation)
        except TypeError:  # an unhashable annotation (Annotated with a list, say)
            cached = None
        if cached is not None:
            return cached
        pydantic = _import_pydantic(annotation)
        try:
            adapter = pydantic.TypeAdapter(annotation)
            if len(_ADAPTERS) < _MAX_ADAPTERS:
                with contextlib.suppress(TypeError):
                    _ADAPTERS[annotation] = adapter
            return adapter
        except (pydantic.PydanticSchemaGenerationError, pydantic.PydanticUserError) as exc:
            why = str(exc).split("\n", 1)[0]
            raise _Refused(
                _type_name(annotation),
                f"duravoke cannot rebuild {annotation!r} from data ({why})",
            ) from None

    def encode(self, value: object, serializer: Serializer, *, where: str = "result") -> JSONValue:
        """JSON data for ``value``: untyped as ``serializer`` writes it, or typed.

        Raises:
            SerializationError: the value cannot be recorded, with where it sits.
        """
        if not isinstance(serializer, JSONSerializer):
            return serializer.encode(value, where=where)
        self.prepare(serializer)
        kind = self._kind
        if kind == _PLAIN:
            return serializer.encode(value, where=where)
        if kind == _ZONED:
            try:
                return serializer.encode(value, where=where)
            except SerializationError:
                pass  # a zoned datetime, say: the typed record keeps its zone
            self._ensure_adapter()
        return _tag(_TYPED_TAG, to_data(value, where=where))

    def decode(self, data: JSONValue, serializer: Serializer) -> object:
        """Rebuild a recorded value; the annotation, never the data, picks the classes.

        Records without the typed mark (untyped, or written before the annotation was
        added) are decoded by the serializer, exactly as before.

        Raises:
            ValueError: the data is malformed or does not fit the annotation.
        """
        if type(data) is dict and data.get("$t") == _TYPED_TAG:
            validate = self._validate
            if validate is not None and len(data) == 2:
                return validate(_from(data["v"]))
            if not isinstance(serializer, JSONSerializer):
                return serializer.decode(data)
            self.prepare(serializer)
            try:
                self._ensure_adapter()
            except SerializationError as exc:
                raise ValueError(str(exc)) from None
            if self._adapter is None:
                raise ValueError(
                    f"a typed record, but {self.name}() has no return annotation that can"
                    " rebuild it"
                )
            if len(data) != 2 or "v" not in data:
                raise ValueError(f"malformed typed record: {data!r:.200}")
            return self._adapter.validate_python(_from(data["v"]))
        return serializer.decode(data)

    def record(self, value: object, serializer: Serializer) -> tuple[JSONValue, object]:
        """Encode a fresh result and rebuild it as a replay would: (data, value).

        Raises:
            SerializationError: the value cannot be recorded, does not fit the annotation
                or would not come back equal, naming where (``result.items[2].when``).
        """
        encoded = self.encode(value, serializer, where="result")
        if type(encoded) is not dict or encoded.get("$t") != _TYPED_TAG:
            return encoded, serializer.decode(encoded)
        pydantic = sys.modules["pydantic"]
        try:
            rebuilt = self.decode(encoded, serializer)
        except pydantic.ValidationError as exc:
            error = exc.errors()[0]
            where = _where(tuple(error["loc"]), "result")
            raise SerializationError(
                f"cannot record {where}: it does not match the return annotation"
                f" {self._annotation!r}: {error['msg']} (got {error.get('input')!r:.80})",
                where=where,
                type_name=_type_name(type(error.get("input"))),
            ) from None
        # Lax validation would turn a "5" in an int field into 5, an Any-typed
        # dataclass into a dict, a Dog into a look-alike Cat: refuse what changes.
        found = None
        if self._exact or rebuilt != value:
            found = _first_difference(value, rebuilt, "result")
        if found is not None:
            where, was, now = found
            raise SerializationError(
                f"cannot record {where}: rebuilt from the return annotation"
                f" {self._annotation!r} it would come back as {now!r:.100}"
                f" ({_type_name(type(now))}) instead of {was!r:.100} ({_type_name(type(was))})."
                " Return what the annotation says; annotate that part precisely (not Any or"
                " object); give unions of look-alike classes a discriminator field.",
                where=where,
                type_name=_type_name(type(was)),
            )
        return encoded, rebuilt


def _loose(schema: Any) -> bool:
    """Whether a value rebuilt by this core schema can be == the original yet not the same.

    ``Any`` keeps an IntEnum's value only, a union may pick a look-alike class, an
    IntEnum or StrEnum member equals the int or str it was built from, a NamedTuple the
    tuple. Without these, ``==`` (dataclasses and models compare their class) suffices.
    """
    stack, seen = [schema], set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, dict):
            kind = node.get("type")
            if kind in ("any", "union", "named-tuple") or (kind == "enum" and node.get("sub_type")):
                return True
            stack.extend(node.values())
        elif isinstance(node, (list, tuple)):
            stack.extend(node)
    return False


def result_codec(fn: Callable[..., Any], name: str) -> ResultCodec:
    """The codec that records ``fn``'s results (see the module docstring)."""
    return ResultCodec(fn, name)
