"""The compact JSON spelling of every record that duravoke writes, in one place.

Records are written as UTF-8 JSON. A string holding a lone surrogate (Python allows it,
UTF-8 does not) makes the whole document fall back to ASCII escapes, which JSON readers
turn back into the same string.
"""

from __future__ import annotations

import json
import re

__all__ = ["compact", "compact_bytes"]

# Built once: json.dumps() with options builds a new encoder on every call.
_compact = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode
_compact_ascii = json.JSONEncoder(allow_nan=False, separators=(",", ":")).encode
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def compact(value: object) -> str:
    """``value`` as compact JSON text that always encodes to UTF-8."""
    text = _compact(value)
    return text if _SURROGATE.search(text) is None else _compact_ascii(value)


def compact_bytes(value: object) -> bytes:
    """``value`` as compact UTF-8 JSON."""
    text = _compact(value)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return _compact_ascii(value).encode("ascii")
