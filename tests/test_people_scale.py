"""People clustering at scale: the list join finds the pairs an exact search finds, and the faster rounds give
the very labels of the straightforward loop they replaced (which recomputed every link in every round)."""

from __future__ import annotations

import numpy as np
import pytest

from faceindex import cluster
from faceindex.cluster import Threshold, _keys, group_faces, knn_pairs

D = 64


def _gallery(rng: np.random.Generator, people: int, per: int, spread: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around `people` random centres (sizes 1..2*per), and who each is."""
    sizes = rng.integers(1, 2 * per, people)
    centres = rng.normal(size=(people, D))
    who = np.repeat(np.arange(people), sizes)
    x = centres[who] + spread * rng.normal(size=(len(who), D))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), who


def _exact(vecs: np.ndarray, queries: np.ndarray, k: int, floor: float) -> set[tuple[int, int]]:
    sim = queries @ vecs.T
    out = set()
    for q in range(len(queries)):
        top = np.argsort(-sim[q], kind="stable")[:k]
        out |= {(q, int(b)) for b in top if sim[q, b] >= floor}
    return out


@pytest.mark.parametrize("subset", [False, True])
def test_list_join_finds_the_pairs_above_the_floor(subset, monkeypatch):
    rng = np.random.default_rng(7)
    vecs, _ = _gallery(rng, 600, 5)
    queries = vecs[rng.choice(len(vecs), 300, replace=False)] if subset else None
    k, floor = 8, 0.6
    a, b, s = knn_pairs(vecs, k, floor, queries=queries, exact_limit=100)  # forces the join (n ~ 3000)
    q = vecs if queries is None else queries
    assert np.allclose(s, (q[a] * vecs[b]).sum(1), atol=1e-5)  # exact similarities of the full vectors
    assert (s >= floor).all() and np.bincount(a).max() <= k
    assert len({(x, y) for x, y in zip(a.tolist(), b.tolist())}) == len(a)  # no pair twice
    for x in np.unique(a):  # each query's pairs best first
        assert (np.diff(s[a == x]) <= 0).all()
    truth = _exact(vecs, q, k, floor)
    found = set(zip(a.tolist(), b.tolist()))
    assert len(found & truth) >= 0.95 * len(truth), len(found & truth) / len(truth)
    monkeypatch.setattr(cluster, "JOIN_HOLD", 500)  # pairs cut to each query's best k along the way: the same
    cut = knn_pairs(vecs, k, floor, queries=queries, exact_limit=100)
    assert all(np.array_equal(x, y) for x, y in zip(cut, (a, b, s)))
    if queries is None:  # exact below the limit: the same pairs as the flat search
        a2, b2, _ = knn_pairs(vecs, k, floor)
        assert set(zip(a2.tolist(), b2.tolist())) == truth


def _reference(vecs, image_ids, bar, edges, initial=None, frozen=None, cannot=None):
    """The rounds as they were before (every link recomputed every round), for the labels to compare with."""
    n = len(vecs)
    start = np.arange(n) if initial is None else initial.copy()
    if initial is not None:
        lone = start < 0
        start[lone] = start.max(initial=-1) + 1 + np.arange(int(lone.sum()))
        start = np.unique(start, return_inverse=True)[1]
    label = start
    g = int(label.max()) + 1
    sums = np.zeros((g, vecs.shape[1]), np.float32)
    np.add.at(sums, label, vecs)
    size = np.bincount(label, minlength=g).astype(np.float64)
    is_frozen = np.zeros(g, bool)
    if frozen is not None:
        is_frozen[label[frozen]] = True
    order = np.argsort(image_ids, kind="stable")
    pairs = [(order[i], order[j]) for i in range(n) for j in range(i + 1, n)
             if image_ids[order[i]] == image_ids[order[j]]]
    cl = np.array(pairs + ([] if cannot is None else cannot.tolist()), np.int64).reshape(-1, 2)
    a, b, s = edges
    ok = s >= bar.group
    keys = np.unique(_keys(label[a[ok]], label[b[ok]], g))
    keys = keys[keys // g != keys % g]
    while len(keys):
        pa, pb = keys // g, keys % g
        score = np.einsum("ij,ij->i", sums[pa], sums[pb]) / (size[pa] * size[pb])
        bad = (score < bar.group) | (is_frozen[pa] & is_frozen[pb])
        if len(cl):
            bad |= np.isin(keys, _keys(label[cl[:, 0]], label[cl[:, 1]], g))
        keys, pa, pb, score = keys[~bad], pa[~bad], pb[~bad], score[~bad]
        ready = score >= bar.at(size[pa] * size[pb])
        if not ready.any():
            break
        keys_all = keys
        pa, pb, score = pa[ready], pb[ready], score[ready]
        src, dst, sc = np.concatenate([pa, pb]), np.concatenate([pb, pa]), np.concatenate([score, score])
        o = np.lexsort((dst, -sc, src))
        first = np.ones(len(o), bool)
        first[1:] = src[o][1:] != src[o][:-1]
        best = np.full(g, -1, np.int64)
        best[src[o][first]] = dst[o][first]
        mutual = (best[pb] == pa) & (best[pa] == pb)
        ma, mb = pa[mutual], pb[mutual]
        sums[ma] += sums[mb]
        size[ma] += size[mb]
        is_frozen[ma] |= is_frozen[mb]
        size[mb] = 0
        remap = np.arange(g)
        remap[mb] = ma
        label = remap[label]
        keys = np.unique(_keys(remap[keys_all // g], remap[keys_all % g], g))
        keys = keys[keys // g != keys % g]
    return np.unique(label, return_inverse=True)[1]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_rounds_give_the_labels_of_the_full_recomputation(seed):
    rng = np.random.default_rng(seed)
    vecs, who = _gallery(rng, 150, 6, spread=0.45)
    n = len(vecs)
    image_ids = np.arange(n)
    image_ids[rng.choice(n, n // 10, replace=False)] = rng.integers(0, n, n // 10)  # some photos of several faces
    bar = Threshold(0.7, 0.0, 0.8)
    edges = knn_pairs(vecs, 11, bar.group)
    cannot = rng.choice(n, (5, 2))
    cannot = cannot[cannot[:, 0] != cannot[:, 1]]
    # a first run, then an incremental one over it: a fifth of the faces new, the rest frozen in their people
    first = group_faces(vecs, image_ids, bar, k=10, cannot=cannot)
    assert np.array_equal(first.labels, _reference(vecs, image_ids, bar, edges, cannot=cannot))
    assert len(np.unique(first.labels)) < n // 2  # (a gallery where many merges happen)
    new = rng.random(n) < 0.2
    initial = np.where(new, -1, first.labels)
    q = np.nonzero(new)[0]
    a, b, s = knn_pairs(vecs, 11, bar.group, queries=vecs[new])
    inc = group_faces(vecs, image_ids, bar, initial=initial, frozen=~new, cannot=cannot, edges=(q[a], b, s))
    ref = _reference(vecs, image_ids, bar, (q[a], b, s), initial=initial, frozen=~new, cannot=cannot)
    assert np.array_equal(inc.labels, ref)
