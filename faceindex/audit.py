"""Tamper-evident, append-only audit log: one hash-chained SQLite file in the data folder.

Every search, verify, access, erase, opt-out change, export, deletion and policy change appends one
record: when (UTC, microseconds), who (actor, role), what (action), why (purpose, case reference) and a
JSON dict of details (probe sha256, threshold, top-k, gallery size and generation, result ids with
scores). Image bytes never go in; record their sha256 instead.

What protects the log, and against whom
---------------------------------------
* Triggers refuse UPDATE and DELETE of audit rows through SQL, so no bug, script or operator with an SQL
  shell changes history by accident. They are re-armed every time the log is opened.
* Each record's ``hash`` is sha256 over the canonical JSON of its content and of the previous record's
  hash (``prev_hash``; 64 zeros for record 1). Anyone holding the file can drop the triggers, but then
  editing, deleting, inserting or reordering records breaks the chain, and :meth:`AuditLog.verify` names
  the first bad record and the kind of problem (the walk itself is :mod:`faceindex.audit_verify`).
* A one-row ``audit_head`` table holds the last seq and hash, written in the same transaction as each
  record, so cutting records off the end (which leaves a valid, shorter chain) is detected too.
* An attacker who rewrites *everything* consistently (every hash from the first changed record on, and
  the head) leaves a valid chain behind. Only a copy of the head kept outside this file catches that:
  publish :meth:`AuditLog.head` where the attacker cannot reach it (a signed report, a ticket, another
  system, write-once storage) and check with ``verify(expected_head=...)``. An anchor stays valid as the
  log grows: it asserts that record ``seq`` still has that hash.

By default the hashes are unkeyed, so anyone can verify a copy of the log without holding a secret. In keyed
mode (``AuditLog(path, key=...)``) each hash is an HMAC-SHA256 under a key kept outside the data folder, so
someone holding the file but not the key cannot append, edit or rewrite records that verify; the mode and a
fingerprint of the key are stored in ``audit_info`` when the log is created, and opening a keyed log without
its key (or a plain log with a key) is refused. The log proves that what was written has not changed since;
that every operation writes its record is the engine's job, and :mod:`faceindex.anchor` keeps a copy of the
head in the catalog so that a deleted, emptied or truncated log is noticed on the next open.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Final

from .audit_format import (
    COLUMNS,
    KEYED,
    PLAIN,
    canonical_json,
    record_hash,
    setup_postgres,
    setup_sqlite,
)
from .audit_format import SCHEMA_VERSION as SCHEMA_VERSION  # re-exported with ZERO_HASH: callers import them here
from .audit_format import ZERO_HASH as ZERO_HASH
from .audit_verify import BAD_LINK as BAD_LINK  # the kinds of problem, re-exported: callers import them from here
from .audit_verify import EDITED as EDITED
from .audit_verify import GAP as GAP
from .audit_verify import HEAD_MISMATCH as HEAD_MISMATCH
from .audit_verify import MISSING as MISSING
from .audit_verify import TRUNCATED as TRUNCATED
from .audit_verify import AuditVerification, check_anchor, verify_chain
from .catalog import is_postgres
from .errors import CatalogError
from .text import check_text

AUDIT_LOCK: Final = 0x6661636569647802  # PostgreSQL advisory lock serialising appends from every process
# An audit record is metadata; a body this large is almost certainly image data smuggled in by mistake.
MAX_DETAILS_BYTES: Final = 1 << 20

# The actions faceindex writes (others are accepted, so plug-ins can audit their own operations).
ACTIONS: Final = (
    "search",
    "verify",
    "access",
    "erase",
    "optout.add",
    "optout.remove",
    "export",
    "delete",
    "policy.change",
    "retention.apply",
)


def key_actor(name: str, key_id: int | str) -> str:
    """The actor recorded for a request made with an API key: "<key name> (key <id>)"."""
    return f"{name} (key {key_id})"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _iso(moment: datetime) -> str:
    # Stored times all have this exact shape, so string order is time order.
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One audit record as stored: its content, its place in the chain and its hash."""

    seq: int
    time: str  # UTC ISO-8601 with microseconds
    actor: str
    role: str
    action: str
    purpose: str | None
    case_ref: str | None
    details: dict[str, Any] = field(hash=False)
    prev_hash: str
    hash: str

    @property
    def timestamp(self) -> datetime:
        """`time` as an aware UTC datetime."""
        return datetime.fromisoformat(self.time)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (for exports and API responses)."""
        return {
            "seq": self.seq,
            "time": self.time,
            "actor": self.actor,
            "role": self.role,
            "action": self.action,
            "purpose": self.purpose,
            "case_ref": self.case_ref,
            "details": self.details,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


class AuditLog:
    """The audit log of one data folder: append records, query them, verify the chain.

    Safe to share between threads; several processes may append to the same file at once (each append
    takes SQLite's write lock, so the chain never forks). Use as a context manager or call close().
    """

    def __init__(self, path: str | Path, *, key: bytes | None = None) -> None:
        """Open (creating if needed) the audit log at `path`; CatalogError if it is unreadable or corrupt.

        `path` may also be a postgresql:// URL: the log's tables then live in that database (the catalog's),
        with the same triggers and chain; appends from every process take one advisory lock in turn.

        With `key` the log is keyed (HMAC-SHA256): a new log is created keyed, and an existing one must have
        been created with the same key. AuditKeyError when a keyed log is opened without its key, with
        another key, or a plain log with a key.
        """
        self._lock = threading.RLock()
        self._db: Any = None
        self._key = key
        self.mode = KEYED if key is not None else PLAIN
        # Set by faceindex.anchor: called with (seq, hash) after every append, and asked for the anchored head
        # that verify() checks when it is given none.
        self.on_append: Callable[[int, str], None] | None = None
        self.anchor: Callable[[], tuple[int, str] | None] | None = None
        self._errors: tuple[type[BaseException], ...] = (sqlite3.Error,)
        self.postgres = is_postgres(path)
        if self.postgres:
            self._open_postgres(str(path))
            return
        self.path: Path | str = Path(path)
        try:
            db = sqlite3.connect(str(self.path), timeout=60.0, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as e:
            raise CatalogError(f"cannot open audit log {self.path}: {e}") from e
        try:
            db.execute("PRAGMA journal_mode=WAL")
            # An audit record that a power cut can take back is worth little: fsync every commit.
            db.execute("PRAGMA synchronous=FULL")
            self._db = db
            self._setup()
        except (sqlite3.Error, CatalogError) as e:
            db.close()
            self._db = None
            if isinstance(e, CatalogError):
                raise
            raise CatalogError(f"cannot open audit log {self.path}: {e}") from e

    def _open_postgres(self, url: str) -> None:
        import psycopg

        from .catalog.postgres import PgConnection, redact

        self.path = f"in {redact(url)}"
        self._errors = (sqlite3.Error, psycopg.Error)
        db = PgConnection(url, identity=False)
        try:
            self._db = db
            self._setup()
        except BaseException as e:
            db.close()
            self._db = None
            if isinstance(e, psycopg.Error):
                raise CatalogError(f"cannot open audit log {self.path}: {' '.join(str(e).split())}") from e
            raise

    # --- plumbing ----------------------------------------------------------------------------------------

    def _conn(self) -> Any:
        if self._db is None:
            raise CatalogError(f"audit log {self.path} is closed")
        return self._db

    @contextmanager
    def _guard(self, doing: str) -> Iterator[None]:
        try:
            yield
        except self._errors as e:
            raise CatalogError(f"audit log {self.path}: cannot {doing}: {' '.join(str(e).split())}") from e

    @contextmanager
    def _transaction(self, mode: str = "DEFERRED") -> Iterator[sqlite3.Connection]:
        # DEFERRED for reads (one consistent snapshot under WAL), IMMEDIATE for writes (take the write lock
        # before reading the head, so two appenders can never chain onto the same record).
        db = self._conn()
        if not self.postgres:
            db.execute(f"BEGIN {mode}")
        elif mode == "IMMEDIATE":
            db.execute("BEGIN")
            db.execute(f"SELECT pg_advisory_xact_lock({AUDIT_LOCK})")
        else:
            db.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")  # one snapshot, as SQLite's WAL read gives
        try:
            yield db
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def _setup(self) -> None:
        with self._transaction("IMMEDIATE") as db:
            (setup_postgres if self.postgres else setup_sqlite)(db, self.path, self.mode, self._key)

    @staticmethod
    def _record(row: tuple[Any, ...]) -> AuditRecord:
        seq, time, actor, role, action, purpose, case_ref, body, prev_hash, hash_ = row
        try:
            details = json.loads(body)
        except (TypeError, ValueError) as e:
            raise CatalogError(f"audit record {seq} is unreadable (run `verify`): {e}") from e
        return AuditRecord(seq, time, actor, role, action, purpose, case_ref, details, prev_hash, hash_)

    # --- writing -----------------------------------------------------------------------------------------

    def append(
        self,
        action: str,
        *,
        actor: str,
        role: str,
        purpose: str | None = None,
        case_ref: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> AuditRecord:
        """Append one record and return it as stored.

        `details` must be a JSON-serialisable dict (no bytes, no NaN); it is stored and hashed in canonical
        form, so tuples come back as lists. ValueError/TypeError for bad arguments, CatalogError when the
        file cannot be written (locked for over a minute, say, or its head record is gone).
        """
        for name, value in (("action", action), ("actor", actor), ("role", role)):
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"audit {name} must be a non-empty string, not {value!r}")
            check_text(value, f"audit {name}")  # no escape codes or bidi tricks reach an auditor's terminal
        for name, value in (("purpose", purpose), ("case_ref", case_ref)):
            if value is not None and not isinstance(value, str):
                raise TypeError(f"audit {name} must be a string or None, not {type(value).__name__}")
            check_text(value, f"audit {name}", optional=True)
        if details is None:
            details = {}
        if not isinstance(details, Mapping):
            raise TypeError(f"audit details must be a dict, not {type(details).__name__}")
        body = canonical_json(dict(details))
        if len(body.encode("utf-8")) > MAX_DETAILS_BYTES:
            raise ValueError(f"audit details are over {MAX_DETAILS_BYTES} bytes: records are metadata")
        canonical = json.loads(body)

        with self._lock, self._guard("append"), self._transaction("IMMEDIATE") as db:
            head = db.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
            if head is None:
                raise CatalogError(f"audit log {self.path} has lost its head record; run `verify`")
            seq, prev_hash = head[0] + 1, head[1]
            time = _now()
            hash_ = record_hash(
                seq=seq,
                time=time,
                actor=actor,
                role=role,
                action=action,
                purpose=purpose,
                case_ref=case_ref,
                details=canonical,
                prev_hash=prev_hash,
                key=self._key,
            )
            db.execute(
                f"INSERT INTO audit ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (seq, time, actor, role, action, purpose, case_ref, body, prev_hash, hash_),
            )
            db.execute("UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1", (seq, hash_))
        # Committed (and fsync'd: synchronous=FULL) before anyone learns of it; then the copy of the head kept
        # elsewhere follows. A crash in between leaves that copy one record behind, which is allowed.
        if self.on_append is not None:
            self.on_append(seq, hash_)
        return AuditRecord(seq, time, actor, role, action, purpose, case_ref, canonical, prev_hash, hash_)

    def record_at(self, seq: int) -> AuditRecord | None:
        """The record with sequence number `seq`, None when there is none."""
        with self._lock, self._guard("read a record"):
            row = self._conn().execute(f"SELECT {COLUMNS} FROM audit WHERE seq = ?", (seq,)).fetchone()
        return None if row is None else self._record(row)

    # --- reading -----------------------------------------------------------------------------------------

    def head(self) -> tuple[int, str]:
        """(seq, hash) of the last record, (0, 64 zeros) when empty: copy it elsewhere to anchor the log."""
        with self._lock, self._guard("read the head"), self._transaction() as db:
            row = db.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
        if row is None:
            raise CatalogError(f"audit log {self.path} has lost its head record; run `verify`")
        return int(row[0]), str(row[1])

    def count(self) -> int:
        """Number of records stored."""
        with self._lock, self._guard("count records"):
            return int(self._conn().execute("SELECT count(*) FROM audit").fetchone()[0])

    def query(
        self,
        *,
        case_ref: str | None = None,
        actor: str | None = None,
        action: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[AuditRecord]:
        """Records matching every filter given, in log order (newest first if asked).

        Filters are exact matches, except that `actor` also matches the actor's API keys: "alice" selects
        "alice" and the server's "alice (key 3)", "alice (key 7)". The time window is `since` <= time < `until`
        (naive datetimes are taken as UTC); `limit` caps how many records come back.
        Query does not verify: call verify() for that.
        """
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (("case_ref", case_ref), ("action", action)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if actor is not None:  # the name itself, or key_actor(name, N) for any key N
            prefix = key_actor(actor, "")[:-1]
            ends = "actor ~ '[0-9][)]$'" if self.postgres else "actor GLOB '*[0-9])'"
            clauses.append(f"(actor = ? OR (substr(actor, 1, ?) = ? AND {ends}))")
            params += [actor, len(prefix), prefix]
        if since is not None:
            clauses.append("time >= ?")
            params.append(_iso(since))
        if until is not None:
            clauses.append("time < ?")
            params.append(_iso(until))
        sql = f"SELECT {COLUMNS} FROM audit"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += " ORDER BY seq DESC" if newest_first else " ORDER BY seq"
        if limit is not None:
            if limit < 0:
                raise ValueError(f"limit must be >= 0, not {limit}")
            sql += " LIMIT ?"
            params.append(limit)
        with self._lock, self._guard("query records"):
            rows = self._conn().execute(sql, params).fetchall()
        return [self._record(row) for row in rows]

    # --- verifying ---------------------------------------------------------------------------------------

    def verify(self, expected_head: tuple[int, str] | None = None) -> AuditVerification:
        """Check every record's hash and link, the head, and (if given) an anchored head (seq, hash).

        Reads one consistent snapshot, so it can run while others append. Returns on the first problem,
        naming the first record that cannot be trusted; see the module docstring for what each check can
        and cannot catch.
        """
        if expected_head is None and self.anchor is not None:
            expected_head = self.anchor()
        anchor = check_anchor(expected_head) if expected_head is not None else None
        with self._lock, self._guard("verify"), self._transaction() as db:
            return verify_chain(db, self._key, anchor)

    # --- lifetime ----------------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the file; later calls raise CatalogError. Closing twice is harmless."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"AuditLog({str(self.path)!r})"
