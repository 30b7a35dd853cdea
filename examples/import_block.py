"""Import the rows of a CSV file inside an ad-hoc ``with duravoke.workflow(...)`` block.

No parent function is needed: the block names the run ("import-2026-11-25"), and every
decorated call inside it is a step of that run. Re-run the script after a crash and
rows already imported are skipped. The script writes its sample CSV on first use.

    python examples/import_block.py
"""

from __future__ import annotations

import csv
from pathlib import Path

from _crash import crash_point, executing, returned

import duravoke

CSV_FILE = Path("signups-2026-11-25.csv")
SAMPLE = [
    ("1", "ada@example.com", "Ada Lovelace"),
    ("2", "alan@example.com", "Alan Turing"),
    ("3", "grace@example.com", "Grace Hopper"),
    ("4", "edsger@example.com", "Edsger Dijkstra"),
    ("5", "barbara@example.com", "Barbara Liskov"),
    ("6", "donald@example.com", "Donald Knuth"),
    ("7", "frances@example.com", "Frances Allen"),
    ("8", "ken@example.com", "Ken Thompson"),
]


def read_rows() -> list[dict[str, str]]:
    """The rows of the CSV file, which is created with sample data if missing."""
    if not CSV_FILE.exists():
        with CSV_FILE.open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["id", "email", "name"])
            writer.writerows(SAMPLE)
    with CSV_FILE.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@duravoke.duravoke
def import_row(row: dict[str, str]) -> str:
    """Create the account for one row (the side effect); return its account id."""
    executing("import_row", row["id"])
    # Created, but not recorded yet: a crash here imports this row again next run.
    crash_point("import_row", row["id"])
    return f"acct_{int(row['id']):05d}"


def main() -> None:
    """Import every row once."""
    rows = read_rows()
    imported: list[str] = []
    with duravoke.workflow("import-2026-11-25"):
        for row in rows:
            account = import_row(row)
            returned("import_row", row["id"])
            crash_point("import_row", row["id"])
            imported.append(f"imported row {row['id']}: {row['email']} -> {account}")
    print("\n".join(imported))
    print(f"done: {len(imported)} rows imported")


if __name__ == "__main__":
    main()
