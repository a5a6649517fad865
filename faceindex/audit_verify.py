"""Verifying the audit chain: every record's hash and link, the head, and an anchored head.

`verify_chain` walks one consistent snapshot of the log in sequence order and stops at the first problem,
naming the first record that cannot be trusted and the kind of problem (`AuditVerification`). It reads; it
never writes. `audit.py` opens the log, takes the snapshot and calls it from `AuditLog.verify`; what each check
can and cannot catch is explained in that module's docstring.
"""

from __future__ import annotations

import json
import re
import sqlite3
from dataclasses import dataclass
from typing import Any, Final

from .audit_format import COLUMNS, ZERO_HASH, record_hash

# Kinds of problem AuditVerification.kind can name.
EDITED: Final = "edited content"
BAD_LINK: Final = "bad link"
GAP: Final = "sequence gap"
TRUNCATED: Final = "truncated tail"
HEAD_MISMATCH: Final = "head mismatch"
MISSING: Final = "missing log"  # the file is gone or empty while the catalog anchored records (faceindex.anchor)

_HASH_RE = re.compile(r"[0-9a-f]{64}")


def _span(first: int, last: int, verb: str = "") -> str:
    """'record 5' / 'records 5 to 7', followed by `verb` ("was" or "is") agreeing in number."""
    text = f"record {first}" if first == last else f"records {first} to {last}"
    if verb:
        text += " " + (verb if first == last else {"was": "were", "is": "are"}[verb])
    return text


@dataclass(frozen=True, slots=True)
class AuditVerification:
    """Outcome of AuditLog.verify.

    `first_bad_seq` is the first record that cannot be trusted (for a deletion: the first missing one),
    None when the log is intact or the problem belongs to no record; `problem` is one sentence naming it
    and the kind of problem; `kind` is that kind alone (EDITED, BAD_LINK, GAP, TRUNCATED, HEAD_MISMATCH).
    """

    ok: bool
    records_checked: int
    first_bad_seq: int | None = None
    problem: str | None = None
    kind: str | None = None


@dataclass(frozen=True, slots=True)
class _Row:
    seq: int
    time: str
    actor: str
    role: str
    action: str
    purpose: str | None
    case_ref: str | None
    body: str
    prev_hash: str
    hash: str

    def content_ok(self, key: bytes | None = None) -> bool:
        """Whether the stored hash is the hash of the stored content (and prev_hash)."""
        try:
            details = json.loads(self.body)
            return isinstance(details, dict) and self.hash == record_hash(
                seq=self.seq,
                time=self.time,
                actor=self.actor,
                role=self.role,
                action=self.action,
                purpose=self.purpose,
                case_ref=self.case_ref,
                details=details,
                prev_hash=self.prev_hash,
                key=key,
            )
        except (TypeError, ValueError):
            return False


def verify_chain(db: sqlite3.Connection, key: bytes | None, anchor: tuple[int, str] | None) -> AuditVerification:
    """Walk the log in `db` (inside one read transaction): the first problem found, or ok with the count.

    `key` is the keyed log's HMAC key (None for a plain log); `anchor` a checked (seq, hash) or None.
    """
    head = db.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
    rows = db.execute(f"SELECT {COLUMNS} FROM audit ORDER BY seq")
    try:
        return _walk(db, rows, head, key, anchor)
    finally:
        rows.close()


def _walk(
    db: sqlite3.Connection,
    rows: sqlite3.Cursor,
    head: tuple[Any, ...] | None,
    key: bytes | None,
    anchor: tuple[int, str] | None,
) -> AuditVerification:
    checked = 0
    prev: _Row | None = None
    anchored_hash = ZERO_HASH if anchor is not None and anchor[0] == 0 else None

    def bad(kind: str, first_bad: int | None, problem: str) -> AuditVerification:
        return AuditVerification(False, checked, first_bad, problem, kind)

    for values in rows:
        row = _Row(*values)
        expected_seq = prev.seq + 1 if prev else 1
        if row.seq != expected_seq:
            if row.seq < expected_seq:
                return bad(
                    GAP, row.seq, f"Sequence gap at record {row.seq}: sequence numbers start at 1."
                )
            missing = _span(expected_seq, row.seq - 1, "is")
            after = (
                f"record {row.seq} follows record {prev.seq}" if prev else f"the log starts at {row.seq}"
            )
            return bad(
                GAP,
                expected_seq,
                f"Sequence gap at record {expected_seq}: {missing} missing (deleted); {after}.",
            )
        content_ok = row.content_ok(key)
        if row.prev_hash != (prev.hash if prev else ZERO_HASH):
            first_bad, problem = _diagnose_link(db, row, prev, content_ok)
            return bad(BAD_LINK, first_bad, problem)
        if not content_ok:
            return bad(
                EDITED,
                row.seq,
                f"Edited content at record {row.seq}: its fields no longer match "
                "its hash, so it was changed after it was written.",
            )
        checked += 1
        if anchor is not None and row.seq == anchor[0]:
            anchored_hash = row.hash
        prev = row

    last_seq, last_hash = (prev.seq, prev.hash) if prev else (0, ZERO_HASH)
    if head is None:
        return bad(
            HEAD_MISMATCH,
            None,
            "Head mismatch: the head record is missing, so records cut off the "
            "end of the log cannot be ruled out.",
        )
    head_seq, head_hash = head
    if head_seq > last_seq:
        return bad(
            TRUNCATED,
            last_seq + 1,
            f"Truncated tail at record {last_seq + 1}: the head says the log "
            f"ends at record {head_seq} but it ends at record {last_seq}; "
            f"{_span(last_seq + 1, head_seq, 'was')} removed.",
        )
    if head_seq < last_seq:
        return bad(
            HEAD_MISMATCH,
            head_seq + 1,
            f"Head mismatch at record {head_seq + 1}: the head says the "
            f"log ends at record {head_seq}, so {_span(head_seq + 1, last_seq, 'was')} added behind "
            "its back.",
        )
    if head_hash != last_hash:
        return bad(
            HEAD_MISMATCH,
            last_seq,
            f"Head mismatch at record {last_seq}: its hash differs from the "
            "head's, so it was rewritten after it was written.",
        )
    if anchor is not None:
        anchor_seq, anchor_hash = anchor
        if anchor_seq > last_seq:
            return bad(
                TRUNCATED,
                last_seq + 1,
                f"Truncated tail at record {last_seq + 1}: the anchored head "
                f"is record {anchor_seq} but the log ends at record {last_seq}; "
                f"{_span(last_seq + 1, anchor_seq, 'was')} removed and the head rewritten.",
            )
        if anchored_hash != anchor_hash:
            return bad(
                HEAD_MISMATCH,
                anchor_seq,
                f"Head mismatch at record {anchor_seq}: its hash differs "
                f"from the anchored head, so the log was rewritten at or before record {anchor_seq} "
                "and every later hash recomputed.",
            )
    return AuditVerification(True, checked)


def _diagnose_link(
    db: sqlite3.Connection, row: _Row, prev: _Row | None, content_ok: bool
) -> tuple[int, str]:
    """Name the first untrustworthy record when `row` does not link to the record before it."""
    seq = row.seq
    before = f"record {prev.seq}" if prev else "the start of the log"
    # Does it link to some other record still in the log? Then records were inserted or moved.
    hit = db.execute(
        "SELECT seq FROM audit WHERE hash = ? AND seq <> ? ORDER BY seq LIMIT 1", (row.prev_hash, seq)
    ).fetchone()
    if hit is not None and hit[0] > seq:
        return seq, (
            f"Bad link at record {seq}: it links to record {hit[0]}, which comes after it, so "
            "records were reordered."
        )
    if hit is not None:
        first = hit[0] + 1
        return first, (
            f"Bad link at record {first}: record {seq} links back to record {hit[0]}, so "
            f"{_span(first, seq - 1, 'was')} inserted into the chain (or records were reordered)."
        )
    if content_ok:
        # `row` still matches its own hash, and its seq is part of that hash: it is the record written
        # at this place, and the record before it is not the one it was chained to.
        if prev is None:
            return seq, (
                f"Bad link at record {seq}: it does not start the chain (its prev_hash is not 64 "
                "zeros), so it was forged or the records before it were deleted and rehashed."
            )
        return prev.seq, (
            f"Bad link at record {prev.seq}: record {seq} was chained to a different record "
            f"{prev.seq}, so record {prev.seq} was rewritten with a recomputed hash or "
            "replaced (or a record after it was deleted and the rest rehashed)."
        )
    return seq, (
        f"Bad link at record {seq}: it does not link to {before} and no longer matches its own "
        f"hash, so the original record {seq} was deleted and later records renumbered, or "
        "records were moved or forged here."
    )


def check_anchor(expected_head: tuple[int, str]) -> tuple[int, str]:
    """`expected_head` as a checked (seq, hash); ValueError naming what is wrong with it."""
    try:
        seq, hash_ = expected_head
    except (TypeError, ValueError):
        raise ValueError(f"expected_head must be (seq, hash), not {expected_head!r}") from None
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        raise ValueError(f"expected_head seq must be an integer >= 0, not {seq!r}")
    if not isinstance(hash_, str) or not _HASH_RE.fullmatch(hash_):
        raise ValueError(f"expected_head hash must be 64 lowercase hex digits, not {hash_!r}")
    return seq, hash_
