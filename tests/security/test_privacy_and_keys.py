"""Subject access needs the data-subject-request purpose and a reference and shows no server paths; API key names
are identities that cannot pass for another actor, with their creator on record."""

from __future__ import annotations

from faceindex.audit import AuditLog

from .conftest import PEOPLE, auth, lfw, needs_lfw

pytestmark = needs_lfw


def _access(c, token, params=None, **data):
    return c.post("/v1/access", headers=auth(token), data=data, params=params,
                  files=[("photos", ("me.jpg", lfw(PEOPLE[2], 5).read_bytes(), "image/jpeg"))])


def test_subject_access_needs_its_purpose_and_hides_the_server_layout(site, server) -> None:
    c, dana = server.client, site.tokens["dana"]
    for data in ({"reference": "SAR-1"}, {"reference": "SAR-1", "purpose": "investigation"}):
        r = _access(c, dana, **data)
        assert r.status_code == 403 and r.json()["error"]["code"] == "policy", r.text
        assert "data-subject-request" in r.json()["error"]["message"]
    r = _access(c, dana, reference="SAR-1", purpose="data-subject-request")
    assert r.status_code == 200, r.text
    faces = r.json()["faces"]
    assert faces and all("path" not in f and "/" not in f["file"] for f in faces), faces
    assert str(site.data.parent) not in r.text
    r = _access(c, dana, {"format": "html"}, reference="SAR-1", purpose="data-subject-request")
    assert r.status_code == 200 and "<html" in r.text.lower() and str(site.data.parent) not in r.text
    with AuditLog(site.data / "audit.db") as log:
        rec = log.query(action="access", case_ref="SAR-1")[-1]
    assert rec.purpose == "data-subject-request" and rec.actor.startswith("dana (key ")


def test_key_names_cannot_pass_for_another_actor(site, server) -> None:
    c, root = server.client, auth(site.tokens["root"])
    for name in ("alice (key 2)", "alice (key 2", "Alice", "ALICE", "alice\u200b", "аlice (key 1)", "a lice"):
        r = c.post("/v1/keys", headers=root, json={"name": name, "role": "investigator"})
        assert r.status_code in (400, 422), (name, r.status_code, r.text)
    r = c.post("/v1/keys", headers=root, json={"name": "erin", "role": "investigator"})
    assert r.status_code == 201, r.text
    key_id = r.json()["id"]
    with AuditLog(site.data / "audit.db") as log:
        rec = [x for x in log.query(action="key.create") if x.details["key_id"] == key_id][0]
    assert rec.actor == f"root (key {site.key_ids['root']})" == rec.details["created_by"]
    listed = next(k for k in c.get("/v1/keys", headers=root).json() if k["id"] == key_id)
    assert listed["name"] == "erin" and listed["created_by"] == rec.actor
