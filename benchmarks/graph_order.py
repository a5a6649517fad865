"""One stored graph in its build order and renumbered in breadth-first order of its links (`HnswIndex.reorder`,
what the index manager does to every graph it builds), query by query.

Writes the renumbered copy to `--out` (timing the renumbering), opens both memory-mapped as the engine does,
warms both with one pass over the queries, then searches each query on both, alternating which goes first, so
that both see the same load; single queries, one thread. The two return the same faces (the same graph): the
recall columns must agree.

    python benchmarks/graph_order.py --index DIR/dlib-1000000-hnswp48-efc200/index \
        --queries DIR/queries-dlib-1000000-1000-0.npz --out /tmp/ordered --ef 160,192,256

(the folders `benchmarks/index_kinds.py --store DIR` keeps).
"""

from __future__ import annotations

import os
import resource
import sys
import time
from pathlib import Path

import faiss

sys.path.insert(0, str(Path(__file__).resolve().parent))
import stored_graph  # noqa: E402

from faceindex.vectors.faiss import HnswIndex, load_index  # noqa: E402


def main() -> None:
    ap = stored_graph.parser(__doc__, "a stored graph in build order", "160,192,256")
    ap.add_argument("--out", type=Path, required=True, help="folder for the renumbered copy (kept: reused)")
    args = ap.parse_args()
    faiss.omp_set_num_threads(1)
    ordered = args.out / "index"
    if not ordered.is_file():
        args.out.mkdir(parents=True, exist_ok=True)
        graph = load_index(args.index, mmap=True)
        if not isinstance(graph, HnswIndex):
            raise SystemExit(f"{args.index} holds no graph")
        t = time.perf_counter()
        graph.reorder()
        took = time.perf_counter() - t
        graph.save(ordered)
        print(f"# renumbered {graph.count:,} faces in {took:.1f} s (one thread), peak RSS "
              f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB", flush=True)
        del graph
    graphs = {"build order": load_index(args.index, mmap=True), "BFS order": load_index(ordered, mmap=True)}
    queries, truth = stored_graph.read_queries(args.queries, args.n)
    print(f"# {args.index}: {graphs['build order'].count:,} faces, {len(queries)} queries, FAISS "
          f"{faiss.__version__}, load {os.getloadavg()}", flush=True)
    stored_graph.compare(graphs, queries, truth, args.ef)
    print(f"load {os.getloadavg()}")


if __name__ == "__main__":
    main()
