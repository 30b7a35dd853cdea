"""What a typed result costs: a dataclass result next to the equivalent dict, in one run.

Run ``python benchmarks/bench_typed.py`` (``--steps N``, ``--reps R``, ``--json``).
Each row is a workflow of N sync steps on a fresh ``DirectoryStore`` whose steps return
either an ``Order`` dataclass (annotated ``-> Order``: nested dataclasses, an enum, a
zoned datetime, a set) or the dict a JSON user would return for the same data; the
``point`` row returns a two-field ``Point`` dataclass or ``{"x": .., "y": ..}``. It
prints, per step, the first run (record) and a re-run (replay), the best of the reps
(other load on the machine only ever adds time):

- record ratio: dataclass record us / dict record us, the median over reps of the
  ratio of two runs made back to back; target <= 2x (issue 14). With
  ``fsync`` durability the disk dominates; ``flush`` shows the codec's own share.
- typed replay us: per replayed dataclass step; budget 10 us (DESIGN.md section 9).
- replay cpu us: CPU time per replayed step, dict / dataclass (see ``timed_run``).
- codec us: encode + rebuild of one value with no store at all, for the curious.

The benchmark reports; it never gates: it exits 0 whatever the verdicts.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import enum
import gc
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

import duravoke
from duravoke._typed import ResultCodec

MAX_RECORD_RATIO = 2.0
MAX_REPLAY_US = 10.0

TOKYO = ZoneInfo("Asia/Tokyo")


class Status(enum.Enum):
    OPEN = "open"
    PAID = "paid"


@dataclasses.dataclass(frozen=True)
class Line:
    sku: str
    count: int
    price: float


@dataclasses.dataclass
class Order:
    number: int
    status: Status
    placed: dt.datetime
    lines: list[Line]
    tags: set[str]
    note: str | None = None


def make_order(i: int) -> Order:
    placed = dt.datetime(2026, 5, 1, 8, tzinfo=TOKYO) + dt.timedelta(minutes=i)
    return Order(i, Status.PAID, placed, [Line("pen", 2, 1.5), Line("ink", 1, 4.0)], {"gift"})


def make_dict(i: int) -> dict[str, Any]:
    # What a user without typed results records: the same data, as JSON values (the
    # datetime in UTC, since JSONSerializer refuses a zoneinfo zone).
    placed = dt.datetime(2026, 4, 30, 23, tzinfo=dt.timezone.utc) + dt.timedelta(minutes=i)
    lines = [
        {"sku": "pen", "count": 2, "price": 1.5},
        {"sku": "ink", "count": 1, "price": 4.0},
    ]
    return {"number": i, "status": "paid", "placed": placed, "lines": lines, "tags": {"gift"}}


@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: int


def timed_run(
    folder: Path, durability: Literal["fsync", "flush"], kind: str, n: int, shape: str = "order"
) -> tuple[float, float, float]:
    """(record us, replay us, replay CPU us) per step for one fresh workflow of ``n`` steps.

    Replay does no I/O, so its CPU time (``thread_time``) is what it costs on a machine
    busy with other work, where wall time also counts the waits for a core.
    """
    per_step: list[float] = []
    cpu = 0.0
    for _ in range(2):  # first run records, second replays
        d = duravoke.Duravoke(duravoke.DirectoryStore(folder, durability=durability))
        if shape == "point" and kind == "dataclass":

            def point_step(i: int) -> Point:
                return Point(i, -i)

            step: Callable[[int], Any] = d.duravoke(name="order")(point_step)
        elif shape == "point":

            def xy_step(i: int) -> dict[str, int]:
                return {"x": i, "y": -i}

            step = d.duravoke(name="order")(xy_step)
        elif kind == "dataclass":

            def order_step(i: int) -> Order:
                return make_order(i)

            step = d.duravoke(name="order")(order_step)
        else:

            def dict_step(i: int) -> dict[str, Any]:
                return make_dict(i)

            step = d.duravoke(name="order")(dict_step)
        gc.collect()
        gc.disable()
        try:
            with d.workflow(f"bench-{kind}"):
                c0, t0 = time.thread_time(), time.perf_counter()
                for i in range(n):
                    step(i)
                per_step.append((time.perf_counter() - t0) / n * 1e6)
                cpu = (time.thread_time() - c0) / n * 1e6
        finally:
            gc.enable()
    return per_step[0], per_step[1], cpu


def codec_us(kind: str, reps: int = 20_000) -> float:
    """Encode + rebuild of one value, as Step.finish does, with no store."""
    if kind == "dataclass":

        def f() -> Order:
            raise NotImplementedError

        codec = ResultCodec(f, "f")
        value: Any = make_order(1)
    else:

        def g() -> dict[str, Any]:
            raise NotImplementedError

        codec = ResultCodec(g, "g")
        value = make_dict(1)
    serializer = duravoke.JSONSerializer()
    codec.prepare(serializer)
    best = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(reps):
            codec.record(value, serializer)
        best.append((time.perf_counter() - t0) / reps * 1e6)
    return min(best)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-typed-"))
    rows: list[dict[str, Any]] = []
    try:
        rows_wanted: list[tuple[Literal["fsync", "flush"], str]] = [
            ("fsync", "order"),
            ("flush", "order"),
            ("flush", "point"),
        ]
        for durability, shape in rows_wanted:
            samples: dict[str, list[tuple[float, float, float]]] = {"dict": [], "dataclass": []}
            for rep in range(args.reps):
                for kind in ("dict", "dataclass"):  # interleaved: drift hits both alike
                    folder = root / f"{durability}-{shape}-{kind}-{rep}"
                    samples[kind].append(timed_run(folder, durability, kind, args.steps, shape))
                    shutil.rmtree(folder, ignore_errors=True)
            rec = {k: min(s[0] for s in v) for k, v in samples.items()}
            rep_ = {k: min(s[1] for s in v) for k, v in samples.items()}
            cpu = {k: min(s[2] for s in v) for k, v in samples.items()}
            # Each rep runs dict then dataclass back to back: the median of those paired
            # ratios is steadier than a ratio of minima when the disk is shared.
            pairs = zip(samples["dataclass"], samples["dict"], strict=True)
            ratio = statistics.median(dc[0] / plain[0] for dc, plain in pairs)
            rows.append(
                {
                    "durability": durability,
                    "value": shape,
                    "steps": args.steps,
                    "dict_record_us": rec["dict"],
                    "dataclass_record_us": rec["dataclass"],
                    "record_ratio": ratio,
                    "record_verdict": "PASS" if ratio <= MAX_RECORD_RATIO else "FAIL",
                    "dict_replay_us": rep_["dict"],
                    "dataclass_replay_us": rep_["dataclass"],
                    "replay_verdict": "PASS" if rep_["dataclass"] <= MAX_REPLAY_US else "FAIL",
                    "dict_replay_cpu_us": cpu["dict"],
                    "dataclass_replay_cpu_us": cpu["dataclass"],
                }
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    codec = {"dict": codec_us("dict"), "dataclass": codec_us("dataclass")}
    if args.json:
        json.dump({"rows": rows, "codec_us": codec}, sys.stdout, indent=1)
        print()
        return
    print(f"typed results, {args.steps} steps per workflow, best of {args.reps} runs")
    head = (
        f"{'durability':<10} {'value':<6} {'dict rec us':>11} {'dc rec us':>10}"
        f" {'ratio':>6} {'<=2x':>5}"
        f" {'dict replay us':>14} {'dc replay us':>12} {'<=10us':>6} {'replay cpu us':>15}"
    )
    print(head)
    for r in rows:
        print(
            f"{r['durability']:<10} {r['value']:<6} {r['dict_record_us']:>11.1f}"
            f" {r['dataclass_record_us']:>10.1f}"
            f" {r['record_ratio']:>5.2f}x {r['record_verdict']:>5}"
            f" {r['dict_replay_us']:>14.1f} {r['dataclass_replay_us']:>12.1f}"
            f" {r['replay_verdict']:>6}"
            f" {r['dict_replay_cpu_us']:>6.1f} / {r['dataclass_replay_cpu_us']:>6.1f}"
        )
    print(
        f"codec alone (encode + rebuild, no store): dict {codec['dict']:.1f} us,"
        f" dataclass {codec['dataclass']:.1f} us ({codec['dataclass'] / codec['dict']:.2f}x)"
    )


if __name__ == "__main__":
    main()
