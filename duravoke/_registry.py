"""The process-wide registry of decorated functions, by name, and entry points.

A runner resumes a workflow by calling its entry point: the function a decorated call
outside any workflow (or :func:`duravoke.start`) began with. The state records only
the function's registered name, its module (to say what to import) and its encoded
arguments, never code or a path to code: a runner calls only functions that were
decorated in modules it imported itself.

Rules:

- every function decorated at module level is registered under its name
  (``module.qualname``, or ``name=``); functions defined inside other functions
  (``<locals>`` in their qualname) are not: no other process could find them;
- two different functions claiming one name raise :class:`ValueError` at decoration;
- decorating the same ``module.qualname`` again (a reload, or another instance)
  replaces the earlier registration.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._errors import SerializationError
from ._serializer import JSONSerializer
from ._state import Record

if TYPE_CHECKING:
    from ._duravoke import Duravoke

__all__ = [
    "Registered",
    "decode_arguments",
    "encode_entry",
    "entry_or_none",
    "lookup",
    "register",
    "registered_names",
]

# Entry arguments are encoded like call arguments: JSON, whatever the result serializer.
_ARGS = JSONSerializer()


@dataclass(frozen=True)
class Registered:
    """A decorated function a runner may call.

    Attributes:
        name: its registered name.
        module: the module that defines it.
        qualname: its qualified name in that module.
        function: the decorated function (the wrapper).
        is_async: whether it is an ``async def``.
        instance: the :class:`Duravoke` that decorated it (its serializer and context).
    """

    name: str
    module: str
    qualname: str
    function: Callable[..., Any]
    is_async: bool
    instance: Duravoke


_registry: dict[str, Registered] = {}
_guard = threading.Lock()


def register(name: str, fn: Callable[..., Any], wrapper: Callable[..., Any], instance: Any) -> None:
    """Register ``wrapper`` (the decorated ``fn``) under ``name``.

    Raises:
        ValueError: another function is registered under ``name``.
    """
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str) or "<locals>" in qualname:
        return
    entry = Registered(name, module, qualname, wrapper, inspect.iscoroutinefunction(fn), instance)
    with _guard:
        known = _registry.get(name)
        if known is not None and (known.module, known.qualname) != (module, qualname):
            raise ValueError(
                f"@duravoke: {module}.{qualname} and {known.module}.{known.qualname} both"
                f" claim the name {name!r}; a runner could not tell which one to resume. Give"
                " one of them another name= ."
            )
        _registry[name] = entry


def lookup(name: str) -> Registered | None:
    """The function registered under ``name`` in this process, if any."""
    with _guard:
        return _registry.get(name)


def registered_names() -> list[str]:
    """Every registered name, sorted (for error messages)."""
    with _guard:
        return sorted(_registry)


def encode_entry(
    name: str, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Record:
    """The entry point of a call: name, module and encoded arguments.

    Raises:
        SerializationError: an argument is not JSON (a call identified with ``key=``
            may have such arguments); such a call cannot be resumed by a runner.
    """
    return {
        "name": name,
        "module": getattr(fn, "__module__", None),
        "args": _ARGS.encode(list(args), where="args"),
        "kwargs": _ARGS.encode(kwargs, where="kwargs"),
    }


def entry_or_none(
    name: str, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Record | None:
    """:func:`encode_entry`, or None when an argument is not JSON."""
    try:
        return encode_entry(name, fn, args, kwargs)
    except SerializationError:
        return None


def decode_arguments(entry: Record) -> tuple[list[Any], dict[str, Any]]:
    """The positional and keyword arguments recorded in an entry point.

    Raises:
        ValueError, TypeError: they cannot be decoded.
    """
    args = _ARGS.decode(entry.get("args", []))
    kwargs = _ARGS.decode(entry.get("kwargs", {}))
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise TypeError("the recorded arguments have an unexpected shape")
    return args, kwargs
