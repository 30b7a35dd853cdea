"""The state file: a readable JSON document of one or more workflows, with a checksum.

Its dump and its load live here together. The file is only ever replaced whole (see
``_files.atomic_write``), never edited in place::

    {
     "format": "duravoke",
     "version": 1,
     "checksum": "crc32:<8 hex digits of everything after \"workflows\":>",
     "workflows": {
      "<workflow id>": {
       "status": ..., "started": ..., "updated": ..., "runs": ..., "error": ...,
       "steps": {
        "<sid>": {<step record>},
        ...
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable

from ._errors import check_format, corrupt_file
from ._state import STATUSES, State

__all__ = ["FORMAT", "VERSION", "dump_snapshot", "load_snapshot"]

FORMAT = "duravoke"
VERSION = 1


def _utf8(text: str, value: object, ascii_encode: Callable[[object], str]) -> bytes:
    """``text`` as UTF-8, or, if it holds a lone surrogate, ``value`` re-encoded as ASCII JSON."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return ascii_encode(value).encode("ascii")


# Built once: json.dumps() with options builds a new encoder on every call.
_line = json.JSONEncoder(ensure_ascii=False, allow_nan=False).encode
_line_ascii = json.JSONEncoder(allow_nan=False).encode

_BODY_MARK = b'\n "workflows": '


def _render(workflows: dict[str, State], line: Callable[[object], str]) -> str:
    # One line per workflow field and per step: readable, and each line is encoded by the
    # C encoder (json.dumps(indent=...) falls back to the slow pure-Python one).
    out = ["{"]
    for n, (workflow_id, state) in enumerate(workflows.items()):
        out.append(f"  {line(workflow_id)}: {{")
        out.extend(f"   {line(k)}: {line(v)}," for k, v in state.items() if k != "steps")
        out.append('   "steps": {')
        steps = [f"    {line(sid)}: {line(step)}" for sid, step in state["steps"].items()]
        if steps:
            out.append(",\n".join(steps))
        out.append("   }")
        out.append("  }," if n < len(workflows) - 1 else "  }")
    out.append(" }\n}\n")
    return "\n".join(out)


def dump_snapshot(workflows: dict[str, State]) -> bytes:
    """Encode the state file, with a CRC-32 of everything after ``"workflows":``."""
    body = _utf8(_render(workflows, _line), workflows, lambda _: _render(workflows, _line_ascii))
    head = f'{{\n "format": "{FORMAT}",\n "version": {VERSION},\n'
    head += f' "checksum": "crc32:{zlib.crc32(body):08x}",'
    return head.encode("ascii") + _BODY_MARK + body


def load_snapshot(data: bytes, path: str) -> dict[str, State]:
    """Decode a state file, raising :class:`CorruptStateError` on any damage."""
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise corrupt_file(path, "it is not valid JSON (it was truncated or damaged)") from None
    if not isinstance(doc, dict) or set(doc) != {"format", "version", "checksum", "workflows"}:
        raise corrupt_file(path, "it is not a duravoke state file")
    check_format(path, doc.get("format"), FORMAT, doc.get("version"), VERSION)
    mark = data.find(_BODY_MARK)
    crc = zlib.crc32(data[mark + len(_BODY_MARK) :]) if mark >= 0 else None
    workflows = doc["workflows"]
    if not isinstance(workflows, dict) or doc["checksum"] != f"crc32:{crc:08x}":
        raise corrupt_file(
            path, "its checksum does not match its content (it was damaged or edited)"
        )
    for state in workflows.values():
        if not _valid_state(state):
            raise corrupt_file(path, "a workflow in it has an unexpected shape")
    return workflows


def _valid_state(state: object) -> bool:
    return (
        isinstance(state, dict)
        and isinstance(state.get("steps"), dict)
        and state.get("status") in STATUSES | {"new"}
        and all(isinstance(s, dict) and "status" in s for s in state["steps"].values())
    )
