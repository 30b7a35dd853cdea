"""Enter one workflow in its own process and report what happened, through files.

Used by tests/test_locking.py. The store comes from a spec string (``open_store``), so
the same test runs against every store kind. Exit codes: 0 ran, 3 WorkflowBusyError.

    python locker.py SPEC WORKFLOW_ID [--trying FILE] [--timeout S]
        [--entered FILE --check FILE...] [--ready FILE] [--hold-until FILE]
        [--leaving FILE]

Creates ``--trying`` just before entering the workflow. Then, in order, inside it:
record one step; write ``--entered`` (JSON: which of the ``--check`` files existed at
that moment); create ``--ready``; hold until ``--hold-until`` exists (at most 60 s);
create ``--leaving``; leave.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import duravoke

BUSY_EXIT = 3


def write_file(path: Path, text: str) -> None:
    """Create ``path`` whole (a reader polling for it never sees it half written)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("spec")
    parser.add_argument("workflow_id")
    parser.add_argument("--trying", type=Path)
    parser.add_argument("--timeout", type=float)
    parser.add_argument("--entered", type=Path)
    parser.add_argument("--check", type=Path, action="append", default=[])
    parser.add_argument("--ready", type=Path)
    parser.add_argument("--hold-until", type=Path)
    parser.add_argument("--leaving", type=Path)
    args = parser.parse_args()

    d = duravoke.Duravoke(duravoke.open_store(args.spec))

    @d.duravoke
    def greet(name: str) -> str:
        return f"hello {name}"

    if args.trying:
        write_file(args.trying, str(os.getpid()))
    try:
        with d.workflow(args.workflow_id, timeout=args.timeout):
            greet(str(os.getpid()))
            if args.entered:
                seen = {str(p): p.exists() for p in args.check}
                write_file(args.entered, json.dumps({"pid": os.getpid(), "seen": seen}))
            if args.ready:
                write_file(args.ready, str(os.getpid()))
            if args.hold_until:
                deadline = time.monotonic() + 60
                while not args.hold_until.exists() and time.monotonic() < deadline:
                    time.sleep(0.01)
            if args.leaving:
                write_file(args.leaving, str(os.getpid()))
    except duravoke.WorkflowBusyError as exc:
        print(
            f"WorkflowBusyError workflow_id={exc.workflow_id!r}"
            f" is_timeout={isinstance(exc, TimeoutError)}: {exc}",
            file=sys.stderr,
        )
        return BUSY_EXIT
    return 0


if __name__ == "__main__":
    sys.exit(main())
