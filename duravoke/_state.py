"""The state of a workflow, the records that change it, and their on-disk encodings.

Pure functions only: every store (files, memory, Postgres) shares them, so a workflow
means the same thing wherever it is kept.

A workflow's state is a plain dict, exactly as it appears in the state file::

    {"status": "completed", "started": "...", "updated": "...", "runs": 2,
     "error": None, "steps": {sid: step, ...}}

A record is either a step (it has a ``"sid"``) or a workflow event (it has an
``"event"``: ``"running"``, ``"completed"`` or ``"failed"``). Applying records in
order rebuilds the state; applying one twice changes nothing, which is what lets a
journal be replayed over a snapshot that already contains some of it.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

__all__ = [
    "STATUSES",
    "Record",
    "State",
    "apply",
    "apply_summary",
    "new_state",
    "new_summary",
    "now_iso",
    "status_event",
    "summarize",
]


Record = dict[str, Any]
State = dict[str, Any]

#: Every status a workflow can be recorded with.
STATUSES = frozenset({"running", "completed", "failed", "interrupted"})
# Where each status stands within one run, to order events of the same run.
_PHASE = {"new": -1, "running": 0, "completed": 1, "failed": 1, "interrupted": 1}


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
    state["status"] = event
    state["updated"] = record["at"]
    if event == "running":
        state["runs"] = run
        state["error"] = None
        if state["started"] is None:
            state["started"] = record["at"]
    elif event in ("failed", "interrupted"):
        state["error"] = record.get("error")


def status_event(state: State) -> Record:
    """The workflow event that brings any earlier state to ``state``'s status."""
    event: Record = {"event": state["status"], "at": state["updated"], "run": state["runs"]}
    if state["status"] in ("failed", "interrupted"):
        event["error"] = state["error"]
    return event
