"""What makes two calls "the same call": argument digests, step ids, idempotency keys.

A step is identified within its workflow by (caller path, function name, argument
digest, occurrence); see the README. This module computes the pieces that do not
depend on the run: the canonical JSON of a call's arguments and the hashes built
from it. Occurrences are counted by the run itself (``_workflow``).
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable
from typing import Any

from ._errors import SerializationError
from ._serializer import JSONSerializer, JSONValue, NamedZoneError, canonical_json
from ._typed import identity_data

__all__ = [
    "CallIdentity",
    "call_key",
    "check_workflow_id",
    "function_name",
    "idempotency_key_for",
    "implicit_workflow_id",
]

# Arguments are always encoded as JSON, whatever serializer records results: an
# identity must be canonical and must never depend on pickle.
_ARGS = JSONSerializer()

# The JSON encoding of these is the value itself (the serializer passes them through).
_AS_IS = frozenset((str, int, bool, type(None)))

#: Arguments this short are also written into the step record, for people to read.
ARGS_PREVIEW_LIMIT = 200


class CallIdentity:
    """Turns the arguments of calls to one function into canonical JSON."""

    def __init__(self, fn: Callable[..., Any], name: str, key: Callable[..., Any] | None) -> None:
        self.name = name
        self._key = key
        self._signature = inspect.signature(key or fn)
        params = list(self._signature.parameters.values())
        plain = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        # The common case (every argument passed positionally, no *args, no defaults
        # to fill) needs no Signature.bind, which costs more than the rest together.
        self._fast = tuple(p.name for p in params) if all(p.kind in plain for p in params) else None

    def encode(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[object, str]:
        """The encoded arguments and their canonical JSON.

        Raises:
            SerializationError: an argument cannot be encoded; says how ``key=`` helps.
        """
        if self._key is not None:
            try:
                encoded = _encode(self._call_key(args, kwargs), "key(...)")
            except SerializationError as exc:
                raise SerializationError(
                    f"{self.name}(): the value returned by key= cannot identify the call: {exc}",
                    function=self.name,
                    where=exc.where,
                    type_name=exc.type_name,
                ) from None
            return encoded, canonical_json(encoded)
        fast = self._fast
        if fast is not None and not kwargs and len(args) == len(fast):
            bound: dict[str, Any] = dict(zip(fast, args, strict=True))
        else:
            ba = self._signature.bind(*args, **kwargs)
            ba.apply_defaults()
            bound = ba.arguments
        out = {}
        for param, value in bound.items():
            if type(value) in _AS_IS:
                out[param] = value
                continue
            try:
                out[param] = _encode(value, param)
            except SerializationError as exc:
                raise self._bad_argument(param, exc) from None
        return out, canonical_json(out)

    def _call_key(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> object:
        assert self._key is not None
        try:
            return self._key(*args, **kwargs)
        except TypeError as exc:
            try:
                self._signature.bind(*args, **kwargs)
            except TypeError:
                raise TypeError(
                    f"{self.name}(): key= must accept the same arguments as the function, but"
                    f" key{self._signature} cannot take this call's arguments ({exc})."
                ) from exc
            raise

    def _bad_argument(self, param: str, exc: SerializationError) -> SerializationError:
        names = ", ".join(self._signature.parameters)
        what = f"{exc.where} is a {exc.type_name}, which is not JSON. Tell"
        if isinstance(exc, NamedZoneError):
            what = (
                f"{exc.where} is a datetime with a named zone (a {exc.type_name}), which JSON"
                " would keep only as a UTC offset. Pass it converted to UTC"
                f" ({exc.where}.astimezone(datetime.timezone.utc)), or tell"
            )
        return SerializationError(
            f"{self.name}(): argument {param!r} cannot identify the call: {what} duravoke"
            f" what identifies the call with key=, for example @duravoke.duravoke(key=lambda"
            f" {names}: <a JSON value, such as an id>).",
            function=self.name,
            where=exc.where,
            type_name=exc.type_name,
        )


def _encode(value: object, where: str) -> JSONValue:
    """Canonical JSON data for an argument; dataclasses, enums, models structurally."""
    try:
        return _ARGS.encode(value, where=where, canonical=True)
    except SerializationError as exc:
        plain_error = exc
    # Only values JSONSerializer refuses get here, so every identity it gave stays.
    try:
        return identity_data(value, where=where)
    except SerializationError as exc:
        # The structural walk names the field inside a dataclass; else keep the original.
        deeper = exc.where is not None and len(exc.where) > len(plain_error.where or "")
        raise (exc if deeper else plain_error) from None


def _hash(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode("utf-8", "surrogatepass")).hexdigest()[:32]


def call_key(path_key: str, name: str, args_json: str) -> str:
    """The hash of (caller path, function name, argument digest): a step id minus occurrence."""
    return _hash(path_key, name, args_json)


def implicit_workflow_id(name: str, args_json: str) -> str:
    """The id of the workflow a decorated call forms when no ``workflow()`` encloses it."""
    return f"{name}:{_hash(args_json)[:16]}"


def idempotency_key_for(workflow_id: str, sid: str) -> str:
    """A key unique to a step's identity and the same on every re-run of it."""
    return "duravoke-" + _hash("idempotency", workflow_id, sid)


def check_workflow_id(workflow_id: object) -> str:
    """``workflow_id`` if it can name a workflow: a non-empty str that is valid Unicode.

    Any such text is a valid id, ``../../etc/passwd`` and NUL bytes included: stores
    never use an id as a path or a query as it is.

    Raises:
        TypeError: it is not a str.
        ValueError: it is empty or holds a lone surrogate.
    """
    if not isinstance(workflow_id, str):
        raise TypeError(f"a workflow id must be a str, not {type(workflow_id).__name__}")
    if not workflow_id:
        raise ValueError("a workflow id must not be empty: name the run, e.g. 'import-2026-11-30'")
    try:
        workflow_id.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"workflow id {workflow_id!r} is not valid Unicode text") from None
    return workflow_id


def function_name(fn: Callable[..., Any]) -> str:
    """``module.qualname`` of ``fn``: the name a step is recorded under without ``name=``.

    Raises:
        TypeError: ``fn`` has no ``__qualname__`` (a ``functools.partial``, a callable
            object): it needs ``name=``.
    """
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str):
        raise TypeError(
            f"@duravoke cannot name {fn!r}: it has no __qualname__ (a functools.partial or a"
            " callable object). Name it: @duravoke.duravoke(name='billing.refund')."
        )
    return f"{module}.{qualname}"
