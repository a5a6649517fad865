"""The audit log's on-disk format: its schema and append-only triggers (created, upgraded and re-armed on every
open, with the hash mode and key checked), and how a record is hashed.

Kept apart from `audit.py` (which writes and reads the log) and `audit_verify.py` (which checks it) so that
the format a verifier must reproduce is one short page: canonical JSON of the record's content, chained by the
previous record's hash, sha256 or (keyed mode) HMAC-SHA256.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
from collections.abc import Mapping
from typing import Any, Final

from .errors import AuditKeyError, CatalogError

SCHEMA_VERSION: Final = 2  # 2: audit_info (hash mode and key fingerprint)
PLAIN: Final = "sha256"
KEYED: Final = "hmac-sha256"
ZERO_HASH: Final = "0" * 64  # the prev_hash of record 1
COLUMNS: Final = "seq, time, actor, role, action, purpose, case_ref, body, prev_hash, hash"

_INFO_TABLE = """CREATE TABLE IF NOT EXISTS audit_info (
        name TEXT PRIMARY KEY,
        value TEXT NOT NULL
    )"""

_TABLES = (
    """CREATE TABLE IF NOT EXISTS audit (
        seq INTEGER PRIMARY KEY,
        time TEXT NOT NULL,
        actor TEXT NOT NULL,
        role TEXT NOT NULL,
        action TEXT NOT NULL,
        purpose TEXT,
        case_ref TEXT,
        body TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS audit_head (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        seq INTEGER NOT NULL,
        hash TEXT NOT NULL
    )""",
    _INFO_TABLE,
    "CREATE INDEX IF NOT EXISTS audit_case_ref ON audit(case_ref)",
    "CREATE INDEX IF NOT EXISTS audit_actor ON audit(actor)",
    "CREATE INDEX IF NOT EXISTS audit_time ON audit(time)",
)

# Dropped and recreated on every open, so a removed or replaced trigger is restored (the chain still
# records that the log was tampered with in between).
_TRIGGERS = {
    "audit_no_update": """CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only: records cannot be updated'); END""",
    "audit_no_delete": """CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only: records cannot be deleted'); END""",
    "audit_head_no_delete": """CREATE TRIGGER audit_head_no_delete BEFORE DELETE ON audit_head
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only: the head cannot be deleted'); END""",
    "audit_info_no_update": """CREATE TRIGGER audit_info_no_update BEFORE UPDATE ON audit_info
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only: its hash mode cannot be changed'); END""",
    "audit_info_no_delete": """CREATE TRIGGER audit_info_no_delete BEFORE DELETE ON audit_info
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only: its hash mode cannot be changed'); END""",
    # The head only ever moves one record forward, onto the record just appended.
    "audit_head_forward_only": """CREATE TRIGGER audit_head_forward_only BEFORE UPDATE ON audit_head
        WHEN NEW.id IS NOT OLD.id OR NEW.seq IS NOT OLD.seq + 1
             OR NEW.hash IS NOT (SELECT hash FROM audit WHERE seq = NEW.seq)
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only: the head only follows appends'); END""",
}


# The same rules on PostgreSQL (the audit log in the catalog's database), TRUNCATE included; (re)armed on every
# open. Appends are serialised by an advisory lock (audit.AUDIT_LOCK), so the chain stays one chain.
_PG_TRIGGERS = (
    """CREATE OR REPLACE FUNCTION faceindex_audit_refuse() RETURNS trigger LANGUAGE plpgsql AS $f$
        BEGIN RAISE EXCEPTION 'the audit log is append-only: %', TG_ARGV[0]; END $f$""",
    """CREATE OR REPLACE FUNCTION faceindex_audit_head_forward() RETURNS trigger LANGUAGE plpgsql AS $f$
        BEGIN
            IF NEW.id IS DISTINCT FROM OLD.id OR NEW.seq IS DISTINCT FROM OLD.seq + 1
               OR NEW.hash IS DISTINCT FROM (SELECT hash FROM audit WHERE seq = NEW.seq) THEN
                RAISE EXCEPTION 'the audit log is append-only: the head only follows appends';
            END IF;
            RETURN NEW;
        END $f$""",
    *(f"CREATE OR REPLACE TRIGGER {name} BEFORE {op} ON {table} FOR EACH {each} "
      f"EXECUTE FUNCTION faceindex_audit_refuse('{why}')"
      for name, op, table, each, why in (
          ("audit_no_update", "UPDATE", "audit", "ROW", "records cannot be updated"),
          ("audit_no_delete", "DELETE", "audit", "ROW", "records cannot be deleted"),
          ("audit_no_truncate", "TRUNCATE", "audit", "STATEMENT", "records cannot be deleted"),
          ("audit_head_no_delete", "DELETE", "audit_head", "ROW", "the head cannot be deleted"),
          ("audit_head_no_truncate", "TRUNCATE", "audit_head", "STATEMENT", "the head cannot be deleted"),
          ("audit_info_no_update", "UPDATE", "audit_info", "ROW", "its hash mode cannot be changed"),
          ("audit_info_no_delete", "DELETE", "audit_info", "ROW", "its hash mode cannot be changed"),
          ("audit_info_no_truncate", "TRUNCATE", "audit_info", "STATEMENT", "its hash mode cannot be changed"),
      )),
    """CREATE OR REPLACE TRIGGER audit_head_forward_only BEFORE UPDATE ON audit_head FOR EACH ROW
        EXECUTE FUNCTION faceindex_audit_head_forward()""",
    # triggers someone disabled (ALTER TABLE ... DISABLE TRIGGER) are re-armed too
    *(f"ALTER TABLE {table} ENABLE TRIGGER USER" for table in ("audit", "audit_head", "audit_info")),
)


def canonical_json(value: Any) -> str:
    """The one encoding that is hashed: sorted keys, no spaces, UTF-8 text; refuses bytes and NaN."""
    return json.dumps(
        value,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
        default=_refuse,
    )


def _refuse(value: object) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        raise TypeError("audit details never hold bytes: keep image data out of the log, record its sha256")
    raise TypeError(f"audit details must be JSON-serialisable, not {type(value).__name__}")


def record_hash(
    *,
    seq: int,
    time: str,
    actor: str,
    role: str,
    action: str,
    purpose: str | None,
    case_ref: str | None,
    details: Mapping[str, Any],
    prev_hash: str,
    key: bytes | None = None,
) -> str:
    """sha256 (hex) of a record's canonical content, chained to the previous record's hash; with `key`, the
    HMAC-SHA256 of the same bytes under that key."""
    content = {
        "seq": seq,
        "time": time,
        "actor": actor,
        "role": role,
        "action": action,
        "purpose": purpose,
        "case_ref": case_ref,
        "details": details,
        "prev_hash": prev_hash,
    }
    data = canonical_json(content).encode("utf-8")
    if key is not None:
        return hmac.new(key, data, hashlib.sha256).hexdigest()
    return hashlib.sha256(data).hexdigest()


def key_fingerprint(key: bytes) -> str:
    """A short public fingerprint of an audit key (stored with the log; reveals nothing usable about the key)."""
    return hmac.new(key, b"faceindex audit key fingerprint", hashlib.sha256).hexdigest()[:16]


def setup_sqlite(db: sqlite3.Connection, path: object, mode: str, key: bytes | None) -> None:
    """Create (in `mode`) or upgrade the log's tables in `db`, inside the caller's write transaction; check the hash
    mode and key (check_mode) and re-arm the triggers. CatalogError for a log newer than this faceindex."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise CatalogError(
            f"audit log {path} has schema version {version}; "
            f"this faceindex knows version {SCHEMA_VERSION}"
        )
    if version == 0:
        for statement in _TABLES:
            db.execute(statement)
        # Only when the log is created: a head that disappears later must stay missing.
        db.execute("INSERT OR IGNORE INTO audit_head (id, seq, hash) VALUES (1, 0, ?)", (ZERO_HASH,))
        info = {"mode": mode}
        if key is not None:
            info["key_fingerprint"] = key_fingerprint(key)
        db.executemany("INSERT OR IGNORE INTO audit_info (name, value) VALUES (?, ?)", info.items())
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    elif version == 1:  # 1 -> 2: logs made before keyed mode are plain
        db.execute(_INFO_TABLE)
        db.execute("INSERT OR IGNORE INTO audit_info (name, value) VALUES ('mode', ?)", (PLAIN,))
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    check_mode(db, path, key)
    for name, statement in _TRIGGERS.items():
        db.execute(f"DROP TRIGGER IF EXISTS {name}")
        db.execute(statement)


def setup_postgres(db: Any, path: object, mode: str, key: bytes | None) -> None:
    """As setup_sqlite, for the log's tables in a PostgreSQL database."""
    # The schema version is a row of audit_info (append-only like the rest); no row yet = a new log.
    for statement in _TABLES:
        db.execute(statement)
    row = db.execute("SELECT value FROM audit_info WHERE name = 'schema_version'").fetchone()
    if row is not None and int(row[0]) > SCHEMA_VERSION:
        raise CatalogError(
            f"audit log {path} has schema version {row[0]}; this faceindex knows version {SCHEMA_VERSION}")
    if row is None:
        db.execute("INSERT OR IGNORE INTO audit_head (id, seq, hash) VALUES (1, 0, ?)", (ZERO_HASH,))
        info = {"mode": mode, "schema_version": str(SCHEMA_VERSION)}
        if key is not None:
            info["key_fingerprint"] = key_fingerprint(key)
        db.executemany("INSERT INTO audit_info (name, value) VALUES (?, ?) ON CONFLICT DO NOTHING",
                       info.items())
    check_mode(db, path, key)
    for statement in _PG_TRIGGERS:
        db.execute(statement)


def check_mode(db: Any, path: object, key: bytes | None) -> None:
    """AuditKeyError unless `key` fits the log: none for a plain log, the one it was created with for a keyed one."""
    info = dict(db.execute("SELECT name, value FROM audit_info").fetchall())
    mode = info.get("mode", PLAIN)
    if mode == KEYED and key is None:
        raise AuditKeyError(
            f"audit log {path} is keyed (HMAC): set FACEINDEX_AUDIT_KEY or FACEINDEX_AUDIT_KEY_FILE")
    if mode == KEYED and key is not None and info.get("key_fingerprint") != key_fingerprint(key):
        raise AuditKeyError(f"audit log {path} was keyed with a different key than the one configured")
    if mode != KEYED and key is not None:
        raise AuditKeyError(
            f"an audit key is configured but audit log {path} is not keyed; start a keyed chain with "
            "`faceindex audit reset --reason ...`")
