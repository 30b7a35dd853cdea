"""The "duravoke" logger: INFO per workflow, DEBUG per step, silent unless configured."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

import pytest

import duravoke


def _messages(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "duravoke"]


def test_first_run_then_replay(d: duravoke.Duravoke, caplog: pytest.LogCaptureFixture) -> None:
    @d.duravoke(name="add")
    def add(a: int, b: int) -> int:
        return a + b

    caplog.set_level(logging.DEBUG, logger="duravoke")
    with d.workflow("sums"):
        add(1, 2)
        add(3, 4)
    first = _messages(caplog)
    assert first[0] == (logging.INFO, "workflow 'sums' started (run 1, 0 steps recorded)")
    assert first[-1] == (
        logging.INFO,
        "workflow 'sums' completed: 0 steps replayed, 2 executed, 0 failed",
    )
    executed = [m for level, m in first if level == logging.DEBUG]
    assert len(executed) == 2
    assert all(m.startswith("executed add (step ") for m in executed)
    assert all("completed" in m and "'sums'" in m for m in executed)

    caplog.clear()
    with d.workflow("sums"):
        add(1, 2)
        add(3, 4)
        add(5, 6)
    second = _messages(caplog)
    assert second[0] == (logging.INFO, "workflow 'sums' started (run 2, 2 steps recorded)")
    assert second[-1] == (
        logging.INFO,
        "workflow 'sums' completed: 2 steps replayed, 1 executed, 0 failed",
    )
    debug = [m for level, m in second if level == logging.DEBUG]
    assert [m.split()[0] for m in debug] == ["replayed", "replayed", "executed"]


def test_failure_is_a_warning(d: duravoke.Duravoke, caplog: pytest.LogCaptureFixture) -> None:
    @d.duravoke
    def boom() -> None:
        raise ValueError("nope")

    def run() -> None:
        with d.workflow("w"):
            boom()

    caplog.set_level(logging.DEBUG, logger="duravoke")
    with pytest.raises(ValueError, match="nope"):
        run()
    messages = _messages(caplog)
    assert messages[-1] == (
        logging.WARNING,
        "workflow 'w' failed (ValueError('nope')): 0 steps replayed, 0 executed, 1 failed",
    )
    assert any(level == logging.DEBUG and "failed" in m for level, m in messages)


def test_info_level_has_no_step_lines(
    d: duravoke.Duravoke, caplog: pytest.LogCaptureFixture
) -> None:
    @d.duravoke
    def one() -> int:
        return 1

    caplog.set_level(logging.INFO, logger="duravoke")
    with d.workflow("w"):
        one()
    assert [level for level, _ in _messages(caplog)] == [logging.INFO, logging.INFO]


_PROGRAM = textwrap.dedent(
    """
    import logging, sys
    if sys.argv[1] == "configured":
        logging.basicConfig(level=logging.DEBUG, format="%(name)s %(levelname)s %(message)s")
    import duravoke

    @duravoke.duravoke
    def double(x):
        return 2 * x

    @duravoke.duravoke
    def fail():
        raise ValueError("nope")

    with duravoke.workflow("logged"):
        double(21)
    try:
        with duravoke.workflow("failing"):
            fail()
    except ValueError:
        pass
    """
)


@pytest.mark.parametrize("mode", ["silent", "configured"])
def test_output_only_when_the_application_configures_logging(mode: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _PROGRAM, mode],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert proc.stdout == ""
    if mode == "silent":
        # Not even the warning of the failed workflow: the library has a NullHandler.
        assert proc.stderr == ""
        return
    lines = proc.stderr.splitlines()
    assert "duravoke INFO workflow 'logged' started (run 1, 0 steps recorded)" in lines
    assert any(line.startswith("duravoke DEBUG executed __main__.double") for line in lines)
    assert (
        "duravoke INFO workflow 'logged' completed: 0 steps replayed, 1 executed, 0 failed" in lines
    )
    assert (
        "duravoke WARNING workflow 'failing' failed (ValueError('nope')): 0 steps replayed,"
        " 0 executed, 1 failed" in lines
    )
