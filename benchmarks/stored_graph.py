"""What the benchmarks that measure one stored graph share (`visited_table.py`, `graph_order.py`, `code_width.py`):
their common options and the queries with their exact truth, as `benchmarks/index_kinds.py --store DIR` keeps them."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


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
