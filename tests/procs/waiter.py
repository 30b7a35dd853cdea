"""Workflows that wait, in a process of their own (tests/test_waiting.py).

    python waiter.py sleep MODE SPEC LOG DELAY      MODE: sync, asyncio or trio
    python waiter.py send SPEC WORKFLOW_ID TOPIC SENDER COUNT [DURABILITY]

``sleep``: workflow "sleeper": a step, a durable sleep of DELAY seconds, a step; each
step appends "<name> <time.time()>" to LOG. ``send``: COUNT messages [SENDER, i].
"""

from __future__ import annotations

import os
import sys
import time

import anyio

import duravoke


def main() -> int:
    command = sys.argv[1]
    if command == "send":
        spec, workflow_id, topic, sender, count = sys.argv[2:7]
        durability = sys.argv[7] if len(sys.argv) > 7 else "fsync"
        d = duravoke.Duravoke(duravoke.open_store(spec, durability=durability))  # type: ignore[arg-type]
        for i in range(int(count)):
            d.send(workflow_id, topic, [int(sender), i])
        return 0
    mode, spec, log, delay = sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5])
    d = duravoke.Duravoke(duravoke.open_store(spec))

    def note(name: str) -> None:
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.write(fd, f"{name} {time.time()}\n".encode())
        os.close(fd)

    @d.duravoke(name="waiter.before")
    def before() -> None:
        note("before")

    @d.duravoke(name="waiter.after")
    def after() -> None:
        note("after")

    if mode == "sync":
        with d.workflow("sleeper"):
            before()
            d.sleep(delay)
            after()
        return 0

    async def body() -> None:
        async with d.workflow("sleeper"):
            before()
            await d.sleep_async(delay)
            after()

    anyio.run(body, backend=mode)
    return 0


if __name__ == "__main__":
    sys.exit(main())
