"""Text tables: absolute numbers and, on every row, the ratio to the floor of the same run."""

from __future__ import annotations

from typing import Any

from .harness import Table

#: Longer cells (failure messages) are cut in the text table; --json keeps them whole.
MAX_CELL = 90


def cell(column: str, value: Any) -> str:
    """One value as printed: ratios as ``1.23x``, big numbers with separators."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if column.startswith("x "):
            return f"{value:.2f}x"
        magnitude = abs(value)
        if magnitude >= 1_000:
            return f"{value:,.0f}"
        if magnitude >= 10:
            return f"{value:.1f}"
        if magnitude >= 1 or value == 0:
            return f"{value:.2f}"
        return f"{value:.3g}"
    text = str(value)
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 3] + "..."


def _numeric(values: list[Any]) -> bool:
    return all(v is None or isinstance(v, int | float) for v in values)


def render(table: Table) -> str:
    """A table as aligned text: title, header, rule, rows, then its notes."""
    cells = [[cell(c, row[c]) for c in table.columns] for row in table.rows]
    # A cut cell (a failure message) is printed whole below the table.
    cut = list(  # once per distinct message
        dict.fromkeys(
            str(row[c])
            for row in table.rows
            for c in table.columns
            if isinstance(row[c], str) and len(row[c]) > MAX_CELL
        )
    )
    right = [_numeric([row[c] for row in table.rows]) for c in table.columns]
    widths = [max(len(x) for x in col) for col in zip(table.columns, *cells, strict=True)]

    def line(values: list[str]) -> str:
        parts = [
            v.rjust(w) if r else v.ljust(w) for v, w, r in zip(values, widths, right, strict=True)
        ]
        return "  ".join(parts).rstrip()

    out = [f"== {table.name}: {table.title}", line(table.columns)]
    out.append("  ".join("-" * w for w in widths))
    out += [line(c) for c in cells]
    out += [f"   {note}" for note in table.notes]
    out += [f"   in full: {text}" for text in cut]
    return "\n".join(out)


def _load(load: list[float] | None) -> str:
    return "unknown" if load is None else ", ".join(f"{x:.2f}" for x in load)


def report(result: dict[str, Any]) -> str:
    """The whole printed report: the machine, the floors, every table, the notes."""
    m = result["machine"]
    out = [
        f"duravoke benchmarks ({result['mode']})",
        f"date      {m['date']}",
        f"python    {m['python']} on {m['platform']}, {m['cpus']} CPUs, duravoke {m['duravoke']}",
        f"load      {_load(m['load'])} (1, 5, 15 min) at the start;"
        f" {_load(result['load_end'])} at the end",
        f"folder    {m['folder']}",
        f"fs        {m['filesystem']}",
        "counting  fsyncs: os.fsync/os.fdatasync wrapped in each benchmark process;"
        " Postgres commits: psycopg cursors, commit() and transaction() wrapped",
    ]
    for name, value in result["floors"].items():
        out.append(f"floor     {name}: {value}")
    out.append("")
    for t in result["tables"]:
        out += [render(Table(**t)), ""]
    out += result["notes"]
    out.append(f"took {result['seconds']:.0f} s. Benchmarks report, they do not gate.")
    return "\n".join(out)
