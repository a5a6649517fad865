"""Group faces into people: reciprocal average-linkage agglomeration over the k-nearest-neighbour graph.

Why not single linkage: merging every edge above a similarity threshold lets one chance match (a bridge) join two
people, and the number of chance matches grows with the collection, so precision falls with size (issue 13).

Here a group's link to another is the mean similarity over *all* pairs of their faces (average linkage), which for
L2-normalised embeddings is exactly the dot product of the two groups' mean vectors: it is computed from one sum
vector per group, never from pair lists. A chain of intermediate faces cannot glue two tight groups together,
because the groups' mean similarity stays low however many bridges there are. Merges are reciprocal (RAC): in each
round every group finds its best-linked neighbour above the threshold, and the mutual-best pairs merge; with
average linkage this is the same result as merging the best pair first, one at a time, but runs in a few dozen
vectorised rounds. A face joins the person it matches best, not every person it matches, which is what keeps
precision as the collection grows.

Constraints: faces of one photo are never one person (cannot-link); `must` pairs start in one group and are never
separated (manual merges); `cannot` pairs never meet (manual splits); `frozen` groups keep their identity (faces
already assigned to people), so that an incremental run only places new faces.

The candidates are the k nearest neighbours of each face (exact below `exact_limit` faces, else a join over
coarse lists built for the job: `knn_pairs`), kept where the similarity reaches the threshold: a mean can reach
it only if one pair does. Each round recomputes only the links of groups that merged in the round before.
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np

EXACT_LIMIT = 50_000  # exact k-NN below this many faces; the list join of knn_pairs above
JOIN_LISTS = 20  # the list join of knn_pairs (above EXACT_LIMIT): sqrt(JOIN_LISTS * n) lists ...
JOIN_PROBE = 20  # ... each face meets the faces of its JOIN_PROBE nearest lists ...
JOIN_DIMS = 64  # ... chosen in this many PCA dimensions
JOIN_HOLD = 20_000_000  # pairs held before they are cut to each query's best k (memory)
MAX_ROUNDS = 10_000  # a safety bound; real runs finish in tens of rounds


@dataclass(frozen=True)
class Clustering:
    """Labels 0..m-1 per face, and per label the weakest merge that formed it (mean similarity; 1.0 if one face)."""

    labels: np.ndarray
    cohesion: np.ndarray
    rounds: int = 0


def knn_graph(vecs: np.ndarray, k: int, queries: np.ndarray | None = None,
              batch: int = 65_536) -> tuple[np.ndarray, np.ndarray]:
    """(similarities, neighbour rows) of the exact k nearest faces of each query (default: every face) in `vecs`
    (flat inner product; above EXACT_LIMIT faces `knn_pairs` joins coarse lists instead)."""
    vecs = np.ascontiguousarray(vecs, dtype=np.float32)
    queries = vecs if queries is None else np.ascontiguousarray(queries, dtype=np.float32)
    k = min(k, len(vecs))
    sims = np.empty((len(queries), k), np.float32)
    nbrs = np.empty((len(queries), k), np.int64)
    index = faiss.IndexFlatIP(vecs.shape[1])
    index.add(vecs)
    for s in range(0, len(queries), batch):
        sims[s:s + batch], nbrs[s:s + batch] = index.search(queries[s:s + batch], k)
    return sims, nbrs


def knn_pairs(vecs: np.ndarray, k: int, floor: float, queries: np.ndarray | None = None,
              exact_limit: int | None = None, nprobe: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The k nearest faces of each query (default: every face) in `vecs` with similarity >= `floor`, as pairs
    (query row, face row, similarity), each query's pairs best first.

    Exact (`knn_graph`) up to `exact_limit` (default EXACT_LIMIT) faces. Above, a join over coarse lists rather
    than one index search per face: the faces are split into sqrt(JOIN_LISTS * queries) lists by k-means on a PCA
    projection (JOIN_DIMS), each query goes to its `nprobe` (JOIN_PROBE) nearest lists, and each list meets all
    its queries in one matrix product on the full vectors (exact similarities: nothing to re-score); pairs below
    `floor` are dropped at once. The cost grows as n^1.5 like an IVF search's, but as dense matrix products
    instead of per-face list scans. An incremental run's few queries get few lists, so they do not pay for
    sorting a million faces finely. Recall and time against the IVF search it replaced (benchmarks/knn_ivf.py):
    docs/benchmarks.md ("People at scale").
    """
    vecs = np.ascontiguousarray(vecs, dtype=np.float32)
    q = vecs if queries is None else np.ascontiguousarray(queries, dtype=np.float32)
    n, d = vecs.shape
    exact_limit = EXACT_LIMIT if exact_limit is None else exact_limit
    if n <= exact_limit:
        sims, nbrs = knn_graph(vecs, k, queries=q)
        a = np.repeat(np.arange(len(q)), sims.shape[1])
        ok = (nbrs.reshape(-1) >= 0) & (sims.reshape(-1) >= floor)
        return a[ok], nbrs.reshape(-1)[ok], sims.reshape(-1)[ok]
    rng = np.random.default_rng(0)
    # more lists: less to scan per query, more to route it; sqrt(lists * queries) balances the two (a few new
    # faces of an incremental run need few lists, so they do not pay for sorting a million faces finely)
    nlist = min(n, max(JOIN_PROBE, min(int(np.sqrt(JOIN_LISTS * len(q))), n // 8)))
    nprobe = min(nprobe or JOIN_PROBE, nlist)
    sample = vecs[rng.choice(n, min(n, 10 * nlist), replace=False)]
    pca = faiss.PCAMatrix(d, min(d, JOIN_DIMS, len(sample)))
    pca.train(sample)
    km = faiss.Kmeans(pca.d_out, nlist, niter=6, seed=1, min_points_per_centroid=1, max_points_per_centroid=10**6)
    km.train(pca.apply(sample))
    # each face's list, and each query's nprobe lists (the queries are the faces on a full run)
    _, probes = km.index.search(pca.apply(q), nprobe)
    home = probes[:, 0] if queries is None else km.index.search(pca.apply(vecs), 1)[1][:, 0]
    order = np.argsort(home, kind="stable")
    start = np.searchsorted(home[order], np.arange(nlist + 1))
    by_list = vecs[order]  # the faces list by list: each list one contiguous block
    lists = probes.reshape(-1)
    o = np.argsort(lists, kind="stable")
    asking = (o // nprobe).astype(np.int64)  # the queries of each list, list by list
    qstart = np.searchsorted(lists[o], np.arange(nlist + 1))
    del probes, lists, o
    qa: list[np.ndarray] = []
    fb: list[np.ndarray] = []
    ss: list[np.ndarray] = []
    held = 0
    for li in range(nlist):
        who = asking[qstart[li]:qstart[li + 1]]
        if not len(who) or start[li] == start[li + 1]:
            continue
        sim = q[who] @ by_list[start[li]:start[li + 1]].T
        hit = np.flatnonzero(sim >= floor)
        r, c = np.divmod(hit, sim.shape[1])
        qa.append(who[r])
        fb.append(c + start[li])
        ss.append(sim.reshape(-1)[hit])
        held += len(hit)
        if held > JOIN_HOLD:  # keep memory bounded: only each query's best k so far can still be kept
            kept = _best(np.concatenate(qa), np.concatenate(fb), np.concatenate(ss), k)
            qa, fb, ss = [kept[0]], [kept[1]], [kept[2]]
            held = len(kept[0])
    if not qa:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    a, b, s = _best(np.concatenate(qa), np.concatenate(fb), np.concatenate(ss), k)
    return a, order[b], s


def _best(a: np.ndarray, b: np.ndarray, s: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each query's (a) k best pairs, best first, queries ascending."""
    # one sort on query + (1 - similarity) (< 4): exact for a < 2^20 queries to ~1e-9, under float32's resolution
    o = np.argsort(a * 4.0 + (1.0 - s.astype(np.float64)), kind="stable")
    a, b, s = a[o], b[o], s[o]
    rank = np.arange(len(a)) - np.searchsorted(a, a)
    keep = rank < k
    return a[keep], b[keep], s[keep]


def components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Connected-component labels (0..m-1) of n nodes joined by edges a-b (vectorised label propagation)."""
    label = np.arange(n)
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    while len(a):
        m = np.minimum(label[a], label[b])
        before = label.copy()
        np.minimum.at(label, a, m)
        np.minimum.at(label, b, m)
        while True:  # pointer jumping: every node points at its root
            nxt = label[label]
            if np.array_equal(nxt, label):
                break
            label = nxt
        if np.array_equal(label, before):
            break
    return np.unique(label, return_inverse=True)[1].astype(np.int64)


def _keys(a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    return lo.astype(np.int64) * n + hi


@dataclass(frozen=True)
class Threshold:
    """The mean similarity two groups need to merge, by the number of face pairs m between them.

    One pair (m = 1) needs `pair`; the bar falls towards `group` as m grows, the way the false-match threshold of
    a mean of m impostor similarities falls: tau(m) = centre + (pair - centre) * sqrt(rho + (1 - rho) / m), with
    `centre` the typical impostor similarity and `rho` the share of impostor variance that belongs to the two
    people rather than to the photos (which no amount of averaging removes); `group` is tau at m -> infinity.
    """

    pair: float
    centre: float = 0.0
    rho: float = 1.0

    @property
    def group(self) -> float:
        return self.at(np.array([np.inf]))[0]

    def at(self, m: np.ndarray) -> np.ndarray:
        return self.centre + (self.pair - self.centre) * np.sqrt(self.rho + (1 - self.rho) / m)


def group_faces(vecs: np.ndarray, image_ids: np.ndarray, threshold: float | Threshold, k: int = 20, *,
            must: np.ndarray | None = None, cannot: np.ndarray | None = None,
            initial: np.ndarray | None = None, frozen: np.ndarray | None = None,
            edges: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
            exact_limit: int | None = None) -> Clustering:
    """Cluster L2-normalised `vecs` by reciprocal average linkage at mean similarity >= `threshold`.

    - `image_ids`: faces sharing one never share a label.
    - `must` / `cannot`: (m, 2) arrays of face rows that must / must not share a label.
    - `initial`: starting group per face (e.g. existing people; -1 = a group of its own); `frozen`: per face, True
      where its starting group may not merge with another frozen group (existing people stay apart).
    - `edges`: candidate face pairs (a, b, similarity) instead of the k-NN graph (incremental runs).
    """
    n = len(vecs)
    if n == 0:
        return Clustering(np.zeros(0, np.int64), np.zeros(0), 0)
    bar = threshold if isinstance(threshold, Threshold) else Threshold(float(threshold))
    floor = float(bar.group)
    vecs = np.ascontiguousarray(vecs, dtype=np.float32)
    image_ids = np.asarray(image_ids)

    # starting groups: the given ones, joined by must-links
    start = np.arange(n) if initial is None else np.where(np.asarray(initial) >= 0, np.asarray(initial), -1)
    if initial is not None:
        lone = start < 0
        start = start.copy()
        start[lone] = start.max(initial=-1) + 1 + np.arange(int(lone.sum()))
        start = np.unique(start, return_inverse=True)[1]
    mx = np.asarray(must, np.int64).reshape(-1, 2) if must is not None else np.zeros((0, 2), np.int64)
    label = components(int(start.max()) + 1, start[mx[:, 0]], start[mx[:, 1]])[start]
    g = int(label.max()) + 1
    if g == n:  # every face on its own (the usual start): the sums are the faces
        sums = vecs[np.argsort(label)]  # (a new array: fancy indexing copies)
    else:  # float32: 1M faces x 256 dims in 1 GB; faces alone in their group copied, the others added up
        sums = np.zeros((g, vecs.shape[1]), np.float32)
        alone = np.bincount(label, minlength=g)[label] == 1
        sums[label[alone]] = vecs[alone]
        np.add.at(sums, label[~alone], vecs[~alone])
    size = np.bincount(label, minlength=g).astype(np.float64)
    is_frozen = np.zeros(g, bool)
    if frozen is not None:
        is_frozen[label[np.asarray(frozen, bool)]] = True
    # a starting group of several faces is as cohesive as its mean internal similarity
    internal = np.where(size > 1, ((sums * sums).sum(1) - size) / np.maximum(size * (size - 1), 1), 1.0)
    cohesion = np.minimum(internal, 1.0)

    # cannot-links as face pairs: faces of one photo, and the given ones
    order = np.argsort(image_ids, kind="stable")
    sid = image_ids[order]
    same = np.nonzero(sid[1:] == sid[:-1])[0]
    photo_pairs = _photo_pairs(order, sid, same)
    cx = np.asarray(cannot, np.int64).reshape(-1, 2) if cannot is not None else np.zeros((0, 2), np.int64)
    cl = np.concatenate([photo_pairs, cx])

    # candidate pairs above the threshold
    if edges is None:
        a, b, s = knn_pairs(vecs, k + 1, floor, exact_limit=exact_limit)
    else:
        a, b, s = (np.asarray(x) for x in edges)
    ok = (b >= 0) & (s >= floor)
    pa, pb = label[a[ok]], label[b[ok].astype(np.int64)]
    keys = np.unique(_keys(pa, pb, g))
    keys = keys[keys // g != keys % g]
    pa, pb = keys // g, keys % g
    del keys, a, b, s, ok
    # each pair's link is computed once and again only when one of its groups merged: the others' sums are as
    # they were; likewise the cannot-links need checking only for pairs that are new (a merged group's)
    score = _links(sums, size, pa, pb)
    fresh = np.ones(len(pa), bool)

    rounds = 0
    while len(pa) and rounds < MAX_ROUNDS:
        rounds += 1
        # below the floor a pair can never merge (a merged group's link is a weighted mean of its parts' links)
        bad = score < floor
        bad |= is_frozen[pa] & is_frozen[pb]
        check = np.nonzero(fresh & ~bad)[0]
        if len(cl) and len(check):
            bad[check] |= np.isin(_keys(pa[check], pb[check], g), _keys(label[cl[:, 0]], label[cl[:, 1]], g))
        keep = ~bad
        pa, pb, score = pa[keep], pb[keep], score[keep]
        ready = score >= bar.at(size[pa] * size[pb])
        if not ready.any():
            break
        ra, rb, rs = pa[ready], pb[ready], score[ready]
        # each group's best neighbour (ties broken by the smaller group, so both ends agree): the best link per
        # group, then the smallest neighbour among those that reach it (two scatters, no sort)
        src = np.concatenate([ra, rb])
        dst = np.concatenate([rb, ra])
        sc = np.concatenate([rs, rs])
        top = np.full(g, -np.inf)
        np.maximum.at(top, src, sc)
        at_top = sc == top[src]
        best = np.full(g, g, np.int64)
        np.minimum.at(best, src[at_top], dst[at_top])
        mutual = best[rb] == ra
        mutual &= best[ra] == rb
        if not mutual.any():
            break  # cannot happen with a strict order, kept as a guard
        ma, mb, ms = ra[mutual], rb[mutual], rs[mutual]
        # merge mb into ma (each group is in at most one mutual pair)
        sums[ma] += sums[mb]
        size[ma] += size[mb]
        is_frozen[ma] |= is_frozen[mb]
        cohesion[ma] = np.minimum(np.minimum(cohesion[ma], cohesion[mb]), ms)
        size[mb] = 0
        remap = np.arange(g)
        remap[mb] = ma
        label = remap[label]
        moved = np.zeros(g, bool)
        moved[ma] = True
        moved[mb] = True
        touched = moved[pa] | moved[pb]
        nk = np.unique(_keys(remap[pa[touched]], remap[pb[touched]], g))
        nk = nk[nk // g != nk % g]
        na, nb = nk // g, nk % g
        stay = ~touched
        pa, pb = np.concatenate([pa[stay], na]), np.concatenate([pb[stay], nb])
        score = np.concatenate([score[stay], _links(sums, size, na, nb)])
        fresh = np.concatenate([np.zeros(int(stay.sum()), bool), np.ones(len(na), bool)])
    final, labels = np.unique(label, return_inverse=True)
    return Clustering(labels.astype(np.int64), cohesion[final], rounds)


def _links(sums: np.ndarray, size: np.ndarray, pa: np.ndarray, pb: np.ndarray,
           chunk: int = 65_536) -> np.ndarray:
    """Average linkage of group pairs: the dot product of their sums over the product of their sizes (in chunks:
    the gathered sums of a million pairs would take gigabytes)."""
    out = np.empty(len(pa), np.float64)
    for i in range(0, len(pa), chunk):
        a, b = pa[i:i + chunk], pb[i:i + chunk]
        out[i:i + chunk] = np.einsum("ij,ij->i", sums[a], sums[b]) / (size[a] * size[b])
    return out


def _photo_pairs(order: np.ndarray, sid: np.ndarray, same: np.ndarray) -> np.ndarray:
    """All pairs of faces that share a photo (rows into the original order)."""
    if not len(same):
        return np.zeros((0, 2), np.int64)
    # runs of equal image ids in the sorted order
    starts = np.nonzero(np.concatenate([[True], sid[1:] != sid[:-1]]))[0]
    ends = np.concatenate([starts[1:], [len(sid)]])
    out = []
    for s, e in zip(starts[ends - starts > 1], ends[ends - starts > 1]):  # photos with several faces only
        i, j = np.triu_indices(e - s, 1)
        out.append(np.stack([order[s + i], order[s + j]], 1))
    return np.concatenate(out).astype(np.int64)
