"""duravoke.throwaway_store() and the duravoke_store pytest fixture, for users' test suites."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import duravoke

CALLS: list[int] = []


# Decorated at import, long before any throwaway store exists: it must follow them.
@duravoke.duravoke(name="helper-square")
def square(x: int) -> int:
    CALLS.append(x)
    return x * x


def test_throwaway_store_is_fresh_and_restored(duravoke_home: Path) -> None:
    instance = duravoke.default_instance()
    before = instance.store
    CALLS.clear()
    with duravoke.throwaway_store() as store:
        assert isinstance(store, duravoke.DirectoryStore)
        assert instance.store is store
        assert os.environ["DURAVOKE_HOME"] == store.location
        folder = Path(store.location)
        assert folder.is_dir()
        assert square(3) == 9
        assert square(3) == 9
        assert CALLS == [3]  # recorded in the throwaway store, then replayed
        assert len(store.workflow_ids()) == 1
        assert [w.id for w in duravoke.list_workflows()] == store.workflow_ids()
    assert instance.store is before
    assert os.environ["DURAVOKE_HOME"] == str(duravoke_home)
    assert not folder.exists()
    assert duravoke.list_workflows() == []  # nothing leaked into the real store


def test_nested_stores_are_independent() -> None:
    instance = duravoke.default_instance()
    CALLS.clear()
    with duravoke.throwaway_store() as outer:
        square(2)
        with duravoke.throwaway_store() as inner:
            assert inner.location != outer.location
            assert instance.store is inner
            square(2)  # a fresh store: runs again
            assert len(inner.workflow_ids()) == 1
        assert instance.store is outer
        square(2)  # back in the outer store: replayed
        assert len(outer.workflow_ids()) == 1
    assert CALLS == [2, 2]


def test_restored_after_an_exception(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DURAVOKE_HOME")
    instance = duravoke.default_instance()
    before = instance.store
    with pytest.raises(KeyError), duravoke.throwaway_store():
        raise KeyError("x")
    assert instance.store is before
    assert "DURAVOKE_HOME" not in os.environ


def test_import_does_not_import_pytest() -> None:
    code = "import sys, duravoke; print('pytest' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "False"


_CONFTEST = 'pytest_plugins = ["duravoke._testing"]\n'
_TESTS = textwrap.dedent(
    """
    import duravoke

    CALLS = []

    @duravoke.duravoke
    def charge(order):
        CALLS.append(order)
        return f"charged {order}"

    def test_first(duravoke_store):
        assert charge(1) == "charged 1"
        assert charge(1) == "charged 1"
        assert CALLS == [1]
        assert duravoke.default_instance().store is duravoke_store
        (info,) = duravoke.list_workflows()
        assert info.status == "completed"

    def test_second_gets_a_fresh_store(duravoke_store):
        CALLS.clear()
        assert charge(1) == "charged 1"
        assert CALLS == [1]  # not replayed from test_first's store
    """
)


@pytest.mark.parametrize("how", ["pytest", "embedded"])
def test_pytest_fixture_in_a_users_suite(tmp_path: Path, how: str) -> None:
    (tmp_path / "conftest.py").write_text(_CONFTEST)
    (tmp_path / "test_user.py").write_text(_TESTS)
    args = ["-q", "-p", "no:cacheprovider", str(tmp_path)]
    if how == "pytest":
        cmd = [sys.executable, "-m", "pytest", *args]
    else:  # duravoke imported before pytest, as a program that runs pytest.main() may do
        code = f"import duravoke, pytest; raise SystemExit(pytest.main({args!r}))"
        cmd = [sys.executable, "-c", code]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # only our plugin: faster, and nothing else helps
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path, env=env
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 passed" in proc.stdout
