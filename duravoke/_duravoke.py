"""Where the pieces are wired: the :class:`Duravoke` instance, the default instance, and the
module-level functions that use it.

A :class:`Duravoke` owns a store, a serializer and a run context; the decorator and
``workflow()`` receive those, never the instance itself.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar, overload

from ._context import Context
from ._decorator import make_durable
from ._filestore import DirectoryStore
from ._serializer import JSONSerializer, Serializer
from ._store import Store
from ._workflow import Workflow

__all__ = ["Duravoke", "default_instance", "duravoke", "workflow"]

P = ParamSpec("P")
R = TypeVar("R")


class Duravoke:
    """Durable execution bound to one store.

    Args:
        store: where state lives; default :class:`DirectoryStore` (``$DURAVOKE_HOME`` or
            the user state folder).
        serializer: how results are recorded; default :class:`JSONSerializer`.

    The functions an instance decorates record into its store, inside its workflows.
    The module-level ``duravoke.duravoke`` and ``duravoke.workflow`` use a default
    instance.
    """

    def __init__(self, store: Store | None = None, serializer: Serializer | None = None) -> None:
        self.store: Store = store if store is not None else DirectoryStore()
        self.serializer: Serializer = serializer if serializer is not None else JSONSerializer()
        self.context = Context(f"{id(self):x}")

    def __repr__(self) -> str:
        return f"Duravoke(store={self.store!r}, serializer={self.serializer!r})"

    @overload
    def duravoke(self, fn: Callable[P, R], /) -> Callable[P, R]: ...

    @overload
    def duravoke(
        self, fn: None = None, /, *, name: str | None = None, key: Callable[..., Any] | None = None
    ) -> Callable[[Callable[P, R]], Callable[P, R]]: ...

    def duravoke(
        self,
        fn: Callable[P, R] | None = None,
        /,
        *,
        name: str | None = None,
        key: Callable[..., Any] | None = None,
    ) -> Callable[P, R] | Callable[[Callable[P, R]], Callable[P, R]]:
        """Make a function durable: once a call's result is recorded, it never runs again.

        Use bare (``@d.duravoke``) or with arguments (``@d.duravoke(name=..., key=...)``),
        on a sync or an async function.

        Args:
            fn: the function (when used bare).
            name: the name that identifies the function in records, instead of
                ``module.qualname``; keeps identity stable across renames and between a
                script (``__main__``) and an import. Recommended for entry points.
            key: called with the function's arguments, returns the JSON value that
                identifies the call instead of the arguments themselves.

        Raises:
            TypeError: ``fn`` is a generator or async generator function, or has no
                ``__qualname__`` and no ``name=``.
        """

        def decorate(f: Callable[P, R]) -> Callable[P, R]:
            return make_durable(f, name, key, self.context, self.workflow)

        return decorate if fn is None else decorate(fn)

    def workflow(self, workflow_id: str, *, timeout: float | None = None) -> Workflow:
        """Name a run: decorated calls inside belong to workflow ``workflow_id``.

        Use as ``with`` or ``async with``. Entering takes the workflow's lock, so one
        process or thread runs it at a time; others wait, at most ``timeout`` seconds
        if given, then raise :class:`WorkflowBusyError`. The id follows tasks started
        inside the block and threads started with ``anyio.to_thread.run_sync``,
        :class:`duravoke.ThreadPoolExecutor` or ``contextvars.copy_context()``.

        Raises:
            WorkflowBusyError: the lock was not free within ``timeout``.
            WorkflowError: the same workflow is already entered in this context.
            ValueError: the id is empty or not valid Unicode.
        """
        return Workflow(self.store, self.serializer, self.context, workflow_id, timeout)


_default: Duravoke | None = None
_default_guard = threading.Lock()


def default_instance() -> Duravoke:
    """The instance behind the module-level :func:`duravoke` and :func:`workflow`.

    Its store is a :class:`DirectoryStore` in ``$DURAVOKE_HOME`` or the user state folder.
    """
    global _default
    with _default_guard:
        if _default is None:
            _default = Duravoke()
        return _default


@overload
def duravoke(fn: Callable[P, R], /) -> Callable[P, R]: ...


@overload
def duravoke(
    fn: None = None, /, *, name: str | None = None, key: Callable[..., Any] | None = None
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


def duravoke(
    fn: Callable[P, R] | None = None,
    /,
    *,
    name: str | None = None,
    key: Callable[..., Any] | None = None,
) -> Callable[P, R] | Callable[[Callable[P, R]], Callable[P, R]]:
    """Make a function durable, recording into the default store.

    See :meth:`Duravoke.duravoke` for the arguments.
    """
    decorate = default_instance().duravoke(name=name, key=key)
    return decorate if fn is None else decorate(fn)


def workflow(workflow_id: str, *, timeout: float | None = None) -> Workflow:
    """Name a run of the default instance; see :meth:`Duravoke.workflow`."""
    return default_instance().workflow(workflow_id, timeout=timeout)
