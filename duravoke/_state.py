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

import json
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from ._errors import CorruptStateError

__all__ = [
    "VERSION",
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

VERSION = 1

Record = dict[str, Any]
State = dict[str, Any]

_STATUSES = frozenset({"running", "completed", "failed", "interrupted"})
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


def _utf8(text: str, value: object, ascii_encode: Callable[[object], str]) -> bytes:
    """``text`` as UTF-8, or, if it holds a lone surrogate, ``value`` re-encoded as ASCII JSON."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return ascii_encode(value).encode("ascii")


# Built once: json.dumps() with options builds a new encoder on every call.
_compact = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode
_compact_ascii = json.JSONEncoder(allow_nan=False, separators=(",", ":")).encode


def status_event(state: State) -> Record:
    """The workflow event that brings any earlier state to ``state``'s status."""
    event: Record = {"event": state["status"], "at": state["updated"], "run": state["runs"]}
    if state["status"] in ("failed", "interrupted"):
        event["error"] = state["error"]
    return event


def _check_version(fmt: object, expected: str, version: object, path: str) -> None:
    if fmt != expected:
        raise _corrupt(path, "it is not a duravoke state file")
    if version != VERSION:
        raise CorruptStateError(
            f"{path} has format version {version!r}, but this duravoke reads version {VERSION}."
            " Upgrade duravoke to read it; the file was left untouched.",
            path=path,
        )


def _corrupt(path: str, why: str, salvage: str | None = None) -> CorruptStateError:
    """The error for a damaged file; ``salvage`` is the command that keeps its intact
    records (for a journal), None when nothing can be told intact (a state file)."""
    if salvage is not None:
        advice = (
            f"run `{salvage}`: it keeps every intact record before the damage, moves the"
            " file aside (nothing is deleted) and says how many records it kept; the steps"
            " recorded after the damage run again"
        )
    else:
        advice = (
            "move it aside (or restore it from a backup) to start that state afresh, or use"
            " `duravoke forget`"
        )
    return CorruptStateError(
        f"cannot load {path}: {why}. The file was left untouched; {advice}.",
        path=path,
    )
