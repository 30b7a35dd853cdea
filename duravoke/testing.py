"""Helpers for testing code that uses duravoke: a throwaway store, and a pytest fixture.

With pytest, the ``duravoke_store`` fixture is there as soon as duravoke is installed
(duravoke registers this module as a pytest plugin)::

    def test_checkout(duravoke_store):
        assert checkout(42) == "paid"          # recorded in a fresh, private store
        assert duravoke.get_workflow(...).status == "completed"

This module does not import pytest unless pytest loads it as a plugin.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from typing import Any

from ._filestore import DirectoryStore

__all__ = ["pytest_configure", "throwaway_store"]


@contextlib.contextmanager
def throwaway_store() -> Iterator[DirectoryStore]:
    """Run durable code against a fresh, empty store, deleted afterwards.

    Inside the ``with`` block the default instance (behind ``@duravoke.duravoke``,
    ``duravoke.workflow`` and ``duravoke.list_workflows()``) records into a new
    :class:`DirectoryStore` in a temporary folder, and ``$DURAVOKE_HOME`` points at
    that folder too (for other ``DirectoryStore()`` instances, subprocesses and the
    ``duravoke`` command). On exit both are restored and the folder is deleted.
    Blocks can be nested; each gets its own store. Yields the store.

    Functions decorated before the block are fine: the default instance looks up its
    store each time a workflow starts. Do not leave a workflow running across the
    end of the block.
    """
    from ._duravoke import default_instance

    instance = default_instance()
    previous_store = instance.store
    previous_home = os.environ.get("DURAVOKE_HOME")
    with tempfile.TemporaryDirectory(prefix="duravoke-test-") as folder:
        store = DirectoryStore(folder)
        instance.store = store
        os.environ["DURAVOKE_HOME"] = folder
        try:
            yield store
        finally:
            instance.store = previous_store
            if previous_home is None:
                os.environ.pop("DURAVOKE_HOME", None)
            else:
                os.environ["DURAVOKE_HOME"] = previous_home


def pytest_configure(config: Any) -> None:
    """Pytest hook: add the ``duravoke_store`` fixture when this module is a plugin.

    The fixture is built here rather than at import time so that ``import duravoke``
    never imports pytest.
    """
    import pytest

    class _Fixtures:
        @pytest.fixture
        def duravoke_store(self) -> Iterator[DirectoryStore]:
            """A fresh, empty store for the default instance; see ``throwaway_store()``."""
            with throwaway_store() as store:
                yield store

    if not config.pluginmanager.has_plugin("duravoke-fixtures"):
        config.pluginmanager.register(_Fixtures(), "duravoke-fixtures")
