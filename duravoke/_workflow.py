"""``workflow(id)``: the context manager that names a run and holds its lock."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio

from ._cancel import CancelWatch, watch_of
from ._context import Context, Entered, active_workflows, current_step
from ._errors import OutsideStepError, WorkflowCancelledError, WorkflowError
from ._groupcommit import GroupCommit, Waitable, copy_failure
from ._identity import check_workflow_id, idempotency_key_for
from ._run import Cancelled, Run, find_signal
from ._state import Record, State
from ._store import PerStore, waits

if TYPE_CHECKING:
    from ._serializer import Serializer
    from ._store import Lease, Store

__all__ = ["Workflow", "idempotency_key"]


class Workflow:
    """The context manager that :func:`duravoke.workflow` returns; see there.

    Args:
        store: where the workflow's state lives.
        serializer: how results are recorded.
        context: the run context of the instance whose functions record into this run.
        workflow_id: the workflow's id.
        timeout: how long to wait for the lock, in seconds (None: forever).
        entry: builds the entry point to record, if the workflow has none yet (a
            decorated call that opens its own workflow; see ``_registry``).
        started: fields added to the run's ``running`` event (a runner's retry policy).
        admit: called with the loaded state under the lock; raises to refuse the run
            (a runner checks that the workflow is still due).
        suspend_after: under a runner, a wait longer than this many seconds suspends the
            run instead of blocking.
    """

    def __init__(
        self,
        store: Store,
        serializer: Serializer,
        context: Context,
        workflow_id: str,
        timeout: float | None,
        *,
        entry: Callable[[], Record | None] | None = None,
        started: Record | None = None,
        admit: Callable[[State], None] | None = None,
        suspend_after: float | None = None,
    ) -> None:
        self._suspend_after = suspend_after
        self.workflow_id = check_workflow_id(workflow_id)
        self._entry = entry
        self._started = started
        self._admit = admit
        self.timeout = timeout
        self._store = store
        self._serializer = serializer
        self._context = context
        self._run: Run | None = None
        self._entered: Entered[Any] | None = None
        self._used = False

    def _check(self) -> tuple[str, str]:
        if self._used:
            raise WorkflowError(
                f"this workflow({self.workflow_id!r}) object was already entered; call"
                " workflow(id) again for each `with` block."
            )
        self._used = True
        key = (self._store.location, self.workflow_id)
        if key in active_workflows():
            raise WorkflowError(
                f"workflow {self.workflow_id!r} is already running here: entering it again"
                " inside itself would wait for its own lock forever. Give the inner block its"
                " own id, or drop it (its calls then belong to the outer workflow)."
            )
        return key

    def _start(self, lease: Lease, state: State, watch: CancelWatch) -> Run:
        """The run of this workflow, whose lock is taken and state loaded."""
        if self._admit is not None:
            self._admit(state)
        if state["status"] == "cancelled":
            raise _cancelled(self.workflow_id)
        return Run(
            self.workflow_id,
            lease,
            state,
            serializer=self._serializer,
            location=self._store.location,
            context=self._context,
            entry=self._entry,
            started=self._started,
            cancel_watch=watch,
            store=self._store,
            suspend_after=self._suspend_after,
        )

    def _try_open(self) -> Run | None:
        opening = _Opening(self)
        _open_all([opening])
        return opening.result()

    def _enter(self, run: Run, key: tuple[str, str]) -> None:
        self._run = run
        self._entered = self._context.enter_workflow(run.root, key)

    def _exit(self) -> Run:
        assert self._run is not None
        assert self._entered is not None
        self._context.exit_workflow(self._entered)
        return self._run

    def __enter__(self) -> Workflow:
        key = self._check()
        for delay in waits(self.workflow_id, self.timeout):
            run = self._try_open()
            if run is not None:
                self._enter(run, key)
                return self
            time.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def __exit__(
        self, et: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._exit().finish(exc)
        _raise_if_cancelled(exc)

    async def __aenter__(self) -> Workflow:
        key = self._check()
        for delay in waits(self.workflow_id, self.timeout):
            # The store's opener thread opens it with every workflow that starts now
            # (the lock attempts, loads and looks for a cancellation may wait on a disk
            # or a network). Not interrupted by cancellation, and no checkpoint stands
            # between it and entering, so a lock it took is always either entered (and
            # released by __aexit__) or released by _open_all.
            opening = _Opening(self)
            with anyio.CancelScope(shield=True):
                await _openers(self._store).ticket(opening).wait_async()
            run = opening.result()
            if run is not None:
                self._enter(run, key)
                return self
            await anyio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    async def __aexit__(
        self, et: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        run = self._exit()
        # Even when cancelled, the run must be closed and its lock released.
        with anyio.CancelScope(shield=True):
            await run.afinish(exc)
        _raise_if_cancelled(exc)


class _Opening:
    """A workflow to open, and what opening it gave: a run, nothing (its lock is held
    elsewhere) or an error."""

    __slots__ = ("error", "run", "workflow")

    def __init__(self, workflow: Workflow) -> None:
        self.workflow = workflow
        self.run: Run | None = None
        self.error: Exception | None = None

    def result(self) -> Run | None:
        """The run, or None if the workflow is busy; raises what opening it raised."""
        if self.error is not None:
            raise self.error
        return self.run


def _open_all(batch: list[_Opening]) -> None:
    """Open the workflows of ``batch``, all on one store: where the store can, one lock
    attempt, one load and one look for cancellations serve them all. A lock taken for a
    workflow that gets no run is released before this returns or raises."""
    store = batch[0].workflow._store
    leases = store.try_lock_many([opening.workflow.workflow_id for opening in batch])
    taken = [(o, lease) for o, lease in zip(batch, leases, strict=True) if lease is not None]
    complete = False
    try:
        _start_all(store, taken)
        complete = True
    finally:
        for opening, lease in taken:
            if opening.run is None or not complete:
                opening.run = None
                # The error that brought us here is the one to report; a lock that
                # cannot be released went with its session or process.
                with contextlib.suppress(Exception):
                    lease.close()


def _start_all(store: Store, taken: list[tuple[_Opening, Lease]]) -> None:
    states = store.load_many([lease for _, lease in taken])
    watch = watch_of(store)
    asked = watch.first_look([opening.workflow.workflow_id for opening, _ in taken])
    started: list[tuple[_Opening, Waitable]] = []
    for (opening, lease), state in zip(taken, states, strict=True):
        if isinstance(state, Exception):
            opening.error = state
            continue
        try:
            run = opening.run = opening.workflow._start(lease, state, watch)
        except Exception as exc:
            opening.error = exc
            continue
        if opening.workflow._started is not None:
            # A runner's attempt counts when it starts: a run that kills its process
            # before recording anything must still use up an attempt.
            started.append((opening, lease.enqueue(run.pending)))
            run.pending = []
    for opening, written in started:
        try:
            written.wait()
        except Exception as exc:
            opening.run, opening.error = None, exc
    for (opening, _), cancel in zip(taken, asked, strict=True):
        if opening.run is not None:
            watch.watch(opening.workflow.workflow_id, cancel)  # from here on, finish() unwatches


#: Per store, the thread that opens the workflows async code enters: those entered at
#: the same moment are opened together, and each event loop is woken once per batch.
_openers: PerStore[GroupCommit[_Opening]] = PerStore(
    lambda store: GroupCommit(_open_all, copy_failure, sticky=False, name="duravoke-opener")
)


def _cancelled(workflow_id: str) -> WorkflowCancelledError:
    return WorkflowCancelledError(
        f"workflow {workflow_id!r} was cancelled (`duravoke cancel`): it does not run again."
        " Forget it (`duravoke forget`) to start it afresh.",
        workflow_id=workflow_id,
    )


def _raise_if_cancelled(exc: BaseException | None) -> None:
    # Inside the run, cancellation is a BaseException, so that the user's `except
    # Exception` cannot swallow it; the caller of the workflow gets an ordinary error.
    if isinstance(find_signal(exc), Cancelled):
        assert exc is not None
        raise _cancelled(getattr(find_signal(exc), "workflow_id", "?")) from exc


def idempotency_key() -> str:
    """A string unique to the running step, the same on every re-run of that step.

    Pass it to APIs that accept an idempotency key (payments, e-mail) so that a step
    re-run after a crash between the API call and the record causes no second effect.

    Raises:
        OutsideStepError: called outside the body of a decorated function.
    """
    step = current_step()
    if step is None:
        raise OutsideStepError(
            "idempotency_key() was called outside a durable step: call it inside a function"
            " decorated with @duravoke.duravoke."
        )
    return idempotency_key_for(step.run.workflow_id, step.sid)
