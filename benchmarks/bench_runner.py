"""What a runner pass costs when few of many workflows are due (issues 12 and 13).

Builds a DirectoryStore (or, with --postgres DSN, a PostgresStore) holding N workflows
(default 10,000): N - 100 finished ones (completed, or with --sleeping, sleeping until
tomorrow) and 100 pending ones. Then times:

- ``due``: ``Store.due(now)``, the look for the 100 due workflows;
- ``pass``: one ``resume()`` pass that finds and runs them (a one-step workflow each);
- ``floor``: reading one index of N entries (a JSON file of N ids and statuses), the
  cost a store with an index of due workflows should approach.

It reports and never gates. Example::

    python benchmarks/bench_runner.py              # 10,000 completed + 100 pending
    python benchmarks/bench_runner.py --sleeping   # 10,000 sleeping + 100 pending
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duravoke
from duravoke._state import apply, now_iso

d = duravoke.Duravoke(duravoke.InMemoryKKV())


@d.duravoke(name="bench.one")
def one(n: int) -> int:
    """A one-step workflow."""
    return n


def _fill(store: duravoke.Store, total: int, sleeping: bool) -> None:
    """Write ``total`` finished workflows straight through leases (as fast as it gets)."""
    wake = (datetime.now(timezone.utc) + timedelta(days=1)).isoformat()
    entry = {"name": "bench.one", "module": __name__, "args": [0], "kwargs": {}}
    for n in range(total):
        lease = store.try_lock(f"bench-{n}")
        assert lease is not None
        state = lease.load()
        events = [{"event": "running", "at": now_iso(), "run": 1, "entry": entry}]
        if sleeping:
            events.append({"event": "sleeping", "at": now_iso(), "run": 1, "until": wake})
        else:
            events.append({"event": "completed", "at": now_iso(), "run": 1})
        for event in events:
            apply(state, event)
        lease.append(events)
        lease.close(state)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workflows", type=int, default=10_000)
    parser.add_argument("--due", type=int, default=100)
    parser.add_argument("--sleeping", action="store_true")
    parser.add_argument("--postgres", metavar="DSN")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="duravoke-bench-runner-"))
    if args.postgres:
        store: duravoke.Store = duravoke.PostgresStore(
            args.postgres, schema=f"bench_runner_{os.getpid()}", durability="flush"
        )
    else:
        store = duravoke.DirectoryStore(folder / "store", durability="flush")
    d.store = store
    t0 = time.perf_counter()
    _fill(store, args.workflows - args.due, args.sleeping)
    for n in range(args.due):
        duravoke.start(one, n)
    fill = time.perf_counter() - t0

    index = folder / "index.json"
    index.write_text(json.dumps({f"bench-{n}": "completed" for n in range(args.workflows)}))
    t0 = time.perf_counter()
    json.loads(index.read_bytes())
    floor = time.perf_counter() - t0

    t0 = time.perf_counter()
    due = store.due(datetime.now(timezone.utc))
    due_s = time.perf_counter() - t0
    assert len(due) == args.due, len(due)
    t0 = time.perf_counter()
    report = duravoke.resume(store)
    pass_s = time.perf_counter() - t0
    assert len(report.completed) == args.due, report.summary()

    results = {
        "store": type(store).__name__,
        "workflows": args.workflows,
        "finished_as": "sleeping" if args.sleeping else "completed",
        "due": args.due,
        "fill_s": round(fill, 3),
        "due_ms": round(due_s * 1000, 1),
        "pass_ms": round(pass_s * 1000, 1),
        "floor_ms": round(floor * 1000, 2),
        "due_x_floor": round(due_s / floor, 1),
    }
    if args.json:
        print(json.dumps(results))
    else:
        for key, value in results.items():
            print(f"{key:>12}  {value}")
        print(
            "\nThe generic Store.due() reads every workflow's state; a store with an index of"
            " due workflows should bring due_x_floor near 1."
        )
    if args.postgres:
        for workflow_id in store.workflow_ids():
            store.forget(workflow_id)
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
