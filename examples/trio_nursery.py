"""Fetch pages concurrently with trio; each fetch is a durable step.

The tasks started in the nursery inherit the workflow from ``async with
duravoke.workflow(...)``, so their steps belong to it. After a crash, the re-run
fetches only the pages whose result was not recorded yet.

    python examples/trio_nursery.py
"""

from __future__ import annotations

import trio
from _crash import crash_point, executing, returned

import duravoke

PAGES = list(range(10))


@duravoke.duravoke
async def fetch_page(page: int) -> str:
    """Download one page (the side effect) and return a summary of it."""
    executing("fetch_page", page)
    await trio.sleep(0.01 * (page % 3))  # the network, with pages of varying speed
    # Fetched, but not recorded yet: a crash here fetches this page again next run.
    crash_point("fetch_page", page)
    return f"page {page}: {1000 + page * 37} bytes"


async def fetch_one(page: int, results: dict[int, str]) -> None:
    """One nursery task: a durable fetch, then bookkeeping."""
    results[page] = await fetch_page(page)
    returned("fetch_page", page)
    crash_point("fetch_page", page)


async def main() -> None:
    """Fetch every page, all at once."""
    results: dict[int, str] = {}
    # The nursery's tasks inherit the workflow (a contextvar), so their steps join it.
    async with duravoke.workflow("crawl-2026-11-25"), trio.open_nursery() as nursery:
        for page in PAGES:
            nursery.start_soon(fetch_one, page, results)
    for page in sorted(results):
        print(f"fetched {results[page]}")
    print(f"done: {len(results)} pages fetched")


if __name__ == "__main__":
    trio.run(main)
