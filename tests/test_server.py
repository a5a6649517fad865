"""The HTTP API against a real uvicorn server on loopback: auth matrix, bad uploads, traversal, rate limits,
two-person confirmation, ingest while searching, and a schemathesis run over the OpenAPI document.

One small index is built through the Python API (4 LFW people x 5 images), API keys are made for every role,
then `faceindex --data DIR serve` is started as a subprocess: the main server (high rate limit, 2 MB uploads),
a second one over the same folder with a rate limit of 3 per minute, and a third over a copy of the folder for
schemathesis (which deletes faces and revokes keys at random).
"""

from __future__ import annotations

import io
import json
import shutil
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from .servers import Server

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
LFW = DATA / "lfw" / "images"

pytestmark = pytest.mark.skipif(not LFW.is_dir(), reason=f"LFW images not found at {LFW} (../shared/data is absent)")

GALLERY_PEOPLE = ["Colin_Powell", "Tony_Blair", "Donald_Rumsfeld", "Gerhard_Schroeder"]
PER_PERSON = 5
ROLES = ("admin", "investigator", "auditor", "privacy-officer")
MAX_UPLOAD = 2_000_000  # FACEINDEX_MAX_UPLOAD_BYTES of the main server
MAX_BODY = MAX_UPLOAD * 4 + 1_000_000  # the app's request-size guard
RATE_LIMIT = 3  # per minute, on the rate-limited server
FUZZ_EXAMPLES = 15  # schemathesis examples per operation

# --- the expected permission table (docs/accountability.md, policy.PERMISSIONS, server/app.py) ---------------------
EXPECTED_PERMISSIONS = {
    "owner": {"ingest", "delete", "search", "verify", "people", "audit", "privacy", "policy", "keys"},
    "admin": {"ingest", "delete", "keys", "policy"},
    "investigator": {"search", "verify", "people"},
    "auditor": {"audit"},
    "privacy-officer": {"privacy"},
}
ANY_ROLE = frozenset(ROLES)
PUBLIC = None
# (method, OpenAPI path) -> the roles that may call it (PUBLIC: no key needed)
ALLOWED: dict[tuple[str, str], frozenset[str] | None] = {
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/metrics"): frozenset({"admin", "auditor"}),  # audit or keys
    ("GET", "/v1/stats"): ANY_ROLE,
    ("GET", "/v1/me"): ANY_ROLE,
    ("GET", "/v1/overview"): ANY_ROLE,  # filtered by role (tests/test_server_overview.py)
    ("POST", "/v1/detect"): frozenset({"investigator", "privacy-officer"}),  # search or privacy
    ("POST", "/v1/search"): frozenset({"investigator"}),
    ("POST", "/v1/verify"): frozenset({"investigator"}),
    ("POST", "/v1/confirmations"): frozenset({"investigator"}),
    ("GET", "/v1/confirmations"): frozenset({"investigator"}),
    ("GET", "/v1/faces/{face_id}/crop"): frozenset({"investigator", "privacy-officer"}),  # search, people, privacy
    ("GET", "/v1/faces/{face_id}/image"): frozenset({"investigator", "privacy-officer"}),
    ("DELETE", "/v1/faces/{face_id}"): frozenset({"admin"}),
    ("GET", "/v1/people"): frozenset({"investigator"}),
    ("POST", "/v1/people/cluster"): frozenset({"investigator"}),
    ("GET", "/v1/people/{person_id}"): frozenset({"investigator"}),
    ("PUT", "/v1/people/{person_id}/name"): frozenset({"investigator"}),
    ("POST", "/v1/people/merge"): frozenset({"investigator"}),
    ("POST", "/v1/people/{person_id}/split"): frozenset({"investigator"}),
    ("GET", "/v1/sources"): frozenset({"admin", "auditor", "privacy-officer"}),  # ingest, audit or privacy
    ("POST", "/v1/sources"): frozenset({"admin"}),
    ("POST", "/v1/ingest/upload"): frozenset({"admin"}),
    ("POST", "/v1/ingest/path"): frozenset({"admin"}),
    ("GET", "/v1/jobs/{job_id}"): ANY_ROLE,  # no role check: a job is visible to the key that started it and admins
    ("GET", "/v1/optouts"): frozenset({"privacy-officer"}),
    ("POST", "/v1/optouts"): frozenset({"privacy-officer"}),
    ("DELETE", "/v1/optouts/{reference}"): frozenset({"privacy-officer"}),
    ("POST", "/v1/access"): frozenset({"privacy-officer"}),
    ("POST", "/v1/erase"): frozenset({"privacy-officer"}),
    ("GET", "/v1/audit"): frozenset({"auditor"}),
    ("GET", "/v1/audit/verify"): frozenset({"auditor"}),
    ("GET", "/v1/keys"): frozenset({"admin"}),
    ("POST", "/v1/keys"): frozenset({"admin"}),
    ("DELETE", "/v1/keys/{key_id}"): frozenset({"admin"}),
    # the admin pages' endpoints (server/routes_admin.py; tests/test_server_admin.py)
    ("GET", "/v1/sources/summary"): frozenset({"admin", "auditor", "privacy-officer"}),
    ("PUT", "/v1/sources/{name}"): frozenset({"admin"}),
    ("GET", "/v1/sources/{name}/images"): frozenset({"admin", "auditor", "privacy-officer"}),
    ("DELETE", "/v1/sources/{name}/images"): frozenset({"admin"}),
    ("GET", "/v1/jobs"): frozenset({"admin"}),
    ("POST", "/v1/jobs/{job_id}/cancel"): frozenset({"admin"}),
    ("GET", "/v1/ingest/limits"): frozenset({"admin"}),
    ("POST", "/v1/ingest/uploads"): frozenset({"admin"}),
    ("POST", "/v1/ingest/uploads/{job_id}/files"): frozenset({"admin"}),
    ("POST", "/v1/ingest/uploads/{job_id}/start"): frozenset({"admin"}),
    ("GET", "/v1/policy"): frozenset({"admin"}),
    ("PUT", "/v1/policy"): frozenset({"admin"}),
}


# --- images ------------------------------------------------------------------------------------------------------
def lfw(name: str, i: int) -> Path:
    return LFW / name / f"{name}_{i:04d}.jpg"


def jpeg(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG")
    return buf.getvalue()


def gray_jpeg() -> bytes:
    """A valid image with no face in it."""
    return jpeg(np.full((96, 96, 3), 128, np.uint8))


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose header declares width x height pixels (a decompression bomb)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


# --- servers ------------------------------------------------------------------------------------------------------
@dataclass
class Env:
    base: Path
    data: Path
    fuzz_data: Path
    root: Path  # the server's only ingest root
    outside: Path  # a folder beside it, never to be indexed
    keys: dict[str, str]  # role or key name -> token
    key_ids: dict[str, int]
    revoked: str
    face_id: int  # a gallery face
    doomed_face: int  # a face whose source file test_crop_of_missing_file deletes
    doomed_file: Path
    servers: list[Server] = field(default_factory=list)


def _build(base: Path) -> Env:
    from faceindex import FaceIndex

    gallery = base / "gallery"
    for name in GALLERY_PEOPLE:
        (gallery / name).mkdir(parents=True)
        for i in range(1, PER_PERSON + 1):
            (gallery / name / lfw(name, i).name).symlink_to(lfw(name, i))
    doomed_dir = base / "doomed"
    doomed_dir.mkdir()
    doomed_file = doomed_dir / "doomed.jpg"
    shutil.copy(lfw("Serena_Williams", 1), doomed_file)
    # the ingest root: real files (a link to ../shared/data would itself point outside the root), a link to a file
    # outside it, a link to a folder outside it, and an empty folder
    root, outside = base / "ingest-root", base / "outside"
    for d in (root / "mixed", root / "empty", outside):
        d.mkdir(parents=True)
    shutil.copy(lfw("Ariel_Sharon", 1), root / "mixed" / "ok.jpg")
    shutil.copy(lfw("Hugo_Chavez", 1), outside / "secret.jpg")
    (root / "mixed" / "leak.jpg").symlink_to(outside / "secret.jpg")
    (root / "linkdir").symlink_to(outside, target_is_directory=True)

    data = base / "data"
    fi = FaceIndex.open(data)
    try:
        report = fi.add([gallery], "lfw", workers=2)
        assert report.ok and report.images_indexed == len(GALLERY_PEOPLE) * PER_PERSON, report.as_dict()
        assert fi.add([doomed_dir], "doomed", workers=1).faces_found == 1
        fi.cluster()
        keys, key_ids = {}, {}
        for name, role in [(r, r) for r in ROLES] + [("investigator-2", "investigator"), ("rl-1", "investigator"),
                                                     ("rl-2", "investigator")]:
            key_ids[name], keys[name] = fi.create_key(f"t-{name}", role)
        rid, revoked = fi.create_key("t-revoked", "investigator")
        fi.revoke_key(rid)
        recs = fi.catalog.face_records(fi.catalog.face_ids().tolist())
        doomed_face = next(i for i, r in recs.items() if r.path == str(doomed_file))
        face_id = next(i for i, r in recs.items() if Path(r.path).name.startswith("Colin_Powell"))
    finally:
        fi.close()
    fuzz_data = base / "fuzz-data"
    shutil.copytree(data, fuzz_data)
    return Env(base, data, fuzz_data, root, outside, keys, key_ids, revoked, face_id, doomed_face, doomed_file)


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Iterator[Env]:
    e = _build(tmp_path_factory.mktemp("server"))
    yield e
    for s in e.servers:
        s.stop()


@pytest.fixture(scope="module")
def server(env: Env) -> Server:
    s = Server(env.data, env.base / "server.log", ingest_root=env.root, rate_limit="100000", auth_failure_limit="100000",
               keep_uploads="true",
               max_upload_bytes=str(MAX_UPLOAD), workers="2")
    env.servers.append(s)
    return s


@pytest.fixture(scope="module")
def limited(env: Env) -> Server:
    s = Server(env.data, env.base / "limited.log", ingest_root=env.root, rate_limit=str(RATE_LIMIT), workers="1")
    env.servers.append(s)
    return s


@pytest.fixture(scope="module")
def fuzz_server(env: Env) -> Server:
    s = Server(env.fuzz_data, env.base / "fuzz.log", ingest_root=env.root, rate_limit="100000", auth_failure_limit="100000",
               max_upload_bytes=str(MAX_UPLOAD), workers="1")
    env.servers.append(s)
    return s


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def operations(server: Server) -> list[tuple[str, str]]:
    spec = server.client.get("/openapi.json").json()
    return [(m.upper(), p) for p, ops in spec["paths"].items() for m in ops]


def assert_clean_error(r: httpx.Response, env: Env, status: int | None = None, code: str | None = None) -> dict:
    """A JSON error {"error": {"code", "message"}} with no trace and no server path."""
    if status is not None:
        assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json"), r.headers
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code, body
    for leak in ("Traceback", 'File "', "site-packages", str(env.base), str(ROOT)):
        assert leak not in r.text, f"{leak!r} in {r.text}"
    return body["error"]


def wait_job(client: httpx.Client, job_id: str, token: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/v1/jobs/{job_id}", headers=auth(token)).json()
        if job["state"] in ("done", "failed") or time.monotonic() > deadline:
            return job
        time.sleep(0.25)


def search(client: httpx.Client, token: str, image: bytes, case: str = "T-1", purpose: str = "testing",
           **form) -> httpx.Response:
    return client.post("/v1/search", headers=auth(token), files={"probe": ("probe.jpg", image, "image/jpeg")},
                       data={"purpose": purpose, "case": case, **form})


# --- permissions ------------------------------------------------------------------------------------------------------
def test_permission_table_is_the_documented_one():
    from faceindex.policy import PERMISSIONS

    assert {role: set(p) for role, p in PERMISSIONS.items()} == EXPECTED_PERMISSIONS


def test_every_endpoint_is_in_the_permission_table(server):
    """A new endpoint fails here until its roles are written into ALLOWED (and a request into REQUESTS)."""
    ops = set(operations(server))
    assert ops == set(ALLOWED), f"not in ALLOWED: {ops - set(ALLOWED)}; gone: {set(ALLOWED) - ops}"
    assert set(REQUESTS) == set(ALLOWED)


def test_bad_credentials_get_401_on_every_endpoint(env, server):
    """No key, a revoked key and malformed keys: 401 with a JSON error everywhere but /healthz."""
    prefix = env.keys["auditor"].split("_")[1]
    bad = {
        "no key": {},
        "revoked": auth(env.revoked),
        "garbage bearer": auth("not-a-key"),
        "right prefix, wrong secret": auth(f"fi_{prefix}_wrong-secret"),
        "garbage X-API-Key": {"X-API-Key": "fi_nope_nope"},
        "other scheme": {"Authorization": "Basic dXNlcjpwYXNz"},
        "bearer without a token": {"Authorization": "Bearer"},
    }
    failures = []
    for method, path in operations(server):
        url = path.format(face_id=1, person_id=1, job_id="x", reference="x", key_id=1, name="x")
        for what, headers in bad.items():
            r = server.client.request(method, url, headers=headers)
            if ALLOWED.get((method, path), ()) is PUBLIC:
                ok = r.status_code == 200
            else:
                ok = (r.status_code == 401 and r.headers.get("www-authenticate") == "Bearer"
                      and r.json().get("error", {}).get("code") == "unauthorized")
                if ok:
                    assert_clean_error(r, env)
            if not ok:
                failures.append(f"{method} {path} with {what}: {r.status_code} {r.text[:120]}")
    assert not failures, "\n".join(failures)
    assert server.client.get("/v1/me", headers={"X-API-Key": env.keys["auditor"]}).json()["role"] == "auditor"


@dataclass
class Ctx:
    env: Env
    server: Server
    job_id: str

    def person_id(self) -> int:
        people = self.server.client.get("/v1/people", params={"min_faces": 1, **WHY_Q},
                                        headers=auth(self.env.keys["investigator"])).json()
        return people[0]["id"]


def face_file(name: str = "probe.jpg", who: Path = lfw("Colin_Powell", 6)) -> tuple[str, bytes, str]:
    return name, who.read_bytes(), "image/jpeg"


def no_face_file() -> tuple[str, bytes, str]:
    return "gray.jpg", gray_jpeg(), "image/jpeg"


NOPE = 10**9  # an id that does not exist
WHY_Q = {"purpose": "testing", "case": "MATRIX-1"}  # reads that reveal faces are audited: purpose and case
# (method, path) -> (request for it, status for a role that may call it, and per-role exceptions)
Request = Callable[[Ctx], tuple[str, dict]]
REQUESTS: dict[tuple[str, str], tuple[Request, int, dict[str, int]]] = {
    ("GET", "/healthz"): (lambda c: ("/healthz", {}), 200, {}),
    ("GET", "/metrics"): (lambda c: ("/metrics", {}), 200, {}),
    ("GET", "/v1/stats"): (lambda c: ("/v1/stats", {}), 200, {}),
    ("GET", "/v1/me"): (lambda c: ("/v1/me", {}), 200, {}),
    ("GET", "/v1/overview"): (lambda c: ("/v1/overview", {}), 200, {}),
    ("POST", "/v1/detect"): (lambda c: ("/v1/detect", {"files": {"image": face_file()}}), 200, {}),
    ("POST", "/v1/search"): (lambda c: ("/v1/search", {"files": {"probe": face_file()},
                                                       "data": {"purpose": "testing", "case": "MATRIX-1"}}), 200, {}),
    ("POST", "/v1/verify"): (lambda c: ("/v1/verify", {
        "files": {"a": face_file(), "b": face_file("b.jpg", lfw("Colin_Powell", 7))},
        "data": {"purpose": "testing", "case": "MATRIX-1"}}), 200, {}),
    ("POST", "/v1/confirmations"): (lambda c: ("/v1/confirmations", {
        "json": {"case": "MATRIX-1", "face_id": c.env.face_id}}), 200, {}),
    ("GET", "/v1/confirmations"): (lambda c: ("/v1/confirmations", {"params": {"case": "MATRIX-1"}}), 200, {}),
    ("GET", "/v1/faces/{face_id}/crop"): (lambda c: (f"/v1/faces/{c.env.face_id}/crop", {"params": WHY_Q}), 200, {}),
    ("GET", "/v1/faces/{face_id}/image"): (lambda c: (f"/v1/faces/{c.env.face_id}/image", {"params": WHY_Q}), 200, {}),
    ("DELETE", "/v1/faces/{face_id}"): (lambda c: (f"/v1/faces/{NOPE}", {}), 404, {}),
    ("GET", "/v1/people"): (lambda c: ("/v1/people", {"params": WHY_Q}), 200, {}),
    ("POST", "/v1/people/cluster"): (lambda c: ("/v1/people/cluster", {"params": WHY_Q}), 200, {}),
    ("GET", "/v1/people/{person_id}"): (lambda c: (f"/v1/people/{c.person_id()}", {"params": WHY_Q}), 200, {}),
    ("PUT", "/v1/people/{person_id}/name"): (lambda c: (f"/v1/people/{c.person_id()}/name", {
        "json": {"name": "Matrix Person"}, "params": WHY_Q}), 200, {}),
    ("POST", "/v1/people/merge"): (lambda c: ("/v1/people/merge", {"json": {"person_ids": [NOPE, NOPE + 1]}}), 404, {}),
    ("POST", "/v1/people/{person_id}/split"): (lambda c: (f"/v1/people/{NOPE}/split", {
        "json": {"face_ids": [c.env.face_id]}}), 404, {}),
    ("GET", "/v1/sources"): (lambda c: ("/v1/sources", {}), 200, {}),
    ("POST", "/v1/sources"): (lambda c: ("/v1/sources", {
        "json": {"name": "matrix", "basis": "consent", "retention_days": 30}}), 200, {}),
    # an image already indexed: the job only records the new file
    ("POST", "/v1/ingest/upload"): (lambda c: ("/v1/ingest/upload", {
        "files": [("files", face_file("again.jpg", lfw("Tony_Blair", 1)))], "data": {"source": "matrix"}}), 202, {}),
    ("POST", "/v1/ingest/path"): (lambda c: ("/v1/ingest/path", {
        "json": {"path": str(c.env.root / "empty"), "source": "matrix"}}), 202, {}),
    ("GET", "/v1/jobs/{job_id}"): (lambda c: (f"/v1/jobs/{c.job_id}", {}), 404, {"admin": 200}),  # admin's job
    ("GET", "/v1/optouts"): (lambda c: ("/v1/optouts", {}), 200, {}),
    ("POST", "/v1/optouts"): (lambda c: ("/v1/optouts", {"files": [("photos", no_face_file())],
                                                         "data": {"reference": "MATRIX-OPT"}}), 422, {}),
    ("DELETE", "/v1/optouts/{reference}"): (lambda c: ("/v1/optouts/NO-SUCH-REF", {}), 404, {}),
    ("POST", "/v1/access"): (lambda c: ("/v1/access", {"files": [("photos", face_file())],
                                                       "data": {"reference": "MATRIX-SAR",
                                                                "purpose": "data-subject-request"}}), 200, {}),
    ("POST", "/v1/erase"): (lambda c: ("/v1/erase", {"files": [("photos", no_face_file())],
                                                     "data": {"reference": "MATRIX-ERASE"}}), 422, {}),
    ("GET", "/v1/audit"): (lambda c: ("/v1/audit", {}), 200, {}),
    ("GET", "/v1/audit/verify"): (lambda c: ("/v1/audit/verify", {}), 200, {}),
    ("GET", "/v1/keys"): (lambda c: ("/v1/keys", {}), 200, {}),
    ("POST", "/v1/keys"): (lambda c: ("/v1/keys", {"json": {"name": "matrix", "role": "auditor"}}), 201, {}),
    ("DELETE", "/v1/keys/{key_id}"): (lambda c: (f"/v1/keys/{NOPE}", {}), 404, {}),
    ("GET", "/v1/sources/summary"): (lambda c: ("/v1/sources/summary", {}), 200, {}),
    ("PUT", "/v1/sources/{name}"): (lambda c: ("/v1/sources/no-such-source", {"json": {"basis": "consent"}}), 404, {}),
    ("GET", "/v1/sources/{name}/images"): (lambda c: ("/v1/sources/lfw/images", {}), 200, {}),
    ("DELETE", "/v1/sources/{name}/images"): (lambda c: ("/v1/sources/no-such-source/images", {}), 404, {}),
    ("GET", "/v1/jobs"): (lambda c: ("/v1/jobs", {}), 200, {}),
    ("POST", "/v1/jobs/{job_id}/cancel"): (lambda c: ("/v1/jobs/no-such-job/cancel", {}), 404, {}),
    ("GET", "/v1/ingest/limits"): (lambda c: ("/v1/ingest/limits", {}), 200, {}),
    ("POST", "/v1/ingest/uploads"): (lambda c: ("/v1/ingest/uploads", {"json": {"source": "matrix"}}), 201, {}),
    ("POST", "/v1/ingest/uploads/{job_id}/files"): (lambda c: ("/v1/ingest/uploads/no-such-job/files", {
        "params": {"chunk": 0}, "files": [("files", face_file())]}), 404, {}),
    ("POST", "/v1/ingest/uploads/{job_id}/start"): (lambda c: ("/v1/ingest/uploads/no-such-job/start", {}), 404, {}),
    ("GET", "/v1/policy"): (lambda c: ("/v1/policy", {}), 200, {}),
    ("PUT", "/v1/policy"): (lambda c: ("/v1/policy", {"json": {}}), 422, {}),  # nothing to change
}


def test_role_matrix(env, server):
    """Every endpoint x every role: a role outside ALLOWED gets 403 "forbidden" (and nothing happens); a role in it
    gets the endpoint's own answer (the exact status in REQUESTS)."""
    c = server.client
    r = c.post("/v1/ingest/path", headers=auth(env.keys["admin"]), json={"path": str(env.root / "empty"),
                                                                        "source": "matrix"})
    assert r.status_code == 202, r.text
    ctx = Ctx(env, server, r.json()["id"])
    stats = c.get("/v1/stats", headers=auth(env.keys["admin"])).json()
    failures, admin_jobs = [], [ctx.job_id]
    for method, path in operations(server):
        if (method, path) not in REQUESTS:
            failures.append(f"{method} {path}: no request in REQUESTS (new endpoint?)")
            continue
        make, ok_status, by_role = REQUESTS[(method, path)]
        allowed = ALLOWED[(method, path)]
        for role in ROLES:
            url, kw = make(ctx)
            r = c.request(method, url, headers=auth(env.keys[role]), **kw)
            if allowed is not PUBLIC and role not in allowed:
                want, code = 403, "forbidden"
            else:
                want, code = by_role.get(role, ok_status), None
            if r.status_code != want:
                failures.append(f"{method} {path} as {role}: {r.status_code}, want {want}: {r.text[:150]}")
            elif r.status_code >= 400:
                assert_clean_error(r, env, code=code)
            if r.status_code == 202:
                admin_jobs.append(r.json()["id"])
    assert not failures, "\n".join(failures)
    for job_id in admin_jobs:  # leave no job running for the next tests
        assert wait_job(c, job_id, env.keys["admin"])["state"] == "done"
    after = c.get("/v1/stats", headers=auth(env.keys["admin"])).json()
    assert after["faces"] == stats["faces"], "a refused or no-op request changed the gallery"
    for role in ROLES:
        me = c.get("/v1/me", headers=auth(env.keys[role])).json()
        assert me["role"] == role and set(me["permissions"]) == EXPECTED_PERMISSIONS[role]
        assert me["actor"] == f"{me['name']} (key {me['key_id']})"  # as the audit trail and confirmations name it


# --- bad uploads -------------------------------------------------------------------------------------------------------
def test_bad_uploads(env, server):
    c, token = server.client, env.keys["investigator"]
    face = lfw("Colin_Powell", 6).read_bytes()
    cases = [
        ("text sent as image/jpeg", ("p.jpg", b"hello, not an image", "image/jpeg"), 422, "bad_image"),
        ("text/plain", ("p.txt", b"hello", "text/plain"), 415, "unsupported_media_type"),
        ("no content type at all", ("p", face, ""), 415, "unsupported_media_type"),
        ("empty file", ("p.jpg", b"", "image/jpeg"), 422, "bad_image"),
        ("one byte over the upload limit", ("p.jpg", b"\xff" * (MAX_UPLOAD + 1), "image/jpeg"), 413, "too_large"),
        ("body over the request limit", ("p.jpg", b"\xff" * (MAX_BODY + 1), "image/jpeg"), 413, "too_large"),
        ("decompression bomb", ("bomb.png", bomb_png(), "image/png"), 422, "bad_image"),
        ("truncated jpeg", ("p.jpg", face[: len(face) // 3], "image/jpeg"), 422, "bad_image"),
        ("no face", ("p.jpg", gray_jpeg(), "image/jpeg"), 422, "no_face"),
    ]
    for what, probe, status, code in cases:
        r = c.post("/v1/search", headers=auth(token), files={"probe": probe},
                   data={"purpose": "testing", "case": "BAD-1"})
        assert r.status_code == status, (what, r.status_code, r.text)
        assert_clean_error(r, env, code=code)
    assert "too large" in search(c, token, bomb_png()).json()["error"]["message"]
    # purpose and case: missing form fields are request errors (422); present but refused by policy is 403
    files = {"probe": ("p.jpg", face, "image/jpeg")}
    for data, status, code in [({"case": "BAD-1"}, 422, "invalid_request"),
                               ({"purpose": "testing"}, 422, "invalid_request"),
                               ({"purpose": "", "case": "BAD-1"}, 422, "invalid_request"),
                               ({"purpose": "curiosity", "case": "BAD-1"}, 403, "policy"),
                               ({"purpose": "testing", "case": "   "}, 403, "policy")]:
        r = c.post("/v1/search", headers=auth(token), files=files, data=data)
        assert r.status_code == status, (data, r.text)
        assert_clean_error(r, env, code=code)
    r = c.post("/v1/verify", headers=auth(token), data={"purpose": "testing", "case": "BAD-1"},
               files={"a": ("a.jpg", face, "image/jpeg"), "b": ("b.txt", b"x", "text/plain")})
    assert_clean_error(r, env, 415, "unsupported_media_type")
    r = c.post("/v1/optouts", headers=auth(env.keys["privacy-officer"]), data={"reference": "BAD-OPT"},
               files=[("photos", ("x.jpg", b"not an image", "image/jpeg"))])
    assert_clean_error(r, env, 422, "bad_image")
    # an upload batch with one bad file stores nothing and starts no job
    r = c.post("/v1/ingest/upload", headers=auth(env.keys["admin"]), data={"source": "bad-batch"},
               files=[("files", ("ok.jpg", face, "image/jpeg")), ("files", ("x.txt", b"x", "text/plain"))])
    assert_clean_error(r, env, 415, "unsupported_media_type")
    assert not (env.data / "uploads" / "bad-batch").exists()
    # a search of a refused probe is not served, and the server is still healthy
    assert c.get("/healthz").json()["status"] == "ok"


def test_huge_ids_are_client_errors(env, server):
    """Ids beyond SQLite's int64 used to raise OverflowError deep in the catalog: a 500."""
    c, huge = server.client, 10**30
    for method, url, token, kw in [
        ("GET", f"/v1/faces/{huge}/crop", "investigator", {"params": WHY_Q}),
        ("GET", f"/v1/faces/{huge}/image", "investigator", {"params": WHY_Q}),
        ("DELETE", f"/v1/faces/{huge}", "admin", {}),
        ("GET", f"/v1/people/{huge}", "investigator", {"params": WHY_Q}),
        ("DELETE", f"/v1/keys/{huge}", "admin", {}),
        ("POST", "/v1/confirmations", "investigator", {"json": {"case": "HUGE-1", "face_id": huge}}),
        ("POST", "/v1/people/merge", "investigator", {"json": {"person_ids": [huge, huge + 1]}}),
    ]:
        r = c.request(method, url, headers=auth(env.keys[token]), **kw)
        assert 400 <= r.status_code < 500, (method, url, r.status_code, r.text)
        assert_clean_error(r, env)


def test_crop_image_of_missing_file_is_404_without_path(env, server):
    env.doomed_file.unlink(missing_ok=True)
    r = server.client.get(f"/v1/faces/{env.doomed_face}/image", headers=auth(env.keys["investigator"]),
                          params=WHY_Q)
    assert_clean_error(r, env, 404, "not_found")


def test_crop_of_missing_file_is_404_without_path(env, server):
    env.doomed_file.unlink(missing_ok=True)
    r = server.client.get(f"/v1/faces/{env.doomed_face}/crop", headers=auth(env.keys["investigator"]),
                          params=WHY_Q)
    assert_clean_error(r, env, 404, "not_found")


# --- traversal ---------------------------------------------------------------------------------------------------------
def test_ingest_path_traversal(env, server):
    c, admin = server.client, env.keys["admin"]
    secret = (env.outside / "secret.jpg").read_bytes()
    faces_before = c.get("/v1/stats", headers=auth(admin)).json()["faces"]
    for path in [f"{env.root}/../outside", f"{env.root}/mixed/../../outside/secret.jpg", str(env.outside),
                 "/etc", "/", str(env.root / "linkdir"), str(env.root / "linkdir" / "secret.jpg"),
                 str(env.root / "mixed" / "leak.jpg"), "mixed", "../outside", str(env.data)]:
        r = c.post("/v1/ingest/path", headers=auth(admin), json={"path": path, "source": "trav"})
        assert_clean_error(r, env, 403, "path_not_allowed")
    assert_clean_error(c.post("/v1/ingest/path", headers=auth(admin), json={"path": str(env.root / "nope"),
                                                                           "source": "trav"}), env, 404)
    # a folder inside the root holding a link to a file outside it: only the real file is indexed
    r = c.post("/v1/ingest/path", headers=auth(admin), json={"path": str(env.root / "mixed"), "source": "trav"})
    assert r.status_code == 202, r.text
    job = wait_job(c, r.json()["id"], admin)
    assert job["state"] == "done", job
    res = job["result"]
    assert res["files_seen"] == 1 and res["images_indexed"] == 1 and res["faces_found"] == 1, res
    assert [e["path"] for e in res["errors"]] == [str(env.root / "mixed" / "leak.jpg")], res
    assert res["errors"][0]["reason"] == "outside the allowed ingest roots"
    assert job["errors"] == 1 and job["faces"] == 1, job
    # the whole root, with a linked folder pointing outside: nothing new, both outside files refused
    r = c.post("/v1/ingest/path", headers=auth(admin), json={"path": str(env.root), "source": "trav"})
    job = wait_job(c, r.json()["id"], admin)
    assert job["state"] == "done", job
    refused = sorted(e["path"] for e in job["result"]["errors"])
    # the link to an outside folder is named once, without the names of the files behind it
    assert refused == sorted([str(env.root / "linkdir"), str(env.root / "mixed" / "leak.jpg")])
    assert "secret" not in json.dumps(job["result"])
    assert job["result"]["images_indexed"] == 0 and job["result"]["faces_found"] == 0
    assert c.get("/v1/stats", headers=auth(admin)).json()["faces"] == faces_before + 1
    # the outside face is not in the gallery: its own photo finds no near-identical candidate
    r = search(c, env.keys["investigator"], secret, top=50)
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "yunet-omz95"  # which pack made the embeddings
    cands = [x for p in r.json()["results"] for x in p["candidates"]]
    assert cands and max(x["similarity"] for x in cands) < 0.95, cands[:3]
    assert not {x["path"] for x in cands} & {"secret.jpg", "leak.jpg"}


def test_encoded_traversal_in_path_parameters(env, server):
    c = server.client
    po, inv = auth(env.keys["privacy-officer"]), auth(env.keys["investigator"])
    optouts_before = c.get("/v1/optouts", headers=po).json()
    for method, url, headers in [
        ("DELETE", "/v1/optouts/..%2f..%2fetc", po),
        ("DELETE", "/v1/optouts/..%2F..%2F..%2Fetc%2Fpasswd", po),
        ("DELETE", "/v1/optouts/%2e%2e", po),
        ("GET", "/v1/faces/..%2f..%2fetc%2fpasswd/crop", inv),
        ("GET", "/v1/faces/1%2f..%2f..%2fimage", inv),
        ("GET", "/v1/people/..%2f1", inv),
        ("GET", "/v1/jobs/..%2f..%2fetc%2fpasswd", inv),
        ("GET", "/..%2f..%2f..%2f..%2fetc%2fpasswd", {}),
        ("GET", "/%2e%2e/%2e%2e/%2e%2e/etc/passwd", {}),
        ("GET", "/static/..%2f..%2fapp.py", {}),
    ]:
        r = c.request(method, url, headers=headers)
        assert 400 <= r.status_code < 500, (url, r.status_code, r.text)
        assert "root:" not in r.text and "import " not in r.text
    assert c.get("/v1/optouts", headers=po).json() == optouts_before
    # references are file-name safe: traversal in a form field is refused before any face work
    r = c.post("/v1/access", headers=po, data={"reference": "../../tmp/evil"},
               files=[("photos", face_file())])
    assert_clean_error(r, env, 400, "bad_request")
    r = c.get("/v1/confirmations", headers=inv, params={"case": "../../etc/passwd"})
    assert_clean_error(r, env, 400, "bad_request")


def test_upload_file_names_cannot_escape_and_need_no_suffix(env, server):
    """Upload names are reduced to a safe base name inside the data folder; a name without an image suffix (a
    browser Blob is sent as "blob") used to be stored but silently skipped by the job."""
    c, admin = server.client, env.keys["admin"]
    long_name = "x" * 100 + ".jpg"  # cut to 80 characters: the suffix used to be lost
    files = [("files", ("../../../escape.jpg", lfw("Vladimir_Putin", 1).read_bytes(), "image/jpeg")),
             ("files", ("blob", lfw("Vladimir_Putin", 2).read_bytes(), "image/jpeg")),
             ("files", (long_name, lfw("Vladimir_Putin", 3).read_bytes(), "image/jpeg"))]
    r = c.post("/v1/ingest/upload", headers=auth(admin), data={"source": "names"}, files=files)
    assert r.status_code == 202, r.text
    job = wait_job(c, r.json()["id"], admin)
    assert job["state"] == "done" and job["result"]["images_indexed"] == 3, job
    stored = [p for p in env.base.rglob("*") if p.is_file() and "escape" in p.name]
    assert len(stored) == 1 and (env.data / "uploads") in stored[0].parents, stored


# --- rate limiting -----------------------------------------------------------------------------------------------------
def test_rate_limit_per_key(env, limited):
    c, a, b = limited.client, auth(env.keys["rl-1"]), auth(env.keys["rl-2"])
    for _ in range(RATE_LIMIT):
        assert c.get("/v1/me", headers=a).status_code == 200
    r = c.get("/v1/me", headers=a)
    assert_clean_error(r, env, 429, "rate_limited")
    retry = r.headers["retry-after"]
    assert retry.isdigit() and 1 <= int(retry) <= 60 / RATE_LIMIT + 1, retry
    assert c.get("/v1/me", headers=b).status_code == 200  # another key is unaffected
    assert c.get("/healthz").status_code == 200  # and /healthz is not limited
    assert c.get("/v1/me", headers=a).status_code == 429


# --- two-person confirmation -------------------------------------------------------------------------------------------
def test_two_person_confirmation(env, server):
    c, case, fid = server.client, "CASE-2P", env.face_id
    a, b = auth(env.keys["investigator"]), auth(env.keys["investigator-2"])
    first = c.post("/v1/confirmations", headers=a, json={"case": case, "face_id": fid}).json()
    assert first["status"].startswith("awaiting") and len(first["confirmed_by"]) == 1, first
    again = c.post("/v1/confirmations", headers=a, json={"case": case, "face_id": fid}).json()
    assert again["status"].startswith("awaiting") and again["confirmed_by"] == first["confirmed_by"], again
    second = c.post("/v1/confirmations", headers=b, json={"case": case, "face_id": fid}).json()
    assert second["status"] == "confirmed" and len(set(second["confirmed_by"])) == 2, second
    assert c.get("/v1/confirmations", headers=a, params={"case": case}).json()[str(fid)]["status"] == "confirmed"
    assert c.get("/v1/confirmations", headers=a, params={"case": "OTHER-CASE"}).json() == {}
    # a search for the case shows the candidate as confirmed
    res = search(c, env.keys["investigator"], lfw("Colin_Powell", 6).read_bytes(), case=case, top=20).json()
    cand = next(x for p in res["results"] for x in p["candidates"] if x["face_id"] == fid)
    assert cand["confirmation"] == "confirmed" and len(cand["confirmed_by"]) == 2
    # both investigators are in the audit trail
    recs = c.get("/v1/audit", headers=auth(env.keys["auditor"]), params={"case": case, "action": "confirm"}).json()
    actors = [x["actor"] for x in recs]
    want_a = f"t-investigator (key {env.key_ids['investigator']})"
    want_b = f"t-investigator-2 (key {env.key_ids['investigator-2']})"
    assert sorted(actors) == sorted([want_a, want_a, want_b]), actors
    assert all(x["details"]["face_id"] == fid and x["role"] == "investigator" for x in recs)
    assert c.get("/v1/audit/verify", headers=auth(env.keys["auditor"])).json()["ok"] is True


# --- ingest while searching ----------------------------------------------------------------------------------------------
def test_ingest_while_searching(env, server):
    c, admin, inv = server.client, env.keys["admin"], env.keys["investigator"]
    uploads = [lfw(name, i) for name in ("Junichiro_Koizumi", "Jean_Chretien") for i in range(1, 11)]
    probe = lfw("Colin_Powell", 6).read_bytes()
    before = c.get("/v1/stats", headers=auth(admin)).json()["faces"]
    r = c.post("/v1/ingest/upload", headers=auth(admin), data={"source": "concurrent"},
               files=[("files", (p.name, p.read_bytes(), "image/jpeg")) for p in uploads])
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    stop = threading.Event()
    seen: list[list[tuple[int, str, int]]] = [[] for _ in range(3)]
    finished: list[float] = []  # when each search returned

    def searcher(out: list) -> None:
        with httpx.Client(base_url=server.url, timeout=60) as own:
            while not stop.is_set():
                s = search(own, inv, probe, case="CONCURRENT-1")
                top = s.json()["results"][0] if s.status_code == 200 else None
                out.append((s.status_code, top["candidates"][0]["path"] if top else s.text[:200],
                            top["gallery_size"] if top else -1))
                finished.append(time.monotonic())

    threads = [threading.Thread(target=searcher, args=(out,), daemon=True) for out in seen]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    running_until = 0.0
    try:
        while time.monotonic() < deadline:
            job = c.get(f"/v1/jobs/{job_id}", headers=auth(admin)).json()
            if job["state"] in ("done", "failed"):
                break
            running_until = time.monotonic()  # the job was seen still running at this time
            time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert job["state"] == "done", job
    assert job["total"] == len(uploads) and job["done"] == len(uploads) and job["errors"] == 0, job
    res = job["result"]
    assert res["images_indexed"] == len(uploads) and res["errors"] == [], res
    assert job["faces"] == res["faces_found"] >= len(uploads) - res["images_without_faces"] > 0, job
    assert all(out for out in seen), "a search thread never completed a search"
    assert sum(t < running_until for t in finished) >= 3, "no search was served while the job ran"
    results = [x for out in seen for x in out]
    assert all(status == 200 for status, _, _ in results), [x for x in results if x[0] != 200][:3]
    assert all(path.startswith("Colin_Powell") for _, path, _ in results), results[:5]
    for out in seen:  # each thread saw the gallery only grow
        sizes = [size for _, _, size in out]
        assert sizes == sorted(sizes), sizes
    stats = c.get("/v1/stats", headers=auth(admin)).json()
    assert stats["faces"] == before + res["faces_found"]
    final = search(c, inv, probe, case="CONCURRENT-1").json()["results"][0]
    assert final["gallery_size"] == stats["faces"] - stats["low_quality_faces"] >= max(x[2] for x in results)
    # the new faces are searchable: a held-out photo of an uploaded person finds them
    new = search(c, inv, lfw("Junichiro_Koizumi", 11).read_bytes(), case="CONCURRENT-1").json()
    assert new["results"][0]["candidates"][0]["path"].split("-", 1)[1].startswith("Junichiro_Koizumi"), new


# --- schemathesis ------------------------------------------------------------------------------------------------------
def _fuzz_spec(server: Server) -> dict:
    """The server's OpenAPI document, with the upload parts declared as image/jpeg (FastAPI leaves the part's type
    out, so a generator would send untyped parts that never get past the 415 check)."""
    spec = server.client.get("/openapi.json").json()
    for ops in spec["paths"].values():
        for op in ops.values():
            mp = op.get("requestBody", {}).get("content", {}).get("multipart/form-data")
            if mp:
                schema = mp["schema"]  # a $ref, or inline (an endpoint that parses its own form: routes_admin.py)
                props = (spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]] if "$ref" in schema
                         else schema)["properties"]
                mp["encoding"] = {k: {"contentType": "image/jpeg"} for k, v in props.items()
                                  if "contentMediaType" in json.dumps(v) or '"binary"' in json.dumps(v)}
    return spec


def _fuzz_test(op, headers: dict[str, str], statuses: set[int], env: Env) -> Callable[[], None]:
    """A hypothesis test of one schemathesis operation."""
    from hypothesis import HealthCheck, Phase, given, settings
    from schemathesis.checks import content_type_conformance, not_a_server_error, response_schema_conformance

    @given(case=op.as_strategy())
    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck))
    def run(case) -> None:
        response = case.call(headers=headers, timeout=60)
        statuses.add(response.status_code)
        assert "Traceback" not in response.text, response.text[:300]
        if response.status_code >= 400:  # (the audit trail does list ingested paths, for auditors)
            assert str(env.base) not in response.text, response.text[:300]
        case.validate_response(response, checks=[not_a_server_error, response_schema_conformance,
                                                 content_type_conformance])

    return run


def test_schemathesis(env, fuzz_server):
    """Generated requests for every operation (with a key of a role that may call it, admin where admin may): no 5xx,
    responses (errors included) match the documented schemas and content types, no trace in any body and no
    server path in any error.

    Nothing is excluded. DELETE /v1/keys/{key_id} runs last because it may revoke the key in use; the server
    runs over its own copy of the data folder because faces get deleted and keys revoked."""
    schemathesis = pytest.importorskip("schemathesis")
    schema = schemathesis.openapi.from_dict(_fuzz_spec(fuzz_server))
    schema.config.update(base_url=fuzz_server.url)
    ops = sorted((r.ok() for r in schema.get_all_operations()),
                 key=lambda o: (o.method.upper() == "DELETE" and o.path.startswith("/v1/keys"), o.path, o.method))
    assert {(o.method.upper(), o.path) for o in ops} == set(ALLOWED)
    failures: dict[str, str] = {}
    reached: dict[str, set[int]] = {}
    for op in ops:
        name = f"{op.method.upper()} {op.path}"
        allowed = ALLOWED[(op.method.upper(), op.path)]
        role = "admin" if allowed is PUBLIC or "admin" in allowed else sorted(allowed)[0]
        run = _fuzz_test(op, auth(env.keys[role]), reached.setdefault(name, set()), env)
        try:
            run()
        except Exception as e:  # collect every operation's failure, not just the first
            failures[name] = str(e)[:2000]
    assert not failures, "\n\n".join(f"{k}:\n{v}" for k, v in failures.items())
    for name, statuses in reached.items():  # the generated requests got past authentication
        assert statuses - {401}, f"{name}: only {statuses}"


def test_people_cohesion_and_weakest_first(env, server):
    who = auth(env.keys["investigator"])
    listed = server.client.post("/v1/people/cluster", params={"full": "true", **WHY_Q}, headers=who)
    assert listed.status_code == 200, listed.text
    people = server.client.get("/v1/people", params={"sort": "weakest", "min_faces": 2, **WHY_Q},
                               headers=who).json()
    assert len(people) >= 2
    cohesion = [p["cohesion"] for p in people]
    assert cohesion == sorted(cohesion) and all(0 < p["cohesion_fmr"] < 1 for p in people)
    one = server.client.get(f"/v1/people/{people[0]['id']}", params=WHY_Q, headers=who).json()
    assert one["cohesion"] == people[0]["cohesion"]
    assert server.client.get("/v1/people", params={"sort": "name", **WHY_Q}, headers=who).status_code == 422
