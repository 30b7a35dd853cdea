"""Run the duravoke benchmarks and print tables of absolute numbers and ratios to floors.

``python benchmarks/run.py [--quick] [--only NAME] [--postgres DSN]``; see
benchmarks/README.md for every scenario, its floor and its target (DESIGN.md section 9).
It reports and never gates: it exits 0 whatever the verdicts.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    # Run as a script: make ``benchmarks`` (and this checkout's duravoke) importable.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import concurrency, disk, scenarios, steps  # noqa: F401  (they register scenarios)
from benchmarks.harness import (
    INLINE,
    SCENARIOS,
    Context,
    child_main,
    drop_schema,
    install_counters,
    machine_facts,
    make_store,
    progress,
    run_scenario,
    with_schema,
)
from benchmarks.report import report

#: The order of the tables; scenarios registered later (not listed here) come last.
ORDER = (
    "steps", "concurrent", "threads", "list", "empty", "memory", "typed", "resume", "sleeping",
)  # fmt: skip


def ordered() -> list[str]:
    return sorted(SCENARIOS, key=lambda n: ORDER.index(n) if n in ORDER else len(ORDER))


def probe_postgres(dsn: str, schema: str) -> str | None:
    """None if a PostgresStore on ``dsn`` works, else why not."""
    try:
        store = make_store("postgres", Path("."), with_schema(dsn, schema))
        store.read("bench-probe")
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.monotonic()
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    parent = None if args.dir is None else Path(args.dir)
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    base = Path(tempfile.mkdtemp(prefix="duravoke-bench-", dir=parent))
    notes: list[str] = []
    backends: tuple[str, ...] = ("asyncio",)
    try:
        import trio  # noqa: F401

        backends += ("trio",)
    except ImportError:
        notes.append("trio rows skipped: trio is not installed")
    stores: tuple[str, ...] = ("directory", "kkv")
    schema = f"duravoke_bench_{secrets.token_hex(4)}"
    dsn = args.postgres
    if dsn:
        why = probe_postgres(dsn, schema)
        if why is None:
            stores += ("postgres",)
        else:
            notes.append(f"postgres rows skipped: the store failed: {why}")
            dsn = None
    else:
        notes.append("postgres rows skipped: no --postgres DSN given")
    ctx = Context(base, mode, dsn, backends, stores, schema=schema)
    names = [n for n in ordered() if not args.only or n in args.only]
    unknown = set(args.only or ()) - set(SCENARIOS)
    if unknown:
        raise SystemExit(f"unknown scenario(s) {sorted(unknown)}; known: {', '.join(SCENARIOS)}")
    facts = machine_facts(base)
    tables = []
    try:
        for name in names:
            t0 = time.monotonic()
            tables += run_scenario(SCENARIOS[name], ctx)
            progress(f"== {name}: {time.monotonic() - t0:.1f} s")
    finally:
        if dsn:
            for s in [schema, *ctx.schemas]:
                drop_schema(dsn, s)
        shutil.rmtree(base, ignore_errors=True)
    floors = {
        name: value
        for name, value in ctx.floors.items()
        if isinstance(value, float) and name in ("append+fsync", "pg-insert-commit")
    }
    pretty = {
        {
            "append+fsync": "append 150 B + fsync, median us",
            "pg-insert-commit": "INSERT+COMMIT, us",
        }[k]: f"{v:.1f}"
        for k, v in floors.items()
    }
    return {
        "mode": mode,
        "machine": facts,
        "load_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "floors": pretty,
        "tables": [t.__dict__ for t in tables],
        "notes": notes,
        "seconds": time.monotonic() - started,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes: under 2 minutes")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny sizes, fresh-process parts run in this process: a few seconds (for pytest)",
    )
    parser.add_argument(
        "--only", action="append", metavar="NAME", help="run only this scenario (repeatable)"
    )
    parser.add_argument("--postgres", metavar="DSN", help="also measure a PostgresStore")
    parser.add_argument("--dir", help="where to put the stores (default: the temp folder)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument("--profile", action="store_true", help="cProfile of record and replay")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child_main(*args.child)
    if args.list:
        for sc in (SCENARIOS[n] for n in ordered()):
            needs = f" (needs {', '.join(sc.needs)})" if sc.needs else ""
            print(f"{sc.name:12} {sc.title}{needs}")
        return 0
    if args.profile:
        steps.profile(args.dir)
        return 0
    install_counters()
    INLINE[0] = args.smoke
    result = run(args)
    print(json.dumps(result, indent=2) if args.json else report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
