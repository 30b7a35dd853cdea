"""Turning recorded values into JSON-compatible data and back.

A step's result is stored as JSON, so it must come back from the state file as
*the same* value, of the same type. :class:`JSONSerializer` (the default) therefore
accepts only a fixed set of exact types and tags the ones JSON has no word for;
:class:`PickleSerializer` is the explicit opt-in for anything else.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import decimal
import json
import math
import pathlib
import pickle
import uuid
from collections.abc import Callable, Iterator
from typing import Any, Protocol, TypeAlias, Union

from ._errors import SerializationError

__all__ = [
    "JSONSerializer",
    "JSONValue",
    "NamedZoneError",
    "PickleSerializer",
    "Serializer",
    "canonical_json",
]

# Union, not |: the alias is evaluated at runtime, where 3.10 cannot "|" a string.
JSONValue: TypeAlias = Union[  # noqa: UP007
    bool, int, float, str, list["JSONValue"], dict[str, "JSONValue"], None
]

# One encoder object instead of json.dumps(**options): dumps builds a new encoder
# per call when given options, which triples the cost of sorting set members.
_canonical = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
).encode


def canonical_json(data: JSONValue) -> str:
    """Dump JSON data in its one canonical spelling (sorted keys, no spaces, no NaN)."""
    return _canonical(data)


class Serializer(Protocol):
    """Turns step results into JSON-compatible data and back."""

    def encode(self, value: object, *, where: str = "result", canonical: bool = False) -> JSONValue:
        """Return JSON data for ``value``; raise :class:`SerializationError` if impossible.

        ``where`` names the value in error messages; ``canonical=True`` asks for the
        same output for equal values however they were built.
        """
        ...

    def decode(self, data: JSONValue) -> object:
        """Rebuild the value from :meth:`encode`'s output; raise ``ValueError`` if malformed."""
        ...


class _Unsupported(Exception):  # noqa: N818 - private signal, never escapes
    """Raised deep in the encoder; the public error is built afterwards, off the hot path."""


_NoneType = type(None)
_PLAIN = frozenset((str, int, bool, _NoneType))  # passed through as they are
_SCALARS = _PLAIN | {float}  # what json.loads can give back as is
_Path = type(pathlib.Path())  # PosixPath or WindowsPath: what Path(...) gives back here
_SUPPORTED = (
    "JSON types, tuple, set, frozenset, bytes, datetime, date, time, timedelta, UUID, "
    "Decimal, Path; subclasses such as IntEnum or NamedTuple are refused because they "
    "would come back as their base type"
)


def _enc(v: Any, canon: bool) -> Any:
    # Hot path: scalars are checked inline before paying for a recursive call.
    t = type(v)
    if t is str or t is int or t is bool or v is None:
        return v
    if t is float and v - v == 0.0:  # cheaper than math.isfinite; inf - inf is nan
        return v
    if t is list:
        return [x if type(x) in _PLAIN else _enc(x, canon) for x in v]
    if t is dict:
        obj = {}
        for k, x in v.items():
            if type(k) is not str:
                return _enc_pairs(v, canon)
            obj[k] = x if type(x) in _PLAIN else _enc(x, canon)
        # A "$t" key would make the object look tagged, so such dicts are tagged themselves.
        return _enc_pairs(v, canon) if "$t" in obj else obj
    if t is tuple:
        return {"$t": "tuple", "v": [x if type(x) in _PLAIN else _enc(x, canon) for x in v]}
    handler = _ENCODERS.get(t)
    if handler is None:
        raise _Unsupported
    return handler(v, canon)


def _enc_pairs(v: dict[Any, Any], canon: bool) -> Any:
    pairs = [[_enc(k, canon), _enc(x, canon)] for k, x in v.items()]
    if canon:
        # By key; by value too, for keys that encode alike (two NaN keys).
        pairs.sort(key=lambda pair: (_canonical(pair[0]), _canonical(pair[1])))
    return {"$t": "dict", "v": pairs}


def _enc_set(tag: str) -> Callable[[Any, bool], Any]:
    def encode(v: Any, canon: bool) -> Any:
        # Always sorted: iteration order of a set varies between runs (str hashing).
        return {"$t": tag, "v": sorted(_enc(list(v), canon), key=_canonical)}

    return encode


def _tz_ok(v: dt.datetime | dt.time) -> bool:
    # isoformat() keeps only the offset: a zoneinfo/pytz tzinfo would come back as a
    # fixed offset (a time() would even lose it), and timezone(offset, "CET") would lose
    # its name, which tzname() and strftime("%Z") show. So only those that survive pass.
    tz = v.tzinfo
    return (
        tz is None
        or tz is dt.timezone.utc
        or (type(tz) is dt.timezone and tz.tzname(None) == _unnamed(tz).tzname(None))
    )


def _unnamed(tz: dt.timezone) -> dt.timezone:
    offset = tz.utcoffset(None)
    return dt.timezone(offset) if offset else dt.timezone.utc


def _enc_time(v: dt.datetime | dt.time, canon: bool) -> Any:
    if not _tz_ok(v):
        raise _Unsupported
    return {"$t": "datetime" if type(v) is dt.datetime else "time", "v": v.isoformat()}


def _nonfinite(v: float, canon: bool) -> Any:
    return {"$t": "float", "v": "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")}


def _tagged(tag: str, convert: Callable[[Any], Any]) -> Callable[[Any, bool], Any]:
    return lambda v, canon: {"$t": tag, "v": convert(v)}


_ENCODERS: dict[type, Callable[[Any, bool], Any]] = {
    float: _nonfinite,
    set: _enc_set("set"),
    frozenset: _enc_set("frozenset"),
    bytes: _tagged("bytes", lambda v: base64.b64encode(v).decode("ascii")),
    dt.datetime: _enc_time,
    dt.date: _tagged("date", dt.date.isoformat),
    dt.time: _enc_time,
    dt.timedelta: _tagged("timedelta", lambda v: [v.days, v.seconds, v.microseconds]),
    uuid.UUID: _tagged("uuid", str),
    decimal.Decimal: _tagged("decimal", str),
    _Path: _tagged("path", str),
    pathlib.PurePosixPath: _tagged("pureposixpath", str),
    pathlib.PureWindowsPath: _tagged("purewindowspath", str),
}
_CONTAINERS = (list, tuple, set, frozenset, dict)


def _type_name(t: type) -> str:
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def _children(v: Any, where: str) -> Iterator[tuple[str, Any]]:
    t = type(v)
    if t is dict:
        plain = all(type(k) is str for k in v) and "$t" not in v
        for k, x in v.items():
            if not plain:
                yield f"<key of {where}>", k
            yield f"{where}[{k!r}]", x
    elif t is set or t is frozenset:
        yield from ((f"{where}{{...}}", x) for x in v)
    else:
        yield from ((f"{where}[{i}]", x) for i, x in enumerate(v))


class NamedZoneError(SerializationError):
    """A datetime or time whose zone has a name (zoneinfo, pytz): JSON keeps only its offset.

    Its own class so that the argument check can say what to do about it, which differs
    from "this type is not JSON".
    """


def _refuse(where: str, type_name: str, why: str) -> SerializationError:
    return SerializationError(f"cannot record {where}: {why}", where=where, type_name=type_name)


def _find(v: Any, where: str, path: set[int]) -> SerializationError | None:
    """Walk the value again, slowly, building locations, to explain why encoding failed."""
    t = type(v)
    if t in _CONTAINERS:
        if id(v) in path:
            return _refuse(where, _type_name(t), f"this {t.__name__} contains itself")
        path.add(id(v))
        for child_where, child in _children(v, where):
            found = _find(child, child_where, path)
            if found is not None:
                return found
        path.discard(id(v))
        return None
    if t not in _ENCODERS and t not in _PLAIN:
        name = _type_name(t)
        why = f"type {name!r} is not supported by JSONSerializer (supported: {_SUPPORTED})"
        return _refuse(where, name, why)
    if t in (dt.datetime, dt.time) and not _tz_ok(v):
        kind = "datetime" if t is dt.datetime else "time"
        return NamedZoneError(
            f"cannot record {where}: it is a {kind} with a named zone ({v.tzinfo!r}), and"
            " JSON keeps only its UTC offset, so a replay would return another zone. Convert"
            f" it to UTC first ({where}.astimezone(datetime.timezone.utc)); only naive values"
            " and unnamed datetime.timezone offsets are recorded as they are",
            where=where,
            type_name=_type_name(type(v.tzinfo)),
        )
    return None


def _explain(value: Any, where: str, cause: BaseException) -> BaseException:
    try:
        found = _find(value, where, set())
    except RecursionError:
        return _refuse(
            where, _type_name(type(value)), "it is nested deeper than the recursion limit allows"
        )
    # Nothing wrong with the value: the recursion limit was hit by the caller's own stack.
    return cause if found is None else found


def _dec(data: Any) -> Any:
    t = type(data)
    if t in _SCALARS:
        return data
    if t is list:
        return [x if type(x) in _SCALARS else _dec(x) for x in data]
    if t is dict:
        if "$t" not in data:
            obj = {}
            for k, x in data.items():
                obj[k] = x if type(x) in _SCALARS else _dec(x)
            return obj
        tag = data["$t"]
        decoder = _DECODERS.get(tag) if type(tag) is str else None
        if decoder is None or len(data) != 2 or "v" not in data:
            raise ValueError(f"unknown or malformed tagged value: {data!r:.200}")
        try:
            return decoder(data["v"])
        except (TypeError, ValueError, ArithmeticError, LookupError) as exc:
            raise ValueError(f"malformed {tag!r} value {data['v']!r:.100}: {exc}") from exc
    raise ValueError(f"not JSON data: {_type_name(t)}")


def _str(convert: Callable[[str], Any]) -> Callable[[Any], Any]:
    def decode(v: Any) -> Any:
        if type(v) is not str:  # Decimal(1.5) or UUID(int) would be accepted otherwise
            raise TypeError(f"expected a string, got {type(v).__name__}")
        return convert(v)

    return decode


def _items(v: Any) -> list[Any]:
    if type(v) is not list:
        raise TypeError(f"expected a list, got {type(v).__name__}")
    return _dec(v)  # type: ignore[no-any-return]


def _dec_timedelta(v: Any) -> dt.timedelta:
    if type(v) is not list or len(v) != 3 or any(type(x) is not int for x in v):
        raise TypeError("expected [days, seconds, microseconds]")
    return dt.timedelta(*v)


def _dec_pairs(v: Any) -> dict[Any, Any]:
    pairs = _items(v)
    if any(type(p) is not list or len(p) != 2 for p in pairs):
        raise TypeError("expected a list of [key, value] pairs")
    return dict(pairs)


_FLOATS = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
_DECODERS: dict[str, Callable[[Any], Any]] = {
    "float": _str(_FLOATS.__getitem__),
    "dict": _dec_pairs,
    "tuple": lambda v: tuple(_items(v)),
    "set": lambda v: set(_items(v)),
    "frozenset": lambda v: frozenset(_items(v)),
    "bytes": _str(lambda v: base64.b64decode(v, validate=True)),
    "datetime": _str(dt.datetime.fromisoformat),
    "date": _str(dt.date.fromisoformat),
    "time": _str(dt.time.fromisoformat),
    "timedelta": _dec_timedelta,
    "uuid": _str(uuid.UUID),
    "decimal": _str(decimal.Decimal),
    "path": _str(pathlib.Path),
    "pureposixpath": _str(pathlib.PurePosixPath),
    "purewindowspath": _str(pathlib.PureWindowsPath),
}


class JSONSerializer:
    """The default serializer: exact types in, the same exact types out.

    Supported: ``None``, ``bool``, ``int``, ``float`` (NaN and infinities too), ``str``,
    ``list``, ``dict``, ``tuple``, ``set``, ``frozenset``, ``bytes``, ``datetime``,
    ``date``, ``time`` (naive or with a fixed-offset ``datetime.timezone``),
    ``timedelta``, ``uuid.UUID``, ``decimal.Decimal``, ``pathlib.Path``,
    ``PurePosixPath`` and ``PureWindowsPath``, nested freely.

    Only *exact* types are accepted: an ``IntEnum``, a ``NamedTuple``, a ``str`` or
    ``datetime`` subclass, an ``OrderedDict``... would be read back as its base type,
    so it is refused with :class:`SerializationError` rather than silently changed.

    Format: JSON values stand for themselves, except that a JSON object with a ``"$t"``
    key is a tagged value ``{"$t": tag, "v": payload}``, e.g.
    ``{"$t": "tuple", "v": [1, 2]}``, ``{"$t": "bytes", "v": "<base64>"}``,
    ``{"$t": "float", "v": "nan"}``. Dicts whose keys are not all strings, or that
    have a ``"$t"`` key, become ``{"$t": "dict", "v": [[key, value], ...]}``. Set
    members are sorted by their canonical JSON so the output does not depend on hashing.
    """

    def encode(self, value: object, *, where: str = "result", canonical: bool = False) -> JSONValue:
        """Return tagged JSON data for ``value``; see the class docstring."""
        t = type(value)
        if t is str or t is int or t is bool or value is None:
            return value  # type: ignore[return-value]
        try:
            return _enc(value, canonical)  # type: ignore[no-any-return]
        except (_Unsupported, RecursionError) as exc:
            cause = exc
        # Raised outside the except block so the traceback does not show our signal.
        raise _explain(value, where, cause)

    def decode(self, data: JSONValue) -> object:
        """Rebuild a value from :meth:`encode`'s output; raise ``ValueError`` if malformed.

        Never runs code: tags map to a fixed set of constructors.
        """
        return _dec(data)


class PickleSerializer:
    """Records any picklable value, as ``{"$t": "pickle", "v": "<base64 pickle>"}``.

    WARNING: loading a pickle can run arbitrary code. Use this serializer only with
    state files that nobody untrusted can write to. Pickles are not canonical, so
    ``canonical=True`` is refused.
    """

    def encode(self, value: object, *, where: str = "result", canonical: bool = False) -> JSONValue:
        """Pickle ``value`` (protocol 5, readable by every supported Python)."""
        name = _type_name(type(value))
        if canonical:
            raise _refuse(where, name, "PickleSerializer cannot produce a canonical encoding")
        try:
            blob = pickle.dumps(value, protocol=5)
        except Exception as exc:  # pickling fails in many ways (PicklingError, TypeError...)
            raise _refuse(where, name, f"{name!r} cannot be pickled: {exc}") from exc
        return {"$t": "pickle", "v": base64.b64encode(blob).decode("ascii")}

    def decode(self, data: JSONValue) -> object:
        """Unpickle what :meth:`encode` produced. Runs code from the state file."""
        if type(data) is not dict or data.keys() != {"$t", "v"} or data["$t"] != "pickle":
            raise ValueError(f"not a pickled value: {data!r:.200}")
        try:
            blob = base64.b64decode(data["v"], validate=True)  # type: ignore[arg-type]
            return pickle.loads(blob)  # noqa: S301 - the user opted in; see the class warning
        except (TypeError, binascii.Error, pickle.UnpicklingError, EOFError) as exc:
            # A missing class (AttributeError, ImportError) is not damage, so it propagates.
            raise ValueError(f"malformed pickled value: {exc}") from exc
