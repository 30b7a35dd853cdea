"""Typed results in a module with postponed annotations (``from __future__ import annotations``).

Every annotation here is a string until duravoke resolves it at the first call, and
the result classes are defined after the functions that return them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from pathlib import Path
from zoneinfo import ZoneInfo

import pydantic
import pytest

import duravoke

pytestmark = pytest.mark.anyio


def make(tmp_path: Path, calls: list[str]) -> tuple[duravoke.Duravoke, object, object]:
    d = duravoke.Duravoke(duravoke.DirectoryStore(tmp_path / "store"))

    @d.duravoke
    def order(n: int) -> Order:  # Order is defined below this module's functions
        calls.append("order")
        return Order(
            n, [Line(Sku.PEN, 2)], dt.datetime(2026, 5, 1, 8, tzinfo=ZoneInfo("Asia/Tokyo"))
        )

    @d.duravoke
    async def shipment(o: Order) -> Shipment | None:
        calls.append("shipment")
        return Shipment(order=o.number, lines=o.lines)

    return d, order, shipment


@dataclasses.dataclass(frozen=True)
class Line:
    sku: Sku
    count: int


@dataclasses.dataclass
class Order:
    number: int
    lines: list[Line]
    placed: dt.datetime


class Sku(enum.Enum):
    PEN = "pen"
    INK = "ink"


class Shipment(pydantic.BaseModel):
    order: int
    lines: list[Line]


def test_sync_first_run_and_replay(tmp_path: Path) -> None:
    calls: list[str] = []
    results = []
    for _ in range(2):
        d, order, _ = make(tmp_path, calls)
        with d.workflow("w"):
            results.append(order(1))  # type: ignore[operator]
    assert calls == ["order"]
    for got in results:
        assert type(got) is Order
        assert got == Order(1, [Line(Sku.PEN, 2)], got.placed)
        assert got.placed.tzinfo == ZoneInfo("Asia/Tokyo")
        assert type(got.lines[0].sku) is Sku


async def test_async_first_run_and_replay(tmp_path: Path) -> None:
    calls: list[str] = []
    results = []
    for _ in range(2):
        d, order, shipment = make(tmp_path, calls)
        async with d.workflow("w"):
            o = order(7)  # type: ignore[operator]
            # The Order argument identifies the call: equal on replay, so replayed.
            results.append(await shipment(o))  # type: ignore[operator]
    assert calls == ["order", "shipment"]
    for got in results:
        assert type(got) is Shipment
        assert got == Shipment(order=7, lines=[Line(Sku.PEN, 2)])
        assert type(got.lines[0]) is Line
