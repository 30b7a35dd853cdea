"""Runs that finish by themselves: ``start``, one ``resume`` pass, and the :class:`Runner`.

The store knows which workflows are unfinished; a runner asks it which are due
(:meth:`Store.due`), takes each one's lock without waiting (a workflow another runner
holds is skipped), and calls its entry point: the registered function with its
recorded arguments (see ``_registry``). Each run is one attempt, counted when it
starts, so a run that kills its process is capped like a run that raises.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, ParamSpec, TypeVar

import anyio
import anyio.to_thread

from ._cancel import CANCEL_TOPIC
from ._errors import (
    WorkflowBusyError,
    WorkflowCancelledError,
    WorkflowError,
    WorkflowNotFoundError,
    error_repr,
)
from ._identity import implicit_workflow_id
from ._info import forget_many, resolve_store, short_repr
from ._logging import logger
from ._registry import Registered, decode_arguments, encode_entry, lookup
from ._run import Cancelled, Suspended, find_signal
from ._state import DEFAULT_POLICY, State, apply, decide, now_iso
from ._store import Store
from ._workflow import Workflow

__all__ = [
    "Outcome",
    "Report",
    "Runner",
    "cancel",
    "resume",
    "resume_async",
    "retry",
    "start",
    "start_as",
    "start_as_async",
    "start_async",
]

P = ParamSpec("P")
R = TypeVar("R")

#: Defaults of every runner; see :class:`Runner`.
DEFAULT_CONCURRENCY = 8
DEFAULT_SUSPEND_AFTER = 1.0
DEFAULT_POLL_INTERVAL = 0.5


# --- start ----------------------------------------------------------------------------


def _registered(fn: Callable[..., Any]) -> tuple[Registered, Any]:
    identity = getattr(fn, "_duravoke_identity", None)
    if identity is None:
        raise TypeError(f"start() takes a function decorated with @duravoke.duravoke, not {fn!r}")
    found = lookup(identity.name)
    if found is None or found.function is not fn:
        raise ValueError(
            f"{identity.name}() cannot be started: only functions decorated at the top level"
            " of a module can be resumed by a runner (this one is defined inside another"
            " function, or another function took its name since). Move it to module level."
        )
    return found, identity


def _pending(store: Store, workflow_id: str, entry: dict[str, Any]) -> None:
    lease = store.try_lock(workflow_id)
    if lease is None:
        return  # it is running, so it exists: starting it again is nothing
    state: State | None = None
    try:
        state = lease.load()
        if state["status"] != "new":
            state = None  # started or run before: one workflow, one run
            return
        event = {"event": "pending", "at": now_iso(), "run": 0, "entry": entry}
        lease.append([event])
        apply(state, event)
    finally:
        lease.close()


def start_as(workflow_id: str, fn: Callable[P, Any], /, *args: P.args, **kwargs: P.kwargs) -> str:
    """Record a call as a pending workflow named ``workflow_id``, without running it.

    Like :func:`start`, with an id of your choosing (an order number, a user id...). A
    runner runs it as ``with workflow(workflow_id): fn(*args, **kwargs)``. Starting an
    id that already exists changes nothing.

    Returns:
        ``workflow_id``.
    """
    registered, identity = _registered(fn)
    identity.encode(args, kwargs)  # refuse arguments that cannot identify the call
    entry = encode_entry(identity.name, registered.function.__wrapped__, args, kwargs)  # type: ignore[attr-defined]
    _pending(registered.instance.store, workflow_id, entry)
    return workflow_id


def start(fn: Callable[P, Any], /, *args: P.args, **kwargs: P.kwargs) -> str:
    """Record the call ``fn(*args, **kwargs)`` as a pending workflow; do not run it.

    It is durable when this returns; a runner (:func:`resume`, :class:`Runner`,
    ``duravoke resume``) runs it. Its id is the one calling ``fn(*args, **kwargs)``
    directly would use, so starting the same call twice (or calling it) is one
    workflow and one run. The workflow lives in the store of the instance that
    decorated ``fn``.

    Args:
        fn: a function decorated at module level (a runner finds it by name).
        args: its positional arguments, as JSON or types the serializer knows.
        kwargs: its keyword arguments.

    Returns:
        The workflow id.

    Raises:
        TypeError: ``fn`` is not decorated.
        ValueError: ``fn`` is defined inside a function (no runner could find it).
        SerializationError: an argument cannot be recorded.
    """
    registered, identity = _registered(fn)
    workflow_id = implicit_workflow_id(identity.name, identity.encode(args, kwargs)[1])
    entry = encode_entry(identity.name, registered.function.__wrapped__, args, kwargs)  # type: ignore[attr-defined]
    _pending(registered.instance.store, workflow_id, entry)
    return workflow_id


async def start_async(fn: Callable[P, Any], /, *args: P.args, **kwargs: P.kwargs) -> str:
    """:func:`start` without blocking the event loop."""
    return await anyio.to_thread.run_sync(lambda: start(fn, *args, **kwargs))


async def start_as_async(
    workflow_id: str, fn: Callable[P, Any], /, *args: P.args, **kwargs: P.kwargs
) -> str:
    """:func:`start_as` without blocking the event loop."""
    return await anyio.to_thread.run_sync(lambda: start_as(workflow_id, fn, *args, **kwargs))


# --- reports --------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """How one due workflow fared in a runner pass.

    Attributes:
        workflow_id: the workflow.
        status: ``"completed"``, ``"failed"`` (it raised, or gave up after its runs kept
            stopping without an outcome), ``"sleeping"``/``"waiting"`` (suspended in a
            wait), ``"cancelled"``, or ``"skipped"`` (not run; see ``detail``).
        detail: the error, the wake time, or why it was skipped.
    """

    workflow_id: str
    status: str
    detail: str | None = None


@dataclass
class Report:
    """What a runner pass did.

    Attributes:
        outcomes: one per due workflow, in the order they ended.
    """

    outcomes: list[Outcome] = field(default_factory=list)

    def _with(self, *statuses: str) -> list[Outcome]:
        return [o for o in self.outcomes if o.status in statuses]

    @property
    def ran(self) -> list[Outcome]:
        """The workflows that ran (whatever their outcome)."""
        return [o for o in self.outcomes if o.status != "skipped"]

    @property
    def completed(self) -> list[Outcome]:
        """The workflows that completed."""
        return self._with("completed")

    @property
    def failed(self) -> list[Outcome]:
        """The workflows that failed (retried later while attempts are left)."""
        return self._with("failed")

    @property
    def suspended(self) -> list[Outcome]:
        """The workflows that went back to sleep or to waiting."""
        return self._with("sleeping", "waiting")

    @property
    def skipped(self) -> list[Outcome]:
        """The due workflows not run: held by another runner, or no entry point here."""
        return self._with("skipped")

    @property
    def exit_code(self) -> int:
        """0 when everything due completed, was suspended, cancelled or held by another
        runner; 1 when some failed or could not be run here."""
        bad = self.failed + [o for o in self.skipped if o.detail != _HELD]
        return 1 if bad else 0

    def to_json(self) -> dict[str, Any]:
        """The report as JSON data (``duravoke resume --json``)."""
        return {
            "exit_code": self.exit_code,
            "counts": {
                status: sum(o.status == status for o in self.outcomes)
                for status in ("completed", "failed", "sleeping", "waiting", "cancelled", "skipped")
            },
            "outcomes": [
                {"id": o.workflow_id, "status": o.status, "detail": o.detail} for o in self.outcomes
            ],
        }

    def summary(self) -> str:
        """One line: how many of each."""
        counts = self.to_json()["counts"]
        return ", ".join(f"{n} {status}" for status, n in counts.items() if n) or "nothing due"


_HELD = "held by another runner"


class _NotDue(Exception):  # noqa: N818 - private signal
    """Under the lock, the workflow turned out not to be due (another runner ran it)."""


# --- one workflow ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Options:
    concurrency: int
    max_attempts: int
    backoff: float
    max_backoff: float
    suspend_after: float

    def policy(self) -> list[float]:
        return [self.max_attempts, self.backoff, self.max_backoff]


def _has_message(store: Store, state: State, workflow_id: str) -> bool:
    return store._has_message(state, workflow_id)


def _missing(entry: dict[str, Any]) -> str:
    name, module = entry.get("name"), entry.get("module")
    if module == "__main__":
        return (
            f"entry point {name!r} was defined in a script run as __main__, which no other"
            " process can import: move the function into a module (or give it name= and"
            " import the script as a module) and pass that module to --import"
        )
    return (
        f"entry point {name!r} is not registered in this process: import its module"
        f" ({module}) with --import, or, if it was removed or renamed, restore it or"
        " forget the workflow"
    )


def _give_up(store: Store, workflow_id: str, now: datetime) -> Outcome | None:
    lease = store.try_lock(workflow_id)
    if lease is None:
        return Outcome(workflow_id, "skipped", _HELD)
    state: State | None = None
    try:
        state = lease.load()
        if decide(state, now, False) != "give_up":
            state = None
            return None
        attempts = state.get("attempts", 0)
        event = {
            "event": "failed",
            "at": now_iso(),
            "run": state["runs"],
            "error": f"gave up after {attempts} attempts that stopped without an outcome (the"
            " process was killed or died each time); `duravoke retry ID` makes it due again",
        }
        lease.append([event])
        apply(state, event)
        return Outcome(workflow_id, "failed", event["error"])
    finally:
        lease.close()


def _call_sync(workflow: Workflow, fn: Callable[..., Any], args: list[Any], kwargs: Any) -> None:
    with workflow:
        fn(*args, **kwargs)


async def _run_one(store: Store, workflow_id: str, options: _Options) -> Outcome | None:
    """Run one due workflow; None when it turned out not to be due."""
    now = datetime.now(timezone.utc)
    state = await anyio.to_thread.run_sync(store.read, workflow_id)
    if state is None:
        return None
    has_message = await anyio.to_thread.run_sync(_has_message, store, state, workflow_id)
    action = decide(state, now, has_message)
    if action is None:
        return None
    if action == "give_up":
        return await anyio.to_thread.run_sync(_give_up, store, workflow_id, now)
    entry = state["entry"]
    registered = lookup(str(entry.get("name")))
    if registered is None:
        return Outcome(workflow_id, "skipped", _missing(entry))
    try:
        args, kwargs = decode_arguments(entry)
    except (ValueError, TypeError) as exc:
        return Outcome(workflow_id, "skipped", f"its recorded arguments cannot be decoded: {exc}")

    def admit(loaded: State) -> None:
        # Read again under the lock: another runner may have run it meanwhile.
        if not decide(loaded, now, _has_message(store, loaded, workflow_id)):
            raise _NotDue

    instance = registered.instance
    workflow = Workflow(
        store,
        instance.serializer,
        instance.context,
        workflow_id,
        0,
        started={"policy": options.policy()},
        admit=admit,
        suspend_after=options.suspend_after,
    )
    try:
        if registered.is_async:
            async with workflow:
                await registered.function(*args, **kwargs)
        else:
            await anyio.to_thread.run_sync(_call_sync, workflow, registered.function, args, kwargs)
    except WorkflowBusyError:
        return Outcome(workflow_id, "skipped", _HELD)
    except _NotDue:
        return None
    except WorkflowCancelledError:
        return Outcome(workflow_id, "cancelled")
    except Exception as exc:
        signal = find_signal(exc)
        if signal is None:
            logger.warning("workflow %r failed: %r", workflow_id, exc)
            return Outcome(workflow_id, "failed", error_repr(exc))
        return _signalled(workflow_id, signal)
    except BaseException as exc:
        signal = find_signal(exc)
        if signal is None:
            raise
        return _signalled(workflow_id, signal)
    return Outcome(workflow_id, "completed")


def _signalled(workflow_id: str, signal: BaseException) -> Outcome:
    if isinstance(signal, Suspended):
        event = signal.event
        until = event.get("until") or "a message"
        topic = f" for {event['topic']!r}" if event.get("topic") else ""
        return Outcome(workflow_id, str(event["event"]), f"{topic} until {until}".strip())
    assert isinstance(signal, Cancelled)
    return Outcome(workflow_id, "cancelled")


# --- passes ---------------------------------------------------------------------------


def _options(
    concurrency: int,
    max_attempts: int,
    backoff: float,
    max_backoff: float,
    suspend_after: float,
) -> _Options:
    if not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError(f"concurrency must be an int >= 1, not {concurrency!r}")
    if not isinstance(max_attempts, int) or max_attempts < 1:
        raise ValueError(f"max_attempts must be an int >= 1, not {max_attempts!r}")
    for name, value in (
        ("backoff", backoff),
        ("max_backoff", max_backoff),
        ("suspend_after", suspend_after),
    ):
        if not isinstance(value, (int, float)) or math.isnan(value) or value < 0:
            raise ValueError(f"{name} must be a number of seconds >= 0, not {value!r}")
    return _Options(
        concurrency, max_attempts, float(backoff), float(max_backoff), float(suspend_after)
    )


async def _pass(
    store: Store,
    options: _Options,
    limiter: anyio.CapacityLimiter,
    exclude: Iterable[str] = (),
) -> Report:
    report = Report()
    now = datetime.now(timezone.utc)
    excluded = set(exclude)
    due = [w for w in await anyio.to_thread.run_sync(store.due, now) if w not in excluded]

    async def one(workflow_id: str) -> None:
        async with limiter:
            outcome = await _run_one(store, workflow_id, options)
        if outcome is not None:
            report.outcomes.append(outcome)

    async with anyio.create_task_group() as tg:
        for workflow_id in due:
            tg.start_soon(one, workflow_id)
    return report


async def resume_async(
    store: Store | str | None = None,
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    max_attempts: int = DEFAULT_POLICY[0],
    backoff: float = DEFAULT_POLICY[1],
    max_backoff: float = DEFAULT_POLICY[2],
    suspend_after: float = DEFAULT_SUSPEND_AFTER,
) -> Report:
    """One runner pass over ``store``: run everything due, return a :class:`Report`.

    Args:
        store: a store, a string for :func:`duravoke.open_store`, or None for the
            default instance's store.
        concurrency: how many workflows run at once (async ones as tasks, sync ones in
            worker threads).
        max_attempts: runs a workflow gets before it stays failed; a run that raises
            and a run that stops without an outcome (its process killed) count alike.
        backoff: seconds before the second retry; each later one waits twice as long.
            The first retry is immediate.
        max_backoff: the longest wait between retries, in seconds.
        suspend_after: a ``sleep`` or ``receive`` longer than this many seconds
            suspends its workflow (lock released, nothing held) instead of blocking.

    Workflows another runner holds are skipped; so are those whose entry point is not
    registered in this process (the report says why; they are left as they are).
    """
    options = _options(concurrency, max_attempts, backoff, max_backoff, suspend_after)
    target = resolve_store(store)
    return await _pass(target, options, anyio.CapacityLimiter(options.concurrency))


def resume(
    store: Store | str | None = None,
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    max_attempts: int = DEFAULT_POLICY[0],
    backoff: float = DEFAULT_POLICY[1],
    max_backoff: float = DEFAULT_POLICY[2],
    suspend_after: float = DEFAULT_SUSPEND_AFTER,
) -> Report:
    """:func:`resume_async` for sync code (runs its own event loop; not inside one)."""
    return anyio.run(
        lambda: resume_async(
            store,
            concurrency=concurrency,
            max_attempts=max_attempts,
            backoff=backoff,
            max_backoff=max_backoff,
            suspend_after=suspend_after,
        )
    )


class Runner:
    """A long-lived runner: passes over the store until stopped.

    It looks for due workflows every ``poll_interval`` seconds, so new :func:`start`
    calls, interrupted runs, waking sleeps and arrived messages are picked up within
    about a second, while the workflows it runs keep running. Three ways to run it:

    - in an async app (asyncio or trio), e.g. a FastAPI lifespan::

          async with duravoke.Runner():
              yield

    - in the foreground: ``await runner.run_async()`` or ``runner.run()`` (blocking);
    - in a thread for a sync app: ``runner.start_thread()``, later ``runner.stop()``.

    :meth:`stop` (thread-safe) ends it: no new pass starts; async workflows in flight
    are cancelled (recorded as interrupted, resumed by the next runner), sync ones in
    worker threads finish their run first.

    Args:
        store: as for :func:`resume`.
        concurrency, max_attempts, backoff, max_backoff, suspend_after: as for
            :func:`resume`.
        poll_interval: seconds between looks for due workflows.
        forget_after: if given, the runner also forgets workflows whose status is in
            ``forget_statuses`` and that were last updated longer ago than this
            (retention), checked about once a minute.
        forget_statuses: which statuses retention removes; default completed ones.
    """

    def __init__(
        self,
        store: Store | str | None = None,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        max_attempts: int = DEFAULT_POLICY[0],
        backoff: float = DEFAULT_POLICY[1],
        max_backoff: float = DEFAULT_POLICY[2],
        suspend_after: float = DEFAULT_SUSPEND_AFTER,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        forget_after: timedelta | None = None,
        forget_statuses: Iterable[str] = ("completed",),
    ) -> None:
        self._options = _options(concurrency, max_attempts, backoff, max_backoff, suspend_after)
        if not isinstance(poll_interval, (int, float)) or not poll_interval > 0:
            raise ValueError(
                f"poll_interval must be a number of seconds > 0, not {poll_interval!r}"
            )
        self._store_spec = store
        self.poll_interval = float(poll_interval)
        self.forget_after = forget_after
        self.forget_statuses = tuple(forget_statuses)
        #: Every outcome so far, across passes.
        self.report = Report()
        self._stopping = threading.Event()
        self._inflight: set[str] = set()
        self._scope: anyio.CancelScope | None = None
        self._thread: threading.Thread | None = None
        self._last_retention = 0.0

    def stop(self) -> None:
        """Ask the runner to stop; returns at once (thread-safe)."""
        self._stopping.set()

    async def __aenter__(self) -> Runner:
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self.run_async)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop()
        await self._tg.__aexit__(None, None, None)

    def run(self) -> None:
        """Run in the foreground until :meth:`stop` (blocking; its own event loop)."""
        anyio.run(self.run_async)

    def start_thread(self) -> threading.Thread:
        """Run in a daemon thread of its own; :meth:`stop` ends it, ``join()`` waits."""
        self._thread = threading.Thread(target=self.run, name="duravoke-runner", daemon=True)
        self._thread.start()
        return self._thread

    async def run_async(self) -> None:
        """Run until :meth:`stop`, in the current event loop."""
        store = resolve_store(self._store_spec)
        limiter = anyio.CapacityLimiter(self._options.concurrency)
        logger.info("runner started on %s", store.location)
        async with anyio.create_task_group() as tg:
            while not self._stopping.is_set():
                await self._look(store, limiter, tg)
                await self._retention(store)
                await self._nap()
            tg.cancel_scope.cancel()
        logger.info("runner stopped")

    async def _look(self, store: Store, limiter: anyio.CapacityLimiter, tg: Any) -> None:
        now = datetime.now(timezone.utc)
        try:
            due = await anyio.to_thread.run_sync(store.due, now)
        except Exception as exc:  # a store hiccup must not end a long-lived runner
            logger.warning("runner could not list due workflows: %s", exc)
            return
        for workflow_id in due:
            if workflow_id not in self._inflight:
                self._inflight.add(workflow_id)
                tg.start_soon(self._one, store, limiter, workflow_id)

    async def _one(self, store: Store, limiter: anyio.CapacityLimiter, workflow_id: str) -> None:
        try:
            async with limiter:
                outcome = await _run_one(store, workflow_id, self._options)
            if outcome is not None:
                self.report.outcomes.append(outcome)
        except Exception as exc:  # a store error on one workflow; the rest go on
            logger.warning("runner could not run workflow %r: %s", workflow_id, exc)
        finally:
            self._inflight.discard(workflow_id)

    async def _retention(self, store: Store) -> None:
        if self.forget_after is None:
            return
        now = anyio.current_time()
        if now - self._last_retention < 60:
            return
        self._last_retention = now
        try:
            await anyio.to_thread.run_sync(
                lambda: forget_many(
                    store, statuses=self.forget_statuses, older_than=self.forget_after
                )
            )
        except Exception as exc:
            logger.warning("runner could not apply retention: %s", exc)

    async def _nap(self) -> None:
        # stop() may come from another thread, so a threading.Event: looked at often.
        end = anyio.current_time() + self.poll_interval
        while not self._stopping.is_set() and anyio.current_time() < end:  # noqa: ASYNC110
            await anyio.sleep(min(0.05, end - anyio.current_time()))


# --- cancel and retry -----------------------------------------------------------------


def cancel(workflow_id: str, store: Store | str | None = None) -> str:
    """Cancel a workflow: it never runs again.

    A pending, sleeping, waiting, failed or interrupted workflow is recorded as
    ``cancelled`` at once. A running one is asked to stop (through its inbox, which
    needs no lock): it stops at its next step and is then recorded as cancelled.

    Returns:
        ``"cancelled"``, or ``"requested"`` when it was running.

    Raises:
        WorkflowNotFoundError: nothing is recorded under that id.
        WorkflowError: it already completed.
    """
    target = resolve_store(store)
    lease = target.try_lock(workflow_id)
    if lease is None:
        target.send(workflow_id, CANCEL_TOPIC, "null")
        return "requested"
    state: State | None = None
    try:
        state = lease.load()
        status = state["status"]
        if status == "new":
            state = None
            raise WorkflowNotFoundError(
                f"no workflow {short_repr(workflow_id)} in {target.location}",
                workflow_id=workflow_id,
            )
        if status == "completed":
            state = None
            raise WorkflowError(f"workflow {short_repr(workflow_id)} already completed")
        if status == "cancelled":
            state = None
            return "cancelled"
        event = {"event": "cancelled", "at": now_iso(), "run": state["runs"]}
        lease.append([event])
        apply(state, event)
        return "cancelled"
    finally:
        lease.close()


def retry(workflow_id: str, store: Store | str | None = None) -> None:
    """Make a failed (or interrupted) workflow due again, with its attempts starting over.

    Raises:
        WorkflowNotFoundError: nothing is recorded under that id.
        WorkflowBusyError: it is running.
        WorkflowError: it is not failed or interrupted, or has no entry point (a named
            ``with workflow()`` block: re-run its script instead).
    """
    target = resolve_store(store)
    lease = target.try_lock(workflow_id)
    if lease is None:
        raise WorkflowBusyError(
            f"workflow {short_repr(workflow_id)} is running right now", workflow_id=workflow_id
        )
    state: State | None = None
    try:
        state = lease.load()
        status = state["status"]
        name = short_repr(workflow_id)
        problem = None
        if status == "new":
            state = None
            raise WorkflowNotFoundError(
                f"no workflow {name} in {target.location}", workflow_id=workflow_id
            )
        if status not in ("failed", "interrupted", "running"):
            problem = f"workflow {name} is {status}, not failed: there is nothing to retry"
        elif "entry" not in state:
            problem = (
                f"workflow {name} has no entry point (a named `with workflow()` block):"
                " re-run the script that runs it"
            )
        if problem is not None:
            state = None
            raise WorkflowError(problem)
        event = {"event": "retry", "at": now_iso(), "run": state["runs"]}
        lease.append([event])
        apply(state, event)
    finally:
        lease.close()


def report_text(report: Report) -> str:
    """The report for people: a line per workflow that did not simply complete."""
    lines = [
        f"{short_repr(o.workflow_id)}: {o.status}" + (f" ({o.detail})" if o.detail else "")
        for o in report.outcomes
        if o.status != "completed"
    ]
    lines.append(f"resume: {report.summary()}")
    return "\n".join(lines)


def report_json(report: Report) -> str:
    """The report as JSON text."""
    return json.dumps(report.to_json(), indent=2, ensure_ascii=False)
