"""The :class:`Duravoke` instance: a store, a serializer, a decorator and workflows."""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, ParamSpec, TypeVar, overload

from ._decorator import make_durable
from ._filestore import DirectoryStore
from ._serializer import JSONSerializer, Serializer
from ._store import Store
from ._workflow import Frame, Workflow

__all__ = ["Duravoke"]

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
        self._frame: ContextVar[Frame | None] = ContextVar(f"duravoke_{id(self):x}", default=None)

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
                ``module.qualname``; keeps identity stable across renames.
            key: called with the function's arguments, returns the JSON value that
                identifies the call instead of the arguments themselves.

        Raises:
            TypeError: ``fn`` is a generator or async generator function.
        """
        if fn is not None:
            return make_durable(self, fn, name, key)

        def decorate(f: Callable[P, R]) -> Callable[P, R]:
            return make_durable(self, f, name, key)

        return decorate

    def workflow(self, workflow_id: str, *, timeout: float | None = None) -> Workflow:
        """Name a run: decorated calls inside belong to workflow ``workflow_id``.

        Use as ``with`` or ``async with``. Entering takes the workflow's lock, so one
        process or thread runs it at a time; others wait, at most ``timeout`` seconds
        if given, then raise :class:`WorkflowBusyError`. The id follows tasks started
        inside the block and threads started with ``anyio.to_thread.run_sync`` or
        ``contextvars.copy_context()``.

        Raises:
            WorkflowBusyError: the lock was not free within ``timeout``.
            WorkflowError: the same workflow is already entered in this context.
        """
        return Workflow(self, workflow_id, timeout)
