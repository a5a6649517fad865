"""What the benchmarks that measure one stored graph share (`visited_table.py`, `graph_order.py`, `code_width.py`,
`huge_pages.py`): their common options, the queries with their exact truth as `benchmarks/index_kinds.py --store
DIR` keeps them, and the query-by-query comparison of two ways to hold a graph."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from search import recall_at_k  # noqa: E402


def parser(doc: str, index_help: str, ef: str) -> argparse.ArgumentParser:
    """Options --index, --queries, --ef (comma-separated, default `ef`) and --n; the script adds its own."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--index", type=Path, required=True, help=index_help)
    ap.add_argument("--queries", type=Path, required=True, help="the .npz of queries and exact truth beside it")
    ap.add_argument("--ef", default=ef, type=lambda v: [int(e) for e in v.split(",")],
                    help="ef_search values, comma-separated")
    ap.add_argument("--n", type=int, default=1000, help="queries used")
    return ap


def read_queries(path: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(the first n queries, float32 and contiguous; their exact top 10 ids)."""
    z = np.load(path)
    return np.ascontiguousarray(z["queries"][:n], np.float32), z["truth"][:n]


def compare(graphs: dict, queries: np.ndarray, truth: np.ndarray, efs: list[int]) -> None:
    """Search each query on both `graphs` (name -> engine index, the baseline first), alternating which goes
    first so that both see the same load; single queries, one thread; after one pass over the queries on each
    (it faults mapped pages in; not counted). One line per ef: p50, p99, recall@10, second / first."""
    names = list(graphs)
    for ix in graphs.values():
        for i in range(len(queries)):
            ix.search(queries[i:i + 1], 10)
    for ef in efs:
        lat = {m: [] for m in names}
        found = {m: [] for m in names}
        for ix in graphs.values():
            ix.ef_search = ef
        for i in range(len(queries)):
            for m in names if i % 2 == 0 else names[::-1]:
                t = time.perf_counter()
                ids = graphs[m].search(queries[i:i + 1], 10)[1]
                lat[m].append(time.perf_counter() - t)
                found[m].append(ids[0])
        cells = [f"{m} p50 {np.median(lat[m]) * 1e3:5.2f} ms p99 {np.quantile(lat[m], 0.99) * 1e3:5.2f} ms "
                 f"(recall@10 {recall_at_k(np.stack(found[m]), truth):.4f})" for m in names]
        ratio = np.median(lat[names[1]]) / np.median(lat[names[0]])
        print(f"  ef {ef:>4}: " + "   ".join(cells) + f"   {names[1]} / {names[0]} {ratio:.2f}x", flush=True)
