"""Looking at recorded workflows from Python: what ran, what is running, and forgetting.

These functions read a store the way ``duravoke list``, ``show`` and ``forget`` do.
They never change a workflow's state, except :func:`forget`, which deletes it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal

from ._errors import CorruptStateError, WorkflowBusyError, WorkflowNotFoundError
from ._logging import logger
from ._open import open_store
from ._serializer import JSONSerializer
from ._state import State, parse_time
from ._store import Store

__all__ = [
    "StepInfo",
    "WorkflowInfo",
    "forget",
    "forget_many",
    "get_workflow",
    "list_workflows",
    "resolve_store",
    "short_repr",
]

Status = Literal[
    "running",
    "completed",
    "failed",
    "interrupted",
    "pending",
    "sleeping",
    "waiting",
    "cancelled",
    "corrupt",
]

#: The statuses read as they are recorded (with the lock free).
_AS_RECORDED = frozenset({"completed", "failed", "pending", "sleeping", "waiting", "cancelled"})

#: The longest result preview, in characters.
PREVIEW_LIMIT = 60

_DECODER = JSONSerializer()
_EPOCH = datetime.min.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class StepInfo:
    """One recorded call of a decorated function.

    Attributes:
        sid: the step id, ``"<32 hex>:<occurrence>"``.
        parent: the sid of the decorated call it was made in, or None at the top.
        path: the names of the decorated functions it was called from.
        function: the function's name (``module.qualname`` or ``name=``).
        occurrence: 0 for the first identical call in a run, 1 for the next...
        status: ``"completed"`` (its result is recorded), ``"failed"`` (it raised
            and runs again next time), ``"running"`` (in flight now) or
            ``"interrupted"`` (it was in flight when its run stopped; it runs again).
        started: when the call started (UTC).
        duration: how long it took, in seconds.
        args: the call's arguments by parameter name (or what ``key=`` returned), when
            they were short enough to be recorded; else None.
        result_preview: a short ``repr`` of the recorded result ("" when failed).
        error: the ``repr`` of the exception a failed call raised, else None.
        run: the number of the workflow run that executed the call (later runs replayed
            it), when the record says; else None.
        result: the recorded result, decoded as a replay with the default
            :class:`JSONSerializer` would return it (None unless completed). A result
            recorded by another serializer (such as ``PickleSerializer``, whose records
            are never decoded here since that would run code) is left as its recorded
            JSON.
        result_json: the recorded result as it is stored (tagged JSON), or None.
    """

    sid: str
    parent: str | None
    path: tuple[str, ...]
    function: str
    occurrence: int
    status: str
    started: datetime
    duration: float
    args: Any
    result_preview: str
    error: str | None
    result: Any = None
    result_json: Any = None
    run: int | None = None


@dataclass(frozen=True)
class WorkflowInfo:
    """A workflow as recorded in a store.

    Attributes:
        id: the workflow id.
        status: ``"running"`` (a process or thread holds its lock right now),
            ``"completed"``, ``"failed"`` (its last run raised; see ``error``),
            ``"interrupted"`` (its last run stopped without finishing: the process
            died or was killed, Ctrl-C or cancellation; run it again to resume),
            ``"pending"`` (started, not run yet), ``"sleeping"`` (until ``wake``),
            ``"waiting"`` (for a message on ``topic``, until ``wake`` if it has a
            timeout), ``"cancelled"``, or ``"corrupt"`` (its state is damaged:
            ``error`` says how, ``path`` where).
        steps_done: how many steps completed.
        steps_failed: how many steps raised (they run again next time).
        runs: how many times the workflow was entered.
        started: when its first run started (UTC), if recorded.
        updated: when anything was last recorded (UTC), if recorded.
        error: the ``repr`` of the exception that failed the last run, else None.
        steps: every recorded step, in the order they started.
        path: the damaged file of a ``"corrupt"`` workflow, else None.
        wake: when a sleeping workflow wakes, or a waiting one stops waiting; else None.
        topic: the topic a waiting workflow waits on; else None.
        attempts: runs started since its last success or suspension (see ``resume``).
        entry: the registered name of its entry point, if it has one (a runner can
            resume it); None for a named ``with workflow()`` block.
    """

    id: str
    status: Status
    steps_done: int
    steps_failed: int
    runs: int
    started: datetime | None
    updated: datetime | None
    error: str | None
    steps: tuple[StepInfo, ...]
    path: str | None = None
    wake: datetime | None = None
    topic: str | None = None
    attempts: int = 0
    entry: str | None = None


def resolve_store(store: Store | str | os.PathLike[str] | None) -> Store:
    """``store`` itself, the default instance's store for None, or :func:`open_store` of it."""
    if isinstance(store, Store):
        return store
    if store is None:
        from ._duravoke import default_instance

        return default_instance().store
    return open_store(store)


def list_workflows(store: Store | str | os.PathLike[str] | None = None) -> list[WorkflowInfo]:
    """Every workflow recorded in ``store``, the most recently updated first.

    Args:
        store: a store, a string for :func:`duravoke.open_store`, or None for the store
            of the default instance (``$DURAVOKE_HOME`` or the user state folder).

    Listed workflows carry no steps (``steps`` is empty; :func:`get_workflow` has
    them): the list comes from the store's summaries, not from reading every workflow,
    so 10,000 workflows list in well under a second.

    A workflow whose state is damaged is listed with status ``"corrupt"``, the damaged
    file in ``path`` and the reason in ``error`` (and a warning is logged on the
    ``"duravoke"`` logger); :func:`get_workflow` on its id raises the error. Its ``id``
    is empty when the damaged file is the only place that holds it. Damaged workflows
    come first: they need someone's attention.
    """
    target = resolve_store(store)
    found: list[WorkflowInfo] = []
    try:
        summaries = target.summaries()
        suspects = target.suspects(summaries)
    except CorruptStateError as exc:  # the log, or the one file that holds them all
        logger.warning("%s", exc)
        return [_corrupt("", exc)]
    workflow_ids = list(summaries)
    for workflow_id, summary in summaries.items():
        try:
            if workflow_id in suspects or summary["status"] not in _FINISHED:
                # Changed behind the store's back, or perhaps running: look closely.
                found.append(get_workflow(workflow_id, target))
            else:
                found.append(_listed(workflow_id, summary))
        except CorruptStateError as exc:
            logger.warning("workflow %r is damaged: %s", workflow_id, exc)
            found.append(_corrupt(workflow_id, exc))
        except WorkflowNotFoundError:
            pass  # forgotten since it was listed
    # The store skipped these (and warned): the id is inside the damaged file.
    found.extend(_corrupt("", exc) for exc in _unreadable(target, workflow_ids))
    found.sort(key=lambda w: (w.status == "corrupt", w.updated or _EPOCH), reverse=True)
    return found


#: Recorded statuses that no running process can change without taking the lock first.
_FINISHED = _AS_RECORDED | {"interrupted"}


def _listed(workflow_id: str, summary: State) -> WorkflowInfo:
    done, failed = int(summary.get("done") or 0), len(summary.get("failing") or ())
    return _workflow_info(workflow_id, summary, False, (), done, failed)


def _corrupt(workflow_id: str, exc: CorruptStateError) -> WorkflowInfo:
    return WorkflowInfo(
        id=workflow_id,
        status="corrupt",
        steps_done=0,
        steps_failed=0,
        runs=0,
        started=None,
        updated=None,
        error=str(exc),
        steps=(),
        path=exc.path,
    )


def _unreadable(store: Store, workflow_ids: list[str]) -> list[CorruptStateError]:
    """The damaged files in which ``store`` could not even read which workflows they hold."""
    report = getattr(store, "damaged", None)
    if callable(report):  # a store that keeps track of them says so itself
        return list(report())
    from ._filestore import DirectoryStore

    if not isinstance(store, DirectoryStore):
        return []
    # One state file per workflow, named after its id: a file that belongs to no listed
    # id is one the store skipped. Only those are read again, to say what is wrong.
    from ._filestore import _file_stem
    from ._snapshot import load_snapshot

    known = {_file_stem(workflow_id) + ".json" for workflow_id in workflow_ids}
    errors = []
    for path in sorted(Path(store.location).glob("*.json")):
        if path.name in known:
            continue
        try:
            load_snapshot(path.read_bytes(), str(path))
        except CorruptStateError as exc:
            errors.append(exc)
        except OSError:
            pass  # forgotten meanwhile, or unreadable: the store warned about it
    return errors


def get_workflow(
    workflow_id: str, store: Store | str | os.PathLike[str] | None = None
) -> WorkflowInfo:
    """The recorded state of one workflow.

    Args:
        workflow_id: the workflow's id.
        store: as for :func:`list_workflows`.

    Raises:
        WorkflowNotFoundError: nothing is recorded under that id.
        CorruptStateError: its state is damaged (the error names the file).
    """
    target = resolve_store(store)
    state = target.read(workflow_id)
    if state is None:
        raise _not_found(workflow_id, target)
    running = True
    try:
        # The lock says whether someone runs it now; a free lock is released at once.
        lease = target.try_lock(workflow_id)
    except OSError:
        lease = None  # a read-only store: trust what is recorded
        running = state["status"] == "running"
    if lease is not None:
        running = False
        try:
            if state["status"] not in ("completed", "failed", "interrupted", "cancelled"):
                # It may have finished since it was read: read it again, now that it
                # cannot change, before calling it interrupted.
                state = target.read(workflow_id)
        finally:
            lease.close()
        if state is None:
            raise _not_found(workflow_id, target)
    return _info(workflow_id, state, running)


def forget(workflow_id: str, store: Store | str | os.PathLike[str] | None = None) -> None:
    """Delete everything recorded for a workflow; its next run starts afresh.

    Args:
        workflow_id: the workflow's id.
        store: as for :func:`list_workflows`.

    Raises:
        WorkflowBusyError: the workflow is running right now.
        WorkflowNotFoundError: nothing is recorded under that id.
    """
    target = resolve_store(store)
    try:
        target.forget(workflow_id)
    except WorkflowBusyError:
        raise WorkflowBusyError(
            f"workflow {short_repr(workflow_id)} is running right now; forget it once it stops.",
            workflow_id=workflow_id,
        ) from None
    except WorkflowNotFoundError:
        raise _not_found(workflow_id, target) from None


def forget_many(
    store: Store | str | os.PathLike[str] | None = None,
    *,
    statuses: Iterable[str] = ("completed",),
    older_than: timedelta | None = None,
) -> list[str]:
    """Forget every workflow with one of ``statuses``, last updated before ``older_than`` ago.

    Retention for a service: ``forget_many(statuses=["completed"],
    older_than=timedelta(days=30))``. Each is forgotten like :func:`forget` (its state,
    journal and messages; lock files stay, as deleting a lock file is never safe).
    Running workflows are left alone.

    Args:
        store: as for :func:`list_workflows`.
        statuses: which statuses to forget (as :class:`WorkflowInfo` reports them).
        older_than: only those not updated for this long; None: any age.

    Returns:
        The ids forgotten.
    """
    wanted = set(statuses)
    if "running" in wanted:
        raise ValueError("running workflows cannot be forgotten; stop them first")
    target = resolve_store(store)
    cutoff = None if older_than is None else datetime.now(timezone.utc) - older_than
    forgotten = []
    for info in list_workflows(target):
        if info.status not in wanted:
            continue
        if cutoff is not None and (info.updated is None or info.updated > cutoff):
            continue
        try:
            target.forget(info.id)
        except (WorkflowBusyError, WorkflowNotFoundError):
            continue  # started or forgotten meanwhile
        forgotten.append(info.id)
    return forgotten


def _not_found(workflow_id: str, store: Store) -> WorkflowNotFoundError:
    return WorkflowNotFoundError(
        f"no workflow {short_repr(workflow_id)} is recorded in {store.location};"
        " `duravoke list` shows the ones that are.",
        workflow_id=workflow_id,
    )


def short_repr(text: str, limit: int = 80) -> str:
    """``repr(text)``, shortened in the middle: ids can be 10 kB long."""
    r = repr(text)
    return r if len(r) <= limit else f"{r[: limit - 20]}...{r[-16:]}"


def _preview(value: object, limit: int = PREVIEW_LIMIT) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _step(record: dict[str, Any], running: bool) -> StepInfo:
    status = str(record.get("status"))
    completed = status == "completed"
    preview = ""
    result = recorded = None
    if completed and "result" in record:
        result = recorded = record["result"]
        with contextlib.suppress(ValueError):  # another serializer's (pickle): keep the JSON
            result = _DECODER.decode(recorded)
        preview = _preview(result)
    elif status == "running" and not running:
        status = "interrupted"  # it was in flight when its run stopped
    args = record.get("args")
    if args is not None:
        with contextlib.suppress(ValueError):  # else keep the raw JSON
            args = _DECODER.decode(args)
    path = record.get("path")
    run = record.get("run")
    return StepInfo(
        sid=str(record.get("sid")),
        parent=record.get("parent"),
        path=tuple(path) if isinstance(path, list) else (),
        function=str(record.get("fn", "?")),
        occurrence=int(record.get("occ", 0)),
        status=status,
        started=parse_time(record.get("started")) or _EPOCH,
        duration=float(record.get("duration", 0.0)),
        args=args,
        result_preview=preview,
        error=None if completed else record.get("error"),
        result=result,
        result_json=recorded,
        run=run if isinstance(run, int) else None,
    )


def _info(workflow_id: str, state: State, running: bool) -> WorkflowInfo:
    steps = sorted((_step(r, running) for r in state["steps"].values()), key=lambda s: s.started)
    done = sum(s.status == "completed" for s in steps)
    failed = sum(s.status == "failed" for s in steps)
    return _workflow_info(workflow_id, state, running, tuple(steps), done, failed)


def _workflow_info(  # noqa: PLR0917 - one private builder, called twice
    workflow_id: str,
    header: State,
    running: bool,
    steps: tuple[StepInfo, ...],
    done: int,
    failed: int,
) -> WorkflowInfo:
    """A workflow from its state or its summary (``header``: the fields besides steps)."""
    entry, topic = header.get("entry"), header.get("topic")
    return WorkflowInfo(
        id=workflow_id,
        status=_status(header["status"], running),
        steps_done=done,
        steps_failed=failed,
        runs=int(header.get("runs") or 0),
        started=parse_time(header.get("started")),
        updated=parse_time(header.get("updated")),
        error=header.get("error"),
        steps=steps,
        wake=parse_time(header.get("wake")),
        topic=topic if isinstance(topic, str) else None,
        attempts=int(header.get("attempts") or 0),
        entry=entry.get("name") if isinstance(entry, dict) else None,
    )


def _status(recorded: str, running: bool) -> Status:
    """What a workflow recorded with ``recorded`` is now."""
    if running:
        return "running"
    if recorded in _AS_RECORDED:
        return recorded  # type: ignore[return-value]
    # Interrupted, or recorded as running (or never finished starting) with its lock free.
    return "interrupted"
