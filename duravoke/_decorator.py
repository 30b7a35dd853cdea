"""The wrappers that make a function durable.

Sync or async is decided once, at decoration. Each wrapper is a few lines around the
shared decision (``Run.begin``: replay or execute) and recording (``Step.finish``).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any, TypeVar, cast

from ._identity import CallIdentity, implicit_workflow_id
from ._typed import result_codec
from ._workflow import Frame, Step, active_workflows, logger, reset_current_step, set_current_step

if TYPE_CHECKING:
    from ._duravoke import Duravoke

__all__ = ["make_durable"]

F = TypeVar("F", bound=Callable[..., Any])


def _enter(
    var: ContextVar[Frame | None], step: Step
) -> tuple[Token[Frame | None], Token[Step | None]]:
    return var.set(step.body_frame()), set_current_step(step)


def _leave(
    var: ContextVar[Frame | None], tokens: tuple[Token[Frame | None], Token[Step | None]]
) -> None:
    reset_current_step(tokens[1])
    var.reset(tokens[0])


def _implicit_id(identity: CallIdentity, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
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


def make_durable(instance: Duravoke, fn: F, name: str | None, key: Callable[..., Any] | None) -> F:
    """Wrap ``fn`` so that its calls are recorded in ``instance``'s store."""
    if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
        raise TypeError(
            f"@duravoke cannot make generator {fn.__qualname__}() durable: a generator yields"
            " many values over time and duravoke records one result per call. Return a"
            " list instead, or decorate the function that consumes the generator."
        )
    if not callable(fn):
        raise TypeError(f"@duravoke decorates functions, not {type(fn).__name__} objects")
    qualname = f"{fn.__module__}.{fn.__qualname__}"
    identity = CallIdentity(fn, name or qualname, key)
    # Reads the return annotation at the first call, before the body first runs.
    codec = result_codec(fn, identity.name, instance.serializer)
    var = instance._frame

    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            frame = var.get()
            if frame is None:
                async with instance.workflow(_implicit_id(identity, args, kwargs)):
                    return await async_wrapper(*args, **kwargs)
            step = frame.run.begin(frame, identity, args, kwargs, codec)
            if step.replayed:
                return step.value
            tokens = _enter(var, step)
            try:
                result = await fn(*args, **kwargs)
            except Exception as exc:
                await step.run.arecord(step.failed(exc))
                raise
            finally:
                _leave(var, tokens)
            record, value, error = step.finish(result)
            await step.run.arecord(record)
            if error is not None:
                raise error
            return value

        return cast(F, async_wrapper)

    @functools.wraps(fn)
    def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
        frame = var.get()
        if frame is None:
            with instance.workflow(_implicit_id(identity, args, kwargs)):
                return sync_wrapper(*args, **kwargs)
        step = frame.run.begin(frame, identity, args, kwargs, codec)
        if step.replayed:
            return step.value
        tokens = _enter(var, step)
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:
            step.run.record(step.failed(exc))
            raise
        finally:
            _leave(var, tokens)
        record, value, error = step.finish(result)
        step.run.record(record)
        if error is not None:
            raise error
        return value

    return cast(F, sync_wrapper)
