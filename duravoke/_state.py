"""The state of a workflow, the records that change it, and their on-disk encodings.

Pure functions only: every store (files, memory, Postgres) shares them, so a workflow
means the same thing wherever it is kept.

A workflow's state is a plain dict, exactly as it appears in the state file::

    {"status": "completed", "started": "...", "updated": "...", "runs": 2,
     "error": None, "steps": {sid: step, ...}}

A record is either a step (it has a ``"sid"``) or a workflow event (it has an
``"event"``). Applying records in order rebuilds the state; applying one twice changes
nothing, which is what lets a journal be replayed over a snapshot that already contains
some of it. The events:

- ``running`` (a run starts; it counts one attempt, and may carry the ``entry`` point
  and the runner's retry ``policy``), ``completed``, ``failed``, ``interrupted``;
- ``pending`` (``start`` recorded the call, with its ``entry``; nothing ran yet);
- ``sleeping`` (``until``) and ``waiting`` (``topic``, ``after``, ``until``): the run
  suspended itself in a wait and released the lock; a runner resumes it when due;
- ``retry`` (``duravoke retry``: due again, attempts start over);
- ``cancelled``: it never runs again.

Fields a runner reads: ``entry`` ({"name", "module", "args", "kwargs"}: the registered
function and its encoded arguments), ``attempts`` (runs started since the last success
or suspension, minus those interrupted by Ctrl-C; a run that kills its process counts),
``policy`` ([max attempts, backoff seconds, max backoff seconds]), ``wake``, ``topic``
and ``after`` (the wait being waited for).
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

__all__ = [
    "DEFAULT_POLICY",
    "STATUSES",
    "Record",
    "State",
    "apply",
    "apply_summary",
    "backoff",
    "decide",
    "new_state",
    "new_summary",
    "now_iso",
    "parse_time",
    "status_event",
    "summarize",
]


Record = dict[str, Any]
State = dict[str, Any]

#: Every status a workflow can be recorded with.
STATUSES = frozenset(
    {
        "running",
        "completed",
        "failed",
        "interrupted",
        "pending",
        "sleeping",
        "waiting",
        "retry",
        "cancelled",
    }
)
# Where each status stands within one run, to order events of the same run. A retry
# follows the end of the run it retries; a cancellation ends everything.
_PHASE = {
    "new": -1,
    "pending": -1,
    "running": 0,
    "completed": 1,
    "failed": 1,
    "interrupted": 1,
    "sleeping": 1,
    "waiting": 1,
    "retry": 2,
    "cancelled": 3,
}
#: The events that end a wait of a suspended run.
_WAIT_FIELDS = ("wake", "topic", "after")


_second: tuple[int, str] = (0, "")


def now_iso() -> str:
    """The current time as an ISO 8601 string in UTC, as every record stores it.

    Called for every recorded step: the date and time of the current second are
    formatted once per second (a tuple swap, safe across threads).
    """
    global _second
    now = time.time()
    second = int(now)
    cached = _second
    if cached[0] != second:
        prefix = datetime.fromtimestamp(second, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
        cached = _second = (second, prefix)
    micro = min(int((now - second) * 1_000_000), 999_999)
    return f"{cached[1]}.{micro:06d}+00:00"


def new_state() -> State:
    """The state of a workflow that has never run."""
    return {
        "status": "new",
        "started": None,
        "updated": None,
        "runs": 0,
        "error": None,
        "steps": {},
    }


def apply(state: State, record: Record) -> None:
    """Apply one record to ``state`` in place."""
    sid = record.get("sid")
    if sid is not None:
        state["steps"][sid] = record
        state["updated"] = record["started"]
        return
    if "msg" in record:
        inbox = state.setdefault("inbox", {}).setdefault(record["msg"], [])
        if not inbox or inbox[-1][0] < record["seq"]:
            inbox.append([record["seq"], record["data"], record["at"]])
        return
    _apply_event(state, record)


def new_summary() -> State:
    """The summary of a workflow that has never run: its state without the steps."""
    summary = new_state()
    del summary["steps"]
    summary["done"] = 0  # steps completed
    summary["failing"] = []  # steps whose last record is a failure
    return summary


def apply_summary(summary: State, record: Record) -> None:
    """Apply one record to a summary (see :func:`new_summary`) in place.

    A completed step is never recorded twice, so counting completions is exact.
    """
    sid = record.get("sid")
    if sid is not None:
        failing: list[str] = summary["failing"]
        if sid in failing:
            failing.remove(sid)
        if record["status"] == "completed":
            summary["done"] += 1
        else:
            failing.append(sid)
        summary["updated"] = record["started"]
        return
    if "msg" in record:
        inbox = summary.setdefault("inbox", {})
        inbox[record["msg"]] = max(inbox.get(record["msg"], 0), record["seq"])
        return
    _apply_event(summary, record)


def summarize(state: State) -> State:
    """The summary of a whole state."""
    summary = {k: v for k, v in state.items() if k not in ("steps", "inbox")}
    steps = state["steps"].values()
    summary["done"] = sum(s["status"] == "completed" for s in steps)
    summary["failing"] = [s["sid"] for s in steps if s["status"] != "completed"]
    if state.get("inbox"):
        summary["inbox"] = {topic: msgs[-1][0] for topic, msgs in state["inbox"].items() if msgs}
    return summary


def _apply_event(state: State, record: Record) -> None:
    event = record["event"]
    run = record.get("run", state["runs"])
    if (run, _PHASE[event]) < (state["runs"], _PHASE[state["status"]]):
        # An older event: a journal replayed over a snapshot that already holds it.
        return
    state["status"] = "pending" if event == "retry" else event
    state["updated"] = record["at"]
    if "entry" in record:
        state["entry"] = record["entry"]
    if "policy" in record:
        state["policy"] = record["policy"]
    attempts = state.get("attempts", 0)
    for field in _WAIT_FIELDS:
        state.pop(field, None)
    if event == "running":
        state["runs"] = run
        state["error"] = None
        state["attempts"] = attempts + 1
        if state["started"] is None:
            state["started"] = record["at"]
    elif event in ("failed", "interrupted", "cancelled"):
        state["error"] = record.get("error")
        if event == "interrupted":  # Ctrl-C and cancellation are not failed attempts
            state["attempts"] = max(0, attempts - 1)
    elif event in ("sleeping", "waiting"):
        state["attempts"] = 0
        state["wake"] = record.get("until")
        if event == "waiting":
            state["topic"] = record.get("topic")
            state["after"] = record.get("after", 0)
    elif event in ("completed", "retry"):
        state["attempts"] = 0
        state["error"] = None


#: A runner's retry policy unless told otherwise: (max attempts, first backoff in
#: seconds, longest backoff in seconds).
DEFAULT_POLICY = (5, 1.0, 300.0)


def backoff(attempts: int, base: float, cap: float) -> float:
    """Seconds to wait before the next attempt after ``attempts`` that did not succeed.

    The first retry is immediate (the usual cause is a process that was killed), then
    ``base``, ``2 * base``, ``4 * base``... up to ``cap``.
    """
    if attempts <= 1:
        return 0.0
    return float(min(cap, base * 2 ** min(attempts - 2, 60)))


def parse_time(value: object) -> datetime | None:
    """A recorded ISO 8601 time, or None when it is missing or unreadable."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def decide(state: State, now: datetime, has_message: bool) -> str | None:
    """What a runner should do with a workflow now, from its state alone.

    Returns ``"run"`` (it is due), ``"give_up"`` (its runs kept stopping without an
    outcome, e.g. killing their process, and it has no attempts left: record it as
    failed) or None (nothing to do now). Only workflows with an entry point are ever
    due: a named ``with workflow(id)`` block is re-run by its own script.

    Args:
        state: the workflow's state.
        now: the current time (aware).
        has_message: whether a message is there for the topic a waiting workflow waits on.
    """
    if "entry" not in state:
        return None
    status = state["status"]
    if status == "pending":
        return "run"
    if status == "sleeping":
        wake = parse_time(state.get("wake"))
        return "run" if wake is None or wake <= now else None
    if status == "waiting":
        wake = parse_time(state.get("wake"))
        return "run" if has_message or (wake is not None and wake <= now) else None
    if status not in ("running", "interrupted", "failed"):
        return None
    policy = state.get("policy") or DEFAULT_POLICY
    max_attempts, base, cap = int(policy[0]), float(policy[1]), float(policy[2])
    attempts = int(state.get("attempts", 0))
    if attempts >= max_attempts:
        return None if status == "failed" else "give_up"
    updated = parse_time(state.get("updated"))
    wait = backoff(attempts, base, cap)
    if updated is not None and wait and (now - updated).total_seconds() < wait:
        return None
    return "run"


def status_event(state: State) -> Record:
    """The workflow event that brings any earlier state to ``state``'s status."""
    event: Record = {"event": state["status"], "at": state["updated"], "run": state["runs"]}
    if state["status"] in ("failed", "interrupted", "cancelled"):
        event["error"] = state["error"]
    for field in ("entry", "policy"):
        if field in state:
            event[field] = state[field]
    if "wake" in state:
        event["until"] = state["wake"]
    if "topic" in state:
        event["topic"] = state["topic"]
        event["after"] = state.get("after", 0)
    return event
