"""Durable execution for plain Python.

Decorate the functions that matter with :func:`duravoke`; when the program crashes or
is killed, run it again and every call whose result was recorded returns that result
instead of running again. See the README for the promise, the API and the state format.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar, overload

from ._decorator import make_durable
from ._duravoke import Duravoke as Duravoke
from ._errors import CorruptStateError as CorruptStateError
from ._errors import DuravokeError as DuravokeError
from ._errors import OutsideStepError as OutsideStepError
from ._errors import SerializationError as SerializationError
from ._errors import StoreError as StoreError
from ._errors import WorkflowBusyError as WorkflowBusyError
from ._errors import WorkflowError as WorkflowError
from ._errors import WorkflowNotFoundError as WorkflowNotFoundError
from ._filestore import DirectoryStore as DirectoryStore
from ._filestore import PersistedKKV as PersistedKKV
from ._serializer import JSONSerializer as JSONSerializer
from ._serializer import PickleSerializer as PickleSerializer
from ._serializer import Serializer as Serializer
from ._store import InMemoryKKV as InMemoryKKV
from ._store import Lease as Lease
from ._store import Store as Store
from ._stores import open_store as open_store
from ._workflow import Workflow as Workflow
from ._workflow import idempotency_key as idempotency_key

__all__ = [
    "CorruptStateError",
    "DirectoryStore",
    "Duravoke",
    "DuravokeError",
    "InMemoryKKV",
    "JSONSerializer",
    "Lease",
    "OutsideStepError",
    "PersistedKKV",
    "PickleSerializer",
    "SerializationError",
    "Serializer",
    "Store",
    "StoreError",
    "Workflow",
    "WorkflowBusyError",
    "WorkflowError",
    "WorkflowNotFoundError",
    "default_instance",
    "duravoke",
    "idempotency_key",
    "open_store",
    "workflow",
]

__version__ = "0.2.0"

P = ParamSpec("P")
R = TypeVar("R")

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
    if fn is not None:
        return make_durable(default_instance(), fn, name, key)
    return default_instance().duravoke(name=name, key=key)


def workflow(workflow_id: str, *, timeout: float | None = None) -> Workflow:
    """Name a run of the default instance; see :meth:`Duravoke.workflow`."""
    return default_instance().workflow(workflow_id, timeout=timeout)
