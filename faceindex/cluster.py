"""Group faces into people: constrained agglomeration over the k-nearest-neighbour graph.

Edges are the k nearest neighbours of each face above a similarity threshold. They are merged strongest first
(Kruskal order) with union-find, and a merge is refused when the two groups share a photo: two faces of one
photo are never one person. A merge must also be supported by enough of the links between the two groups
relative to their sizes, which stops a single bridge from chaining two people together.
"""

from __future__ import annotations

import faiss
import numpy as np


def knn_graph(vecs: np.ndarray, k: int, index=None) -> tuple[np.ndarray, np.ndarray]:
    """(sims, neighbour positions) of each vector's k nearest others (exact, or through a given index)."""
    n = len(vecs)
    k = min(k + 1, n)
    if index is None:
        index = faiss.IndexFlatIP(vecs.shape[1])
        index.add(vecs)
    sims, nbrs = index.search(vecs, k)
    return sims, nbrs


def cluster(vecs: np.ndarray, image_ids: np.ndarray, threshold: float, k: int = 20,
            min_links: float = 0.0) -> np.ndarray:
    """Labels (0..m-1) for L2-normalised `vecs`; faces sharing an image id never share a label."""
    n = len(vecs)
    if n == 0:
        return np.zeros(0, np.int64)
    vecs = np.ascontiguousarray(vecs, dtype=np.float32)
    sims, nbrs = knn_graph(vecs, k)
    rows = np.repeat(np.arange(n), nbrs.shape[1])
    cols = nbrs.reshape(-1)
    s = sims.reshape(-1)
    keep = (cols >= 0) & (cols != rows) & (s >= threshold)
    rows, cols, s = rows[keep], cols[keep], s[keep]
    a, b = np.minimum(rows, cols), np.maximum(rows, cols)
    # undirected, deduplicated, strongest first
    key = a.astype(np.int64) * n + b
    key, first = np.unique(key, return_index=True)
    a, b, s = a[first], b[first], s[first]
    order = np.argsort(-s, kind="stable")

    parent = np.arange(n)
    size = np.ones(n, np.int64)
    photos: dict[int, set[int]] = {i: {int(image_ids[i])} for i in range(n)}
    links: dict[tuple[int, int], int] = {}

    def find(x: int) -> int:
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    for e in order:
        ra, rb = find(int(a[e])), find(int(b[e]))
        if ra == rb:
            continue
        pair = (ra, rb) if ra < rb else (rb, ra)
        links[pair] = links.get(pair, 0) + 1
        if photos[ra] & photos[rb]:
            continue  # cannot-link: the groups share a photo
        if min_links and links[pair] < min_links * min(size[ra], size[rb]):
            continue
        if size[ra] < size[rb]:
            ra, rb = rb, ra
        parent[rb] = ra
        size[ra] += size[rb]
        photos[ra] |= photos.pop(rb)
    roots = np.array([find(i) for i in range(n)])
    _, labels = np.unique(roots, return_inverse=True)
    return labels.astype(np.int64)


def carry_over(old: dict[int, set[int]], new_groups: list[list[int]], keep: set[int]) -> list[int | None]:
    """Map each new group to an old person id (largest overlap, each old id used once), so names survive.

    Only old ids in `keep` (e.g. named people) are carried; others become new people.
    """
    candidates = []
    for g_index, group in enumerate(new_groups):
        members = set(group)
        for pid, faces in old.items():
            if pid in keep:
                overlap = len(members & faces)
                if overlap:
                    candidates.append((overlap, g_index, pid))
    result: list[int | None] = [None] * len(new_groups)
    used: set[int] = set()
    for _overlap, g_index, pid in sorted(candidates, reverse=True):
        if result[g_index] is None and pid not in used:
            result[g_index] = pid
            used.add(pid)
    return result
