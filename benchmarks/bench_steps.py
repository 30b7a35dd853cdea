"""What a durable step costs, next to what the disk itself costs, measured in one run.

Run ``python benchmarks/bench_steps.py`` (``--quick`` for a smoke run, ``--json`` for
machine-readable output, ``--postgres DSN`` to add PostgresStore rows, ``--profile``
for cProfile listings of the record and replay paths). See benchmarks/README.md for
what each column means and the targets (DESIGN.md section 9).

The benchmark reports; it never gates: it exits 0 whatever the verdicts.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import dataclasses
import datetime
import gc
import io
import json
import os
import platform
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import anyio

import duravoke

#: Targets from DESIGN.md section 9.
MAX_FSYNC_RATIO = 1.3
MAX_FLUSH_US = 20.0
MAX_REPLAY_US = 10.0
MAX_SCALING = 1.5
MAX_GROUP_FSYNCS_PER_STEP = 0.1

#: Steps per workflow, and how many times each size is measured (the median is kept).
REPS = {100: 5, 1_000: 3, 10_000: 3}
QUICK_REPS = {100: 3, 1_000: 1}
#: An fsync run of 10,000 steps takes seconds: once is enough.
FSYNC_REPS_10K = 1
GROUP_STEPS = 1_000

#: A journal-like line of 150 bytes for the baseline appends.
BASELINE_RECORD = b'0a1b2c3d {"sid":"' + b"f" * 32 + b':0","fn":"bench.step","status":"completed"'
BASELINE_RECORD += b"," + b"x" * (149 - len(BASELINE_RECORD) - 2) + b"}\n"
assert len(BASELINE_RECORD) == 150

now_ns = time.perf_counter_ns
#: The baselines call the real fsync; the library calls the counting wrapper below
#: (a lock and an addition: well under a microsecond).
REAL_FSYNC = os.fsync


class FsyncCounter:
    """Replaces ``os.fsync`` in this process with a wrapper that counts calls.

    The library calls ``os.fsync`` through the module at call time, so it sees the
    wrapper; the benchmark's own baseline appends do not.
    """

    def __init__(self) -> None:
        self.count = 0
        self._real = REAL_FSYNC
        self._guard = threading.Lock()

    def __call__(self, fd: Any) -> None:
        self._real(fd)
        with self._guard:
            self.count += 1

    @contextlib.contextmanager
    def installed(self) -> Iterator[FsyncCounter]:
        os.fsync = self
        try:
            yield self
        finally:
            os.fsync = self._real


FSYNCS = FsyncCounter()


@dataclasses.dataclass(frozen=True)
class Case:
    """One row: a store kind, a way of calling, a durability and a workflow size."""

    store: str  # "DirectoryStore", "PersistedKKV" or "PostgresStore"
    mode: str  # "sync", "asyncio", "trio"; "-tg" suffix: all steps in one task group
    durability: Literal["fsync", "flush"]
    steps: int
    reps: int

    @property
    def slug(self) -> str:
        return f"{self.store}-{self.mode}-{self.durability}-{self.steps}"

    @property
    def backend(self) -> str | None:
        return None if self.mode == "sync" else self.mode.removesuffix("-tg")


@dataclasses.dataclass
class Phases:
    """Timings of one run of a workflow: entering, the loop of calls, leaving."""

    enter_ns: int
    loop_ns: int
    exit_ns: int
    loop_fsyncs: int
    calls: int
    peak_bytes: int = 0

    @property
    def total_ns(self) -> int:
        return self.enter_ns + self.loop_ns + self.exit_ns


@dataclasses.dataclass
class Row:
    """Everything measured for one case; per-step figures in microseconds."""

    store: str
    mode: str
    durability: str
    steps: int
    reps: int
    record_us: float  # first run, whole workflow (enter + loop + exit) / steps
    record_enter_ms: float
    record_loop_us: float
    record_exit_ms: float
    fsync_baseline_us: float | None  # mean append + fsync, sampled through the first runs
    record_x_fsync: float | None  # record_us / fsync_baseline_us, fsync rows only
    fsyncs_per_step: float  # during the loop of the first run
    replay_us: float  # second run, loop inside the workflow / steps
    replay_load_ms: float  # second run, entering the workflow (lock + load)
    replay_exit_ms: float  # second run, leaving the workflow (compaction)
    disk_bytes: int | None  # sum of file sizes in the store folder after the first run
    peak_mib: float  # tracemalloc peak of the first run, in a separate run
    record_scaling: float | None = None  # per-step cost at 10,000 / at 100 steps
    record_scaling_raw: float | None = None  # the same, not divided by the fsync baselines
    replay_scaling: float | None = None
    checks: dict[str, bool] = dataclasses.field(default_factory=dict)


# --- running workflows ----------------------------------------------------------------------


def make_store(case: Case, folder: Path, dsn: str | None) -> duravoke.Store:
    """A fresh store object, as a new run of the program would build it."""
    if case.store == "DirectoryStore":
        return duravoke.DirectoryStore(folder, durability=case.durability)
    if case.store == "PersistedKKV":
        return duravoke.PersistedKKV(folder / "state.json", durability=case.durability)
    return duravoke.open_store(dsn, durability=case.durability)


def _trace_start(trace: bool) -> None:
    if trace:
        tracemalloc.start()


def _trace_stop(trace: bool) -> int:
    if not trace:
        return 0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


class Probe:
    """Timed appends of the baseline record, with fsync, to a file in the store's folder.

    Called between the steps of fsync runs (its time is taken out of theirs), so the
    baseline is sampled all through each run: the disk of a shared machine is noisy.
    It calls the real ``os.fsync``, so the library's fsync counts stay exact.
    """

    APPENDS = 10

    def __init__(self, folder: Path, steps: int) -> None:
        self.every = max(steps // 10, 1)
        self.path = folder / "baseline.log"
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.write(self.fd, BASELINE_RECORD)
        REAL_FSYNC(self.fd)
        self.samples: list[float] = []
        self.spent_ns = 0

    def __call__(self) -> None:
        t0 = now_ns()
        for _ in range(self.APPENDS):
            os.write(self.fd, BASELINE_RECORD)
            REAL_FSYNC(self.fd)
        spent = now_ns() - t0
        self.spent_ns += spent
        self.samples.append(spent / self.APPENDS / 1e3)

    def close(self) -> None:
        os.close(self.fd)
        self.path.unlink()


def _spent(probe: Probe | None) -> int:
    return 0 if probe is None else probe.spent_ns


def _sync_counter(d: duravoke.Duravoke) -> Callable[[], int]:
    """What makes steps durable, counted: commits of a Postgres lease, else fsyncs.

    Called inside the workflow; reaches the run's lease through a private attribute,
    which a benchmark may do and a user should not.
    """
    frame = d._frame.get()
    lease = None if frame is None else frame.run.lease
    if lease is not None and hasattr(lease, "commits"):
        return lambda: int(lease.commits)
    return lambda: FSYNCS.count


def run_sync(
    store: duravoke.Store,
    wid: str,
    n: int,
    *,
    trace: bool = False,
    probe: Probe | None = None,
    profiler: cProfile.Profile | None = None,
) -> Phases:
    """One run of ``n`` sequential sync steps in workflow ``wid``.

    ``profiler``, if given, profiles the steps only (not entering or leaving).
    """
    d = duravoke.Duravoke(store)
    calls = [0]

    @d.duravoke
    def step(i: int) -> str:
        calls[0] += 1
        return f"result-{i}"

    _trace_start(trace)
    t0 = now_ns()
    with d.workflow(wid):
        count = _sync_counter(d)
        t1, f1, s1 = now_ns(), count(), _spent(probe)
        if profiler is not None:
            profiler.enable()
            for i in range(n):
                step(i)
            profiler.disable()
        elif probe is None:
            for i in range(n):
                step(i)
        else:
            for i in range(n):
                step(i)
                if i % probe.every == 0:
                    probe()
        t2, f2, s2 = now_ns(), count(), _spent(probe)
    t3 = now_ns()
    peak = _trace_stop(trace)
    return Phases(t1 - t0, t2 - t1 - (s2 - s1), t3 - t2, f2 - f1, calls[0], peak)


def run_async(
    store: duravoke.Store,
    wid: str,
    n: int,
    backend: str,
    *,
    group: bool,
    trace: bool = False,
    probe: Probe | None = None,
) -> Phases:
    """One run of ``n`` async steps: awaited one by one, or all started in one task group."""
    d = duravoke.Duravoke(store)
    calls = [0]

    @d.duravoke
    async def step(i: int) -> str:
        calls[0] += 1
        return f"result-{i}"

    async def main() -> Phases:
        _trace_start(trace)
        t0 = now_ns()
        async with d.workflow(wid):
            count = _sync_counter(d)
            t1, f1, s1 = now_ns(), count(), _spent(probe)
            if group:
                async with anyio.create_task_group() as tg:
                    for i in range(n):
                        tg.start_soon(step, i)
            elif probe is None:
                for i in range(n):
                    await step(i)
            else:
                for i in range(n):
                    await step(i)
                    if i % probe.every == 0:
                        probe()  # blocks the loop on purpose: nothing else runs meanwhile
            t2, f2, s2 = now_ns(), count(), _spent(probe)
        t3 = now_ns()
        peak = _trace_stop(trace)
        return Phases(t1 - t0, t2 - t1 - (s2 - s1), t3 - t2, f2 - f1, calls[0], peak)

    return anyio.run(main, backend=backend)


def run_case_once(
    case: Case,
    store: duravoke.Store,
    wid: str,
    *,
    trace: bool = False,
    probe: Probe | None = None,
) -> Phases:
    gc.collect()
    if case.backend is None:
        return run_sync(store, wid, case.steps, trace=trace, probe=probe)
    group = case.mode.endswith("-tg")
    return run_async(store, wid, case.steps, case.backend, group=group, trace=trace, probe=probe)


def folder_bytes(folder: Path) -> int:
    """Sum of the sizes of the files under ``folder``."""
    return sum(
        (Path(root) / name).stat().st_size for root, _, names in os.walk(folder) for name in names
    )


def measure(case: Case, base: Path, dsn: str | None) -> Row:
    """Record, replay (``case.reps`` times, medians), then one traced run for memory."""
    records: list[Phases] = []
    replays: list[Phases] = []
    ratios: list[float] = []
    local: list[float] = []
    disk: int | None = None
    peak = 0
    n = case.steps
    for rep in range(case.reps + 1):
        traced = rep == case.reps  # the last run only measures memory
        folder = base / f"{case.slug}-{rep}"
        folder.mkdir(mode=0o700)
        wid = f"bench-{n}"
        if case.store == "PostgresStore":
            wid += f"-{uuid.uuid4().hex[:12]}"  # the database outlives the run
        probed = case.durability == "fsync" and case.store != "PostgresStore" and not traced
        probe = Probe(folder, n) if probed else None
        try:
            if probe is not None:
                probe()
            first = run_case_once(
                case,
                make_store(case, folder, dsn),
                wid,
                trace=traced,
                probe=None if case.mode.endswith("-tg") else probe,
            )
            if first.calls != n:
                raise AssertionError(f"{case.slug}: first run executed {first.calls} steps")
            if traced:
                peak = first.peak_bytes
                continue
            records.append(first)
            if probe is not None:
                probe()
                probe.close()
                local += probe.samples
                # Means on both sides: a disk's latency spikes count in both alike.
                ratios.append(first.total_ns / n / 1e3 / statistics.fmean(probe.samples))
                probe = None
            if disk is None and case.store != "PostgresStore":
                disk = folder_bytes(folder)
            # Replays are cheap: a case measured once still gets a median of three.
            for _ in range(1 if case.reps > 1 else 3):
                second = run_case_once(case, make_store(case, folder, dsn), wid)
                if second.calls != 0:
                    raise AssertionError(f"{case.slug}: replay executed {second.calls} steps")
                replays.append(second)
        finally:
            if probe is not None:
                probe.close()
            if case.store == "PostgresStore":
                with contextlib.suppress(Exception):
                    make_store(case, folder, dsn).forget(wid)
            shutil.rmtree(folder, ignore_errors=True)

    def med(values: list[float]) -> float:
        return statistics.median(values)

    return Row(
        store=case.store,
        mode=case.mode,
        durability=case.durability,
        steps=n,
        reps=case.reps,
        record_us=med([p.total_ns / n / 1e3 for p in records]),
        record_enter_ms=med([p.enter_ns / 1e6 for p in records]),
        record_loop_us=med([p.loop_ns / n / 1e3 for p in records]),
        record_exit_ms=med([p.exit_ns / 1e6 for p in records]),
        fsync_baseline_us=statistics.fmean(local) if local else None,
        record_x_fsync=med(ratios) if ratios else None,
        fsyncs_per_step=med([p.loop_fsyncs / n for p in records]),
        replay_us=med([p.loop_ns / n / 1e3 for p in replays]),
        replay_load_ms=med([p.enter_ns / 1e6 for p in replays]),
        replay_exit_ms=med([p.exit_ns / 1e6 for p in replays]),
        disk_bytes=disk,
        peak_mib=peak / 2**20,
    )


# --- baseline ------------------------------------------------------------------------------


def baseline(folder: Path, *, sync: bool, batches: int, per_batch: int) -> list[float]:
    """Microseconds per append of one 150-byte record to an O_APPEND file (+ fsync)."""
    path = folder / f"baseline-{'fsync' if sync else 'write'}.log"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    samples = []
    try:
        os.write(fd, BASELINE_RECORD)
        REAL_FSYNC(fd)
        for _ in range(batches):
            gc.collect()
            t0 = now_ns()
            for _ in range(per_batch):
                os.write(fd, BASELINE_RECORD)
                if sync:
                    REAL_FSYNC(fd)
            samples.append((now_ns() - t0) / per_batch / 1e3)
    finally:
        os.close(fd)
        path.unlink()
    return samples


# --- machine facts -------------------------------------------------------------------------


def filesystem(path: Path) -> str:
    """The filesystem type, device and mount point that hold ``path``."""
    real = os.path.realpath(path)
    best: tuple[str, str, str] | None = None
    try:
        with open("/proc/mounts", encoding="utf-8") as f:
            for line in f:
                device, mount, fstype = line.split()[:3]
                mount = mount.replace("\\040", " ")
                inside = real == mount or real.startswith(mount.rstrip("/") + "/")
                if inside and (best is None or len(mount) > len(best[1])):
                    best = (device, mount, fstype)
    except OSError:
        pass
    if best is not None:
        device, mount, fstype = best
        where = f"{fstype} ({device} on {mount})"
    else:
        try:
            out = subprocess.run(
                ["df", "-P", real], check=False, capture_output=True, text=True, timeout=10
            )
            where = out.stdout.strip().splitlines()[-1]
        except (OSError, IndexError, subprocess.SubprocessError):
            where = "unknown"
    st = os.statvfs(real)
    free = st.f_bavail * st.f_frsize / 2**30
    return f"{where}, block {st.f_bsize} B, {free:.0f} GiB free"


def machine_facts(base: Path) -> dict[str, Any]:
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "duravoke": getattr(duravoke, "__version__", "?"),
        "folder": str(base),
        "filesystem": filesystem(base),
    }


# --- the plan ------------------------------------------------------------------------------


Durability = Literal["fsync", "flush"]
DURABILITIES: tuple[Durability, ...] = ("fsync", "flush")


def _case(store: str, mode: str, durability: Durability, n: int, quick: bool) -> Case:
    reps = (QUICK_REPS if quick else REPS)[n]
    if n == 10_000 and durability == "fsync":
        reps = FSYNC_REPS_10K
    return Case(store, mode, durability, n, reps)


def plan(quick: bool, have_trio: bool) -> list[Case]:
    cases = [
        _case("DirectoryStore", mode, durability, n, quick)
        for n in (QUICK_REPS if quick else REPS)
        for mode in ("sync", "asyncio")
        for durability in DURABILITIES
    ]
    for durability in DURABILITIES:
        if have_trio:
            cases.append(_case("DirectoryStore", "trio", durability, 1_000, quick))
        cases.append(_case("PersistedKKV", "sync", durability, 1_000, quick))
    backends = ("asyncio", "trio") if have_trio else ("asyncio",)
    cases += [Case("DirectoryStore", f"{b}-tg", "fsync", GROUP_STEPS, 1) for b in backends]
    return cases


def postgres_cases(quick: bool) -> list[Case]:
    return [
        _case("PostgresStore", mode, durability, n, quick)
        for n in (100, 1_000)
        for mode in ("sync", "asyncio")
        for durability in DURABILITIES
    ]


def probe_postgres(dsn: str) -> str | None:
    """None if a PostgresStore on ``dsn`` works, else why not."""
    try:
        store = duravoke.open_store(dsn)
        store.read(f"bench-probe-{uuid.uuid4().hex[:8]}")
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def judge(rows: list[Row], fsync_us: float) -> None:
    """Fill in scaling and the PASS/FAIL checks of every row."""
    by_key = {(r.store, r.mode, r.durability, r.steps): r for r in rows}
    for row in rows:
        if row.mode.endswith("-tg"):
            # Concurrent steps: what counts is that they share fsyncs.
            row.checks["group"] = row.fsyncs_per_step < MAX_GROUP_FSYNCS_PER_STEP
            continue
        if row.durability == "fsync":
            if row.record_x_fsync is None:  # no local baseline (Postgres): the global one
                row.record_x_fsync = row.record_us / fsync_us
            row.checks["rec"] = row.record_x_fsync <= MAX_FSYNC_RATIO
        else:
            row.checks["rec"] = row.record_us <= MAX_FLUSH_US
        row.checks["rep"] = row.replay_us <= MAX_REPLAY_US
        small = by_key.get((row.store, row.mode, row.durability, 100))
        if row.steps == 10_000 and small is not None:
            row.record_scaling = row.record_scaling_raw = row.record_us / small.record_us
            if row.record_x_fsync is not None and small.record_x_fsync is not None:
                # fsync latency on a shared disk can change 10x between rows: compare
                # each row to the disk as it was during that row.
                row.record_scaling = row.record_x_fsync / small.record_x_fsync
            row.replay_scaling = row.replay_us / small.replay_us
            row.checks["scale-rec"] = row.record_scaling <= MAX_SCALING
            row.checks["scale-rep"] = row.replay_scaling <= MAX_SCALING


# --- output --------------------------------------------------------------------------------

COLUMNS = [
    # (header, right-aligned)
    ("store", False),
    ("mode", False),
    ("durab.", False),
    ("steps", True),
    ("record us", True),
    ("loop us", True),
    ("fsync us", True),
    ("x fsync", True),
    ("fsync/st", True),
    ("replay us", True),
    ("load ms", True),
    ("exit ms", True),
    ("disk KiB", True),
    ("peak MiB", True),
    ("targets", False),
]


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def _word(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def _load(load: list[float] | None) -> str:
    return "unknown" if load is None else ", ".join(f"{x:.2f}" for x in load)


def _raw(row: Row) -> str:
    if row.record_scaling_raw is None or row.record_scaling_raw == row.record_scaling:
        return ""
    return f" (x fsync at 10k / at 100; raw us {row.record_scaling_raw:.2f}x)"


def _verdicts(checks: dict[str, bool]) -> str:
    return " ".join(f"{k}:{_word(ok)}" for k, ok in checks.items())


def table(rows: list[Row]) -> str:
    cells = [
        [
            r.store,
            r.mode,
            r.durability,
            f"{r.steps:,}",
            f"{r.record_us:.1f}",
            f"{r.record_loop_us:.1f}",
            _fmt(r.fsync_baseline_us, ".1f"),
            _fmt(r.record_x_fsync, ".2f", "x"),
            f"{r.fsyncs_per_step:.3f}",
            f"{r.replay_us:.2f}",
            f"{r.replay_load_ms:.2f}",
            f"{r.replay_exit_ms:.2f}",
            _fmt(None if r.disk_bytes is None else r.disk_bytes / 1024, ".1f"),
            f"{r.peak_mib:.2f}",
            _verdicts({k: v for k, v in r.checks.items() if not k.startswith("scale")}),
        ]
        for r in rows
    ]
    headers = [h for h, _ in COLUMNS]
    widths = [max(len(x) for x in col) for col in zip(headers, *cells, strict=True)]

    def line(values: list[str]) -> str:
        parts = [
            v.rjust(w) if right else v.ljust(w)
            for v, w, (_, right) in zip(values, widths, COLUMNS, strict=True)
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(c) for c in cells)])


LEGEND = f"""\
record us  first run: wall time of the whole workflow (enter + steps + exit) / steps;
           loop us: the steps alone (enter and exit left out)
fsync us   mean time to append {len(BASELINE_RECORD)} B + os.fsync to a file in the row's folder,
           sampled before, after and 10 times between the steps of each first run
           (10 appends each time, taken out of the run's time): the disk is noisy
x fsync    record us / fsync us, median over the reps (target <= {MAX_FSYNC_RATIO}x); flush rows
           are judged on record us itself (target <= {MAX_FLUSH_US:.0f} us)
fsync/st   fsyncs (Postgres: commits) during the steps of the first run / steps
replay us  second run over the same state: the calls inside the workflow / steps (target
           <= {MAX_REPLAY_US:.0f} us); load ms: entering it (lock + load); exit ms: leaving it
disk KiB   sum of the file sizes in the store folder after the first run
peak MiB   tracemalloc peak of a first run, in a separate run that is not timed
-tg modes  {GROUP_STEPS:,} steps started together in one anyio task group: group commit
           (target fsync/st < {MAX_GROUP_FSYNCS_PER_STEP}); timings there are not judged
Timings are medians over reps: 5 at 100 steps, 3 at 1,000 and 10,000 (1 for fsync at 10,000);
--quick: 3 at 100, 1 at 1,000. A case measured once replays three times."""


def report(result: dict[str, Any]) -> str:
    m, b = result["machine"], result["baseline"]
    rows = [Row(**r) for r in result["rows"]]
    out = [
        "duravoke step benchmark",
        f"date      {m['date']}",
        f"python    {m['python']} on {m['platform']}, {m['cpus']} CPUs, duravoke {m['duravoke']}",
        f"load      {_load(m['load'])} (1, 5, 15 min) when the run started",
        f"folder    {m['folder']}",
        f"fs        {m['filesystem']}",
        f"baseline  append {b['record_bytes']} B to an O_APPEND file + os.fsync:"
        f" {b['fsync_us']:.1f} us (median of {len(b['fsync_samples'])} batches at start and"
        f" end, range {min(b['fsync_samples']):.1f}-{max(b['fsync_samples']):.1f})",
        f"          append without fsync: {b['write_us']:.2f} us"
        f" (median of {len(b['write_samples'])} batches)",
        "",
        table(rows),
        "",
    ]
    out += [
        f"scaling {r.store} {r.mode} {r.durability}: per step at {r.steps:,} / at 100 steps:"
        f" record {r.record_scaling:.2f}x {_word(r.checks['scale-rec'])}"
        f"{_raw(r)},"
        f" replay {r.replay_scaling:.2f}x {_word(r.checks['scale-rep'])}"
        f" (target <= {MAX_SCALING}x)"
        for r in rows
        if r.record_scaling is not None and r.replay_scaling is not None
    ]
    out += [
        f"group commit ({g['backend']}): {g['steps']:,} steps in one task group took"
        f" {g['wall_ms']:.1f} ms ({g['us_per_step']:.1f} us/step), {g['fsyncs']} fsyncs"
        f" ({g['fsyncs_per_step']:.3f}/step, target < {MAX_GROUP_FSYNCS_PER_STEP}):"
        f" {_word(g['pass'])}"
        for g in result["group_commit"]
    ]
    out += [*result["notes"], "", LEGEND, ""]
    checks = [ok for r in rows for ok in r.checks.values()]
    out.append(
        f"{sum(checks)} of {len(checks)} checks PASS; took {result['seconds']:.0f} s."
        " Benchmarks report, they do not gate."
    )
    return "\n".join(out)


# --- main ----------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.monotonic()
    parent = None if args.dir is None else Path(args.dir)
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    base = Path(tempfile.mkdtemp(prefix="duravoke-bench-", dir=parent))
    notes: list[str] = []
    try:
        have_trio = True
        try:
            import trio  # noqa: F401
        except ImportError:
            have_trio = False
            notes.append("trio rows skipped: trio is not installed")
        cases = plan(args.quick, have_trio)
        if args.postgres:
            why = probe_postgres(args.postgres)
            if why is None:
                cases += postgres_cases(args.quick)
            else:
                notes.append(f"PostgresStore rows skipped: open_store(DSN) failed: {why}")
        else:
            notes.append("PostgresStore rows skipped: no --postgres DSN given")
        batches, per = (5, 100) if args.quick else (8, 200)
        facts = machine_facts(base)
        rows: list[Row] = []
        with FSYNCS.installed():
            fsync_samples = baseline(base, sync=True, batches=batches, per_batch=per)
            write_samples = baseline(base, sync=False, batches=batches, per_batch=per * 10)
            for case in cases:
                t0 = time.monotonic()
                rows.append(measure(case, base, args.postgres))
                progress(f"{case.slug}: {time.monotonic() - t0:.1f} s")
            # Measure the disk again at the end: the machine is shared and noisy.
            fsync_samples += baseline(base, sync=True, batches=batches, per_batch=per)
        fsync_us = statistics.median(fsync_samples)
        judge(rows, fsync_us)
        group = [
            {
                "backend": r.mode.removesuffix("-tg"),
                "steps": r.steps,
                "wall_ms": r.record_loop_us * r.steps / 1e3,
                "us_per_step": r.record_loop_us,
                "fsyncs": round(r.fsyncs_per_step * r.steps),
                "fsyncs_per_step": r.fsyncs_per_step,
                "pass": r.checks["group"],
            }
            for r in rows
            if r.mode.endswith("-tg")
        ]
        if args.quick:
            notes.append("--quick: 10,000-step rows and their scaling checks not measured")
        return {
            "machine": facts,
            "baseline": {
                "fsync_us": fsync_us,
                "write_us": statistics.median(write_samples),
                "fsync_samples": fsync_samples,
                "write_samples": write_samples,
                "record_bytes": len(BASELINE_RECORD),
            },
            "targets": {
                "record_x_fsync": MAX_FSYNC_RATIO,
                "record_flush_us": MAX_FLUSH_US,
                "replay_us": MAX_REPLAY_US,
                "scaling": MAX_SCALING,
                "group_fsyncs_per_step": MAX_GROUP_FSYNCS_PER_STEP,
            },
            "rows": [dataclasses.asdict(r) for r in rows],
            "group_commit": group,
            "notes": notes,
            "seconds": time.monotonic() - started,
        }
    finally:
        shutil.rmtree(base, ignore_errors=True)


def progress(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


def profile(args: argparse.Namespace, top: int = 15) -> None:
    """cProfile listings (by tottime) of recording and replaying sync flush steps.

    First the steps alone (the per-step hot path), then whole runs (with entering
    the workflow, which loads the state, and leaving it, which compacts it).
    """
    n = 10_000
    case = Case("DirectoryStore", "sync", "flush", n, 1)
    for whole in (False, True):
        base = Path(tempfile.mkdtemp(prefix="duravoke-profile-", dir=args.dir))
        try:
            for label in ("record", "replay"):
                profiler = cProfile.Profile()
                store = make_store(case, base, None)
                gc.collect()
                if whole:
                    phases = profiler.runcall(run_sync, store, f"bench-{n}", n)
                else:
                    phases = run_sync(store, f"bench-{n}", n, profiler=profiler)
                text = io.StringIO()
                pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(top)
                print(
                    f"=== {label}, {'whole run' if whole else 'steps only'}: {n:,} sync steps,"
                    f" durability flush ({phases.calls} executed)"
                )
                print(text.getvalue().strip(), end="\n\n")
        finally:
            shutil.rmtree(base, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 and 1,000 steps only, fewer reps")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--postgres", metavar="DSN", help="also measure a PostgresStore")
    parser.add_argument("--dir", help="where to put the stores (default: the temp folder)")
    parser.add_argument(
        "--profile", action="store_true", help="print cProfile listings of record and replay"
    )
    args = parser.parse_args(argv)
    if args.profile:
        profile(args)
        return 0
    result = run(args)
    print(json.dumps(result, indent=2) if args.json else report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
