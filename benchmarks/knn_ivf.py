"""The k-NN graph faceindex's people clustering used before `cluster.knn_pairs` (an IVF search over a PCA
projection, one search per face, above 50k faces): kept here as the baseline benchmarks/people.py (Chinese
whispers, single linkage) and benchmarks/people_scale.py (`--recall knn_graph`) measure against."""

from __future__ import annotations

import faiss
import numpy as np

from faceindex.cluster import EXACT_LIMIT, knn_graph

KNN_NPROBE = 32  # IVF lists visited per face (above EXACT_LIMIT) ...
KNN_DIMS = 0.375  # ... and PCA dimensions kept for the IVF search, as a share of the embedding's (at least 64)
KNN_LARGE = 200_000  # above this many faces: 8 lists and 64 dimensions (cost grows as n^1.5; see benchmarks.md)


def knn_ivf(vecs: np.ndarray, k: int, queries: np.ndarray | None = None,
            exact_limit: int = EXACT_LIMIT, nprobe: int | None = None,
            batch: int = 65_536) -> tuple[np.ndarray, np.ndarray]:
    """(similarities, neighbour rows) of the k nearest faces of each query (default: every face) in `vecs`.

    Exact (flat inner product) for small collections. Above `exact_limit` the candidates come from an index built
    for the job: a PCA projection to max(64, 3d/8) dimensions (near neighbours keep their order: 99.7% of the
    pairs above the clustering floor are found on LFW with both packs) in an IVF index with sqrt(nprobe * n)
    lists (which balances picking lists against scanning them), `nprobe` visited; the k + 10 candidates of each
    query are then scored exactly on the full vectors and the best k kept. Missing neighbours are -1.
    """
    vecs = np.ascontiguousarray(vecs, dtype=np.float32)
    queries = vecs if queries is None else np.ascontiguousarray(queries, dtype=np.float32)
    n, d = vecs.shape
    if n <= exact_limit:
        return knn_graph(vecs, k, queries, batch)
    k = min(k, n)
    sims = np.empty((len(queries), k), np.float32)
    nbrs = np.empty((len(queries), k), np.int64)
    rng = np.random.default_rng(0)
    large = n > KNN_LARGE
    nprobe = nprobe or (8 if large else KNN_NPROBE)
    r = min(d, 64 if large else max(64, int(d * KNN_DIMS)))
    nlist = int(np.sqrt(nprobe * n))
    sample = vecs[rng.choice(n, min(n, 10 * nlist), replace=False)]
    pca = faiss.PCAMatrix(d, r)
    pca.train(sample)
    index = faiss.IndexIVFFlat(faiss.IndexFlatL2(r), r, nlist, faiss.METRIC_L2)
    index.cp.niter = 6  # coarse lists are enough: near neighbours share a list or the next one
    index.cp.min_points_per_centroid = 5  # (and faiss's warning about few training points is moot)
    index.train(pca.apply(sample))
    index.nprobe = nprobe
    for s in range(0, n, batch):
        index.add(pca.apply(vecs[s:s + batch]))
    kk = min(k + 10, n)
    for s in range(0, len(queries), batch):
        q = queries[s:s + batch]
        _, cand = index.search(pca.apply(q), kk)
        exact = np.einsum("qd,qkd->qk", q, vecs[np.maximum(cand, 0)])
        exact[cand < 0] = -np.inf
        best = np.argsort(-exact, axis=1)[:, :k]
        sims[s:s + batch] = np.take_along_axis(exact, best, 1)
        nbrs[s:s + batch] = np.where(np.isfinite(sims[s:s + batch]), np.take_along_axis(cand, best, 1), -1)
    return sims, nbrs
