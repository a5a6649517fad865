"""FAISS's two ways of tracking the faces a graph search has visited, on one stored graph, query by query.

FAISS switches from a byte per face to a hash set once a graph holds `visited_table_hashset_threshold` faces
(10M in FAISS 1.15); faceindex keeps the byte array (`faceindex/vectors/hnsw.py: visit_with_bytes`). This
measures both on the same graph and queries, alternating which goes first for each query so that both see the
same cache state; single queries, one thread.

    python benchmarks/visited_table.py --index DIR/dlib-10000000-hnswsq32-efc100/index \
        --queries DIR/queries-dlib-10000000-1000-0.npz --ef 256,512

(the folders `benchmarks/index_kinds.py --store DIR` keeps).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import stored_graph  # noqa: E402
from search import recall_at_k  # noqa: E402

from faceindex.vectors.faiss import load_index  # noqa: E402
from faceindex.vectors.hnsw import VISITED_BYTES_UP_TO  # noqa: E402


def main() -> None:
    ap = stored_graph.parser(__doc__, "a stored graph (opened memory-mapped)", "256,512")
    args = ap.parse_args()
    if not hasattr(faiss.cvar, "visited_table_hashset_threshold"):
        raise SystemExit("this FAISS has no hash-set visited table (before 1.11): nothing to compare")
    faiss.omp_set_num_threads(1)
    ix = load_index(args.index, mmap=True)
    queries, truth = stored_graph.read_queries(args.queries, args.n)
    print(f"# {args.index}: {ix.count:,} faces, {len(queries)} queries, FAISS {faiss.__version__}, "
          f"load {os.getloadavg()}", flush=True)
    modes = {"byte array": VISITED_BYTES_UP_TO, "hash set": 0}
    t = time.perf_counter()
    for i in range(len(queries)):  # the first pass faults the mapped pages in; not counted
        ix.search(queries[i:i + 1], 10)
    print(f"  warm-up pass {time.perf_counter() - t:.1f} s", flush=True)
    for ef in args.ef:
        ix.ef_search = ef
        lat = {m: [] for m in modes}
        found = {m: [] for m in modes}
        for i in range(len(queries)):
            order = list(modes) if i % 2 == 0 else list(modes)[::-1]
            for m in order:
                faiss.cvar.visited_table_hashset_threshold = modes[m]
                t = time.perf_counter()
                ids = ix.search(queries[i:i + 1], 10)[1]
                lat[m].append(time.perf_counter() - t)
                found[m].append(ids[0])
        cells = [f"{m} p50 {np.median(lat[m]) * 1e3:6.2f} ms (recall@10 {recall_at_k(np.stack(found[m]), truth):.4f})"
                 for m in modes]
        ratio = np.median(lat["hash set"]) / np.median(lat["byte array"])
        print(f"  ef {ef:>4}: " + "   ".join(cells) + f"   hash set / byte array {ratio:.2f}x", flush=True)
    faiss.cvar.visited_table_hashset_threshold = VISITED_BYTES_UP_TO


if __name__ == "__main__":
    main()
