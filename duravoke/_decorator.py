"""The wrappers that make a function durable.

Sync or async is decided once, at decoration. Each wrapper is a few lines: find the
frame the call belongs to (or open the call's own workflow), let the run decide replay
or execute, run the body, and let the step record how it ended.
"""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Callable
from typing import Any, TypeVar, cast

from ._context import Context, active_workflows
from ._errors import WorkflowError
from ._identity import CallIdentity, function_name, implicit_workflow_id
from ._logging import logger
from ._registry import entry_or_none
from ._run import Frame
from ._typed import ResultCodec, result_codec

__all__ = ["make_durable"]

F = TypeVar("F", bound=Callable[..., Any])

#: Opens the workflow of the given id as a sync and async context; the second argument
#: builds the call's entry point, recorded if the workflow has none yet.
OpenWorkflow = Callable[[str, Callable[[], Any]], Any]

# The thread names of concurrent.futures pools and of asyncio's default executor: threads
# that run submitted work in a context of their own, without the submitter's workflow.
_POOL_THREADS = ("ThreadPoolExecutor", "asyncio_")


def make_durable(
    fn: F,
    name: str | None,
    key: Callable[..., Any] | None,
    context: Context,
    open_workflow: OpenWorkflow,
) -> F:
    """Wrap ``fn`` so that its calls are recorded in runs of ``context``.

    A call outside any run of ``context`` opens its own workflow with ``open_workflow``.
    """
    _check_decoratable(fn)
    identity = CallIdentity(fn, name or function_name(fn), key)
    # Reads the return annotation at the first call, before the body first runs.
    codec = result_codec(fn, identity.name)

    def own_workflow(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        # The entry point lets a runner finish the workflow should this process die.
        return open_workflow(
            _implicit_id(identity, context, args, kwargs),
            lambda: entry_or_none(identity.name, fn, args, kwargs),
        )

    wrap = _async_wrapper if inspect.iscoroutinefunction(fn) else _sync_wrapper
    return cast(F, wrap(fn, identity, codec, context, own_workflow))


def _check_decoratable(fn: object) -> None:
    if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
        raise TypeError(
            f"@duravoke cannot make generator {getattr(fn, '__qualname__', fn)}() durable: a"
            " generator yields many values over time and duravoke records one result per"
            " call. Return a list instead, or decorate the function that consumes it."
        )
    if not callable(fn):
        raise TypeError(f"@duravoke decorates functions, not {type(fn).__name__} objects")


def _async_wrapper(
    fn: Callable[..., Any],
    identity: CallIdentity,
    codec: ResultCodec,
    context: Context,
    own_workflow: Any,
) -> Callable[..., Any]:
    @functools.wraps(fn)
    async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
        frame: Frame | None = context.frame()
        if frame is None:
            async with own_workflow(args, kwargs):
                return await async_wrapper(*args, **kwargs)
        run = frame.run
        await run.apoll_cancel()  # at most every 0.5 s
        step = run.begin(frame, identity, args, kwargs, codec, on_loop=True)
        if step.replayed:
            return step.value
        try:
            with step.body():
                result = await fn(*args, **kwargs)
        except Exception as exc:
            await step.afail(exc)
            raise
        return await step.acomplete(result)

    async_wrapper._duravoke_identity = identity  # type: ignore[attr-defined]
    return async_wrapper


def _sync_wrapper(
    fn: Callable[..., Any],
    identity: CallIdentity,
    codec: ResultCodec,
    context: Context,
    own_workflow: Any,
) -> Callable[..., Any]:
    @functools.wraps(fn)
    def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
        frame: Frame | None = context.frame()
        if frame is None:
            with own_workflow(args, kwargs):
                return sync_wrapper(*args, **kwargs)
        step = frame.run.begin(frame, identity, args, kwargs, codec)
        if step.replayed:
            return step.value
        try:
            with step.body():
                result = fn(*args, **kwargs)
        except Exception as exc:
            step.fail(exc)
            raise
        return step.complete(result)

    sync_wrapper._duravoke_identity = identity  # type: ignore[attr-defined]
    return sync_wrapper


def _implicit_id(
    identity: CallIdentity, context: Context, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> str:
    if context.running() and threading.current_thread().name.startswith(_POOL_THREADS):
        # The silent trap: a step submitted to a thread pool from inside a workflow lost
        # the workflow's context and would become a workflow of its own, which the next
        # run (with another workflow id) would replay instead of running.
        raise WorkflowError(
            f"{identity.name}() was called in a thread pool worker with no workflow, while"
            " a workflow of the same duravoke instance runs in this process. Threads of"
            " concurrent.futures pools and run_in_executor() do not carry the workflow: use"
            " duravoke.ThreadPoolExecutor (it does), submit contextvars.copy_context().run,"
            " or anyio.to_thread.run_sync. If the call is meant to be a workflow of its own,"
            " open one explicitly with `with duravoke.workflow(id):` in the worker."
        )
    workflow_id = implicit_workflow_id(identity.name, identity.encode(args, kwargs)[1])
    outer = active_workflows()
    if outer:
        # Almost always a mistake: the call was meant to belong to the enclosing workflow.
        logger.warning(
            "%s() was called inside workflow %r of another Duravoke instance, so it forms"
            " its own workflow %r; decorate it with that instance to make it part of it",
            identity.name,
            outer[-1][1],
            workflow_id,
        )
    return workflow_id
