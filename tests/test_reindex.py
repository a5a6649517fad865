"""`faceindex reindex --model NAME`: dlib -> yunet-omz95 on a small LFW index keeps faces, people, names and
opt-outs; a killed run resumes and the old model serves until the swap; faces whose file is gone are reported."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys

import numpy as np
import pytest

from faceindex import FaceIndex
from faceindex.catalog import open_catalog
from faceindex.errors import ModelError

from .conftest import lfw, needs_lfw, person_of

pytestmark = needs_lfw
EXE = shutil.which("faceindex") or f"{sys.executable} -m faceindex"
WHY = {"purpose": "testing", "case": "T-1"}
PEOPLE = {"Tony_Blair": 6, "Colin_Powell": 6, "Serena_Williams": 5, "Hugo_Chavez": 4}
OPTED = "Gerhard_Schroeder"  # opts out under dlib; must stay blocked under yunet-omz95


def cli(*args, data, env=None):
    p = subprocess.run([*EXE.split(), "--data", str(data), *map(str, args)], capture_output=True, text=True,
                       timeout=900, env={**os.environ, **(env or {})})
    assert "Traceback" not in p.stderr, p.stderr
    return p


@pytest.fixture()
def dlib_index(tmp_path, catalog_backend):
    """A dlib index; on SQLite, and on PostgreSQL (FACEINDEX_CATALOG, tests/pg_server.py)."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for name, n in PEOPLE.items():
        for i in range(1, n + 1):
            shutil.copy(lfw(name, i), photos / f"{name}_{i:04d}.jpg")
    data = tmp_path / "data"
    with FaceIndex.open(data, model="dlib") as fi:
        assert fi.pack.name == "dlib" and fi.catalog.get_meta("model") == "dlib_resnet_v1@1/128"
        assert fi.add([photos], "lfw", workers=1).ok
        fi.cluster()
        blair = {person_of(m.path): m.person_id for m in fi.search(lfw("Tony_Blair", 20), top=3, **WHY)[0].matches}
        fi.name_person(blair["Tony_Blair"], "Tony B.")
        receipt = fi.optout_add([lfw(OPTED, 1), lfw(OPTED, 2)], "REQ-1")
        assert receipt["templates_per_model"] == {"dlib_resnet_v1@1/128": 2, "yunet-omz95@1/256": 2}
    return data, photos


def _snapshot(data):
    cat = open_catalog(os.environ.get("FACEINDEX_CATALOG") or data / "catalog.db")
    db = cat.db
    faces = dict(db.execute("SELECT id, person_id FROM faces").fetchall())
    names = dict(db.execute("SELECT id, name FROM people WHERE name IS NOT NULL").fetchall())
    dims = {len(b) // 4 for (b,) in db.execute("SELECT embedding FROM faces")}
    cat.close()
    return faces, names, dims


def test_reindex_killed_resumed_keeps_people_names_and_optouts(dlib_index):
    data, photos = dlib_index
    faces0, names0, dims0 = _snapshot(data)
    assert dims0 == {128} and list(names0.values()) == ["Tony B."]
    (photos / "Hugo_Chavez_0004.jpg").unlink()  # a file gone since indexing
    # mixing is refused; the hint names reindex
    p = cli("--model", "yunet-omz95", "stats", data=data)
    assert p.returncode == ModelError.exit_code and "faceindex reindex --model yunet-omz95" in p.stderr

    # a run killed after its first batch: the old model still serves, nothing swapped
    p = cli("reindex", "--model", "yunet-omz95", data=data, env={"_FACEINDEX_TEST_REINDEX_STOP_AFTER": "1"})
    assert p.returncode == 137, (p.stdout, p.stderr)
    with FaceIndex.open(data) as fi:
        assert fi.pack.name == "dlib"
        staged = fi.catalog.db.execute("SELECT COUNT(*) FROM reindex_images").fetchone()[0]
        assert 0 < staged < len(faces0)
        top = fi.search(lfw("Colin_Powell", 30), top=1, **WHY)[0].matches[0]
        assert person_of(top.path) == "Colin_Powell"
    assert _snapshot(data)[2] == {128}

    # resumed: the rest is done, then swapped
    p = cli("reindex", "--model", "yunet-omz95", "--json", data=data)
    assert p.returncode == 0, p.stderr
    rep = json.loads(p.stdout)
    assert rep["from"] == "dlib_resnet_v1@1/128" and rep["to"] == "yunet-omz95@1/256"
    assert rep["resumed_images"] == staged
    gone = rep["faces_removed_file_gone"]
    assert len(gone) == 1 and gone[0]["path"].endswith("Hugo_Chavez_0004.jpg")
    assert rep["optouts_needing_photos"] == []
    assert rep["faces"] == len(faces0) - 1 and rep["found_again"] >= rep["faces"] - 1

    faces1, names1, dims1 = _snapshot(data)
    assert dims1 == {256}
    assert names1 == names0
    del faces0[gone[0]["face_id"]]
    assert faces1 == faces0  # same face ids, same people
    with FaceIndex.open(data) as fi:
        assert fi.pack.name == "yunet-omz95" and fi.stats()["model"] == "yunet-omz95@1/256"
        assert fi.calibration.model == "yunet-omz95@1/256"
        res = fi.search(lfw("Tony_Blair", 20), top=3, **WHY)[0]
        assert person_of(res.matches[0].path) == "Tony_Blair" and res.matches[0].person_name == "Tony B."
        # the opt-out made under dlib holds under yunet-omz95: the person's photos are refused at ingest
        extra = photos.parent / "extra"
        extra.mkdir()
        shutil.copy(lfw(OPTED, 3), extra)
        shutil.copy(lfw("Tony_Blair", 30), extra)
        rep = fi.add([extra], "lfw", workers=1)
        assert rep.skipped_opted_out == 1 and rep.faces_found == 1
        with pytest.raises(ModelError, match="already holds"):
            fi.reindex("yunet-omz95")


@pytest.mark.parametrize("catalog_backend", ["sqlite"], indirect=True)  # PostgreSQL: the test above (kept short)
def test_optout_without_template_for_the_new_model_is_reported_and_renewed(dlib_index):
    data, _ = dlib_index
    db = sqlite3.connect(data / "catalog.db")
    with db:
        db.execute("DELETE FROM optout_models WHERE model = 'yunet-omz95@1/256'")  # as if made before packs
    db.close()
    with FaceIndex.open(data) as serving:  # another process (a server) holding the index open
        assert serving.pack.name == "dlib" and serving.index.count > 0
        p = cli("reindex", "--model", "yunet-omz95", data=data)
        assert p.returncode == 0, p.stderr
        assert "WARNING: opt-out REQ-1 has no template for model yunet-omz95 and is NOT enforced" in p.stderr
        # it takes up the new model: its probes are embedded with it and searched in the rebuilt index
        res = serving.search(lfw("Colin_Powell", 30), top=1, **WHY)[0]
        assert serving.pack.name == "yunet-omz95" and res.face.embedding.shape == (256,)
        assert person_of(res.matches[0].path) == "Colin_Powell"
        assert serving.stats()["model_pack"] == "yunet-omz95" and serving.calibration.model == "yunet-omz95@1/256"
    with FaceIndex.open(data) as fi:
        assert [o["templates"] for o in fi.optouts()] == [0]
        receipt = fi.optout_add([lfw(OPTED, 1)], "REQ-1")  # photos again: renewed, in force
        assert receipt.get("renewed") and [o["templates"] for o in fi.optouts()] == [1]
        assert fi.catalog.optout_templates(256).shape == (1, 256)
        assert np.isfinite(fi.catalog.optout_templates(256)).all()
