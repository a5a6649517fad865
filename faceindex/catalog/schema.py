"""The catalog's schema (written once, SQLite-flavoured; postgres.py translates its types) and its version."""

from __future__ import annotations

SCHEMA_VERSION = 3  # 2: sources' basis, notice, retention; 3: one row per (image, face index), jobs and
                    # reindex tables in the schema

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
CREATE INDEX IF NOT EXISTS files_image_id ON files(image_id, id);
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
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    owner INTEGER NOT NULL,
    spec TEXT NOT NULL,
    state TEXT NOT NULL,
    progress TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS reindex_images (image_id INTEGER PRIMARY KEY, status TEXT NOT NULL, path TEXT);
CREATE TABLE IF NOT EXISTS reindex_faces (
    face_id INTEGER PRIMARY KEY, x1 INTEGER NOT NULL, y1 INTEGER NOT NULL, x2 INTEGER NOT NULL, y2 INTEGER NOT NULL,
    landmarks TEXT NOT NULL, det_score REAL NOT NULL, q_size INTEGER NOT NULL, q_sharpness REAL NOT NULL,
    q_frontal REAL NOT NULL, quality REAL NOT NULL, embedding BLOB NOT NULL, matched INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS optout_models (
    reference TEXT NOT NULL, model TEXT NOT NULL, templates BLOB NOT NULL, n_templates INTEGER NOT NULL,
    PRIMARY KEY (reference, model));
"""

# Added by migrations (not in SCHEMA, so that an old catalog is migrated before they are created).
UNIQUE_FACES = "CREATE UNIQUE INDEX IF NOT EXISTS faces_image_idx ON faces(image_id, idx)"

# Tables in the order a copy must fill them (foreign keys point backwards), with their columns' names.
TABLES = ("meta", "sources", "images", "files", "people", "faces", "api_keys", "confirmations", "optouts",
          "person_cohesion", "face_blocks", "blocks_apart", "jobs", "optout_models")
# Tables whose `id` the database assigns (a sequence on PostgreSQL).
ID_TABLES = ("sources", "images", "files", "people", "faces", "api_keys", "confirmations", "optouts")

__all__ = ["ID_TABLES", "SCHEMA", "SCHEMA_VERSION", "TABLES", "UNIQUE_FACES"]
