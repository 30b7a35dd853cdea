"""Durable functions at module level, for the runner scenarios (resume, sleeping).

A runner calls only functions decorated in modules it imported, found by their
registered names, so these live in a module of their own that each fresh process
imports. The store is chosen by ``DURAVOKE_BENCH_STORE`` (a folder, a DirectoryStore in
``flush`` durability: these scenarios measure finding work, not fsync).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duravoke

if "DURAVOKE_BENCH_STORE" not in os.environ:
    raise RuntimeError("benchmarks.workloads needs DURAVOKE_BENCH_STORE (the store's folder)")
STORE = duravoke.DirectoryStore(Path(os.environ["DURAVOKE_BENCH_STORE"]), durability="flush")
d = duravoke.Duravoke(STORE)
executed = [0]
_guard = threading.Lock()  # a runner may run workflows in several threads


def api(name: str) -> Any:
    """A module-level function of duravoke that may not exist yet (the scenario checks)."""
    return getattr(duravoke, name)


@d.duravoke(name="benchmarks.work")
def work(i: int) -> int:
    """One step: counts its executions, so a pass can check what it ran."""
    with _guard:
        executed[0] += 1
    return i


@d.duravoke(name="benchmarks.job")
def job(i: int) -> int:
    """A workflow of two steps."""
    return work(2 * i) + work(2 * i + 1)


@d.duravoke(name="benchmarks.sleeper")
def sleeper(i: int) -> int:
    """A step, an hour's durable sleep, a step: under a runner it suspends."""
    first = work(2 * i)
    api("sleep")(3600)
    return first + work(2 * i + 1)


def start(fn: Callable[..., Any], *args: Any) -> str:
    """``d.start`` if the instance has it, else the module-level ``duravoke.start``."""
    starter = getattr(d, "start", None) or api("start")
    return str(starter(fn, *args))


def resume() -> Any:
    """One runner pass over the store: ``d.resume()``, else ``duravoke.resume(store=...)``."""
    if hasattr(d, "resume"):
        return d.resume()
    return api("resume")(store=STORE)
