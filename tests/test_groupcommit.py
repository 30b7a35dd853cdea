"""Group commit's async path: a writer thread writes, each event loop is woken per batch."""

from __future__ import annotations

import gc
import sys
import threading
import time
import weakref
from pathlib import Path

import anyio
import pytest

import duravoke
from duravoke._groupcommit import Batcher, GroupCommit


class Disk:
    """A write function that records batches; slow like an fsync, failing on request."""

    def __init__(self, delay: float = 0.0) -> None:
        self.batches: list[list[int]] = []
        self.written: set[int] = set()
        self.delay = delay
        self.fail_on: set[int] = set()
        self.threads: set[str] = set()

    def write(self, batch: list[int]) -> None:
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay)
        if self.fail_on & set(batch):
            raise OSError(28, "No space left on device")
        self.batches.append(list(batch))
        self.written.update(batch)


def _error(failure: BaseException) -> Exception:
    return RuntimeError(f"write failed: {failure!r}")


@pytest.mark.anyio
async def test_async_waiters_share_batches_written_off_the_loop() -> None:
    disk = Disk(delay=0.02)
    commit: GroupCommit[int] = GroupCommit(disk.write, _error)
    returned_early: list[int] = []
    queued: list[int] = []
    ticks = 0

    async def one(item: int) -> None:
        ticket = commit.ticket(item)
        queued.append(item)
        await ticket.wait_async()
        if item not in disk.written:
            returned_early.append(item)

    async def ticker(done: anyio.Event) -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await anyio.sleep(0.001)

    done = anyio.Event()
    with anyio.fail_after(60):
        async with anyio.create_task_group() as outer:
            outer.start_soon(ticker, done)
            async with anyio.create_task_group() as tg:
                for item in range(300):
                    tg.start_soon(one, item)
            done.set()
    assert returned_early == []
    assert sorted(queued) == list(range(300))
    assert [i for batch in disk.batches for i in batch] == queued  # once, in queue order
    assert len(disk.batches) < 300  # shared: the first batch alone holds every early item
    assert disk.threads == {"duravoke-writer"}  # the event loop's thread never wrote
    assert ticks >= 5  # the loop ran on while the writer slept in its "fsync"


@pytest.mark.anyio
async def test_a_failed_batch_raises_in_its_async_waiters_only() -> None:
    disk = Disk()
    disk.fail_on = {3}
    commit: GroupCommit[int] = GroupCommit(disk.write, _error, sticky=False)
    with anyio.fail_after(60):
        for item in range(3):
            await commit.ticket(item).wait_async()
        with pytest.raises(RuntimeError, match="No space left"):
            await commit.ticket(3).wait_async()
        await commit.ticket(4).wait_async()  # not sticky: the next batch is written
    assert disk.written == {0, 1, 2, 4}


@pytest.mark.anyio
async def test_a_sticky_failure_refuses_later_items() -> None:
    disk = Disk()
    disk.fail_on = {0}
    commit: GroupCommit[int] = GroupCommit(disk.write, _error)
    with anyio.fail_after(60):
        with pytest.raises(RuntimeError, match="No space left"):
            await commit.ticket(0).wait_async()
        with pytest.raises(RuntimeError, match="No space left"):
            await commit.ticket(1).wait_async()
    with pytest.raises(RuntimeError, match="No space left"):
        commit.submit(2)
    assert disk.written == set()


def test_loops_in_several_threads_and_sync_callers_share_one_commit() -> None:
    disk = Disk(delay=0.002)
    commit: GroupCommit[int] = GroupCommit(disk.write, _error)
    errors: list[BaseException] = []

    async def loop_main(base: int) -> None:
        async def one(item: int) -> None:
            await commit.ticket(item).wait_async()
            assert item in disk.written

        async with anyio.create_task_group() as tg:
            for item in range(base, base + 100):
                tg.start_soon(one, item)

    def in_thread(base: int, backend: str) -> None:
        try:
            anyio.run(loop_main, base, backend=backend)
        except BaseException as exc:
            errors.append(exc)

    def sync_caller(base: int) -> None:
        for item in range(base, base + 50):
            commit.submit(item)

    threads = [
        threading.Thread(target=in_thread, args=(0, "asyncio")),
        threading.Thread(target=in_thread, args=(1000, "trio")),
        threading.Thread(target=in_thread, args=(2000, "asyncio")),
        threading.Thread(target=sync_caller, args=(3000,)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    expected = {*range(100), *range(1000, 1100), *range(2000, 2100), *range(3000, 3050)}
    assert disk.written == expected
    assert sum(len(b) for b in disk.batches) == len(expected)  # each written once


def test_the_writer_thread_leaves_when_idle_and_comes_back() -> None:
    disk = Disk()
    commit: GroupCommit[int] = GroupCommit(disk.write, _error)

    def writers() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "duravoke-writer"]

    before = set(writers())  # other tests' commits may have writers of their own
    anyio.run(commit.ticket(1).wait_async)
    started = set(writers()) - before
    assert len(started) == 1  # this commit's writer
    deadline = time.monotonic() + 10
    while any(t.is_alive() for t in started) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(t.is_alive() for t in started)  # no thread kept for an idle commit
    anyio.run(commit.ticket(2).wait_async)
    assert disk.written == {1, 2}


def test_an_exclusive_batcher_grants_a_key_once_per_lookup() -> None:
    # Lock attempts for one key made together by several threads: the lock is taken
    # once per lookup, so only one of the batch's requests may get it.
    lookups: list[list[str]] = []

    def take(keys: list[str]) -> dict[str, bool]:
        lookups.append(keys)
        time.sleep(0.2)  # the other threads queue meanwhile
        return dict.fromkeys(keys, True)

    batcher: Batcher[str, bool] = Batcher(take, False, exclusive=True)
    got: list[bool] = []
    threads = [threading.Thread(target=lambda: got.append(batcher.get("k"))) for _ in range(8)]
    for thread in threads:
        thread.start()
        time.sleep(0.01)
    for thread in threads:
        thread.join(30)
    assert len(got) == 8
    assert len(lookups) < 8  # requests were batched
    assert got.count(True) == len(lookups)  # one grant per lookup, never per request


def _run_once_and_drop(folder: Path) -> weakref.ref[duravoke.DirectoryStore]:
    store = duravoke.DirectoryStore(folder)
    d = duravoke.Duravoke(store)

    @d.duravoke
    async def step(x: int) -> int:
        return x

    async def main() -> None:
        async with d.workflow("w"):
            await step(1)

    anyio.run(main)
    return weakref.ref(store)


def test_a_store_that_ran_workflows_is_freed_with_its_files(tmp_path: Path) -> None:
    # Nothing global (the cancellation watch of each store, say) may keep a store alive
    # after its last user lets go of it, and a freed store closes the files it held open.
    fds = Path("/proc/self/fd")
    before = len(list(fds.iterdir())) if fds.is_dir() else 0
    stores = [_run_once_and_drop(tmp_path / f"s{i}") for i in range(20)]
    deadline = time.monotonic() + 10  # the writer thread lets go after a second idle
    while any(s() is not None for s in stores) and time.monotonic() < deadline:
        gc.collect()
        time.sleep(0.1)
    assert all(s() is None for s in stores)
    if fds.is_dir():
        # Each store held two descriptors (the log's segment and lock): 40 if leaked.
        assert len(list(fds.iterdir())) - before < 10


# --- writing on the event loop when nothing can make it wait (flush mode) ------------------


@pytest.mark.anyio
async def test_a_write_that_cannot_wait_is_made_on_the_loop_for_all_its_ready_tasks() -> None:
    disk = Disk()
    loop_thread = threading.current_thread().name

    def write_now(batch: list[int]) -> bool:
        disk.write(batch)
        return True

    commit: GroupCommit[int] = GroupCommit(disk.write, _error, write_now=write_now)

    async def one(item: int) -> None:
        await commit.ticket(item).wait_async()
        assert item in disk.written

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for item in range(100):
                tg.start_soon(one, item)
        for item in range(100, 110):  # one after another
            await one(item)
    assert disk.threads == {loop_thread}  # no writer thread was woken
    assert disk.written == set(range(110))
    assert len(disk.batches) < 20  # the tasks that were ready together shared a write


@pytest.mark.anyio
async def test_a_write_that_would_wait_goes_to_the_writer_thread() -> None:
    disk = Disk()
    refused: list[list[int]] = []

    def write_now(batch: list[int]) -> bool:
        refused.append(list(batch))  # as the log does when another process holds its lock
        return False

    commit: GroupCommit[int] = GroupCommit(disk.write, _error, write_now=write_now)
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for item in range(20):
                tg.start_soon(lambda i: commit.ticket(i).wait_async(), item)
    assert refused  # it was asked, and said no
    assert disk.threads == {"duravoke-writer"}
    assert [i for batch in disk.batches for i in batch] == list(range(20))  # once, in order


@pytest.mark.anyio
async def test_async_flush_steps_never_wait_for_another_process_on_the_loop(
    tmp_path: Path,
) -> None:
    # Another process holds the log's lock (it is writing, or fsyncing in fsync mode):
    # an async step in flush mode must not block its event loop waiting for it.
    store = duravoke.DirectoryStore(tmp_path / "s", durability="flush")
    d = duravoke.Duravoke(store)

    @d.duravoke
    async def step(i: int) -> int:
        return i * 2

    async with d.workflow("w"):
        assert await step(0) == 0  # creates the log
        lock = str(tmp_path / "s" / "log" / "lock")
        async with await anyio.open_process([sys.executable, "-c", HOLD_LOCK, lock]) as holder:
            assert holder.stdout is not None
            assert (await holder.stdout.receive()).startswith(b"locked")
            ticks = 0
            done = anyio.Event()

            async def ticker() -> None:
                nonlocal ticks
                while not done.is_set():
                    ticks += 1
                    await anyio.sleep(0.005)

            with anyio.fail_after(60):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(ticker)
                    started = time.monotonic()
                    assert await step(1) == 2  # waits for the lock, off the loop
                    waited = time.monotonic() - started
                    done.set()
    assert waited >= 0.3  # it did wait for the other process...
    assert ticks >= 10  # ...while the loop ran on
    state = duravoke.DirectoryStore(tmp_path / "s").read("w")
    assert state is not None
    assert len(state["steps"]) == 2


# Holds a file's flock for 0.5 s (or until killed), saying so once it has it.
HOLD_LOCK = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(0.5)
"""
