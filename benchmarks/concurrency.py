"""Many workflows at once (issue 11): W async workflows started together, T threads.

Every run is a fresh process (so no pool, thread or cache outlives it); each figure is
the median over the reps. A store that fails (Postgres past ``max_connections``) gives
a row that says so instead of stopping the run.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import anyio

import duravoke

from .harness import (
    ChildError,
    Context,
    Table,
    durable_writes,
    in_child,
    make_store,
    median,
    now_ns,
    progress,
    ratio,
    scenario,
)

STEPS = 10
#: Targets from DESIGN.md section 9 at W = 500 (file stores, Postgres).
MAX_X_JOURNAL = 8.0
MAX_X_PG_BATCH = 4.0
CHILD_TIMEOUT = 300.0


def async_workflows(
    *, kind: str, folder: str, dsn: str | None, backend: str, workflows: int, steps: int
) -> dict[str, Any]:
    """Child-process entry: ``workflows`` async workflows of ``steps`` steps, started together."""
    store = make_store(kind, Path(folder), dsn)
    d = duravoke.Duravoke(store)
    prefix = Path(folder).name  # unique in the run: Postgres rows outlive the process
    calls = [0]

    @d.duravoke
    async def step(w: int, i: int) -> str:
        calls[0] += 1
        return f"r-{w}-{i}"

    async def one(w: int) -> None:
        async with d.workflow(f"{prefix}-{w}"):
            for i in range(steps):
                await step(w, i)

    async def main() -> tuple[float, int]:
        w0, t0 = durable_writes(kind), now_ns()
        async with anyio.create_task_group() as tg:
            for w in range(workflows):
                tg.start_soon(one, w)
        return (now_ns() - t0) / 1e9, durable_writes(kind) - w0

    seconds, writes = anyio.run(main, backend=backend)
    if calls[0] != workflows * steps:
        raise AssertionError(f"executed {calls[0]} steps, expected {workflows * steps}")
    return {"seconds": seconds, "steps": workflows * steps, "writes": writes}


def thread_workflows(
    *, kind: str, folder: str, dsn: str | None, threads: int, workflows: int, steps: int
) -> dict[str, Any]:
    """Child-process entry: ``threads`` threads share ``workflows`` sync workflows."""
    store = make_store(kind, Path(folder), dsn)
    d = duravoke.Duravoke(store)
    prefix = Path(folder).name  # unique in the run: Postgres rows outlive the process
    calls = [0]
    guard = threading.Lock()
    errors: list[BaseException] = []

    @d.duravoke
    def step(w: int, i: int) -> str:
        with guard:
            calls[0] += 1
        return f"r-{w}-{i}"

    start = threading.Barrier(threads + 1)

    def worker(t: int) -> None:
        start.wait()
        try:
            for w in range(t, workflows, threads):
                with d.workflow(f"{prefix}-{w}"):
                    for i in range(steps):
                        step(w, i)
        except BaseException as exc:
            errors.append(exc)

    pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for th in pool:
        th.start()
    start.wait()
    w0, t0 = durable_writes(kind), now_ns()
    for th in pool:
        th.join()
    seconds, writes = (now_ns() - t0) / 1e9, durable_writes(kind) - w0
    if errors:
        raise errors[0]
    if calls[0] != workflows * steps:
        raise AssertionError(f"executed {calls[0]} steps, expected {workflows * steps}")
    return {"seconds": seconds, "steps": workflows * steps, "writes": writes}


def _reps(ctx: Context, target: str, reps: int, name: str, **kwargs: Any) -> dict[str, Any] | str:
    """Median over ``reps`` fresh processes, each in a fresh folder; or "fails: ..."."""
    runs = []
    for rep in range(reps):
        folder = ctx.folder(f"{name}-{rep}")
        try:
            runs.append(in_child(target, timeout=CHILD_TIMEOUT, folder=str(folder), **kwargs))
        except ChildError as exc:
            return f"fails: {exc}"
    return {
        "seconds": median([r["seconds"] for r in runs]),
        "steps": runs[0]["steps"],
        "writes": median([r["writes"] for r in runs]),
    }


COLUMNS = [
    "store", "backend", "W", "steps", "steps/s", "writes/step", "floor", "floor steps/s",
    "floor writes/step", "x floor", "target",
]  # fmt: skip


def _row(
    table: Table, *, store: str, label: str, count: int, result: dict[str, Any] | str,
    floor_name: str, floor: dict[str, Any] | str, target: float | None,
) -> None:  # fmt: skip
    cells: dict[str, Any] = {"store": store, "backend": label, table.columns[2]: count}
    cells["floor"] = floor_name
    if isinstance(floor, dict):
        cells["floor steps/s"] = floor["steps"] / floor["seconds"]
        cells["floor writes/step"] = floor["writes"] / floor["steps"]
    else:
        cells["floor steps/s"] = floor
    if isinstance(result, str):
        cells["steps/s"] = result
    else:
        cells["steps"] = result["steps"]
        cells["steps/s"] = result["steps"] / result["seconds"]
        cells["writes/step"] = result["writes"] / result["steps"]
        if isinstance(floor, dict):
            x = ratio(result["seconds"], floor["seconds"])
            cells["x floor"] = x
            if target is not None and x is not None:
                cells["target"] = f"{'PASS' if x <= target else 'FAIL'} (<= {target:g}x)"
    table.add(cells)


def _floor(
    ctx: Context, *, store: str, how: str, label: str, count: int, reps: int, **kw: Any
) -> dict[str, Any] | str:
    """The group-commit floor for this shape, measured once per run (shared by both file stores)."""
    pg = store == "postgres"
    key = f"{'pg' if pg else 'file'}-{how}-{label}-{count}-{kw}"
    extra: dict[str, Any] = {"dsn": ctx.dsn_base, "schema": ctx.schema} if pg else {}

    def compute() -> dict[str, Any] | str:
        # Floors get 3 reps in a full run (their small shapes are a handful of fsyncs).
        return _reps(
            ctx,
            f"benchmarks.floors:{how}",
            3 if ctx.mode == "full" else 1,
            f"floor-{how}-{label}-{count}",
            **extra,
            **kw,
        )

    result: dict[str, Any] | str = ctx.memo(key, compute)
    return result


@scenario("concurrent", "W async workflows x 10 steps started together, per store and backend")
def concurrent_scenario(ctx: Context) -> list[Table]:
    table = Table(
        "concurrent",
        "W async workflows x 10 steps, started together (fresh process, median)",
        [c if c != "W" else "W" for c in COLUMNS],
    )
    reps = ctx.size.concurrent_reps
    for backend in ctx.backends:
        for w in ctx.size.concurrent:
            for store in ctx.stores:
                t0 = now_ns()
                result = _reps(
                    ctx, "benchmarks.concurrency:async_workflows", reps,
                    f"async-{store}-{backend}-{w}", kind=store,
                    dsn=ctx.dsn if store == "postgres" else None, backend=backend, workflows=w,
                    steps=STEPS,
                )  # fmt: skip
                pg = store == "postgres"
                floor = _floor(
                    ctx,
                    store=store,
                    how="async_group",
                    label=backend,
                    count=w,
                    reps=reps,
                    backend=backend,
                    workflows=w,
                    steps=STEPS,
                )
                name = "pg: 1 conn, 1 COMMIT/batch" if pg else "shared journal, 1 fsync/batch"
                target = None if w != 500 else MAX_X_PG_BATCH if pg else MAX_X_JOURNAL
                _row(
                    table, store=store, label=backend, count=w, result=result,
                    floor_name=name, floor=floor, target=target,
                )  # fmt: skip
                progress(f"concurrent {store} {backend} W={w}: {(now_ns() - t0) / 1e9:.1f} s")
    table.notes += [
        "steps/s: W x 10 steps / wall time from starting the tasks to the last one done",
        "writes/step: fsyncs (postgres: write commits) counted from outside / steps",
        "floor: the same tasks and steps, records batched by one writer into one shared"
        " journal file (one write + one fsync per batch) or one Postgres connection (one"
        " multi-row INSERT + COMMIT per batch); x floor = wall time / floor's wall time",
    ]
    return [table]


@scenario("threads", "T threads of sync workflows x 10 steps, per store")
def threads_scenario(ctx: Context) -> list[Table]:
    columns = ["T" if c == "W" else c for c in COLUMNS]
    total = ctx.size.thread_workflows
    table = Table(
        "threads", f"T threads sharing {total} sync workflows x 10 steps (fresh process)", columns
    )
    reps = ctx.size.concurrent_reps
    for t in ctx.size.threads:
        for store in ctx.stores:
            t0 = now_ns()
            result = _reps(
                ctx, "benchmarks.concurrency:thread_workflows", reps, f"threads-{store}-{t}",
                kind=store, dsn=ctx.dsn if store == "postgres" else None, threads=t,
                workflows=total, steps=STEPS,
            )  # fmt: skip
            pg = store == "postgres"
            floor = _floor(
                ctx,
                store=store,
                how="thread_group",
                label="threads",
                count=t,
                reps=reps,
                threads=t,
                workflows=total,
                steps=STEPS,
            )
            name = "pg: 1 conn, 1 COMMIT/batch" if pg else "shared journal, 1 fsync/batch"
            _row(
                table, store=store, label="threads", count=t, result=result,
                floor_name=name, floor=floor, target=None,
            )  # fmt: skip
            progress(f"threads {store} T={t}: {(now_ns() - t0) / 1e9:.1f} s")
    table.notes.append(
        "floor: the same threads and steps, leader/follower group commit into one shared"
        " journal (or one Postgres connection)"
    )
    return [table]
