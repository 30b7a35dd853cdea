"""The benchmark harness runs end to end in its smallest form and prints every table.

Checks the shape of the results (rows, floors, ratio columns), never the speed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import duravoke

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / "benchmarks" / "run.py"


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("bench")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    out = subprocess.run(
        [sys.executable, str(RUN), "--smoke", "--json", "--dir", str(folder)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    data: dict[str, Any] = json.loads(out.stdout)
    # The run cleans up after itself: nothing is left in the folder it was given.
    assert list(folder.iterdir()) == []
    return data


def tables(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in result["tables"]}


def test_every_scenario_prints_a_table_with_its_floor(result: dict[str, Any]) -> None:
    found = tables(result)
    expected = {"steps", "scaling", "group", "concurrent", "threads", "list", "memory", "empty"}
    expected |= {"typed", "resume", "sleeping"}
    assert expected <= set(found)
    for name, table in found.items():
        assert "floor" in table["columns"], name
        assert "x floor" in table["columns"], name


def _measured(table: dict[str, Any]) -> list[dict[str, Any]]:
    return [row for row in table["rows"] if isinstance(row["x floor"], float)]


def test_concurrent_rows_per_store_backend_and_w(result: dict[str, Any]) -> None:
    rows = tables(result)["concurrent"]["rows"]
    keys = {(r["store"], r["backend"], r["W"]) for r in rows}
    assert keys == {
        (store, backend, w)
        for store in ("directory", "kkv")
        for backend in ("asyncio", "trio")
        for w in (1, 4)
    }
    for row in rows:
        assert row["x floor"] > 0, row
        assert row["floor steps/s"] > 0, row
        # Counted from outside: a file store in fsync mode makes at least one fsync.
        assert row["writes/step"] > 0, row


def test_threads_steps_list_memory_have_ratios(result: dict[str, Any]) -> None:
    found = tables(result)
    threads = {(r["store"], r["T"]) for r in _measured(found["threads"])}
    assert threads == {(s, t) for s in ("directory", "kkv") for t in (1, 2)}
    steps = {(r["store"], r["mode"], r["durab."], r["steps"]) for r in _measured(found["steps"])}
    assert ("directory", "sync", "fsync", 100) in steps
    assert ("directory", "asyncio", "flush", 100) in steps
    assert ("kkv", "sync", "fsync", 100) in steps
    flush = [r for r in found["steps"]["rows"] if r["durab."] == "flush"]
    assert flush
    assert all(r["writes/step"] == 0 for r in flush), flush  # flush mode: no fsync per step
    assert {r["store"] for r in _measured(found["list"])} == {"directory", "kkv"}
    assert {r["store"] for r in _measured(found["memory"])} == {"directory", "kkv"}
    assert {r["store"] for r in _measured(found["empty"])} == {"directory", "kkv"}
    assert {r["mode"] for r in _measured(found["group"])} == {"asyncio-tg", "trio-tg"}


@pytest.mark.parametrize(
    ("name", "needs"), [("resume", ("start", "resume")), ("sleeping", ("start", "resume", "sleep"))]
)
def test_future_rows_wait_for_their_api(
    result: dict[str, Any], name: str, needs: tuple[str, ...]
) -> None:
    rows = tables(result)[name]["rows"]
    if all(hasattr(duravoke, n) for n in needs):
        assert _measured({"rows": rows}), rows
    else:
        assert rows == [
            {
                "scenario": name,
                "result": "n/a: needs " + ", ".join(f"duravoke.{n}" for n in needs),
                "floor": None,
                "x floor": None,
            }
        ]


def test_text_report_prints_ratios(result: dict[str, Any]) -> None:
    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks.report import report
    finally:
        sys.path.remove(str(ROOT))
    text = report(result)
    assert "== concurrent:" in text
    assert "x floor" in text
    assert any(line.rstrip().endswith("x") or "x  " in line for line in text.splitlines())


POSTGRES_DSN = os.environ.get("DURAVOKE_TEST_POSTGRES_DSN", "")


@pytest.mark.skipif(not POSTGRES_DSN, reason="needs DURAVOKE_TEST_POSTGRES_DSN")
def test_commit_counter_counts_write_transactions_only() -> None:
    """The benchmark counts commits by wrapping psycopg: check it against known statements."""
    code = f"""
import psycopg
from benchmarks.harness import COMMITS, install_counters
install_counters()
seen = []
with psycopg.connect({POSTGRES_DSN!r}, autocommit=True) as c:
    c.execute("CREATE TEMP TABLE t (x int)")
    c.execute("INSERT INTO t VALUES (1)")
    c.execute("SELECT 1")
    seen.append(COMMITS.count)
    with c.transaction():
        c.execute("INSERT INTO t VALUES (1)")
        with c.transaction():
            c.execute("INSERT INTO t VALUES (2)")
    seen.append(COMMITS.count)
    try:
        with c.transaction():
            c.execute("INSERT INTO t VALUES (3)")
            raise ValueError
    except ValueError:
        pass
    seen.append(COMMITS.count)
with psycopg.connect({POSTGRES_DSN!r}) as c:
    c.execute("CREATE TEMP TABLE u (x int)")
    c.commit()
    c.cursor().executemany("INSERT INTO u VALUES (%s)", [(1,), (2,)])
    c.rollback()
    c.cursor().executemany("INSERT INTO u VALUES (%s)", [(1,), (2,)])
    c.commit()
    seen.append(COMMITS.count)
print(seen)
"""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    # create + insert; one outer transaction; a rolled-back one; create, rollback, commit.
    assert out.stdout.split()[-4:] == ["[2,", "3,", "3,", "5]"]
