"""The ``duravoke`` command: list, show, forget and locate recorded workflows, or serve a page.

Exit status: 0 on success, 1 when a workflow is not found, running, or damaged (or the
store cannot be read), 2 for a usage error. Errors are one line on stderr.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import shutil
import sys
import unicodedata
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ._errors import DuravokeError, WorkflowNotFoundError
from ._info import (
    StepInfo,
    WorkflowInfo,
    forget,
    get_workflow,
    list_workflows,
    resolve_store,
    short_repr,
)
from ._serializer import JSONSerializer
from ._store import Store
from ._version import __version__

__all__ = ["main"]

_WIDTH = 80
_STATUS_WIDTH = len("interrupted")
_STEPS_WIDTH = 5
_TIME_WIDTH = len("01-31 12:34")  # also fits "2025-01-31"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    for stream in (sys.stdout, sys.stderr):
        # Ids can hold anything; never die on a terminal that cannot show a character.
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")
    args = _parser().parse_args(argv)
    warnings = _Warnings()
    logger = logging.getLogger("duravoke")
    logger.addHandler(warnings)
    try:
        status: int = args.command(args)
        sys.stdout.flush()
    except (DuravokeError, OSError, ValueError, ImportError) as exc:
        if isinstance(exc, BrokenPipeError):  # `duravoke list | head`
            _silence_stdout()
            return 1
        _error(str(exc) if isinstance(exc, DuravokeError) else _describe(exc))
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        logger.removeHandler(warnings)
    return 1 if warnings.count and status == 0 else status


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--store",
        metavar="SPEC",
        help="a store folder, a PersistedKKV .json file or a postgresql:// DSN"
        " (default: $DURAVOKE_HOME or the user state folder)",
    )
    parser = argparse.ArgumentParser(
        prog="duravoke",
        description="Inspect and manage the workflows that duravoke recorded.",
    )
    parser.add_argument("--version", action="version", version=f"duravoke {__version__}")
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    cmd = commands.add_parser(
        "list", parents=[common], help="list workflows, most recently updated first"
    )
    cmd.add_argument("--json", action="store_true", help="print JSON for scripts")
    cmd.add_argument("--wide", action="store_true", help="do not shorten long ids")
    cmd.set_defaults(command=_list)

    cmd = commands.add_parser("show", parents=[common], help="show a workflow's steps as a tree")
    cmd.add_argument("id", help="the workflow id")
    cmd.add_argument("--json", action="store_true", help="print JSON for scripts")
    cmd.set_defaults(command=_show)

    cmd = commands.add_parser(
        "forget", parents=[common], help="delete a workflow's state, so it starts afresh"
    )
    cmd.add_argument("id", help="the workflow id")
    cmd.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    cmd.set_defaults(command=_forget)

    cmd = commands.add_parser(
        "salvage",
        parents=[common],
        help="keep the intact records of a damaged log or journal, move the damage aside",
    )
    cmd.set_defaults(command=_salvage)

    cmd = commands.add_parser("where", parents=[common], help="print where the store is")
    cmd.set_defaults(command=_where)

    cmd = commands.add_parser(
        "ui", parents=[common], help="serve a page to look at workflows, until Ctrl-C"
    )
    cmd.add_argument(
        "--host",
        default="127.0.0.1",
        help="the address to listen on (default 127.0.0.1: this machine only); another"
        " one lets others read every workflow, and is warned about",
    )
    cmd.add_argument("--port", type=int, default=8765, help="the port (default 8765; 0: any)")
    cmd.add_argument("--open", action="store_true", help="open the page in a browser")
    cmd.set_defaults(command=_ui)
    return parser


def _salvage(args: argparse.Namespace) -> int:
    from ._salvage import salvage

    report = salvage(_store(args))
    if not report.moved:
        print("nothing to salvage: the log and journals of", _safe(report.location), "read cleanly")
        return 0
    print(
        f"kept {report.kept} intact record{'s' * (report.kept != 1)},"
        f" {report.unreadable} byte{'s' * (report.unreadable != 1)} unreadable"
    )
    if report.segment is not None:
        print("the intact frames are now in", _safe(report.segment))
    for path in report.moved:
        print("moved aside (not deleted):", _safe(path))
    return 0


def _store(args: argparse.Namespace) -> Store:
    # An explicit --store is opened as given; otherwise the default store, as the
    # library's default instance would use it.
    return resolve_store(args.store if args.store else None)


def _list(args: argparse.Namespace) -> int:
    store = _store(args)
    workflows = list_workflows(store)
    if args.json:
        _print_json([_workflow_json(w, steps=False) for w in workflows])
        return 0
    if not workflows:
        print("no workflows recorded in", _safe(store.location))
        return 0
    width = max(_WIDTH, _terminal_width())
    ids = [_safe(w.id) for w in workflows]
    rest = 4 * 2 + _STATUS_WIDTH + _STEPS_WIDTH + 2 * _TIME_WIDTH
    id_width = max(2, min(max(_width(i) for i in ids), width - rest))
    if args.wide:
        id_width = max(_width(i) for i in ids)
    print(_row("ID", id_width, "STATUS", "STEPS", "STARTED", "UPDATED"))
    now = datetime.now().astimezone()
    for info, text in zip(workflows, ids, strict=True):
        started, updated = _when(info.started, now), _when(info.updated, now)
        print(
            _row(_shorten(text, id_width), id_width, info.status, info.steps_done, started, updated)
        )
    return 0


def _row(workflow_id: str, id_width: int, *cells: object) -> str:
    status, steps, started, updated = (str(c) for c in cells)
    return (
        f"{_pad(workflow_id, id_width)}  {status:<{_STATUS_WIDTH}}  {steps:>{_STEPS_WIDTH}}"
        f"  {started:<{_TIME_WIDTH}}  {updated}"
    ).rstrip()


def _show(args: argparse.Namespace) -> int:
    info = get_workflow(args.id, _store(args))
    if args.json:
        _print_json(_workflow_json(info, steps=True))
        return 0
    now = datetime.now().astimezone()
    print(f"workflow  {_safe(info.id)}")
    print(f"status    {info.status}" + (f": {_safe(info.error)}" if info.error else ""))
    print(f"runs      {info.runs}")
    print(f"started   {_when(info.started, now, full=True)}")
    print(f"updated   {_when(info.updated, now, full=True)}")
    failed = f", {info.steps_failed} failed" if info.steps_failed else ""
    print(f"steps     {info.steps_done} completed{failed}")
    lines = list(_tree(info.steps))
    if not lines:
        return 0
    label_width = min(48, max(_width(label) for label, _ in lines))
    print()
    for label, step in lines:
        if step is None:
            print(f"{label}  (in progress or interrupted; not recorded)")
            continue
        outcome = step.result_preview if step.status == "completed" else step.error or ""
        print(
            f"{_pad(_shorten(label, label_width), label_width)}  {step.status:<9}"
            f"  {step.duration:>9.3f}s  {_safe(outcome)}".rstrip()
        )
    return 0


def _forget(args: argparse.Namespace) -> int:
    store = _store(args)
    workflow_id: str = args.id
    name = short_repr(workflow_id)
    try:
        info = get_workflow(workflow_id, store)
        what = f"and its {info.steps_done + info.steps_failed} recorded steps"
        if info.status == "running":
            _error(f"workflow {name} is running right now; forget it once it stops.")
            return 1
    except WorkflowNotFoundError:
        raise
    except DuravokeError as exc:  # damaged: forgetting is how one starts afresh
        _warn(str(exc))
        what = "and its damaged state"
    if not args.yes:
        sys.stderr.write(f"Forget workflow {name} {what}? [y/N] ")
        sys.stderr.flush()
        answer = sys.stdin.readline().strip().lower()
        if not sys.stdin.isatty():  # the answer was not echoed: end the prompt's line
            sys.stderr.write("\n")
        if answer not in ("y", "yes"):
            print(f"Kept workflow {name}.")
            return 0
    forget(workflow_id, store)
    print(f"Forgot workflow {name}.")
    return 0


def _ui(args: argparse.Namespace) -> int:
    from ._ui import serve  # the server is loaded only by those who run it

    return serve(_store(args), args.host, args.port, open_browser=args.open)


def _where(args: argparse.Namespace) -> int:
    print(_safe(_store(args).location))
    return 0


# --- output --------------------------------------------------------------------------


def _tree(steps: Sequence[StepInfo]) -> list[tuple[str, StepInfo | None]]:
    """(label, step) per line, children indented under their parent, in start order.

    A step whose parent has no record (the parent was still running when the process
    stopped) hangs under a placeholder line (step None) named after its caller.
    """
    by_sid = {s.sid: s for s in steps}
    children: dict[str | None, list[StepInfo]] = {}
    for step in steps:
        parent = step.parent if step.parent in by_sid else None
        children.setdefault(parent, []).append(step)
    lines: list[tuple[str, StepInfo | None]] = []
    placeholders: set[str] = set()

    def walk(step: StepInfo, depth: int) -> None:
        if step.parent is not None and step.parent not in by_sid:
            if step.parent not in placeholders:  # once per missing parent
                placeholders.add(step.parent)
                depth = max(0, len(step.path) - 1)
                lines.append(("  " * depth + _safe(step.path[-1] if step.path else "?"), None))
            depth = len(step.path)
        lines.append(("  " * depth + _label(step), step))
        for child in children.get(step.sid, ()):
            walk(child, depth + 1)

    for root in children.get(None, ()):
        walk(root, 0)
    return lines


def _label(step: StepInfo) -> str:
    if isinstance(step.args, dict) and all(isinstance(k, str) for k in step.args):
        args = ", ".join(f"{k}={v!r}" for k, v in step.args.items())
    else:
        args = "..." if step.args is None else repr(step.args)
    occurrence = f" #{step.occurrence}" if step.occurrence else ""
    return _safe(f"{step.function}({args}){occurrence}")


def _workflow_json(info: WorkflowInfo, *, steps: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": info.id,
        "status": info.status,
        "steps_done": info.steps_done,
        "steps_failed": info.steps_failed,
        "runs": info.runs,
        "started": _iso(info.started),
        "updated": _iso(info.updated),
        "error": info.error,
    }
    if steps:
        out["steps"] = [_step_json(s) for s in info.steps]
    return out


def _step_json(step: StepInfo) -> dict[str, Any]:
    try:  # back to the recorded (tagged JSON) form, so a tuple stays a tuple
        args = JSONSerializer().encode(step.args, where="args")
    except TypeError:
        args = repr(step.args)
    return {
        "sid": step.sid,
        "parent": step.parent,
        "path": list(step.path),
        "function": step.function,
        "occurrence": step.occurrence,
        "status": step.status,
        "started": _iso(step.started),
        "duration": step.duration,
        "args": args,
        "result_preview": step.result_preview,
        "error": step.error,
    }


def _print_json(data: object) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False))


def _iso(when: datetime | None) -> str | None:
    return None if when is None else when.isoformat()


def _when(when: datetime | None, now: datetime, *, full: bool = False) -> str:
    """Local time, compact: "01-31 12:34" this year, "2025-01-31" before."""
    if when is None:
        return "-"
    local = when.astimezone()
    if full:
        return local.strftime("%Y-%m-%d %H:%M:%S %Z").strip()
    return local.strftime("%m-%d %H:%M" if local.year == now.year else "%Y-%m-%d")


def _safe(text: str) -> str:
    """``text`` with control and invisible characters escaped, so it stays on its line."""
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch.isprintable():
            out.append(ch)
        elif ch in "\n\r\t":
            out.append(repr(ch)[1:-1])
        else:
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
    return "".join(out)


def _char_width(ch: str) -> int:
    if unicodedata.combining(ch):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def _width(text: str) -> int:
    """The number of terminal columns ``text`` takes (wide characters count twice)."""
    return sum(_char_width(ch) for ch in text)


def _shorten(text: str, width: int) -> str:
    """``text`` cut in the middle with an ellipsis to fit ``width`` columns.

    The middle, because ids generated from a function name end with a hash that tells
    the calls apart.
    """
    if _width(text) <= width:
        return text
    tail_width = (width - 1) // 3
    head_width = width - 1 - tail_width
    head = _take(text, head_width)
    tail = _take(text[::-1], tail_width)[::-1]
    return f"{head}\u2026{tail}"


def _take(text: str, width: int) -> str:
    used = 0
    for i, ch in enumerate(text):
        used += _char_width(ch)
        if used > width:
            return text[:i]
    return text


def _pad(text: str, width: int) -> str:
    return text + " " * max(0, width - _width(text))


def _terminal_width() -> int:
    # Only a real terminal is measured: piped output keeps the 80 columns scripts expect.
    if not sys.stdout.isatty():
        return _WIDTH
    return shutil.get_terminal_size((_WIDTH, 24)).columns


def _describe(exc: BaseException) -> str:
    """One sentence for an error that is not ours (OSError, ImportError...)."""
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}{where}."
    return f"{exc}."


def _error(message: str) -> None:
    print(f"duravoke: error: {_safe(message)}", file=sys.stderr)


def _warn(message: str) -> None:
    print(f"duravoke: warning: {_safe(message)}", file=sys.stderr)


def _silence_stdout() -> None:
    # Python would report the broken pipe again when flushing stdout at exit.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


class _Warnings(logging.Handler):
    """Prints the library's warnings (e.g. a skipped damaged file) and counts them."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        _warn(record.getMessage())
