"""Photos uploaded to the server do not outlive their purpose: deleted once indexed (unless keep_uploads is set),
and an erasure deletes the person's uploaded photos; a refused folder link is named, its contents are not."""

from __future__ import annotations

import time

from .conftest import PEOPLE, Server, auth, lfw, needs_lfw

pytestmark = needs_lfw


def _upload(server: Server, token: str, *photos) -> dict:
    files = [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in photos]
    r = server.client.post("/v1/ingest/upload", headers=auth(token), files=files, data={"source": "uploads"})
    assert r.status_code == 202, r.text
    for _ in range(600):
        job = server.client.get(f"/v1/jobs/{r.json()['id']}", headers=auth(token)).json()
        if job["state"] in ("done", "failed"):
            return job
        time.sleep(0.2)
    raise AssertionError(job)


def _stored(site) -> list:
    return [p for p in (site.data / "uploads").rglob("*") if p.is_file()]


def test_uploads_are_deleted_once_indexed(site, server) -> None:
    job = _upload(server, site.tokens["root"], lfw(PEOPLE[0], 7), lfw(PEOPLE[1], 7))
    assert job["state"] == "done" and job["result"]["images_indexed"] == 2, job
    assert _stored(site) == []


def test_erase_deletes_the_persons_uploaded_photos(site) -> None:
    keep = Server(site.data, site.data.parent / "keep.log", keep_uploads="true", rate_limit="100000")
    try:
        job = _upload(keep, site.tokens["root"], lfw(PEOPLE[2], 8), lfw(PEOPLE[1], 8))
        assert job["state"] == "done", job
        assert len(_stored(site)) == 2
        r = keep.client.post("/v1/erase", headers=auth(site.tokens["dana"]), data={"reference": "ERASE-UP"},
                             files=[("photos", ("me.jpg", lfw(PEOPLE[2], 9).read_bytes(), "image/jpeg")),
                                    ("photos", ("me2.jpg", lfw(PEOPLE[2], 10).read_bytes(), "image/jpeg"))])
        assert r.status_code == 200, r.text
        assert r.json()["uploads_deleted"] == 1 and "advice" not in r.json()
        left = _stored(site)
        assert len(left) == 1 and PEOPLE[1] in left[0].name, left
        # one reference photo: the receipt says what more photos would do
        r = keep.client.post("/v1/optouts", headers=auth(site.tokens["dana"]), data={"reference": "OPT-ONE"},
                             files=[("photos", ("me.jpg", lfw(PEOPLE[0], 9).read_bytes(), "image/jpeg"))])
        assert r.status_code == 200 and "2-3 photos" in r.json()["advice"], r.text
    finally:
        keep.stop()


def test_a_file_swapped_for_a_link_during_a_rooted_ingest_is_refused(tmp_path) -> None:
    import hashlib
    import os
    import shutil

    from faceindex import FaceIndex

    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(lfw(PEOPLE[0], 1), root / "a.jpg")
    shutil.copy(lfw(PEOPLE[1], 1), root / "b.jpg")
    outside = tmp_path / "outside.jpg"
    shutil.copy(lfw(PEOPLE[2], 1), outside)

    def swap(event: str, _info: dict) -> None:
        if event == "analyse":  # after the root check and the first read, before the analysis reads it again
            (root / "a.jpg").unlink()
            (root / "a.jpg").symlink_to(outside)

    with FaceIndex.open(tmp_path / "data") as fi:
        report = fi.add([root], "rooted", workers=1, progress=swap, within=[root])
        shas = {fi.catalog.image_sha256(r.image_id)
                for r in fi.catalog.face_records(fi.catalog.face_ids().tolist()).values()}
    assert hashlib.sha256(outside.read_bytes()).hexdigest() not in shas
    assert [(os.path.basename(e.path), e.reason) for e in report.errors] == [
        ("a.jpg", "changed while being indexed: refused")]
    assert report.images_indexed == 1
