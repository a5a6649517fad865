"""The audit head anchored in the catalog: a deleted, emptied, replaced or truncated audit log is noticed.

The audit log's own head row only catches records cut off its end while the head row survives. Whoever deletes
`audit.db`, replaces it with an empty file, deletes its WAL after a crash or truncates it and rewrites the head
leaves a valid-looking (shorter or empty) chain behind. So the catalog, a different file, keeps the last head it
saw (`meta.audit_anchor` = "SEQ:HASH"), advanced after every append (after the record is committed and fsync'd;
a crash in between leaves the anchor one record behind, which is allowed: the log may be ahead of the anchor,
never behind it). Every open cross-checks the two files: the log must exist, not be empty, reach the anchored
record and hold the anchored hash there, or `AuditTrailError` (exit code 8) stops the CLI and the server before
they do anything. `faceindex audit reset --reason ...` is the only way on: it keeps the old file aside, starts a
new chain whose first record names the old head and the reason, and re-anchors.

An optional key (FACEINDEX_AUDIT_KEY, or FACEINDEX_AUDIT_KEY_FILE outside the data folder) makes the chain an
HMAC chain, so that someone holding both files but not the key cannot forge records or re-anchor a rewrite.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from .audit import MISSING, ZERO_HASH, AuditLog, AuditRecord, AuditVerification
from .catalog import Catalog
from .config import Settings
from .errors import AuditTrailError, CatalogError, FaceIndexError
from .text import check_text

ANCHOR_META: Final = "audit_anchor"
MIN_KEY_BYTES: Final = 16
RESET_ACTION: Final = "audit.reset"
_HINT = "run `faceindex audit verify`; `faceindex audit reset --reason ...` starts a new, recorded chain"


def load_key(settings: Settings) -> bytes | None:
    """The audit key from FACEINDEX_AUDIT_KEY or FACEINDEX_AUDIT_KEY_FILE, None when neither is set.

    AuditTrailError for a key shorter than 16 bytes, an unreadable key file, or a key file inside the data
    folder (where it would protect nothing against whoever takes the folder).
    """
    if settings.audit_key is not None and settings.audit_key_file is not None:
        raise AuditTrailError("set FACEINDEX_AUDIT_KEY or FACEINDEX_AUDIT_KEY_FILE, not both")
    if settings.audit_key is not None:
        key = settings.audit_key.get_secret_value().strip().encode("utf-8")
        where = "FACEINDEX_AUDIT_KEY"
    elif settings.audit_key_file is not None:
        path = settings.audit_key_file.expanduser().resolve()
        data = settings.resolved_data()
        if path == data or data in path.parents:
            raise AuditTrailError(f"the audit key file {path} must be kept outside the data folder {data}")
        try:
            key = path.read_bytes().strip()
        except OSError as e:
            raise AuditTrailError(f"cannot read the audit key file {path}: {e.strerror or e}") from e
        where = f"the audit key file {path}"
    else:
        return None
    if len(key) < MIN_KEY_BYTES:
        raise AuditTrailError(f"{where} holds {len(key)} bytes; an audit key needs at least {MIN_KEY_BYTES}")
    return key


def read_anchor(catalog: Catalog) -> tuple[int, str] | None:
    """The audit head (seq, hash) the catalog last recorded; None for a catalog from before anchoring."""
    raw = catalog.get_meta(ANCHOR_META)
    if raw is None:
        return None
    seq, _, digest = raw.partition(":")
    if not seq.isdigit() or len(digest) != 64:
        raise AuditTrailError(f"the catalog's audit anchor {raw!r} is malformed; {_HINT}")
    return int(seq), digest


def advance(catalog: Catalog, seq: int, digest: str) -> None:
    """Record head (seq, digest) in the catalog unless it already holds a later one (appends from several
    processes may finish out of order)."""
    with catalog.transaction():  # the writer lock: read and write without another process in between
        held = catalog.get_meta(ANCHOR_META)
        held_seq = held.partition(":")[0] if held else ""
        if not held_seq.isdigit() or int(held_seq) < seq:
            catalog.set_meta(ANCHOR_META, f"{seq}:{digest}")


def _force(catalog: Catalog, seq: int, digest: str) -> None:
    with catalog.transaction():
        catalog.set_meta(ANCHOR_META, f"{seq}:{digest}")


def _attach(catalog: Catalog, log: AuditLog) -> AuditLog:
    log.on_append = lambda seq, digest: advance(catalog, seq, digest)
    log.anchor = lambda: read_anchor(catalog)
    return log


def _file_problem(path: Path | str, anchor: tuple[int, str] | None) -> str | None:
    """Why the audit file cannot be what the anchor says, judged before SQLite creates a fresh one. (A log in
    PostgreSQL, `path` a URL, is judged by its head alone: dropped tables come back empty, behind the anchor.)"""
    if not isinstance(path, Path) or anchor is None or anchor[0] == 0:
        return None
    if not path.exists():
        return f"audit log {path} is missing, but the catalog recorded its record {anchor[0]}"
    if path.is_file() and path.stat().st_size == 0:
        return f"audit log {path} is empty (0 bytes), but the catalog recorded its record {anchor[0]}"
    return None


def _head_problem(log: AuditLog, anchor: tuple[int, str]) -> str | None:
    """Why the open log does not hold the anchored head, or None when it does."""
    seq, digest = anchor
    head_seq, _ = log.head()
    if head_seq < seq:
        return (f"audit log {log.path} ends at record {head_seq}, but the catalog recorded record {seq}: records "
                "were removed, or the log was emptied or replaced")
    if seq == 0:
        return None
    rec = log.record_at(seq)
    if rec is None:
        return f"audit log {log.path} has lost record {seq}, which the catalog recorded"
    if rec.hash != digest:
        return (f"audit log {log.path} holds a different record {seq} from the one the catalog recorded: the log "
                "was rewritten or replaced")
    return None


def open_audit(catalog: Catalog, path: Path | str, key: bytes | None) -> AuditLog:
    """Open the audit log at `path`, cross-checked against the catalog's anchor; AuditTrailError if missing,
    empty, behind or rewritten. A catalog without an anchor (new, or made before anchoring) adopts the head."""
    anchor = read_anchor(catalog)
    problem = _file_problem(path, anchor)
    if problem:
        raise AuditTrailError(f"{problem}; {_HINT}")
    log = AuditLog(path, key=key)
    try:
        if anchor is None:
            _force(catalog, *log.head())
        else:
            problem = _head_problem(log, anchor)
            if problem:
                raise AuditTrailError(f"{problem}; {_HINT}")
    except CatalogError as e:
        log.close()
        if isinstance(e, AuditTrailError):
            raise
        raise AuditTrailError(f"{e}; {_HINT}") from e
    return _attach(catalog, log)


def verify(catalog: Catalog, path: Path | str, key: bytes | None,
           expected_head: tuple[int, str] | None = None) -> tuple[AuditVerification, tuple[int, str] | None]:
    """Verify the chain against the catalog's anchor (and `expected_head`, an external notary's copy, if given),
    without refusing a missing or behind log as opening does. Returns (verification, head of the log or None)."""
    anchor = read_anchor(catalog)
    problem = _file_problem(path, anchor)
    if problem:
        return AuditVerification(False, 0, 1, f"Missing log: {problem}.", MISSING), None
    with AuditLog(path, key=key) as log:
        result = log.verify(anchor)
        if result.ok and expected_head is not None:
            result = log.verify(expected_head)
        return result, log.head()


def reset(catalog: Catalog, path: Path | str, key: bytes | None, reason: str, *, actor: str,
          role: str) -> AuditRecord:
    """Start a new chain after an operator has looked at a broken or missing log (or to switch to keyed mode).

    The old file (and its WAL) is kept aside as `audit.db.replaced-<UTC time>`; record 1 of the new chain is an
    `audit.reset` naming the head the catalog had anchored, what was found, where the old file went and the
    reason; the catalog is re-anchored on it. Run it with the server stopped.
    """
    reason = check_text(reason, "the reason for the reset", max_len=500)
    anchored = read_anchor(catalog)
    found: str
    if not isinstance(path, Path):
        return _reset_postgres(catalog, path, key, reason, anchored, actor=actor, role=role)
    try:
        if _file_problem(path, anchored) or not path.exists():
            found = "missing" if not path.exists() else "empty file"
        else:
            found = _found(path, key, anchored)
    except FaceIndexError as e:
        found = f"unreadable: {e}"
    kept = None
    if path.exists():
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        kept = f"{path.name}.replaced-{stamp}"
        for suffix in ("", "-wal", "-shm"):
            old_part = path.with_name(path.name + suffix)
            if old_part.exists():
                os.replace(old_part, path.with_name(kept + suffix))
    log = AuditLog(path, key=key)
    try:
        rec = log.append(RESET_ACTION, actor=actor, role=role, details={
            "reason": reason, "anchored_head": f"{anchored[0]}:{anchored[1]}" if anchored else None,
            "found": found, "old_log_kept_as": kept, "mode": log.mode})
        _force(catalog, rec.seq, rec.hash)
    finally:
        log.close()
    return rec


def _found(target: Path | str, key: bytes | None, anchored: tuple[int, str] | None) -> str:
    """What a reset finds in the old log: its head, and the problem when it does not verify."""
    with AuditLog(target, key=key) as old:
        seq, digest = old.head()
        verdict = old.verify(anchored)
    return f"{seq}:{digest}" + ("" if verdict.ok else f" ({verdict.problem})")


def _reset_postgres(catalog: Catalog, url: str, key: bytes | None, reason: str,
                    anchored: tuple[int, str] | None, *, actor: str, role: str) -> AuditRecord:
    """reset() for a log in PostgreSQL: the old tables are renamed aside (audit_replaced_<time>_*)."""
    try:
        found = _found(url, key, anchored)
    except FaceIndexError as e:
        found = f"unreadable: {e}"
    stamp = datetime.now(UTC).strftime("%Y%m%dt%H%M%S%fz")
    kept = f"audit_replaced_{stamp}"
    with catalog.transaction() as db:
        for table in ("audit", "audit_head", "audit_info"):
            if db.execute("SELECT to_regclass(?)", (table,)).fetchone()[0] is not None:
                db.execute(f"ALTER TABLE {table} RENAME TO {kept}{table[5:]}")
        for index in ("audit_case_ref", "audit_actor", "audit_time"):
            if db.execute("SELECT to_regclass(?)", (index,)).fetchone()[0] is not None:
                db.execute(f"ALTER INDEX {index} RENAME TO {kept}_{index[6:]}")
    log = AuditLog(url, key=key)
    try:
        rec = log.append(RESET_ACTION, actor=actor, role=role, details={
            "reason": reason, "anchored_head": f"{anchored[0]}:{anchored[1]}" if anchored else None,
            "found": found, "old_log_kept_as": f"tables {kept}*", "mode": log.mode})
        _force(catalog, rec.seq, rec.hash)
    finally:
        log.close()
    return rec


__all__ = ["ANCHOR_META", "ZERO_HASH", "advance", "load_key", "open_audit", "read_anchor", "reset", "verify"]
