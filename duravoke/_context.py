"""The run context: which workflow and which step the running code belongs to.

Every ContextVar of duravoke lives here, and is set by token and reset with that token
(resetting to a fixed value would wipe an enclosing workflow). ContextVars follow tasks
started inside a workflow (asyncio and trio) and threads started with
``anyio.to_thread.run_sync`` or ``contextvars.copy_context()``.

- :class:`Context`: one per :class:`Duravoke` instance; it knows the frame (the run and
  the decorated callers) that calls of that instance's functions belong to.
- the active workflows: (store location, workflow id) of every workflow entered in this
  context, of any instance, to refuse nesting a workflow inside itself;
- the current step: the step whose body runs now, of any instance, for
  :func:`idempotency_key`.
"""

from __future__ import annotations

import threading
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from ._run import Frame, Step

__all__ = ["Context", "active_workflows", "current_step"]

T = TypeVar("T")

_active: ContextVar[tuple[tuple[str, str], ...]] = ContextVar("duravoke_active", default=())
_step: ContextVar[Step | None] = ContextVar("duravoke_step", default=None)


class Entered(Generic[T]):
    """What entering a frame returns: pass it back to leave exactly that frame."""

    __slots__ = ("_tokens",)

    def __init__(self, tokens: T) -> None:
        self._tokens = tokens


class Context:
    """The frames of one duravoke instance, kept in a ContextVar of its own."""

    def __init__(self, name: str) -> None:
        self._frame: ContextVar[Frame | None] = ContextVar(f"duravoke_{name}", default=None)
        self._running = 0  # runs entered in any thread or task of this process
        self._guard = threading.Lock()

    def running(self) -> bool:
        """Whether a workflow of this instance runs anywhere in this process now."""
        return self._running > 0

    def frame(self) -> Frame | None:
        """The frame calls of this instance's functions belong to now, if any."""
        return self._frame.get()

    def enter_workflow(
        self, root: Frame, key: tuple[str, str]
    ) -> Entered[tuple[Token[Frame | None], Token[tuple[tuple[str, str], ...]]]]:
        """Make ``root`` (a run's top frame) current and mark workflow ``key`` active."""
        with self._guard:
            self._running += 1
        return Entered((self._frame.set(root), _active.set((*_active.get(), key))))

    def exit_workflow(
        self, entered: Entered[tuple[Token[Frame | None], Token[tuple[tuple[str, str], ...]]]]
    ) -> None:
        """Undo :meth:`enter_workflow`."""
        frame_token, active_token = entered._tokens
        self._frame.reset(frame_token)
        _active.reset(active_token)
        with self._guard:
            self._running -= 1

    def enter_step(self, step: Step) -> Entered[tuple[Token[Frame | None], Token[Step | None]]]:
        """Run ``step``'s body from here on: its frame and the current step."""
        return Entered((self._frame.set(step.body_frame()), _step.set(step)))

    def exit_step(self, entered: Entered[tuple[Token[Frame | None], Token[Step | None]]]) -> None:
        """Undo :meth:`enter_step`."""
        frame_token, step_token = entered._tokens
        _step.reset(step_token)
        self._frame.reset(frame_token)


def active_workflows() -> tuple[tuple[str, str], ...]:
    """(store location, workflow id) of the workflows entered in this context, outermost first."""
    return _active.get()


def current_step() -> Step | None:
    """The step whose body runs now, of any instance, or None."""
    return _step.get()
