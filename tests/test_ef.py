"""`ef_search` "auto": calibrated on the graph's own faces (faceindex/vectors/ef.py)."""

from __future__ import annotations

import numpy as np
import pytest

from faceindex.vectors.ef import EF_LADDER, EF_MAX, EF_RECALL, auto_ef, calibrate, ef_path
from faceindex.vectors.faiss import FaissIndex, HnswIndex, load_index

DIM = 24


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.normal(size=(n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def graph(n: int, m: int = 8, efc: int = 16, seed: int = 0) -> tuple[HnswIndex, np.ndarray]:
    """A deliberately sparse graph (small M and efConstruction) over n random faces, ids 1000.., so that a
    small ef misses neighbours and the calibration has something to find."""
    vecs = unit(np.random.default_rng(seed), n)
    g = HnswIndex.empty(DIM, m=m, ef_construction=efc)
    g.add(np.arange(1000, 1000 + n), vecs)
    return g, vecs


def recall(g: HnswIndex, gallery: np.ndarray, faces: np.ndarray, ids: np.ndarray, ef: int, k: int = 10) -> float:
    """recall@k against exact search of the faces' neighbours other than themselves, at ef."""
    exact = FaissIndex.exact(DIM)
    exact.add(np.arange(1000, 1000 + len(gallery)), gallery)
    want = exact.search(faces, k + 1)[1]
    g.ef_search = ef
    got = g.search(faces, k + 1)[1]
    g.ef_search = "auto"

    def others(row: list[int], own: int) -> set[int]:
        return set([i for i in row if i != own][:k])

    return float(np.mean([len(others(w, own) & others(r, own)) / k
                          for w, r, own in zip(want.tolist(), got.tolist(), ids.tolist())]))


def test_calibration_picks_the_smallest_ef_of_the_ladder_that_reaches_the_target():
    g, vecs = graph(4000)
    pick = np.random.default_rng(1).choice(4000, 200, replace=False)
    ef, got = calibrate(g, vecs[pick], pick + 1000)
    assert got >= EF_RECALL and ef in EF_LADDER and ef > EF_LADDER[0]  # the sparse graph needs more than 32
    assert recall(g, vecs, vecs[pick], pick + 1000, ef) == pytest.approx(got)
    below = EF_LADDER[EF_LADDER.index(ef) - 1]
    assert recall(g, vecs, vecs[pick], pick + 1000, below) < EF_RECALL
    # the calibration left the graph's own setting alone
    assert g.ef_search == "auto"


def test_a_graph_that_never_gets_there_is_searched_at_the_budget():
    g, vecs = graph(4000, m=4)  # too sparse for recall 0.99 within EF_MAX here
    pick = np.random.default_rng(1).choice(4000, 200, replace=False)
    ef, got = calibrate(g, vecs[pick], pick + 1000)
    assert ef == EF_MAX and got < EF_RECALL
    assert got == pytest.approx(recall(g, vecs, vecs[pick], pick + 1000, EF_MAX))


def test_exact_top_leaves_deleted_faces_out_and_pads():
    g, vecs = graph(300)
    g.remove(np.array([1000, 1001]))
    top = g.exact_top(vecs[:2], 5)
    assert top.shape == (2, 5) and not set(top.ravel().tolist()) & {1000, 1001}
    scores = vecs[:2] @ vecs[2:].T
    assert top[:, 0].tolist() == (np.argmax(scores, 1) + 1002).tolist()
    small, _ = graph(3)
    assert small.exact_top(unit(np.random.default_rng(2), 1), 5).tolist()[0][3:] == [-1, -1]


def test_a_graph_too_small_to_tell_keeps_the_fixed_curve():
    g, vecs = graph(30)
    assert g.calibrate(vecs[:5], np.arange(1000, 1005)) is None and g.calibrated is None
    assert g._params(10, None).efSearch == auto_ef(30)


def test_the_calibrated_ef_grows_with_the_gallery_and_is_capped():
    assert auto_ef(1_000_000, (192, 1_000_000)) == 192
    assert auto_ef(500_000, (192, 1_000_000)) == 192  # never below what was calibrated
    assert auto_ef(4_000_000, (192, 1_000_000)) == 384  # sqrt(4) x
    assert auto_ef(10**9, (192, 1_000_000)) == EF_MAX
    g, vecs = graph(2000)
    assert g.calibrate(vecs[:100], np.arange(1000, 1100)) is not None
    ef, faces = g.calibrated
    assert faces == 2000 and g._params(10, None).efSearch == ef
    g.add(np.arange(5000, 5000 + 6000), unit(np.random.default_rng(9), 6000))  # 4x the faces
    assert g._params(10, None).efSearch == min(EF_MAX, 2 * ef)
    g.ef_search = 77  # a fixed ef_search is never overridden
    assert g._params(10, None).efSearch == 77


def test_the_calibration_is_saved_beside_the_graph_and_dropped_with_it(tmp_path):
    g, vecs = graph(2000)
    ef = g.calibrate(vecs[:100], np.arange(1000, 1100))
    g.save(tmp_path / "g")
    assert ef_path(tmp_path / "g").is_file()
    for mmap in (False, True):
        again = load_index(tmp_path / "g", mmap=mmap)
        assert again.calibrated == (ef, 2000) and again._params(10, None).efSearch == ef
    # a graph saved without a calibration (one too small, say) leaves no stale one behind for the new file
    fresh, _ = graph(30)
    fresh.save(tmp_path / "g")
    assert not ef_path(tmp_path / "g").exists() and load_index(tmp_path / "g").calibrated is None
    # an unreadable sidecar: the fixed curve, not an error
    g.save(tmp_path / "h")
    ef_path(tmp_path / "h").write_text("{not json")
    assert load_index(tmp_path / "h").calibrated is None
