"""Move an embedded index's catalog and audit log into a PostgreSQL catalog, verified.

`faceindex migrate --to-catalog postgresql://...` copies every catalog table (ids kept, so the vector index, the
audit records' face ids and the people all still point at the same faces) and the audit log (records, head, hash
mode) into an empty target database in ONE transaction: an error anywhere (a lost connection, a full disk) leaves
the target as it was. Before committing, row counts and a sha256 over every face's id and embedding are compared
with the source; after, the target's audit chain is verified against the anchor the catalog carried over. The
vector index is derived state: a data folder opened on the target reconciles (or builds) its index from the
target's embeddings on first use. Run it with the servers and ingests on the source stopped.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import anchor as anchoring
from .audit import SCHEMA_VERSION as AUDIT_SCHEMA_VERSION
from .audit import AuditLog
from .audit_format import _TABLES as AUDIT_TABLES
from .catalog import Catalog, is_postgres, open_catalog
from .catalog.base import TABLES
from .errors import CatalogError

BATCH = 2_000  # rows per executemany
AUDIT_COPY = (("audit", "seq"), ("audit_head", "id"), ("audit_info", "name"))


def _rows(db: Any, table: str, order: str) -> Iterator[tuple[list[str], list[tuple]]]:
    cur = db.execute(f"SELECT * FROM {table} ORDER BY {order}")
    names = [d[0] for d in cur.description] if hasattr(cur, "description") else []
    while True:
        chunk = cur.fetchmany(BATCH)
        if not chunk:
            return
        yield names, [tuple(r) for r in chunk]


def embedding_checksum(cat: Catalog) -> str:
    """sha256 over every face's id and embedding bytes, in id order (the same on both backends)."""
    h = hashlib.sha256()
    last = -1
    while True:
        rows = cat.db.execute("SELECT id, embedding FROM faces WHERE id > ? ORDER BY id LIMIT ?",
                              (last, BATCH)).fetchall()
        if not rows:
            return h.hexdigest()
        for fid, emb in rows:
            h.update(int(fid).to_bytes(8, "little"))
            h.update(bytes(emb))
        last = rows[-1][0]


def counts(db: Any, tables: tuple[str, ...]) -> dict[str, int]:
    return {t: int(db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]) for t in tables}


def _check_empty(target: Catalog) -> None:
    filled = {t: n for t, n in counts(target.db, TABLES[1:]).items() if n}
    meta = dict(target.db.execute("SELECT key, value FROM meta").fetchall())
    extra = sorted(set(meta) - {"schema_version", "generation"})
    if filled or extra or meta.get("generation", "0") != "0":
        what = ", ".join(f"{t} ({n} rows)" for t, n in filled.items()) or f"meta ({', '.join(extra)})"
        raise CatalogError(f"target catalog {target.label} is not empty: {what}; migrate only into an empty database")
    if target.db.execute("SELECT to_regclass('audit')").fetchone()[0] is not None:
        raise CatalogError(f"target catalog {target.label} already holds an audit log; migrate only into an empty "
                           "database")


def migrate(source: str | os.PathLike, audit_path: Path, key: bytes | None, target_url: str,
            to_vectors: str | None = None) -> dict:
    """Copy catalog `source` (a SQLite file) and its audit log into the empty PostgreSQL database `target_url`;
    returns the verification report. CatalogError (nothing written) when anything is wrong."""
    if not is_postgres(target_url):
        raise CatalogError(f"--to-catalog must be a postgresql:// URL, not {target_url!r}")
    if is_postgres(os.fspath(source)):
        raise CatalogError("the source is already a PostgreSQL catalog; migrate moves an embedded index")
    if not Path(source).is_file():
        raise CatalogError(f"no catalog at {source} to migrate")
    src = open_catalog(source)
    try:
        with AuditLog(audit_path, key=key) as log:  # the source chain must be sound before it is copied
            anchor = anchoring.read_anchor(src)
            check = log.verify(anchor)
            if not check.ok:
                raise CatalogError(f"the source audit log does not verify ({check.problem}); fix it first")
            head = log.head()
        target = open_catalog(target_url)
        try:
            _check_empty(target)
            report = _copy(src, audit_path, target)
        finally:
            target.close()
    finally:
        src.close()
    with AuditLog(target_url, key=key) as copied:  # re-arms the append-only triggers; checks the hash mode
        verdict = copied.verify(anchor)
        if not verdict.ok or copied.head() != head:
            raise CatalogError(f"the copied audit log does not verify: {verdict.problem or 'head differs'}")
    report.update({"audit_verified": True, "audit_records": verdict.records_checked, "audit_head": list(head),
                   "vectors": to_vectors or "rebuilt from the catalog by each data folder on first open"})
    return report


def _copy(src: Catalog, audit_path: Path, target: Catalog) -> dict:
    import sqlite3

    want = counts(src.db, TABLES)
    checksum = embedding_checksum(src)
    audit_db = sqlite3.connect(f"file:{audit_path}?mode=ro", uri=True)
    try:
        audit_want = counts(audit_db, tuple(t for t, _ in AUDIT_COPY))
        with target.transaction() as db:
            db.execute("DELETE FROM meta")
            for table in TABLES:
                for names, rows in _rows(src.db, table, "1"):
                    db.executemany(f"INSERT INTO {table} ({', '.join(names)}) VALUES "
                                   f"({', '.join('?' * len(names))})", rows)
            target.sync_ids()
            for statement in AUDIT_TABLES:
                db.execute(statement)
            for table, order in AUDIT_COPY:
                for names, rows in _rows(audit_db, table, order):
                    db.executemany(f"INSERT INTO {table} ({', '.join(names)}) VALUES "
                                   f"({', '.join('?' * len(names))})", rows)
            db.execute("INSERT INTO audit_info (name, value) VALUES ('schema_version', ?) ON CONFLICT DO NOTHING",
                       (str(AUDIT_SCHEMA_VERSION),))
            got = counts(db, TABLES)
            audit_got = counts(db, tuple(t for t, _ in AUDIT_COPY))
            audit_got["audit_info"] -= 1  # the schema_version row (SQLite keeps it in PRAGMA user_version)
            if got != want or audit_got != audit_want:
                raise CatalogError(f"copy incomplete: rows {got} / {audit_got}, expected {want} / {audit_want}")
            if embedding_checksum(target) != checksum:
                raise CatalogError("copy differs: the embeddings' checksum does not match the source")
    finally:
        audit_db.close()
    return {"rows": want, "audit_rows": audit_want, "embedding_sha256": checksum}
