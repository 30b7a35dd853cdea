"""Reading the per-workflow journals that duravoke 0.2 wrote.

duravoke 0.2 kept, beside each workflow's state file, a journal of the records added
since: a header line, then one record per line, ``<crc32 hex> <compact JSON>``. The store
now writes the store-wide log (``_log``) instead; a journal left by 0.2 (after a crash)
is still read, applied over its state file, and folded in by the next checkpoint.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

from ._errors import check_format, corrupt_file
from ._files import read_bytes
from ._state import STATUSES, Record

__all__ = ["JOURNAL_FORMAT", "parse_journal", "read_legacy_journal"]

JOURNAL_FORMAT = "duravoke-journal"


def read_legacy_journal(path: Path, workflow_id: str, salvage: str | None = None) -> list[Record]:
    """The intact records of the journal at ``path`` (none if there is no such file).

    ``salvage`` is the command that the error for a damaged journal advises.
    """
    data = read_bytes(path)
    if data is None:
        return []
    return parse_journal(data, str(path), workflow_id, salvage)[0]


def parse_journal(
    data: bytes, path: str, workflow_id: str, salvage: str | None = None
) -> tuple[list[Record], bool, int]:
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
            raise corrupt_file(path, "a record in the middle of it is damaged", salvage)
        records.append(record)
        end = position
    torn = damaged or bool(rest.strip(b"\0"))
    if not records:
        return [], torn, 0
    header = records.pop(0)
    check_format(path, header.get("format"), JOURNAL_FORMAT, header.get("version"), 1)
    if header.get("workflow") != workflow_id:
        raise corrupt_file(path, f"it belongs to workflow {header.get('workflow')!r}")
    if not all(_valid_record(r) for r in records):
        raise corrupt_file(path, "a record in it has an unexpected shape", salvage)
    return records, torn, end


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
        event in STATUSES
        and "at" in record
        and (event != "running" or isinstance(record.get("run"), int))
    )
