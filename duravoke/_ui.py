"""The local dashboard behind ``duravoke ui``: a page to look at recorded workflows.

Standard library only (``http.server``), so users who never run it install nothing. The
page is one HTML file with a script and a style sheet shipped as package data in
``_ui_static``; the script builds every element with ``textContent``, never ``innerHTML``,
so ids, step names and results are shown as text whatever they hold.

The API, all JSON:

- ``GET /api/workflows?status=&q=&offset=&limit=``: one page of the list, with counts.
- ``GET /api/workflows/<key>``: one workflow with its steps (results not included).
- ``GET /api/workflows/<key>/steps/<sid>``: one step's arguments and result, pretty.
- ``POST /api/workflows/<key>/<action>``: an action from :func:`actions` (``forget``...).

A ``key`` is a hash of the workflow id: ids may be 10 kB long and hold anything, which
no URL should carry.

Who may do what: the server binds 127.0.0.1 unless told otherwise; every request must
name this server in its ``Host`` header (a page on another site that re-points its own
domain at 127.0.0.1, "DNS rebinding", is refused); an action must be a POST with a JSON
body, the per-server token the page carries in ``X-Duravoke-Token``, and no foreign
``Origin``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import hmac
import ipaddress
import json
import logging
import math
import secrets
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from datetime import time as dtime
from decimal import Decimal
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from importlib.abc import Traversable
from pathlib import PurePath
from types import FrameType
from typing import IO, Any
from urllib.parse import parse_qs, unquote, urlsplit
from uuid import UUID

from ._errors import CorruptStateError, DuravokeError, WorkflowBusyError, WorkflowNotFoundError
from ._info import StepInfo, WorkflowInfo, forget, get_workflow
from ._runner import retry
from ._serializer import JSONSerializer
from ._store import PerStore, Store
from ._waiting import send_message

__all__ = [
    "DEFAULT_PORT",
    "Action",
    "UIServer",
    "actions",
    "is_loopback",
    "make_server",
    "serve",
]

#: The port ``duravoke ui`` listens on unless ``--port`` says otherwise.
DEFAULT_PORT = 8765

#: Statuses in the order the page lists them; any other status a store reports follows
#: these, so statuses added by later versions show up without a change here.
STATUS_ORDER = (
    "running",
    "pending",
    "sleeping",
    "waiting",
    "failed",
    "interrupted",
    "corrupt",
    "cancelled",
    "completed",
)
#: Statuses that change by themselves: while one is shown, the page refreshes.
LIVE_STATUSES = frozenset({"running", "pending", "sleeping", "waiting"})

_PAGE_LIMIT = 50
_PAGE_LIMIT_MAX = 500
_BODY_MAX = 1_000_000  # bytes of a POST body
_TEXT_MAX = 1_000_000  # characters of a pretty result sent to the page
_STATIC = {
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/app.css": ("app.css", "text/css; charset=utf-8"),
}
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_DECODER = JSONSerializer()
_KNOWN_WORKFLOW_FIELDS = frozenset(
    {"id", "status", "steps_done", "steps_failed", "runs", "started", "updated", "error", "steps"}
)
_KNOWN_STEP_FIELDS = frozenset(
    {
        "sid",
        "parent",
        "path",
        "function",
        "occurrence",
        "status",
        "started",
        "duration",
        "args",
        "result_preview",
        "error",
        "run",
        "result",
    }
)
_logger = logging.getLogger("duravoke")


# --- the list --------------------------------------------------------------------------


def workflow_key(workflow_id: str) -> str:
    """The short, URL-safe name of a workflow in the page's links and the API."""
    data = workflow_id.encode("utf-8", "surrogatepass")
    return hashlib.sha256(data).hexdigest()[:32]


@dataclass(frozen=True)
class _Row:
    """One line of the list: a workflow, or a damaged one that could not be read."""

    key: str
    id: str | None  # None: a damaged file whose ids cannot be read
    status: str
    info: WorkflowInfo | None
    error: str | None = None
    path: str | None = None


@dataclass(frozen=True)
class _Page:
    rows: list[_Row]
    total: int  # rows matching the filter, over every page
    counts: dict[str, int]  # per status, over the rows matching the search
    scanned: float  # time.time() of the scan the page comes from


class _Scan:
    """The last full reading of a store, reused for a while so paging costs nothing.

    Reading every workflow is slow for big stores (seconds for 10,000). A scan is reused
    for at least two seconds, and for five times what it cost, so a page that refreshes
    itself never keeps the store busy more than a fifth of the time.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()  # guards the fields below, held briefly
        self.scanning = threading.Lock()  # held while the store is read
        self.rows: list[_Row] = []
        self.by_key: dict[str, _Row] = {}
        self.at = -math.inf  # time.monotonic() of the scan
        self.wall = 0.0
        self.cost = 0.0

    def fresh_enough(self) -> bool:
        with self.lock:
            return time.monotonic() - self.at < max(2.0, 5 * self.cost)


_scan_of: PerStore[_Scan] = PerStore(lambda _store: _Scan())


def _page_of_workflows(
    store: Store, status: str | None, query: str, offset: int, limit: int, *, fresh: bool = False
) -> _Page:
    """One page of the list: newest first, filtered by status and by an id substring.

    Every listing goes through here. Today it reads every workflow (see :class:`_Scan`);
    a store with an index can answer it without doing so.

    Args:
        store: the store to list.
        status: only workflows with this status, or None for all.
        query: only ids containing this text (case-insensitive); "" for all.
        offset: how many matching rows to skip.
        limit: the most rows to return.
        fresh: read the store now even if the last scan is recent (after an action).
    """
    scan = _scan_of(store)
    # One scan at a time; while it runs, a workflow's page (which needs only `lock`)
    # still opens at once.
    with scan.scanning:
        if fresh or not scan.fresh_enough():
            t0 = time.monotonic()
            rows = _read_all(store)
            with scan.lock:
                scan.rows = rows
                scan.by_key = {row.key: row for row in rows}
                scan.at = time.monotonic()
                scan.cost = scan.at - t0
                scan.wall = time.time()
    with scan.lock:
        rows, wall = scan.rows, scan.wall
    needle = query.casefold()
    matching = [r for r in rows if needle in (r.id or r.path or "").casefold()] if query else rows
    counts: dict[str, int] = {}
    for row in matching:
        counts[row.status] = counts.get(row.status, 0) + 1
    if status:
        matching = [r for r in matching if r.status == status]
    return _Page(matching[offset : offset + limit], len(matching), counts, wall)


def _read_all(store: Store) -> list[_Row]:
    """Every workflow in ``store``, newest first; damaged ones as rows of status corrupt."""
    unreadable = _UnreadableFiles()
    _logger.addFilter(unreadable)
    try:
        ids = store.workflow_ids()
    finally:
        _logger.removeFilter(unreadable)
    rows: list[_Row] = []
    for workflow_id in ids:
        key = workflow_key(workflow_id)
        try:
            info = get_workflow(workflow_id, store)
        except WorkflowNotFoundError:
            continue  # forgotten since it was listed
        except CorruptStateError as exc:
            rows.append(_Row(key, workflow_id, "corrupt", None, str(exc), exc.path))
            continue
        rows.append(_Row(key, workflow_id, info.status, info))
    rows.sort(key=lambda r: r.info.updated.timestamp() if r.info and r.info.updated else 0.0)
    rows.reverse()
    # A state file too damaged to say which workflows it holds: listed, so it is seen.
    rows[:0] = (
        _Row(workflow_key("\0file:" + path), None, "corrupt", None, message, path)
        for path, message in unreadable.found
    )
    return rows


class _UnreadableFiles(logging.Filter):
    """Takes this thread's "skipping unreadable state file" warnings for rows of the list.

    A filter on the logger, so that they are not also printed: the page shows them, and a
    page that refreshes itself would repeat them in the terminal every few seconds.
    """

    def __init__(self) -> None:
        super().__init__()
        self.thread = threading.get_ident()
        self.found: list[tuple[str, str]] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.thread != self.thread or not str(record.msg).startswith("skipping unreadable"):
            return True
        path = str(record.args[0]) if isinstance(record.args, tuple) and record.args else ""
        message = (
            f"{record.getMessage()}: it is damaged and none of its workflows can be read;"
            " `duravoke forget ID` deletes a workflow whose id you know"
        )
        self.found.append((path, message))
        return False


def _find(store: Store, key: str) -> _Row | None:
    """The row of the workflow whose key is ``key``, reading the store if need be."""
    scan = _scan_of(store)
    with scan.lock:
        row = scan.by_key.get(key)
    if row is not None and row.id is None:
        return row
    workflow_id = row.id if row is not None else None
    if workflow_id is None:  # started since the last scan, or the page was bookmarked
        workflow_id = next((i for i in store.workflow_ids() if workflow_key(i) == key), None)
        if workflow_id is None:
            return None
    try:
        info = get_workflow(workflow_id, store)
    except WorkflowNotFoundError:
        return None
    except CorruptStateError as exc:
        return _Row(key, workflow_id, "corrupt", None, str(exc), exc.path)
    return _Row(key, workflow_id, info.status, info)


def _refresh_row(store: Store, key: str) -> None:
    """Read one workflow again into the last scan, so the list shows what an action did."""
    row = _find(store, key)
    scan = _scan_of(store)
    with scan.lock:
        if row is None:
            scan.rows = [r for r in scan.rows if r.key != key]
            scan.by_key.pop(key, None)
        elif key in scan.by_key:
            scan.rows = [row if r.key == key else r for r in scan.rows]
            scan.by_key[key] = row
        else:
            scan.at = -math.inf  # new to the scan: read everything next time


# --- JSON for the page -----------------------------------------------------------------


def _iso(when: datetime | None) -> str | None:
    return None if when is None or when.year < 1000 else when.isoformat()


def _plain(value: object, depth: int = 0) -> Any:
    """``value`` as plain JSON for people: tuples as lists, dates as ISO text, others repr."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if depth > 200:
        return "..."
    if isinstance(value, dict):
        return {
            k if isinstance(k, str) else repr(k): _plain(v, depth + 1) for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [_plain(v, depth + 1) for v in value]
    if isinstance(value, (set, frozenset)):
        return [_plain(v, depth + 1) for v in sorted(value, key=repr)]
    if isinstance(value, (datetime, date, dtime)):
        return value.isoformat()
    if isinstance(value, (timedelta, UUID, Decimal, PurePath)):
        return str(value)
    return repr(value)


def _pretty(value: object) -> str:
    text = json.dumps(_plain(value), indent=2, ensure_ascii=False)
    if len(text) > _TEXT_MAX:
        text = text[:_TEXT_MAX] + f"\n... ({len(text) - _TEXT_MAX:,} more characters not shown)"
    return text


def _extra(obj: object, known: frozenset[str]) -> dict[str, Any]:
    """Fields a later version added to WorkflowInfo or StepInfo (a wake time, a topic...)."""
    return {
        f.name: _plain(getattr(obj, f.name))
        for f in dataclasses.fields(obj)  # type: ignore[arg-type]
        if f.name not in known
    }


def _row_json(row: _Row) -> dict[str, Any]:
    info = row.info
    out: dict[str, Any] = {
        "key": row.key,
        "id": row.id,
        "status": row.status,
        "error": row.error,
        "path": row.path,
    }
    if info is not None:
        out.update(
            steps_done=info.steps_done,
            steps_failed=info.steps_failed,
            runs=info.runs,
            started=_iso(info.started),
            updated=_iso(info.updated),
            error=info.error,
            extra=_extra(info, _KNOWN_WORKFLOW_FIELDS),
        )
    return out


def _step_json(step: StepInfo) -> dict[str, Any]:
    return {
        "sid": step.sid,
        "parent": step.parent,
        "path": list(step.path),
        "function": step.function,
        "occurrence": step.occurrence,
        "status": step.status,
        "started": _iso(step.started),
        "duration": step.duration,
        "run": step.run,
        "args": _plain(step.args),
        "result_preview": step.result_preview,
        "error": step.error,
        "extra": _extra(step, _KNOWN_STEP_FIELDS),
    }


def _step_detail(step: StepInfo) -> dict[str, Any]:
    result = None
    if step.status == "completed":
        try:
            result = _pretty(_DECODER.decode(step.result_json))
        except (ValueError, TypeError):  # recorded by another serializer: show it as stored
            result = _pretty(step.result_json)
    return {
        "sid": step.sid,
        "args": None if step.args is None else _pretty(step.args),
        "result": result,
        "recorded": None if step.result_json is None else _pretty(step.result_json),
        "error": step.error,
    }


# --- actions ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Action:
    """Something the page can do to a workflow, after asking.

    Attributes:
        name: the name in the URL (``POST /api/workflows/<key>/<name>``).
        label: the button's text.
        confirm: the question the page asks first; ``{id}`` stands for the workflow id.
        run: does it: ``run(workflow_id, store, fields)`` returns a sentence for the page.
        fields: what the user fills in first: (name, kind), kind ``"text"`` or ``"json"``.
        statuses: the statuses it applies to, or None for all.
    """

    name: str
    label: str
    confirm: str
    run: Callable[[str, Store, Mapping[str, Any]], str]
    fields: tuple[tuple[str, str], ...] = ()
    statuses: frozenset[str] | None = None

    def describe(self) -> dict[str, Any]:
        """The action as the page sees it."""
        return {
            "name": self.name,
            "label": self.label,
            "confirm": self.confirm,
            "fields": [{"name": n, "kind": k} for n, k in self.fields],
            "statuses": None if self.statuses is None else sorted(self.statuses),
        }


def _forget(workflow_id: str, store: Store, fields: Mapping[str, Any]) -> str:
    forget(workflow_id, store)
    return "Forgotten: its next run starts afresh."


def _retry(workflow_id: str, store: Store, fields: Mapping[str, Any]) -> str:
    retry(workflow_id, store)
    return "Due again: a runner will start it."


def _send(workflow_id: str, store: Store, fields: Mapping[str, Any]) -> str:
    topic = fields.get("topic")
    if not isinstance(topic, str) or not topic:
        raise ValueError("a message needs a topic")
    send_message(store, JSONSerializer(), workflow_id, topic, fields.get("value"))
    return f"Sent on topic {topic!r}."


def actions() -> dict[str, Action]:
    """The actions the page offers, by name: one entry each."""
    table = [
        Action(
            "forget",
            "Forget",
            "Forget workflow {id} and everything recorded for it? Its next run starts afresh;"
            " this cannot be undone.",
            _forget,
            statuses=frozenset(STATUS_ORDER) - {"running"},
        ),
        Action(
            "retry",
            "Retry",
            "Make workflow {id} due again, so that a runner runs it?",
            _retry,
            statuses=frozenset({"failed", "cancelled"}),
        ),
        Action(
            "send",
            "Send a message",
            "Send this message to workflow {id}?",
            _send,
            fields=(("topic", "text"), ("value", "json")),
            statuses=frozenset(STATUS_ORDER) - {"completed", "corrupt", "cancelled"},
        ),
    ]
    return {a.name: a for a in table}


# --- the server ------------------------------------------------------------------------


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the page on this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _is_wildcard(host: str) -> bool:
    return host.strip("[]") in ("0.0.0.0", "::", "")  # noqa: S104 (recognising, not binding)


class UIServer(ThreadingHTTPServer):
    """The dashboard's HTTP server for one store.

    Attributes:
        store: the store it shows.
        token: the secret the page sends with every action.
        actions: the actions it offers, by name.
        url: where to point a browser.
    """

    daemon_threads = True  # a browser's idle keep-alive must not hold up Ctrl-C

    def __init__(self, store: Store, host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> None:
        self.store = store
        self.token = secrets.token_urlsafe(32)
        self.actions = actions()
        bare = host.strip("[]")
        if ":" in bare:
            self.address_family = socket.AF_INET6
        super().__init__((bare, port), _Handler)
        port = self.server_address[1]
        shown = f"[{bare}]" if ":" in bare else bare
        self.url = f"http://{'127.0.0.1' if _is_wildcard(bare) else shown}:{port}/"
        names = {"127.0.0.1", "localhost", "[::1]", shown.lower()}
        self._hosts = {f"{n}:{port}" for n in names}
        if port == 80:
            self._hosts |= names
        self._any_ip = _is_wildcard(bare)
        if self._any_ip:
            for name in (socket.gethostname(), socket.getfqdn()):
                self._hosts.add(f"{name.lower()}:{port}")

    def host_allowed(self, host: str) -> bool:
        """Whether a request's ``Host`` header names this server (not a rebound domain)."""
        host = host.strip().lower()
        if host in self._hosts:
            return True
        if self._any_ip:  # bound to every interface: any address of this machine
            name, _, port = host.rpartition(":")
            if port == str(self.server_address[1]):
                with contextlib.suppress(ValueError):
                    ipaddress.ip_address(name.strip("[]"))
                    return True
        return False


class _RefusedError(Exception):
    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Handler(BaseHTTPRequestHandler):
    server: UIServer
    _raw = b""
    server_version = "duravoke-ui"
    sys_version = ""
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # a page refreshing itself would fill the terminal

    # --- dispatch ----------------------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch(self._get)

    def do_HEAD(self) -> None:
        self._dispatch(self._get)

    def do_POST(self) -> None:
        self._dispatch(self._post)

    def do_PUT(self) -> None:
        self._dispatch(self._not_allowed)

    do_DELETE = do_PATCH = do_PUT  # noqa: N815

    def _dispatch(self, method: Callable[[list[str], dict[str, list[str]]], None]) -> None:
        try:
            self._raw = self._read_body()
            if not self.server.host_allowed(self.headers.get("Host", "")):
                raise _RefusedError(
                    HTTPStatus.FORBIDDEN, "this server answers to its own address only"
                )
            parts = urlsplit(self.path)
            segments = [unquote(s) for s in parts.path.split("/")[1:]]
            method(segments, parse_qs(parts.query))
        except _RefusedError as exc:
            self._json({"error": str(exc)}, exc.status)
        except (WorkflowBusyError, WorkflowNotFoundError) as exc:
            status = HTTPStatus.CONFLICT if isinstance(exc, WorkflowBusyError) else 404
            self._json({"error": str(exc)}, HTTPStatus(status))
        except (DuravokeError, OSError, ValueError) as exc:
            if isinstance(exc, (BrokenPipeError, ConnectionResetError)):
                return  # the browser went away
            self._json({"error": str(exc) or repr(exc)}, HTTPStatus.INTERNAL_SERVER_ERROR)

    def _not_allowed(self, segments: list[str], query: dict[str, list[str]]) -> None:
        raise _RefusedError(HTTPStatus.METHOD_NOT_ALLOWED, "not allowed")

    # --- reading -----------------------------------------------------------------------

    def _get(self, segments: list[str], query: dict[str, list[str]]) -> None:
        if segments == [""]:
            self._page()
        elif len(segments) == 2 and self.path in _STATIC:
            name, kind = _STATIC[self.path]
            self._send(_static(name).read_bytes(), kind)
        elif segments[:2] == ["api", "workflows"] and len(segments) == 2:
            self._list(query)
        elif segments[:2] == ["api", "workflows"] and len(segments) == 3:
            self._workflow(segments[2])
        elif segments[:2] == ["api", "workflows"] and len(segments) == 5 and segments[3] == "steps":
            self._step(segments[2], segments[4])
        elif segments[:2] == ["api", "workflows"] and len(segments) == 4:
            raise _RefusedError(HTTPStatus.METHOD_NOT_ALLOWED, "actions are POST only")
        else:
            raise _RefusedError(HTTPStatus.NOT_FOUND, "no such page")

    def _page(self) -> None:
        html = _static("index.html").read_text("utf-8")
        # The token is URL-safe base64: nothing in it needs escaping in an attribute.
        body = html.replace("{{TOKEN}}", self.server.token).encode("utf-8")
        self._send(body, "text/html; charset=utf-8")

    def _list(self, query: dict[str, list[str]]) -> None:
        def arg(name: str, default: str = "") -> str:
            return query.get(name, [default])[0]

        try:
            offset = max(0, int(arg("offset", "0")))
            limit = min(_PAGE_LIMIT_MAX, max(1, int(arg("limit", str(_PAGE_LIMIT)))))
        except ValueError:
            raise _RefusedError(HTTPStatus.BAD_REQUEST, "offset and limit are numbers") from None
        status = arg("status") or None
        page = _page_of_workflows(
            self.server.store, status, arg("q"), offset, limit, fresh=arg("fresh") == "1"
        )
        known = [s for s in STATUS_ORDER if s in page.counts]
        statuses = known + sorted(set(page.counts) - set(known))
        self._json(
            {
                "store": self.server.store.location,
                "rows": [_row_json(r) for r in page.rows],
                "total": page.total,
                "offset": offset,
                "limit": limit,
                "counts": {s: page.counts[s] for s in statuses},
                "live": sorted(LIVE_STATUSES),
                "scanned": datetime.fromtimestamp(page.scanned).astimezone().isoformat(),
            }
        )

    def _workflow(self, key: str) -> None:
        row = self._row(key)
        out = _row_json(row)
        out["store"] = self.server.store.location
        out["steps"] = [] if row.info is None else [_step_json(s) for s in row.info.steps]
        out["actions"] = [
            a.describe()
            for a in self.server.actions.values()
            if row.id is not None and (a.statuses is None or row.status in a.statuses)
        ]
        out["live"] = row.status in LIVE_STATUSES
        self._json(out)

    def _step(self, key: str, sid: str) -> None:
        row = self._row(key)
        steps = row.info.steps if row.info is not None else ()
        step = next((s for s in steps if s.sid == sid), None)
        if step is None:
            raise _RefusedError(HTTPStatus.NOT_FOUND, "no such step")
        self._json(_step_detail(step))

    def _row(self, key: str) -> _Row:
        row = _find(self.server.store, key)
        if row is None:
            raise _RefusedError(HTTPStatus.NOT_FOUND, "no such workflow (forgotten?)")
        return row

    # --- acting ------------------------------------------------------------------------

    def _post(self, segments: list[str], query: dict[str, list[str]]) -> None:
        self._check_post()
        if segments[:2] != ["api", "workflows"] or len(segments) != 4:
            raise _RefusedError(HTTPStatus.NOT_FOUND, "no such action")
        action = self.server.actions.get(segments[3])
        if action is None:
            raise _RefusedError(HTTPStatus.NOT_FOUND, f"no action {segments[3]!r} in this version")
        fields = self._body()
        row = self._row(segments[2])
        if row.id is None:
            raise _RefusedError(
                HTTPStatus.CONFLICT, "this damaged file names no workflow to act on"
            )
        try:
            message = action.run(row.id, self.server.store, fields)
        except (WorkflowBusyError, WorkflowNotFoundError):
            raise
        except (DuravokeError, ValueError, TypeError) as exc:
            raise _RefusedError(HTTPStatus.CONFLICT, str(exc)) from None
        _refresh_row(self.server.store, row.key)
        self._json({"ok": True, "message": message})

    def _check_post(self) -> None:
        sent = self.headers.get("X-Duravoke-Token", "")
        if not hmac.compare_digest(sent.encode(), self.server.token.encode()):
            raise _RefusedError(HTTPStatus.FORBIDDEN, "missing or wrong token: reload the page")
        origin = self.headers.get("Origin")
        if origin is not None and origin != f"http://{self.headers.get('Host', '')}":
            raise _RefusedError(HTTPStatus.FORBIDDEN, "actions come from this server's page only")
        if self.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
            raise _RefusedError(HTTPStatus.FORBIDDEN, "actions come from this server's page only")
        if self.headers.get_content_type() != "application/json":
            raise _RefusedError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send JSON")

    def _read_body(self) -> bytes:
        """The request's body, read before anything is refused: on a kept-alive connection
        an unread body would be taken for the next request."""
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if not 0 <= length <= _BODY_MAX:
            self.close_connection = True
            raise _RefusedError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "a body of 0 to 1 MB")
        return self.rfile.read(length) if length else b""

    def _body(self) -> dict[str, Any]:
        try:
            body = json.loads(self._raw or b"{}")
        except ValueError:
            raise _RefusedError(HTTPStatus.BAD_REQUEST, "the body is not JSON") from None
        if not isinstance(body, dict):
            raise _RefusedError(HTTPStatus.BAD_REQUEST, "the body must be a JSON object")
        return body

    # --- answering ---------------------------------------------------------------------

    def _json(self, data: object, status: HTTPStatus = HTTPStatus.OK) -> None:
        # ASCII: a lone surrogate in an id must not break the encoding.
        self._send(json.dumps(data).encode("ascii"), "application/json", status)

    def _send(self, body: bytes, kind: str, status: HTTPStatus = HTTPStatus.OK) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Content-Security-Policy", _CSP)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


def _static(name: str) -> Traversable:
    return resources.files(__package__) / "_ui_static" / name


def make_server(store: Store, host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> UIServer:
    """A dashboard server for ``store``, bound and ready for ``serve_forever()``.

    Args:
        store: the store to show.
        host: the address to bind; keep the default (loopback) unless others must see it.
        port: the port; 0 picks a free one (see ``server.url``).
    """
    return UIServer(store, host, port)


def serve(
    store: Store,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    *,
    open_browser: bool = False,
    out: IO[str] | None = None,
) -> int:
    """Serve the dashboard until Ctrl-C (or SIGTERM); the exit status.

    Args:
        store: the store to show.
        host: the address to bind; a non-loopback one is warned about.
        port: the port; 0 picks a free one.
        open_browser: open the page in the default browser once it is served.
        out: where to print the address (default: stdout).
    """
    out = out or sys.stdout
    if not is_loopback(host):
        print(
            f"duravoke: warning: serving on {host}: anyone who can reach this machine can read"
            " every workflow's arguments and results.",
            file=sys.stderr,
        )
    server = make_server(store, host, port)
    with server, _stop_on_sigterm():
        print(f"duravoke ui: {server.url}  (store: {store.location}; Ctrl-C stops)", file=out)
        out.flush()
        if open_browser:
            import webbrowser

            webbrowser.open(server.url)
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how one stops it
            server.serve_forever(poll_interval=0.2)
    print("duravoke ui: stopped", file=out)
    out.flush()
    return 0


@contextlib.contextmanager
def _stop_on_sigterm() -> Iterator[None]:
    """SIGTERM (docker stop, systemd) stops the server as Ctrl-C does."""

    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
