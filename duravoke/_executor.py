"""A thread pool whose workers run in the context of the code that submitted the work."""

from __future__ import annotations

import concurrent.futures
import contextvars
from collections.abc import Callable
from typing import ParamSpec, TypeVar

__all__ = ["ThreadPoolExecutor"]

P = ParamSpec("P")
T = TypeVar("T")


class ThreadPoolExecutor(concurrent.futures.ThreadPoolExecutor):
    """A :class:`concurrent.futures.ThreadPoolExecutor` that carries the workflow.

    A plain pool runs submitted functions in its workers' own context, so durable
    calls made there do not belong to the workflow that submitted them. This one runs
    each submitted function in a copy of the submitter's context (as
    ``anyio.to_thread.run_sync`` does), so they are steps of that workflow::

        with duravoke.workflow(f"nightly-export-{night}"):
            with duravoke.ThreadPoolExecutor(8) as pool:
                list(pool.map(export_table, tables))

    It also works as the executor of ``loop.run_in_executor``.
    """

    def submit(
        self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
    ) -> concurrent.futures.Future[T]:
        """Schedule ``fn(*args, **kwargs)`` to run in a copy of the current context."""
        context = contextvars.copy_context()
        call: Callable[..., T] = context.run
        return super().submit(call, fn, *args, **kwargs)

    def __repr__(self) -> str:
        return f"duravoke.ThreadPoolExecutor(max_workers={self._max_workers})"
