"""The embedded catalog: one SQLite database (WAL) in the data folder."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ..errors import CatalogError
from .base import SCHEMA, Catalog


class SqliteCatalog(Catalog):
    """One SQLite database (WAL) in the data folder."""

    dialect = "sqlite"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.url = self.label = str(path)
        try:
            self.db = sqlite3.connect(str(path), timeout=60.0, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self._migrate(s for s in SCHEMA.split(";") if s.strip())
        except sqlite3.DatabaseError as e:
            raise CatalogError(f"cannot open catalog {path}: {e}") from e

    def _begin(self) -> None:
        # IMMEDIATE: take the write lock before reading, so read-modify-write code never loses an update.
        self.db.execute("BEGIN IMMEDIATE")

    def reserve_ids(self, table: str, n: int) -> list[int]:
        first = self.db.execute(f"SELECT COALESCE(MAX(id), 0) FROM {table}").fetchone()[0] + 1
        return list(range(first, first + n))
