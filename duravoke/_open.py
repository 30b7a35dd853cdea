"""Choosing a store from a string, as the CLI and environment variables give it."""

from __future__ import annotations

import os
from pathlib import Path

from ._filestore import DirectoryStore, PersistedKKV
from ._store import Durability, Store

__all__ = ["open_store"]


def open_store(
    spec: str | os.PathLike[str] | None = None, *, durability: Durability = "fsync"
) -> Store:
    """The store that ``spec`` names.

    - None or ``""``: the default :class:`DirectoryStore` (``$DURAVOKE_HOME`` or the user
      state folder);
    - ``postgresql://...`` or ``postgres://...``: a :class:`PostgresStore` (needs the
      ``duravoke[postgres]`` extra);
    - a path ending in ``.json``, or an existing file: a :class:`PersistedKKV`;
    - any other path: a :class:`DirectoryStore` in that folder.
    """
    if spec is None or spec == "":
        return DirectoryStore(durability=durability)
    text = os.fspath(spec)
    if text.startswith(("postgresql://", "postgres://")):
        from ._postgres import PostgresStore

        return PostgresStore(text, durability=durability)
    path = Path(text)
    if path.suffix == ".json" or path.is_file():
        return PersistedKKV(path, durability=durability)
    return DirectoryStore(path, durability=durability)
