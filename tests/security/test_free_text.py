"""Free text (purposes, case references, names, reasons, notices, key names) is validated by one function at the
Python, CLI and HTTP levels, and whatever is stored is escaped before a human-readable output prints it."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from faceindex.audit import AuditLog, record_hash

from .conftest import PEOPLE, auth, cli, lfw, needs_lfw, search

BAD = {
    "escape-codes": "\x1b[2J\x1b[1;1H#1 2026-01-01 root (owner) policy.change",
    "new-line": "C-1\n#99 forged record",
    "bidi-override": "C-1\u202egnp.exe",
    "zero-width-only": "\u200b\u200c\u200d",
    "blank": "   ",
    "very-long": "x" * 5000,
}


def _python_calls(fi, bad: str):
    return {
        "search case": lambda: fi.search("no-such.jpg", purpose="investigation", case=bad),
        "search purpose": lambda: fi.search("no-such.jpg", purpose=bad, case="C-1"),
        "verify case": lambda: fi.verify("a.jpg", "b.jpg", purpose="investigation", case=bad),
        "person name": lambda: fi.name_person(1, bad),
        "key name": lambda: fi.create_key(bad, "investigator"),
        "source name": lambda: fi.set_source(bad, "consent"),
        "source notice": lambda: fi.set_source("ok", "consent", notice=bad),
        "opt-out reference": lambda: fi.optout_remove(bad),
        "audit actor": lambda: fi.audit.append("search", actor=bad, role="owner"),
    }


@pytest.mark.parametrize("kind", list(BAD))
def test_python_api_refuses_bad_text_and_stores_nothing(tmp_path: Path, kind: str) -> None:
    from faceindex import FaceIndex

    bad = BAD[kind]
    with FaceIndex.open(tmp_path / "data") as fi:
        fi.set_policy(allowed_purposes=[])  # any purpose: only the text check stands in the way
        before = fi.audit.count()
        for what, call in _python_calls(fi, bad).items():
            if kind == "blank" and what in ("search case", "search purpose", "verify case"):
                continue  # blank is "missing": a PolicyError (tested in test_accountability)
            with pytest.raises(ValueError) as e:
                call()
            assert "\n" not in str(e.value) and len(str(e.value)) < 300, (what, str(e.value))
        assert fi.audit.count() == before


def test_notice_may_be_long_but_not_unbounded(tmp_path: Path) -> None:
    from faceindex import FaceIndex

    with FaceIndex.open(tmp_path / "data") as fi:
        assert fi.set_source("ok", "consent", notice="n" * 1500)["notice"] == "n" * 1500
        with pytest.raises(ValueError, match="at most 2000"):
            fi.set_source("ok", "consent", notice="n" * 2001)


def test_cli_refuses_bad_text_with_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for args in (["source", "add", BAD["escape-codes"], "--basis", "consent"],
                 ["keys", "create", "--role", "investigator", "--name", "alice (key 2)"],
                 ["audit", "reset", "--reason", BAD["zero-width-only"]],
                 ["optout", "remove", BAD["bidi-override"]]):
        p = cli(data, *args)
        assert p.returncode == 2, (args, p.returncode, p.stderr)
        assert "\x1b" not in p.stderr and "\u202e" not in p.stderr, p.stderr


def _inject(path: Path, **fields: str) -> None:
    """A record with hostile text, chained properly (as an older faceindex could have written it)."""
    db = sqlite3.connect(str(path), isolation_level=None)
    seq, prev = db.execute("SELECT seq, hash FROM audit_head").fetchone()
    rec = dict(seq=seq + 1, time="2026-01-01T00:00:00.000000+00:00", actor="mallory", role="investigator",
               action="search", purpose="investigation", case_ref="C-1", details={}, prev_hash=prev) | fields
    digest = record_hash(**rec)
    db.execute("INSERT INTO audit VALUES (?,?,?,?,?,?,?,?,?,?)",
               (rec["seq"], rec["time"], rec["actor"], rec["role"], rec["action"], rec["purpose"], rec["case_ref"],
                "{}", prev, digest))
    db.execute("UPDATE audit_head SET seq = ?, hash = ?", (seq + 1, digest))
    db.close()


def test_audit_show_escapes_stored_text(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert cli(data, "source", "add", "s", "--basis", "consent").returncode == 0
    _inject(data / "audit.db", case_ref=BAD["escape-codes"], actor="eve\u202etoor", purpose="a\rb")
    # the anchor lags one record behind the injected one: allowed (the log may be ahead of it)
    p = cli(data, "audit", "show")
    assert p.returncode == 0, p.stderr
    for raw in ("\x1b", "\u202e", "\r"):
        assert raw not in p.stdout, repr(p.stdout)
    assert "\\u001b[2J" in p.stdout and "eve\\u202etoor" in p.stdout
    p = cli(data, "audit", "show", "--json")  # JSON escapes by itself and keeps the exact value for tools
    assert json.loads(p.stdout)[-1]["case_ref"] == BAD["escape-codes"]
    assert AuditLog(data / "audit.db").verify().ok


@needs_lfw
def test_http_api_refuses_bad_text(site, server) -> None:
    c, inv, admin = server.client, site.tokens["alice"], site.tokens["root"]
    probe = lfw(PEOPLE[0], 5).read_bytes()
    for bad in BAD.values():
        for r in (search(c, inv, probe, case=bad), search(c, inv, probe, purpose=bad),
                  c.put("/v1/people/1/name", headers=auth(inv), json={"name": bad}),
                  c.post("/v1/keys", headers=auth(admin), json={"name": bad, "role": "investigator"}),
                  c.post("/v1/sources", headers=auth(admin), json={"name": "s", "notice": bad + "\x07"})):
            assert r.status_code in (400, 403, 422), (bad[:20], r.request.url, r.status_code, r.text)
            assert set(r.json()) == {"error"}
    r = c.post("/v1/keys", headers=auth(admin), json={"name": "alice (key 2)", "role": "investigator"})
    assert r.status_code == 422 and "key name" in r.json()["error"]["message"]
    with AuditLog(site.data / "audit.db") as log:
        assert not [x for x in log.query() if x.case_ref and not x.case_ref.isprintable()]
