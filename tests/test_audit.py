"""The audit log: hash chain, append-only triggers, queries, concurrent appends, and what verify() says
about each way someone holding the file could tamper with it."""

from __future__ import annotations

import json
import multiprocessing
import re
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from faceindex.audit import (
    BAD_LINK,
    EDITED,
    GAP,
    HEAD_MISMATCH,
    TRUNCATED,
    ZERO_HASH,
    AuditLog,
    AuditRecord,
    AuditVerification,
    record_hash,
)
from faceindex.errors import CatalogError

N = 10  # records in a filled log; tampering happens around record 5


def _details(i: int) -> dict[str, Any]:
    return {
        "probe_sha256": f"{i:064x}",
        "threshold": 0.6,
        "top_k": 10,
        "gallery": {"faces": 1000 + i, "generation": 7},
        "results": [[100 + i, 0.91], [200 + i, 0.55]],
    }


def _fill(log: AuditLog, n: int = N) -> list[AuditRecord]:
    return [
        log.append(
            "search",
            actor=f"analyst{i % 2}",
            role="analyst",
            purpose="missing person",
            case_ref=f"CASE-{i % 3}",
            details=_details(i),
        )
        for i in range(1, n + 1)
    ]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    """An audit log of N records, closed again so each test opens it as a later session would."""
    p = tmp_path / "audit.db"
    with AuditLog(p) as log:
        _fill(log)
    return p


def _verify(path: Path, expected_head: tuple[int, str] | None = None) -> AuditVerification:
    with AuditLog(path) as log:
        return log.verify(expected_head=expected_head)


def _head(path: Path) -> tuple[int, str]:
    with AuditLog(path) as log:
        return log.head()


@contextmanager
def attacker(path: Path) -> Iterator[sqlite3.Connection]:
    """A raw connection with every trigger dropped, as someone holding the file would do."""
    db = sqlite3.connect(str(path), isolation_level=None)
    try:
        for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
            db.execute(f"DROP TRIGGER {name}")
        db.execute("BEGIN")
        yield db
        db.execute("COMMIT")
    finally:
        db.close()


def _rehash(db: sqlite3.Connection, seq: int, prev_hash: str | None = None) -> str:
    """Recompute record `seq`'s own hash from its stored content (relinking it if asked), as a forger would."""
    row = db.execute(
        "SELECT time, actor, role, action, purpose, case_ref, body, prev_hash FROM audit WHERE seq = ?", (seq,)
    ).fetchone()
    time, actor, role, action, purpose, case_ref, body, old_prev = row
    prev = old_prev if prev_hash is None else prev_hash
    new = record_hash(
        seq=seq,
        time=time,
        actor=actor,
        role=role,
        action=action,
        purpose=purpose,
        case_ref=case_ref,
        details=json.loads(body),
        prev_hash=prev,
    )
    db.execute("UPDATE audit SET prev_hash = ?, hash = ? WHERE seq = ?", (prev, new, seq))
    return new


def _hash_of(db: sqlite3.Connection, seq: int) -> str:
    return db.execute("SELECT hash FROM audit WHERE seq = ?", (seq,)).fetchone()[0]


def _assert_bad(v: AuditVerification, kind: str, first_bad: int | None) -> None:
    assert not v.ok, v
    assert v.kind == kind, v
    assert v.first_bad_seq == first_bad, v
    assert v.problem and v.problem.lower().startswith(kind), v
    if first_bad is not None:
        assert f"record {first_bad}" in v.problem, v


# --- writing and the intact chain ----------------------------------------------------------------------------


def test_append_chains_records_and_verifies(tmp_path: Path) -> None:
    with AuditLog(tmp_path / "audit.db") as log:
        recs = _fill(log)
        assert [r.seq for r in recs] == list(range(1, N + 1))
        assert recs[0].prev_hash == ZERO_HASH
        for before, after in zip(recs, recs[1:]):
            assert after.prev_hash == before.hash
        for r in recs:
            assert r.hash == record_hash(
                seq=r.seq,
                time=r.time,
                actor=r.actor,
                role=r.role,
                action=r.action,
                purpose=r.purpose,
                case_ref=r.case_ref,
                details=r.details,
                prev_hash=r.prev_hash,
            )
        assert len({r.hash for r in recs}) == N
        assert log.count() == N
        assert log.head() == (N, recs[-1].hash)
        assert log.verify() == AuditVerification(ok=True, records_checked=N)
        assert log.query() == recs  # what comes back is what was stored


def test_schema_is_wal_with_the_documented_columns(path: Path) -> None:
    db = sqlite3.connect(str(path))
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        cols = [r[1] for r in db.execute("PRAGMA table_info(audit)")]
        assert cols == [
            "seq", "time", "actor", "role", "action", "purpose", "case_ref", "body", "prev_hash", "hash"
        ]  # fmt: skip
        assert db.execute("SELECT seq, hash FROM audit_head").fetchall() == [
            (N, db.execute("SELECT hash FROM audit WHERE seq = ?", (N,)).fetchone()[0])
        ]
    finally:
        db.close()


def test_time_is_utc_with_microseconds(tmp_path: Path) -> None:
    before = datetime.now(UTC)
    with AuditLog(tmp_path / "audit.db") as log:
        rec = log.append("verify", actor="a", role="analyst")
    after = datetime.now(UTC)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00", rec.time), rec.time
    assert rec.timestamp.utcoffset() == timedelta(0)
    assert before <= rec.timestamp <= after


def test_details_are_stored_canonically(tmp_path: Path) -> None:
    p = tmp_path / "audit.db"
    with AuditLog(p) as log:
        rec = log.append("access", actor="a", role="admin", details={"b": "é", "a": (1, 2)})
        assert rec.details == {"a": [1, 2], "b": "é"}  # as hashed, tuples become lists
        assert log.query()[0].details == rec.details
    db = sqlite3.connect(str(p))
    try:
        assert db.execute("SELECT body FROM audit").fetchone()[0] == '{"a":[1,2],"b":"é"}'
    finally:
        db.close()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"details": {"image": b"\xff\xd8\xff"}}, TypeError, "bytes"),
        ({"details": {"score": float("nan")}}, ValueError, "JSON"),
        ({"details": {"when": datetime.now(UTC)}}, TypeError, "JSON-serialisable"),
        ({"details": ["not", "a", "dict"]}, TypeError, "dict"),
        ({"actor": ""}, ValueError, "actor"),
        ({"role": "  "}, ValueError, "role"),
        ({"case_ref": 42}, TypeError, "case_ref"),
    ],
)
def test_bad_records_are_refused_and_nothing_is_written(
    tmp_path: Path, kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    args: dict[str, Any] = {"actor": "a", "role": "analyst"} | kwargs
    with AuditLog(tmp_path / "audit.db") as log:
        with pytest.raises(error, match=match):
            log.append("search", **args)
        assert log.count() == 0
        assert log.head() == (0, ZERO_HASH)


def test_empty_log_verifies(tmp_path: Path) -> None:
    with AuditLog(tmp_path / "audit.db") as log:
        assert log.count() == 0
        assert log.head() == (0, ZERO_HASH)
        assert log.query() == []
        assert log.verify() == AuditVerification(ok=True, records_checked=0)
        assert log.verify(expected_head=(0, ZERO_HASH)).ok
        # An anchor the empty log never reached is a truncation.
        _assert_bad(log.verify(expected_head=(3, "a" * 64)), TRUNCATED, 1)


def test_reopening_continues_the_chain(path: Path) -> None:
    head = _head(path)
    with AuditLog(path) as log:
        rec = log.append("export", actor="dpo", role="admin", case_ref="SAR-1")
        assert (rec.seq, rec.prev_hash) == (head[0] + 1, head[1])
        assert log.verify() == AuditVerification(ok=True, records_checked=N + 1)


# --- SQL-level protection ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE audit SET actor = 'mallory' WHERE seq = 5",
        "UPDATE audit SET seq = 100 WHERE seq = 10",
        "DELETE FROM audit WHERE seq = 5",
        "DELETE FROM audit",
        "DELETE FROM audit_head",
        "UPDATE audit_head SET seq = 3",
        "UPDATE audit_head SET seq = 11, hash = 'x'",
    ],
)
def test_triggers_refuse_rewriting_history(path: Path, sql: str) -> None:
    with AuditLog(path) as log:
        before = [r.as_dict() for r in log.query()]
    db = sqlite3.connect(str(path), isolation_level=None)
    try:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            db.execute(sql)
    finally:
        db.close()
    with AuditLog(path) as log:
        assert [r.as_dict() for r in log.query()] == before
        assert log.verify().ok


def test_opening_rearms_dropped_triggers(path: Path) -> None:
    with attacker(path):
        pass  # triggers dropped
    AuditLog(path).close()
    db = sqlite3.connect(str(path), isolation_level=None)
    try:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            db.execute("DELETE FROM audit WHERE seq = 1")
    finally:
        db.close()


# --- tampering, with the triggers dropped --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("actor", "mallory"),
        ("action", "verify"),
        ("purpose", None),
        ("case_ref", "CASE-OTHER"),
        ("time", "2020-01-01T00:00:00.000000+00:00"),
        ("body", '{"probe_sha256":"00","results":[]}'),
        ("body", "not json at all"),
    ],
)
def test_edited_field_is_detected(path: Path, column: str, value: str | None) -> None:
    with attacker(path) as db:
        db.execute(f"UPDATE audit SET {column} = ? WHERE seq = 5", (value,))
    v = _verify(path)
    _assert_bad(v, EDITED, 5)
    assert v.records_checked == 4


def test_deleted_middle_record_is_a_sequence_gap(path: Path) -> None:
    with attacker(path) as db:
        db.execute("DELETE FROM audit WHERE seq = 5")
    v = _verify(path)
    _assert_bad(v, GAP, 5)
    assert "record 5 is missing" in v.problem
    assert v.records_checked == 4


def test_deleted_first_records_are_a_sequence_gap(path: Path) -> None:
    with attacker(path) as db:
        db.execute("DELETE FROM audit WHERE seq <= 2")
    _assert_bad(_verify(path), GAP, 1)


def test_deleted_and_renumbered_record_is_a_bad_link(path: Path) -> None:
    with attacker(path) as db:
        db.execute("DELETE FROM audit WHERE seq = 5")
        for seq in range(6, N + 1):
            db.execute("UPDATE audit SET seq = ? WHERE seq = ?", (seq - 1, seq))
        db.execute("UPDATE audit_head SET seq = ?", (N - 1,))
    v = _verify(path)
    _assert_bad(v, BAD_LINK, 5)
    assert "deleted" in v.problem
    assert v.records_checked == 4


def test_inserted_forged_record_is_named(path: Path) -> None:
    with attacker(path) as db:
        for seq in range(N, 4, -1):  # make room at 5, from the top down so seqs never collide
            db.execute("UPDATE audit SET seq = ? WHERE seq = ?", (seq + 1, seq))
        prev = _hash_of(db, 4)
        forged = {
            "seq": 5,
            "time": "2024-01-01T00:00:00.000000+00:00",
            "actor": "alibi",
            "role": "analyst",
            "action": "search",
            "purpose": "routine",
            "case_ref": "CASE-FAKE",
            "details": {},
            "prev_hash": prev,
        }
        db.execute(
            "INSERT INTO audit (seq, time, actor, role, action, purpose, case_ref, body, prev_hash, hash) "
            "VALUES (5, ?, ?, ?, ?, ?, ?, '{}', ?, ?)",
            (
                forged["time"],
                forged["actor"],
                forged["role"],
                forged["action"],
                forged["purpose"],
                forged["case_ref"],
                prev,
                record_hash(**forged),
            ),
        )
        db.execute("UPDATE audit_head SET seq = ?", (N + 1,))
    v = _verify(path)
    _assert_bad(v, BAD_LINK, 5)
    assert "inserted" in v.problem


def test_swapped_records_are_reordering(path: Path) -> None:
    with attacker(path) as db:
        db.execute("UPDATE audit SET seq = -1 WHERE seq = 5")
        db.execute("UPDATE audit SET seq = 5 WHERE seq = 6")
        db.execute("UPDATE audit SET seq = 6 WHERE seq = -1")
    v = _verify(path)
    _assert_bad(v, BAD_LINK, 5)
    assert "reordered" in v.problem
    assert v.records_checked == 4


def test_truncated_tail_is_detected_by_the_head(path: Path) -> None:
    with attacker(path) as db:
        db.execute("DELETE FROM audit WHERE seq >= 8")
    v = _verify(path)
    _assert_bad(v, TRUNCATED, 8)
    assert "records 8 to 10" in v.problem
    assert v.records_checked == 7  # what is left is itself a valid chain


def test_edited_record_with_recomputed_hash_breaks_the_next_link(path: Path) -> None:
    with attacker(path) as db:
        db.execute("UPDATE audit SET actor = 'mallory' WHERE seq = 5")
        _rehash(db, 5)
    v = _verify(path)
    _assert_bad(v, BAD_LINK, 5)  # record 6 committed to the old hash of 5: 5 is the one rewritten
    assert "rewritten" in v.problem
    assert v.records_checked == 5


def test_edited_last_record_with_recomputed_hash_is_a_head_mismatch(path: Path) -> None:
    with attacker(path) as db:
        db.execute("UPDATE audit SET case_ref = 'CASE-OTHER' WHERE seq = ?", (N,))
        _rehash(db, N)
    _assert_bad(_verify(path), HEAD_MISMATCH, N)


def test_record_appended_behind_the_heads_back_is_detected(path: Path) -> None:
    with attacker(path) as db:
        db.execute(
            "INSERT INTO audit (seq, time, actor, role, action, body, prev_hash, hash) "
            "VALUES (?, '2024-01-01T00:00:00.000000+00:00', 'x', 'analyst', 'search', '{}', ?, 'tbd')",
            (N + 1, _hash_of(db, N)),
        )
        _rehash(db, N + 1)
    _assert_bad(_verify(path), HEAD_MISMATCH, N + 1)


def test_missing_head_is_detected_and_stops_appends(path: Path) -> None:
    with attacker(path) as db:
        db.execute("DELETE FROM audit_head")
    with AuditLog(path) as log:  # reopening must not quietly recreate the head
        _assert_bad(log.verify(), HEAD_MISMATCH, None)
        with pytest.raises(CatalogError, match="head"):
            log.append("search", actor="a", role="analyst")
        with pytest.raises(CatalogError, match="head"):
            log.head()


def _rewrite_consistently(path: Path, from_seq: int) -> None:
    """Change record `from_seq`, then recompute every later hash and link and the head."""
    with attacker(path) as db:
        db.execute("UPDATE audit SET actor = 'mallory' WHERE seq = ?", (from_seq,))
        prev = _hash_of(db, from_seq - 1) if from_seq > 1 else ZERO_HASH
        last = db.execute("SELECT max(seq) FROM audit").fetchone()[0]
        for seq in range(from_seq, last + 1):
            prev = _rehash(db, seq, prev_hash=prev)
        db.execute("UPDATE audit_head SET seq = ?, hash = ?", (last, prev))


def test_consistent_rewrite_is_caught_only_by_an_anchored_head(path: Path) -> None:
    anchor = _head(path)  # copied somewhere the attacker cannot reach
    with AuditLog(path) as log:
        early = (3, log.query()[2].hash), (2, log.query()[1].hash)
    _rewrite_consistently(path, from_seq=3)

    assert _verify(path) == AuditVerification(ok=True, records_checked=N)  # the chain alone cannot tell
    assert _head(path) != anchor
    v = _verify(path, expected_head=anchor)
    _assert_bad(v, HEAD_MISMATCH, N)
    assert "anchored" in v.problem
    # Any anchor at or after the rewritten record catches it; one before it still holds.
    _assert_bad(_verify(path, expected_head=early[0]), HEAD_MISMATCH, 3)
    assert _verify(path, expected_head=early[1]).ok


def test_truncation_with_rewritten_head_is_caught_by_an_anchor(path: Path) -> None:
    anchor = _head(path)
    with attacker(path) as db:
        db.execute("DELETE FROM audit WHERE seq >= 8")
        db.execute("UPDATE audit_head SET seq = 7, hash = ?", (_hash_of(db, 7),))
    assert _verify(path).ok
    _assert_bad(_verify(path, expected_head=anchor), TRUNCATED, 8)


def test_anchor_stays_valid_as_the_log_grows(path: Path) -> None:
    anchor = _head(path)
    with AuditLog(path) as log:
        _fill(log, 5)
        assert log.verify(expected_head=anchor) == AuditVerification(ok=True, records_checked=N + 5)
        assert not log.verify(expected_head=(anchor[0], "f" * 64)).ok


@pytest.mark.parametrize(
    "anchor", [(1,), "nonsense", (-1, ZERO_HASH), (True, ZERO_HASH), ("1", ZERO_HASH), (1, "xyz"), (1, "A" * 64)]
)
def test_malformed_anchor_is_refused(path: Path, anchor: Any) -> None:
    with AuditLog(path) as log, pytest.raises(ValueError, match="expected_head"):
        log.verify(expected_head=anchor)


# --- queries -------------------------------------------------------------------------------------------------


def test_query_filters(tmp_path: Path) -> None:
    with AuditLog(tmp_path / "audit.db") as log:
        recs = _fill(log)
        recs.append(log.append("optout.add", actor="dpo", role="admin", case_ref="CASE-1"))
        recs.append(log.append("export", actor="dpo", role="admin", case_ref="SAR-9", details={"n": 3}))

        def seqs(**kw: Any) -> list[int]:
            return [r.seq for r in log.query(**kw)]

        assert seqs(case_ref="CASE-1") == [r.seq for r in recs if r.case_ref == "CASE-1"] == [1, 4, 7, 10, 11]
        assert seqs(actor="analyst0") == [2, 4, 6, 8, 10]
        assert seqs(action="export") == [12]
        assert seqs(actor="dpo", case_ref="CASE-1") == [11]
        assert seqs(actor="dpo", action="search") == []
        assert seqs(case_ref="nope") == []
        assert seqs(limit=3) == [1, 2, 3]
        assert seqs(newest_first=True, limit=2) == [12, 11]
        assert seqs(limit=0) == []
        with pytest.raises(ValueError, match="limit"):
            log.query(limit=-1)

        since = recs[5].timestamp
        assert seqs(since=since) == [r.seq for r in recs if r.timestamp >= since]
        assert seqs(until=since) == [r.seq for r in recs if r.timestamp < since]
        assert 6 in seqs(since=since) and 6 not in seqs(until=since)
        # The same instant, naive (taken as UTC) or in another zone, selects the same records.
        assert seqs(since=since.replace(tzinfo=None)) == seqs(since=since)
        assert seqs(since=since.astimezone(timezone(timedelta(hours=5, minutes=30)))) == seqs(since=since)
        assert seqs(since=recs[0].timestamp, until=recs[-1].timestamp + timedelta(seconds=1)) == seqs()
        assert seqs(since=datetime.now(UTC) + timedelta(days=1)) == []
        assert log.query(action="export")[0].details == {"n": 3}

        # a key holder's records, as the server names them ("name (key N)"), are found by the key's name
        log.append("search", actor="dpo (key 7)", role="investigator")
        log.append("search", actor="dpo (keynote)", role="investigator")
        log.append("search", actor="dpo%_ (key 8)", role="investigator")
        assert seqs(actor="dpo") == [11, 12, 13]
        assert seqs(actor="dpo (key 7)") == [13]
        assert seqs(actor="dpo%_") == [15]
        assert seqs(actor="dp") == []


def test_query_of_an_unreadable_record_raises_catalog_error(path: Path) -> None:
    with attacker(path) as db:
        db.execute("UPDATE audit SET body = 'garbage' WHERE seq = 2")
    with AuditLog(path) as log, pytest.raises(CatalogError, match="record 2"):
        log.query()


# --- concurrency ---------------------------------------------------------------------------------------------


def _append_many(path: str, actor: str, n: int, barrier: Any) -> None:
    with AuditLog(path) as log:
        barrier.wait(60)
        for i in range(n):
            log.append("search", actor=actor, role="analyst", details={"i": i})
            time.sleep(0.002)  # let the other process in between, so appends interleave


def test_concurrent_appends_from_two_processes_keep_one_chain(tmp_path: Path) -> None:
    p = tmp_path / "audit.db"
    AuditLog(p).close()
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    n = 50
    procs = [ctx.Process(target=_append_many, args=(str(p), f"worker{k}", n, barrier)) for k in range(2)]
    try:
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(timeout=120)
        assert [proc.exitcode for proc in procs] == [0, 0]
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
                proc.join(5)
    with AuditLog(p) as log:
        assert log.verify() == AuditVerification(ok=True, records_checked=2 * n)
        recs = log.query()
        assert [r.seq for r in recs] == list(range(1, 2 * n + 1))
        for k in range(2):  # each worker's records all there, in its own order
            assert [r.details["i"] for r in recs if r.actor == f"worker{k}"] == list(range(n))
        switches = sum(x.actor != y.actor for x, y in zip(recs, recs[1:]))
        assert switches > 1, "the two processes never interleaved, so the test did not exercise contention"
        assert log.head() == (2 * n, recs[-1].hash)


# --- unreadable files ----------------------------------------------------------------------------------------


def test_corrupt_file_raises_catalog_error(tmp_path: Path) -> None:
    p = tmp_path / "audit.db"
    p.write_bytes(b"this is not a database" * 100)
    with pytest.raises(CatalogError, match="audit log"):
        AuditLog(p)


def test_directory_or_missing_folder_raises_catalog_error(tmp_path: Path) -> None:
    with pytest.raises(CatalogError):
        AuditLog(tmp_path)
    with pytest.raises(CatalogError):
        AuditLog(tmp_path / "no" / "such" / "audit.db")


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "audit.db"
    AuditLog(p).close()
    db = sqlite3.connect(str(p))
    db.execute("PRAGMA user_version = 99")
    db.commit()
    db.close()
    with pytest.raises(CatalogError, match="version 99"):
        AuditLog(p)


def test_closed_log_raises_catalog_error(tmp_path: Path) -> None:
    with AuditLog(tmp_path / "audit.db") as log:
        log.append("search", actor="a", role="analyst")
    log.close()  # closing twice is harmless
    with pytest.raises(CatalogError, match="closed"):
        log.append("search", actor="a", role="analyst")
    with pytest.raises(CatalogError, match="closed"):
        log.verify()
