"""Durable execution for plain Python.

Decorate the functions that matter with :func:`duravoke`; when the program crashes or
is killed, run it again and every call whose result was recorded returns that result
instead of running again. See the README for the promise, the API and the state format.
"""

from typing import TYPE_CHECKING, Any

from ._duravoke import Duravoke as Duravoke
from ._duravoke import default_instance as default_instance
from ._duravoke import duravoke as duravoke
from ._duravoke import workflow as workflow
from ._errors import CorruptStateError as CorruptStateError
from ._errors import DuravokeError as DuravokeError
from ._errors import OutsideStepError as OutsideStepError
from ._errors import SerializationError as SerializationError
from ._errors import StoreError as StoreError
from ._errors import WorkflowBusyError as WorkflowBusyError
from ._errors import WorkflowError as WorkflowError
from ._errors import WorkflowNotFoundError as WorkflowNotFoundError
from ._executor import ThreadPoolExecutor as ThreadPoolExecutor
from ._filestore import DirectoryStore as DirectoryStore
from ._filestore import PersistedKKV as PersistedKKV
from ._info import StepInfo as StepInfo
from ._info import WorkflowInfo as WorkflowInfo
from ._info import forget as forget
from ._info import get_workflow as get_workflow
from ._info import list_workflows as list_workflows
from ._memory import InMemoryKKV as InMemoryKKV
from ._open import open_store as open_store
from ._salvage import SalvageReport as SalvageReport
from ._salvage import salvage as salvage
from ._serializer import JSONSerializer as JSONSerializer
from ._serializer import PickleSerializer as PickleSerializer
from ._serializer import Serializer as Serializer
from ._store import Lease as Lease
from ._store import Store as Store
from ._version import __version__ as __version__
from ._workflow import Workflow as Workflow
from ._workflow import idempotency_key as idempotency_key
from .testing import throwaway_store as throwaway_store

if TYPE_CHECKING:
    from ._postgres import PostgresStore as PostgresStore

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
    "SalvageReport",
    "SerializationError",
    "Serializer",
    "StepInfo",
    "Store",
    "StoreError",
    "ThreadPoolExecutor",
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
    "salvage",
    "throwaway_store",
    "workflow",
]


def __getattr__(name: str) -> Any:
    # Imported on first use: psycopg loads only for programs that use the Postgres store
    # (and PostgresStore() says what to install when psycopg is missing).
    if name == "PostgresStore":
        from ._postgres import PostgresStore

        return PostgresStore
    raise AttributeError(f"module 'duravoke' has no attribute {name!r}")
