"""A graph renumbered in breadth-first order of its links (`HnswIndex.reorder`, `bfs_order`): the same graph,
the same results, its faces in a new order."""

from __future__ import annotations

from collections import deque

import faiss
import numpy as np
import pytest

from faceindex.vectors.faiss import HnswIndex, load_index
from faceindex.vectors.hnsw import bfs_order, graph_of

DIM = 24


def _graph(codes: str, project: bool, n: int = 3000, seed: int = 0) -> tuple[HnswIndex, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    width = 16 if project else DIM  # projected: vectors in a 16-d subspace, as face embeddings leave dims unused
    basis = np.linalg.qr(rng.normal(size=(DIM, DIM)))[0][:, :width]
    vecs = (rng.normal(size=(n, width)) @ basis.T).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    ids = rng.choice(50 * n, size=n, replace=False).astype(np.int64)
    index = HnswIndex.empty(DIM, m=12, ef_construction=40, ef_search=48, codes=codes, project=project)
    index.train(vecs)
    index.add(ids, vecs)
    assert index.projected == project
    return index, ids, vecs


def _links(index: HnswIndex) -> list[list[int]]:
    """Each node's level-0 links (copied out of FAISS, node by node)."""
    hnsw = graph_of(index.inner).hnsw
    links, starts = faiss.vector_to_array(hnsw.neighbors), faiss.vector_to_array(hnsw.offsets)
    width = hnsw.cum_nb_neighbors(1) - hnsw.cum_nb_neighbors(0)
    return [[int(v) for v in links[int(s):int(s) + width] if v >= 0] for s in starts[:-1]]


def test_bfs_order_is_a_plain_queue_walk_from_the_entry_point():
    index, _, _ = _graph("flat", False)
    hnsw = graph_of(index.inner).hnsw
    links = _links(index)
    want, seen = [], {int(hnsw.entry_point)}
    queue = deque([int(hnsw.entry_point)])
    while queue:
        node = queue.popleft()
        want.append(node)
        for nb in links[node]:
            if nb not in seen:
                seen.add(nb)
                queue.append(nb)
    want += [v for v in range(len(links)) if v not in seen]
    # small chunks: the frontier is read in pieces, as at 10M faces
    for chunk in (7, 65536):
        got = bfs_order(hnsw, len(links), chunk=chunk)
        assert got.tolist() == want
    assert bfs_order(hnsw, 0).tolist() == []


@pytest.mark.parametrize(("codes", "project"), [("flat", False), ("flat", True), ("sq8", False), ("sq8", True)])
def test_a_reordered_graph_returns_what_it_returned_before(tmp_path, codes, project):
    index, ids, vecs = _graph(codes, project)
    assert index.remove(ids[:400]) == 400
    rng = np.random.default_rng(1)
    queries = np.concatenate([vecs[:30], vecs[500:530] + 0.05 * rng.normal(size=(30, DIM)).astype(np.float32)])
    excluded = ids[400:450]
    before = index.search(queries, 10, exclude=excluded)
    old_links = _links(index)
    old_pos = {int(i): p for p, i in enumerate(index.id_map)}

    index.reorder()

    # the same graph: each face linked to the same faces, under their new positions
    new_links = _links(index)
    new_id = index.id_map
    for p, face in enumerate(new_id.tolist()):
        assert sorted(new_id[new_links[p]].tolist()) == sorted(index_ids(old_links[old_pos[face]], old_pos))
    assert graph_of(index.inner).hnsw.entry_point == 0
    after = index.search(queries, 10, exclude=excluded)
    assert np.array_equal(before[1], after[1]) and np.array_equal(before[0], after[0])
    assert set(index.ids().tolist()) == set(ids[400:].tolist())  # the tombstones moved with their faces
    # saved and opened mapped: still the same
    index.save(tmp_path / "index")
    again = load_index(tmp_path / "index", ef_search=48, mmap=True)
    got = again.search(queries, 10, exclude=excluded)
    assert np.array_equal(before[1], got[1]) and np.allclose(before[0], got[0])


def index_ids(positions: list[int], old_pos: dict[int, int]) -> list[int]:
    """The face ids at old `positions` (inverse of `old_pos`)."""
    by_pos = {p: i for i, p in old_pos.items()}
    return [by_pos[p] for p in positions]


def test_a_mapped_graph_reorders_and_takes_new_faces_after(tmp_path):
    index, ids, vecs = _graph("flat", True, n=2000)
    index.save(tmp_path / "index")
    mapped = load_index(tmp_path / "index", ef_search=48, mmap=True)
    mapped.reorder()  # reads the mapped store in first: the file under it is not written
    assert mapped.search(vecs[:20], 1)[1][:, 0].tolist() == ids[:20].tolist()
    more = -vecs[100:150]  # new faces in the graph's span
    mapped.add(np.arange(50) + 10**7, more)
    assert mapped.search(more, 1)[1][:, 0].tolist() == list(range(10**7, 10**7 + 50))
    assert mapped.search(vecs[:20], 1)[1][:, 0].tolist() == ids[:20].tolist()
    untouched = load_index(tmp_path / "index", ef_search=48)
    assert faiss.vector_to_array(untouched.index.id_map).tolist() == ids.tolist()


def test_an_empty_graph_reorders_to_itself():
    index = HnswIndex.empty(DIM, m=12, ef_construction=40)
    index.reorder()
    assert index.count == 0 and index.ids().tolist() == []
