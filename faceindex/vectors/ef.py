"""How many candidates a graph search keeps when `ef_search` is "auto": calibrated on the gallery itself when the
graph is built, then grown with the gallery.

Recall against exact search at a given ef depends on the data, not only on the graph's size: on the benchmark
galleries (docs/benchmarks.md) the 128-d dlib faces reach recall@10 0.99 at 1M faces with ef ~190 on an M 48 graph,
the 256-d OMZ faces, whose synthetic neighbourhoods are flatter, need twice that at 300k. No one curve fits both
packs, let alone an operator's own collection. So when the manager builds (or rebuilds) a graph it holds
CALIBRATION_FACES faces of the gallery, at random, out of it; once the graph is built it finds each one's exact
nearest neighbours in the graph and keeps the smallest ef of EF_LADDER whose searches find EF_RECALL of them
(`calibrate`), then adds them. Held out, they stand for probes, which the graph does not hold: a face the graph
holds reaches its own node, whose links are its nearest neighbours, and would call for too small an ef
(`benchmarks/calibration_faces.py`: 0.99 at ef 80 for faces in a 200k-face graph, 128 held out, 144 for real
probes). The ef stops at EF_MAX: past that, recall against exact search is bought with milliseconds for neighbours
that barely differ (on the 256-d benchmark gallery at 1M faces recall@10 0.99 needs ef ~1000, 11 ms, for 0.988
against 0.976 at 640 and 4.9 ms, while same-person recall is 0.999 at 640 already). As faces are added afterwards
the ef grows as the square root of the gallery (the rate measured on the benchmark gallery for a fixed graph
shape), within EF_MAX, until the next rebuild calibrates again. A graph saved without a calibration (older files,
graphs too small to calibrate) uses the fixed curve `auto_ef`.
"""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path

import numpy as np

from ..models.onnx_util import atomic_write

EF_RECALL = 0.99  # recall@10 against exact search that a calibrated ef reaches on the calibration faces
# steps of 16 to 256, then 32: an ef at most 1/11 above the one that reaches EF_RECALL (search time grows about
# as the ef; steps of 32 to 192 then 64 overshot by up to 1/5)
EF_LADDER = tuple(range(32, 256, 16)) + tuple(range(256, 641, 32))
EF_MAX = EF_LADDER[-1]  # a latency budget: <= 5 ms at 1M 256-d faces here (5M dlib faces, M 48 SQ8: 6.7 ms at 608)
CALIBRATION_FACES = 500  # 5,000 neighbours: recall measured within ~0.002 (one standard error) at 0.99
AUTO_EF = (128, 100_000, 64, 512)  # the fixed curve: 128 at 100k faces, times sqrt(growth), within 64..512


def auto_ef(n: int, calibrated: tuple[int, int] | None = None) -> int:
    """Candidates an HNSW search keeps for a gallery of n faces when `ef_search` is "auto".

    `calibrated` = (ef, faces when calibrated): that ef, grown as sqrt(n / faces) once the gallery is larger,
    capped at EF_MAX. Without one, the fixed curve measured on the benchmark gallery with M 32 graphs: ef 128 at
    100k faces, ~220 at 300k, ~400 at 1M (recall@10 0.990, 0.990-0.993, 0.990), capped at 512.
    """
    if calibrated is not None:
        ef, at = calibrated
        return int(min(EF_MAX, max(ef, round(ef * math.sqrt(max(1, n) / max(1, at))))))
    base, at, lo, hi = AUTO_EF
    return int(min(hi, max(lo, round(base * math.sqrt(max(1, n) / at)))))


def calibration_sample(ids: np.ndarray, share: float = 1.0) -> np.ndarray:
    """The ids (sorted, seeded) of `ids` whose faces calibrate a graph: CALIBRATION_FACES, or `share` of them
    when that is fewer (a build holds its calibration faces out of the graph until it is calibrated)."""
    ids = np.asarray(ids, np.int64)
    n = min(CALIBRATION_FACES, int(share * len(ids)))
    return np.sort(np.random.default_rng(1).choice(ids, size=n, replace=False))


def calibrate(graph, faces: np.ndarray, face_ids: np.ndarray, k: int = 10) -> tuple[int, float] | None:
    """(the smallest ef of EF_LADDER whose searches for `faces` find EF_RECALL of their exact k nearest neighbours
    in `graph`, the recall it reached); EF_MAX when no ef of the ladder gets there. Faces best not in the graph
    (see above); one it holds (as its id in `face_ids`) is left out of its own lists. None when the graph is too
    small to tell (fewer than 4 k faces).

    Call it before the graph serves searches: it sets the graph's `ef_search` while it runs.
    """
    faces = np.ascontiguousarray(faces, np.float32)
    face_ids = np.asarray(face_ids, np.int64)
    if graph.count < 4 * k or not len(faces):
        return None
    truth = nearest(graph, faces, face_ids, k)
    saved, recall = graph.ef_search, 0.0
    try:
        for ef in EF_LADDER:
            recall = recall_at(graph, ef, faces, face_ids, truth, k)
            if recall >= EF_RECALL:
                return ef, recall
        return EF_MAX, recall
    finally:
        graph.ef_search = saved


def nearest(graph, faces: np.ndarray, face_ids: np.ndarray, k: int = 10) -> list[set[int]]:
    """Each face's exact k nearest faces in `graph` (ids), the face itself left out where the graph holds it."""
    return [set(_without(row, own, k)) for row, own in zip(graph.exact_top(faces, k + 1), face_ids)]


def recall_at(graph, ef: int, faces: np.ndarray, face_ids: np.ndarray, truth: list[set[int]],
              k: int = 10) -> float:
    """recall@k of `graph`'s searches for `faces` with ef_search = ef (left set) against `truth` (`nearest`)."""
    graph.ef_search = ef
    got = graph.search(faces, k + 1)[1]
    return float(np.mean([len(want & set(_without(row, own, k))) / len(want) if want else 1.0
                          for row, own, want in zip(got, face_ids, truth)]))


def _without(row: np.ndarray, own: int, k: int) -> list[int]:
    """The first k ids of a result row other than the face's own id and the -1 padding."""
    return [i for i in row.tolist() if i != own and i >= 0][:k]


def ef_path(path: Path) -> Path:
    return path.with_name(path.name + ".ef.json")


def read_calibration(path: Path) -> tuple[int, int] | None:
    """(ef, faces) saved beside the graph at `path`; None when missing or unreadable (the fixed curve then)."""
    try:
        got = json.loads(ef_path(path).read_text())
        return int(got["ef"]), int(got["faces"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_calibration(path: Path, calibrated: tuple[int, int] | None, recall: float | None) -> None:
    """Save the calibration beside the graph at `path` (or remove a stale one when there is none)."""
    if calibrated is None:
        with contextlib.suppress(OSError):
            ef_path(path).unlink()
        return
    atomic_write(ef_path(path), json.dumps({"ef": calibrated[0], "faces": calibrated[1],
                                            "recall": recall, "target": EF_RECALL}).encode())
