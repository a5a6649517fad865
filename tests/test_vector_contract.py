"""One contract for every vector store, run unchanged on each: FAISS exact, IVF and HNSW, Milvus HNSW and IVF_SQ8
(on a real Milvus server, tests/milvus_server.py). What the engine relies on: ids, counts, removal effective at
once (Milvus searches at its default Bounded consistency), exclusion, persistence across a reopen, and recall."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from faceindex.vectors.faiss import FaissIndex, HnswIndex, load_index

DIM = 32
KINDS = ["exact", "ivf", "hnsw", "milvus-hnsw", "milvus-ivf_sq8"]


def unit(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    v = rng.normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


class Store:
    """An empty store of one kind, and how to reopen it as a new process would (from its file, or its server)."""

    def __init__(self, kind: str, tmp: Path, train: np.ndarray, request) -> None:
        self.kind, self.path = kind, tmp / "vectors.faiss"
        if kind.startswith("milvus"):
            self.url = request.getfixturevalue("milvus_url") + f"?index={kind.removeprefix('milvus-')}"
            self.index = self._milvus()
        elif kind == "exact":
            self.index = FaissIndex.exact(DIM)
        elif kind == "ivf":
            self.index = FaissIndex.ivf(DIM, train, nprobe=64)
        else:
            self.index = HnswIndex.empty(DIM, ef_search=128)

    def _milvus(self):
        from faceindex.vectors.milvus import MilvusIndex

        return MilvusIndex(self.url, "contract@1/32", DIM, ef_search=128, nprobe=128)

    def reopen(self):
        """Persist (FAISS: the file; Milvus: seal its segments) and open it afresh."""
        self.index.save(self.path)
        if self.kind.startswith("milvus"):
            self.index.close()
            self.index = self._milvus()
        else:
            self.index = load_index(self.path, nprobe=64, ef_search=128)
        return self.index

    def close(self) -> None:
        if self.kind.startswith("milvus"):
            self.index.close()


@pytest.fixture(params=KINDS)
def store(request, tmp_path) -> Callable[[np.ndarray], Store]:
    made: list[Store] = []

    def make(train: np.ndarray) -> Store:
        made.append(Store(request.param, tmp_path, train, request))
        return made[-1]

    yield make
    for s in made:
        s.close()


def test_add_ids_count_and_self_search(store):
    rng = np.random.default_rng(1)
    vecs, ids = unit(rng, 600), np.arange(1000, 1600, dtype=np.int64)
    s = store(vecs)
    s.index.add(ids, vecs)
    assert s.index.count == 600
    assert np.array_equal(s.index.ids(), ids)
    sims, got = s.index.search(vecs[:20], 5)
    assert got.shape == (20, 5) and sims.shape == (20, 5)
    assert np.array_equal(got[:, 0], ids[:20])  # each vector finds itself first
    assert np.allclose(sims[:, 0], 1.0, atol=0.02)  # IVF_SQ8 stores 8-bit codes
    assert (np.diff(sims, axis=1) <= 1e-6).all()  # best first


def test_removed_are_never_returned_at_once(store):
    rng = np.random.default_rng(2)
    vecs, ids = unit(rng, 500), np.arange(500, dtype=np.int64)
    s = store(vecs)
    s.index.add(ids, vecs)
    gone = ids[::3]
    assert s.index.remove(gone) == len(gone)
    assert s.index.remove(gone[:5]) == 0  # not held any more
    # searched right after the delete: at Milvus' Bounded consistency the server may still hold them
    _, got = s.index.search(vecs[gone], 10)
    assert not np.isin(got, gone).any()
    assert (got[:, 0] >= 0).all()
    assert s.index.count == 500 - len(gone)
    assert np.array_equal(s.index.ids(), np.setdiff1d(ids, gone))


def test_exclude_skips_ids_and_still_fills_k(store):
    rng = np.random.default_rng(3)
    vecs, ids = unit(rng, 400), np.arange(400, dtype=np.int64)
    s = store(vecs)
    s.index.add(ids, vecs)
    _, near = s.index.search(vecs[:1], 60)
    excluded = near[0][:50]  # the probe's 50 nearest (itself first)
    _, got = s.index.search(vecs[:1], 10, exclude=excluded)
    assert not np.isin(got, excluded).any()
    assert (got >= 0).all()  # still 10 results


def test_readd_replaces(store):
    rng = np.random.default_rng(4)
    vecs, ids = unit(rng, 300), np.arange(300, dtype=np.int64)
    s = store(vecs)
    s.index.add(ids, vecs)
    s.index.remove(ids[:1])
    s.index.add(ids[:1], vecs[1:2])  # a catalog id reused for another face
    assert s.index.count == 300
    sims, got = s.index.search(vecs[1:2], 3)
    assert set(got[0][:2].tolist()) == {0, 1}  # both hold vecs[1] now
    assert list(got[0]).count(0) == 1


def test_persist_and_reopen(store):
    rng = np.random.default_rng(5)
    vecs, ids = unit(rng, 400), np.arange(10, 410, dtype=np.int64)
    s = store(vecs)
    s.index.add(ids, vecs)
    s.index.remove(ids[:40])
    again = s.reopen()
    assert again.count == 360
    assert np.array_equal(again.ids(), ids[40:])
    _, got = again.search(vecs[:60], 1)
    assert not np.isin(got, ids[:40]).any()
    assert np.array_equal(got[40:, 0], ids[40:60])


def test_recall_against_exact(store):
    """recall@10 over 10k random unit vectors against brute force; floor 0.9 (measured figures of each kind at
    scale are in docs/benchmarks.md)."""
    rng = np.random.default_rng(6)
    vecs, ids = unit(rng, 10_000), np.arange(10_000, dtype=np.int64)
    queries = unit(rng, 100)
    s = store(vecs)
    s.index.add(ids, vecs)
    index = s.reopen()  # Milvus: sealed and indexed, as a gallery is after its load
    _, got = index.search(queries, 10)
    truth = np.argsort(-(queries @ vecs.T), axis=1)[:, :10]
    recall = np.mean([len(set(g) & set(t)) / 10 for g, t in zip(got.tolist(), truth.tolist())])
    assert recall >= 0.9, f"{s.kind}: recall@10 {recall:.3f}"
