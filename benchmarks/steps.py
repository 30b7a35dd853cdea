"""Sequential steps: what one durable step costs, recorded and replayed, at 100 to 10,000 steps.

Each case is a workflow of N steps (``step(i) -> str`` called ``for i in range(n)`` inside
``with d.workflow(...)``) on a store in a fresh folder, measured in this process: the
first run records every step, a second run over the same state replays them all.
"""

from __future__ import annotations

import cProfile
import dataclasses
import gc
import io
import pstats
import shutil
import statistics
import tempfile
import tracemalloc
from pathlib import Path
from typing import Any

import anyio

import duravoke

from . import floors
from .harness import (
    Context,
    Table,
    durable_writes,
    folder_bytes,
    in_child,
    make_store,
    median,
    now_ns,
    progress,
    ratio,
    scenario,
)

#: Targets from DESIGN.md section 9.
MAX_FSYNC_RATIO = 1.3
MAX_FLUSH_US = 20.0
MAX_REPLAY_US = 10.0
MAX_SCALING = 1.5
MAX_GROUP_WRITES_PER_STEP = 0.1
#: An fsync run of 10,000 steps takes seconds: once is enough.
FSYNC_REPS_10K = 1


@dataclasses.dataclass(frozen=True)
class Case:
    """One row: a store kind, a way of calling, a durability and a workflow size."""

    store: str  # "directory", "kkv" or "postgres"
    mode: str  # "sync", "asyncio", "trio"; "-tg" suffix: all steps in one task group
    durability: str  # "fsync" or "flush"
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
    loop_writes: int
    calls: int
    peak_bytes: int = 0

    @property
    def total_ns(self) -> int:
        return self.enter_ns + self.loop_ns + self.exit_ns


def _writes(kind: str, probe: floors.Probe | floors.PgProbe | None) -> int:
    """Durable writes so far, less the probe's own commits (the counter sees those)."""
    return durable_writes(kind) - (probe.commits if probe is not None else 0)


def run_sync(
    store: Any,
    kind: str,
    wid: str,
    n: int,
    *,
    trace: bool = False,
    probe: floors.Probe | floors.PgProbe | None = None,
    profiler: cProfile.Profile | None = None,
) -> Phases:
    """One run of ``n`` sequential sync steps in workflow ``wid``."""
    d = duravoke.Duravoke(store)
    calls = [0]

    @d.duravoke
    def step(i: int) -> str:
        calls[0] += 1
        return f"result-{i}"

    if trace:
        tracemalloc.start()
    t0 = now_ns()
    with d.workflow(wid):
        t1, w1, s1 = now_ns(), _writes(kind, probe), probe.spent_ns if probe else 0
        if profiler is not None:
            profiler.enable()
        for i in range(n):
            step(i)
            if probe is not None and i % probe.every == 0:
                probe()
        if profiler is not None:
            profiler.disable()
        t2, w2, s2 = now_ns(), _writes(kind, probe), probe.spent_ns if probe else 0
    t3 = now_ns()
    peak = tracemalloc.get_traced_memory()[1] if trace else 0
    if trace:
        tracemalloc.stop()
    return Phases(t1 - t0, t2 - t1 - (s2 - s1), t3 - t2, w2 - w1, calls[0], peak)


def run_async(
    store: Any,
    kind: str,
    wid: str,
    n: int,
    backend: str,
    *,
    group: bool,
    trace: bool = False,
    probe: floors.Probe | floors.PgProbe | None = None,
) -> Phases:
    """One run of ``n`` async steps: awaited one by one, or all started in one task group."""
    d = duravoke.Duravoke(store)
    calls = [0]

    @d.duravoke
    async def step(i: int) -> str:
        calls[0] += 1
        return f"result-{i}"

    async def main() -> Phases:
        if trace:
            tracemalloc.start()
        t0 = now_ns()
        async with d.workflow(wid):
            t1, w1, s1 = now_ns(), _writes(kind, probe), probe.spent_ns if probe else 0
            if group:
                async with anyio.create_task_group() as tg:
                    for i in range(n):
                        tg.start_soon(step, i)
            else:
                for i in range(n):
                    await step(i)
                    if probe is not None and i % probe.every == 0:
                        probe()  # blocks the loop on purpose: nothing else runs meanwhile
            t2, w2, s2 = now_ns(), _writes(kind, probe), probe.spent_ns if probe else 0
        t3 = now_ns()
        peak = tracemalloc.get_traced_memory()[1] if trace else 0
        if trace:
            tracemalloc.stop()
        return Phases(t1 - t0, t2 - t1 - (s2 - s1), t3 - t2, w2 - w1, calls[0], peak)

    return anyio.run(main, backend=backend)


def run_once(
    case: Case,
    store: Any,
    wid: str,
    *,
    trace: bool = False,
    probe: floors.Probe | floors.PgProbe | None = None,
) -> Phases:
    gc.collect()
    if case.backend is None:
        return run_sync(store, case.store, wid, case.steps, trace=trace, probe=probe)
    group = case.mode.endswith("-tg")
    return run_async(
        store, case.store, wid, case.steps, case.backend, group=group, trace=trace, probe=probe
    )


def measure(case: Case, ctx: Context) -> dict[str, Any]:
    """Record, replay (``case.reps`` times, medians), then one traced run for memory."""
    records: list[Phases] = []
    replays: list[Phases] = []
    ratios: list[float] = []
    local: list[float] = []
    disk: int | None = None
    peak = 0
    n = case.steps
    # Memory does not depend on durability: a long fsync row skips its (slow) traced run.
    skip_trace = case.durability == "fsync" and (n >= 10_000 or ctx.mode == "quick")
    for rep in range(case.reps + (0 if skip_trace else 1)):
        traced = rep == case.reps  # the last run only measures memory
        folder = ctx.folder(f"steps-{case.slug}-{rep}")
        wid = f"bench-{case.slug}-{rep}"  # unique: Postgres rows outlive the case
        probe: floors.Probe | floors.PgProbe | None = None
        if case.durability == "fsync" and not traced:
            if case.store != "postgres":
                probe = floors.Probe(folder, n)
            elif ctx.dsn_base is not None:
                probe = floors.PgProbe(ctx.dsn_base, ctx.schema, n)
        try:
            if probe is not None:
                probe()
            first = run_once(
                case,
                make_store(case.store, folder, ctx.dsn, case.durability),
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
            if disk is None and case.store != "postgres":
                disk = folder_bytes(folder)
            # Replays are cheap: a case measured once still gets a median of three.
            for _ in range(1 if case.reps > 1 else 3):
                store = make_store(case.store, folder, ctx.dsn, case.durability)
                second = run_once(case, store, wid)
                if second.calls != 0:
                    raise AssertionError(f"{case.slug}: replay executed {second.calls} steps")
                replays.append(second)
        finally:
            if probe is not None:
                probe.close()
            shutil.rmtree(folder, ignore_errors=True)
    return {
        "record_us": median([p.total_ns / n / 1e3 for p in records]),
        "loop_us": median([p.loop_ns / n / 1e3 for p in records]),
        "floor_us": statistics.fmean(local) if local else None,
        "x_floor": median(ratios) if ratios else None,
        "writes_per_step": median([p.loop_writes / n for p in records]),
        "replay_us": median([p.loop_ns / n / 1e3 for p in replays]),
        "load_ms": median([p.enter_ns / 1e6 for p in replays]),
        "exit_ms": median([p.exit_ns / 1e6 for p in replays]),
        "disk_kib": None if disk is None else disk / 1024,
        "peak_mib": None if skip_trace else peak / 2**20,
    }


def plan(ctx: Context) -> list[Case]:
    reps_by_n = ctx.size.steps

    def case(store: str, mode: str, durability: str, n: int) -> Case:
        reps = reps_by_n.get(n, 1)
        if n == 10_000 and durability == "fsync":
            reps = FSYNC_REPS_10K
        return Case(store, mode, durability, n, reps)

    durabilities = ("fsync", "flush")
    cases = [
        case("directory", mode, durability, n)
        for n in reps_by_n
        for mode in ("sync", "asyncio")
        for durability in durabilities
    ]
    mid = 1_000 if 1_000 in reps_by_n else max(reps_by_n)
    for durability in durabilities:
        if "trio" in ctx.backends:
            cases.append(case("directory", "trio", durability, mid))
        cases.append(case("kkv", "sync", durability, mid))
    cases += [Case("directory", f"{b}-tg", "fsync", ctx.size.group_steps, 1) for b in ctx.backends]
    if ctx.dsn is not None:
        cases += [
            case("postgres", mode, durability, n)
            for n in sorted({100, mid} if ctx.mode == "full" else {100})
            for mode in ("sync", "asyncio")
            for durability in durabilities
        ]
    return cases


STEP_COLUMNS = [
    "store", "mode", "durab.", "steps", "record us", "loop us", "floor", "floor us",
    "x floor", "writes/step", "replay us", "load ms", "exit ms", "disk KiB", "peak MiB",
    "targets",
]  # fmt: skip


def _pg_floor(ctx: Context) -> float | None:
    """Microseconds of one INSERT + COMMIT on the run's server, measured once."""
    if ctx.dsn is None:
        return None
    n = 300 if ctx.mode == "full" else 100

    def compute() -> float:
        result = in_child(
            "benchmarks.floors:insert_commit", dsn=ctx.dsn_base, schema=ctx.schema, steps=n
        )
        return float(result["us"])

    return float(ctx.memo("pg-insert-commit", compute))


@scenario("steps", "sequential steps: record, replay, flush mode, scaling 10,000 vs 100")
def steps_scenario(ctx: Context) -> list[Table]:
    steps = Table("steps", "sequential steps, one workflow (per-step figures)", STEP_COLUMNS)
    scaling = Table(
        "scaling",
        "per-step cost at 10,000 steps against 100 steps (target <= 1.5x)",
        ["store", "mode", "durab.", "what", "at 100 us", "at 10k us", "floor", "x floor", "target"],
    )
    group = Table(
        "group",
        "steps started together in one task group, one workflow (group commit inside it)",
        ["store", "mode", "steps", "wall ms", "us/step", "fsyncs", "fsyncs/step", "floor",
         "floor ms", "x floor", "target"],
    )  # fmt: skip
    append_us = ctx.memo("append+fsync", lambda: append_fsync_floor(ctx))
    pg_us = _pg_floor(ctx)
    results: dict[tuple[str, str, str, int], dict[str, Any]] = {}
    for case in plan(ctx):
        t0 = now_ns()
        r = measure(case, ctx)
        progress(f"steps {case.slug}: {(now_ns() - t0) / 1e9:.1f} s")
        results[(case.store, case.mode, case.durability, case.steps)] = r
        if case.mode.endswith("-tg"):
            backend = case.mode.removesuffix("-tg")
            floor = group_floor(ctx, backend, case.steps)
            wall_ms = r["loop_us"] * case.steps / 1e3
            writes = round(r["writes_per_step"] * case.steps)
            group.add({
                "store": case.store, "mode": case.mode, "steps": case.steps,
                "wall ms": wall_ms, "us/step": r["loop_us"], "fsyncs": writes,
                "fsyncs/step": r["writes_per_step"],
                "floor": "shared journal, 1 fsync/batch", "floor ms": floor["seconds"] * 1e3,
                "x floor": ratio(wall_ms, floor["seconds"] * 1e3),
                "target": _verdict(r["writes_per_step"] < MAX_GROUP_WRITES_PER_STEP,
                                   f"fsyncs/step < {MAX_GROUP_WRITES_PER_STEP}"),
            })  # fmt: skip
            continue
        checks = []
        if case.durability == "fsync":
            # The floor sampled through the row's own runs (append+fsync in its folder, or
            # INSERT+COMMIT on the same server).
            floor_name = "INSERT+COMMIT" if case.store == "postgres" else "append+fsync"
            floor_us = r["floor_us"]
            x = r["x_floor"]
            checks.append(f"rec:{_word(x is not None and x <= MAX_FSYNC_RATIO)}")
        else:
            floor_name = "append+fsync" if case.store != "postgres" else "INSERT+COMMIT"
            floor_us = append_us if case.store != "postgres" else pg_us
            r["x_floor"] = ratio(r["record_us"], floor_us)
            checks.append(f"rec<{MAX_FLUSH_US:.0f}us:{_word(r['record_us'] <= MAX_FLUSH_US)}")
        checks.append(f"rep:{_word(r['replay_us'] <= MAX_REPLAY_US)}")
        steps.add({
            "store": case.store, "mode": case.mode, "durab.": case.durability,
            "steps": case.steps, "record us": r["record_us"], "loop us": r["loop_us"],
            "floor": floor_name, "floor us": floor_us, "x floor": r["x_floor"],
            "writes/step": r["writes_per_step"], "replay us": r["replay_us"],
            "load ms": r["load_ms"], "exit ms": r["exit_ms"], "disk KiB": r["disk_kib"],
            "peak MiB": r["peak_mib"], "targets": " ".join(checks),
        })  # fmt: skip
    for (store, mode, durability, n), big in results.items():
        small = results.get((store, mode, durability, 100))
        if n != 10_000 or small is None:
            continue
        # fsync latency on a shared disk can change 10x between rows: compare each row's
        # ratio to its own floor, sampled during that row.
        rec_small, rec_big = small["record_us"], big["record_us"]
        if big["x_floor"] is not None and small["x_floor"] is not None:
            what = "record (x append+fsync)"
            rec_small, rec_big = small["x_floor"], big["x_floor"]
        else:
            what = "record"
        for label, a, b in (
            (what, rec_small, rec_big),
            ("replay", small["replay_us"], big["replay_us"]),
        ):
            x = ratio(b, a)
            scaling.add({
                "store": store, "mode": mode, "durab.": durability, "what": label,
                "at 100 us": a, "at 10k us": b, "floor": "same at 100 steps", "x floor": x,
                "target": _verdict(x is not None and x <= MAX_SCALING, f"<= {MAX_SCALING}x"),
            })  # fmt: skip
    if not scaling.rows:
        scaling.notes.append("no 10,000-step rows in this mode (full run only)")
    handoff = _handoff_table(ctx, results, append_us)
    steps.notes += [
        "record us: first run, whole workflow (enter + steps + exit) / steps; loop us: steps only",
        "floor us: append+fsync of a 150 B record sampled in the row's own folder through each"
        " first run (file stores); INSERT+COMMIT of one row on a connection of its own, sampled"
        " likewise (postgres; its commits are taken out of writes/step)",
        f"x floor: record us / floor us, median over reps (fsync target <= {MAX_FSYNC_RATIO}x;"
        f" flush rows are judged on record us <= {MAX_FLUSH_US:.0f} us)",
        "writes/step: fsyncs (postgres: write commits) counted from outside during the steps",
        "replay us: second run, all steps replayed (target <= 10 us); load/exit ms: entering"
        " and leaving it; peak MiB: tracemalloc peak of a first run (separate, untimed)",
    ]
    return [steps, scaling, group, handoff]


def _handoff_table(
    ctx: Context, results: dict[tuple[str, str, str, int], dict[str, Any]], append_us: float
) -> Table:
    """What an async step pays to wait for a thread, measured beside its ratio."""
    table = Table(
        "handoff",
        "the async hand-off: what waiting for a writer thread costs an async step",
        ["backend", "hand-off us", "floor", "floor us", "least us", "x floor", "directory x",
         "directory - sync us"],
    )  # fmt: skip
    rounds = 200 if ctx.mode == "smoke" else 2000
    for backend in ("asyncio", "trio"):
        sizes = [k[3] for k in results if k[:3] == ("directory", backend, "fsync")]
        if not sizes:
            continue
        row = results[("directory", backend, "fsync", max(sizes))]
        sync = results.get(("directory", "sync", "fsync", max(sizes)))
        rt = floors.handoff(backend, rounds)
        floor_us = row["floor_us"] or append_us  # sampled through the row, as its ratio
        table.add({
            "backend": backend, "hand-off us": rt, "floor": "append+fsync", "floor us": floor_us,
            "least us": floor_us + rt, "x floor": ratio(floor_us + rt, floor_us),
            "directory x": row["x_floor"],
            "directory - sync us": None if sync is None else row["loop_us"] - sync["loop_us"],
        })  # fmt: skip
    table.notes += [
        "floor us: append+fsync, as sampled through the directory row; hand-off us:"
        " median time for the event loop to wake a thread waiting on a condition variable"
        " and be woken back by it, with no work in between",
        "least us: an async step that waits for an append+fsync in another thread (so that"
        " the loop never blocks) cannot cost less than append+fsync + hand-off; x floor: that"
        " least cost / append+fsync (DESIGN asks 1.3x of the async step; directory x is the"
        " directory store's async row)",
        "directory - sync us: what the async step costs more than the sync one (same size)",
    ]
    return table


def group_floor(ctx: Context, backend: str, steps: int) -> dict[str, Any]:
    """The shared-journal floor for ``steps`` records queued at once, measured once."""

    def compute() -> Any:
        folder = ctx.folder(f"floor-group-{backend}-{steps}")
        return in_child(
            "benchmarks.floors:async_group",
            folder=str(folder),
            backend=backend,
            workflows=steps,
            steps=1,
        )

    result: dict[str, Any] = ctx.memo(f"group-{backend}-{steps}", compute)
    return result


def append_fsync_floor(ctx: Context) -> float:
    """Median microseconds of append + fsync in the run's base folder."""
    batches, per = (3, 50) if ctx.mode == "smoke" else (5, 100) if ctx.mode == "quick" else (8, 200)
    return median(floors.append_fsync(ctx.base, batches=batches, per_batch=per))


def _word(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def _verdict(ok: bool, target: str) -> str:
    return f"{_word(ok)} ({target})"


def profile(folder: str | None, top: int = 15) -> None:
    """cProfile listings (by tottime) of recording and replaying 10,000 sync flush steps."""
    n = 10_000
    base = Path(tempfile.mkdtemp(prefix="duravoke-profile-", dir=folder))
    try:
        for label in ("record", "replay"):
            profiler = cProfile.Profile()
            store = make_store("directory", base, None, "flush")
            gc.collect()
            phases = run_sync(store, "directory", f"bench-{n}", n, profiler=profiler)
            text = io.StringIO()
            pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(top)
            print(f"=== {label}: {n:,} sync steps, flush ({phases.calls} executed)")
            print(text.getvalue().strip(), end="\n\n")
    finally:
        shutil.rmtree(base, ignore_errors=True)
