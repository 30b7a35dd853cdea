"""The other scenarios: listing, replay memory, and rows that light up with new features.

Adding a row takes about ten lines: a child-process function if it needs a fresh
process, and a function decorated with ``@scenario(name, title, needs=(...))`` that
returns a :class:`~benchmarks.harness.Table` with ``floor`` and ``x floor`` columns.
``needs`` names attributes of the ``duravoke`` module; while one is missing the row
reads ``n/a: needs duravoke.NAME``.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import shutil
from pathlib import Path
from typing import Any

import duravoke

from . import floors
from .harness import (
    CHILD_MARK,
    INLINE,
    ChildError,
    Context,
    Table,
    in_child,
    make_store,
    median,
    now_ns,
    peak_memory,
    progress,
    ratio,
    scenario,
)

# --- list_workflows -------------------------------------------------------------------------

MAX_LIST_SECONDS = 1.0
#: Filling a store for a list row stops after this long (the row then says so).
MAX_POPULATE_SECONDS = 90.0


def populate(
    *, kind: str, folder: str, dsn: str | None, start: int, count: int, budget: float
) -> dict[str, Any]:
    """Child-process entry: finished workflows ``start`` to ``count`` of one step each.

    Flush durability, four threads. Stops early once ``budget`` seconds have passed
    (filling PersistedKKV is quadratic: it rewrites its one file at each workflow's end)
    and returns how many workflows the store then holds.
    """
    import threading

    d = duravoke.Duravoke(make_store(kind, Path(folder), dsn, "flush"))

    @d.duravoke
    def step(w: int) -> str:
        return f"r-{w}"

    threads = 4 if count - start >= 100 else 1
    deadline = now_ns() + budget * 1e9
    errors: list[BaseException] = []
    done = [0] * threads

    def worker(t: int) -> None:
        try:
            for w in range(start + t, count, threads):
                if now_ns() > deadline:
                    return
                with d.workflow(f"wf-{w:07d}"):
                    step(w)
                done[t] += 1
        except BaseException as exc:
            errors.append(exc)

    pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    if errors:
        raise errors[0]
    return {"count": start + sum(done)}


def list_time(kind: str, folder: str, dsn: str | None, expect: int) -> dict[str, Any]:
    """Child-process entry: seconds for ``duravoke.list_workflows`` over the store."""
    store = make_store(kind, Path(folder), dsn)
    t0 = now_ns()
    found = duravoke.list_workflows(store)
    seconds = (now_ns() - t0) / 1e9
    if len(found) != expect:
        raise AssertionError(f"listed {len(found)} workflows, expected {expect}")
    return {"seconds": seconds}


@scenario("list", "duravoke.list_workflows over 1,000 and 10,000 workflows")
def list_scenario(ctx: Context) -> list[Table]:
    table = Table(
        "list",
        "list_workflows over N finished workflows (fresh process)",
        ["store", "workflows", "seconds", "floor", "floor s", "x floor", "target"],
    )
    # One store per kind, filled up to each size in turn (workflows 0..n-1, one step each).
    folders = {k: ctx.folder(f"list-{k}") for k in ctx.stores}
    dsns = {k: ctx.fresh_schema("list") if k == "postgres" else None for k in ctx.stores}
    have = dict.fromkeys(ctx.stores, 0)
    gave_up: dict[str, str] = {}
    budget = {"full": MAX_POPULATE_SECONDS}.get(ctx.mode, MAX_POPULATE_SECONDS / 3)
    for n in ctx.size.list_counts:
        floor = floors.index_read(ctx.base, n)
        for kind in ctx.stores:
            t0 = now_ns()
            cells: dict[str, Any] = {"store": kind, "workflows": n, "floor": "index read",
                                     "floor s": floor}  # fmt: skip
            folder, dsn = folders[kind], dsns[kind]
            if kind in gave_up:
                cells["seconds"] = gave_up[kind]
                table.add(cells)
                continue
            try:
                if have[kind] < n:
                    filled = in_child("benchmarks.scenarios:populate", timeout=budget + 300,
                                      kind=kind, folder=str(folder), dsn=dsn, start=have[kind],
                                      count=n, budget=budget)["count"]  # fmt: skip
                    if filled < n:  # a bigger size would not fill either
                        gave_up[kind] = (
                            f"skipped: filling it reached {filled:,} workflows in {budget:.0f} s"
                        )
                        cells["seconds"] = gave_up[kind]
                        table.add(cells)
                        continue
                    have[kind] = n
                runs = [
                    in_child("benchmarks.scenarios:list_time", kind=kind, folder=str(folder),
                             dsn=dsn, expect=n)["seconds"]
                    for _ in range(1 if n >= 10_000 or ctx.mode != "full" else 3)
                ]  # fmt: skip
            except ChildError as exc:
                cells["seconds"] = f"fails: {exc}"
            else:
                s = median(runs)
                cells |= {"seconds": s, "x floor": ratio(s, floor)}
                cells["target"] = f"{'PASS' if s < MAX_LIST_SECONDS else 'FAIL'} (< 1 s)"
            table.add(cells)
            progress(f"list {kind} {n}: {(now_ns() - t0) / 1e9:.1f} s")
    table.notes.append(
        "floor: read and json-decode an index file of N lines (id, status, updated):"
        " what listing N workflows costs when there is an index"
    )
    return [table]


# --- replay memory --------------------------------------------------------------------------

MAX_MEMORY_X = 1.5


def record_steps(kind: str, folder: str, steps: int, crash: bool = False) -> dict[str, Any]:
    """Child-process entry: one workflow of ``steps`` sync steps, flush durability.

    ``crash``: the process ends inside the workflow after the last step (``os._exit``),
    as a killed one would, so the steps stay in the journal, never compacted.
    """
    d = duravoke.Duravoke(make_store(kind, Path(folder), None, "flush"))

    @d.duravoke(name="benchmarks.memory.step")
    def step(i: int) -> str:
        return f"result-{i}"

    with d.workflow("memory"):
        for i in range(steps):
            step(i)
        if crash:
            print(CHILD_MARK + json.dumps({"steps": steps}), flush=True)
            os._exit(0)
    return {"steps": steps}


def replay_peak(kind: str, folder: str, steps: int, trace: bool) -> dict[str, Any]:
    """Child-process entry: peak memory of replaying the workflow ``record_steps`` made."""
    d = duravoke.Duravoke(make_store(kind, Path(folder), None, "flush"))
    calls = [0]

    @d.duravoke(name="benchmarks.memory.step")  # the name record_steps used
    def step(i: int) -> str:
        calls[0] += 1
        return f"result-{i}"

    gc.collect()
    with peak_memory(trace) as peak, d.workflow("memory"):
        for i in range(steps):
            step(i)
    if calls[0] != 0:
        raise AssertionError(f"the replay executed {calls[0]} steps")
    return {"peak_bytes": peak[0]}


@scenario("memory", "peak memory of replaying 100,000 steps against json-decoding them")
def memory_scenario(ctx: Context) -> list[Table]:
    n = ctx.size.memory_steps
    table = Table(
        "memory",
        f"peak memory, replaying one workflow of {n:,} steps (fresh processes)",
        ["store", "steps", "state", "measure", "replay MiB", "floor", "floor MiB", "x floor",
         "target"],
    )  # fmt: skip
    # --quick: the directory store only (each row is two fresh processes), traced: at its
    # 10,000 steps a replay's growth of peak RSS hides under the peak the imports reached.
    kinds = ["directory"] if ctx.mode == "quick" else [k for k in ctx.stores if k != "postgres"]
    for kind, crash in ((k, c) for k in kinds for c in (False, True)):
        # Both file stores share one format: tracemalloc (slow) on the first only.
        first = kind == kinds[0] or ctx.mode == "smoke"
        if ctx.mode == "quick":
            measures: tuple[bool, ...] = (True,)
        else:
            measures = (False, True) if first else (False,)
        t0 = now_ns()
        folder = ctx.folder(f"memory-{kind}-{crash}")
        state = "journal (killed)" if crash else "finished"
        try:
            in_child("benchmarks.scenarios:record_steps", timeout=900, fresh=crash, kind=kind,
                     folder=str(folder), steps=n, crash=crash)  # fmt: skip
        except ChildError as exc:
            table.add({"store": kind, "steps": n, "state": state, "replay MiB": f"fails: {exc}"})
            continue
        for trace in measures:
            cells: dict[str, Any] = {"store": kind, "steps": n, "state": state,
                                     "measure": "traced" if trace else "peak RSS",
                                     "floor": "json decode of its files"}  # fmt: skip
            try:
                floor = in_child("benchmarks.floors:json_decode_peak", folder=str(folder),
                                 trace=trace)  # fmt: skip
                # A replay of a killed run compacts at its end: measure on a copy.
                copy = ctx.folder(f"memory-{kind}-{crash}-{trace}")
                shutil.copytree(folder, copy, dirs_exist_ok=True)
                peak = in_child("benchmarks.scenarios:replay_peak", timeout=900, kind=kind,
                                folder=str(copy), steps=n, trace=trace)  # fmt: skip
                shutil.rmtree(copy, ignore_errors=True)
            except ChildError as exc:
                cells["replay MiB"] = f"fails: {exc}"
            else:
                x = ratio(peak["peak_bytes"], floor["peak_bytes"])
                cells |= {
                    "replay MiB": peak["peak_bytes"] / 2**20,
                    "floor MiB": floor["peak_bytes"] / 2**20,
                    "x floor": x,
                    "target": None
                    if x is None
                    else f"{'PASS' if x <= MAX_MEMORY_X else 'FAIL'} (<= {MAX_MEMORY_X}x)",
                }
            table.add(cells)
        shutil.rmtree(folder, ignore_errors=True)
        progress(f"memory {kind} {state}: {(now_ns() - t0) / 1e9:.1f} s")
    table.notes += [
        "state: finished (compacted into the state file) or journal (the recording process"
        " was killed inside the workflow after its last step, so a replay reads the journal)",
        "peak RSS: growth of the fresh process's peak resident memory over the replay"
        " (ru_maxrss; its earlier peak is the imports); traced: tracemalloc peak, Python"
        " allocations only (another fresh process)",
        "floor: reading every file the store holds and json-decoding it (whole, or line by"
        " line from each line's first '{'), keeping everything decoded",
    ]
    if INLINE[0]:
        table.notes.append("--smoke: one process for everything, so peak RSS means little")
    return [table]


# --- resume: finding due work among many (issue 12) -----------------------------------------


def resume_populate(folder: str, done: int, due: int) -> dict[str, Any]:
    """Child-process entry: ``done`` finished runs of ``job`` and ``due`` started, not run."""
    from . import workloads as wl

    for i in range(done):
        wl.job(i)
    for i in range(done, done + due):
        wl.start(wl.job, i)
    return {"executed": wl.executed[0]}


def resume_pass(folder: str, expect_steps: int) -> dict[str, Any]:
    """Child-process entry: one runner pass, timed; it must run ``expect_steps`` steps."""
    from . import workloads as wl

    t0 = now_ns()
    wl.resume()
    seconds = (now_ns() - t0) / 1e9
    if wl.executed[0] != expect_steps:
        raise AssertionError(f"the pass ran {wl.executed[0]} steps, expected {expect_steps}")
    return {"seconds": seconds}


def _store_env(folder: Path) -> dict[str, str]:
    return {"DURAVOKE_BENCH_STORE": str(folder)}


@scenario(
    "resume",
    "resume over 10,000 workflows of which 100 are due",
    needs=("start", "resume"),
)
def resume_scenario(ctx: Context) -> list[Table]:
    total, due = ctx.size.resume_total, ctx.size.resume_due
    table = Table(
        "resume",
        f"one runner pass over {total:,} workflows of which {due} are due (directory, flush)",
        ["store", "workflows", "due", "seconds", "floor", "floor s", "x floor"],
    )
    times = {}
    for label, done in (("all", total - due), ("due only", 0)):
        folder = ctx.folder(f"resume-{label.replace(' ', '-')}")
        env = _store_env(folder)
        in_child("benchmarks.scenarios:resume_populate", timeout=900, env=env,
                 folder=str(folder), done=done, due=due)  # fmt: skip
        times[label] = in_child("benchmarks.scenarios:resume_pass", env=env,
                                folder=str(folder), expect_steps=2 * due)["seconds"]  # fmt: skip
    table.add({
        "store": "directory", "workflows": total, "due": due, "seconds": times["all"],
        "floor": f"same pass, store holding the {due} due only", "floor s": times["due only"],
        "x floor": ratio(times["all"], times["due only"]),
    })  # fmt: skip
    return [table]


# --- sleeping workflows: a pass with nothing due (issue 13) ---------------------------------


def sleep_populate(folder: str, count: int) -> dict[str, Any]:
    """Child-process entry: ``count`` sleepers started and run by a pass until they sleep."""
    from . import workloads as wl

    for i in range(count):
        wl.start(wl.sleeper, i)
    wl.resume()
    if wl.executed[0] != count:
        raise AssertionError(f"{wl.executed[0]} steps ran before sleeping, expected {count}")
    return {"count": count}


@scenario(
    "sleeping",
    "10,000 sleeping workflows: one runner pass",
    needs=("start", "resume", "sleep"),
)
def sleeping_scenario(ctx: Context) -> list[Table]:
    n = ctx.size.sleeping
    table = Table(
        "sleeping",
        f"one runner pass over {n:,} sleeping workflows, none due (directory, flush)",
        ["store", "workflows", "seconds", "floor", "floor s", "x floor"],
    )
    folder = ctx.folder("sleeping")
    env = _store_env(folder)
    in_child("benchmarks.scenarios:sleep_populate", timeout=900, env=env, folder=str(folder),
             count=n)  # fmt: skip
    runs = [
        in_child("benchmarks.scenarios:resume_pass", env=env, folder=str(folder),
                 expect_steps=0)["seconds"]
        for _ in range(3)
    ]  # fmt: skip
    floor = floors.index_read(ctx.base, n)
    s = median(runs)
    table.add({"store": "directory", "workflows": n, "seconds": s, "floor": "index read",
               "floor s": floor, "x floor": ratio(s, floor)})  # fmt: skip
    return [table]


# --- typed results: a dataclass against the equivalent dict (issue 14) ----------------------


@dataclasses.dataclass(frozen=True)
class Invoice:
    """A typical typed result: a few fields and a list."""

    number: int
    customer: str
    cents: int
    paid: bool
    lines: list[str]


def invoice(i: int) -> Invoice:
    return Invoice(i, f"customer-{i}", 100 * i, i % 2 == 0, [f"line-{i}-{k}" for k in range(3)])


def _typed_steps(store: Any, wid: str, n: int, typed: bool) -> tuple[float, int, Any]:
    """Per-step microseconds of ``n`` steps returning an Invoice or its dict; executions."""
    d = duravoke.Duravoke(store)
    calls = [0]

    @d.duravoke
    def typed_step(i: int) -> Invoice:
        calls[0] += 1
        return invoice(i)

    @d.duravoke
    def dict_step(i: int) -> dict[str, Any]:
        calls[0] += 1
        return dataclasses.asdict(invoice(i))

    step = typed_step if typed else dict_step
    last: Any = None
    gc.collect()
    with d.workflow(wid):
        t0 = now_ns()
        for i in range(n):
            last = step(i)
        us = (now_ns() - t0) / n / 1e3
    return us, calls[0], last


def typed_unsupported(ctx: Context) -> str | None:
    """None if a dataclass result records and replays as itself, else why not."""
    folder = ctx.folder("typed-probe")
    try:
        _typed_steps(make_store("directory", folder, None, "flush"), "probe", 1, True)
        _, _, value = _typed_steps(make_store("directory", folder, None, "flush"), "probe", 1, True)
    except duravoke.SerializationError:
        return "n/a: needs typed results (issue 14): a dataclass result is refused"
    if not isinstance(value, Invoice):
        return f"n/a: needs typed results (issue 14): replay gave {type(value).__name__}"
    return None


@scenario("typed", "dataclass result against dict result (record and replay)")
def typed_scenario(ctx: Context) -> list[Table]:
    n = ctx.size.typed_steps
    table = Table(
        "typed",
        f"{n:,} sequential sync steps returning an Invoice dataclass or its dict (flush)",
        ["result", "what", "us/step", "floor", "floor us", "x floor", "target"],
    )
    why = typed_unsupported(ctx)
    if why is not None:
        table.add({"result": "dataclass", "what": "record", "us/step": why})
        return [table]
    figures: dict[tuple[bool, str], list[float]] = {}
    for rep in range(3):
        for typed in (False, True):
            folder = ctx.folder(f"typed-{typed}-{rep}")
            for what in ("record", "replay"):
                store = make_store("directory", folder, None, "flush")
                us, calls, _ = _typed_steps(store, "typed", n, typed)
                if calls != (n if what == "record" else 0):
                    raise AssertionError(f"{what}: {calls} steps executed")
                figures.setdefault((typed, what), []).append(us)
    for what in ("record", "replay"):
        floor, us = median(figures[(False, what)]), median(figures[(True, what)])
        x = ratio(us, floor)
        target = (
            "-" if what == "replay" else f"{'PASS' if x is not None and x <= 2 else 'FAIL'} (<= 2x)"
        )
        table.add({"result": "dict", "what": what, "us/step": floor})
        table.add({"result": "dataclass", "what": what, "us/step": us, "floor": "dict result",
                   "floor us": floor, "x floor": x, "target": target})  # fmt: skip
    return [table]
