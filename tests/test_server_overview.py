"""GET /v1/overview (filtered by role, the admin's warnings) and POST /v1/verify with face choices, through the app
(FastAPI's TestClient over `create_app`) on a small real LFW index: what each role sees, bad requests, and the
audit records of verify and per-face search."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from tests.web_support import DATA, lfw, lfw_gallery, two_faces

pytestmark = pytest.mark.skipif(not (DATA / "lfw").is_dir(), reason=f"LFW images not found at {DATA} "
                                "(../shared/data is absent)")

PEOPLE = ["Colin_Powell", "Tony_Blair", "Gerhard_Schroeder"]
PER_PERSON = 4
ROLES = ("admin", "investigator", "auditor", "privacy-officer")


def _client(data: Path):
    from fastapi.testclient import TestClient

    from faceindex.config import Settings
    from faceindex.server.app import create_app

    return TestClient(create_app(Settings(data=data, rate_limit=100_000, auth_failure_limit=100_000, workers=1)))


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from faceindex import FaceIndex

    root = tmp_path_factory.mktemp("overview")
    gallery = lfw_gallery(root / "gallery", PEOPLE, PER_PERSON)
    data = root / "data"
    with FaceIndex.open(data) as fi:
        assert fi.add([gallery], "lfw", workers=1).ok
        fi.set_source("lfw", basis="consent", retention_days=3650)
        keys = {role: fi.create_key(f"t-{role}", role)[1] for role in ROLES}
    pair = two_faces(lfw("Tony_Blair", 10), lfw("Colin_Powell", 10), root / "pair.jpg")
    with _client(data) as client:
        yield {"root": root, "data": data, "keys": keys, "client": client, "pair": pair}


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_overview_shows_each_role_what_it_may_see(env):
    c, keys = env["client"], env["keys"]
    seen = {role: c.get("/v1/overview", headers=auth(keys[role])) for role in ROLES}
    assert all(r.status_code == 200 for r in seen.values()), {k: r.text for k, r in seen.items()}
    o = {role: r.json() for role, r in seen.items()}
    for role, x in o.items():  # every role: gallery, model, index, chain state
        assert x["role"] == role and x["name"] == f"t-{role}"
        assert x["gallery_faces"] >= len(PEOPLE) * PER_PERSON - 1 and x["images"] == len(PEOPLE) * PER_PERSON
        assert x["model_pack"] and x["index_kind"] and x["source_count"] == 1
        assert x["audit"]["ok"] is True and x["audit"]["records"] >= 1 and x["audit"]["checked_at"]
    inv = o["investigator"]
    assert inv["sources"] is None and inv["jobs"] is None and inv["attention"] is None
    assert inv["audit"]["head"] is None and inv["audit"]["problem"] is None
    assert o["auditor"]["audit"]["head"].startswith(f"{o['auditor']['audit']['records']}:")
    assert o["auditor"]["jobs"] is None and o["auditor"]["attention"] is None
    assert [s["name"] for s in o["privacy-officer"]["sources"]] == ["lfw"]
    adm = o["admin"]
    assert adm["attention"] == [] and adm["jobs"] == [] and adm["audit"]["head"] is None
    src = adm["sources"][0]
    assert src["basis"] == "consent" and src["retention_days"] == 3650 and src["expired"] is False
    assert src["files"] == len(PEOPLE) * PER_PERSON and src["next_expiry"]


@pytest.mark.parametrize(("method", "url", "headers", "status", "code"), [
    ("GET", "/v1/overview", {}, 401, "unauthorized"),
    ("GET", "/v1/overview", {"Authorization": "Bearer fi_nope_nope"}, 401, "unauthorized"),
    ("GET", "/v1/overview?jobs_limit=0", "admin", 422, "invalid_request"),
    ("GET", "/v1/overview?jobs_limit=51", "admin", 422, "invalid_request"),
    ("GET", "/v1/overview?jobs_limit=many", "admin", 422, "invalid_request"),
    ("POST", "/v1/overview", "admin", 405, "method_not_allowed"),
])
def test_overview_bad_requests(env, method, url, headers, status, code):
    if isinstance(headers, str):
        headers = auth(env["keys"][headers])
    r = env["client"].request(method, url, headers=headers)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code and r.json()["error"]["message"]


def test_admin_is_warned_of_a_failed_job_an_expired_source_and_a_broken_chain(env, tmp_path, monkeypatch):
    """On a copy of the data folder (it is tampered with): each condition made real, each warning shown."""
    from faceindex import FaceIndex
    from faceindex.server import routes_overview
    from faceindex.server.jobs import Job, save

    data = tmp_path / "data"
    shutil.copytree(env["data"], data, symlinks=True)
    with FaceIndex.open(data) as fi:
        save(fi.catalog, Job(id="f" * 32, kind="ingest", spec={"source": "lfw", "actor": "t-admin"},
                             state="failed", error="the disk is full", owner=1))
        fi.set_source("lfw", retention_days=30)
    with sqlite3.connect(data / "catalog.db") as db:  # files added long ago, and never purged
        db.execute("UPDATE files SET added_at = '2001-01-01T00:00:00+00:00'")
    with _client(data) as c:
        before = c.get("/v1/overview", headers=auth(env["keys"]["admin"])).json()
        assert before["audit"]["ok"] is True and before["audit"]["checked_at"]
        with sqlite3.connect(data / "audit.db") as db:  # as someone holding the file would: triggers dropped first
            for (trigger,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
                db.execute(f"DROP TRIGGER {trigger}")
            db.execute("UPDATE audit SET actor = 'mallory' WHERE seq = 1")
        # a check is reused for CHAIN_CACHE_S; the next one (due at once here) finds the edit
        assert c.get("/v1/overview", headers=auth(env["keys"]["admin"])).json()["audit"]["ok"] is True
        monkeypatch.setattr(routes_overview, "CHAIN_CACHE_S", 0.0)
        adm = c.get("/v1/overview", headers=auth(env["keys"]["admin"])).json()
        inv = c.get("/v1/overview", headers=auth(env["keys"]["investigator"])).json()
    kinds = {a["kind"]: a for a in adm["attention"]}
    assert set(kinds) == {"job_failed", "source_expired", "audit_broken"}, adm["attention"]
    assert "the disk is full" in kinds["job_failed"]["message"]
    assert "lfw" in kinds["source_expired"]["message"] and "30-day" in kinds["source_expired"]["message"]
    assert "record 1" in kinds["audit_broken"]["message"]
    assert [kinds[k]["page"] for k in ("job_failed", "source_expired", "audit_broken")] == ["photos", "collections",
                                                                                          "audit"]
    assert adm["sources"][0]["expired"] is True
    assert [j["state"] for j in adm["jobs"]] == ["failed"] and adm["jobs"][0]["error"] == "the disk is full"
    assert adm["audit"]["ok"] is False and adm["audit"]["first_bad_seq"] == 1
    # the investigator learns that the chain is broken, not where or how, and gets no admin warnings
    assert inv["audit"]["ok"] is False and inv["audit"]["problem"] is None and inv["attention"] is None


def _faces(c, token: str, photo: Path) -> list[dict]:
    r = c.post("/v1/detect", headers=auth(token), files={"image": (photo.name, photo.read_bytes(), "image/jpeg")})
    assert r.status_code == 200, r.text
    return r.json()


def _left_right(faces: list[dict], width: int) -> tuple[int, int]:
    """The largest face in the left half and in the right half of a two-person photo."""
    def area(f): return (f["box"][2] - f["box"][0]) * (f["box"][3] - f["box"][1])
    left = max((f for f in faces if (f["box"][0] + f["box"][2]) / 2 < width / 2), key=area)
    right = max((f for f in faces if (f["box"][0] + f["box"][2]) / 2 >= width / 2), key=area)
    return left["index"], right["index"]


def _verify(c, token: str, a: Path, b: Path, **form):
    files = {"a": (a.name, a.read_bytes(), "image/jpeg"), "b": (b.name, b.read_bytes(), "image/jpeg")}
    return c.post("/v1/verify", headers=auth(token), files=files,
                  data={"purpose": "investigation", "case": "OV-1", **form})


def test_verify_compares_the_chosen_faces_and_audits_them(env):
    c, inv = env["client"], env["keys"]["investigator"]
    pair, powell = env["pair"], lfw("Colin_Powell", 11)
    left, right = _left_right(_faces(c, inv, pair), 500)
    same = _verify(c, inv, pair, powell, face_a=str(right))
    other = _verify(c, inv, pair, powell, face_a=str(left))
    assert same.status_code == other.status_code == 200, (same.text, other.text)
    same, other = same.json(), other.json()
    assert same["face_a"]["index"] == right and other["face_a"]["index"] == left
    assert same["same_person_candidate"] is True and other["same_person_candidate"] is False
    assert same["similarity"] > other["similarity"] and same["fmr"] < other["fmr"]
    from faceindex import FaceIndex

    with FaceIndex.open(env["data"]) as fi:
        recs = [r for r in fi.audit.query(action="verify", case_ref="OV-1") if r.details.get("decision")]
    assert {r.details["face_a"] for r in recs} >= {left, right}
    assert all(r.purpose == "investigation" and r.actor == "t-investigator (key 2)" for r in recs)


@pytest.mark.parametrize(("form", "role", "status", "code", "says"), [
    ({"face_a": "7"}, "investigator", 422, "no_face", "there is no face 7"),
    ({"face_b": "-1"}, "investigator", 422, "invalid_request", "face_b"),
    ({"face_a": "left"}, "investigator", 422, "invalid_request", "face_a"),
    ({"purpose": ""}, "investigator", 422, "invalid_request", "purpose"),
    ({"case": " "}, "investigator", 403, "policy", "case"),
    ({"purpose": "curiosity"}, "investigator", 403, "policy", "curiosity"),
    ({}, "auditor", 403, "forbidden", "auditor"),
    ({}, "admin", 403, "forbidden", "admin"),
])
def test_verify_bad_requests(env, form, role, status, code, says):
    r = _verify(env["client"], env["keys"][role], env["pair"], lfw("Colin_Powell", 11), **form)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code and says in r.json()["error"]["message"], r.text


def test_verify_without_a_key_is_refused_before_the_upload_is_read(env):
    pair = env["pair"].read_bytes()
    r = env["client"].post("/v1/verify", files={"a": ("a.jpg", pair, "image/jpeg"), "b": ("b.jpg", pair, "image/jpeg")},
                           data={"purpose": "investigation", "case": "OV-1"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"


def test_search_one_face_at_a_time_is_audited_per_face(env):
    """The search page searches each selected face of a probe with its own call: one audit record per face."""
    c, inv, pair = env["client"], env["keys"]["investigator"], env["pair"]
    left, right = _left_right(_faces(c, inv, pair), 500)
    tops = {}
    for face in (left, right):
        r = c.post("/v1/search", headers=auth(inv), files={"probe": ("pair.jpg", pair.read_bytes(), "image/jpeg")},
                   data={"purpose": "investigation", "case": "OV-MULTI", "face": str(face), "top": "3"})
        assert r.status_code == 200, r.text
        (res,) = r.json()["results"]
        assert res["face"]["index"] == face
        tops[face] = res["candidates"][0]["path"]
    assert tops[left].startswith("Tony_Blair_") and tops[right].startswith("Colin_Powell_"), tops
    from faceindex import FaceIndex

    with FaceIndex.open(env["data"]) as fi:
        recs = fi.audit.query(action="search", case_ref="OV-MULTI")
    assert sorted(r.details["face"] for r in recs) == sorted([left, right])
    assert all(len(r.details["results"]) == 1 for r in recs)  # one face per record


def test_overview_and_jobs_on_a_postgresql_catalog(pg_url, tmp_path):
    """The overview's chain check opens the audit log where it lives (the catalog's database), and the jobs list
    reads the catalog's jobs table, on PostgreSQL as on SQLite."""
    from fastapi.testclient import TestClient

    from faceindex import FaceIndex
    from faceindex.config import Settings
    from faceindex.server.app import create_app

    data = tmp_path / "data"
    with FaceIndex.open(data, catalog=pg_url) as fi:
        assert fi.add([lfw("Tony_Blair", 1), lfw("Colin_Powell", 1)], "lfw", workers=1).ok
        token = fi.create_key("t-admin", "admin")[1]
    settings = Settings(data=data, catalog=pg_url, rate_limit=100_000, auth_failure_limit=100_000, workers=1)
    with TestClient(create_app(settings)) as c:
        for _ in range(20):  # the first answer may come before the background check ends
            o = c.get("/v1/overview", headers=auth(token))
            assert o.status_code == 200, o.text
            if o.json()["audit"]["ok"] is not None:
                break
        assert o.json()["audit"]["ok"] is True and o.json()["audit"]["records"] >= 1, o.json()["audit"]
        assert o.json()["faces"] == 2
        jobs = c.get("/v1/jobs", headers=auth(token))
        assert jobs.status_code == 200 and jobs.json() == [], jobs.text
