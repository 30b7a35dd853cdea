"""Durable execution for plain Python.

Decorate the functions that matter with :func:`duravoke`; when the program crashes or
is killed, run it again and every call whose result was recorded returns that result
instead of running again. See the README for the promise, the API and the state format.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from ._decorator import make_durable as _make_durable
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
from ._inspect import StepInfo as StepInfo
from ._inspect import WorkflowInfo as WorkflowInfo
from ._inspect import forget as forget
from ._inspect import get_workflow as get_workflow
from ._inspect import list_workflows as list_workflows
from ._serializer import JSONSerializer as JSONSerializer
from ._serializer import PickleSerializer as PickleSerializer
from ._serializer import Serializer as Serializer
from ._store import InMemoryKKV as InMemoryKKV
from ._store import Lease as Lease
from ._store import Store as Store
from ._stores import open_store as open_store
from ._testing import throwaway_store as throwaway_store
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
    "PostgresStore",
    "SerializationError",
    "Serializer",
    "StepInfo",
    "Store",
    "StoreError",
    "Workflow",
    "WorkflowBusyError",
    "WorkflowError",
    "WorkflowInfo",
    "WorkflowNotFoundError",
    "default_instance",
    "duravoke",
    "forget",
    "get_workflow",
    "idempotency_key",
    "list_workflows",
    "open_store",
    "throwaway_store",
    "workflow",
]

__version__ = "0.2.0"

if TYPE_CHECKING:
    from ._postgres import PostgresStore as PostgresStore


def __getattr__(name: str) -> Any:
    # PostgresStore needs psycopg, which users of the file stores need not install.
    if name == "PostgresStore":
        from ._postgres import PostgresStore

        return PostgresStore
    raise AttributeError(f"module 'duravoke' has no attribute {name!r}")


_P = ParamSpec("_P")
_R = TypeVar("_R")

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
def duravoke(fn: Callable[_P, _R], /) -> Callable[_P, _R]: ...


@overload
def duravoke(
    fn: None = None, /, *, name: str | None = None, key: Callable[..., Any] | None = None
) -> Callable[[Callable[_P, _R]], Callable[_P, _R]]: ...


def duravoke(
    fn: Callable[_P, _R] | None = None,
    /,
    *,
    name: str | None = None,
    key: Callable[..., Any] | None = None,
) -> Callable[_P, _R] | Callable[[Callable[_P, _R]], Callable[_P, _R]]:
    """Make a function durable, recording into the default store.

    See :meth:`Duravoke.duravoke` for the arguments.
    """
    if fn is not None:
        return _make_durable(default_instance(), fn, name, key)
    return default_instance().duravoke(name=name, key=key)


def workflow(workflow_id: str, *, timeout: float | None = None) -> Workflow:
    """Name a run of the default instance; see :meth:`Duravoke.workflow`."""
    return default_instance().workflow(workflow_id, timeout=timeout)
