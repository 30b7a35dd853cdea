"""What a type checker sees through ``@duravoke``: checked by ``mypy --strict``, never run.

Not collected by pytest (no ``test_`` prefix); tests/test_api.py runs mypy on it. Each
``assert_type`` shows a type the decorator must keep. Each ``# type: ignore[code]`` marks a
line that must be an error: with ``warn_unused_ignores``, mypy fails the day the decorator
stops reporting it (for instance if it degraded to ``Callable[..., Any]``).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import duravoke

if sys.version_info >= (3, 11):
    from typing import assert_type
else:  # pragma: no cover - only the type checker reads this file on 3.10
    from typing_extensions import assert_type

d = duravoke.Duravoke(duravoke.InMemoryKKV())


# -- module-level decorator, bare and with arguments, sync and async ---------------------


@duravoke.duravoke
def add(x: int, y: int = 1) -> int:
    """Bare, sync."""
    return x + y


@duravoke.duravoke(name="greet", key=lambda who: who)
def greet(who: str, *, loud: bool = False) -> str:
    """With arguments, sync."""
    return who.upper() if loud else who


@duravoke.duravoke
async def fetch(url: str) -> bytes:
    """Bare, async."""
    return url.encode()


@duravoke.duravoke(name="fetch-many")
async def fetch_many(urls: list[str]) -> dict[str, bytes]:
    """With arguments, async."""
    return {u: u.encode() for u in urls}


# -- the same on an instance -------------------------------------------------------------


@d.duravoke
def scale(x: float, factor: float = 2.0) -> float:
    """Bare, sync, instance."""
    return x * factor


@d.duravoke(key=lambda n: n)
def label(n: int) -> str | None:
    """With arguments, sync, instance."""
    return str(n) if n else None


@d.duravoke
async def count(items: list[int]) -> int:
    """Bare, async, instance."""
    return len(items)


@d.duravoke(name="pair")
async def pair(a: str, b: int) -> tuple[str, int]:
    """With arguments, async, instance."""
    return a, b


def check_sync() -> None:
    """Parameter and return types survive the sync wrappers."""
    assert_type(add(1), int)
    assert_type(add(1, y=2), int)
    assert_type(greet("ann", loud=True), str)
    assert_type(scale(1.5), float)
    assert_type(label(3), str | None)

    add("1")  # type: ignore[arg-type]
    add(1, 2, 3)  # type: ignore[call-arg]
    greet("ann", True)  # type: ignore[call-arg]
    greet("ann", quiet=True)  # type: ignore[call-arg]
    scale("x")  # type: ignore[arg-type]
    label(None)  # type: ignore[arg-type]
    wrong: str = add(1)  # type: ignore[assignment]
    also_wrong: int = label(1)  # type: ignore[assignment]
    del wrong, also_wrong


async def check_async() -> None:
    """Async functions stay async, with their awaited types."""
    coro: Coroutine[Any, Any, bytes] = fetch("u")  # an async function stays one
    coro.close()
    assert_type(await fetch("u"), bytes)
    assert_type(await fetch_many(["a"]), dict[str, bytes])
    assert_type(await count([1, 2]), int)
    assert_type(await pair("a", 1), tuple[str, int])

    await fetch(1)  # type: ignore[arg-type]
    await fetch_many("a")  # type: ignore[arg-type]
    await count(["x"])  # type: ignore[list-item]
    await pair(1, "a")  # type: ignore[arg-type]
    wrong: str = await fetch("u")  # type: ignore[assignment]
    also_wrong: list[str] = await pair("a", 1)  # type: ignore[assignment]
    not_awaited: bytes = fetch("u")  # type: ignore[assignment]
    del wrong, also_wrong, not_awaited


def check_workflow_and_errors() -> None:
    """workflow() is a context manager for both forms; ids are strings."""
    with duravoke.workflow("w") as wf:
        assert_type(wf, duravoke.Workflow)
    with d.workflow("w", timeout=1.5):
        assert_type(duravoke.idempotency_key(), str)
    duravoke.workflow(1)  # type: ignore[arg-type]
    d.workflow("w", timeout="soon")  # type: ignore[arg-type]
    instance: duravoke.Duravoke = duravoke.Duravoke(serializer=duravoke.JSONSerializer())
    assert_type(instance.store, duravoke.Store)
    decorate: Callable[[Callable[[int], str]], Callable[[int], str]] = d.duravoke(name="n")
    del decorate


async def check_async_workflow() -> None:
    """``async with`` gives the same object."""
    async with d.workflow("w") as wf:
        assert_type(wf, duravoke.Workflow)


def unused(*args: Any) -> None:
    """Keep the checks referenced so linters see them as used."""
    del args


unused(check_sync, check_async, check_workflow_and_errors, check_async_workflow)


# -- typed results: the annotation that rebuilds the value is the one callers see --------


@dataclasses.dataclass(frozen=True)
class Receipt:
    """A typed result."""

    number: int


@d.duravoke
def receipt(number: int) -> Receipt:
    """Its replays return a Receipt, and the checker knows it."""
    return Receipt(number)


@d.duravoke
async def areceipt(numbers: list[int]) -> list[Receipt] | None:
    """Async, nested."""
    return [Receipt(n) for n in numbers]


assert_type(receipt(1), Receipt)
receipts: Coroutine[Any, Any, list[Receipt] | None] = areceipt([1])
