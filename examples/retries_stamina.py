"""Retry a flaky call inside one durable step, with stamina.

``@stamina.retry`` sits under ``@duravoke.duravoke``: the retries happen inside the
step, and duravoke records only what the last attempt returned. A crash between
attempts leaves nothing recorded, so the next run simply starts the step over.

    python examples/retries_stamina.py
"""

from __future__ import annotations

import asyncio

import stamina
from _crash import crash_point, executing, returned

import duravoke

SYMBOLS = ["ACME", "GLOBX", "INIT", "UMBR", "WAYNE", "STARK"]
_attempts: dict[str, int] = {}


class RateLimitedError(Exception):
    """The quote API answered "429 Too Many Requests": try again a bit later."""


def show_retry(details: stamina.instrumentation.RetryDetails) -> None:
    """Say when stamina schedules a retry (instead of its default log record)."""
    print(f"  {details.caused_by}: retry {details.retry_num} in {details.wait_for:.3f}s")


stamina.instrumentation.set_on_retry_hooks([show_retry])


@duravoke.duravoke
@stamina.retry(on=RateLimitedError, attempts=5, wait_initial=0.01, wait_max=0.05, wait_jitter=0.01)
async def fetch_quote(symbol: str) -> float:
    """Ask the quote API for a price. It rate-limits the first two requests of each run."""
    _attempts[symbol] = _attempts.get(symbol, 0) + 1
    executing("fetch_quote", symbol, f"attempt {_attempts[symbol]}")
    await asyncio.sleep(0.001)  # the network
    crash_point("fetch_quote", symbol)  # a crash between attempts leaves nothing recorded
    if _attempts[symbol] <= 2:
        raise RateLimitedError(f"429 for {symbol}")
    return round(10 + sum(map(ord, symbol)) / 7, 2)


@duravoke.duravoke
async def fetch_quotes(symbols: list[str]) -> dict[str, float]:
    """Fetch every quote, one durable step each."""
    quotes = {}
    for symbol in symbols:
        quotes[symbol] = await fetch_quote(symbol)
        returned("fetch_quote", symbol)
        crash_point("fetch_quote", symbol)
    return quotes


if __name__ == "__main__":
    quotes = asyncio.run(fetch_quotes(SYMBOLS))
    for symbol, price in quotes.items():
        print(f"quote {symbol}: {price}")
    print(f"done: {len(quotes)} quotes fetched")
