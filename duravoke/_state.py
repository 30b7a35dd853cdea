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

import json
import time
import zlib
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from ._errors import CorruptStateError

__all__ = [
    "DEFAULT_POLICY",
    "JOURNAL_FORMAT",
    "VERSION",
    "Record",
    "State",
    "apply",
    "backoff",
    "decide",
    "journal_line",
    "new_state",
    "now_iso",
    "parse_journal",
    "status_event",
]

JOURNAL_FORMAT = "duravoke-journal"
VERSION = 1

Record = dict[str, Any]
State = dict[str, Any]

_STATUSES = frozenset(
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


def _when(value: object) -> datetime | None:
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
        wake = _when(state.get("wake"))
        return "run" if wake is None or wake <= now else None
    if status == "waiting":
        wake = _when(state.get("wake"))
        return "run" if has_message or (wake is not None and wake <= now) else None
    if status not in ("running", "interrupted", "failed"):
        return None
    policy = state.get("policy") or DEFAULT_POLICY
    max_attempts, base, cap = int(policy[0]), float(policy[1]), float(policy[2])
    attempts = int(state.get("attempts", 0))
    if attempts >= max_attempts:
        return None if status == "failed" else "give_up"
    updated = _when(state.get("updated"))
    wait = backoff(attempts, base, cap)
    if updated is not None and wait and (now - updated).total_seconds() < wait:
        return None
    return "run"


def _utf8(text: str, value: object, ascii_encode: Callable[[object], str]) -> bytes:
    """``text`` as UTF-8, or, if it holds a lone surrogate, ``value`` re-encoded as ASCII JSON."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return ascii_encode(value).encode("ascii")


# Built once: json.dumps() with options builds a new encoder on every call.
_compact = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode
_compact_ascii = json.JSONEncoder(allow_nan=False, separators=(",", ":")).encode


def journal_line(record: Record) -> bytes:
    """One journal record: ``<crc32 hex> <compact JSON>\\n``."""
    body = _utf8(_compact(record), record, _compact_ascii)
    return b"%08x %s\n" % (zlib.crc32(body), body)


def parse_journal(data: bytes, path: str, workflow_id: str) -> tuple[list[Record], bool, int]:
    """Decode a journal: (its records, whether its end is torn, where its records end).

    The first line is a header naming the format, version and workflow; each record is
    a line. Zeros after the last record are space grown ahead of the records (see
    ``_journal``) and end at the returned offset; 0 means no header was written. A
    damaged record, or bytes other than zeros after the last record, followed by no
    intact record is what a crash mid-write leaves: it is dropped, and reported as torn
    so that nothing gets written after it. A damaged record followed by an intact one
    is real corruption and raises :class:`CorruptStateError`.
    """
    *lines, rest = data.split(b"\n")
    records: list[Record] = []
    damaged = False
    end = position = 0
    for line in lines:
        position += len(line) + 1
        record = _parse_line(line)
        if record is None:
            damaged = True
            continue
        if damaged:
            raise _corrupt(path, "a record in the middle of it is damaged")
        records.append(record)
        end = position
    torn = damaged or bool(rest.strip(b"\0"))
    if not records:
        return [], torn, 0
    header = records.pop(0)
    _check_version(header.get("format"), JOURNAL_FORMAT, header.get("version"), path)
    if header.get("workflow") != workflow_id:
        raise _corrupt(path, f"it belongs to workflow {header.get('workflow')!r}")
    if not all(_valid_record(r) for r in records):
        raise _corrupt(path, "a record in it has an unexpected shape")
    return records, torn, end


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


def _parse_line(line: bytes) -> Record | None:
    if len(line) < 10 or line[8:9] != b" ":
        return None
    body = line[9:]
    try:
        if int(line[:8], 16) != zlib.crc32(body):
            return None
        record = json.loads(body.decode("utf-8"))
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def _valid_record(record: Record) -> bool:
    if "sid" in record:
        return isinstance(record["sid"], str) and "status" in record and "started" in record
    event = record.get("event")
    return (
        event in _STATUSES
        and "at" in record
        and (event != "running" or isinstance(record.get("run"), int))
    )


def _check_version(fmt: object, expected: str, version: object, path: str) -> None:
    if fmt != expected:
        raise _corrupt(path, "it is not a duravoke state file")
    if version != VERSION:
        raise CorruptStateError(
            f"{path} has format version {version!r}, but this duravoke reads version {VERSION}."
            " Upgrade duravoke to read it; the file was left untouched.",
            path=path,
        )


def _corrupt(path: str, why: str) -> CorruptStateError:
    return CorruptStateError(
        f"cannot load {path}: {why}. The file was left untouched; move it aside (or restore"
        " it from a backup) to start that state afresh, or use `duravoke forget`.",
        path=path,
    )
