"""One process of the stress test: several threads running the same workflows on one store.

    python stress_worker.py SPEC LOG PREFIX WORKFLOWS PROCESSES THREADS ENTRANTS SEED INDEX

This is process INDEX of PROCESSES. Each workflow ``PREFIX-<k>`` (k < WORKFLOWS) is
entered by ENTRANTS of the PROCESSES x THREADS threads (all of them when ENTRANTS is
that product), chosen from SEED. Every thread visits its workflows in one order shared
by all processes (from SEED), so the entrants of a workflow tend to arrive together
and wait for each other. Each entrant first records ``visit(slot)``, a step of its own;
then come the workflow's shared steps, whose bodies append ``exec <workflow> <step>`` to LOG
(shared by the threads of this process; one ``os.write`` per line on an O_APPEND file).

Prints ``waited N``: how often a thread found its workflow busy and had to wait.
Exit code 0 when every thread finished; otherwise the tracebacks are on stderr.
"""

from __future__ import annotations

import os
import random
import sys
import threading
import traceback

import duravoke


def steps_of(k: int) -> int:
    """How many steps workflow ``k`` has (5 to 10); the test uses the same rule."""
    return 5 + k % 6


def entrants_of(k: int, seed: int, processes: int, threads: int, entrants: int) -> set[int]:
    """The threads (``process * threads + thread``) that enter workflow ``k``."""
    rng = random.Random(f"{seed}-{k}")
    while True:
        chosen = set(rng.sample(range(processes * threads), entrants))
        # At least two processes whenever there can be: cross-process waits matter most.
        if entrants == 1 or len({slot // threads for slot in chosen}) > 1:
            return chosen


def main() -> int:
    spec, log, prefix = sys.argv[1:4]
    workflows, processes, threads, entrants, seed, index = map(int, sys.argv[4:10])
    d = duravoke.Duravoke(duravoke.open_store(spec))
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    @d.duravoke
    def step(workflow_id: str, i: int) -> list[object]:
        os.write(fd, f"exec {workflow_id} {i}\n".encode())
        return [workflow_id, i]

    @d.duravoke
    def visit(slot: int) -> list[object]:
        return ["visit", slot]

    failures: list[str] = []
    busy: list[int] = []  # workflows found running by another thread or process
    order = list(range(workflows))
    random.Random(seed).shuffle(order)
    chosen = {k: entrants_of(k, seed, processes, threads, entrants) for k in order}

    def run(slot: int) -> None:
        try:
            for k in (k for k in order if slot in chosen[k]):
                workflow_id = f"{prefix}-{k}"
                lease = d.store.try_lock(workflow_id)
                if lease is None:
                    busy.append(k)
                else:
                    lease.close()
                with d.workflow(workflow_id):
                    # One step of its own per entrant: each run writes something, and
                    # the test can see that no run's records were lost.
                    visit(slot)
                    for i in range(steps_of(k)):
                        result = step(workflow_id, i)
                        if result != [workflow_id, i]:
                            raise AssertionError(f"{workflow_id} step {i} returned {result!r}")
        except BaseException:
            failures.append(traceback.format_exc())

    pool = [threading.Thread(target=run, args=(index * threads + t,)) for t in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    os.close(fd)
    print(f"waited {len(busy)}")
    for failure in failures:
        print(failure, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
