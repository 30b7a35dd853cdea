"""Where the pieces are wired: the :class:`Duravoke` instance, the default instance, and the
module-level functions that use it.

A :class:`Duravoke` owns a store, a serializer and a run context; the decorator and
``workflow()`` receive those, never the instance itself.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any, ParamSpec, TypeVar, overload

import anyio.to_thread

from . import _waiting
from ._context import Context
from ._decorator import make_durable
from ._filestore import DirectoryStore
from ._identity import function_name
from ._registry import register
from ._serializer import JSONSerializer, Serializer
from ._store import Store
from ._workflow import Workflow

__all__ = [
    "Duravoke",
    "default_instance",
    "duravoke",
    "receive",
    "receive_async",
    "send",
    "send_async",
    "sleep",
    "sleep_async",
    "workflow",
]

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
            wrapper = make_durable(f, name, key, self.context, self._open_own)
            # Module-level functions become entry points a runner can resume by name.
            register(name or function_name(f), f, wrapper, self)
            return wrapper

        return decorate if fn is None else decorate(fn)

    def _open_own(self, workflow_id: str, entry: Callable[[], Any]) -> Workflow:
        # The workflow a decorated call outside any workflow opens: it records its entry.
        return Workflow(self.store, self.serializer, self.context, workflow_id, None, entry=entry)

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

    def send(self, workflow_id: str, topic: str, value: object) -> int:
        """Send a message to a workflow of this instance's store; see :func:`duravoke.send`."""
        return _waiting.send_message(self.store, self.serializer, workflow_id, topic, value)

    async def send_async(self, workflow_id: str, topic: str, value: object) -> int:
        """:meth:`send` without blocking the event loop."""
        return await anyio.to_thread.run_sync(self.send, workflow_id, topic, value)

    def sleep(self, delay: float | timedelta) -> None:
        """Durable sleep in a workflow of this instance; see :func:`duravoke.sleep`."""
        _waiting.sleep(delay, context=self.context)

    async def sleep_async(self, delay: float | timedelta) -> None:
        """Durable sleep in a workflow of this instance, for async code."""
        await _waiting.sleep_async(delay, context=self.context)

    def receive(self, topic: str, timeout: float | timedelta | None = None) -> Any:
        """Durable receive in a workflow of this instance; see :func:`duravoke.receive`."""
        return _waiting.receive(topic, timeout, context=self.context)

    async def receive_async(self, topic: str, timeout: float | timedelta | None = None) -> Any:
        """Durable receive in a workflow of this instance, for async code."""
        return await _waiting.receive_async(topic, timeout, context=self.context)


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


def sleep(delay: float | timedelta) -> None:
    """Sleep durably inside a workflow: the wake time is recorded on the first call.

    A re-run (after a crash, or by a runner) waits only what remains; once the sleep
    is over, re-runs pass it at once. Called directly it blocks; run by a runner, a
    sleep longer than the runner's ``suspend_after`` suspends the workflow instead
    (nothing held; ``duravoke list`` shows ``sleeping``) until a later pass.

    Args:
        delay: seconds (int or float) or a ``datetime.timedelta``; >= 0.

    Raises:
        WorkflowError: called outside a workflow.
        TypeError, ValueError: a negative, NaN or infinite delay, or not a number.
    """
    _waiting.sleep(delay)


async def sleep_async(delay: float | timedelta) -> None:
    """:func:`sleep` for async code; it never blocks the event loop."""
    await _waiting.sleep_async(delay)


def receive(topic: str, timeout: float | timedelta | None = None) -> Any:
    """The next message sent to this workflow on ``topic``, received exactly once.

    Recorded like a step: a re-run receives the same value again, and the next
    ``receive`` on the topic gets the next message, in send order. With ``timeout``
    (seconds or timedelta, counted from the first call, recorded), it returns None
    once that passed, and the None is recorded too. Called directly it blocks (polling
    the inbox); run by a runner, a longer wait suspends the workflow (``waiting``).

    Raises:
        WorkflowError: called outside a workflow.
    """
    return _waiting.receive(topic, timeout)


async def receive_async(topic: str, timeout: float | timedelta | None = None) -> Any:
    """:func:`receive` for async code; it never blocks the event loop."""
    return await _waiting.receive_async(topic, timeout)


def send(workflow_id: str, topic: str, value: object) -> int:
    """Send ``value`` to workflow ``workflow_id`` on ``topic``, durably, from anywhere.

    Works whether the workflow is running (never waits for its lock), suspended, or
    not started yet: a message to an id with no workflow is kept, for a workflow that
    starts under that id later (forgetting the workflow deletes its messages). A
    waiting workflow becomes due at once. Uses the default instance's store and
    serializer.

    Returns:
        The message's sequence number on that topic (1, 2, 3... in send order).

    Raises:
        SerializationError: ``value`` cannot be recorded (nothing was written).
    """
    return default_instance().send(workflow_id, topic, value)


async def send_async(workflow_id: str, topic: str, value: object) -> int:
    """:func:`send` without blocking the event loop."""
    return await default_instance().send_async(workflow_id, topic, value)
