"""The catalog contract: every test runs unchanged on SQLite (the embedded default) and on a real PostgreSQL.

Synthetic faces (random unit embeddings), no models: what is checked is the catalog's behaviour - content and
files, faces and embeddings, generations, people, opt-outs, keys, confirmations, jobs, migrations and refusals.
"""

from __future__ import annotations

import numpy as np
import pytest

from faceindex.catalog import SCHEMA_VERSION, Catalog, open_catalog
from faceindex.errors import CatalogError, ModelError, NotFoundError
from faceindex.types import Box, Face, Quality

DIM = 8


@pytest.fixture(params=["sqlite", "postgres"])
def target(request, tmp_path) -> str:
    """Where a fresh catalog lives: a SQLite file, or an empty PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "catalog.db")
    return request.getfixturevalue("pg_url")


@pytest.fixture
def cat(target) -> Catalog:
    c = open_catalog(target)
    yield c
    c.close()


def faces(n: int, seed: int = 0, quality: float = 0.9) -> list[Face]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        v = rng.normal(size=DIM).astype(np.float32)
        out.append(Face(Box(10 * i, 5, 10 * i + 40, 45), ((1.0, 2.0),) * 5,
                        Quality(40, 100.0, 0.99, 0.9, quality), v / np.linalg.norm(v), i))
    return out


def add(cat: Catalog, path: str, sha: str, n: int, source: str = "src", seed: int = 0, quality: float = 0.9):
    sid = cat.source_id(source, create=True)
    return cat.add_image(sid, path, 1, sha, 100, 640, 480, faces(n, seed, quality))


def test_new_catalog_is_empty_at_generation_zero(cat):
    assert cat.generation == 0
    assert cat.counts() == {"images": 0, "files": 0, "faces": 0, "people": 0, "named_people": 0, "sources": 0,
                            "images_without_faces": 0}
    assert cat.get_meta("schema_version") == str(SCHEMA_VERSION)


def test_add_image_stores_faces_and_embeddings(cat):
    image_id, ids, removed = add(cat, "/a/1.jpg", "s1", 3)
    assert len(ids) == 3 and removed == []
    assert cat.generation == 1
    got_ids, vecs = next(cat.embeddings(dim=DIM))
    assert got_ids.tolist() == sorted(ids)
    assert np.allclose(vecs, np.stack([f.embedding for f in faces(3)]))
    rec = cat.face_record(ids[1])
    assert (rec.path, rec.source, rec.box, rec.image_id) == ("/a/1.jpg", "src", Box(10, 5, 50, 45), image_id)
    assert cat.image_sha256(image_id) == "s1" and cat.face_pixels(ids[0]) == 640 * 480


def test_same_content_is_one_image_and_faces_once(cat):
    first = add(cat, "/a/1.jpg", "same", 2)
    again = add(cat, "/b/copy.jpg", "same", 2, source="other")
    assert again[0] == first[0] and again[1] == []
    assert cat.counts()["images"] == 1 and cat.counts()["faces"] == 2 and cat.counts()["files"] == 2
    assert sorted(cat.image_files([first[0]])) == ["/a/1.jpg", "/b/copy.jpg"]


def test_removing_last_file_drops_image_and_faces(cat):
    image_id, ids, _ = add(cat, "/a/x/1.jpg", "s1", 2)
    add(cat, "/a/y/2.jpg", "s2", 1, seed=1)
    gen = cat.generation
    files, imgs, removed = cat.remove_files(None, "/a/x")
    assert (files, imgs, sorted(removed)) == (1, 1, sorted(ids))
    assert cat.generation > gen
    assert cat.face_count() == 1
    with pytest.raises(NotFoundError):
        cat.face_record(ids[0])


def test_path_pointing_at_new_content_drops_the_old(cat):
    _, old, _ = add(cat, "/a/1.jpg", "old", 2)
    _, new, removed = add(cat, "/a/1.jpg", "new", 1, seed=5)
    assert sorted(removed) == sorted(old) and len(new) == 1
    assert cat.file_states(cat.source_id("src"))["/a/1.jpg"].image_id == cat.image_id_by_sha("new")


def test_delete_faces_and_face_count(cat):
    image_id, ids, _ = add(cat, "/a/1.jpg", "s1", 3)
    assert cat.delete_faces([ids[0]]) == 1
    assert cat.face_ids().tolist() == sorted(ids[1:])
    assert cat.delete_faces([]) == 0


def test_low_quality_and_face_image_ids(cat):
    _, good, _ = add(cat, "/a/1.jpg", "s1", 2, quality=0.9)
    _, bad, _ = add(cat, "/a/2.jpg", "s2", 1, seed=3, quality=0.1)
    assert cat.low_quality_ids(0.3).tolist() == bad
    fids, iids = cat.face_image_ids()
    assert fids.tolist() == sorted(good + bad) and len(set(iids.tolist())) == 2


def test_embeddings_by_id_in_batches(cat):
    _, ids, _ = add(cat, "/a/1.jpg", "s1", 5)
    batches = list(cat.embeddings(dim=DIM, batch=2))
    assert [len(b[0]) for b in batches] == [2, 2, 1]
    chosen = list(cat.embeddings([ids[4], ids[0]], dim=DIM))
    assert chosen[0][0].tolist() == sorted([ids[0], ids[4]])


def test_sources_basis_and_retention(cat):
    sid = cat.put_source("news", basis="contract", notice="n", retention_days=30)
    assert cat.put_source("news", retention_days=0) == sid
    add(cat, "/n/1.jpg", "s1", 1, source="news")
    (row,) = cat.sources()
    assert (row["name"], row["basis"], row["notice"], row["retention_days"], row["files"]) == \
        ("news", "contract", "n", None, 1)
    assert len(cat.expired_files(sid, "9999")) == 1 and cat.expired_files(sid, "0000") == []
    with pytest.raises(NotFoundError):
        cat.source_id("nope")


def test_people_move_name_sample(cat):
    _, ids, _ = add(cat, "/a/1.jpg", "s1", 4)
    pid = cat.move_faces(ids[:3])
    cat.name_person(pid, "Ada")
    assert cat.person_names() == {pid: "Ada"}
    assert cat.people() == [(pid, "Ada", 3, 1)]
    assert len(cat.sample_faces(2)[pid]) == 2
    name, recs = cat.person(pid)
    assert name == "Ada" and sorted(r.id for r in recs) == sorted(ids[:3])
    other = cat.move_faces(ids[3:])
    assert other != pid and cat.counts()["people"] == 2
    assert cat.people(min_faces=2) == [(pid, "Ada", 3, 1)] and cat.people(1, min_faces=1) == [(pid, "Ada", 3, 1)]
    assert cat.sample_faces(2, person_ids=[other]) == {other: [ids[3]]}
    assert cat.sample_faces(person_ids=[pid, other]) == cat.sample_faces() and cat.sample_faces(person_ids=[]) == {}
    with pytest.raises(NotFoundError):
        cat.name_person(10_000, "x")


def test_people_store_blocks_and_new_people(cat):
    from faceindex import people_store as ps

    _, ids, _ = add(cat, "/a/1.jpg", "s1", 4)
    cat.move_faces([ids[0]])  # an id taken by the database's own allocation
    made = ps.store(cat, [(None, ids[:2], 0.8), (None, ids[2:], 0.7)], replace=True)
    assert len(set(made)) == 2
    later = cat.move_faces([ids[3]])  # must not collide with the ids reserved above
    assert later not in made
    a, b = ps.separate(cat, ids[:1], ids[1:2])
    _, blocks, apart = ps.constraints(cat)
    assert sorted(set(blocks.tolist())) == [a, b] and apart.tolist() == [[a, b]]
    assert ps.cohesion(cat, made)[made[0]] == pytest.approx(0.8)


def test_optouts(cat):
    gen0 = cat.optout_generation()
    t = np.ones((2, DIM), np.float32)
    cat.add_optout("REF-1", "alice", t, {"time": "2026-01-01T00:00:00+00:00"})
    assert cat.optout_generation() != gen0
    assert cat.optout_templates(DIM).shape == (2, DIM)
    assert cat.optouts()[0]["reference"] == "REF-1"
    with pytest.raises(CatalogError, match="already exists"):
        cat.add_optout("REF-1", "alice", t, {"time": "x"})
    cat.remove_optout("REF-1")
    assert cat.optout_templates(DIM).shape == (0, DIM)
    with pytest.raises(NotFoundError):
        cat.remove_optout("REF-1")


def test_keys_and_confirmations(cat):
    kid = cat.add_key("k", "investigator", "pfx1", "ab" * 32, "owner")
    assert cat.key_by_prefix("pfx1")[0] == kid and cat.keys()[0]["role"] == "investigator"
    cat.touch_key(kid)
    cat.revoke_key(kid)
    with pytest.raises(NotFoundError):
        cat.revoke_key(kid)
    assert cat.add_confirmation("CASE", 7, "alice") == ["alice"]
    assert cat.add_confirmation("CASE", 7, "alice") == ["alice"]  # twice by one person counts once
    assert cat.add_confirmation("CASE", 7, "bob") == ["alice", "bob"]
    assert cat.confirmations("CASE") == {7: ["alice", "bob"]}


def test_jobs_round_trip(cat):
    from faceindex.server import jobs

    job = jobs.Job(id="j1", kind="ingest", spec={"paths": ["/x"]}, owner=3)
    jobs.save(cat, job)
    job.state, job.done = "running", 5
    jobs.save(cat, job)
    (back,) = jobs.load(cat, "j1")
    assert (back.state, back.done, back.owner, back.spec) == ("running", 5, 3, {"paths": ["/x"]})
    assert [j.id for j in jobs.load(cat, states=("running",))] == ["j1"]


def test_model_is_recorded_and_another_refused(cat):
    cat.check_model("m@1/8")
    cat.check_model("m@1/8")
    with pytest.raises(ModelError):
        cat.check_model("other@1/8")


def test_failed_transaction_leaves_nothing(cat):
    sid = cat.source_id("src", create=True)
    with pytest.raises(RuntimeError), cat.transaction():
        cat.add_image(sid, "/a/1.jpg", 1, "s1", 100, 10, 10, faces(2))
        raise RuntimeError("crash mid-batch")
    assert cat.counts()["images"] == 0 and cat.face_count() == 0 and cat.generation == 0


def test_generation_seen_by_another_connection(cat):
    other = cat.reopen()
    try:
        assert other.generation == 0
        add(cat, "/a/1.jpg", "s1", 1)
        assert other.generation == 1 and other.face_count() == 1
    finally:
        other.close()


def test_one_row_per_image_face_index(cat):
    image_id, _, _ = add(cat, "/a/1.jpg", "s1", 1)
    with pytest.raises(Exception, match="(?i)unique"), cat.transaction() as db:
        db.execute("INSERT INTO faces(image_id, idx, x1, y1, x2, y2, landmarks, det_score, q_size, q_sharpness, "
                   "q_frontal, quality, embedding, created_at) VALUES(?,0,0,0,1,1,'[]',1,1,1,1,1,?,'t')",
                   (image_id, b"\0" * 4 * DIM))


def test_newer_schema_is_refused_and_left_alone(target):
    c = open_catalog(target)
    with c.transaction():
        c.set_meta("schema_version", str(SCHEMA_VERSION + 1))
    c.close()
    with pytest.raises(CatalogError, match=f"schema version {SCHEMA_VERSION + 1}.*newer") as e:
        open_catalog(target)
    assert "\n" not in str(e.value)
    with pytest.raises(CatalogError):  # refused on every open: the refusal changed nothing
        open_catalog(target)


def test_psycopg_is_imported_only_for_a_postgresql_catalog(tmp_path):
    import subprocess
    import sys

    code = ("import sys; from faceindex import FaceIndex; from faceindex import cli, migrate; "
            f"FaceIndex.open({str(tmp_path / 'd')!r}).close(); print('psycopg' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr
