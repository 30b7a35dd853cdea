"""Developer sessions: `nox` runs tests, lint, typecheck and examples; `nox -s bench` and
`nox -s torture` are run on demand."""

from __future__ import annotations

import os

import nox

nox.options.sessions = ["tests", "lint", "typecheck", "examples"]
nox.options.default_venv_backend = "venv"

PYTHONS = ["3.10", "3.11", "3.12", "3.13"]


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """The whole test suite with branch coverage."""
    session.install("-e", ".[test]")
    session.run("coverage", "erase")
    session.run("coverage", "run", "-m", "pytest", *session.posargs)
    session.run("coverage", "combine", success_codes=[0, 1])
    session.run("coverage", "report", "--show-missing", "--skip-covered")


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: lint and formatting."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the package, the examples and the typing test file."""
    session.install("-e", ".[dev]")
    session.run("mypy", "--strict")


@nox.session
def examples(session: nox.Session) -> None:
    """Run every example under crash injection until it finishes."""
    session.install("-e", ".[test]")
    session.run("pytest", "tests/test_examples.py", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Print the benchmark tables: absolute figures and ratios to floors of the same run.

    ``nox -s bench -- --quick`` for a run under two minutes, ``-- --only NAME`` for one
    scenario; Postgres rows when ``DURAVOKE_TEST_POSTGRES_DSN`` is set.
    """
    session.install("-e", ".[test]")
    dsn = os.environ.get("DURAVOKE_TEST_POSTGRES_DSN")
    extra = ["--postgres", dsn] if dsn else []
    session.run("python", "benchmarks/run.py", *extra, *session.posargs)


@nox.session
def torture(session: nox.Session) -> None:
    """The crash torture test with 1,000 SIGKILLs instead of CI's 50."""
    session.install("-e", ".[test]")
    session.run(
        "pytest",
        "tests/test_torture.py",
        "-s",
        *session.posargs,
        env={"DURAVOKE_TORTURE_KILLS": "1000"},
    )
