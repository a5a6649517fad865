"""A search's audit record is on disk before its results leave the server: killing the server (SIGKILL) right
after a response arrives loses nothing, and the next start finds the log and the catalog's anchor in agreement."""

from __future__ import annotations

from pathlib import Path

from faceindex.audit import AuditLog

from .conftest import PEOPLE, Server, build_site, lfw, needs_lfw, search

pytestmark = needs_lfw


def test_search_record_survives_a_kill_right_after_the_response(tmp_path: Path) -> None:
    site = build_site(tmp_path)
    server = Server(site.data, tmp_path / "server.log")
    try:
        r = search(server.client, site.tokens["alice"], lfw(PEOPLE[0], 5).read_bytes(), case="DUR-1")
        server.kill()  # no shutdown, no checkpoint, no close: what is on disk is all there is
    finally:
        server.stop()
    assert r.status_code == 200, r.text
    returned = [c["face_id"] for res in r.json()["results"] for c in res["candidates"]]
    assert returned
    with AuditLog(site.data / "audit.db") as log:
        recs = log.query(action="search", case_ref="DUR-1")
        assert len(recs) == 1
        assert [fid for res in recs[0].details["results"] for fid, _ in res] == returned
        assert recs[0].actor.startswith("alice (key ")
        assert log.verify().ok
        # what the audit connection promises: every commit is fsync'd, not just written to the page cache
        assert log._conn().execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    # the restarted server (any command) accepts the log: the anchor is not ahead of it
    again = Server(site.data, tmp_path / "again.log")
    again.stop()
