"""Runs of workflows: which step is which, replay or execute, and recording.

A :class:`Run` exists while a workflow is entered. It holds the workflow's lease and
state, counts occurrences, and decides for every decorated call whether it replays
(its result is recorded) or executes. A :class:`Step` owns its outcome: it completes
with a result or fails with an exception, in a sync and an async form, so the
decorator's wrappers only call the function in between.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio

from ._context import Context
from ._errors import CorruptStateError, SerializationError, error_repr
from ._identity import ARGS_PREVIEW_LIMIT, CallIdentity, call_key
from ._logging import logger
from ._state import Record, State, apply, now_iso

if TYPE_CHECKING:
    from ._cancel import CancelWatch
    from ._serializer import Serializer
    from ._store import Lease, Store
    from ._typed import ResultCodec

__all__ = ["Cancelled", "Frame", "Run", "Step", "Suspended"]


class Suspended(BaseException):
    """A wait under a runner suspends its run: the run records it and releases the lock.

    A BaseException, so that the user's ``except Exception`` blocks let it through, as
    they do cancellation. Only a runner ever sees it; called directly, waits block.
    """

    def __init__(self, event: Record) -> None:
        super().__init__(f"suspended: {event}")
        self.event = event


class Cancelled(BaseException):
    """The workflow was cancelled (``duravoke cancel``): its run stops at its next step."""

    def __init__(self, workflow_id: str) -> None:
        super().__init__(
            f"workflow {workflow_id!r} was cancelled (`duravoke cancel`); it does not run"
            " again. Forget it to start it afresh."
        )
        self.workflow_id = workflow_id


def find_signal(exc: BaseException | None) -> BaseException | None:
    """The :class:`Suspended` or :class:`Cancelled` in ``exc`` (also inside a group)."""
    if isinstance(exc, (Suspended, Cancelled)):
        return exc
    # An exception group (a task group's): BaseExceptionGroup is no builtin on 3.10.
    inner_exceptions = getattr(exc, "exceptions", None)
    if isinstance(inner_exceptions, tuple):
        for inner in inner_exceptions:
            found = find_signal(inner)
            if found is not None:
                return found
    return None


class Frame:
    """Where a call happens: in which run, under which decorated callers."""

    __slots__ = ("path", "path_key", "run", "sid")

    def __init__(self, run: Run, path: tuple[str, ...], path_key: str, sid: str | None) -> None:
        self.run = run
        self.path = path
        self.path_key = path_key
        self.sid = sid


class Step:
    """One decorated call inside a run: replayed (``replayed`` true) or to execute."""

    __slots__ = (
        "args",
        "codec",
        "extra",
        "frame",
        "name",
        "occ",
        "parent",
        "replayed",
        "run",
        "sid",
        "started",
        "t0",
        "value",
    )

    def __init__(
        self, run: Run, parent: Frame, name: str, sid: str, occ: int, *, codec: ResultCodec
    ) -> None:
        self.run = run
        self.codec = codec
        self.frame = parent
        self.name = name
        self.sid = sid
        self.occ = occ
        self.parent = parent.sid
        self.replayed = False
        self.value: Any = None
        self.args: object = None
        self.started = ""
        self.t0 = 0.0
        #: Fields added to the step's records (waits record their deadline and message).
        self.extra: Record | None = None

    def body_frame(self) -> Frame:
        """The frame the step's own body runs in."""
        path = (*self.frame.path, self.name)
        return Frame(
            self.run, path, f"{self.frame.path_key}/{len(self.name)}:{self.name}", self.sid
        )

    def _record(self, status: str) -> Record:
        record: Record = {
            "sid": self.sid,
            "parent": self.parent,
            "path": list(self.frame.path),
            "fn": self.name,
            "occ": self.occ,
            "status": status,
            "started": self.started,
            "duration": round(time.perf_counter() - self.t0, 6),
        }
        if self.args is not None:
            record["args"] = self.args
        if self.extra:
            record.update(self.extra)
        return record

    def mark(self, status: str, **fields: Any) -> Record:
        """A record of this step with ``status`` (e.g. ``"sleeping"``) and extra fields."""
        record = self._record(status)
        record.update(fields)
        return record

    def body(self) -> _Body:
        """The step's body runs inside: its calls are nested under it."""
        return _Body(self)

    def fail(self, exc: BaseException) -> None:
        """Record that the body raised ``exc`` (it runs again next time); the caller re-raises."""
        self.run.record(self._failed(exc))

    async def afail(self, exc: BaseException) -> None:
        """:meth:`fail` for async code."""
        await self.run.arecord(self._failed(exc))

    def complete(self, result: object) -> Any:
        """Record ``result`` and return what a replay would return.

        Raises:
            SerializationError: the result cannot be recorded (recorded as a failure).
        """
        record, value, error = self._outcome(result)
        self.run.record(record)
        if error is not None:
            raise error
        return value

    async def acomplete(self, result: object) -> Any:
        """:meth:`complete` for async code."""
        record, value, error = self._outcome(result)
        await self.run.arecord(record)
        if error is not None:
            raise error
        return value

    def _failed(self, exc: BaseException) -> Record:
        record = self._record("failed")
        record["error"] = error_repr(exc)
        return record

    def _outcome(self, result: object) -> tuple[Record, Any, BaseException | None]:
        try:
            # The value a replay would return, so the first run and every later one agree.
            encoded, value = self.codec.record(result, self.run.serializer)
        except SerializationError as exc:
            error: BaseException = SerializationError(
                f"{self.name}(): {exc}",
                function=self.name,
                where=exc.where,
                type_name=exc.type_name,
            )
            if inspect.isawaitable(result):
                error = TypeError(
                    f"{self.name}() returned an awaitable: decorate the async function itself,"
                    " so that duravoke records what it returns once awaited."
                )
            return self._failed(error), None, error
        record = self._record("completed")
        record["result"] = encoded
        return record, value, None


class _Body:
    # A plain context manager: a generator-based one costs several microseconds a step.
    __slots__ = ("_entered", "_step")

    def __init__(self, step: Step) -> None:
        self._step = step

    def __enter__(self) -> None:
        self._entered = self._step.run.context.enter_step(self._step)

    def __exit__(self, *exc_info: object) -> None:
        self._step.run.context.exit_step(self._entered)


class Run:
    """A workflow while it is entered: its lease, its state and its occurrence counts."""

    def __init__(
        self,
        workflow_id: str,
        lease: Lease,
        state: State,
        *,
        serializer: Serializer,
        location: str,
        context: Context,
        entry: Callable[[], Record | None] | None = None,
        started: Record | None = None,
        cancel_watch: CancelWatch | None = None,
        store: Store | None = None,
        suspend_after: float | None = None,
    ) -> None:
        self.workflow_id = workflow_id
        #: The store, for the waits that read the inbox.
        self.store = store
        #: Under a runner: a wait longer than this (seconds) suspends the run.
        self.suspend_after = suspend_after
        #: The highest message sequence number taken per topic (see ``_waiting``).
        self.claimed: dict[str, int] = {}
        self.context = context
        self.lease = lease
        self.state = state
        self.serializer = serializer
        self.location = location
        self.steps: dict[str, Record] = state["steps"]
        self.children: dict[str | None, list[str]] = {}
        for sid, step in self.steps.items():
            self.children.setdefault(step.get("parent"), []).append(sid)
        self.counters: dict[str, int] = {}
        self.lock = threading.Lock()
        self.replayed = 0
        self.executed = 0
        self.failed = 0
        #: The outcome recorded before this run, to skip writing when nothing changes.
        self.before = _summary(state)
        event = {"event": "running", "at": now_iso(), "run": state["runs"] + 1}
        if started:
            event.update(started)
        if entry is not None and "entry" not in state:
            point = entry()
            if point is not None:
                event["entry"] = point
        self._cancel_watch = cancel_watch
        self._cancel_seen = False
        apply(state, event)
        self.pending: list[Record] = [event]
        self.root = Frame(self, (), "", None)
        logger.info(
            "workflow %r started (run %d, %d steps recorded)",
            workflow_id,
            state["runs"],
            len(self.steps),
        )

    def begin(
        self,
        frame: Frame,
        identity: CallIdentity,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        codec: ResultCodec,
        *,
        on_loop: bool = False,
    ) -> Step:
        """Identify a call and decide: replay it (``step.replayed``) or execute it.

        ``on_loop``: called on an event loop, which must not wait for the store: the
        look for a cancellation is then made by the caller (and by :meth:`arecord`) in
        a worker thread, with :meth:`poll_cancel`; here only its answer is read.

        Raises:
            SerializationError: the function's results could not be recorded (its
                return annotation), or its arguments cannot identify the call.
        """
        codec.prepare(self.serializer)
        encoded, args_json = identity.encode(args, kwargs)
        key = call_key(frame.path_key, identity.name, args_json)
        with self.lock:
            occ = self.counters.get(key, 0)
            self.counters[key] = occ + 1
            step = Step(self, frame, identity.name, f"{key}:{occ}", occ, codec=codec)
            recorded = self.steps.get(step.sid)
            if recorded is not None and recorded["status"] == "completed":
                self._skip_beneath(step.sid)
                self.replayed += 1
                step.replayed = True
        if step.replayed:
            step.value = self._decode(recorded, codec)  # type: ignore[arg-type]
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug(
                    "replayed %s (step %s) in workflow %r",
                    identity.name,
                    step.sid,
                    self.workflow_id,
                )
            return step
        if self._cancel_seen or (self.cancel_known() if on_loop else self._check_cancel()):
            raise Cancelled(self.workflow_id)
        if len(args_json) <= ARGS_PREVIEW_LIMIT:
            step.args = encoded
        step.started = now_iso()
        step.t0 = time.perf_counter()
        return step

    def cancel_poll_due(self) -> bool:
        """Whether to look for a cancellation now, with :meth:`poll_cancel` (async callers
        call it in a worker thread). Never waits; a yes must be followed by the look."""
        watch = self._cancel_watch
        return watch is not None and not self._cancel_seen and watch.due()

    def cancel_known(self) -> bool:
        """Whether a cancellation is known to be requested, without looking in the store."""
        if self._cancel_watch is not None and self._cancel_watch.asked(self.workflow_id):
            self._cancel_seen = True
        return self._cancel_seen

    def poll_cancel(self) -> bool:
        """Look for a cancellation request (``duravoke cancel``), after
        :meth:`cancel_poll_due` said so: for all of this process's runs on the store at
        once. It may wait for the store: never call it on an event loop."""
        if self._cancel_watch is not None:
            self._cancel_watch.look()
        return self.cancel_known()

    async def apoll_cancel(self) -> None:
        """Look for a cancellation request if it is time to, in a worker thread (the
        look may wait for the store); the next :meth:`begin` on the loop reads it."""
        if self.cancel_poll_due():
            await anyio.to_thread.run_sync(self.poll_cancel)

    def _check_cancel(self) -> bool:
        # Off any event loop: look if it is time to, then answer.
        if self.cancel_poll_due():
            return self.poll_cancel()
        return self.cancel_known()

    def _skip_beneath(self, sid: str) -> None:
        # The body of a replayed step is skipped, but an uninterrupted run would have
        # made the calls recorded beneath it: count their occurrences all the same.
        stack = list(self.children.get(sid, ()))
        while stack:
            child = stack.pop()
            key = child.rpartition(":")[0]
            self.counters[key] = self.counters.get(key, 0) + 1
            stack.extend(self.children.get(child, ()))

    def _decode(self, record: Record, codec: ResultCodec) -> Any:
        try:
            return codec.decode(record["result"], self.serializer)
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptStateError(
                f"the recorded result of {record.get('fn')}() in workflow {self.workflow_id!r}"
                f" ({self.location}) cannot be decoded: {exc!r}. Was it written with another"
                " serializer?",
                path=self.location,
            ) from exc

    def _stage(self, record: Record) -> list[Record]:
        with self.lock:
            if record["sid"] not in self.steps:
                self.children.setdefault(record["parent"], []).append(record["sid"])
            apply(self.state, record)
            batch, self.pending = [*self.pending, record], []
            if record["status"] == "completed":
                self.executed += 1
            elif record["status"] == "failed":
                self.failed += 1
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "executed %s (step %s, %s) in workflow %r",
                record["fn"],
                record["sid"],
                record["status"],
                self.workflow_id,
            )
        return batch

    def record(self, record: Record) -> None:
        """Append a step record durably (blocking)."""
        self.lease.append(self._stage(record))

    async def arecord(self, record: Record) -> None:
        """Append a step record durably without blocking the event loop."""
        # Queued here, on the event loop, in call order; every task that queued meanwhile
        # shares the write (group commit), waited for in one worker thread per batch.
        await self.lease.enqueue(self._stage(record)).wait_async()
        await self.apoll_cancel()

    def finish(self, exc: BaseException | None) -> None:
        """Record how the run ended and release the lock.

        A run that only replayed writes nothing, unless its outcome differs from the
        recorded one.
        """
        records, event = self._ending(exc)
        try:
            self.lease.release(records).wait()
        finally:
            self._unwatch()
        self._log_end(exc, event)

    async def afinish(self, exc: BaseException | None) -> None:
        """:meth:`finish` without blocking the event loop (nor, where the store can end
        a run in a group-commit batch, a thread hand-off of its own)."""
        records, event = self._ending(exc)
        try:
            await self.lease.release(records).wait_async()
        finally:
            self._unwatch()
        self._log_end(exc, event)

    def _ending(self, exc: BaseException | None) -> tuple[list[Record], Record]:
        """(the records to write, the ending event) of a run that ended with ``exc``."""
        signal = find_signal(exc)
        event: Record = {"event": _outcome(exc), "at": now_iso(), "run": self.state["runs"]}
        if isinstance(signal, Suspended):
            event.update(signal.event)
        elif isinstance(signal, Cancelled):
            event["event"] = "cancelled"
        elif exc is not None:
            event["error"] = error_repr(exc)
        wrote = not self.pending
        apply(self.state, event)
        if wrote or _summary(self.state) != self.before:
            return [*self.pending, event], event
        return [], event

    def _unwatch(self) -> None:
        if self._cancel_watch is not None:
            self._cancel_watch.unwatch(self.workflow_id)

    def _log_end(self, exc: BaseException | None, event: Record) -> None:
        signal = find_signal(exc)
        log = logger.info if exc is None or isinstance(signal, Suspended) else logger.warning
        log(
            "workflow %r %s%s: %d steps replayed, %d executed, %d failed",
            self.workflow_id,
            event["event"],
            f" ({event['error']})" if "error" in event else "",  # why, in the line people read
            self.replayed,
            self.executed,
            self.failed,
        )


def _summary(state: State) -> tuple[Any, ...]:
    return (
        state["status"],
        state["error"],
        state.get("wake"),
        state.get("topic"),
        state.get("after"),
        "entry" in state,
    )


def _outcome(exc: BaseException | None) -> str:
    # Ctrl-C, cancellation and SystemExit stop a run without it failing: it resumes.
    if exc is None:
        return "completed"
    return "failed" if isinstance(exc, Exception) else "interrupted"
