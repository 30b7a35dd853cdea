"""The duravoke command, run for real in a subprocess against stores filled in-process."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import unicodedata
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

import duravoke

MODULE = [sys.executable, "-m", "duravoke"]
_SCRIPT = shutil.which("duravoke", path=str(Path(sys.executable).parent))
SCRIPT = [_SCRIPT] if _SCRIPT else None


def cli(
    *args: str, stdin: str = "", encoding: str = "utf-8", cmd: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the command; DURAVOKE_HOME is the test's own (set by conftest)."""
    env = {**os.environ, "PYTHONIOENCODING": encoding, "COLUMNS": "200"}
    return subprocess.run(
        [*(cmd or MODULE), *args],
        input=stdin,
        capture_output=True,
        text=True,
        encoding=encoding,
        timeout=60,
        check=False,
        env=env,
    )


def columns(line: str) -> int:
    """Terminal columns a line takes: East Asian wide characters (emoji) take two."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in line)


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *fragments: str) -> str:
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("duravoke: error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


class App:
    """Decorated functions recording into one store, as a user's program would."""

    def __init__(self, store: duravoke.Store) -> None:
        self.d = d = duravoke.Duravoke(store)

        @d.duravoke(name="app.child")
        def child(x: int) -> dict[str, int]:
            return {"x": x, "sq": x * x}

        @d.duravoke(name="app.parent")
        def parent(n: int) -> list[dict[str, int]]:
            return [child(i) for i in range(n)]

        @d.duravoke(name="app.boom")
        def boom() -> None:
            raise ValueError("nope")

        self.child, self.parent, self.boom = child, parent, boom

    def run(self, workflow_id: str, n: int = 2, *, fail: bool = False) -> None:
        try:
            with self.d.workflow(workflow_id):
                self.parent(n)
                if fail:
                    self.boom()
        except ValueError:
            pass


@pytest.fixture
def app(duravoke_home: Path) -> App:
    return App(duravoke.DirectoryStore(duravoke_home))


# --- list -------------------------------------------------------------------------------


def test_list_empty_store(duravoke_home: Path) -> None:
    proc = cli("list")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"no workflows recorded in {duravoke_home}\n"
    assert proc.stderr == ""
    proc = cli("list", "--json")
    assert (proc.returncode, json.loads(proc.stdout)) == (0, [])


def test_list_several_workflows(app: App) -> None:
    long_id = "report-" + "r" * 190 + "-tail42"
    app.run("alpha", 1)
    app.run("beta", 3, fail=True)
    app.run(long_id, 2)
    app.run("alpha", 2)  # alpha ran last

    proc = cli("list")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["ID", "STATUS", "STEPS", "STARTED", "UPDATED"]
    assert len(lines) == 4
    assert all(columns(line) <= 80 for line in lines), proc.stdout
    alpha, long_row, beta = lines[1:]
    assert alpha.split()[:3] == ["alpha", "completed", "4"]  # 2 steps, then 2 more
    assert beta.split()[:3] == ["beta", "failed", "4"]
    # Shortened in the middle: both ends of the id stay readable.
    assert long_row.startswith("report-rrr")
    assert "\u2026rrr" in long_row
    assert "rrr-tail42 " in long_row
    assert long_row.split()[1:3] == ["completed", "3"]

    listed = json.loads(cli("list", "--json").stdout)
    assert [w["id"] for w in listed] == ["alpha", long_id, "beta"]
    beta_json = listed[2]
    assert beta_json["status"] == "failed"
    assert beta_json["error"] == "ValueError('nope')"
    assert (beta_json["steps_done"], beta_json["steps_failed"], beta_json["runs"]) == (4, 1, 1)
    assert datetime.fromisoformat(beta_json["started"]) <= datetime.fromisoformat(
        beta_json["updated"]
    )
    assert listed[0]["runs"] == 2
    assert "steps" not in listed[0]

    wide = cli("list", "--wide").stdout
    assert long_id in wide


@pytest.mark.skipif(SCRIPT is None, reason="the duravoke console script is not installed")
def test_console_script(app: App, duravoke_home: Path) -> None:
    app.run("alpha")
    assert cli("where", cmd=SCRIPT).stdout == f"{duravoke_home}\n"
    via_script = cli("list", "--json", cmd=SCRIPT)
    assert via_script.returncode == 0
    assert via_script.stdout == cli("list", "--json").stdout
    assert cli("show", "nope", cmd=SCRIPT).returncode == 1
    assert cli(cmd=SCRIPT).returncode == 2


# --- show -------------------------------------------------------------------------------


def test_show_tree(app: App) -> None:
    app.run("order-42", 2, fail=True)
    proc = cli("show", "order-42")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    assert out[0] == "workflow  order-42"
    assert out[1] == "status    failed: ValueError('nope')"
    assert "steps     3 completed, 1 failed" in out
    steps = out[out.index("") + 1 :]
    assert len(steps) == 4
    parent, child0, child1, boom = steps
    assert parent.startswith("app.parent(n=2) ")
    assert child0.startswith("  app.child(x=0) ")
    assert child1.startswith("  app.child(x=1) ")
    assert boom.startswith("app.boom() ")
    for line in (parent, child0, child1):
        assert re.search(r" completed +\d+\.\d{3}s  ", line), line
    assert child1.endswith("{'x': 1, 'sq': 1}")
    assert parent.endswith("[{'x': 0, 'sq': 0}, {'x': 1, 'sq': 1}]")
    assert re.search(r" failed +\d+\.\d{3}s  ValueError\('nope'\)$", boom), boom

    data = json.loads(cli("show", "order-42", "--json").stdout)
    assert (data["id"], data["status"], data["steps_done"], data["steps_failed"]) == (
        "order-42",
        "failed",
        3,
        1,
    )
    by_fn: dict[str, list[dict[str, object]]] = {}
    for step in data["steps"]:
        by_fn.setdefault(step["function"], []).append(step)
    (top,) = by_fn["app.parent"]
    assert [c["parent"] for c in by_fn["app.child"]] == [top["sid"], top["sid"]]
    assert [c["args"] for c in by_fn["app.child"]] == [{"x": 0}, {"x": 1}]
    assert by_fn["app.child"][0]["path"] == ["app.parent"]
    assert by_fn["app.boom"][0]["error"] == "ValueError('nope')"
    assert all(isinstance(s["duration"], float) for s in data["steps"])
    assert all(datetime.fromisoformat(str(s["started"])) for s in data["steps"])


def test_show_unknown_id(app: App, duravoke_home: Path) -> None:
    app.run("alpha")
    proc = cli("show", "nope")
    assert_one_line_error(proc, "'nope'", str(duravoke_home))
    assert proc.stdout == ""


_KILLED_IN_PARENT = textwrap.dedent(
    """
    import os, signal
    import duravoke

    @duravoke.duravoke(name="app.child")
    def child(x):
        return x

    @duravoke.duravoke(name="app.parent")
    def parent():
        child(1)
        os.kill(os.getpid(), signal.SIGKILL)

    with duravoke.workflow("killed"):
        parent()
    """
)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_show_interrupted_run_with_unrecorded_parent() -> None:
    proc = subprocess.run([sys.executable, "-c", _KILLED_IN_PARENT], timeout=60, check=False)
    assert proc.returncode == -signal.SIGKILL
    out = cli("show", "killed").stdout.splitlines()
    assert out[1] == "status    interrupted"
    steps = out[out.index("") + 1 :]
    # The parent has no record of its end: it was in flight when the process died.
    assert steps[0].startswith("app.parent ")
    assert steps[0].endswith("  in flight when the run stopped")
    assert steps[1].startswith("  app.child(x=1) ")
    assert cli("list").stdout.splitlines()[1].split()[:3] == ["killed", "interrupted", "1"]


# --- forget -----------------------------------------------------------------------------


def listed_ids(*store: str) -> list[str]:
    proc = cli("list", "--json", *store)
    assert proc.returncode == 0, proc.stderr
    return [w["id"] for w in json.loads(proc.stdout)]


def test_forget_after_yes(app: App) -> None:
    app.run("alpha", 2)
    app.run("beta")
    proc = cli("forget", "alpha", stdin="y\n")
    assert proc.returncode == 0, proc.stderr
    assert "Forget workflow 'alpha' and its 3 recorded steps? [y/N]" in proc.stderr
    assert proc.stdout == "Forgot workflow 'alpha'.\n"
    assert listed_ids() == ["beta"]
    assert cli("show", "alpha").returncode == 1


@pytest.mark.parametrize("answer", ["n\n", "\n", "", "whatever\n"])
def test_forget_keeps_without_a_yes(app: App, answer: str) -> None:
    app.run("alpha")
    proc = cli("forget", "alpha", stdin=answer)
    assert proc.returncode == 0, proc.stderr
    assert "[y/N]" in proc.stderr
    assert proc.stdout == "Kept workflow 'alpha'.\n"
    assert listed_ids() == ["alpha"]


def test_forget_yes_flag_and_unknown(app: App) -> None:
    app.run("alpha")
    proc = cli("forget", "alpha", "--yes")
    assert (proc.returncode, proc.stderr, proc.stdout) == (0, "", "Forgot workflow 'alpha'.\n")
    assert listed_ids() == []
    assert_one_line_error(cli("forget", "alpha", "--yes"), "'alpha'")
    assert_one_line_error(cli("forget", "alpha", stdin="y\n"), "'alpha'")


@pytest.fixture
def running(app: App) -> Iterator[str]:
    """A workflow that a thread of this process is running, stopped after one step."""
    entered, release = threading.Event(), threading.Event()

    def run() -> None:
        with app.d.workflow("busy"):
            app.child(1)
            entered.set()
            assert release.wait(60)
            app.child(2)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        assert entered.wait(30)
        yield "busy"
    finally:
        release.set()
        thread.join(60)


def test_forget_refuses_while_running(running: str, duravoke_home: Path) -> None:
    for args in (["--yes"], []):
        proc = cli("forget", running, *args, stdin="y\n")
        assert_one_line_error(proc, f"'{running}'", "running")
        assert "[y/N]" not in proc.stderr
    assert cli("list").stdout.splitlines()[1].split()[:3] == ["busy", "running", "1"]
    shown = cli("show", running)
    assert "status    running" in shown.stdout.splitlines()
    info = duravoke.get_workflow(running, duravoke.DirectoryStore(duravoke_home))
    assert info.status == "running"
    assert info.steps_done == 1


# --- where and --store ------------------------------------------------------------------


def test_where(duravoke_home: Path, tmp_path: Path) -> None:
    assert cli("where").stdout == f"{duravoke_home}\n"
    assert cli("where", "--store", str(tmp_path / "other")).stdout == f"{tmp_path / 'other'}\n"
    kkv = tmp_path / "state.json"
    assert cli("where", "--store", str(kkv)).stdout == f"{kkv}\n"


def test_store_option_with_a_folder(app: App, tmp_path: Path) -> None:
    app.run("in-home")
    folder = tmp_path / "elsewhere"
    App(duravoke.DirectoryStore(folder)).run("in-folder")
    spec = ["--store", str(folder)]
    assert listed_ids(*spec) == ["in-folder"]
    assert listed_ids() == ["in-home"]
    assert "workflow  in-folder" in cli("show", "in-folder", *spec).stdout
    assert cli("show", "in-home", *spec).returncode == 1
    assert cli("forget", "in-folder", "--yes", *spec).returncode == 0
    assert listed_ids(*spec) == []
    assert listed_ids() == ["in-home"]


def test_store_option_with_a_persisted_kkv_file(tmp_path: Path) -> None:
    path = tmp_path / "duravoke_state.json"
    kkv_app = App(duravoke.PersistedKKV(path))
    kkv_app.run("one", 1)
    kkv_app.run("two", 2)
    spec = ["--store", str(path)]
    assert listed_ids(*spec) == ["two", "one"]
    assert listed_ids() == []
    shown = cli("show", "two", *spec)
    assert shown.returncode == 0
    assert "  app.child(x=1) " in shown.stdout
    assert cli("forget", "one", "--yes", *spec).returncode == 0
    assert listed_ids(*spec) == ["two"]
    assert "one" not in json.loads(path.read_text())["workflows"]


def test_list_show_forget_on_every_store_kind(store_kind: str, store: duravoke.Store) -> None:
    """The same commands on each kind of store, named by ``--store <its location>``."""
    if store_kind == "memory":
        pytest.skip("an in-memory store cannot be reached from another process")
    other = App(store)
    other.run("first", 1)
    other.run("second", 2, fail=True)
    spec = ["--store", store.location]
    assert listed_ids(*spec) == ["second", "first"]
    listed = json.loads(cli("list", "--json", *spec).stdout)
    assert {w["id"]: w["status"] for w in listed} == {"first": "completed", "second": "failed"}
    shown = cli("show", "second", *spec)
    assert shown.returncode == 0, shown.stderr
    assert "  app.child(x=1) " in shown.stdout
    assert_one_line_error(cli("show", "nope", *spec), "nope")
    assert cli("forget", "first", "--yes", *spec).returncode == 0
    assert listed_ids(*spec) == ["second"]
    assert store.read("first") is None


# --- hostile ids and damaged stores ------------------------------------------------------

HOSTILE = {
    "emoji": "\U0001f389 party \U0001f680",
    "newline": "two\nlines",
    "escape": "esc\x1b[31mred\x1b[0m",
    "huge": "z" * 10_000,
}


def test_hostile_ids(app: App) -> None:
    for workflow_id in HOSTILE.values():
        app.run(workflow_id, 1)
    proc = cli("list")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1 + len(HOSTILE)  # one row each: no raw newline got through
    assert all(columns(line) <= 80 for line in lines), proc.stdout
    assert "\x1b" not in proc.stdout
    assert any(line.startswith("two\\nlines ") for line in lines)
    assert any(line.startswith("esc\\x1b[31mred\\x1b[0m ") for line in lines)
    assert any(line.startswith("\U0001f389 party \U0001f680 ") for line in lines)
    assert any(line.startswith("zzz") and "\u2026" in line for line in lines)
    assert sorted(listed_ids()) == sorted(HOSTILE.values())

    for workflow_id in HOSTILE.values():
        shown = cli("show", workflow_id)
        assert shown.returncode == 0, shown.stderr
        assert "\x1b" not in shown.stdout
        assert shown.stdout.splitlines()[1] == "status    completed"
    for workflow_id in (HOSTILE["newline"], HOSTILE["huge"]):
        assert json.loads(cli("show", workflow_id, "--json").stdout)["id"] == workflow_id

    unknown = assert_one_line_error(cli("show", "y" * 10_000))
    assert len(unknown) < 400
    forgot = cli("forget", HOSTILE["huge"], "--yes")
    assert forgot.returncode == 0, forgot.stderr
    assert len(forgot.stdout) < 200
    forgot = cli("forget", HOSTILE["newline"], stdin="y\n")
    assert forgot.stdout == "Forgot workflow 'two\\nlines'.\n"
    assert sorted(listed_ids()) == sorted([HOSTILE["emoji"], HOSTILE["escape"]])


def test_ascii_only_output_does_not_crash(app: App) -> None:
    app.run(HOSTILE["emoji"], 1)
    proc = cli("list", encoding="ascii")
    assert proc.returncode == 0, proc.stderr
    assert "\\U0001f389 party" in proc.stdout
    shown = cli("show", HOSTILE["emoji"], encoding="ascii")
    assert shown.returncode == 0, shown.stderr


def _damage(folder: Path, workflow_id: str) -> Path:
    (path,) = folder.glob(f"{workflow_id}.*.json")
    path.write_bytes(path.read_bytes()[:150])
    return path


def test_damaged_state_file(app: App, duravoke_home: Path) -> None:
    for workflow_id in ("good-1", "bad", "good-2"):
        app.run(workflow_id)
    app.d.store.close()  # folds the log into the state files
    damaged = _damage(duravoke_home, "bad")

    proc = cli("list")
    assert proc.returncode == 1  # everything is listed, the damage is reported
    rows = [line.split() for line in proc.stdout.splitlines()]
    assert [row[0] for row in rows] == ["ID", "bad", "good-2", "good-1"]
    assert rows[1][1] == "corrupt"
    assert str(damaged) in proc.stdout  # where to look
    (warning,) = proc.stderr.splitlines()
    assert warning.startswith("duravoke: warning: ")
    assert str(damaged) in warning
    as_json = cli("list", "--json")
    assert as_json.returncode == 1
    listed = json.loads(as_json.stdout)
    assert [(w["id"], w["status"]) for w in listed] == [
        ("bad", "corrupt"),
        ("good-2", "completed"),
        ("good-1", "completed"),
    ]
    assert listed[0]["path"] == str(damaged)

    assert_one_line_error(cli("show", "bad"), str(damaged), "damaged")
    assert damaged.stat().st_size == 150  # left untouched

    forgot = cli("forget", "bad", "--yes")
    assert forgot.returncode == 0, forgot.stderr
    assert not damaged.exists()
    assert cli("list").returncode == 0
    assert listed_ids() == ["good-2", "good-1"]


def test_damaged_persisted_kkv_file(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    store = duravoke.PersistedKKV(path)
    App(store).run("one")
    store.checkpoint()  # the file as it reads a moment after the run, folded for good
    path.write_bytes(path.read_bytes().replace(b'"completed"', b'"complete"', 1))
    assert_one_line_error(cli("show", "one", "--store", str(path)), str(path), "checksum")
    for args in (["list"], ["list", "--json"]):
        proc = cli(*args, "--store", str(path))
        assert proc.returncode == 1
        (warning,) = proc.stderr.splitlines()
        assert warning.startswith("duravoke: warning: ")
        assert str(path) in warning
        assert "checksum" in warning
        assert "corrupt" in proc.stdout
        assert str(path) in proc.stdout


# --- usage ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [[], ["bogus"], ["show"], ["forget"], ["list", "--bogus"], ["where", "extra"]],
)
def test_usage_errors(args: list[str]) -> None:
    proc = cli(*args)
    assert proc.returncode == 2
    assert "usage:" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_help_and_version() -> None:
    proc = cli("--help")
    assert proc.returncode == 0
    for command in ("list", "show", "forget", "where"):
        assert command in proc.stdout
    assert cli("--version").stdout == f"duravoke {duravoke.__version__}\n"
