"""The Python API over a few hundred real LFW faces: search, verify, people, incremental add, remove, repair."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from faceindex import FaceIndex, NoFaceError
from faceindex.errors import ModelError

from .conftest import PEOPLE, PER_PERSON, lfw, needs_lfw, person_of

pytestmark = needs_lfw
WHY = {"purpose": "testing", "case": "T-1"}


def test_index_holds_every_image(built_index, gallery_dir):
    s = built_index.stats()
    assert s["images"] == len(PEOPLE) * PER_PERSON + 80
    assert s["faces"] >= s["images"] - s["images_without_faces"]
    assert s["index_count"] == s["faces"] and s["index_kind"] == "exact"
    assert s["model"] == "yunet-omz95@1/256" and s["model_pack"] == "yunet-omz95"  # the default for a new index


def test_search_finds_the_enrolled_person_first(built_index):
    hits = total = 0
    for name in PEOPLE:
        for i in (PER_PERSON + 1, PER_PERSON + 2):  # held-out photos of enrolled people
            res = built_index.search(lfw(name, i), top=5, largest=True, **WHY)
            assert len(res) == 1 and len(res[0].matches) == 5
            top = res[0].matches[0]
            total += 1
            hits += person_of(top.path) == name
            assert [m.rank for m in res[0].matches] == [1, 2, 3, 4, 5]
            sims = [m.similarity for m in res[0].matches]
            assert sims == sorted(sims, reverse=True)
            assert all(0 <= m.fmr <= 1 for m in res[0].matches)
    assert hits / total >= 0.95, f"rank-1 {hits}/{total}"


def test_search_reports_calibrated_leads(built_index):
    res = built_index.search(lfw("Tony_Blair", PER_PERSON + 3), top=3, largest=True, **WHY)[0]
    top = res.matches[0]
    assert top.label in ("strong candidate", "possible candidate")
    assert top.fmr < 1e-3
    assert res.gallery_size == built_index.gallery_size()
    assert res.expected_false_candidates == pytest.approx(built_index.calibration.possible_fmr * res.gallery_size)
    assert top.expected_false == pytest.approx(top.fmr * res.gallery_size)
    # an unknown person gets weak scores
    unknown = built_index.search(lfw("George_W_Bush", 1), top=1, largest=True, **WHY)[0].matches[0]
    assert unknown.similarity < top.similarity


def test_probe_without_face(built_index, tmp_path):
    from PIL import Image

    p = tmp_path / "wall.png"
    Image.new("RGB", (320, 240), (90, 90, 90)).save(p)
    with pytest.raises(NoFaceError, match="no face found"):
        built_index.search(p, **WHY)


def test_verify_on_lfw_pairs(built_index):
    from pathlib import Path

    lines = (Path(lfw("x", 1)).parents[2] / "pairs.txt").read_text().splitlines()[1:601]  # fold 1
    correct = 0
    for line in lines[:60] + lines[300:360]:
        parts = line.split()
        if len(parts) == 3:
            a, b, same = lfw(parts[0], int(parts[1])), lfw(parts[0], int(parts[2])), True
        else:
            a, b, same = lfw(parts[0], int(parts[1])), lfw(parts[2], int(parts[3])), False
        v = built_index.verify(a, b, **WHY)
        correct += v.same == same
    assert correct / 120 >= 0.93, f"{correct}/120"


def test_faces_does_not_index(built_index):
    before = built_index.stats()["faces"]
    faces = built_index.faces(lfw("Hugo_Chavez", PER_PERSON + 4))
    assert faces and built_index.stats()["faces"] == before


def test_people_groups_each_person(built_index):
    built_index.cluster()
    people = built_index.people(min_faces=2)
    purity_ok = 0
    for name in PEOPLE:
        counts: dict[int, int] = {}
        ids = [f for f in _face_ids_of(built_index, name)]
        for fid in ids:
            pid = built_index.catalog.face_record(fid).person_id
            counts[pid] = counts.get(pid, 0) + 1
        best_pid, best = max(counts.items(), key=lambda kv: kv[1])
        # most of a person's photos land in one group, and that group is mostly them
        _, members = built_index.person(best_pid)
        own = sum(person_of(m.path) == name for m in members)
        purity_ok += best >= 0.8 * len(ids) and own >= 0.9 * len(members)
    assert purity_ok >= len(PEOPLE) - 1, purity_ok
    assert len(people) >= len(PEOPLE)
    # a name survives re-clustering
    pid = max(people, key=lambda p: p.face_count).id
    built_index.name_person(pid, "Ada")
    built_index.cluster()
    assert any(p.name == "Ada" and p.face_count >= PER_PERSON * 0.8 for p in built_index.people())


def _face_ids_of(fi, name):
    rows = fi.catalog.db.execute(
        "SELECT f.id FROM faces f JOIN files fl ON fl.image_id = f.image_id WHERE fl.path LIKE ? AND f.idx = 0",
        (f"%/{name}/%",)).fetchall()
    return [r[0] for r in rows]


def test_cannot_link_faces_of_one_photo():
    from faceindex.cluster import group_faces

    rng = np.random.default_rng(0)
    base = rng.normal(size=128).astype(np.float32)
    vecs = np.stack([base + rng.normal(scale=0.01, size=128) for _ in range(4)]).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    labels = group_faces(vecs, np.array([1, 1, 2, 3]), threshold=0.5).labels
    assert labels[0] != labels[1]  # same photo: never one person
    assert len(set(labels)) == 2


def test_incremental_moved_and_removed(tmp_path, gallery_dir):
    src = tmp_path / "photos"
    shutil.copytree(gallery_dir / "Tony_Blair", src, symlinks=False)
    with FaceIndex.open(tmp_path / "data") as fi:
        first = fi.add([src], "s", workers=1)
        assert first.images_indexed == PER_PERSON and first.ok
        again = fi.add([src], "s", workers=1)
        assert again.images_indexed == 0 and again.unchanged == PER_PERSON
        faces = fi.stats()["faces"]
        # a moved file keeps its faces without being analysed again
        moved = src / "sub"
        moved.mkdir()
        shutil.move(src / "Tony_Blair_0001.jpg", moved / "renamed.jpg")
        r = fi.add([src], "s", workers=1)
        assert r.moved_or_copied == 1 and r.images_indexed == 0
        assert fi.stats()["faces"] == faces
        # removing the old path alone keeps the image (the new path still holds it)
        assert fi.remove(src / "Tony_Blair_0001.jpg", "s")["faces"] == 0
        # a changed file is re-analysed
        shutil.copy(lfw("Colin_Powell", 1), src / "Tony_Blair_0002.jpg")
        r = fi.add([src], "s", workers=1)
        assert r.images_indexed == 1
        removed = fi.remove(src, "s")
        assert removed["images"] == PER_PERSON and fi.stats()["faces"] == 0
        assert fi.index.count == 0
        with pytest.raises(Exception, match="no source"):
            fi.remove(src, "nope")


def test_index_repaired_from_catalog(tmp_path, gallery_dir):
    data = tmp_path / "data"
    with FaceIndex.open(data) as fi:
        fi.add([gallery_dir / "Ariel_Sharon"], "s", workers=1)
        n = fi.stats()["faces"]
        probe = fi.faces(lfw("Ariel_Sharon", PER_PERSON + 1))[0]
    (data / "vectors.faiss").write_bytes(b"garbage")  # corrupt
    with FaceIndex.open(data) as fi:
        assert fi.index.count == n and fi.repaired == (n, 0)
        assert fi.search_faces([probe], 1)[0].matches[0].fmr <= 1e-5  # the same person, as strong as before
    meta = json.loads((data / "vectors.json").read_text())
    meta["generation"] -= 1  # index older than catalog: reconciled by id sets
    (data / "vectors.json").write_text(json.dumps(meta))
    with FaceIndex.open(data) as fi:
        assert fi.index.count == n and fi.repaired == (0, 0)


def test_large_gallery_switches_to_a_graph(tmp_path, gallery_dir):
    with FaceIndex.open(tmp_path / "data", exact_threshold=100) as fi:
        fi.add([gallery_dir], "s")
        fi.vectors.wait()  # the graph is built beside the exact index, which serves meanwhile
        assert fi.index.kind == "hnsw"
        res = fi.search(lfw("Serena_Williams", PER_PERSON + 1), top=3, largest=True, **WHY)[0]
        assert person_of(res.matches[0].path) == "Serena_Williams"
        fi.remove(gallery_dir / "Serena_Williams", "s")
        res = fi.search(lfw("Serena_Williams", PER_PERSON + 1), top=3, largest=True, **WHY)[0]
        assert all(person_of(m.path) != "Serena_Williams" for m in res.matches)


def test_refuses_to_mix_models(tmp_path):
    with FaceIndex.open(tmp_path / "data") as fi:
        fi.catalog.check_model(fi.spec.key)
        with pytest.raises(ModelError, match="refusing to mix"):
            fi.catalog.check_model("some_other_model@2/512")
    # the model is chosen when an index is made, recorded, and kept when it is opened again
    with FaceIndex.open(tmp_path / "old", model="dlib") as fi:
        assert fi.catalog.get_meta("model") == "dlib_resnet_v1@1/128" and fi.spec.dim == 128
    with FaceIndex.open(tmp_path / "old") as fi:  # no --model: the recorded one, not the default
        assert fi.pack.name == "dlib" and fi.pipeline.spec.key == "dlib_resnet_v1@1/128"
        assert fi.calibration.model == "dlib_resnet_v1@1/128" and fi.settings.model == "dlib"
    with pytest.raises(ModelError, match="holds embeddings of model dlib .*refusing to mix in yunet-omz95") as e:
        FaceIndex.open(tmp_path / "old", model="yunet-omz95")
    assert "\n" not in str(e.value)
    with pytest.raises(ModelError, match="unknown model pack 'nope'"):
        FaceIndex.open(tmp_path / "new", model="nope")


def test_low_quality_faces_are_kept_but_not_candidates(tmp_path, gallery_dir):
    with FaceIndex.open(tmp_path / "data", min_quality=1.0) as fi:  # every face is below this bar
        fi.add([gallery_dir / "Hugo_Chavez"], "s", workers=1)
        probe = lfw("Hugo_Chavez", PER_PERSON + 1)
        assert fi.stats()["faces"] > 0
        assert fi.catalog.db.execute("SELECT MAX(quality) FROM faces").fetchone()[0] < 1.0
        assert fi.search(probe, top=3, **WHY)[0].matches == ()
        assert len(fi.search(probe, top=3, include_low_quality=True, **WHY)[0].matches) == 3
