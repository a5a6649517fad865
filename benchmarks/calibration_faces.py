"""Which faces calibrate a graph's `ef_search` (`faceindex/vectors/ef.py`): recall@10 against ef for faces the graph
holds (themselves left out of the truth), for the same faces held out of a graph built without them (what the
index manager does), for new faces of new people from the gallery's generator (`index_kinds.py: stand_ins`), and
for the real held-out probes of the benchmark gallery.

Two graphs as the engine builds them (M 48 / efConstruction 200, over the span, renumbered) on `--size` faces
drawn from the stored gallery of `benchmarks/index_kinds.py --store DIR`: one with every face, one without the 500
calibration faces. Batch searches, all threads (recall only; no timings).

    python benchmarks/calibration_faces.py --store DIR --size 200000
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from index_kinds import stand_ins  # noqa: E402

from faceindex.vectors.ef import CALIBRATION_FACES, EF_LADDER, nearest, recall_at  # noqa: E402
from faceindex.vectors.faiss import HnswIndex  # noqa: E402


def build(gal: np.ndarray, ids: np.ndarray) -> HnswIndex:
    graph = HnswIndex.empty(gal.shape[1], project=True)
    graph.train(gal[ids[:: max(1, len(ids) // 200_000)]])
    t = time.perf_counter()
    graph.add(ids, gal[ids])
    graph.reorder()
    print(f"  built a graph of {len(ids):,} faces in {time.perf_counter() - t:.0f} s", flush=True)
    return graph


def curve(graph: HnswIndex, faces: np.ndarray, own: np.ndarray | None, efs: list[int]) -> list[float]:
    """recall@10 against exact search at each ef, as the calibration measures it; `own`: the faces' ids in the
    graph (left out of both lists), None for faces it does not hold."""
    own = -1 - np.arange(len(faces)) if own is None else own  # ids no face of the graph has
    truth = nearest(graph, faces, own)
    return [recall_at(graph, ef, faces, own, truth) for ef in efs]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--store", type=Path, required=True, help="the folder of benchmarks/index_kinds.py --store")
    ap.add_argument("--pack", default="dlib")
    ap.add_argument("--gallery", type=int, default=1_000_000, help="the stored gallery's size to draw from")
    ap.add_argument("--size", type=int, default=200_000, help="faces in the graphs")
    args = ap.parse_args()
    gal = np.load(args.store / f"gallery-{args.pack}-{args.gallery}-1000-0.npy", mmap_mode="r")
    queries = np.load(args.store / f"queries-{args.pack}-{args.gallery}-1000-0.npz")["queries"]
    rng = np.random.default_rng(5)
    rows = np.sort(rng.choice(len(gal), args.size, replace=False))
    sub = np.ascontiguousarray(gal[rows])  # the graphs' ids are rows of `sub`
    held = np.sort(rng.choice(args.size, CALIBRATION_FACES, replace=False))
    efs = [ef for ef in EF_LADDER if ef <= 288]
    print(f"# {args.pack}: {args.size:,} faces of the stored {args.gallery:,}-face gallery, {len(held)} calibration "
          f"faces, {len(queries)} real probes", flush=True)
    whole = build(sub, np.arange(args.size))
    rows_in = curve(whole, sub[held], held, efs)
    real_whole = curve(whole, queries, None, efs)
    del whole
    without = build(sub, np.setdiff1d(np.arange(args.size), held))
    rows_out = curve(without, sub[held], None, efs)
    rows_new = curve(without, stand_ins(args.pack, len(queries), 0), None, efs)
    real_without = curve(without, queries, None, efs)
    print(f"{'ef':>5}{'in the graph':>14}{'held out':>10}{'new people':>12}{'real probes':>13}")
    for i, ef in enumerate(efs):
        print(f"{ef:>5}{rows_in[i]:>14.4f}{rows_out[i]:>10.4f}{rows_new[i]:>12.4f}"
              f"{real_whole[i]:>8.4f} / {real_without[i]:.4f}")
    for name, c in (("in the graph", rows_in), ("held out", rows_out), ("new people", rows_new),
                    ("real probes", real_whole)):
        first = next((ef for ef, r in zip(efs, c) if r >= 0.99), None)
        print(f"  recall@10 0.99 first reached by {name}: ef {first}")


if __name__ == "__main__":
    main()
