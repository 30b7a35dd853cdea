"""The old name of :mod:`duravoke.testing`, kept so that ``pytest_plugins =
["duravoke._testing"]`` in existing ``conftest.py`` files keeps working. The fixture is
registered once, whichever way pytest finds it."""

from __future__ import annotations

from .testing import pytest_configure, throwaway_store

__all__ = ["pytest_configure", "throwaway_store"]
