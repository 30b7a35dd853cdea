"""Workflows for the runner tests, imported by runner processes with ``--import runner_jobs``.

The instance's store comes from ``$JOBS_STORE`` (a spec for ``open_store``); every step
body appends a line to ``$JOBS_LOG`` (one ``os.write`` with O_APPEND, so lines from
several processes never mix), which is how the tests count executions.
"""

from __future__ import annotations

import os
import signal
import time

import duravoke

d = duravoke.Duravoke(duravoke.open_store(os.environ["JOBS_STORE"]))


def log(line: str) -> None:
    """Append one line to the shared log."""
    fd = os.open(os.environ["JOBS_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


@d.duravoke(name="jobs.step")
def step(n: int, i: int) -> int:
    """One step of job ``n``."""
    log(f"step {n} {i} {os.getpid()}")
    time.sleep(float(os.environ.get("JOBS_STEP_DELAY", "0")))
    return n * 10 + i


@d.duravoke(name="jobs.job")
def job(n: int, steps: int = 5) -> int:
    """A workflow of ``steps`` steps."""
    return sum(step(n, i) for i in range(steps))


@d.duravoke(name="jobs.ajob")
async def ajob(n: int) -> int:
    """An async workflow of two steps."""
    return step(n, 0) + step(n, 1)


@d.duravoke(name="jobs.failing")
def failing(n: int) -> None:
    """A workflow that always raises."""
    log(f"failing {n}")
    raise RuntimeError(f"failing {n}")


@d.duravoke(name="jobs.poison")
def poison(n: int) -> None:
    """A workflow that kills its process every time."""
    log(f"poison {n}")
    os.kill(os.getpid(), signal.SIGKILL)
