"""The engine on a real Milvus server (`vectors=milvus://...`): search, deletions and opt-outs never returned
(also when Milvus still holds the vector), catch-up after a crash between the catalog commit and the Milvus
write, and bad input refused in one line with nothing written. The store itself: tests/test_vector_contract.py."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid

import numpy as np
import pytest

from .conftest import lfw, needs_lfw, person_of
from .servers import clean_env, free_port

pytestmark = needs_lfw

PEOPLE = ["Colin_Powell", "Tony_Blair", "Serena_Williams", "Hugo_Chavez"]
WHY = {"purpose": "testing", "case": "M-1"}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """first/: images 1-4 of each person; second/: images 5-6; probes: image 8."""
    root = tmp_path_factory.mktemp("mphotos")
    for part, nums in (("first", range(1, 5)), ("second", range(5, 7))):
        for name in PEOPLE:
            (root / part / name).mkdir(parents=True)
            for i in nums:
                shutil.copy(lfw(name, i), root / part / name / lfw(name, i).name)
    return root


@pytest.fixture(scope="module")
def url(milvus_server):
    from .milvus_server import drop_all

    u = f"{milvus_server}/m{uuid.uuid4().hex[:12]}"
    yield u
    drop_all(u)


@pytest.fixture(scope="module")
def data(folders, url, tmp_path_factory):
    from faceindex import FaceIndex

    d = tmp_path_factory.mktemp("mdata")
    with FaceIndex.open(d, vectors=url) as fi:
        assert fi.add([folders / "first"], "news", workers=1).ok
        assert fi.add([folders / "second"], "agency", workers=1).ok
    return d


def test_search_on_milvus(data, url):
    from faceindex import FaceIndex

    with FaceIndex.open(data, vectors=url) as fi:
        assert fi.repaired is None  # in step with the catalog: no catch-up
        assert fi.index.kind == "milvus-hnsw"
        assert fi.index.count == fi.catalog.face_count() == len(fi.index.ids())
        assert not (data / "vectors.faiss").exists() and not (data / "vectors.json").exists()
        for name in PEOPLE:
            res = fi.search(lfw(name, 8), top=3, largest=True, **WHY)[0]
            assert [person_of(m.path) for m in res.matches] == [name] * 3


def test_source_partition_search(data, url):
    """The partition key is the face's source: a search limited to a source returns only its faces."""
    from faceindex import FaceIndex

    with FaceIndex.open(data, vectors=url) as fi:
        probe = fi.faces(lfw("Tony_Blair", 8))[0].embedding[None]
        agency = fi.vectors.source_ids(["agency"])
        _, ids = fi.index.search(probe, 5, sources=agency)
        recs = fi.catalog.face_records([int(i) for i in ids[0] if i >= 0])
        assert recs and {r.source for r in recs.values()} == {"agency"}
        assert person_of(recs[int(ids[0][0])].path) == "Tony_Blair"


def test_deleted_never_returned_even_while_milvus_holds_it(data, url, tmp_path):
    """Two processes' views at Milvus' Bounded consistency; one deletes in the catalog only (as a crash between
    the catalog commit and the Milvus write leaves it): the other never returns the face."""
    from faceindex import FaceIndex

    copy = tmp_path / "copy"
    shutil.copytree(data, copy)  # same collection, own catalog: this test's deletions stay its own
    bounded = url + "?consistency=Bounded"
    with FaceIndex.open(copy, vectors=bounded) as a, FaceIndex.open(copy, vectors=bounded) as b:
        top = a.search(lfw("Colin_Powell", 8), top=1, largest=True, **WHY)[0].matches[0].face_id
        with b.catalog.transaction():
            b.catalog.delete_faces([top])
        assert a.index._present(np.array([top])) == [top]  # Milvus still holds it
        res = a.search(lfw("Colin_Powell", 8), top=3, largest=True, **WHY)[0]
        assert top not in [m.face_id for m in res.matches] and len(res.matches) == 3
        assert a.index._present(np.array([top])) == []  # met dead in a search: deleted from Milvus


def test_delete_and_optout_never_returned(data, url, tmp_path):
    from faceindex import FaceIndex

    copy = tmp_path / "copy"
    shutil.copytree(data, copy)
    with FaceIndex.open(copy, vectors=url + "?consistency=Bounded") as fi:
        first = fi.search(lfw("Hugo_Chavez", 8), top=1, largest=True, **WHY)[0].matches[0].face_id
        fi.delete_face(first)
        res = fi.search(lfw("Hugo_Chavez", 8), top=3, largest=True, **WHY)[0]
        assert first not in [m.face_id for m in res.matches]
        receipt = fi.optout_add([lfw("Serena_Williams", 8)], "ref-1")
        assert receipt["faces_removed"] >= 5
        res = fi.search(lfw("Serena_Williams", 9), top=10, largest=True, **WHY)[0]
        assert "Serena_Williams" not in [person_of(m.path) for m in res.matches]


CRASH = """
import os, sys
from faceindex import FaceIndex
from faceindex.vectors import milvus
milvus.MilvusIndex.add = lambda self, *a, **k: os._exit(9)  # killed after the catalog commit, before Milvus
fi = FaceIndex.open(sys.argv[1], vectors=sys.argv[2])
fi.add([sys.argv[3]], "agency", workers=1)
"""


def test_restart_catches_up_from_the_watermark(folders, milvus_server, tmp_path, monkeypatch):
    from faceindex import FaceIndex
    from faceindex.vectors import milvus_manager

    url = f"{milvus_server}/c{uuid.uuid4().hex[:12]}"
    data = tmp_path / "d"
    try:
        with FaceIndex.open(data, vectors=url) as fi:
            fi.add([folders / "first"], "news", workers=1)
            synced = fi.catalog.face_count()
        p = subprocess.run([sys.executable, "-c", CRASH, str(data), url, str(folders / "second")],
                           env=clean_env(), capture_output=True, text=True, timeout=600)
        assert p.returncode == 9, p.stderr
        monkeypatch.setattr(milvus_manager, "WINDOW", 0)  # only the faces above the watermark
        with FaceIndex.open(data, vectors=url) as fi:
            total = fi.catalog.face_count()
            assert total > synced
            assert fi.repaired == (total - synced, 0)  # not a scan of every id
            assert fi.index.count == total
            res = fi.search(lfw("Tony_Blair", 8), top=6, largest=True, **WHY)[0]
            assert {"news", "agency"} <= {m.source for m in res.matches}
        with FaceIndex.open(data, vectors=url) as fi:
            assert fi.repaired is None
    finally:
        from .milvus_server import drop_all

        drop_all(url)


def _pack(tmp_path):
    from faceindex import FaceIndex

    with FaceIndex.open(tmp_path / "probe-pack") as fi:
        return fi.pack.key, fi.spec.dim


@pytest.mark.parametrize("bad", ["redis://db:1", "milvus://", "milvus://h:99999", "milvus://h/bad-prefix",
                                 "milvus://h?index=diskann"])
def test_bad_url_refused_nothing_written(bad, tmp_path):
    from faceindex import FaceIndex
    from faceindex.errors import VectorStoreError

    with pytest.raises(VectorStoreError, match="bad vectors URL"):
        FaceIndex.open(tmp_path / "d", vectors=bad)
    assert not (tmp_path / "d").exists()


def test_unreachable_server_refused_nothing_written(tmp_path):
    from faceindex import FaceIndex
    from faceindex.errors import VectorStoreError

    with pytest.raises(VectorStoreError, match="cannot reach Milvus"):
        FaceIndex.open(tmp_path / "d", vectors=f"milvus://127.0.0.1:{free_port()}")
    assert not (tmp_path / "d").exists()


def test_collection_of_another_model_refused(milvus_url, tmp_path):
    from pymilvus import MilvusClient

    from faceindex import FaceIndex
    from faceindex.errors import ModelError
    from faceindex.vectors.milvus import MilvusURL

    key, dim = _pack(tmp_path)
    u = MilvusURL(milvus_url)
    client = MilvusClient(uri=f"http://{u.host}:{u.port}")
    client.create_collection(u.collection(key), dimension=dim + 1, description="someone else's vectors")
    client.close()
    with pytest.raises(ModelError, match="was not made for model"):
        FaceIndex.open(tmp_path / "d", vectors=milvus_url)
    assert not (tmp_path / "d").exists()  # nothing left behind


def test_cli_vectors_errors(tmp_path):
    exe = shutil.which("faceindex") or f"{sys.executable} -m faceindex"
    for how, code in ((["--vectors", f"milvus://127.0.0.1:{free_port()}"], {}), ([], {"vectors": "redis://x"})):
        p = subprocess.run([*exe.split(), "--data", str(tmp_path / "d"), *how, "stats"], capture_output=True,
                           text=True, timeout=120, env=clean_env(**code))
        assert p.returncode == 69, (p.returncode, p.stderr)
        assert p.stderr.startswith("error: ") and len(p.stderr.strip().splitlines()) == 1, p.stderr
        assert not (tmp_path / "d").exists()


def test_no_pymilvus_import_without_milvus(tmp_path):
    code = ("import sys; from faceindex import FaceIndex; fi = FaceIndex.open(sys.argv[1]); fi.stats(); "
            "assert 'pymilvus' not in sys.modules, 'pymilvus imported'")
    p = subprocess.run([sys.executable, "-c", code, str(tmp_path / "d")], capture_output=True, text=True,
                       timeout=120, env=clean_env())
    assert p.returncode == 0, p.stderr
    assert os.path.exists(tmp_path / "d" / "catalog.db")


def test_index_type_follows_the_size(milvus_url):
    """HNSW below hnsw_max vectors, IVF_SQ8 from it on (checked on open); search keeps working across the switch."""
    from faceindex.vectors.milvus import MilvusIndex

    rng = np.random.default_rng(7)
    vecs = rng.normal(size=(1500, 16)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    url = milvus_url + "?hnsw_max=1000"
    index = MilvusIndex(url, "size@1/16", 16)
    assert index.kind == "milvus-hnsw"
    index.add(np.arange(1500), vecs)
    assert index.ensure_index() and index.kind == "milvus-ivf_sq8"
    index.close()
    again = MilvusIndex(url, "size@1/16", 16)
    assert again.kind == "milvus-ivf_sq8" and not again.ensure_index()
    assert again.wanted_index(600) == "ivf_sq8" and again.wanted_index(400) == "hnsw"  # no flapping at the bar
    _, got = again.search(vecs[:5], 3)
    assert np.array_equal(got[:, 0], np.arange(5))
    again.close()
