"""The exceptions duravoke raises.

Every one of them derives from :class:`DuravokeError` and also from the builtin it
resembles, so ``except TimeoutError`` keeps working for code that does not know us::

    DuravokeError (Exception)
    ├── SerializationError (TypeError)     a value cannot be recorded
    ├── CorruptStateError (ValueError)     a state file is damaged; it is left untouched
    ├── WorkflowBusyError (TimeoutError)   another process or thread runs the workflow
    ├── WorkflowError (RuntimeError)       ``workflow()`` was misused (e.g. nested twice)
    │   └── WorkflowCancelledError         the workflow was cancelled; it does not run
    ├── OutsideStepError (RuntimeError)    a step-only function was called outside a step
    ├── WorkflowNotFoundError (LookupError) no state is recorded under that workflow id
    └── StoreError (OSError)               the store could not write; nothing was lost

Duravoke never wraps or swallows an exception raised by your own code.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = [
    "ERROR_REPR_LIMIT",
    "CorruptStateError",
    "DuravokeError",
    "OutsideStepError",
    "SerializationError",
    "StoreError",
    "WorkflowBusyError",
    "WorkflowCancelledError",
    "WorkflowError",
    "WorkflowNotFoundError",
    "check_format",
    "corrupt_file",
    "error_repr",
]

#: The longest exception ``repr`` kept in a record, in characters.
ERROR_REPR_LIMIT = 1000


def error_repr(exc: BaseException) -> str:
    """How a failure is recorded: its ``repr``, cut at :data:`ERROR_REPR_LIMIT` characters."""
    return repr(exc)[:ERROR_REPR_LIMIT]


class DuravokeError(Exception):
    """Base class of every error duravoke raises on its own account.

    Every duravoke error pickles with its attributes (a process pool or a task queue
    sends exceptions across processes), whatever its constructor's keyword arguments.
    """

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.args, self.__dict__))


def _rebuild(cls: type[DuravokeError], args: tuple[Any, ...], attrs: dict[str, Any]) -> Any:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(attrs)
    return error


class SerializationError(DuravokeError, TypeError):
    """A value could not be recorded (or an argument could not identify a call).

    Attributes:
        function: the decorated function's name, when known.
        where: where in the value the problem sits, e.g. ``result[2]['when']``.
        type_name: the qualified name of the offending type.
    """

    def __init__(
        self,
        message: str,
        *,
        function: str | None = None,
        where: str | None = None,
        type_name: str | None = None,
    ) -> None:
        super().__init__(message)
        self.function = function
        self.where = where
        self.type_name = type_name


class CorruptStateError(DuravokeError, ValueError):
    """A state file is damaged or of an unknown format; duravoke left it as it was.

    Attributes:
        path: the damaged file.
    """

    def __init__(self, message: str, *, path: str | os.PathLike[str] | None = None) -> None:
        super().__init__(message)
        self.path = None if path is None else os.fspath(path)


class WorkflowBusyError(DuravokeError, TimeoutError):
    """Another process or thread is running the workflow and ``timeout`` ran out.

    Attributes:
        workflow_id: the workflow that was busy.
    """

    def __init__(self, message: str, *, workflow_id: str) -> None:
        super().__init__(message)
        self.workflow_id = workflow_id


class WorkflowError(DuravokeError, RuntimeError):
    """``workflow()`` was used in a way that cannot work, such as nesting the same id."""


class WorkflowCancelledError(WorkflowError):
    """The workflow was cancelled (``duravoke cancel``): it does not run again.

    Attributes:
        workflow_id: the cancelled workflow.
    """

    def __init__(self, message: str, *, workflow_id: str) -> None:
        super().__init__(message)
        self.workflow_id = workflow_id


class OutsideStepError(DuravokeError, RuntimeError):
    """A function that only makes sense inside a durable step was called outside one."""


class WorkflowNotFoundError(DuravokeError, LookupError):
    """No state is recorded under the given workflow id.

    Attributes:
        workflow_id: the id that was looked up.
    """

    def __init__(self, message: str, *, workflow_id: str) -> None:
        super().__init__(message)
        self.workflow_id = workflow_id


class StoreError(DuravokeError, OSError):
    """The store failed to write or read; what was recorded before is kept.

    Attributes:
        path: the file (or store) involved, when there is one.
    """

    def __init__(self, message: str, *, path: str | os.PathLike[str] | None = None) -> None:
        super().__init__(message)
        self.path = None if path is None else os.fspath(path)


def corrupt_file(
    path: str | os.PathLike[str], why: str, salvage: str | None = None
) -> CorruptStateError:
    """The error for a damaged file: what is wrong, and what to do about it.

    ``salvage`` is the command that keeps the file's intact records (a log or a journal);
    None when nothing in it can be told intact (a state file).
    """
    if salvage is not None:
        advice = (
            f"run `{salvage}`: it keeps every intact record, moves the damaged file aside"
            " (nothing is deleted) and says how many records it kept"
        )
    else:
        advice = (
            "restore it from a backup, or `duravoke forget` the workflow to start it afresh"
            " (that discards every step recorded for it)"
        )
    return CorruptStateError(
        f"cannot load {os.fspath(path)}: {why}. The file was left untouched; {advice}.",
        path=path,
    )


def check_format(
    path: str | os.PathLike[str], fmt: object, expected: str, version: object, supported: int
) -> None:
    """Refuse a file of another format, or of a format version this duravoke cannot read."""
    if fmt != expected:
        raise corrupt_file(path, "it is not a duravoke state file")
    if version != supported:
        raise CorruptStateError(
            f"{os.fspath(path)} has format version {version!r}, but this duravoke reads version"
            f" {supported}. Upgrade duravoke to read it; the file was left untouched.",
            path=path,
        )
