"""Opt-out and erasure are complete: an opt-out registered while an ingest job runs reaches that job's next batch,
and faces that escaped an opt-out are not served by crop, photo or people reads either."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from faceindex.errors import NotFoundError

from .conftest import PEOPLE, build_site, lfw, needs_lfw

pytestmark = needs_lfw
SUBJECT = PEOPLE[0]


def test_an_optout_made_during_an_ingest_reaches_that_job(tmp_path: Path) -> None:
    from faceindex import FaceIndex

    gallery = tmp_path / "gallery"
    gallery.mkdir()
    for name in PEOPLE:
        for i in range(1, 4):
            shutil.copy(lfw(name, i), gallery / f"{name}_{i}.jpg")
    data = tmp_path / "data"
    FaceIndex.open(data).close()
    done: list[dict] = []

    def meanwhile(event: str, info: dict) -> None:
        if event == "file" and not done:  # the job has started; the privacy officer acts now
            with FaceIndex.open(data, role="privacy-officer", actor="dpo") as dpo:
                done.append(dpo.optout_add([lfw(SUBJECT, 5), lfw(SUBJECT, 6)], "OPT-RACE"))

    with FaceIndex.open(data) as fi:
        report = fi.add([gallery], "lfw", workers=1, progress=meanwhile)
        assert done and done[0]["faces_removed"] == 0  # nothing of the subject was committed yet
        paths = {Path(r.path).name for r in fi.catalog.face_records(fi.catalog.face_ids().tolist()).values()}
    assert report.skipped_opted_out >= 2, report.as_dict()
    assert not [p for p in paths if p.startswith(SUBJECT)], paths
    assert len(paths) >= 2 * (len(PEOPLE) - 1)  # everyone else was indexed


def test_faces_that_escaped_an_optout_are_not_served(tmp_path: Path) -> None:
    from faceindex import FaceIndex

    site = build_site(tmp_path)
    escaped = site.face_ids[SUBJECT]
    with FaceIndex.open(site.data) as fi:
        # the subject's template is registered without deleting their faces: as after restoring an old backup
        template = fi.faces(lfw(SUBJECT, 5))[0].embedding[None, :]
        fi.catalog.add_optout("OPT-BACKUP", "dpo", template, {"time": "2026-01-01T00:00:00+00:00"})
        for fid in escaped:
            with pytest.raises(NotFoundError):
                fi.face_crop(fid, purpose="investigation", case="C-1")
            with pytest.raises(NotFoundError):
                fi.face_in_image(fid, purpose="investigation", case="C-1")
        people = fi.people(purpose="investigation", case="C-1")
        assert not set(escaped) & {f for p in people for f in p.sample_face_ids}
        for p in people:
            _, faces = fi.person(p.id, purpose="investigation", case="C-1")
            assert not set(escaped) & {f.id for f in faces}
        other = site.face_ids[PEOPLE[1]][0]
        assert fi.face_crop(other, purpose="investigation", case="C-1")[:2] == b"\xff\xd8"  # others still served
