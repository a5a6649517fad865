"""Reads that reveal faces (people, face crops, source photos) need a purpose and a case and are recorded; the rate
limit charges work done (pixels decoded), per user (a user's keys share one budget), and counts failed logins."""

from __future__ import annotations

import httpx
import pytest
from PIL import Image

from faceindex.audit import AuditLog

from .conftest import PEOPLE, Server, auth, build_site, needs_lfw

pytestmark = needs_lfw

WHY = {"purpose": "investigation", "case": "READS-1"}


def _reads(site, pid: int = 1) -> list[tuple[str, str, dict]]:
    face = site.face_ids[PEOPLE[0]][0]
    return [("POST", "/v1/people/cluster", {}),
            ("GET", "/v1/people", {"params": {"min_faces": 1}}),
            ("GET", f"/v1/people/{pid}", {}),
            ("PUT", f"/v1/people/{pid}/name", {"json": {"name": "Subject A"}}),
            ("GET", f"/v1/faces/{face}/crop", {}),
            ("GET", f"/v1/faces/{face}/image", {})]


def _with_why(kw: dict) -> dict:
    return {**kw, "params": {**kw.get("params", {}), **WHY}}


def test_reads_that_reveal_faces_need_a_purpose_and_are_recorded(site, server) -> None:
    c, alice = server.client, auth(site.tokens["alice"])
    for method, url, kw in _reads(site):
        r = c.request(method, url, headers=alice, **kw)
        assert r.status_code == 403 and r.json()["error"]["code"] == "policy", (url, r.status_code, r.text)
        assert "purpose" in r.json()["error"]["message"]
    with AuditLog(site.data / "audit.db") as log:
        before = log.head()[0]
    pid = None
    for method, url, kw in _reads(site, 0):
        if pid is not None:
            url = url.replace("/people/0", f"/people/{pid}")
        r = c.request(method, url, headers=alice, **_with_why(kw))
        assert r.status_code == 200, (url, r.status_code, r.text)
        if url.endswith("/cluster"):
            pid = r.json()[0]["id"]
    with AuditLog(site.data / "audit.db") as log:
        recs = [x for x in log.query() if x.seq > before]
    assert [x.action for x in recs] == ["people.cluster", "people.list", "people.show", "people.name", "face.crop",
                                        "face.image"]
    for x in recs:
        assert x.actor.startswith("alice (key ") and (x.purpose, x.case_ref) == ("investigation", "READS-1")
    face = site.face_ids[PEOPLE[0]][0]
    assert recs[4].details["face_ids"] == [face] and recs[5].details["face_ids"] == [face]
    assert recs[2].details["face_ids"]  # which faces the person view showed
    # a purpose the policy does not allow is refused like a search's
    r = c.get("/v1/people", headers=alice, params={"purpose": "curiosity", "case": "X"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "policy"


@pytest.fixture(scope="module")
def costly(tmp_path_factory):
    """A site with one 16-megapixel photo beside the small LFW ones, served with a small budget."""
    base = tmp_path_factory.mktemp("costly")
    site = build_site(base)
    big = base / "big" / "big.jpg"
    big.parent.mkdir()
    src = Image.open(site.gallery / PEOPLE[1] / sorted(p.name for p in (site.gallery / PEOPLE[1]).iterdir())[0])
    src.resize((4000, 4000), Image.Resampling.BICUBIC).save(big, quality=90)
    from faceindex import FaceIndex

    with FaceIndex.open(site.data) as fi:
        assert fi.add([big.parent], "big", workers=1).faces_found >= 1
        big_face = next(i for i, r in fi.catalog.face_records(fi.catalog.face_ids().tolist()).items()
                        if r.path == str(big))
    server = Server(site.data, base / "limited.log", rate_limit="30", auth_failure_limit="10")
    yield site, server, big_face
    server.stop()


def _until_refused(c: httpx.Client, n: int, method: str, url: str, headers: dict, **kw) -> int:
    """How many of `n` requests were served before the first 429."""
    for i in range(n):
        r = c.request(method, url, headers=headers, **kw)
        if r.status_code == 429:
            assert r.json()["error"]["code"] == "rate_limited" and int(r.headers["retry-after"]) >= 1
            return i
        assert r.status_code == 200, (url, r.status_code, r.text)
    return n


def test_the_limit_charges_pixels_decoded(costly) -> None:
    site, server, big_face = costly
    small_face = site.face_ids[PEOPLE[0]][0]
    c = server.client
    # 16 megapixels cost 8 units each: a budget of 30 serves three, where it serves dozens of small crops
    big = _until_refused(c, 10, "GET", f"/v1/faces/{big_face}/image", auth(site.tokens["bob"]), params=WHY)
    small = _until_refused(c, 60, "GET", f"/v1/faces/{small_face}/crop", auth(site.tokens["carol"]), params=WHY)
    assert 1 <= big <= 4 and small == 60, (big, small)


def test_a_users_keys_share_one_budget(costly) -> None:
    site, server, _ = costly
    c = server.client
    served = _until_refused(c, 60, "GET", "/v1/me", auth(site.tokens["alice"]))
    assert 25 <= served <= 40, served
    r = c.get("/v1/me", headers=auth(site.tokens["alice-2"]))  # alice's other key: the same, spent budget
    assert r.status_code == 429, r.text
    assert c.get("/v1/me", headers=auth(site.tokens["dana"])).status_code == 200  # someone else is unaffected


def test_failed_authentications_are_limited_per_address(costly) -> None:
    site, server, _ = costly
    c = server.client
    codes = [c.get("/v1/me", headers=auth(f"fi_guess{i}_{'x' * 40}")).status_code for i in range(14)]
    assert codes[:10] == [401] * 10 and set(codes[10:]) == {429}, codes
    assert c.get("/v1/me").status_code == 429  # no key at all is a failed authentication too
    # key guessing from this address stops even a good key until the budget refills (then it works again)
    assert c.get("/v1/me", headers=auth(site.tokens["root"])).status_code == 429
    assert c.get("/healthz").status_code == 200
