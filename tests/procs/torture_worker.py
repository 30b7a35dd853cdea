"""A long workflow for the crash-torture test to SIGKILL at random moments.

    python torture_worker.py SPEC WORKFLOW_ID LOG STEPS sync [DIE_AFTER]
    python torture_worker.py SPEC WORKFLOW_ID LOG STEPS asyncio|trio

``sync`` calls STEPS steps one after the other; ``asyncio``/``trio`` starts them all at
once in one anyio task group, so their records share writes and fsyncs (group commit).
Step ``i`` returns ``i * i``. The log gets ``exec i`` when a step body starts and
``returned i`` right after the call returns (its record is written by then); both with
one 32-byte ``os.write`` on an O_APPEND file, which a SIGKILL cannot half-do (it can cut
a write short only where it crosses a page boundary, and 32 divides the page size).

With DIE_AFTER, a sync run SIGKILLs itself once step DIE_AFTER has returned: a crash
at a known point. Prints ``ready`` (flushed) just before entering the workflow, and
``result <sum>`` at the end. Exit codes: 0 finished; 4 CorruptStateError (after
printing CORRUPT-STATE), also when it surfaces inside an exception group.
"""

from __future__ import annotations

import os
import signal
import sys

import anyio
import anyio.lowlevel

import duravoke

CORRUPT_EXIT = 4


def corrupt_in(exc: BaseException) -> duravoke.CorruptStateError | None:
    """The CorruptStateError ``exc`` is or holds (in an exception group), if any."""
    if isinstance(exc, duravoke.CorruptStateError):
        return exc
    for inner in getattr(exc, "exceptions", ()):
        found = corrupt_in(inner)
        if found is not None:
            return found
    return None


def main() -> int:
    spec, workflow_id, log, steps, mode = sys.argv[1:6]
    die_after = int(sys.argv[6]) if len(sys.argv) > 6 else -1
    d = duravoke.Duravoke(duravoke.open_store(spec))
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def note(text: str) -> None:
        # 32 bytes each, so that no write straddles a page: a SIGKILL can cut a write
        # short between two pages of the page cache (seen here: a log ending in "return").
        os.write(fd, f"{text:<31}\n".encode())

    @d.duravoke
    def step(i: int) -> int:
        note(f"exec {i}")
        return i * i

    @d.duravoke
    async def astep(i: int) -> int:
        note(f"exec {i}")
        await anyio.lowlevel.checkpoint()
        return i * i

    def run_sync() -> int:
        total = 0
        print("ready", flush=True)
        with d.workflow(workflow_id):
            for i in range(int(steps)):
                total += step(i)
                note(f"returned {i}")
                if i == die_after:
                    os.kill(os.getpid(), signal.SIGKILL)
        return total

    async def run_async() -> int:
        results: dict[int, int] = {}

        async def one(i: int) -> None:
            results[i] = await astep(i)
            note(f"returned {i}")

        # Ready once the event loop runs: its start-up is no moment worth killing.
        print("ready", flush=True)
        async with d.workflow(workflow_id), anyio.create_task_group() as tg:
            for i in range(int(steps)):
                tg.start_soon(one, i)
        return sum(results.values())

    try:
        total = run_sync() if mode == "sync" else anyio.run(run_async, backend=mode)
    except BaseException as exc:
        corrupt = corrupt_in(exc)
        if corrupt is None:
            raise
        print(f"CORRUPT-STATE {corrupt}", flush=True)
        return CORRUPT_EXIT
    print(f"result {total}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
