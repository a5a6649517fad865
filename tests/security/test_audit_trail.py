"""The audit trail cannot be silently reset: deleting, emptying, replacing or truncating audit.db, or deleting its
WAL after a crash, stops every command and the server (exit code 8) until an operator runs `audit reset`, which is
itself recorded; a keyed chain catches forged appends. No LFW needed: source changes make the records."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from faceindex.audit import ZERO_HASH, AuditLog, record_hash
from faceindex.errors import AuditTrailError

from .conftest import ENTRY, clean_env, cli

RECORDS = 4
KEY = "correct horse battery staple 42"


def _fill(data: Path, n: int = RECORDS, **settings) -> tuple[int, str]:
    from faceindex import FaceIndex

    with FaceIndex.open(data, **settings) as fi:
        for i in range(n):
            fi.set_source(f"src{i}", "consent")
        return fi.audit.head()


def _sql(path: Path, *statements: str) -> None:
    db = sqlite3.connect(str(path), isolation_level=None)
    try:
        for s in statements:
            db.execute(s)
    finally:
        db.close()


def _delete(data: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        (data / f"audit.db{suffix}").unlink(missing_ok=True)


def _zero_bytes(data: Path) -> None:
    _delete(data)
    (data / "audit.db").write_bytes(b"")


def _fresh_log(data: Path) -> None:
    _delete(data)
    AuditLog(data / "audit.db").close()


def _truncate_rewriting_head(data: Path) -> None:
    _sql(data / "audit.db", "DROP TRIGGER audit_no_delete", "DROP TRIGGER audit_head_forward_only",
         "DELETE FROM audit WHERE seq > 2",
         "UPDATE audit_head SET seq = 2, hash = (SELECT hash FROM audit WHERE seq = 2)")


def _empty(data: Path) -> None:
    _sql(data / "audit.db", "DROP TRIGGER audit_no_delete", "DROP TRIGGER audit_head_forward_only",
         "DELETE FROM audit", f"UPDATE audit_head SET seq = 0, hash = '{ZERO_HASH}'")


def _wal_deleted_after_crash(data: Path) -> None:
    # Records appended by a process killed before it closed the log are still in the WAL; deleting the WAL loses them.
    script = ("import os, signal, sys; from faceindex import FaceIndex; fi = FaceIndex.open(sys.argv[1]); "
              "[fi.set_source(f'late{i}', 'consent') for i in range(3)]; os.kill(os.getpid(), signal.SIGKILL)")
    p = subprocess.run([sys.executable, "-c", script, str(data)], env=clean_env(), capture_output=True, timeout=120)
    assert p.returncode == -signal.SIGKILL, p.stderr
    assert (data / "audit.db-wal").stat().st_size > 0
    (data / "audit.db-wal").unlink()
    (data / "audit.db-shm").unlink(missing_ok=True)


ATTACKS: dict[str, Callable[[Path], None]] = {
    "deleted": _delete,
    "zero-bytes": _zero_bytes,
    "replaced-by-a-fresh-log": _fresh_log,
    "truncated-with-head-rewritten": _truncate_rewriting_head,
    "emptied": _empty,
    "wal-deleted-after-crash": _wal_deleted_after_crash,
}


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_a_broken_log_stops_everything_until_a_recorded_reset(tmp_path: Path, attack: str) -> None:
    data = tmp_path / "data"
    before = _fill(data)
    ATTACKS[attack](data)

    for command in (["stats"], ["source", "list"], ["policy", "show"]):
        p = cli(data, *command)
        assert p.returncode == 8, (command, p.returncode, p.stdout, p.stderr)
        assert p.stderr.startswith("error: audit log") and p.stderr.count("\n") == 1, p.stderr
        assert "audit reset" in p.stderr
    with pytest.raises(AuditTrailError):
        _fill(data, 1)

    p = cli(data, "audit", "verify")  # no flags: the catalog's anchor is enough
    assert p.returncode == 1 and "TAMPERED" in p.stderr, (p.stdout, p.stderr)

    p = cli(data, "audit", "reset", "--reason", "   ")
    assert p.returncode == 2, p.stderr
    p = cli(data, "audit", "reset", "--reason", f"INC-9: audit.db {attack} found on the server")
    assert p.returncode == 0, p.stderr
    assert cli(data, "stats").returncode == 0
    p = cli(data, "audit", "verify")
    assert p.returncode == 0 and "intact: 1 records" in p.stdout, p.stdout
    first = AuditLog(data / "audit.db").query()[0]
    assert (first.seq, first.action) == (1, "audit.reset")
    anchored_seq = int(first.details["anchored_head"].split(":")[0])
    if attack.startswith("wal"):  # the killed process anchored the records the deleted WAL held
        assert anchored_seq == before[0] + 3
    else:
        assert first.details["anchored_head"] == f"{before[0]}:{before[1]}"
    assert first.details["reason"].startswith("INC-9")
    if attack != "deleted":
        assert (data / first.details["old_log_kept_as"]).exists()


def test_a_healthy_log_is_not_refused_and_the_anchor_follows_appends(tmp_path: Path) -> None:
    data = tmp_path / "data"
    head = _fill(data)
    p = cli(data, "audit", "anchor")
    assert p.returncode == 0 and p.stdout.strip() == f"{head[0]}:{head[1]}"
    assert cli(data, "stats").returncode == 0
    assert cli(data, "audit", "verify", "--head", f"{head[0]}:{head[1]}").returncode == 0


def test_serve_refuses_to_start_on_a_deleted_log(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _fill(data)
    _delete(data)
    t = time.monotonic()
    p = subprocess.run([sys.executable, "-c", ENTRY, "--data", str(data), "serve", "--port", "1"],
                       capture_output=True, text=True, timeout=120, env=clean_env())
    assert p.returncode == 8, (p.returncode, p.stderr)
    assert "audit log" in p.stderr and "missing" in p.stderr
    assert time.monotonic() - t < 60


def _forge_append(data: Path) -> None:
    """Someone with both files but no key appends a record, rehashes it unkeyed and moves both heads onto it."""
    db = sqlite3.connect(str(data / "audit.db"), isolation_level=None)
    seq, prev = db.execute("SELECT seq, hash FROM audit_head").fetchone()
    fields = dict(seq=seq + 1, time="2026-01-01T00:00:00.000000+00:00", actor="alice", role="investigator",
                  action="search", purpose="investigation", case_ref="C-1", details={"results": []}, prev_hash=prev)
    digest = record_hash(**fields)
    db.execute("DROP TRIGGER audit_head_forward_only")
    db.execute("INSERT INTO audit VALUES (?,?,?,?,?,?,?,?,?,?)",
               (seq + 1, fields["time"], "alice", "investigator", "search", "investigation", "C-1",
                '{"results":[]}', prev, digest))
    db.execute("UPDATE audit_head SET seq = ?, hash = ?", (seq + 1, digest))
    db.close()
    _sql(data / "catalog.db", f"UPDATE meta SET value = '{seq + 1}:{digest}' WHERE key = 'audit_anchor'")


def test_keyed_chain_detects_a_forged_append(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = clean_env(audit_key=KEY)
    assert cli(data, "source", "add", "s", "--basis", "consent", env=env).returncode == 0
    assert cli(data, "source", "add", "t", "--basis", "consent", env=env).returncode == 0
    _forge_append(data)
    p = cli(data, "audit", "verify", env=env)
    assert p.returncode == 1 and "Edited content at record 3" in p.stderr, (p.stdout, p.stderr)


def test_keyed_log_needs_its_key_and_the_key_lives_outside_the_data_folder(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert cli(data, "source", "add", "s", "--basis", "consent", env=clean_env(audit_key=KEY)).returncode == 0
    for env in (clean_env(), clean_env(audit_key=KEY + "x")):
        p = cli(data, "stats", env=env)
        assert p.returncode == 8 and "audit" in p.stderr, p.stderr
    inside = data / "audit.key"
    inside.write_text(KEY)
    p = cli(data, "stats", env=clean_env(audit_key_file=str(inside)))
    assert p.returncode == 8 and "outside the data folder" in p.stderr, p.stderr
    outside = tmp_path / "audit.key"
    outside.write_text(KEY + "\n")
    assert cli(data, "stats", env=clean_env(audit_key_file=str(outside))).returncode == 0
    p = cli(tmp_path / "other", "stats", env=clean_env(audit_key="short"))
    assert p.returncode == 8 and "at least 16" in p.stderr, p.stderr


def test_an_unkeyed_log_becomes_keyed_only_through_a_recorded_reset(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _fill(data, 2)
    env = clean_env(audit_key=KEY)
    p = cli(data, "stats", env=env)
    assert p.returncode == 8 and "not keyed" in p.stderr
    assert cli(data, "audit", "reset", "--reason", "switch to a keyed chain", env=env).returncode == 0
    assert cli(data, "stats", env=env).returncode == 0
    assert AuditLog(data / "audit.db", key=KEY.encode()).mode == "hmac-sha256"
    assert os.path.exists(data / "catalog.db")
