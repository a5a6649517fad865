"""The catalog protocol and its shared logic: the source of truth for sources, images, files, faces (with
embeddings), people, opt-outs, API keys, confirmations and jobs.

The SQL here is written once for both backends: SQLite (`sqlite.py`, the embedded default) runs it as it is;
PostgreSQL (`postgres.py`) runs it through a small dialect layer (placeholders, `INSERT OR IGNORE`, DDL types,
`RETURNING id` for `lastrowid`). A backend supplies the connection (`db`), the write transaction (one writer at
a time on both: SQLite's BEGIN IMMEDIATE, a PostgreSQL advisory lock), and id allocation.

Images are content (keyed by sha256); files are paths of a source that point at an image, so re-adding a file is
a no-op, a moved or copied file keeps its faces, and an image lives while any source still holds a file of it.
Every transaction that adds or removes faces bumps `generation`, which the derived vector index records.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import CatalogError, ModelError, NotFoundError
from ..types import Box, Face
from .accounts import AccountsMixin
from .people import PeopleMixin
from .schema import ID_TABLES as ID_TABLES  # re-exported
from .schema import SCHEMA as SCHEMA
from .schema import SCHEMA_VERSION, UNIQUE_FACES
from .schema import TABLES as TABLES
from .util import chunks as _chunks
from .util import now

_BUMP = "UPDATE meta SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT) WHERE key='generation'"


@dataclass(frozen=True, slots=True)
class FaceRecord:
    """A stored face with where it came from."""

    id: int
    image_id: int
    box: Box
    quality: float
    person_id: int | None
    person_name: str | None
    path: str
    source: str
    added_at: str
    basis: str = "unspecified"


@dataclass(frozen=True, slots=True)
class FileState:
    image_id: int
    size: int
    mtime_ns: int


class Catalog(AccountsMixin, PeopleMixin):
    """The catalog protocol, with the logic both backends share; open one with `open_catalog`."""

    dialect: str = ""  # "sqlite" or "postgresql"
    url: str = ""  # what reopen() opens: a file path or a postgresql:// URL
    label: str = ""  # how messages name it (a path, or the URL without its password)
    db: Any  # the connection: sqlite3.Connection, or postgres.PgConnection (the same execute API)

    def close(self) -> None:
        self.db.close()

    def reopen(self) -> Catalog:
        """Another connection to the same catalog (a rebuild thread, a background job)."""
        from . import open_catalog

        return open_catalog(self.url)

    # --- backend hooks -----------------------------------------------------------------------------------------
    def _begin(self) -> None:
        """Start a write transaction holding the catalog's writer lock."""
        raise NotImplementedError

    def reserve_ids(self, table: str, n: int) -> list[int]:
        """`n` fresh ids for rows of `table` inserted with explicit ids (inside a transaction)."""
        raise NotImplementedError

    def sync_ids(self) -> None:
        """After rows were copied in with explicit ids: let the database's id allocation continue above them."""

    # --- plumbing ----------------------------------------------------------------------------------------------
    def _migrate(self, statements: Iterable[str]) -> None:
        """Create or upgrade the schema in one transaction; a schema from a newer faceindex is refused."""
        with self.transaction():
            for stmt in statements:
                self.db.execute(stmt)
            version = self.get_meta("schema_version")
            if version is None:
                self.set_meta("schema_version", str(SCHEMA_VERSION))
                self.set_meta("generation", "0")
                self.db.execute(UNIQUE_FACES)
                return
            if int(version) > SCHEMA_VERSION:
                raise CatalogError(
                    f"catalog {self.label} has schema version {version}, newer than this faceindex understands "
                    f"({SCHEMA_VERSION}): upgrade faceindex")
            if int(version) < 2:  # 1 -> 2: legal basis, notice and retention of sources
                for col in ("basis TEXT NOT NULL DEFAULT 'unspecified'", "notice TEXT", "retention_days INTEGER"):
                    self.db.execute(f"ALTER TABLE sources ADD COLUMN {col}")
            if int(version) < 3:  # 2 -> 3: one row per (image, face index); jobs and reindex tables (in SCHEMA)
                self.db.execute(UNIQUE_FACES)
            if int(version) < SCHEMA_VERSION:
                self.set_meta("schema_version", str(SCHEMA_VERSION))

    @property
    def in_transaction(self) -> bool:
        return bool(self.db.in_transaction)

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        """A write transaction (one writer at a time), rolled back on any exception (a crash leaves no half
        batch); nested calls join the outer one."""
        if self.in_transaction:
            yield self.db
            return
        self._begin()
        self._bump_due = False
        try:
            yield self.db
            if self._bump_due:
                self.db.execute(_BUMP)
        except BaseException:
            if self.in_transaction:
                self.db.execute("ROLLBACK")
            raise
        else:
            self.db.execute("COMMIT")
        finally:
            self._bump_due = False

    def get_meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                        (key, value))

    @property
    def generation(self) -> int:
        return int(self.get_meta("generation") or 0)

    def _bump(self) -> None:
        """Move the generation on: once per transaction, at its commit (one statement less per image)."""
        if self.in_transaction:
            self._bump_due = True
        else:
            self.db.execute(_BUMP)

    def check_model(self, key: str) -> None:
        """Record the embedding model on first use; refuse a different one afterwards."""
        with self.transaction():
            current = self.get_meta("model")
            if current is None:
                self.set_meta("model", key)
            elif current != key:
                raise ModelError(
                    f"this index holds embeddings of model {current}; refusing to mix in {key}. "
                    "Use another data folder for the other model."
                )

    # --- sources and files ----------------------------------------------------------------------------------
    def source_id(self, name: str, create: bool = False) -> int:
        row = self.db.execute("SELECT id FROM sources WHERE name=?", (name,)).fetchone()
        if row:
            return row[0]
        if not create:
            raise NotFoundError(f"no source named {name!r}")
        return self.put_source(name)

    def put_source(self, name: str, basis: str | None = None, notice: str | None = None,
                   retention_days: int | None = None) -> int:
        """Create a source, or update the given fields of an existing one."""
        with self.transaction():
            row = self.db.execute("SELECT id FROM sources WHERE name=?", (name,)).fetchone()
            if row is None:
                return self.db.execute(
                    "INSERT INTO sources(name, created_at, basis, notice, retention_days) VALUES(?,?,?,?,?)",
                    (name, now(), basis or "unspecified", notice, retention_days)).lastrowid
            if basis is not None:
                self.db.execute("UPDATE sources SET basis=? WHERE id=?", (basis, row[0]))
            if notice is not None:
                self.db.execute("UPDATE sources SET notice=? WHERE id=?", (notice, row[0]))
            if retention_days is not None:
                self.db.execute("UPDATE sources SET retention_days=? WHERE id=?",
                                (retention_days or None, row[0]))
            return row[0]

    def sources(self) -> list[dict]:
        rows = self.db.execute(
            "SELECT s.id, s.name, s.created_at, s.basis, s.notice, s.retention_days, COUNT(f.id), MIN(f.added_at) "
            "FROM sources s LEFT JOIN files f ON f.source_id = s.id GROUP BY s.id ORDER BY s.name"
        ).fetchall()
        return [{"id": i, "name": n, "created_at": c, "basis": b, "notice": no, "retention_days": r, "files": k,
                 "oldest_file": o} for i, n, c, b, no, r, k, o in rows]

    def source_usage(self, source_id: int) -> dict[str, int]:
        """What a source holds: files, images and faces, and the images and faces no other source holds (what
        deleting the source's files would remove)."""
        q = self.db.execute
        mine = "SELECT image_id FROM files WHERE source_id=?"
        only = f"({mine}) AND NOT EXISTS (SELECT 1 FROM files o WHERE o.image_id = i.id AND o.source_id <> ?)"
        return {
            "files": q("SELECT COUNT(*) FROM files WHERE source_id=?", (source_id,)).fetchone()[0],
            "images": q(f"SELECT COUNT(*) FROM images WHERE id IN ({mine})", (source_id,)).fetchone()[0],
            "faces": q(f"SELECT COUNT(*) FROM faces WHERE image_id IN ({mine})", (source_id,)).fetchone()[0],
            "images_only_here": q(f"SELECT COUNT(*) FROM images i WHERE i.id IN {only}",
                                  (source_id, source_id)).fetchone()[0],
            "faces_only_here": q(f"SELECT COUNT(*) FROM faces WHERE image_id IN (SELECT i.id FROM images i WHERE "
                                 f"i.id IN {only})", (source_id, source_id)).fetchone()[0],
        }

    def source_file_ids(self, source_id: int) -> list[int]:
        return [r[0] for r in self.db.execute("SELECT id FROM files WHERE source_id=?", (source_id,))]

    def expired_files(self, source_id: int, cutoff: str) -> list[int]:
        return [r[0] for r in self.db.execute("SELECT id FROM files WHERE source_id=? AND added_at < ?",
                                              (source_id, cutoff))]

    def remove_file_ids(self, file_ids: list[int]) -> tuple[int, int, list[int]]:
        """Forget files by id; returns (files removed, images removed, face ids removed)."""
        with self.transaction():
            images: set[int] = set()
            for chunk in _chunks(file_ids, 900):
                marks = ",".join("?" * len(chunk))
                images |= {r[0] for r in self.db.execute(f"SELECT image_id FROM files WHERE id IN ({marks})", chunk)}
                self.db.execute(f"DELETE FROM files WHERE id IN ({marks})", chunk)
            before = self.db.execute("SELECT COUNT(*) FROM images").fetchone()[0]
            removed = self._drop_orphans(sorted(images))
            after = self.db.execute("SELECT COUNT(*) FROM images").fetchone()[0]
            return len(file_ids), before - after, removed

    def file_states(self, source_id: int) -> dict[str, FileState]:
        rows = self.db.execute("SELECT path, image_id, size, mtime_ns FROM files WHERE source_id=?", (source_id,))
        return {p: FileState(i, s, m) for p, i, s, m in rows}

    def image_id_by_sha(self, sha256: str) -> int | None:
        row = self.db.execute("SELECT id FROM images WHERE sha256=?", (sha256,)).fetchone()
        return row[0] if row else None

    def put_file(self, source_id: int, path: str, image_id: int, size: int, mtime_ns: int) -> list[int]:
        """Point `path` at `image_id`; returns face ids removed if the path's previous image became orphaned."""
        with self.transaction():
            old = self.db.execute("SELECT image_id FROM files WHERE source_id=? AND path=?",
                                  (source_id, path)).fetchone()
            self.db.execute(
                "INSERT INTO files(source_id, path, image_id, size, mtime_ns, added_at) VALUES(?,?,?,?,?,?) "
                "ON CONFLICT(source_id, path) DO UPDATE SET image_id=excluded.image_id, size=excluded.size, "
                "mtime_ns=excluded.mtime_ns, added_at=excluded.added_at",
                (source_id, path, image_id, size, mtime_ns, now()),
            )
            if old and old[0] != image_id:
                return self._drop_orphans([old[0]])
            return []

    def add_image(self, source_id: int, path: str, mtime_ns: int, sha256: str, size: int, width: int,
                  height: int, faces: list[Face]) -> tuple[int, list[int], list[int]]:
        """Insert an image, its faces and the file pointing at it, atomically.

        Returns (image_id, new face ids, face ids removed because the path used to hold other content).
        """
        with self.transaction():
            ts = now()
            row = self.db.execute(
                "INSERT INTO images(sha256, size, width, height, face_count, added_at) VALUES(?,?,?,?,?,?) "
                "ON CONFLICT(sha256) DO NOTHING RETURNING id",
                (sha256, size, width, height, len(faces), ts),
            ).fetchall()  # (all: the statement must finish before the next one on SQLite)
            if not row:  # another process (or an earlier crashed run) got here first
                existing = self.image_id_by_sha(sha256)
                return existing, [], self.put_file(source_id, path, existing, size, mtime_ns)
            image_id = row[0][0]
            ids = []
            for f in faces:
                q = f.quality
                cur = self.db.execute(
                    "INSERT INTO faces(image_id, idx, x1, y1, x2, y2, landmarks, det_score, q_size, q_sharpness, "
                    "q_frontal, quality, embedding, created_at) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (image_id, f.index, f.box.x1, f.box.y1, f.box.x2, f.box.y2,
                     json.dumps([[round(x, 2), round(y, 2)] for x, y in f.landmarks]), q.detector_score, q.size,
                     q.sharpness, q.frontal, q.score, np.asarray(f.embedding, np.float32).tobytes(), ts),
                )
                ids.append(cur.lastrowid)
            removed = self.put_file(source_id, path, image_id, size, mtime_ns)
            if ids:
                self._bump()
            return image_id, ids, removed

    def remove_files(self, source_id: int | None, prefix: str) -> tuple[int, int, list[int]]:
        """Forget files at `prefix` (a file, or a folder and everything below it), in one source or all.

        Returns (files removed, images removed, face ids removed).
        """
        prefix = prefix.rstrip("/") or "/"
        like = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "/%"
        cond = "(path = ? OR path LIKE ? ESCAPE '\\')"
        args: list = [prefix, like]
        if source_id is not None:
            cond += " AND source_id = ?"
            args.append(source_id)
        ids = [r[0] for r in self.db.execute(f"SELECT id FROM files WHERE {cond}", args)]
        return self.remove_file_ids(ids) if ids else (0, 0, [])

    def _drop_orphans(self, image_ids: Iterable[int]) -> list[int]:
        """Delete images no file points at any more, with their faces; returns the deleted face ids."""
        removed: list[int] = []
        for image_id in image_ids:
            if self.db.execute("SELECT 1 FROM files WHERE image_id=? LIMIT 1", (image_id,)).fetchone():
                continue
            removed += [r[0] for r in self.db.execute("SELECT id FROM faces WHERE image_id=?", (image_id,))]
            self.db.execute("DELETE FROM faces WHERE image_id=?", (image_id,))
            self.db.execute("DELETE FROM images WHERE id=?", (image_id,))
        if removed:
            self._bump()
            self._drop_empty_people()
        return removed

    def delete_faces(self, face_ids: list[int]) -> int:
        """Delete faces (the images stay, with their face_count reduced)."""
        if not face_ids:
            return 0
        with self.transaction():
            n = 0
            for chunk in _chunks(face_ids, 500):
                marks = ",".join("?" * len(chunk))
                self.db.execute(
                    f"UPDATE images SET face_count = face_count - (SELECT COUNT(*) FROM faces f WHERE "
                    f"f.image_id = images.id AND f.id IN ({marks})) WHERE id IN "
                    f"(SELECT image_id FROM faces WHERE id IN ({marks}))", chunk + chunk)
                n += self.db.execute(f"DELETE FROM faces WHERE id IN ({marks})", chunk).rowcount
            if n:
                self._bump()
                self._drop_empty_people()
            return n

    def _drop_empty_people(self) -> None:
        self.db.execute("DELETE FROM people WHERE name IS NULL AND id NOT IN "
                        "(SELECT DISTINCT person_id FROM faces WHERE person_id IS NOT NULL)")

    # --- faces -----------------------------------------------------------------------------------------------
    def face_count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM faces").fetchone()[0]

    def face_ids(self) -> np.ndarray:
        return np.fromiter((r[0] for r in self.db.execute("SELECT id FROM faces ORDER BY id")), dtype=np.int64)

    def face_ids_after(self, after: int) -> np.ndarray:
        """Ids of the faces above `after`, sorted (a vector store catching up from its watermark)."""
        rows = self.db.execute("SELECT id FROM faces WHERE id > ? ORDER BY id", (after,))
        return np.fromiter((r[0] for r in rows), dtype=np.int64)

    def low_quality_ids(self, bar: float) -> np.ndarray:
        rows = self.db.execute("SELECT id FROM faces WHERE quality < ?", (bar,))
        return np.fromiter((r[0] for r in rows), dtype=np.int64)

    def embeddings(self, ids: Iterable[int] | None = None, batch: int = 50_000,
                   dim: int = 128) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids, (n, dim) float32) in batches: all faces, or those with the given ids."""
        if ids is None:
            last = -1
            while True:
                rows = self.db.execute("SELECT id, embedding FROM faces WHERE id > ? ORDER BY id LIMIT ?",
                                       (last, batch)).fetchall()
                if not rows:
                    return
                last = rows[-1][0]
                yield _unpack(rows, dim)
        else:
            for chunk in _chunks(list(ids), 900):
                rows = self.db.execute(
                    f"SELECT id, embedding FROM faces WHERE id IN ({','.join('?' * len(chunk))}) ORDER BY id", chunk
                ).fetchall()
                if rows:
                    yield _unpack(rows, dim)

    def face_image_ids(self) -> tuple[np.ndarray, np.ndarray]:
        rows = self.db.execute("SELECT id, image_id FROM faces ORDER BY id").fetchall()
        a = np.array(rows, dtype=np.int64).reshape(-1, 2)
        return a[:, 0], a[:, 1]

    _RECORD_SQL = (
        "SELECT f.id, f.image_id, f.x1, f.y1, f.x2, f.y2, f.quality, f.person_id, p.name, fl.path, s.name, "
        "i.added_at, s.basis FROM faces f JOIN images i ON i.id = f.image_id "
        "JOIN files fl ON fl.image_id = f.image_id AND fl.id = (SELECT MIN(id) FROM files WHERE image_id = f.image_id) "
        "JOIN sources s ON s.id = fl.source_id LEFT JOIN people p ON p.id = f.person_id "
    )

    def face_records(self, ids: list[int]) -> dict[int, FaceRecord]:
        out: dict[int, FaceRecord] = {}
        for chunk in _chunks(ids, 900):
            rows = self.db.execute(self._RECORD_SQL + f"WHERE f.id IN ({','.join('?' * len(chunk))})", chunk)
            for r in rows:
                out[r[0]] = FaceRecord(r[0], r[1], Box(*r[2:6]), r[6], r[7], r[8], r[9], r[10], r[11], r[12])
        return out

    def image_files(self, image_ids: list[int]) -> list[str]:
        """Every file path that holds one of these images."""
        out: list[str] = []
        for chunk in _chunks(list(image_ids), 900):
            out += [r[0] for r in self.db.execute(
                f"SELECT path FROM files WHERE image_id IN ({','.join('?' * len(chunk))})", chunk)]
        return out

    def image_sha256(self, image_id: int) -> str | None:
        """The content hash an image was indexed with."""
        row = self.db.execute("SELECT sha256 FROM images WHERE id = ?", (image_id,)).fetchone()
        return row[0] if row else None

    def face_pixels(self, face_id: int) -> int:
        """Pixels of the image a face is in (what serving its crop decodes); 0 for an unknown face."""
        row = self.db.execute("SELECT i.width * i.height FROM faces f JOIN images i ON i.id = f.image_id "
                              "WHERE f.id = ?", (face_id,)).fetchone()
        return int(row[0]) if row else 0

    def face_record(self, face_id: int) -> FaceRecord:
        rec = self.face_records([face_id]).get(face_id)
        if rec is None:
            raise NotFoundError(f"no face {face_id}")
        return rec

    # --- stats -------------------------------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        q = self.db.execute
        return {
            "images": q("SELECT COUNT(*) FROM images").fetchone()[0],
            "files": q("SELECT COUNT(*) FROM files").fetchone()[0],
            "faces": q("SELECT COUNT(*) FROM faces").fetchone()[0],
            "people": q("SELECT COUNT(DISTINCT person_id) FROM faces WHERE person_id IS NOT NULL").fetchone()[0],
            "named_people": q("SELECT COUNT(*) FROM people WHERE name IS NOT NULL").fetchone()[0],
            "sources": q("SELECT COUNT(*) FROM sources").fetchone()[0],
            "images_without_faces": q("SELECT COUNT(*) FROM images WHERE face_count = 0").fetchone()[0],
        }


def _unpack(rows: list, dim: int) -> tuple[np.ndarray, np.ndarray]:
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), dim)
    return ids, vecs

