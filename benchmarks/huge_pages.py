"""One stored graph opened memory-mapped (how the engine opens it) and read into huge pages (how the server then
serves it: `faiss.read_pinned`, `IndexManager.pin_graph`), query by query through the engine's search.

Times each open (a cold file cache is the disk's time, not the open's: the mapped open runs first and again
after), reports the anonymous memory in 2 MB pages the pinned graph got, warms both with one pass over the
queries, then searches each query on both, alternating which goes first; single queries, one thread. The two
return the same faces (the same graph, the same file): the recall columns must agree.

    python benchmarks/huge_pages.py --index DIR/dlib-1000000-hnswp48-efc200/index \
        --queries DIR/queries-dlib-1000000-1000-0.npz --ef 144,176,208

(the folders `benchmarks/index_kinds.py --store DIR` keeps).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import faiss

sys.path.insert(0, str(Path(__file__).resolve().parent))
import stored_graph  # noqa: E402

from faceindex.vectors.faiss import HnswIndex, load_index  # noqa: E402


def anon_huge_gib() -> float:
    """This process's anonymous memory in transparent huge pages."""
    with open("/proc/self/smaps_rollup") as f:
        return sum(int(line.split()[1]) for line in f if line.startswith("AnonHugePages")) / 2**20


def main() -> None:
    ap = stored_graph.parser(__doc__, "a stored graph", "144,176,208")
    args = ap.parse_args()
    faiss.omp_set_num_threads(1)
    opens = {}
    for name, pin in (("mapped", False), ("pinned", True), ("mapped", False)):
        t = time.perf_counter()
        graph = load_index(args.index, mmap=True, pin=pin)
        opens.setdefault(name, []).append(time.perf_counter() - t)
        if not isinstance(graph, HnswIndex) or graph.pinned != pin:
            raise SystemExit(f"{args.index} holds no graph")
        if pin:
            pinned, huge = graph, anon_huge_gib()
    graphs = {"mapped": graph, "huge pages": pinned}
    queries, truth = stored_graph.read_queries(args.queries, args.n)
    print(f"# {args.index}: {graph.count:,} faces, {os.path.getsize(args.index) / 2**30:.2f} GiB, "
          f"{len(queries)} queries, FAISS {faiss.__version__}, load {os.getloadavg()}\n"
          f"# open: mapped {' / '.join(f'{s:.2f}' for s in opens['mapped'])} s, into huge pages "
          f"{opens['pinned'][0]:.2f} s ({huge:.2f} GiB of them)", flush=True)
    stored_graph.compare(graphs, queries, truth, args.ef)
    print(f"load {os.getloadavg()}")


if __name__ == "__main__":
    main()
