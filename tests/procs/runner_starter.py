"""Start workflows of runner_jobs, then (optionally) run them until killed.

    python runner_starter.py COUNT [--run] [--kind job|failing|poison|removed]

Prints one line per started workflow id, then "started", then runs one resume pass
in-process when --run is given (the test kills it part-way).
"""

from __future__ import annotations

import argparse
import sys

import runner_jobs

import duravoke


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("count", type=int)
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--run", action="store_true")
    parser.add_argument("--kind", default="job")
    args = parser.parse_args()
    if args.kind == "removed":
        import runner_old_jobs

        fn = runner_old_jobs.removed
    else:
        fn = getattr(runner_jobs, args.kind)
    for n in range(args.first, args.first + args.count):
        print(duravoke.start(fn, n), flush=True)
    print("started", flush=True)
    if args.run:
        report = duravoke.resume(runner_jobs.d.store, concurrency=4)
        print(report.summary(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
