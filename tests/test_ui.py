"""``duravoke ui``: the HTTP API, the command, and the page in a real browser (Chromium).

The stores are filled by real decorated functions; the server is the real one, in a
thread (or, for the command, a subprocess); the browser is Debian's Chromium driven by
Playwright. ``.ci/run`` installs Chromium where it is missing, and fails if these tests
skipped for want of it.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import select
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from conftest import STORE_KINDS, close_store, make_store

import duravoke
from duravoke import _ui
from duravoke._ui import UIServer, is_loopback, make_server, workflow_key

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

#: Ids that would break a page that builds HTML from data, or that reads text naively.
HOSTILE = {
    "script": "<script>window.__pwned = 1; alert(1)</script>",
    "img": '<img src=x onerror="window.__pwned = 2; alert(2)">',
    "quotes": "it's \"quoted\" & 'so' `on`",
    "newline": "two\nlines",
    "huge": "z" * 10_000,
    "rtl": "invoice \u202egnp.exe",
    "emoji": "\U0001f389 party \U0001f680",
}


# --- filling stores ----------------------------------------------------------------------


class App:
    """Decorated functions recording into one store, as a user's program would."""

    def __init__(self, store: duravoke.Store) -> None:
        self.store = store
        d = duravoke.Duravoke(store)
        self.d = d

        @d.duravoke(name="app.child")
        def child(x: int) -> dict[str, Any]:
            return {"x": x, "pair": (x, x * x)}

        @d.duravoke(name="app.parent")
        def parent(n: int) -> list[dict[str, Any]]:
            return [child(i) for i in range(n)]

        @d.duravoke(name="app.boom")
        def boom(why: str) -> None:
            raise ValueError(why)

        self.child, self.parent, self.boom = child, parent, boom

    def run(self, workflow_id: str, n: int = 2) -> None:
        with self.d.workflow(workflow_id):
            self.parent(n)

    def fail(self, workflow_id: str, why: str = "nope") -> None:
        with pytest.raises(ValueError, match=re.escape(why)):
            self._fail(workflow_id, why)

    def _fail(self, workflow_id: str, why: str) -> None:
        with self.d.workflow(workflow_id):
            self.parent(1)
            self.boom(why)


@pytest.fixture
def app(tmp_path: Path) -> App:
    return App(duravoke.DirectoryStore(tmp_path / "store"))


@pytest.fixture
def serve() -> Iterator[Callable[[duravoke.Store], UIServer]]:
    """Start dashboard servers in threads; stop them at the end."""
    servers: list[tuple[UIServer, threading.Thread]] = []

    def start(store: duravoke.Store) -> UIServer:
        server = make_server(store, port=0)
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        servers.append((server, thread))
        return server

    yield start
    for server, thread in servers:
        server.shutdown()
        server.server_close()
        thread.join(10)


class Client:
    """Plain HTTP to one server, with the headers a test chooses."""

    def __init__(self, server: UIServer) -> None:
        self.server = server
        self.host = f"127.0.0.1:{server.server_address[1]}"

    def request(
        self,
        method: str,
        path: str,
        body: object = None,
        *,
        token: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any, http.client.HTTPResponse]:
        conn = http.client.HTTPConnection("127.0.0.1", self.server.server_address[1], timeout=30)
        sent = {"Host": self.host}
        if body is not None:
            sent["Content-Type"] = "application/json"
        if token is not None:
            sent["X-Duravoke-Token"] = token
        sent.update(headers or {})
        data = None if body is None else json.dumps(body).encode()
        conn.request(method, path, body=data, headers=sent)
        response = conn.getresponse()
        raw = response.read()
        conn.close()
        kind = response.getheader("Content-Type", "")
        value: Any = json.loads(raw) if kind == "application/json" else raw.decode()
        return response.status, value, response

    def get(self, path: str, **kw: Any) -> Any:
        status, value, _ = self.request("GET", path, **kw)
        assert status == 200, (status, value)
        return value

    def listing(self, **query: str) -> dict[str, Any]:
        from urllib.parse import urlencode

        return self.get("/api/workflows?" + urlencode({"fresh": "1", **query}))  # type: ignore[no-any-return]

    def forget(self, workflow_id: str, **kw: Any) -> tuple[int, Any]:
        status, value, _ = self.request(
            "POST", f"/api/workflows/{workflow_key(workflow_id)}/forget", {}, **kw
        )
        return status, value


def exists(workflow_id: str, store: duravoke.Store) -> bool:
    try:
        duravoke.get_workflow(workflow_id, store)
    except duravoke.WorkflowNotFoundError:
        return False
    return True


# --- the API -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", STORE_KINDS)
def test_list_is_paged_newest_first_with_counts(
    kind: str, tmp_path: Path, serve: Callable[[duravoke.Store], UIServer]
) -> None:
    store = make_store(kind, tmp_path)
    app = App(store)
    ids = [f"job-{i}" for i in range(7)]
    for workflow_id in ids:
        app.run(workflow_id, 1)
    app.fail("Broken-Job")
    client = Client(serve(store))

    seen: list[str] = []
    for offset in range(0, 20, 3):  # bounded: 8 rows, pages of 3
        page = client.listing(offset=str(offset), limit="3")
        assert page["total"] == 8
        seen += [row["id"] for row in page["rows"]]
        if offset + 3 >= page["total"]:
            break
    assert seen == ["Broken-Job", *reversed(ids)]
    assert page["counts"] == {"failed": 1, "completed": 7}  # the order the page shows them

    failed = client.listing(status="failed")
    assert [r["id"] for r in failed["rows"]] == ["Broken-Job"]
    assert failed["rows"][0]["error"] == "ValueError('nope')"
    assert failed["total"] == 1
    assert failed["counts"] == {"failed": 1, "completed": 7}  # counts ignore the status filter
    found = client.listing(q="broken")  # case-insensitive
    assert [r["id"] for r in found["rows"]] == ["Broken-Job"]
    assert found["counts"] == {"failed": 1}
    assert client.listing(q="job-", status="failed")["rows"] == []
    assert client.listing(q="nothing like it")["total"] == 0
    close_store(store)


def test_one_workflow_and_its_steps(app: App, serve: Callable[[duravoke.Store], UIServer]) -> None:
    app.fail("wf")
    client = Client(serve(app.store))
    w = client.get(f"/api/workflows/{workflow_key('wf')}")
    assert (w["id"], w["status"], w["runs"], w["steps_done"], w["steps_failed"]) == (
        "wf",
        "failed",
        1,
        2,
        1,
    )
    assert [a["name"] for a in w["actions"]] == [
        "forget",
        *([n for n in ("retry", "send") if hasattr(duravoke, n)]),
    ]
    by_fn = {s["function"]: s for s in w["steps"]}
    parent, child, boom = by_fn["app.parent"], by_fn["app.child"], by_fn["app.boom"]
    assert child["parent"] == parent["sid"]
    assert child["path"] == ["app.parent"]
    assert boom["status"] == "failed"
    assert boom["error"] == "ValueError('nope')"
    assert child["args"] == {"x": 0}

    detail = client.get(f"/api/workflows/{workflow_key('wf')}/steps/{parent['sid']}")
    # The result as people read it (a tuple as a list) and as it was recorded.
    assert json.loads(detail["result"]) == [{"x": 0, "pair": [0, 0]}]
    assert '"$t": "tuple"' in detail["recorded"]
    assert json.loads(detail["args"]) == {"n": 1}
    failed = client.get(f"/api/workflows/{workflow_key('wf')}/steps/{boom['sid']}")
    assert failed["result"] is None
    assert failed["error"] == "ValueError('nope')"

    status, _, _ = client.request("GET", f"/api/workflows/{workflow_key('wf')}/steps/nope:0")
    assert status == 404
    status, _, _ = client.request("GET", f"/api/workflows/{workflow_key('nope')}")
    assert status == 404


def test_hostile_ids_round_trip(app: App, serve: Callable[[duravoke.Store], UIServer]) -> None:
    for workflow_id in HOSTILE.values():
        app.run(workflow_id, 1)
    app.fail("bad result", why="<script>alert('x')</script>")
    client = Client(serve(app.store))
    status, text, _response = client.request("GET", "/api/workflows?limit=500")
    assert status == 200
    listed = {row["id"]: row for row in text["rows"]}
    assert set(listed) == {*HOSTILE.values(), "bad result"}
    for workflow_id in HOSTILE.values():
        w = client.get(f"/api/workflows/{listed[workflow_id]['key']}")
        assert w["id"] == workflow_id
    assert listed["bad result"]["error"] == "ValueError(\"<script>alert('x')</script>\")"


def test_page_and_headers(app: App, serve: Callable[[duravoke.Store], UIServer]) -> None:
    app.run("a")
    server = serve(app.store)
    client = Client(server)
    status, html, response = client.request("GET", "/")
    assert status == 200
    assert f'<meta name="duravoke-token" content="{server.token}">' in html
    assert "script-src 'self'" in response.getheader("Content-Security-Policy", "")
    assert response.getheader("X-Content-Type-Options") == "nosniff"
    assert "<script>" not in html  # no inline script: the policy forbids it anyway
    for path in ("/static/app.js", "/static/app.css"):
        status, body, _ = client.request("GET", path)
        assert status == 200
        assert "innerHTML" not in body
    for path in ("/static/../_ui.py", "/nope", "/api", "/api/workflows/a/b/c/d/e"):
        assert client.request("GET", path)[0] == 404, path
    # Two servers, two tokens.
    assert serve(app.store).token != server.token


def test_dns_rebinding_is_refused(app: App, serve: Callable[[duravoke.Store], UIServer]) -> None:
    app.run("a")
    server = serve(app.store)
    client = Client(server)
    port = server.server_address[1]
    for host in (f"evil.example:{port}", "evil.example", f"127.0.0.1:{port + 1}", ""):
        status, value, _ = client.request("GET", "/api/workflows", headers={"Host": host})
        assert status == 403, host
        assert "own address" in value["error"]
        status, _, _ = client.request("GET", "/", headers={"Host": host})
        assert status == 403
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"LOCALHOST:{port}"):
        assert client.request("GET", "/api/workflows", headers={"Host": host})[0] == 200


def test_forget_needs_the_token_and_this_page(
    app: App, serve: Callable[[duravoke.Store], UIServer]
) -> None:
    app.run("keep")
    app.run("drop")
    server = serve(app.store)
    client = Client(server)
    origin = f"http://{client.host}"
    refused: list[tuple[dict[str, Any], int]] = [
        ({}, 403),  # no token
        ({"token": "x" * 43}, 403),  # a wrong one
        ({"token": server.token, "headers": {"Origin": "http://evil.example"}}, 403),
        ({"token": server.token, "headers": {"Origin": "null"}}, 403),
        ({"token": server.token, "headers": {"Sec-Fetch-Site": "cross-site"}}, 403),
        ({"token": server.token, "headers": {"Content-Type": "text/plain"}}, 415),
    ]
    for kw, expect in refused:
        status, value = client.forget("drop", **kw)
        assert status == expect, (kw, value)
        assert exists("drop", app.store)
    # Reading never acts.
    status, _, _ = client.request("GET", f"/api/workflows/{workflow_key('drop')}/forget")
    assert status == 405
    assert client.request("PUT", f"/api/workflows/{workflow_key('drop')}/forget", {})[0] == 405
    assert client.listing(q="drop")["total"] == 1

    status, value = client.forget(
        "drop", token=server.token, headers={"Origin": origin, "Sec-Fetch-Site": "same-origin"}
    )
    assert status == 200, value
    assert value["ok"] is True
    assert not exists("drop", app.store)
    assert exists("keep", app.store)
    page = client.get("/api/workflows")  # not fresh: the action updated the last scan
    assert [r["id"] for r in page["rows"]] == ["keep"]
    assert client.forget("drop", token=server.token)[0] == 404
    status, value, _ = client.request(
        "POST", f"/api/workflows/{workflow_key('keep')}/launch", {}, token=server.token
    )
    assert status == 404


def test_forget_refuses_a_running_workflow(
    app: App, serve: Callable[[duravoke.Store], UIServer]
) -> None:
    app.run("busy")
    server = serve(app.store)
    client = Client(server)
    lease = app.store.lock("busy", timeout=10)  # as a running process holds it
    try:
        w = client.get(f"/api/workflows/{workflow_key('busy')}")
        assert w["status"] == "running"
        assert w["live"] is True
        assert "forget" not in [a["name"] for a in w["actions"]]
        status, value = client.forget("busy", token=server.token)
        assert status == 409, value
        assert "running right now" in value["error"]
    finally:
        lease.close()
    assert exists("busy", app.store)


_CRASH_MID_RUN = textwrap.dedent(
    """
    import os, sys
    import duravoke

    d = duravoke.Duravoke(duravoke.open_store(sys.argv[1]))

    @d.duravoke
    def step(x):
        return x

    with d.workflow(sys.argv[2]):
        step(1)
        step(2)
        os._exit(3)
    """
)


def test_damaged_workflows_are_rows(
    app: App, tmp_path: Path, serve: Callable[[duravoke.Store], UIServer]
) -> None:
    folder = tmp_path / "store"
    app.run("good")
    app.run("bad-file")
    app.store.checkpoint()  # write the state files
    # A damaged state file: the index still knows its workflow.
    (state_file,) = folder.glob("bad-file.*.json")
    state_file.write_bytes(state_file.read_bytes()[:120])

    server = serve(app.store)
    client = Client(server)
    rows = client.listing()["rows"]
    by_status = {(r["status"], r["id"]) for r in rows}
    assert by_status == {("completed", "good"), ("corrupt", "bad-file")}
    damaged = next(r for r in rows if r["id"] == "bad-file")
    assert damaged["path"] == str(state_file)
    assert str(state_file) in damaged["error"]
    assert client.listing()["counts"] == {"corrupt": 1, "completed": 1}

    w = client.get(f"/api/workflows/{damaged['key']}")
    assert w["status"] == "corrupt"
    assert w["steps"] == []
    assert [a["name"] for a in w["actions"]][:1] == ["forget"]
    assert state_file.stat().st_size == 120  # never touched
    # Forgetting is how a damaged workflow starts afresh.
    assert client.forget("bad-file", token=server.token)[0] == 200
    assert not state_file.exists()
    assert {r["id"] for r in client.listing()["rows"]} == {"good"}


def test_actions_are_one_table_entry_each(
    app: App, serve: Callable[[duravoke.Store], UIServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert list(_ui.actions()) == ["forget", "retry", "send"]
    app.fail("wf")
    server = serve(app.store)
    client = Client(server)
    w = client.get(f"/api/workflows/{workflow_key('wf')}")
    offered = {a["name"]: a for a in w["actions"]}
    assert list(offered) == ["forget", "retry", "send"]
    assert offered["send"]["fields"] == [
        {"name": "topic", "kind": "text"},
        {"name": "value", "kind": "json"},
    ]
    key = workflow_key("wf")
    status, value, _ = client.request("POST", f"/api/workflows/{key}/send", {}, token=server.token)
    assert status == 409  # no topic
    assert "topic" in value["error"]
    message = {"topic": "approval", "value": {"ok": True, "by": "<b>me</b>"}}
    assert (
        client.request("POST", f"/api/workflows/{key}/send", message, token=server.token)[0] == 200
    )
    status, _, _ = client.request("POST", f"/api/workflows/{key}/retry", {})
    assert status == 403  # no token: nothing done
    assert app.store.messages("wf", "approval", 0) == [(1, {"ok": True, "by": "<b>me</b>"})]
    # retry needs a workflow with an entry point (a runner must know what to call).
    status, value, _ = client.request("POST", f"/api/workflows/{key}/retry", {}, token=server.token)
    assert status in (200, 409), value


def test_only_loopback_is_quiet() -> None:
    for host in ("127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.2"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "::", "192.168.1.10", "example.com", ""):
        assert not is_loopback(host), host


# --- the command -------------------------------------------------------------------------


def start_ui(*args: str) -> tuple[subprocess.Popen[str], str]:
    """``duravoke ui`` in a subprocess, and the address it printed."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "duravoke", "ui", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 60)
    if not ready:
        proc.kill()
        pytest.fail(f"duravoke ui printed nothing; stderr: {proc.communicate()[1]}")
    line = proc.stdout.readline()
    assert line.startswith("duravoke ui: http://127.0.0.1:"), line
    return proc, line.split()[2]


@pytest.mark.skipif(os.name != "posix", reason="SIGINT to a child is POSIX")
def test_command_serves_until_ctrl_c(
    app: App, tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    app.run("from-the-command")
    app.run("damaged")
    app.store.checkpoint()  # write the state files
    (state_file,) = (tmp_path / "store").glob("damaged.*.json")
    state_file.write_bytes(state_file.read_bytes()[:120])
    proc, url = start_ui("--store", str(tmp_path / "store"))
    procs.append(proc)
    port = urlsplit(url).port
    assert port is not None
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for _ in range(2):  # each scan finds the damaged file: a row, not a line on stderr
        conn.request("GET", "/api/workflows?fresh=1")
        page = json.loads(conn.getresponse().read())
        assert sorted(r["id"] for r in page["rows"]) == ["damaged", "from-the-command"]
    # The connection stays open, as a browser's would: Ctrl-C must not wait for it.
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    conn.close()
    assert proc.returncode == 0, err
    assert out.strip().endswith("duravoke ui: stopped")
    assert "Traceback" not in err
    assert err == ""


def test_command_warns_about_other_hosts(tmp_path: Path) -> None:
    # 192.0.2.1 (TEST-NET-1) is no address of this machine: the warning is printed, then
    # the bind fails, so nothing is ever exposed by this test.
    proc = subprocess.run(
        [sys.executable, "-m", "duravoke", "ui", "--host", "192.0.2.1", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    warning, error = proc.stderr.splitlines()
    assert warning.startswith("duravoke: warning: serving on 192.0.2.1: anyone")
    assert error.startswith("duravoke: error: ")
    assert "Traceback" not in proc.stderr


# --- in a real browser -------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"needs Chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh page that records every JS dialog and error (none should happen).

    Tests marked ``no_csp`` run without the page's Content-Security-Policy, to show that
    escaping alone keeps hostile data inert.
    """
    bypass = request.node.get_closest_marker("no_csp") is not None
    context = browser.new_context(viewport={"width": 1280, "height": 800}, bypass_csp=bypass)
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.dialogs = []
    page.errors = []

    def on_dialog(dialog: Any) -> None:
        page.dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    yield page
    context.close()


def test_browser_list_click_timeline_and_filters(
    app: App, serve: Callable[[duravoke.Store], UIServer], page: Any
) -> None:
    for i in range(3):
        app.run(f"report-{i}", 3)
    app.fail("sync-invoices")
    server = serve(app.store)
    page.goto(server.url)
    rows = page.locator("table.list tbody tr")
    rows.first.wait_for()
    assert rows.count() == 4
    assert page.locator("table.list a").all_inner_texts() == [
        "sync-invoices",
        "report-2",
        "report-1",
        "report-0",
    ]
    # A status filter narrows the list, and says so in the address.
    page.get_by_role("button", name="failed (1)").click()
    page.wait_for_function("() => document.querySelectorAll('table.list tbody tr').length === 1")
    assert page.locator("table.list a").all_inner_texts() == ["sync-invoices"]
    assert "status=failed" in page.url
    page.get_by_role("button", name="All (4)").click()
    page.wait_for_function("() => document.querySelectorAll('table.list tbody tr').length === 4")
    # So does the search box.
    page.get_by_label("Search workflow ids").fill("REPORT-1")
    page.wait_for_function("() => document.querySelectorAll('table.list tbody tr').length === 1")
    assert page.locator("table.list a").all_inner_texts() == ["report-1"]
    # A click opens the timeline: a bar per step, children under their caller.
    page.get_by_role("link", name="report-1").click()
    page.locator(".trow").first.wait_for()
    assert page.locator("h1").inner_text() == "report-1"
    assert page.locator(".trow .bar").count() == 4  # parent(3) and its three children
    labels = page.locator(".trow .name").all_inner_texts()
    assert labels == ["app.parent(n=3)", "app.child(x=0)", "app.child(x=1)", "app.child(x=2)"]
    # Opening a step shows its result, pretty.
    page.locator(".trow").nth(2).click()
    result = page.locator(".stepinfo:not([hidden]) pre").nth(1)
    result.wait_for()
    assert json.loads(result.inner_text()) == {"x": 1, "pair": [1, 1]}
    assert page.dialogs == []
    assert page.errors == []


@pytest.mark.no_csp
def test_browser_hostile_ids_are_text(
    app: App, serve: Callable[[duravoke.Store], UIServer], page: Any
) -> None:
    for workflow_id in HOSTILE.values():
        app.run(workflow_id, 1)
    app.fail("bad result", why='<img src=x onerror="window.__pwned = 3">')
    evil = '<img src=x onerror="window.__pwned = 4">'

    @app.d.duravoke(name=evil)
    def hostile_step(arg: str) -> dict[str, str]:
        return {evil: evil}

    with app.d.workflow("hostile steps"):
        hostile_step(evil)
    server = serve(app.store)
    page.goto(server.url)
    page.locator("table.list tbody tr").nth(len(HOSTILE) + 1).wait_for()
    links = page.locator("table.list a").all_inner_texts()
    assert HOSTILE["script"] in links
    assert HOSTILE["img"] in links
    assert HOSTILE["quotes"] in links
    assert "two\\nlines" in links  # shown as an escape, on one line
    assert "invoice \\u202egnp.exe" in links  # the override is shown, not obeyed
    assert HOSTILE["emoji"] in links
    huge = next(t for t in links if t.startswith("zzz"))
    assert "\u2026" in huge
    assert len(huge) < 200
    for name, workflow_id in HOSTILE.items():
        page.goto(f"{server.url}#/w/{workflow_key(workflow_id)}")
        page.locator(".trow").first.wait_for()
        title = page.locator("h1").inner_text()
        if name == "huge":
            assert page.locator("details pre").text_content() == workflow_id
        elif name in ("newline", "rtl"):
            assert "\\n" in title or "\\u202e" in title
        else:
            assert title == workflow_id
    page.goto(f"{server.url}#/w/{workflow_key('bad result')}")
    page.locator(".error").first.wait_for()
    assert '<img src=x onerror="window.__pwned = 3">' in page.locator("dl.facts").inner_text()
    page.goto(f"{server.url}#/w/{workflow_key('hostile steps')}")
    page.locator(".trow").first.click()
    result = page.locator(".stepinfo:not([hidden]) pre").nth(1)
    result.wait_for()
    assert json.loads(result.inner_text()) == {evil: evil}
    assert page.locator(".trow .name").inner_text().startswith(evil + "(arg=")
    page.goto(f"{server.url}#/?q=%3C")
    page.locator("table.list tbody tr").first.wait_for()
    assert page.evaluate("window.__pwned") is None
    assert page.evaluate("document.querySelectorAll('script').length") == 1
    assert page.evaluate("document.querySelectorAll('img').length") == 0
    assert page.dialogs == []
    assert page.errors == []


def test_browser_actions_need_the_token_and_confirmation(
    app: App, serve: Callable[[duravoke.Store], UIServer], page: Any
) -> None:
    app.run("keep")
    app.run("drop")
    server = serve(app.store)
    page.goto(f"{server.url}#/w/{workflow_key('drop')}")
    page.get_by_role("button", name="Forget").wait_for()
    # A script on the page that leaves the token out is refused.
    status = page.evaluate(
        """async (key) => (await fetch('/api/workflows/' + key + '/forget', {method: 'POST',
            headers: {'Content-Type': 'application/json'}, body: '{}'})).status""",
        workflow_key("drop"),
    )
    assert status == 403
    assert exists("drop", app.store)
    # The button asks first; "Cancel" keeps it.
    page.get_by_role("button", name="Forget").click()
    dialog = page.locator("dialog#ask")
    dialog.wait_for()
    assert "Forget workflow \u201cdrop\u201d" in dialog.inner_text()
    page.get_by_role("button", name="Cancel").click()
    assert exists("drop", app.store)
    page.get_by_role("button", name="Forget").click()
    page.get_by_role("button", name="Confirm").click()
    page.wait_for_function("() => location.hash === '#/'")
    page.locator("table.list tbody tr").first.wait_for()
    assert page.locator("table.list a").all_inner_texts() == ["keep"]
    assert not exists("drop", app.store)
    assert page.dialogs == []
    assert page.errors == []


def test_browser_keyboard_only(
    app: App, serve: Callable[[duravoke.Store], UIServer], page: Any
) -> None:
    app.run("first")
    app.run("second")
    server = serve(app.store)
    page.goto(server.url)
    page.locator("table.list tbody tr").first.wait_for()
    for _ in range(40):  # bounded: skip link, brand, chips, search, then the rows
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.closest('table.list') !== null"):
            break
    else:
        pytest.fail("Tab never reached the list")
    assert page.evaluate("document.activeElement.textContent") == "second"
    page.keyboard.press("Enter")
    page.locator(".trow").first.wait_for()
    assert page.locator("h1").inner_text() == "second"
    # The steps open from the keyboard too.
    page.locator(".trow").first.focus()
    page.keyboard.press("Enter")
    page.locator(".stepinfo:not([hidden])").wait_for()


def test_browser_phone_width(
    app: App, serve: Callable[[duravoke.Store], UIServer], page: Any
) -> None:
    app.run(HOSTILE["huge"], 3)
    app.run("a-workflow-with-a-rather-long-name-that-should-wrap-somewhere", 3)
    app.fail("failing")
    _record_two_runs(app.store, "two-runs")
    server = serve(app.store)
    page.set_viewport_size({"width": 390, "height": 844})
    overflow = "document.documentElement.scrollWidth - window.innerWidth"
    page.goto(server.url)
    page.locator("table.list tbody tr").first.wait_for()
    assert page.evaluate(overflow) <= 0
    for workflow_id in (HOSTILE["huge"], "failing", "two-runs"):
        page.goto(f"{server.url}#/w/{workflow_key(workflow_id)}")
        page.locator(".trow").first.wait_for()
        page.locator(".trow").first.click()
        page.locator(".stepinfo:not([hidden]) pre").first.wait_for()
        assert page.evaluate(overflow) <= 0, workflow_id


def test_browser_refreshes_while_running(
    app: App, serve: Callable[[duravoke.Store], UIServer], page: Any
) -> None:
    app.run("long-job")
    server = serve(app.store)
    lease = app.store.lock("long-job", timeout=10)  # as a running process holds it
    try:
        page.goto(server.url)
        badge = page.locator("table.list tbody tr .badge")
        badge.wait_for()
        assert badge.inner_text() == "running"
        assert "Live" in page.locator("#live").inner_text()
    finally:
        lease.close()
    # No reload: the page asks again by itself and sees the lock gone (the scan is reused
    # for at least two seconds, so this takes a few).
    page.wait_for_function(
        "() => document.querySelector('table.list tbody tr .badge').textContent === 'completed'",
        timeout=20_000,
    )


def test_refused_bodies_do_not_leak_into_the_next_request(
    app: App, serve: Callable[[duravoke.Store], UIServer]
) -> None:
    app.run("a")
    server = serve(app.store)
    port = server.server_address[1]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Host": f"127.0.0.1:{port}", "Content-Type": "application/json"}
    # Refused before its body was needed, on a kept-alive connection, as a browser's is.
    conn.request("POST", f"/api/workflows/{workflow_key('a')}/forget", b'{"x": 1}', headers)
    response = conn.getresponse()
    assert response.status == 403
    response.read()
    conn.request("GET", "/api/workflows", headers={"Host": f"127.0.0.1:{port}"})
    response = conn.getresponse()
    assert response.status == 200
    assert [r["id"] for r in json.loads(response.read())["rows"]] == ["a"]
    conn.request("POST", "/api/workflows/x/forget", b"", {**headers, "Content-Length": "9" * 9})
    assert conn.getresponse().status == 413
    conn.close()


def _record_two_runs(store: duravoke.Store, workflow_id: str) -> None:
    """Record, through the store's own API, a workflow whose steps say which run did them.

    The engine will write ``"run"`` into step records; until it does, this is what it will
    look like: run 1 did ``fetch`` and stopped, run 2 (an hour later) did ``publish``.
    """

    def step(sid: str, fn: str, started: str, run: int) -> dict[str, Any]:
        return {
            "sid": sid,
            "parent": None,
            "path": [],
            "fn": fn,
            "occ": 0,
            "status": "completed",
            "started": started,
            "duration": 0.25,
            "args": {"x": 1},
            "result": {"ok": run},
            "run": run,
        }

    lease = store.lock(workflow_id, timeout=10)
    try:
        lease.load()
        lease.append(
            [
                {"event": "running", "at": "2026-11-01T10:00:00+00:00", "run": 1},
                step("a" * 32 + ":0", "app.fetch", "2026-11-01T10:00:00.100000+00:00", 1),
                {"event": "running", "at": "2026-11-01T11:00:00+00:00", "run": 2},
                step("b" * 32 + ":0", "app.publish", "2026-11-01T11:00:00.100000+00:00", 2),
                {"event": "completed", "at": "2026-11-01T11:00:01+00:00", "run": 2},
            ]
        )
    finally:
        lease.close()


def test_browser_shows_which_run_executed_a_step(
    app: App, serve: Callable[[duravoke.Store], UIServer], page: Any
) -> None:
    _record_two_runs(app.store, "two-runs")
    server = serve(app.store)
    w = Client(server).get(f"/api/workflows/{workflow_key('two-runs')}")
    assert (w["status"], w["runs"]) == ("completed", 2)
    assert [(s["function"], s["run"]) for s in w["steps"]] == [("app.fetch", 1), ("app.publish", 2)]
    page.goto(f"{server.url}#/w/{workflow_key('two-runs')}")
    page.locator(".trow").first.wait_for()
    assert page.locator(".trow .runtag").all_inner_texts() == ["run 1", "run 2"]
    # Executed in run 1 and replayed since: hatched; run 2's own step: plain.
    assert page.locator(".trow .bar.earlier").count() == 1
    assert "app.fetch" in page.locator(".trow", has=page.locator(".bar.earlier")).inner_text()
    runs = page.locator("table.runs tbody tr").all_inner_texts()
    assert len(runs) == 2
    assert runs[1].split("\t")[:3] == ["2", "1", "1"]  # run 2: executed 1, could replay 1
    # The hour between the runs is drawn as a break, labelled with its real length.
    assert page.locator(".axis .tick", has_text="idle").inner_text() == "1 h 0 min idle"
