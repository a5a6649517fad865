"""Vector index kinds (exact, IVF, HNSW with tombstones) and the index manager's rebuild-beside and swap."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import faiss
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from faceindex.catalog import Catalog, open_catalog
from faceindex.config import Settings
from faceindex.models.dlib import RESNET_SPEC
from faceindex.models.omz import OMZ95_SPEC
from faceindex.types import Box, Face, Quality
from faceindex.vectors import manager as mg
from faceindex.vectors.faiss import FaissIndex, HnswIndex, IvfSqIndex, load_index
from faceindex.vectors.hnsw import GRAPH_SHAPE, SPAN_REBUILD, VISITED_BYTES_UP_TO, auto_ef, graph_of, span_basis
from faceindex.vectors.manager import INDEX_FILE, IndexManager

DIM = 32
RANK = 20  # the span of the vectors the projected kinds ("...p") are given, as face embeddings leave dims unused


def unit(rng: np.random.Generator, n: int, dim: int = DIM, rank: int | None = None) -> np.ndarray:
    """n random unit vectors; with `rank`, inside a fixed random subspace of that many dimensions."""
    v = rng.normal(size=(n, rank or dim))
    if rank:
        v = v @ np.linalg.qr(np.random.default_rng(7).normal(size=(dim, dim)))[0][:, :rank].T
    v = v.astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def rank_of(kind: str) -> int | None:
    return RANK if kind.split("+")[0].endswith("p") else None


def make(kind: str, vecs: np.ndarray, ids: np.ndarray):
    """An index of `kind` holding `vecs`; "+o" after a graph kind: renumbered in link order after the adds, as the
    manager leaves a graph it has built (`HnswIndex.reorder`)."""
    if kind.endswith("+o"):
        index = make(kind[:-2], vecs, ids)
        index.reorder()
        return index
    if kind in ("hnswp", "hnswsqp"):  # a graph over the span of a training sample, as the manager makes them
        index = HnswIndex.empty(vecs.shape[1], ef_search=64, codes="sq8" if kind == "hnswsqp" else "flat",
                                project=True)
        index.train(unit(np.random.default_rng(99), 8 * vecs.shape[1], vecs.shape[1], RANK))
        assert index.projected
    elif kind == "exact":
        index = FaissIndex.exact(vecs.shape[1])
    elif kind == "ivf":
        index = FaissIndex.ivf(vecs.shape[1], vecs, nprobe=64)
    elif kind == "ivfsq":
        index = IvfSqIndex.trained(vecs.shape[1], vecs, len(vecs), nprobe=64)
    elif kind == "hnswsq":
        index = HnswIndex.empty(vecs.shape[1], ef_search=64, codes="sq8")
    else:
        index = HnswIndex.empty(vecs.shape[1], ef_search=64)
    index.add(ids, vecs)
    return index


KINDS = ["exact", "ivf", "hnsw", "hnswsq", "ivfsq", "hnswp", "hnswsqp", "hnswp+o", "hnswsq+o"]


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**31), n=st.integers(40, 400), frac=st.floats(0.0, 0.9))
def test_deleted_ids_are_never_returned(kind, seed, n, frac):
    rng = np.random.default_rng(seed)
    vecs = unit(rng, n, rank=rank_of(kind))
    ids = rng.choice(10 * n, size=n, replace=False).astype(np.int64)
    index = make(kind, vecs, ids)
    gone = rng.choice(ids, size=int(frac * n), replace=False)
    assert index.remove(gone) == len(gone)
    assert index.count == n - len(gone)
    assert set(index.ids().tolist()) == set(ids.tolist()) - set(gone.tolist())
    excluded = rng.choice(ids, size=min(5, n), replace=False)
    # the deleted faces themselves as queries: the worst case for a tombstone filter
    queries = vecs[np.isin(ids, gone)][:20] if len(gone) else vecs[:5]
    _, found = index.search(queries, 10, exclude=excluded)
    returned = set(found[found >= 0].tolist())
    assert not returned & set(gone.tolist())
    assert not returned & set(excluded.tolist())
    for _, hit in index.range_search(queries, 0.0):
        assert not set(hit.tolist()) & set(gone.tolist())


@pytest.mark.parametrize("kind", KINDS)
def test_recall_floor_against_exact_search(kind):
    rng = np.random.default_rng(1)
    vecs = unit(rng, 3000, rank=rank_of(kind))
    ids = np.arange(3000, dtype=np.int64) + 1
    index = make(kind, vecs, ids)
    index.remove(ids[::7])
    truth = FaissIndex.exact(DIM)
    keep = np.ones(3000, bool)
    keep[::7] = False
    truth.add(ids[keep], vecs[keep])
    queries = unit(rng, 100)  # full-rank: the projected kinds' queries have energy outside the span
    _, got = index.search(queries, 10)
    _, want = truth.search(queries, 10)
    recall = np.mean([len(set(g) & set(w)) / 10 for g, w in zip(got.tolist(), want.tolist())])
    assert recall >= (1.0 if kind == "exact" else 0.9), recall


def test_auto_ef_search_grows_with_the_gallery_and_is_used_by_the_graph():
    assert Settings().ef_search == "auto"
    assert [auto_ef(n) for n in (1_000, 100_000, 1_000_000, 10_000_000)] == [64, 128, 405, 512]
    rng = np.random.default_rng(3)
    vecs = unit(rng, 500)
    index = HnswIndex.empty(DIM)  # ef_search "auto"
    index.add(np.arange(500), vecs)
    assert index._params(10, None).efSearch == auto_ef(500) == 64
    assert index._params(100, None).efSearch == 100  # never fewer candidates than results asked for
    index.ef_search = 300
    assert index._params(10, None).efSearch == 300
    # auto recall on a small gallery: the floor the fixed-ef graph meets
    truth = FaissIndex.exact(DIM)
    truth.add(np.arange(500), vecs)
    index.ef_search = "auto"
    queries = unit(rng, 50)
    got, want = index.search(queries, 10)[1], truth.search(queries, 10)[1]
    assert np.mean([len(set(g) & set(w)) / 10 for g, w in zip(got.tolist(), want.tolist())]) >= 0.95


def test_graph_searches_track_visited_faces_in_a_byte_array(tmp_path):
    """FAISS switches a graph search's visited set to a hash set at 10M faces (500k in earlier releases), 1.5-2x
    slower (docs/benchmarks.md); a graph made or opened by faceindex keeps the byte array."""
    cvar = faiss.cvar
    if not hasattr(cvar, "visited_table_hashset_threshold"):
        pytest.skip("this FAISS has no hash-set visited table (before 1.11)")
    old = cvar.visited_table_hashset_threshold
    try:
        cvar.visited_table_hashset_threshold = 500_000
        index = HnswIndex.empty(DIM)
        assert cvar.visited_table_hashset_threshold == VISITED_BYTES_UP_TO >= 10**9
        index.add(np.arange(300), unit(np.random.default_rng(5), 300))
        index.save(tmp_path / "g")
        cvar.visited_table_hashset_threshold = 500_000
        load_index(tmp_path / "g", mmap=True)
        assert cvar.visited_table_hashset_threshold == VISITED_BYTES_UP_TO
    finally:
        cvar.visited_table_hashset_threshold = old


@pytest.mark.parametrize("kind", ["hnsw", "hnswsq", "hnswp"])
def test_a_mapped_graph_serves_then_reads_itself_in_on_the_first_add(tmp_path, kind):
    """Opened with mmap, a graph reads its links only; its file may be replaced meanwhile (another process saved
    a newer index); the first add reads the rest from the file it mapped, not from the new one."""
    rng = np.random.default_rng(5)
    vecs = unit(rng, 1200, rank=rank_of(kind))
    index = make(kind, vecs[:1000], np.arange(1000))
    index.save(tmp_path / "index")
    mapped = load_index(tmp_path / "index", mmap=True)
    assert mapped._mapped is not None
    before = mapped.search(vecs[:20], 5)
    np.testing.assert_array_equal(before[1], index.search(vecs[:20], 5)[1])
    assert mapped.remove(np.arange(10)) == 10  # tombstones need no write to the mapped store
    other = make(kind, vecs[:50], np.arange(5000, 5050))
    other.save(tmp_path / "index")  # replaces the file under the mapping
    mapped.add(np.arange(1000, 1200), vecs[1000:])
    assert mapped._mapped is None
    assert set(mapped.ids().tolist()) == set(range(10, 1200))
    _, found = mapped.search(vecs[1000:1020], 1)
    assert found[:, 0].tolist() == list(range(1000, 1020))
    assert not set(mapped.search(vecs[:10], 10)[1].ravel().tolist()) & set(range(10))
    mapped.save(tmp_path / "again")
    assert set(load_index(tmp_path / "again").ids().tolist()) == set(range(10, 1200))


def test_only_graphs_are_mapped(tmp_path):
    rng = np.random.default_rng(6)
    vecs = unit(rng, 300)
    for kind in ("exact", "ivfsq"):
        make(kind, vecs, np.arange(300)).save(tmp_path / kind)
        again = load_index(tmp_path / kind, mmap=True)
        assert getattr(again, "_mapped", None) is None
        again.add(np.arange(300, 310), vecs[:10])  # stores that change in place are read, not mapped
        assert again.count == 310


@pytest.mark.parametrize("kind", ["hnsw", "hnswsq", "ivfsq", "hnswp", "hnswsqp"])
def test_reused_id_replaces_the_old_entry_and_survives_a_reload(tmp_path, kind):
    rng = np.random.default_rng(2)
    vecs = unit(rng, 50, rank=rank_of(kind))
    index = make(kind, vecs, np.arange(50))
    index.remove([7])
    index.add([7], vecs[8:9])  # the catalog re-used id 7 for another face
    sims, found = index.search(vecs[8:9], 2)
    assert sorted(found[0].tolist()) == [7, 8] and index.count == 50
    index.save(tmp_path / "v.faiss")
    for mmap in (False, True):
        again = load_index(tmp_path / "v.faiss", mmap=mmap)
        assert again.kind == index.kind and again.count == 50 and again.tombstones == 1
        assert getattr(again, "projected", False) == getattr(index, "projected", False)
        assert np.array_equal(again.ids(), index.ids())
        assert sorted(again.search(vecs[8:9], 2)[1][0].tolist()) == [7, 8]
        again.add([99], vecs[20:21])  # adds after a (memory-mapped) load
        assert again.search(vecs[20:21], 1)[1][0, 0] in (20, 99) and again.count == 51
        if mmap and again.quantised:  # the mapped fp16 copy stays mapped: adds go beside it
            assert isinstance(again._fine, np.memmap)
        again.save(tmp_path / f"w{mmap}.faiss")
        third = load_index(tmp_path / f"w{mmap}.faiss", mmap=True)
        sims, found = third.search(vecs[20:21], 2)
        assert sorted(found[0].tolist()) == [20, 99] and abs(sims[0, 0] - 1) < 2e-3


def test_quantised_kinds_return_exact_scores():
    """The re-rank scores the short list on the fp16 vectors: scores within fp16 error of the float ones."""
    rng = np.random.default_rng(9)
    vecs = unit(rng, 2000, 128)
    for kind in ("hnswsq", "ivfsq"):
        index = make(kind, vecs, np.arange(2000))
        sims, found = index.search(vecs[:50], 5)
        want = np.einsum("qkd,qd->qk", vecs[found], vecs[:50])
        assert np.abs(sims - want).max() < 2e-3
        assert (found[:, 0] == np.arange(50)).all()


def test_span_basis_keeps_the_directions_in_use_and_only_when_it_pays():
    rng = np.random.default_rng(11)
    inside = unit(rng, 2000, 64, rank=40)
    basis = span_basis(inside)
    assert basis.shape == (64, 48)  # 40 directions in use, widened to a multiple of 16 (SIMD codes)
    np.testing.assert_allclose(basis.T @ basis, np.eye(48), atol=1e-5)
    q = unit(rng, 5, 64)  # any query: inner products with vectors in the span are kept
    np.testing.assert_allclose((q @ basis) @ (inside[:50] @ basis).T, q @ inside[:50].T, atol=1e-5)
    assert span_basis(unit(rng, 2000, 64)) is None  # full rank: nothing to gain
    assert span_basis(unit(rng, 2000, 64, rank=60)) is None  # 60 of 64: less than 10% to gain
    assert span_basis(inside[:300]) is None  # too few vectors to tell (< 8 d)
    # 20 of 32 in use: widened to 32 it would gain nothing, so the 20 are kept as they are
    assert span_basis(unit(rng, 2000, 32, rank=20)).shape == (32, 20)


def test_a_graph_saved_with_a_narrow_span_is_rebuilt_beside_with_a_wide_one(tmp_path, monkeypatch):
    """Graphs saved before spans were widened to SIMD width (dlib: 78 directions, 80 now) are rebuilt once."""
    from faceindex.vectors import hnsw

    rng = np.random.default_rng(12)
    vecs = unit(rng, 1100, 128, rank=40)  # 40 directions in use: widened to 48 now
    monkeypatch.setattr(hnsw, "SPAN_ALIGN", 1)  # as spans were made before
    catalog, m = manager(tmp_path, index_kind="hnsw")
    ids = fill(catalog, vecs)
    m.index  # noqa: B018 - builds the graph beside the exact index
    m.wait()
    old = m.index
    assert old.kind == "hnsw" and old.projected and old._basis().shape[1] == 40 and not old.narrow_span
    monkeypatch.setattr(hnsw, "SPAN_ALIGN", 16)
    assert old.narrow_span and old.needs_compaction()
    again = IndexManager(catalog, tmp_path, RESNET_SPEC, Settings(data=tmp_path, index_kind="hnsw"))
    assert again.index.narrow_span  # the saved graph serves while its replacement is built beside
    again.wait()
    new = again.index
    assert new.projected and new._basis().shape[1] == 48 and not new.needs_compaction()
    assert new.search(vecs[:20], 1)[1][:, 0].tolist() == ids[:20]
    again.wait()
    assert again.index is new  # once
    catalog.close()


@pytest.mark.parametrize("kind", ["hnswp", "hnswsqp"])
def test_a_projected_graph_scores_exactly_and_finds_faces_outside_its_span(tmp_path, kind):
    """Faces added after training with energy outside the span are still found (their projection guides the
    graph) and scored on their whole vectors; enough of them ask for a rebuild on a fresh sample."""
    rng = np.random.default_rng(12)
    vecs = unit(rng, 1000, rank=RANK)
    index = make(kind, vecs, np.arange(1000))
    if kind == "hnswp":  # faces and queries inside the span: the graph's float scores, the fp16 copy unread
        fine, index._fine = index._fine, _Untouchable(index._fine)
        assert index._plan(vecs[:30])[0] is False
    sims, found = index.search(vecs[:30], 5)
    assert (found[:, 0] == np.arange(30)).all()
    np.testing.assert_allclose(sims, np.einsum("qkd,qd->qk", vecs[found], vecs[:30]), atol=2e-3)
    if kind == "hnswp":
        index._fine = fine
    outside = 0.8 * vecs[:20] + 0.6 * unit(rng, 20)  # ~40% of their energy outside the span
    outside /= np.linalg.norm(outside, axis=1, keepdims=True)
    assert not index.needs_compaction()
    index.add(np.arange(5000, 5020), outside)
    sims, found = index.search(outside, 1)
    assert found[:, 0].tolist() == list(range(5000, 5020))
    np.testing.assert_allclose(sims[:, 0], 1.0, atol=2e-3)  # the whole vector, not its shorter projection
    assert SPAN_REBUILD * 1020 < 20 and index.needs_compaction()
    # a query with a part outside the span, against faces with parts outside it: scored on the whole vectors
    q = outside[:5] + unit(rng, 5)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    sims, found = index.search(q, 3)
    rows = np.concatenate([vecs, outside])[np.where(found >= 5000, found - 4000, found)]
    np.testing.assert_allclose(sims, np.einsum("qkd,qd->qk", rows, q), atol=2e-3)
    index.save(tmp_path / "p")
    for drop_stats in (False, True):
        if drop_stats:
            (tmp_path / "p.span.json").unlink()  # unknown bound: every search re-ranks, still exact
        again = load_index(tmp_path / "p", mmap=True)
        assert again.projected and again.kind == index.kind and again.needs_compaction() != drop_stats
        assert again._plan(outside)[0] is True  # faces outside the span are known (or may be): re-rank
        sims, found = again.search(outside, 1)
        assert found[:, 0].tolist() == list(range(5000, 5020))
        np.testing.assert_allclose(sims[:, 0], 1.0, atol=2e-3)


class _Untouchable:
    """Stands in for an fp16 copy that must not be read."""

    def __init__(self, arr: np.ndarray) -> None:
        self.shape, self.dtype = arr.shape, arr.dtype

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key):
        raise AssertionError("the fp16 copy was read")


def test_the_manager_builds_graphs_over_the_span_of_a_sample(tmp_path):
    rng = np.random.default_rng(14)
    catalog, m = manager(tmp_path, exact_threshold=100)
    vecs = unit(rng, 1200, 128, rank=64)
    ids = fill(catalog, vecs)
    m.index  # noqa: B018 - exact; the graph is built beside
    m.wait()
    assert m.index.kind == "hnsw" and m.index.projected and m.index.count == 1200
    _, found = m.index.search(vecs[:20], 1)
    assert found[:, 0].tolist() == ids[:20]
    catalog.close()
    catalog, m = manager(tmp_path / "full", exact_threshold=100)  # embeddings that fill their space
    fill(catalog, unit(rng, 1200, 128))
    m.index  # noqa: B018
    m.wait()
    assert m.index.kind == "hnsw" and not m.index.projected
    catalog.close()


@pytest.mark.parametrize("spec", [RESNET_SPEC, OMZ95_SPEC])
def test_the_manager_builds_dense_graphs_and_calibrates_their_ef(tmp_path, monkeypatch, spec):
    seen = []  # (faces the graph held, the calibration's faces) when it was calibrated
    calibrate = HnswIndex.calibrate
    monkeypatch.setattr(HnswIndex, "calibrate", lambda self, faces, face_ids: (
        seen.append((set(self.ids().tolist()), set(np.asarray(face_ids).tolist()))), calibrate(self, faces, face_ids))[1])
    catalog = open_catalog(tmp_path / "catalog.db")
    m = IndexManager(catalog, tmp_path, spec, Settings(data=tmp_path, exact_threshold=100))
    vecs = unit(np.random.default_rng(15), 2100, spec.dim, rank=spec.dim // 2)
    ids = fill(catalog, vecs, spec=spec)
    m.index  # noqa: B018 - exact; the graph is built beside
    m.wait()
    graph = graph_of(faiss.downcast_index(m.index.index.index))
    assert m.index.projected and (graph.hnsw.nb_neighbors(1), graph.hnsw.efConstruction) == GRAPH_SHAPE
    built = m.index.id_map[:1890]  # renumbered in link order (`reorder`), not in the order the faces came
    assert not (np.diff(built) > 0).all()
    assert m.index.search(vecs[:10], 1)[1][:, 0].tolist() == ids[:10]
    assert m.index.count == 2100 and set(m.index.ids().tolist()) == set(ids)
    # `auto` ef_search was calibrated on 210 (10%) of the gallery's faces held out of the graph until then (and
    # added after), saved beside the index and read back
    [(held_then, calibrated_on)] = seen
    assert len(calibrated_on) == 210 and not held_then & calibrated_on and len(held_then) == 1890
    ef, faces = m.index.calibrated
    assert faces == 2100 and m.index._params(10, None).efSearch == ef and m.index.calibration_recall >= 0.99
    m.close()
    again = IndexManager(catalog, tmp_path, spec, Settings(data=tmp_path, exact_threshold=100))
    assert again.index.kind == "hnsw" and again.index.calibrated == (ef, 2100)
    catalog.close()


# --- the manager over a real catalog -----------------------------------------------------------------------
def _face(vec: np.ndarray, i: int) -> Face:
    q = Quality(size=100, sharpness=300.0, detector_score=1.0, frontal=0.9, score=0.9)
    return Face(box=Box(0, 0, 100, 100), landmarks=((0.0, 0.0),) * 5, quality=q, embedding=vec, index=i)


def fill(catalog: Catalog, vecs: np.ndarray, start: int = 0, spec=RESNET_SPEC) -> list[int]:
    src = catalog.source_id("s", create=True)
    catalog.check_model(spec.key)
    ids = []
    for k, v in enumerate(vecs):
        _, new, _ = catalog.add_image(src, f"/p/{start + k}.jpg", 0, f"{start + k:064x}", 1, 100, 100, [_face(v, 0)])
        ids += new
    return ids


def manager(tmp_path: Path, **kw) -> tuple[Catalog, IndexManager]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    catalog = open_catalog(tmp_path / "catalog.db")
    return catalog, IndexManager(catalog, tmp_path, RESNET_SPEC, Settings(data=tmp_path, **kw))


def test_kind_follows_the_gallery_size_both_ways(tmp_path):
    rng = np.random.default_rng(3)
    catalog, m = manager(tmp_path, exact_threshold=200)
    ids = fill(catalog, unit(rng, 150, 128))
    assert m.index.kind == "exact"
    more = fill(catalog, unit(rng, 100, 128), start=150)
    assert m.index.kind == "exact"  # the graph is built beside, the exact index serves meanwhile
    m.wait()
    assert m.index.kind == "hnsw" and m.index.count == 250
    catalog.delete_faces(ids + more[:20])  # 80 left: below half the threshold
    assert m.index.kind == "exact" and m.index.count == 80
    catalog.close()


def test_kind_goes_up_to_the_quantised_graph_and_back_down(tmp_path):
    rng = np.random.default_rng(13)
    catalog, m = manager(tmp_path, exact_threshold=100, graph_threshold=200)
    vecs = unit(rng, 250, 128)
    ids = fill(catalog, vecs[:150])
    m.index  # noqa: B018 - exact; the graph is built beside
    m.wait()
    assert m.index.kind == "hnsw"
    ids += fill(catalog, vecs[150:], start=150)
    m.index  # noqa: B018 - the float graph serves while the SQ8 one is built beside
    m.wait()
    assert m.index.kind == "hnswsq" and m.index.count == 250
    assert m.index.search(vecs[200:201], 1)[1][0, 0] == ids[200]
    catalog.delete_faces(ids[:170])  # 80 left: below half the graph threshold
    m.forget(ids[:170])
    m.wait()
    assert m.index.kind == "hnsw" and m.index.count == 80
    assert not set(m.index.search(vecs[:20], 10)[1].ravel().tolist()) & set(ids[:170])
    catalog.delete_faces(ids[170:220])  # 30 left: below half the exact threshold
    assert m.index.kind == "exact" and m.index.count == 30
    catalog.close()


@pytest.mark.parametrize("kind", ["hnsw", "hnswsq", "ivfsq"])
def test_an_index_that_fills_with_tombstones_is_compacted(tmp_path, kind):
    rng = np.random.default_rng(4)
    catalog, m = manager(tmp_path, index_kind=kind)
    ids = fill(catalog, unit(rng, 100, 128))
    m.index  # noqa: B018 - loads, and starts building the index beside
    m.wait()
    assert m.index.kind == kind
    catalog.delete_faces(ids[:30])
    m.forget(ids[:30])
    m.wait()
    assert m.index.tombstones == 0 and m.index.count == 70
    catalog.close()


def test_a_failed_rebuild_leaves_the_old_index_serving(tmp_path, monkeypatch):
    rng = np.random.default_rng(5)
    vecs = unit(rng, 120, 128)
    catalog, m = manager(tmp_path, exact_threshold=100)
    real_build = m._build

    def broken(kind, cat):
        if kind == "hnsw":
            raise MemoryError("simulated failure mid-rebuild")
        return real_build(kind, cat)

    monkeypatch.setattr(m, "_build", broken)
    fill(catalog, vecs)
    assert m.index.kind == "exact"
    m.wait()
    assert isinstance(m.rebuild_error, MemoryError)
    assert m.index.kind == "exact" and m.index.search(vecs[:1], 1)[1][0, 0] == 1
    catalog.close()


def test_searches_go_on_while_the_graph_is_built(tmp_path, monkeypatch):
    rng = np.random.default_rng(6)
    vecs = unit(rng, 120, 128)
    catalog, m = manager(tmp_path, exact_threshold=100)
    release = threading.Event()
    real_build = m._build

    def slow(kind, cat):
        if kind == "hnsw":
            release.wait(30)
        return real_build(kind, cat)

    monkeypatch.setattr(m, "_build", slow)
    ids = fill(catalog, vecs)
    assert m.index.kind == "exact"  # starts the rebuild
    t0 = time.perf_counter()
    for v in vecs[:20]:
        m.index.search(v[None], 3)
    assert time.perf_counter() - t0 < 5  # served while the rebuild waits
    catalog.delete_faces(ids[:2])  # a deletion during the rebuild must hold after the swap
    m.forget(ids[:2])
    release.set()
    m.wait()
    assert m.index.kind == "hnsw" and m.index.count == 118
    found = m.index.search(vecs[:2], 5)[1]
    assert not set(found.ravel().tolist()) & set(ids[:2])
    catalog.close()


@pytest.mark.parametrize("kind", ["hnsw", "hnswsq", "ivfsq"])
def test_a_build_that_dies_resumes_from_its_checkpoint(tmp_path, monkeypatch, kind):
    monkeypatch.setattr(mg, "BUILD_BATCH", 40)
    monkeypatch.setattr(mg, "CHECKPOINT_EVERY", 40)
    rng = np.random.default_rng(14)
    vecs = unit(rng, 201, 128)
    catalog, m = manager(tmp_path, index_kind=kind)
    ids = fill(catalog, vecs[:200])
    cls = type(m._new_index(kind, catalog))
    real_add = cls.add
    added: list[list[int]] = []

    def add(self, i, v, fail=True):
        if fail and len(added) == 2:
            raise MemoryError("killed mid-build")
        added.append(list(i))
        real_add(self, i, v)

    monkeypatch.setattr(cls, "add", add)
    m.index  # noqa: B018 - exact serves; the build beside dies after two batches (two checkpoints)
    m.wait()
    assert isinstance(m.rebuild_error, MemoryError) and m.index.kind == "exact"
    held = set(json.loads((tmp_path / mg.PARTIAL_META).read_text())["held"])  # a graph's calibration faces
    assert len(held) == (20 if kind != "ivfsq" else 0)
    added.clear()
    monkeypatch.setattr(cls, "add", lambda self, i, v: add(self, i, v, fail=False))
    ids += fill(catalog, vecs[200:], start=200)
    m.index  # noqa: B018 - a change: the build is tried again, from the checkpoint
    m.wait()
    assert m.index.kind == kind and m.index.count == 201
    assert added[0][0] == min(set(ids[80:]) - held)  # resumed after the two checkpointed batches
    if held:  # the same faces held out as before the crash, added once the graph was calibrated
        assert set(added[-1]) == held and not held & {i for batch in added[:-1] for i in batch}
    assert not list(tmp_path.glob("vectors.partial*"))
    assert m.index.search(vecs[:3], 1)[1][:, 0].tolist() == ids[:3]
    catalog.close()


CRASH = """
import sys, numpy as np
from faceindex.catalog import Catalog, open_catalog
from faceindex.config import Settings
from faceindex.models.dlib import RESNET_SPEC
from faceindex.vectors import manager as mg
from pathlib import Path
data = Path(sys.argv[1])
cat = open_catalog(data / "catalog.db")
kind = sys.argv[3]
s = Settings(data=data, exact_threshold=100, graph_threshold=int(sys.argv[2]),
             index_kind="ivfsq" if kind == "ivfsq" else "auto")
m = mg.IndexManager(cat, data, RESNET_SPEC, s)
real = m._build
def build(kind, c):
    if kind == sys.argv[3]:
        print("building", flush=True)
        import time; time.sleep(60)
    return real(kind, c)
m._build = build
m.index
m.wait()
"""


@pytest.mark.parametrize("kind", ["hnsw", "hnswsq", "ivfsq"])
def test_killed_during_rebuild_reopens_with_the_old_index(tmp_path, kind):
    rng = np.random.default_rng(7)
    vecs = unit(rng, 120, 128)
    catalog, m = manager(tmp_path, exact_threshold=10_000)
    fill(catalog, vecs)
    assert m.index.kind == "exact"
    m.save()
    catalog.close()
    before = (tmp_path / INDEX_FILE).read_bytes()
    graph_threshold = "10000" if kind == "hnsw" else "100"  # 120 faces: hnsw below the graph threshold
    proc = subprocess.Popen([sys.executable, "-c", CRASH, str(tmp_path), graph_threshold, kind],
                            stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert proc.stdout.readline().strip() == "building"
    proc.kill()
    proc.wait()
    assert (tmp_path / INDEX_FILE).read_bytes() == before  # the old file, untouched
    catalog, m = manager(tmp_path, exact_threshold=10_000)
    assert m.index.kind == "exact" and m.index.count == 120 and m.repaired is None
    catalog.close()
