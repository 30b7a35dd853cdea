"""The ``duravoke`` command: list, show, forget and locate recorded workflows; resume,
retry, cancel and send messages to them; serve a page to look at them (``ui``).

Exit status: 0 on success, 1 when a workflow is not found, running, or damaged (or the
store cannot be read), 2 for a usage error. ``resume``: 0 when everything due completed
or went back to waiting, 1 when some failed or could not be run. Errors are one line on
stderr.
"""

from __future__ import annotations

import argparse
import importlib
import io
import json
import logging
import os
import re
import shutil
import sys
import unicodedata
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from ._errors import DuravokeError, WorkflowNotFoundError
from ._info import (
    StepInfo,
    WorkflowInfo,
    forget,
    forget_many,
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
    cmd.add_argument(
        "--status",
        action="append",
        metavar="S",
        help="only workflows with this status (repeat, or separate with commas)",
    )
    cmd.add_argument("--prefix", metavar="P", help="only workflows whose id starts with P")
    cmd.add_argument("--limit", type=_count, metavar="N", help="at most N workflows, newest first")
    cmd.set_defaults(command=_list)

    cmd = commands.add_parser("show", parents=[common], help="show a workflow's steps as a tree")
    cmd.add_argument("id", help=_ID_HELP)
    cmd.add_argument("--json", action="store_true", help="print JSON for scripts")
    cmd.set_defaults(command=_show)

    cmd = commands.add_parser(
        "forget",
        parents=[common],
        help="delete a workflow's state (or many, by status and age), so it starts afresh",
    )
    cmd.add_argument("id", nargs="?", help=_ID_HELP + " (or use --status)")
    cmd.add_argument(
        "--status",
        action="append",
        choices=[
            "completed",
            "failed",
            "cancelled",
            "interrupted",
            "pending",
            "sleeping",
            "waiting",
        ],
        help="forget every workflow with this status (repeatable)",
    )
    cmd.add_argument(
        "--older-than",
        metavar="AGE",
        type=_age,
        help="with --status: only those not updated for AGE (e.g. 30d, 12h, 15m, 90s)",
    )
    cmd.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    cmd.set_defaults(command=_forget, parser=cmd)

    cmd = commands.add_parser(
        "resume",
        parents=[common],
        help="run every due workflow once (for cron): pending, interrupted, waking",
    )
    cmd.add_argument(
        "--import",
        dest="imports",
        metavar="MODULE",
        action="append",
        default=[],
        help="import MODULE first, so its decorated functions can be resumed (repeatable)",
    )
    cmd.add_argument("--concurrency", type=int, default=8, help="workflows at once (8)")
    cmd.add_argument(
        "--max-attempts", type=int, default=5, help="runs before a workflow stays failed (5)"
    )
    cmd.add_argument(
        "--backoff",
        type=float,
        default=1.0,
        help="seconds before the second retry of a failed run, doubling after (1.0)",
    )
    cmd.add_argument("--json", action="store_true", help="print the report as JSON")
    cmd.set_defaults(command=_resume)

    cmd = commands.add_parser(
        "retry", parents=[common], help="make a failed workflow due again (attempts reset)"
    )
    cmd.add_argument("id", help=_ID_HELP)
    cmd.set_defaults(command=_retry)

    cmd = commands.add_parser(
        "cancel", parents=[common], help="cancel a workflow: it never runs again"
    )
    cmd.add_argument("id", help=_ID_HELP)
    cmd.set_defaults(command=_cancel)

    cmd = commands.add_parser(
        "send", parents=[common], help="send a message (a JSON value) to a workflow"
    )
    cmd.add_argument("id", help="the workflow id, in full (the workflow need not exist yet)")
    cmd.add_argument("topic", help="the topic it receives the message on")
    cmd.add_argument("value", help="the value, as JSON (e.g. '{\"ok\": true}' or '42')")
    cmd.set_defaults(command=_send)

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


_ID_HELP = "the workflow id, a unique prefix of it, or its shortened form as `list` shows it"


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(text)
    return value


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
    workflows = _filtered(list_workflows(store), args)
    if args.json:
        _print_json([_workflow_json(w, steps=False) for w in workflows])
        return 0
    if not workflows:
        filtered = args.status or args.prefix or args.limit is not None
        print("no workflows", "match" if filtered else "recorded in", _safe(store.location))
        return 0
    width = max(_WIDTH, _terminal_width())
    ids = [_safe(w.id) if w.id else "(unreadable)" for w in workflows]
    rest = 4 * 2 + _STATUS_WIDTH + _STEPS_WIDTH + 2 * _TIME_WIDTH
    id_width = max(2, min(max(_width(i) for i in ids), width - rest))
    if args.wide:
        id_width = max(_width(i) for i in ids)
    print(_row("ID", id_width, "STATUS", "STEPS", "STARTED", "UPDATED"))
    now = datetime.now().astimezone()
    for info, text in zip(workflows, ids, strict=True):
        started, updated = _when(info.started, now), _when(info.updated, now)
        if info.status == "corrupt":  # where to look: the damaged file
            started, updated = "-", _safe(info.path or "")
        row = _row(
            _shorten(text, id_width), id_width, info.status, info.steps_done, started, updated
        )
        print(f"{row}  {_waiting_note(info, now)}".rstrip())
    return 0


def _filtered(workflows: list[WorkflowInfo], args: argparse.Namespace) -> list[WorkflowInfo]:
    if args.status:
        wanted = {s.strip() for value in args.status for s in value.split(",") if s.strip()}
        workflows = [w for w in workflows if w.status in wanted]
    if args.prefix:
        workflows = [w for w in workflows if w.id.startswith(args.prefix)]
    return workflows if args.limit is None else workflows[: args.limit]


def _resolve_id(text: str, store: Store) -> str:
    """The workflow id that ``text`` names: itself, a unique prefix, or ``head…tail``.

    ``list`` shortens long ids in the middle with an ellipsis; pasting that back works.

    Text that matches nothing comes back as it is, for :func:`get_workflow` to report.

    Raises:
        WorkflowNotFoundError: several workflows match (the message lists some of them).
    """
    if not text:
        return text
    try:
        if store.read(text) is not None:
            return text
    except DuravokeError:
        return text  # damaged: get_workflow() says how, and forget() still works
    head, ellipsis, tail = text.partition("\u2026")
    candidates = []
    try:
        ids = store.workflow_ids()
    except DuravokeError:
        return text  # damaged: get_workflow() on the id says how
    for workflow_id in ids:
        shown = _safe(workflow_id)  # what list printed, escapes and all
        if ellipsis:
            if (
                len(shown) >= len(head) + len(tail)
                and shown.startswith(head)
                and shown.endswith(tail)
            ):
                candidates.append(workflow_id)
        elif workflow_id.startswith(text) or shown.startswith(text):
            candidates.append(workflow_id)
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        return text  # get_workflow() reports it as not found
    listed = ", ".join(short_repr(c, 40) for c in sorted(candidates)[:5])
    more = f" and {len(candidates) - 5} more" if len(candidates) > 5 else ""
    raise WorkflowNotFoundError(
        f"{short_repr(text)} matches {len(candidates)} workflows: {listed}{more};"
        " give more of the id (`duravoke list --wide` shows them whole).",
        workflow_id=text,
    )


def _row(workflow_id: str, id_width: int, *cells: object) -> str:
    status, steps, started, updated = (str(c) for c in cells)
    return (
        f"{_pad(workflow_id, id_width)}  {status:<{_STATUS_WIDTH}}  {steps:>{_STEPS_WIDTH}}"
        f"  {started:<{_TIME_WIDTH}}  {updated}"
    ).rstrip()


def _show(args: argparse.Namespace) -> int:
    store = _store(args)
    info = get_workflow(_resolve_id(args.id, store), store)
    if args.json:
        _print_json(_workflow_json(info, steps=True))
        return 0
    now = datetime.now().astimezone()
    print(f"workflow  {_safe(info.id)}")
    note = _waiting_note(info, now, full=True)
    print(
        f"status    {info.status}"
        + (f" {note}" if note else "")
        + (f": {_safe(info.error)}" if info.error else "")
    )
    if info.entry is not None:
        print(f"entry     {_safe(info.entry)} (attempts: {info.attempts})")
    print(f"runs      {info.runs}")
    print(f"started   {_when(info.started, now, full=True)}")
    print(f"updated   {_when(info.updated, now, full=True)}")
    failed = f", {info.steps_failed} failed" if info.steps_failed else ""
    print(f"steps     {info.steps_done} completed{failed}")
    lines = list(_tree(info.steps))
    if not lines:
        return 0
    label_width = min(48, max(_width(label) for label, _ in lines))
    # A step with no record of its end is in flight: still running, or it was when its
    # run stopped (it runs again next time).
    in_flight = "running" if info.status == "running" else "in flight when the run stopped"
    print()
    for label, step in lines:
        if step is None:
            print(f"{_pad(_shorten(label, label_width), label_width)}  {in_flight}")
            continue
        if step.status in ("running", "interrupted"):
            print(f"{_pad(_shorten(label, label_width), label_width)}  {in_flight}")
            continue
        outcome = step.result_preview if step.status == "completed" else step.error or ""
        print(
            f"{_pad(_shorten(label, label_width), label_width)}  {step.status:<9}"
            f"  {step.duration:>9.3f}s  {_safe(outcome)}".rstrip()
        )
    return 0


def _age(text: str) -> timedelta:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text)
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not an age like 30d, 12h, 15m or 90s")
    unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
    return timedelta(**{unit[match[2]]: float(match[1])})


def _forget(args: argparse.Namespace) -> int:
    usage: argparse.ArgumentParser = args.parser
    if args.status:
        if args.id is not None:
            usage.error("give a workflow id or --status, not both")
        return _forget_many(args)
    if args.id is None:
        usage.error("give a workflow id, or --status (with --older-than) to forget many")
    if args.older_than is not None:
        usage.error("--older-than goes with --status")
    store = _store(args)
    workflow_id = _resolve_id(args.id, store)
    name = short_repr(workflow_id)
    try:
        info = get_workflow(workflow_id, store)
        count = info.steps_done + info.steps_failed
        what = f"and its {count} recorded step{'' if count == 1 else 's'}"
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


def _forget_many(args: argparse.Namespace) -> int:
    store = _store(args)
    statuses = sorted(set(args.status))
    age = "" if args.older_than is None else f" not updated for {args.older_than}"
    if not args.yes:
        sys.stderr.write(f"Forget every {'/'.join(statuses)} workflow{age}? [y/N] ")
        sys.stderr.flush()
        answer = sys.stdin.readline().strip().lower()
        if not sys.stdin.isatty():
            sys.stderr.write("\n")
        if answer not in ("y", "yes"):
            print("Kept them.")
            return 0
    forgotten = forget_many(store, statuses=statuses, older_than=args.older_than)
    print(f"Forgot {len(forgotten)} workflow{'s' if len(forgotten) != 1 else ''}.")
    return 0


def _resume(args: argparse.Namespace) -> int:
    from ._runner import report_json, report_text, resume

    sys.path.insert(0, os.getcwd())  # as `python -m` would: modules beside the caller
    for module in args.imports:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            _error(f"cannot import {module!r} (--import): {exc}")
            return 2
    if args.concurrency < 1 or args.max_attempts < 1 or not args.backoff >= 0:
        _error("--concurrency and --max-attempts must be at least 1, --backoff at least 0")
        return 2
    report = resume(
        _store(args),
        concurrency=args.concurrency,
        max_attempts=args.max_attempts,
        backoff=args.backoff,
    )
    print(report_json(report) if args.json else _safe(report_text(report)))
    return report.exit_code


def _retry(args: argparse.Namespace) -> int:
    from ._runner import retry

    store = _store(args)
    workflow_id = _resolve_id(args.id, store)
    retry(workflow_id, store)
    print(f"Workflow {short_repr(workflow_id)} is due again; a runner will run it.")
    return 0


def _cancel(args: argparse.Namespace) -> int:
    from ._runner import cancel

    store = _store(args)
    workflow_id = _resolve_id(args.id, store)
    done = cancel(workflow_id, store)
    name = short_repr(workflow_id)
    if done == "requested":
        print(f"Workflow {name} is running; it stops at its next step.")
    else:
        print(f"Cancelled workflow {name}.")
    return 0


def _send(args: argparse.Namespace) -> int:
    from ._waiting import send_message

    try:
        value = json.loads(args.value)
    except ValueError as exc:
        _error(f"the value is not JSON: {exc}")
        return 2
    seq = send_message(_store(args), JSONSerializer(), args.id, args.topic, value)
    print(f"Sent message #{seq} on {args.topic!r} to workflow {short_repr(args.id)}.")
    return 0


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


def _waiting_note(info: WorkflowInfo, now: datetime, *, full: bool = False) -> str:
    """``until <time>`` for a sleeping workflow, ``for <topic> [until <time>]`` if waiting."""
    until = "" if info.wake is None else f"until {_when(info.wake, now, full=full)}"
    if info.status == "sleeping":
        return until
    if info.status == "waiting":
        return f"for {_safe(repr(info.topic))} {until}".rstrip()
    return ""


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
        "wake": _iso(info.wake),
        "topic": info.topic,
        "attempts": info.attempts,
        "entry": info.entry,
    }
    if info.path is not None:
        out["path"] = info.path
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
        "result": step.result_json,
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
