"""Crash injection and a side-effect log, shared by the examples.

The examples' tests run each example again and again with a crash probability, to
check that a step whose result was recorded never runs again. A crash here is
``os._exit``: no ``finally`` blocks, no flushing, like a power cut or ``kill -9``.

The log has one line per event: ``exec <step> <item>`` when a step's body starts (its
side effect happens), ``returned <step> <item>`` in the caller once the durable call has
returned, which means its result is recorded: no ``exec`` may follow for that item.

Environment variables:
    DURAVOKE_EXAMPLE_CRASH: probability of crashing at each crash point ("0": never).
    DURAVOKE_EXAMPLE_SEED: seed for the crash decisions (unseeded when absent).
    DURAVOKE_EXAMPLE_LOG: the log file (default ``duravoke_example.log`` here).
"""

from __future__ import annotations

import os
import random

#: The exit code of an injected crash, so tests can tell it from a real failure.
CRASH_EXIT_CODE = 17

_rate = float(os.environ.get("DURAVOKE_EXAMPLE_CRASH", "0"))
_rng = random.Random(os.environ.get("DURAVOKE_EXAMPLE_SEED"))
_log_path = os.environ.get("DURAVOKE_EXAMPLE_LOG", "duravoke_example.log")
# The items whose step body ran in this process. Crash points fire only for them: were
# they live while recorded steps replay, every re-run would face the odds again for each
# step already done, and a long run would almost never finish.
_executed: set[str] = set()


def log(line: str) -> None:
    """Append one line to the log; opened and closed each time, so a crash keeps it."""
    with open(_log_path, "a", encoding="utf-8") as f:
        f.write(line + "\n")


def executing(step: str, item: object, note: str = "") -> None:
    """Log that the body of ``step`` runs for ``item``: call it first thing in the body."""
    _executed.add(f"{step} {item}")
    log(f"exec {step} {item}{' ' + note if note else ''}")


def returned(step: str, item: object) -> None:
    """Log, in the caller, that the durable call of ``step`` for ``item`` has returned."""
    log(f"returned {step} {item}")


def crash_point(step: str, item: object) -> None:
    """Maybe kill the process here, if ``step`` ran for ``item`` in this process."""
    if _rate > 0 and f"{step} {item}" in _executed and _rng.random() < _rate:
        os._exit(CRASH_EXIT_CODE)
