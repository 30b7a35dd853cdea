"""Runs of workflows: which step is which, replay or execute, and recording.

A :class:`Run` exists while a workflow is entered. It holds the workflow's lease and
state, counts occurrences, and decides for every decorated call whether it replays
(its result is recorded) or executes. The decision is plain code shared by the sync
and async wrappers; only the I/O differs between them.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from contextvars import ContextVar, Token
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio

from ._errors import CorruptStateError, OutsideStepError, SerializationError, WorkflowError
from ._identity import ARGS_PREVIEW_LIMIT, CallIdentity, call_key, idempotency_key_for
from ._state import Record, State, apply, now_iso

if TYPE_CHECKING:
    from ._duravoke import Duravoke
    from ._serializer import Serializer
    from ._store import Lease
    from ._typed import ResultCodec

__all__ = ["Frame", "Run", "Step", "Workflow", "idempotency_key"]

logger = logging.getLogger("duravoke")
logger.addHandler(logging.NullHandler())

#: (store location, workflow id) of every workflow entered in this context, to refuse
#: nesting one inside itself, which would wait for its own lock forever.
_active: ContextVar[tuple[tuple[str, str], ...]] = ContextVar("duravoke_active", default=())
#: The step whose body is running, for idempotency_key(); any instance's.
_current_step: ContextVar[Step | None] = ContextVar("duravoke_step", default=None)


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
        return record

    def failed(self, exc: BaseException) -> Record:
        """The record of a call that raised: it will run again next time."""
        record = self._record("failed")
        record["error"] = repr(exc)[:1000]
        return record

    def finish(self, result: object) -> tuple[Record, Any, BaseException | None]:
        """Encode ``result``: (record, value to return, error to raise instead)."""
        try:
            # The value a replay would return, so the first run and every later one agree.
            encoded, value = self.codec.record(result)
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
            return self.failed(error), None, error
        record = self._record("completed")
        record["result"] = encoded
        return record, value, None


class Run:
    """A workflow while it is entered: its lease, its state and its occurrence counts."""

    def __init__(
        self, workflow_id: str, lease: Lease, state: State, serializer: Serializer, location: str
    ) -> None:
        self.workflow_id = workflow_id
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
        self.before = (state["status"], state["error"])
        event = {"event": "running", "at": now_iso(), "run": state["runs"] + 1}
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
    ) -> Step:
        """Identify a call and decide: replay it (``step.replayed``) or execute it.

        Raises:
            SerializationError: the function's results could not be recorded (its
                return annotation), or its arguments cannot identify the call.
        """
        codec.prepare()
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
        if len(args_json) <= ARGS_PREVIEW_LIMIT:
            step.args = encoded
        step.started = now_iso()
        step.t0 = time.perf_counter()
        return step

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
            return codec.decode(record["result"])
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
            else:
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
        # Queued here, on the event loop, in call order; written in a worker thread, where
        # one write and one fsync serve every task that queued meanwhile (group commit).
        durable = self.lease.enqueue(self._stage(record))
        if self.lease.blocking:
            await anyio.to_thread.run_sync(durable)
        else:
            durable()

    def finish(self, exc: BaseException | None) -> None:
        """Record how the run ended and release the lock.

        A run that recorded steps is compacted: its journal is folded into the state
        file. A run that only replayed writes nothing, unless its outcome differs from
        the recorded one; then it appends just that to the journal.
        """
        event: Record = {
            "event": "completed" if exc is None else "failed",
            "at": now_iso(),
            "run": self.state["runs"],
        }
        if exc is not None:
            event["error"] = repr(exc)[:1000]
        wrote = not self.pending
        apply(self.state, event)
        if wrote:
            self.lease.close(self.state)
        elif (event["event"], event.get("error")) == self.before:
            self.lease.close(None)
        else:
            try:
                self.lease.append([*self.pending, event])
            finally:
                self.lease.close(None)
        log = logger.info if exc is None else logger.warning
        log(
            "workflow %r %s: %d steps replayed, %d executed, %d failed",
            self.workflow_id,
            event["event"],
            self.replayed,
            self.executed,
            self.failed,
        )


class Workflow:
    """The context manager that :func:`duravoke.workflow` returns; see there."""

    def __init__(self, instance: Duravoke, workflow_id: str, timeout: float | None) -> None:
        if not isinstance(workflow_id, str):
            raise TypeError(f"workflow id must be a str, not {type(workflow_id).__name__}")
        self.workflow_id = workflow_id
        self.timeout = timeout
        self._instance = instance
        self._run: Run | None = None
        self._tokens: tuple[Token[Frame | None], Token[tuple[tuple[str, str], ...]]] | None = None
        self._used = False

    def _check(self) -> tuple[str, str]:
        if self._used:
            raise WorkflowError(
                f"this workflow({self.workflow_id!r}) object was already entered; call"
                " workflow(id) again for each `with` block."
            )
        self._used = True
        key = (self._instance.store.location, self.workflow_id)
        if key in _active.get():
            raise WorkflowError(
                f"workflow {self.workflow_id!r} is already running here: entering it again"
                " inside itself would wait for its own lock forever. Give the inner block its"
                " own id, or drop it (its calls then belong to the outer workflow)."
            )
        return key

    def _open(self, lease: Lease) -> Run:
        try:
            state = lease.load()
            return Run(
                self.workflow_id,
                lease,
                state,
                self._instance.serializer,
                self._instance.store.location,
            )
        except BaseException:
            lease.close(None)
            raise

    def _enter(self, run: Run, key: tuple[str, str]) -> None:
        self._run = run
        self._tokens = (self._instance._frame.set(run.root), _active.set((*_active.get(), key)))

    def _exit(self) -> Run:
        assert self._run is not None
        assert self._tokens is not None
        frame_token, active_token = self._tokens
        self._instance._frame.reset(frame_token)
        _active.reset(active_token)
        return self._run

    def __enter__(self) -> Workflow:
        key = self._check()
        self._enter(self._open(self._instance.store.lock(self.workflow_id, self.timeout)), key)
        return self

    def __exit__(
        self, et: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._exit().finish(exc)

    async def __aenter__(self) -> Workflow:
        key = self._check()
        lease = await self._instance.store.alock(self.workflow_id, self.timeout)
        self._enter(await anyio.to_thread.run_sync(self._open, lease), key)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        run = self._exit()
        # Even when cancelled, the run must be closed and its lock released.
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(run.finish, exc)


def active_workflows() -> tuple[tuple[str, str], ...]:
    """(store location, workflow id) of the workflows entered in this context, outermost first."""
    return _active.get()


def idempotency_key() -> str:
    """A string unique to the running step, the same on every re-run of that step.

    Pass it to APIs that accept an idempotency key (payments, e-mail) so that a step
    re-run after a crash between the API call and the record causes no second effect.

    Raises:
        OutsideStepError: called outside the body of a decorated function.
    """
    step = _current_step.get()
    if step is None:
        raise OutsideStepError(
            "idempotency_key() was called outside a durable step: call it inside a function"
            " decorated with @duravoke.duravoke."
        )
    return idempotency_key_for(step.run.workflow_id, step.sid)


def set_current_step(step: Step | None) -> Token[Step | None]:
    """Mark ``step`` as the one whose body runs now (reset with the returned token)."""
    return _current_step.set(step)


def reset_current_step(token: Token[Step | None]) -> None:
    """Undo :func:`set_current_step`."""
    _current_step.reset(token)
