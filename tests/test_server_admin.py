"""The admin endpoints (server/routes_admin.py) against a real server: chunked uploads into one job (bad chunks,
retries, the role checked before the body), jobs listed and cancelled and kept over a restart, sources edited,
previewed and their images deleted, the policy read and changed, and the first run's hint for the first admin key.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from .servers import ENTRY, Server, clean_env

ROOT = Path(__file__).resolve().parents[1]
LFW = ROOT.parent / "shared" / "data" / "lfw" / "images"

pytestmark = pytest.mark.skipif(not LFW.is_dir(), reason=f"LFW images not found at {LFW} (../shared/data is absent)")

MAX_UPLOAD = 300_000  # FACEINDEX_MAX_UPLOAD_BYTES of the server


def lfw(name: str, i: int) -> Path:
    return LFW / name / f"{name}_{i:04d}.jpg"


def photo(name: str = "Colin_Powell", i: int = 1, as_: str | None = None) -> tuple[str, tuple[str, bytes, str]]:
    return "files", (as_ or lfw(name, i).name, lfw(name, i).read_bytes(), "image/jpeg")


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Env:
    base: Path
    data: Path
    root: Path  # the ingest root
    keys: dict[str, str]
    servers: list[Server] = field(default_factory=list)

    def start(self) -> Server:
        s = Server(self.data, self.base / f"server-{len(self.servers)}.log", ingest_root=self.root,
                   max_upload_bytes=str(MAX_UPLOAD), rate_limit="100000", auth_failure_limit="100000", workers="1")
        self.servers.append(s)
        return s


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Iterator[Env]:
    from faceindex import FaceIndex

    base = tmp_path_factory.mktemp("admin")
    gallery, root = base / "gallery", base / "ingest"
    gallery.mkdir()
    for i in (1, 2, 3):
        shutil.copy(lfw("Tony_Blair", i), gallery)
    big = root / "many"  # enough photos that a cancel lands while the job runs
    big.mkdir(parents=True)
    for person in sorted(p for p in LFW.iterdir() if p.is_dir())[:400]:
        for f in sorted(person.glob("*.jpg"))[:1]:
            shutil.copy(f, big)
    data = base / "data"
    fi = FaceIndex.open(data)
    try:
        assert fi.add([gallery], "lfw", workers=1).faces_found == 3
        keys = {name: fi.create_key(name, role)[1] for name, role in [
            ("adm", "admin"), ("adm2", "admin"), ("inv", "investigator"), ("aud", "auditor")]}
    finally:
        fi.close()
    e = Env(base, data, root, keys)
    yield e
    for s in e.servers:
        s.stop()


@pytest.fixture(scope="module")
def server(env: Env) -> Server:
    return env.start()


def wait(c: httpx.Client, job: str, token: str, states=("done", "failed", "cancelled"), timeout=180) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        j = c.get(f"/v1/jobs/{job}", headers=auth(token)).json()
        if j["state"] in states or time.monotonic() > deadline:
            return j
        time.sleep(0.2)


def actions(c: httpx.Client, env: Env, action: str) -> list[dict]:
    return c.get("/v1/audit", params={"action": action}, headers=auth(env.keys["aud"])).json()


def error(r: httpx.Response, status: int, code: str | None = None) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()["error"]
    if code:
        assert body["code"] == code, body
    assert str(Path.cwd()) not in body["message"] and "Traceback" not in body["message"]
    return body["message"]


# --- uploads in chunks ----------------------------------------------------------------------------------------------
def test_chunked_upload_into_one_job(env, server):
    c, adm = server.client, auth(env.keys["adm"])
    job = c.post("/v1/ingest/uploads", headers=adm, json={"source": "chunked"})
    assert job.status_code == 201 and job.json()["state"] == "uploading", job.text
    jid = job.json()["id"]
    r = c.post(f"/v1/ingest/uploads/{jid}/files", params={"chunk": 0}, headers=adm,
               files=[photo("Colin_Powell", 1), photo("Colin_Powell", 2)])
    assert r.json() == {"job": jid, "chunk": 0, "files": 2, "received": 2}, r.text
    # the same chunk again (a retry after a lost answer) replaces it: nothing is counted twice
    r = c.post(f"/v1/ingest/uploads/{jid}/files", params={"chunk": 0}, headers=adm,
               files=[photo("Colin_Powell", 1), photo("Colin_Powell", 2)])
    assert r.json()["received"] == 2
    r = c.post(f"/v1/ingest/uploads/{jid}/files", params={"chunk": 1}, headers=adm,
               files=[photo("Colin_Powell", 3), ("files", ("broken.jpg", b"not a photo", "image/jpeg"))])
    assert r.json()["received"] == 4
    listed = c.get("/v1/jobs", headers=adm).json()
    assert listed[0]["id"] == jid and listed[0]["state"] == "uploading" and listed[0]["received"] == 4
    started = c.post(f"/v1/ingest/uploads/{jid}/start", headers=adm)
    assert started.status_code == 202, started.text
    done = wait(c, jid, env.keys["adm"])
    assert done["state"] == "done" and done["total"] == 4 and done["done"] == 4 and done["faces"] == 3, done
    assert done["error_files"] == [{"file": "broken.jpg", "reason": done["error_files"][0]["reason"]}]
    assert "not an image" in done["error_files"][0]["reason"]
    assert done["images_per_second"] > 0 and done["seconds"] > 0
    # an ended job takes no more files and cannot start again
    error(c.post(f"/v1/ingest/uploads/{jid}/files", params={"chunk": 2}, headers=adm, files=[photo()]), 409,
          "not_uploading")
    error(c.post(f"/v1/ingest/uploads/{jid}/start", headers=adm), 409, "not_uploading")
    error(c.post(f"/v1/jobs/{jid}/cancel", headers=adm), 409, "job_ended")


def test_bad_chunks(env, server):
    c, adm = server.client, auth(env.keys["adm"])
    jid = c.post("/v1/ingest/uploads", headers=adm, json={"source": "bad chunks"}).json()["id"]
    url = f"/v1/ingest/uploads/{jid}/files"
    assert "at least one photo" in error(c.post(url, params={"chunk": 0}, headers=adm, data={"x": "1"}), 422)
    error(c.post(url, params={"chunk": -1}, headers=adm, files=[photo()]), 422, "invalid_request")
    error(c.post(url, headers=adm, files=[photo()]), 422, "invalid_request")  # no chunk number
    assert "notes.txt" in error(c.post(url, params={"chunk": 0}, headers=adm,
                                       files=[("files", ("notes.txt", b"hello", "text/plain"))]), 415)
    big = np.random.default_rng(0).integers(0, 255, (700, 700, 3), np.uint8)
    buf = io.BytesIO()
    Image.fromarray(big).save(buf, "PNG")
    assert "huge.png" in error(c.post(url, params={"chunk": 0}, headers=adm,
                                      files=[("files", ("huge.png", buf.getvalue(), "image/png"))]), 413)
    tiny = io.BytesIO()
    Image.new("RGB", (8, 8)).save(tiny, "JPEG")
    error(c.post(url, params={"chunk": 0}, headers=adm, files=[
        ("files", (f"{i}.jpg", tiny.getvalue(), "image/jpeg")) for i in range(201)]), 400)  # over 200 in a request
    error(c.post(f"/v1/ingest/uploads/{jid}/start", headers=adm), 422, "no_files")
    error(c.post("/v1/ingest/uploads/nope/files", params={"chunk": 0}, headers=adm, files=[photo()]), 404)
    error(c.post("/v1/ingest/uploads", headers=adm, json={"source": "../etc"}), 422, "invalid_request")
    # the role is checked before the body is parsed: an investigator's garbage multipart body gets 403, not 400
    r = c.post(url, params={"chunk": 0}, headers={**auth(env.keys["inv"]),
                                                 "Content-Type": "multipart/form-data; boundary=zzz"},
               content=b"--garbage")
    error(r, 403, "forbidden")
    error(c.post(url, params={"chunk": 0}, content=b"x" * 100, headers={"Content-Type": "multipart/form-data"}),
          401, "unauthorized")
    # nothing of the refused chunks was kept; cancelling the upload deletes the job's folder
    assert c.get(f"/v1/jobs/{jid}", headers=adm).json()["received"] == 0
    r = c.post(f"/v1/jobs/{jid}/cancel", headers=auth(env.keys["adm2"]))  # any admin may
    assert r.status_code == 200 and r.json()["state"] == "cancelled", r.text
    assert not any((env.data / "uploads" / "bad_chunks").iterdir())
    rec = actions(c, env, "ingest.cancel")[0]
    assert rec["details"]["job"] == jid and rec["actor"].startswith("adm2")


def test_cancel_a_running_job_keeps_what_it_indexed(env, server):
    c, adm = server.client, auth(env.keys["adm"])
    r = c.post("/v1/ingest/path", headers=adm, json={"path": str(env.root / "many"), "source": "many"})
    assert r.status_code == 202, r.text
    jid = r.json()["id"]
    running = wait(c, jid, env.keys["adm"], states=("running", "done"))
    assert running["state"] == "running", running
    cancelled = c.post(f"/v1/jobs/{jid}/cancel", headers=adm)
    assert cancelled.status_code == 200, cancelled.text
    end = wait(c, jid, env.keys["adm"])
    assert end["state"] == "cancelled" and end["done"] < end["total"] == 400, end
    assert "cancelled by adm" in end["error"]
    usage = c.get("/v1/sources/many/images", headers=adm).json()
    assert usage["files"] <= end["done"]  # what was committed before the cancel stays indexed


def test_jobs_are_listed_after_a_restart_and_an_interrupted_upload_can_be_indexed(env, server):
    c, adm = server.client, auth(env.keys["adm"])
    jid = c.post("/v1/ingest/uploads", headers=adm, json={"source": "restart"}).json()["id"]
    c.post(f"/v1/ingest/uploads/{jid}/files", params={"chunk": 0}, headers=adm,
           files=[photo("Gerhard_Schroeder", 1), photo("Gerhard_Schroeder", 2)])
    before = {j["id"]: j["state"] for j in c.get("/v1/jobs", params={"limit": 200}, headers=adm).json()}
    server.stop()
    env.servers.remove(server)
    again = env.start()
    try:
        after = {j["id"]: j["state"] for j in again.client.get("/v1/jobs", params={"limit": 200},
                                                               headers=adm).json()}
        assert after == before and after[jid] == "uploading"
        r = again.client.post(f"/v1/ingest/uploads/{jid}/start", headers=adm)
        assert r.status_code == 202, r.text
        end = wait(again.client, jid, env.keys["adm"])
        assert end["state"] == "done" and end["faces"] == 2, end
        # only roles that may ingest list jobs
        error(again.client.get("/v1/jobs", headers=auth(env.keys["inv"])), 403, "forbidden")
    finally:
        again.stop()
        env.servers.remove(again)


# --- sources ------------------------------------------------------------------------------------------------------------
def test_sources_edit_preview_and_delete(env):
    s = env.start()
    c, adm = s.client, auth(env.keys["adm"])
    try:
        # the same photo in two sources: deleting one source's images keeps it for the other
        shared = env.root / "shared"
        shared.mkdir()
        for i in (1, 2):
            shutil.copy(lfw("Jacques_Chirac", i), shared)
        for src in ("one", "two"):
            j = c.post("/v1/ingest/path", headers=adm, json={"path": str(shared), "source": src}).json()
            assert wait(c, j["id"], env.keys["adm"])["state"] == "done"
        j = c.post("/v1/ingest/uploads", headers=adm, json={"source": "one"}).json()
        c.post(f"/v1/ingest/uploads/{j['id']}/files", params={"chunk": 0}, headers=adm,
               files=[photo("Jean_Chretien", 1)])
        c.post(f"/v1/ingest/uploads/{j['id']}/start", headers=adm)
        assert wait(c, j["id"], env.keys["adm"])["state"] == "done"

        r = c.put("/v1/sources/one", headers=adm, json={"basis": "consent", "retention_days": 30, "notice": "Signs."})
        assert r.status_code == 200, r.text
        one = r.json()
        assert (one["basis"], one["retention_days"], one["notice"], one["images"], one["faces"]) == (
            "consent", 30, "Signs.", 3, 3)
        assert one["next_expiry"] and not one["expired"]
        assert actions(c, env, "source.change")[0]["details"]["retention_days"] == 30
        summary = {x["name"]: x for x in c.get("/v1/sources/summary", headers=auth(env.keys["aud"])).json()}
        assert summary["two"]["images"] == 2 and summary["one"]["basis"] == "consent"

        error(c.put("/v1/sources/nope", headers=adm, json={"basis": "consent"}), 404, "not_found")
        assert "legal basis" in error(c.put("/v1/sources/one", headers=adm, json={"basis": "whim"}), 400)
        error(c.put("/v1/sources/one", headers=adm, json={"retention_days": -1}), 422, "invalid_request")
        error(c.put("/v1/sources/one", headers=adm, json={"name": "renamed"}), 422, "invalid_request")
        error(c.put("/v1/sources/one", headers=adm, json={"notice": "bell \u0007"}), 422, "invalid_request")
        error(c.put("/v1/sources/one", headers=auth(env.keys["inv"]), json={"basis": "consent"}), 403, "forbidden")

        preview = c.get("/v1/sources/one/images", headers=adm).json()
        assert preview == {"source": "one", "files": 3, "images": 3, "faces": 3, "images_only_here": 1,
                           "faces_only_here": 1}, preview
        faces_before = c.get("/v1/stats", headers=adm).json()["faces"]
        error(c.delete("/v1/sources/one/images", headers=auth(env.keys["aud"])), 403, "forbidden")
        gone = c.delete("/v1/sources/one/images", headers=adm)
        assert gone.json() == {"source": "one", "files": 3, "images": 1, "faces": 1}, gone.text
        assert c.get("/v1/stats", headers=adm).json()["faces"] == faces_before - 1
        after = {x["name"]: x for x in c.get("/v1/sources/summary", headers=adm).json()}
        assert after["one"]["images"] == 0 and after["one"]["basis"] == "consent"  # the registration stays
        assert after["two"]["images"] == 2
        rec = actions(c, env, "source.delete_images")[0]
        assert rec["details"]["source"] == "one" and len(rec["details"]["face_ids"]) == 1
    finally:
        s.stop()
        env.servers.remove(s)


# --- policy ------------------------------------------------------------------------------------------------------
def test_policy_read_and_change(env):
    s = env.start()
    c, adm = s.client, auth(env.keys["adm"])
    try:
        p = c.get("/v1/policy", headers=adm).json()
        assert p["optout_fmr"] == 1e-3 and p["model"]
        assert p["optout"]["leak_rate"] == 0.0042 and p["optout"]["over_removal"] == 0.001556  # docs/benchmarks.md
        assert len(p["rates"]) == 9 and all(r["similarity"] is not None for r in p["rates"])
        sims = [r["similarity"] for r in p["rates"]]
        assert sims == sorted(sims)  # a lower FMR needs a higher similarity
        error(c.get("/v1/policy", headers=auth(env.keys["inv"])), 403, "forbidden")
        for bad in ({"optout_fmr": 0}, {"optout_fmr": 1.5}, {"access_fmr": "x"}, {"allowed_purposes": ["a\nb"]},
                    {"surprise": True}, {}):
            error(c.put("/v1/policy", headers=adm, json=bad), 422)
        assert c.get("/v1/policy", headers=adm).json() == p  # nothing changed

        r = c.put("/v1/policy", headers=adm, json={"optout_fmr": 3e-4, "allowed_purposes": ["investigation"]})
        assert r.status_code == 200, r.text
        assert r.json()["optout"] == {"fmr": 3e-4, "similarity": r.json()["optout"]["similarity"],
                                      "leak_rate": 0.0054, "over_removal": 0.000492}
        # the running server applies it at once: /v1/me and searches see the new purposes
        assert c.get("/v1/me", headers=auth(env.keys["inv"])).json()["allowed_purposes"] == ["investigation"]
        probe = lfw("Tony_Blair", 4).read_bytes()
        r = c.post("/v1/search", headers=auth(env.keys["inv"]), files={"probe": ("p.jpg", probe, "image/jpeg")},
                   data={"purpose": "research", "case": "P-1"})
        assert "not allowed" in error(r, 403, "policy")
        rec = actions(c, env, "policy.change")[0]
        assert rec["details"]["before"]["optout_fmr"] == 1e-3 and rec["details"]["after"]["optout_fmr"] == 3e-4
        # a threshold without measured rates is accepted and says so
        r = c.put("/v1/policy", headers=adm, json={"optout_fmr": 2.5e-4})
        assert r.json()["optout"]["leak_rate"] is None
        c.put("/v1/policy", headers=adm, json={"optout_fmr": 1e-3, "allowed_purposes": p["allowed_purposes"]})
    finally:
        s.stop()
        env.servers.remove(s)


# --- first run ---------------------------------------------------------------------------------------------------
def test_first_run_says_how_to_create_the_first_admin_key(tmp_path):
    data = tmp_path / "fresh"
    s = Server(data, tmp_path / "first.log")
    try:
        assert s.client.get("/healthz").json() == {"status": "ok", "faces": 0}
    finally:
        s.stop()
    log = (tmp_path / "first.log").read_text()
    assert "No admin API key yet" in log, log
    command = next(line.strip() for line in log.splitlines() if "keys create --role admin" in line)
    # the printed command works as shown (with this interpreter for `faceindex`)
    args = command.split()[1:]
    out = subprocess.run([sys.executable, "-c", ENTRY, *args], capture_output=True, text=True, env=clean_env(),
                         cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    token = next(w for w in out.stdout.split() if w.startswith("fi_"))
    s = Server(data, tmp_path / "second.log")
    try:
        assert s.client.get("/v1/me", headers=auth(token)).json()["role"] == "admin"
    finally:
        s.stop()
    assert "No admin API key yet" not in (tmp_path / "second.log").read_text()
