"""The public surface: ``__all__``, docstrings, and the type checker's view of the decorator."""

from __future__ import annotations

import importlib.util
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import duravoke

ROOT = Path(__file__).resolve().parent.parent


def _public_members(obj: object) -> list[tuple[str, object]]:
    return [(n, v) for n, v in vars(obj).items() if not n.startswith("_")]


def test_all_is_sorted_and_exists() -> None:
    assert duravoke.__all__ == sorted(duravoke.__all__)
    assert len(set(duravoke.__all__)) == len(duravoke.__all__)
    missing = [name for name in duravoke.__all__ if not hasattr(duravoke, name)]
    assert missing == []


def test_every_public_class_and_function_is_in_all() -> None:
    left_out = [
        name
        for name, value in _public_members(duravoke)
        if (inspect.isclass(value) or inspect.isfunction(value))
        and getattr(value, "__module__", "").partition(".")[0] == "duravoke"
        and name not in duravoke.__all__
    ]
    assert left_out == [], f"public but not in __all__: {left_out}"


def test_the_contract_names_are_exported() -> None:
    # DESIGN section 2 and the common brief: users rely on these names.
    contract = {
        "duravoke",
        "workflow",
        "idempotency_key",
        "Duravoke",
        "DirectoryStore",
        "PersistedKKV",
        "InMemoryKKV",
        "JSONSerializer",
        "PickleSerializer",
        "open_store",
        "DuravokeError",
        "SerializationError",
        "CorruptStateError",
        "WorkflowBusyError",
        "WorkflowError",
        "OutsideStepError",
        "WorkflowNotFoundError",
        "StoreError",
    }
    assert contract <= set(duravoke.__all__), contract - set(duravoke.__all__)


def test_errors_form_one_hierarchy() -> None:
    errors = [getattr(duravoke, n) for n in duravoke.__all__ if n.endswith("Error")]
    assert len(errors) >= 8
    for cls in errors:
        assert issubclass(cls, duravoke.DuravokeError), cls
    assert issubclass(duravoke.SerializationError, TypeError)
    assert issubclass(duravoke.CorruptStateError, ValueError)
    assert issubclass(duravoke.WorkflowBusyError, TimeoutError)
    assert issubclass(duravoke.WorkflowError, RuntimeError)
    assert issubclass(duravoke.WorkflowNotFoundError, LookupError)
    assert issubclass(duravoke.StoreError, OSError)


def test_every_public_name_has_a_docstring() -> None:
    undocumented = []
    for name in duravoke.__all__:
        value = getattr(duravoke, name)
        if not (inspect.getdoc(value) or "").strip():
            undocumented.append(name)
        if inspect.isclass(value):
            for member, attr in _public_members(value):
                func = attr.fget if isinstance(attr, property) else attr
                if inspect.isfunction(func) and not (func.__doc__ or "").strip():
                    undocumented.append(f"{name}.{member}")
    assert undocumented == []


def test_the_package_is_typed() -> None:
    assert (Path(duravoke.__file__).parent / "py.typed").is_file()


@pytest.mark.skipif(importlib.util.find_spec("mypy") is None, reason="mypy is not installed")
def test_the_type_checker_sees_through_the_decorator(tmp_path: Path) -> None:
    # The package, the examples and tests/typing_check.py (the files pyproject.toml names)
    # are clean under --strict. typing_check.py asserts the types, and marks the lines that
    # must be errors with `# type: ignore[...]`; warn_unused_ignores turns a missed error
    # into a failure.
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
