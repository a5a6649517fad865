"""SQLite catalog: the source of truth for sources, images, files, faces (with embeddings) and people.

Images are content (keyed by sha256); files are paths of a source that point at an image, so re-adding a file is
a no-op, a moved or copied file keeps its faces, and an image lives while any source still holds a file of it.
Every transaction that adds or removes faces bumps `generation`, which the derived vector index records.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from .errors import CatalogError, ModelError, NotFoundError
from .types import Box, Face

SCHEMA_VERSION = 2

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sources (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    basis TEXT NOT NULL DEFAULT 'unspecified',
    notice TEXT,
    retention_days INTEGER
);
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY,
    sha256 TEXT NOT NULL UNIQUE,
    size INTEGER NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    face_count INTEGER NOT NULL,
    added_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY,
    source_id INTEGER NOT NULL REFERENCES sources(id),
    path TEXT NOT NULL,
    image_id INTEGER NOT NULL REFERENCES images(id),
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    added_at TEXT NOT NULL,
    UNIQUE (source_id, path)
);
CREATE INDEX IF NOT EXISTS files_image ON files(image_id);
CREATE TABLE IF NOT EXISTS people (
    id INTEGER PRIMARY KEY,
    name TEXT,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS faces (
    id INTEGER PRIMARY KEY,
    image_id INTEGER NOT NULL REFERENCES images(id),
    idx INTEGER NOT NULL,
    x1 INTEGER NOT NULL, y1 INTEGER NOT NULL, x2 INTEGER NOT NULL, y2 INTEGER NOT NULL,
    landmarks TEXT NOT NULL,
    det_score REAL NOT NULL,
    q_size INTEGER NOT NULL,
    q_sharpness REAL NOT NULL,
    q_frontal REAL NOT NULL,
    quality REAL NOT NULL,
    embedding BLOB NOT NULL,
    person_id INTEGER REFERENCES people(id) ON DELETE SET NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS faces_image ON faces(image_id);
CREATE TABLE IF NOT EXISTS api_keys (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    prefix TEXT NOT NULL UNIQUE,
    secret_sha256 TEXT NOT NULL,
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL,
    revoked_at TEXT,
    last_used_at TEXT
);
CREATE TABLE IF NOT EXISTS confirmations (
    id INTEGER PRIMARY KEY,
    case_ref TEXT NOT NULL,
    face_id INTEGER NOT NULL,
    actor TEXT NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (case_ref, face_id, actor)
);
CREATE TABLE IF NOT EXISTS optouts (
    id INTEGER PRIMARY KEY,
    reference TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    actor TEXT NOT NULL,
    templates BLOB NOT NULL,
    n_templates INTEGER NOT NULL,
    receipt TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS faces_person ON faces(person_id);
CREATE TABLE IF NOT EXISTS person_cohesion (
    person_id INTEGER PRIMARY KEY REFERENCES people(id) ON DELETE CASCADE,
    similarity REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS face_blocks (
    face_id INTEGER PRIMARY KEY REFERENCES faces(id) ON DELETE CASCADE,
    block INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS face_blocks_block ON face_blocks(block);
CREATE TABLE IF NOT EXISTS blocks_apart (
    a INTEGER NOT NULL,
    b INTEGER NOT NULL,
    PRIMARY KEY (a, b)
);
CREATE INDEX IF NOT EXISTS faces_quality ON faces(quality);
"""


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


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


class Catalog:
    """One SQLite database (WAL) in the data folder."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.db = sqlite3.connect(str(path), timeout=60.0, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.DatabaseError as e:
            raise CatalogError(f"cannot open catalog {path}: {e}") from e

    def close(self) -> None:
        self.db.close()

    # --- plumbing ----------------------------------------------------------------------------------------------
    def _migrate(self) -> None:
        with self.transaction():
            for stmt in SCHEMA.split(";"):
                if stmt.strip():
                    self.db.execute(stmt)
            version = self.get_meta("schema_version")
            if version is None:
                self.set_meta("schema_version", str(SCHEMA_VERSION))
                self.set_meta("generation", "0")
            elif int(version) > SCHEMA_VERSION:
                raise CatalogError(
                    f"catalog schema {version} is newer than this faceindex understands ({SCHEMA_VERSION})"
                )
            elif int(version) < 2:  # 1 -> 2: legal basis, notice and retention of sources
                for col in ("basis TEXT NOT NULL DEFAULT 'unspecified'", "notice TEXT", "retention_days INTEGER"):
                    self.db.execute(f"ALTER TABLE sources ADD COLUMN {col}")
                self.set_meta("schema_version", "2")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception (so a crash leaves no half batch)."""
        if self.db.in_transaction:  # nested: join the outer transaction
            yield self.db
            return
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        else:
            self.db.execute("COMMIT")

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
        self.db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key='generation'")

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
            existing = self.image_id_by_sha(sha256)
            if existing is not None:  # another process (or an earlier crashed run) got here first
                return existing, [], self.put_file(source_id, path, existing, size, mtime_ns)
            ts = now()
            image_id = self.db.execute(
                "INSERT INTO images(sha256, size, width, height, face_count, added_at) VALUES(?,?,?,?,?,?)",
                (sha256, size, width, height, len(faces), ts),
            ).lastrowid
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
        "JOIN files fl ON fl.id = (SELECT MIN(id) FROM files WHERE image_id = f.image_id) "
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

    # --- people ------------------------------------------------------------------------------------------------
    def person_names(self) -> dict[int, str]:
        return dict(self.db.execute("SELECT id, name FROM people WHERE name IS NOT NULL").fetchall())

    def people(self, limit: int | None = None) -> list[tuple[int, str | None, int, int]]:
        """(id, name, faces, images) by size, largest first."""
        sql = ("SELECT p.id, p.name, COUNT(f.id), COUNT(DISTINCT f.image_id) FROM people p "
               "JOIN faces f ON f.person_id = p.id GROUP BY p.id ORDER BY COUNT(f.id) DESC, p.id")
        if limit:
            sql += f" LIMIT {int(limit)}"
        return self.db.execute(sql).fetchall()

    def sample_faces(self, per_person: int = 4) -> dict[int, list[int]]:
        """The best-quality face ids of each person."""
        rows = self.db.execute(
            "SELECT person_id, id FROM (SELECT person_id, id, ROW_NUMBER() OVER (PARTITION BY person_id "
            "ORDER BY quality DESC, id) AS rn FROM faces WHERE person_id IS NOT NULL) WHERE rn <= ?", (per_person,))
        out: dict[int, list[int]] = {}
        for pid, fid in rows:
            out.setdefault(pid, []).append(fid)
        return out

    def person(self, person_id: int) -> tuple[str | None, list[FaceRecord]]:
        row = self.db.execute("SELECT name FROM people WHERE id=?", (person_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no person {person_id}")
        ids = [r[0] for r in self.db.execute("SELECT id FROM faces WHERE person_id=? ORDER BY quality DESC",
                                             (person_id,))]
        recs = self.face_records(ids)
        return row[0], [recs[i] for i in ids if i in recs]

    def move_faces(self, face_ids: list[int], person_id: int | None = None) -> int:
        """Put faces into a person (a new one when None); returns the person id."""
        with self.transaction():
            if person_id is None:
                person_id = self.db.execute("INSERT INTO people(created_at) VALUES(?)", (now(),)).lastrowid
            self.db.executemany("UPDATE faces SET person_id=? WHERE id=?", [(person_id, f) for f in face_ids])
            self._drop_empty_people()
            return person_id

    def person_face_images(self, person_ids: list[int]) -> list[tuple[int, int, int]]:
        """(person id, face id, image id) of the given people."""
        marks = ",".join("?" * len(person_ids))
        return self.db.execute(f"SELECT person_id, id, image_id FROM faces WHERE person_id IN ({marks})",
                               person_ids).fetchall()

    def name_person(self, person_id: int, name: str | None) -> None:
        with self.transaction():
            if self.db.execute("UPDATE people SET name=? WHERE id=?", (name, person_id)).rowcount == 0:
                raise NotFoundError(f"no person {person_id}")

    # --- opt-outs ---------------------------------------------------------------------------------------------
    def add_optout(self, reference: str, actor: str, templates: np.ndarray, receipt: dict) -> None:
        with self.transaction():
            if self.db.execute("SELECT 1 FROM optouts WHERE reference=?", (reference,)).fetchone():
                raise CatalogError(f"an opt-out with reference {reference!r} already exists")
            t = np.ascontiguousarray(templates, dtype=np.float32)
            self.db.execute(
                "INSERT INTO optouts(reference, created_at, actor, templates, n_templates, receipt) VALUES(?,?,?,?,?,?)",
                (reference, receipt["time"], actor, t.tobytes(), len(t), json.dumps(receipt)))

    def optouts(self) -> list[dict]:
        rows = self.db.execute("SELECT reference, created_at, actor, n_templates, receipt FROM optouts ORDER BY id")
        return [{"reference": r, "created_at": c, "actor": a, "templates": n, "receipt": json.loads(rc)}
                for r, c, a, n, rc in rows]

    def remove_optout(self, reference: str) -> None:
        with self.transaction():
            if self.db.execute("DELETE FROM optouts WHERE reference=?", (reference,)).rowcount == 0:
                raise NotFoundError(f"no opt-out with reference {reference!r}")

    def optout_generation(self) -> tuple[int, int]:
        """Changes whenever an opt-out is added or removed (count, highest id): cheap to poll per batch."""
        row = self.db.execute("SELECT count(*), coalesce(max(id), 0) FROM optouts").fetchone()
        return int(row[0]), int(row[1])

    def optout_templates(self, dim: int = 128) -> np.ndarray:
        blobs = [r[0] for r in self.db.execute("SELECT templates FROM optouts")]
        if not blobs:
            return np.zeros((0, dim), np.float32)
        return np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(-1, dim)

    # --- API keys and confirmations --------------------------------------------------------------------------
    def add_key(self, name: str, role: str, prefix: str, secret_sha256: str, created_by: str) -> int:
        with self.transaction():
            return self.db.execute(
                "INSERT INTO api_keys(name, role, prefix, secret_sha256, created_at, created_by) VALUES(?,?,?,?,?,?)",
                (name, role, prefix, secret_sha256, now(), created_by)).lastrowid

    def keys(self) -> list[dict]:
        rows = self.db.execute("SELECT id, name, role, prefix, created_at, created_by, revoked_at, last_used_at "
                               "FROM api_keys ORDER BY id")
        cols = ("id", "name", "role", "prefix", "created_at", "created_by", "revoked_at", "last_used_at")
        return [dict(zip(cols, r)) for r in rows]

    def key_by_prefix(self, prefix: str) -> tuple | None:
        return self.db.execute("SELECT id, name, role, secret_sha256, revoked_at, last_used_at FROM api_keys WHERE prefix=?",
                               (prefix,)).fetchone()

    def touch_key(self, key_id: int) -> None:
        with self.transaction():
            self.db.execute("UPDATE api_keys SET last_used_at=? WHERE id=?", (now(), key_id))

    def revoke_key(self, key_id: int) -> None:
        with self.transaction():
            if self.db.execute("UPDATE api_keys SET revoked_at=? WHERE id=? AND revoked_at IS NULL",
                               (now(), key_id)).rowcount == 0:
                raise NotFoundError(f"no active key {key_id}")

    def add_confirmation(self, case_ref: str, face_id: int, actor: str) -> list[str]:
        """Record one investigator's confirmation; returns the distinct actors who confirmed."""
        with self.transaction():
            self.db.execute("INSERT OR IGNORE INTO confirmations(case_ref, face_id, actor, created_at) "
                            "VALUES(?,?,?,?)", (case_ref, face_id, actor, now()))
            return self.confirmers(case_ref, face_id)

    def confirmers(self, case_ref: str, face_id: int) -> list[str]:
        return [r[0] for r in self.db.execute(
            "SELECT actor FROM confirmations WHERE case_ref=? AND face_id=? ORDER BY id", (case_ref, face_id))]

    def confirmations(self, case_ref: str) -> dict[int, list[str]]:
        out: dict[int, list[str]] = {}
        for fid, actor in self.db.execute("SELECT face_id, actor FROM confirmations WHERE case_ref=? ORDER BY id",
                                          (case_ref,)):
            out.setdefault(fid, []).append(actor)
        return out

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


def _chunks(seq: list, n: int) -> Iterator[list]:
    for i in range(0, len(seq), n):
        yield seq[i:i + n]
