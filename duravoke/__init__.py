"""Durable execution for plain Python.

Decorate the functions that matter with :func:`duravoke`; when the program crashes or
is killed, run it again and every call whose result was recorded returns that result
instead of running again. See the README for the promise, the API and the state format.
"""

from typing import TYPE_CHECKING, Any

from ._duravoke import Duravoke as Duravoke
from ._duravoke import default_instance as default_instance
from ._duravoke import duravoke as duravoke
from ._duravoke import receive as receive
from ._duravoke import receive_async as receive_async
from ._duravoke import send as send
from ._duravoke import send_async as send_async
from ._duravoke import sleep as sleep
from ._duravoke import sleep_async as sleep_async
from ._duravoke import workflow as workflow
from ._errors import CorruptStateError as CorruptStateError
from ._errors import DuravokeError as DuravokeError
from ._errors import OutsideStepError as OutsideStepError
from ._errors import SerializationError as SerializationError
from ._errors import StoreError as StoreError
from ._errors import WorkflowBusyError as WorkflowBusyError
from ._errors import WorkflowCancelledError as WorkflowCancelledError
from ._errors import WorkflowError as WorkflowError
from ._errors import WorkflowNotFoundError as WorkflowNotFoundError
from ._executor import ThreadPoolExecutor as ThreadPoolExecutor
from ._filestore import DirectoryStore as DirectoryStore
from ._filestore import PersistedKKV as PersistedKKV
from ._info import StepInfo as StepInfo
from ._info import WorkflowInfo as WorkflowInfo
from ._info import forget as forget
from ._info import forget_many as forget_many
from ._info import get_workflow as get_workflow
from ._info import list_workflows as list_workflows
from ._memory import InMemoryKKV as InMemoryKKV
from ._open import open_store as open_store
from ._runner import Outcome as Outcome
from ._runner import Report as Report
from ._runner import Runner as Runner
from ._runner import cancel as cancel
from ._runner import resume as resume
from ._runner import resume_async as resume_async
from ._runner import retry as retry
from ._runner import start as start
from ._runner import start_as as start_as
from ._runner import start_as_async as start_as_async
from ._runner import start_async as start_async
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
    "Outcome",
    "OutsideStepError",
    "PersistedKKV",
    "PickleSerializer",
    "PostgresStore",
    "Report",
    "Runner",
    "SalvageReport",
    "SerializationError",
    "Serializer",
    "StepInfo",
    "Store",
    "StoreError",
    "ThreadPoolExecutor",
    "Workflow",
    "WorkflowBusyError",
    "WorkflowCancelledError",
    "WorkflowError",
    "WorkflowInfo",
    "WorkflowNotFoundError",
    "cancel",
    "default_instance",
    "duravoke",
    "forget",
    "forget_many",
    "get_workflow",
    "idempotency_key",
    "list_workflows",
    "open_store",
    "receive",
    "receive_async",
    "resume",
    "resume_async",
    "retry",
    "salvage",
    "send",
    "send_async",
    "sleep",
    "sleep_async",
    "start",
    "start_as",
    "start_as_async",
    "start_async",
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
