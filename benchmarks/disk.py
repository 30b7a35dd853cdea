"""Disk used by runs that record nothing (issue 9, item 4): it should stay proportional."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duravoke

from .harness import Context, Table, folder_bytes, in_child, make_store, ratio, scenario


def fill(kind: str, folder: str, count: int, steps: int) -> dict[str, Any]:
    """Child-process entry: ``count`` workflows of ``steps`` steps (0: enter and leave)."""
    d = duravoke.Duravoke(make_store(kind, Path(folder), None))

    @d.duravoke
    def step(w: int) -> str:
        return f"r-{w}"

    for w in range(count):
        with d.workflow(f"wf-{w:05d}"):
            for _ in range(steps):
                step(w)
    return {"bytes": folder_bytes(Path(folder))}


@scenario("empty", "disk used by workflows that record no step, against one step each")
def empty_scenario(ctx: Context) -> list[Table]:
    n = {"full": 200, "quick": 100}.get(ctx.mode, 10)
    table = Table(
        "empty",
        f"disk used by {n} workflows that record no step (fresh process, fsync)",
        ["store", "workflows", "KiB", "floor", "floor KiB", "x floor", "target"],
    )
    for kind in (k for k in ctx.stores if k != "postgres"):
        sizes = [
            in_child("benchmarks.disk:fill", kind=kind, folder=str(ctx.folder(f"empty-{kind}-{s}")),
                     count=n, steps=s)["bytes"] / 1024
            for s in (0, 1)
        ]  # fmt: skip
        x = ratio(sizes[0], sizes[1])
        table.add({
            "store": kind, "workflows": n, "KiB": sizes[0], "floor": "the same, 1 step each",
            "floor KiB": sizes[1], "x floor": x,
            "target": f"{'PASS' if x is not None and x <= 1 else 'FAIL'} (<= 1x)",
        })  # fmt: skip
    table.notes.append("disk: sum of file sizes in the store folder afterwards")
    return [table]
