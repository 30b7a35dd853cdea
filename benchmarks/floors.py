"""Floors: what the disk or the server costs for the same work, measured in the same run.

Every ratio in the report divides a store's figure by one of these:

- ``append+fsync``: one small record appended to one file and fsynced (sequential steps);
- ``shared journal``: W concurrent workflows (async tasks, or threads) whose records go
  to one shared file, one write and one fsync per batch of whatever is queued (group
  commit across workflows, done as simply as it can be);
- ``pg batch``: the same with Postgres: all rows through one connection, one COMMIT per
  batch;
- ``INSERT+COMMIT``: one row inserted and committed per step on one connection;
- ``index read``: reading and decoding an index of N JSON lines (what finding workflows
  among N should cost at most);
- ``json decode``: the peak memory of decoding a store's files with ``json`` alone;
- ``hand-off``: an event loop handing nothing to a waiting thread and being woken back
  (what any async step that must not block its loop pays, on top of the write).

The floors call the real ``os.fsync`` (the counting wrapper is for the library) and count
their own fsyncs and commits.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import threading
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from .harness import REAL_FSYNC, median, now_ns, peak_memory

#: A journal-like line of 150 bytes for the append+fsync floor.
RECORD = b'0a1b2c3d {"sid":"' + b"f" * 32 + b':0","fn":"bench.step","status":"completed"'
RECORD += b"," + b"x" * (149 - len(RECORD) - 2) + b"}\n"
assert len(RECORD) == 150


def step_record(workflow: int, step: int) -> bytes:
    """A step record as a journal would hold it: checksum, then one line of JSON."""
    body = json.dumps(
        {
            "wid": f"w-{workflow}",
            "sid": f"{workflow:016x}{step:016x}:0",
            "fn": "benchmarks.step",
            "status": "completed",
            "result": f'"r-{workflow}-{step}"',
        },
        separators=(",", ":"),
    ).encode()
    return b"%08x %s\n" % (zlib.crc32(body), body)


# --- append + fsync -------------------------------------------------------------------------


def append_fsync(folder: Path, *, sync: bool = True, batches: int, per_batch: int) -> list[float]:
    """Microseconds per append of one 150-byte record to an O_APPEND file (+ fsync)."""
    path = folder / f"floor-{'fsync' if sync else 'write'}.log"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    samples = []
    try:
        os.write(fd, RECORD)
        REAL_FSYNC(fd)
        for _ in range(batches):
            gc.collect()
            t0 = now_ns()
            for _ in range(per_batch):
                os.write(fd, RECORD)
                if sync:
                    REAL_FSYNC(fd)
            samples.append((now_ns() - t0) / per_batch / 1e3)
    finally:
        os.close(fd)
        path.unlink()
    return samples


class Probe:
    """Timed appends of the floor record, with fsync, to a file in a store's folder.

    Called between the steps of a sequential run (its time is taken out of theirs), so
    the floor is sampled all through each run: the disk of a shared machine is noisy.
    """

    APPENDS = 10

    def __init__(self, folder: Path, steps: int) -> None:
        self.every = max(steps // 10, 1)
        self.path = folder / "floor-probe.log"
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.write(self.fd, RECORD)
        REAL_FSYNC(self.fd)
        self.samples: list[float] = []
        self.spent_ns = 0

    def __call__(self) -> None:
        t0 = now_ns()
        for _ in range(self.APPENDS):
            os.write(self.fd, RECORD)
            REAL_FSYNC(self.fd)
        spent = now_ns() - t0
        self.spent_ns += spent
        self.samples.append(spent / self.APPENDS / 1e3)

    #: Commits the probe made: none here (it calls the real fsync, which is not counted).
    commits = 0

    def close(self) -> None:
        os.close(self.fd)
        self.path.unlink()


class PgProbe:
    """:class:`Probe` for Postgres: timed INSERT + COMMIT of one row on its own connection.

    Its commits go through psycopg, so the commit counter sees them: callers subtract
    :attr:`commits`.
    """

    APPENDS = 5

    def __init__(self, dsn: str, schema: str, steps: int) -> None:
        self.every = max(steps // 10, 1)
        self.flush = PgFlush(dsn, schema, table="probe_rows")
        self.samples: list[float] = []
        self.spent_ns = 0
        self.n = 0

    @property
    def commits(self) -> int:
        return self.flush.batches

    def __call__(self) -> None:
        t0 = now_ns()
        for _ in range(self.APPENDS):
            self.n += 1
            self.flush([step_record(0, self.n)])
        spent = now_ns() - t0
        self.spent_ns += spent
        self.samples.append(spent / self.APPENDS / 1e3)

    def close(self) -> None:
        self.flush.close()


# --- group commit: the flush functions ------------------------------------------------------


class FileFlush:
    """One write + one fsync of a batch of records to one shared journal file."""

    def __init__(self, folder: Path) -> None:
        path = folder / "floor-journal.log"
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        # Outside the timing: creating the file makes the first fsyncs pay for metadata.
        os.write(self.fd, RECORD)
        REAL_FSYNC(self.fd)
        self.batches = 0

    def __call__(self, batch: list[bytes]) -> None:
        os.write(self.fd, b"".join(batch))
        REAL_FSYNC(self.fd)
        self.batches += 1

    def close(self) -> None:
        os.close(self.fd)


class PgFlush:
    """All rows of a batch through one connection, one COMMIT."""

    def __init__(self, dsn: str, schema: str, table: str = "floor_rows") -> None:
        import psycopg

        self.conn = psycopg.connect(dsn, autocommit=False)
        table = f'"{schema}".{table}'
        self.conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'.encode())
        self.conn.execute(
            f"CREATE TABLE IF NOT EXISTS {table}"
            " (wid text, sid text, body text, PRIMARY KEY (wid, sid))".encode()
        )
        self.conn.execute(f"TRUNCATE {table}".encode())
        self.conn.commit()
        self.insert = f"INSERT INTO {table} (wid, sid, body) VALUES (%s, %s, %s)".encode()
        self.batches = 0

    def __call__(self, batch: list[bytes]) -> None:
        rows = []
        for line in batch:
            body = line[9:].decode()
            record = json.loads(body)
            rows.append((record["wid"], record["sid"], body))
        with self.conn.cursor() as cur:
            cur.executemany(self.insert, rows)
        self.conn.commit()
        self.batches += 1

    def close(self) -> None:
        self.conn.close()


def _flush_for(folder: str, dsn: str | None, schema: str | None) -> FileFlush | PgFlush:
    if dsn is not None and schema is not None:
        return PgFlush(dsn, schema)
    return FileFlush(Path(folder))


# --- the async hand-off ---------------------------------------------------------------------


async def _handoff(rounds: int) -> float:
    from duravoke._groupcommit import _running_loop

    _, call_soon = _running_loop()
    cond = threading.Condition()
    asks: list[anyio.Event | None] = []

    def serve() -> None:
        with cond:
            while True:
                while not asks:
                    cond.wait()
                done = asks.pop()
                if done is None:
                    return
                call_soon(done.set)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        times = []
        for _ in range(rounds):
            done = anyio.Event()
            t0 = now_ns()
            with cond:
                asks.append(done)
                cond.notify()
            await done.wait()
            times.append(now_ns() - t0)
    finally:
        with cond:
            asks.append(None)
            cond.notify()
        thread.join()
    return median(times[rounds // 10 :]) / 1e3


def handoff(backend: str, rounds: int) -> float:
    """Median microseconds for an event loop to wake a waiting thread (a condition
    variable) and be woken back by it (``call_soon_threadsafe`` or trio's token), with
    no work in between: the least a step that waits for a writer thread can cost."""
    return anyio.run(_handoff, rounds, backend=backend)


# --- group commit: async workflows ----------------------------------------------------------


async def _async_group(flush: Callable[[list[bytes]], None], workflows: int, steps: int) -> float:
    """``workflows`` tasks of ``steps`` steps; a writer task flushes whatever is queued.

    Returns the seconds from starting the tasks to the last one done, timed inside the
    event loop as the stores' runs are (the loop's own start is no part of either).

    The flush runs in a worker thread (one hop per batch), so the loop never blocks on
    the disk; each step waits for the batch that holds its record.
    """
    pending: list[tuple[bytes, anyio.Event]] = []
    wake = [anyio.Event()]

    async def writer() -> None:
        while True:
            await wake[0].wait()
            wake[0] = anyio.Event()
            batch = pending[:]
            pending.clear()
            if batch:
                await anyio.to_thread.run_sync(flush, [r for r, _ in batch])
                for _, done in batch:
                    done.set()

    async def workflow(w: int) -> None:
        for i in range(steps):
            done = anyio.Event()
            pending.append((step_record(w, i), done))
            wake[0].set()
            await done.wait()

    async with anyio.create_task_group() as outer:
        outer.start_soon(writer)
        t0 = now_ns()
        async with anyio.create_task_group() as tg:
            for w in range(workflows):
                tg.start_soon(workflow, w)
        seconds = (now_ns() - t0) / 1e9
        outer.cancel_scope.cancel()
    return seconds


def async_group(
    *, folder: str, backend: str, workflows: int, steps: int, dsn: str | None = None,
    schema: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Child-process entry: the async group-commit floor, timed."""
    flush = _flush_for(folder, dsn, schema)
    try:
        seconds = anyio.run(_async_group, flush, workflows, steps, backend=backend)
    finally:
        flush.close()
    return {"seconds": seconds, "steps": workflows * steps, "writes": flush.batches}


# --- group commit: threads ------------------------------------------------------------------


class GroupWriter:
    """Leader/follower group commit for threads: the first waiter writes every queued record."""

    def __init__(self, flush: Callable[[list[bytes]], None]) -> None:
        self.flush = flush
        self.cond = threading.Condition()
        self.pending: list[bytes] = []
        self.queued = 0
        self.durable = 0
        self.writing = False

    def append(self, record: bytes) -> None:
        with self.cond:
            self.pending.append(record)
            self.queued += 1
            mine = self.queued
            while self.durable < mine:
                if self.writing:
                    self.cond.wait()
                    continue
                self.writing = True
                batch, self.pending = self.pending, []
                upto = self.queued
                self.cond.release()
                try:
                    self.flush(batch)
                finally:
                    self.cond.acquire()
                    self.writing = False
                    self.cond.notify_all()
                self.durable = upto


def thread_group(
    *, folder: str, threads: int, workflows: int, steps: int, dsn: str | None = None,
    schema: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Child-process entry: ``threads`` threads share ``workflows`` workflows of ``steps``."""
    flush = _flush_for(folder, dsn, schema)
    writer = GroupWriter(flush)
    start = threading.Barrier(threads + 1)

    def worker(t: int) -> None:
        start.wait()
        for w in range(t, workflows, threads):
            for i in range(steps):
                writer.append(step_record(w, i))

    pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    try:
        for th in pool:
            th.start()
        start.wait()
        t0 = now_ns()
        for th in pool:
            th.join()
        seconds = (now_ns() - t0) / 1e9
    finally:
        flush.close()
    return {"seconds": seconds, "steps": workflows * steps, "writes": flush.batches}


# --- Postgres: one INSERT + COMMIT per step -------------------------------------------------


def insert_commit(dsn: str, schema: str, steps: int) -> dict[str, Any]:
    """Child-process entry: microseconds per INSERT + COMMIT of one row on one connection."""
    flush = PgFlush(dsn, schema)
    try:
        t0 = now_ns()
        for i in range(steps):
            flush([step_record(0, i)])
        us = (now_ns() - t0) / steps / 1e3
    finally:
        flush.close()
    return {"us": us, "commits": flush.batches}


# --- index read -----------------------------------------------------------------------------


def index_read(folder: Path, entries: int, reps: int = 3) -> float:
    """Seconds to read and decode an index of ``entries`` JSON lines (median of ``reps``)."""
    path = folder / f"floor-index-{entries}.jsonl"
    with path.open("w", encoding="utf-8") as f:
        for i in range(entries):
            row = {"id": f"bench-{i:07d}", "status": "completed", "updated": 1.7e9 + i, "due": None}
            f.write(json.dumps(row) + "\n")
    samples = []
    try:
        for _ in range(reps):
            gc.collect()
            t0 = now_ns()
            with path.open("rb") as f:
                rows = [json.loads(line) for line in f]
            samples.append((now_ns() - t0) / 1e9)
            assert len(rows) == entries
    finally:
        path.unlink()
    return median(samples)


# --- json decode: the memory floor ----------------------------------------------------------


def json_decode_peak(folder: str, trace: bool) -> dict[str, Any]:
    """Child-process entry: peak memory of decoding every file in ``folder`` with json.

    A file that is one JSON document is decoded whole; any other is decoded line by line
    from each line's first ``{`` (journals prefix records with a checksum), or whole when it
    starts with ``[`` (a record of the log). Everything
    decoded is kept until the end, as a replay keeps what it needs.
    """
    files = sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix != ".lock")
    with peak_memory(trace) as peak:
        kept = _decode_all(files)
    return {"peak_bytes": peak[0], "records": len(kept), "files": len(files)}


def _decode_all(files: list[Path]) -> list[Any]:
    kept: list[Any] = []
    for path in files:
        data = path.read_bytes()
        try:
            kept.append(json.loads(data))
            continue
        except ValueError:
            pass
        for line in data.splitlines():
            # A log record is a line of its own, [workflow id, record]; a 0.2 journal's
            # record follows a checksum.
            start = 0 if line.startswith(b"[") else line.find(b"{")
            if start >= 0:
                with contextlib.suppress(ValueError):
                    kept.append(json.loads(line[start:]))
    return kept
