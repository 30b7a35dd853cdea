"""The runner's examples as users run them: the onboarding script and a FastAPI server
under uvicorn, each killed with SIGKILL part-way and started again."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from conftest import finished

import duravoke

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def _wait_for(predicate: Any, what: str, limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, **extra, "DURAVOKE_HOME": str(home)}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    return env


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_onboarding_waits_for_confirmation_and_sleeps_across_a_kill(
    tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    home, outbox = tmp_path / "home", tmp_path / "outbox.jsonl"
    env = _env(
        home,
        ONBOARDING_OUTBOX=str(outbox),
        ONBOARDING_CONFIRM_SECONDS="4",
        ONBOARDING_TIPS_SECONDS="2",
    )

    def example(*args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "onboarding.py", *args],
            cwd=EXAMPLES,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        return proc

    users = ["ann@example.com", "bob@example.com"]
    for user in users:
        finished(example("signup", user))
    store = duravoke.DirectoryStore(home)
    runner = example("run")

    def sent() -> list[tuple[str, str]]:
        return [(m["to"], m["template"]) for m in map(json.loads, _lines(outbox))]

    _wait_for(lambda: len(sent()) == 2, "the welcome e-mails")
    finished(example("confirm", users[0]))
    _wait_for(
        lambda: duravoke.get_workflow(f"onboarding:{users[0]}", store).status == "sleeping",
        "ann's sleep before her tips",
    )
    assert duravoke.get_workflow(f"onboarding:{users[1]}", store).status == "waiting"
    runner.send_signal(signal.SIGKILL)  # nothing is lost: both are suspended
    runner.communicate()
    runner = example("run")
    _wait_for(
        lambda: all(
            duravoke.get_workflow(f"onboarding:{u}", store).status == "completed" for u in users
        ),
        "both onboardings to finish",
    )
    runner.send_signal(signal.SIGINT)
    runner.communicate(timeout=30)
    assert Counter(sent()) == Counter(
        [
            (users[0], "welcome"),
            (users[1], "welcome"),
            (users[0], "tips"),
            (users[1], "please-confirm"),
        ]
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_fastapi_signups_finish_after_the_server_is_killed(
    tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    home, log = tmp_path / "home", tmp_path / "signups.log"
    env = _env(home, SIGNUP_LOG=str(log), SIGNUP_STEP_SECONDS="0.05")
    port = _free_port()
    base = f"http://127.0.0.1:{port}"

    def serve() -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "fastapi_app:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            cwd=EXAMPLES,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)

        def up() -> bool:
            assert proc.poll() is None, proc.communicate()[1]
            try:
                return bool(httpx.get(f"{base}/health", timeout=1).status_code == 200)
            except httpx.TransportError:
                return False

        _wait_for(up, "the server to start")
        return proc

    server = serve()
    emails = [f"user{n}@example.com" for n in range(50)]
    with httpx.Client(base_url=base, timeout=10) as client:
        for email in emails:
            response = client.post("/signup", json={"email": email})
            assert response.status_code == 202
            assert response.json() == {"workflow_id": f"signup:{email}"}
    _wait_for(lambda: len(_lines(log)) >= 40, "some steps to run")
    server.send_signal(signal.SIGKILL)
    server.communicate()
    before = _lines(log)
    store = duravoke.DirectoryStore(home)
    recorded = {
        (w.id.removeprefix("signup:"), s.args["what"])
        for w in duravoke.list_workflows(store)  # listed without their steps
        for s in duravoke.get_workflow(w.id, store).steps
        if s.function == "signup.step" and s.status == "completed"
    }
    assert 0 < len(recorded) < 200  # killed mid-way
    server = serve()
    with httpx.Client(base_url=base, timeout=10) as client:
        _wait_for(
            lambda: all(
                client.get(f"/signup/{email}").json()["status"] == "completed" for email in emails
            ),
            "every onboarding to finish",
            60,
        )
    server.send_signal(signal.SIGINT)
    server.communicate(timeout=30)
    after = _lines(log)[len(before) :]
    executed = [tuple(line.split()[1:]) for line in before + after]
    rerun = {tuple(line.split()[1:]) for line in after} & recorded
    assert not rerun, f"recorded steps ran again: {sorted(rerun)[:5]}"
    counts = Counter(executed)
    assert set(counts) == {
        (e, w)
        for e in emails
        for w in ("create-account", "welcome-email", "add-to-crm", "notify-sales")
    }
    # A step cut short by the kill (in flight, not recorded) runs again: at most one per
    # workflow the runner was running (8 at once), never a recorded one.
    assert sum(n - 1 for n in counts.values()) <= 8
