"""A server ingest job survives kill -9: after the restart it is still there (not 404), it resumes and finishes,
and the audit log's per-batch ingest records agree with what the catalog holds."""

from __future__ import annotations

import shutil
import time

from faceindex.audit import AuditLog

from .conftest import PEOPLE, Server, auth, build_site, lfw, needs_lfw

pytestmark = needs_lfw
N_FILES = 24


def _job(server: Server, token: str, job_id: str) -> dict:
    r = server.client.get(f"/v1/jobs/{job_id}", headers=auth(token))
    assert r.status_code == 200, r.text
    return r.json()


def test_an_ingest_job_survives_kill_9_and_resumes(tmp_path) -> None:
    site = build_site(tmp_path)
    root = tmp_path / "root" / "crash"
    root.mkdir(parents=True)
    n = 0
    for name in PEOPLE:
        for i in range(4, 12):
            if lfw(name, i).exists() and n < N_FILES:
                shutil.copy(lfw(name, i), root / f"{name}_{i}.jpg")
                n += 1
    admin = site.tokens["root"]
    server = Server(site.data, tmp_path / "first.log", ingest_root=root.parent, workers="1")
    try:
        r = server.client.post("/v1/ingest/path", headers=auth(admin), json={"path": str(root), "source": "crash"})
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        for _ in range(600):
            job = _job(server, admin, job_id)
            if job["done"] >= 4 or job["state"] != "queued" and job["state"] != "running":
                break
            time.sleep(0.05)
        assert job["state"] == "running" and job["done"] < n, job
        server.kill()
    finally:
        server.stop()

    again = Server(site.data, tmp_path / "again.log", ingest_root=root.parent, workers="1")
    try:
        for _ in range(1200):
            job = _job(again, admin, job_id)
            if job["state"] in ("done", "failed"):
                break
            time.sleep(0.1)
    finally:
        again.stop()
    assert job["state"] == "done" and job["result"]["resumed_after_restart"] == 1, job
    from faceindex import FaceIndex

    with FaceIndex.open(site.data) as fi:
        files = next(s for s in fi.sources() if s["name"] == "crash")["files"]
    with AuditLog(site.data / "audit.db") as log:
        batches = [x for x in log.query(action="ingest.batch") if x.details["source"] == "crash"]
        assert log.verify().ok
    assert files == n
    assert sum(x.details["images"] for x in batches) == n, [x.details["images"] for x in batches]
