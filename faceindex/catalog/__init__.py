"""The catalog: the source of truth. `open_catalog(url_or_path)` picks the backend.

- a path, or `sqlite:///path`: SQLite in a file (the embedded default: `<data>/catalog.db`);
- `postgresql://user:password@host:port/database` (or `postgres://`): PostgreSQL, for many servers and ingest
  machines sharing one catalog (needs `pip install 'faceindex[cluster]'`; psycopg is imported only then).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import CatalogError
from .base import SCHEMA_VERSION, Catalog, FaceRecord, FileState, now

PG_SCHEMES = ("postgresql://", "postgres://")


def is_postgres(target: str | os.PathLike | None) -> bool:
    """Whether `target` names a PostgreSQL catalog."""
    return isinstance(target, str) and target.startswith(PG_SCHEMES)


def open_catalog(target: str | os.PathLike) -> Catalog:
    """Open (creating or migrating) the catalog at a path or URL; CatalogError names what is wrong."""
    if is_postgres(target):
        try:
            from .postgres import PostgresCatalog
        except ImportError as e:
            raise CatalogError(f"a PostgreSQL catalog needs psycopg: pip install 'faceindex[cluster]' ({e})") from e

        return PostgresCatalog(str(target))
    text = os.fspath(target)
    if text.startswith("sqlite://"):
        text = text.removeprefix("sqlite://")
        if not text.startswith("/"):
            raise CatalogError(f"catalog URL {target!r}: use sqlite:///ABSOLUTE/PATH or a plain file path")
    elif "://" in text:
        scheme = text.split("://", 1)[0]
        raise CatalogError(f"catalog URL {target!r}: unknown scheme {scheme!r} (use a file path, sqlite:///PATH "
                           "or postgresql://USER@HOST/DB)")
    from .sqlite import SqliteCatalog

    path = Path(text)
    if path.is_dir():
        raise CatalogError(f"catalog {path} is a folder, not a catalog file")
    return SqliteCatalog(path)


__all__ = ["SCHEMA_VERSION", "Catalog", "CatalogError", "FaceRecord", "FileState", "is_postgres", "now",
           "open_catalog"]
