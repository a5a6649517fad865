"""SQ8 / fp16 codes of a graph over a span whose width is not a multiple of 16, against the same codes padded with
zeros to one (`faceindex/vectors/hnsw.py: SPAN_ALIGN`), on the same links, query by query.

Takes a stored projected float graph (`benchmarks/index_kinds.py --store DIR`, kind `hnswp..`), copies its links
into graphs whose stores hold the same coordinates as float32, fp16 and SQ8 codes, each at the stored width and
padded (zeros: the same scores), then searches each query on every one in turn (a different order for each
query), single queries, one thread, on the raw FAISS graphs (no re-rank: the recall columns show what the codes
alone find).

    python benchmarks/code_width.py --index DIR/dlib-1000000-hnswp48-efc200/index \
        --queries DIR/queries-dlib-1000000-1000-0.npz --ef 160,256
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

from faceindex.vectors.hnsw import SPAN_ALIGN, visit_with_bytes  # noqa: E402


def relinked(graph: faiss.IndexHNSW, xs: np.ndarray, codes: str) -> faiss.IndexHNSW:
    """A graph with `graph`'s links over `xs` stored as `codes` (flat, fp16, sq8)."""
    d = xs.shape[1]
    if codes == "flat":
        out = faiss.IndexHNSWFlat(d, 4, faiss.METRIC_INNER_PRODUCT)
    else:
        qt = faiss.ScalarQuantizer.QT_fp16 if codes == "fp16" else faiss.ScalarQuantizer.QT_8bit
        out = faiss.IndexHNSWSQ(d, qt, 4, faiss.METRIC_INNER_PRODUCT)
    out.hnsw = graph.hnsw  # a copy of the links
    store = faiss.downcast_index(out.storage)
    store.train(xs[::5])
    store.add(xs)
    out.ntotal, out.is_trained = graph.ntotal, True
    return out


def main() -> None:
    ap = stored_graph.parser(__doc__, "a stored projected float graph", "160,256")
    args = ap.parse_args()
    faiss.omp_set_num_threads(1)
    visit_with_bytes()
    stored = faiss.read_index(str(args.index))
    pre = faiss.downcast_index(stored.index)
    if not isinstance(pre, faiss.IndexPreTransform):
        raise SystemExit(f"{args.index} holds no graph over a span")
    graph = faiss.downcast_index(pre.index)
    if not isinstance(graph, faiss.IndexHNSWFlat):
        raise SystemExit(f"{args.index}: a float graph is needed (its vectors are copied into the codes)")
    ids = faiss.vector_to_array(stored.id_map)
    n, d = int(graph.ntotal), int(graph.d)
    wide = -(-d // SPAN_ALIGN) * SPAN_ALIGN
    xs = faiss.rev_swig_ptr(faiss.downcast_index(graph.storage).get_xb(), n * d).reshape(n, d)
    queries, truth = stored_graph.read_queries(args.queries, args.n)
    queries = faiss.downcast_VectorTransform(pre.chain.at(0)).apply(queries)
    variants = {}
    for codes in ("flat", "fp16", "sq8"):
        for width in (d, wide):
            padded = np.ascontiguousarray(np.pad(xs, ((0, 0), (0, width - d))))
            variants[f"{codes} {width}-d"] = (relinked(graph, padded, codes), width)
            del padded
    print(f"# {args.index}: {n:,} faces over {d} directions (padded: {wide}), {len(queries)} queries, FAISS "
          f"{faiss.__version__} ({faiss.get_compile_options().strip()}), load {os.getloadavg()}", flush=True)
    names = list(variants)
    rng = np.random.default_rng(0)
    for ef in args.ef:
        params = faiss.SearchParametersHNSW(efSearch=ef)
        lat = {m: [] for m in names}
        found = {m: [] for m in names}
        for rep in range(2):  # the first pass warms the caches; not counted
            for i in range(len(queries)):
                for m in rng.permutation(names):
                    ix, width = variants[m]
                    q = np.ascontiguousarray(np.pad(queries[i:i + 1], ((0, 0), (0, width - d))))
                    t = time.perf_counter()
                    _, pos = ix.search(q, 10, params=params)
                    if rep:
                        lat[m].append(time.perf_counter() - t)
                        found[m].append(ids[pos[0]])
        print(f"  ef {ef}:", flush=True)
        for m in names:
            print(f"    {m:<12} p50 {np.median(lat[m]) * 1e3:5.2f} ms  p99 {np.quantile(lat[m], 0.99) * 1e3:5.2f} ms"
                  f"  recall@10 {recall_at_k(np.stack(found[m]), truth):.4f}", flush=True)
    print(f"load {os.getloadavg()}")


if __name__ == "__main__":
    main()
