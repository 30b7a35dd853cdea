"""An entry point that exists only in an "old version" of the code (tests/test_runner.py)."""

from __future__ import annotations

import os

import duravoke

d = duravoke.Duravoke(duravoke.open_store(os.environ["JOBS_STORE"]))


@d.duravoke(name="jobs.removed")
def removed(n: int) -> int:
    """Resumable only where this module is imported."""
    return n
