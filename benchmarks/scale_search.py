"""Past one machine (issue 9): figures for the cluster backends, one subcommand per part.

`search`: single-query latency (p50/p99) and recall@10 of the Milvus vector store (HNSW and IVF_SQ8, through
`faceindex.vectors.milvus.MilvusIndex`, as the engine uses it) against the embedded FAISS default (HNSW of the
engine's shape, `hnsw.py: GRAPH_SHAPE`, ef_search 192; M 32 in the runs before 2026-12-02's fourth session) on
the same gallery in the same run; recall against exact search (FAISS flat). Also the time to load and index the
gallery and the Milvus server's memory and disk per vector (for docs/scale.md).

Gallery = real LFW embeddings of the default pack (yunet-omz95, 256-d, cached in /work/cache by the people/search
benchmarks) + synthetic distractors from benchmarks/search.py's two-level Gaussian fitted to them; queries =
held-out real faces (one per person with 2+ images). The Milvus server: FACEINDEX_TEST_MILVUS (milvus://host:port)
if set, else the embedded server of the PyPI package `milvus`, started in a temporary folder.

    nice -n 10 python benchmarks/scale.py search [--size 200000] [--queries 500]

`index-size`: bytes per vector of Milvus' index files for HNSW and IVF_SQ8 (what a query node loads), the memory
figure docs/scale.md plans with (a process's RSS is no good measure: the embedded server builds indexes in the same
process and keeps freed memory).

    nice -n 10 python benchmarks/scale.py index-size [--size 50000] [--dim 256]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import faiss
import numpy as np

HERE = Path(__file__).resolve().parent
EMB = Path("/work/cache/lfw-yunet-omz95-embeddings.npz")


def _search_bench():
    """benchmarks/search.py as a module (its FaceModel fits the distractor generator)."""
    spec = importlib.util.spec_from_file_location("bench_search", HERE / "search.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def ms(x: np.ndarray, q: float) -> float:
    return float(np.percentile(x, q) * 1000)


def recall10(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found.tolist(), truth.tolist())]))


def timed(fn, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(seconds per query, ids (n, 10)): one query at a time, after 10 untimed warm-up queries."""
    for q in queries[:10]:
        fn(q[None])
    secs, ids = [], []
    for q in queries:
        t = time.perf_counter()
        got = fn(q[None])
        secs.append(time.perf_counter() - t)
        ids.append(got[0][:10])
    return np.array(secs), np.stack(ids)


def milvus_pid(port: int) -> int | None:
    """The pid of the process listening on `port` (the Milvus server), for its memory figures."""
    out = subprocess.run(["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True).stdout
    for part in out.split("pid=")[1:]:
        return int(part.split(",")[0])
    return None


def rss_mib(pid: int | None) -> float:
    if pid is None:
        return float("nan")
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def du_mib(path: Path | None) -> float:
    if path is None:
        return float("nan")
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def index_bytes(base: Path) -> int:
    """Bytes of the index files in a server's folder: what a query node loads into memory for the vectors."""
    return sum(p.stat().st_size for p in base.rglob("*") if p.is_file() and "index_files" in p.parts)


def wait_indexed(index, n: int, timeout: float = 3600) -> None:
    """Until Milvus has built its index over every sealed row."""
    t = time.time()
    while time.time() - t < timeout:
        d = index.client.describe_index(index.name, "vec")
        if int(d.get("indexed_rows", 0)) >= n and int(d.get("pending_index_rows", 0)) == 0:
            return
        time.sleep(2)
    raise TimeoutError("index build did not finish")


def search_cmd(args) -> None:
    from faceindex.vectors.milvus import MilvusIndex

    rng = np.random.default_rng(args.seed)
    z = np.load(EMB)
    keep = z["detected"]
    real = z["embeddings"][keep].astype(np.float32)
    names = np.array([Path(p).parent.name for p in z["paths"][keep]])
    by_person: dict[str, list[int]] = {}
    for i, n in enumerate(names.tolist()):
        by_person.setdefault(n, []).append(i)
    multi = [ix for ix in by_person.values() if len(ix) >= 2]
    q_ix = np.array(sorted(ix[int(rng.integers(len(ix)))] for ix in multi))[: args.queries]
    rng.shuffle(q_ix)
    queries = real[q_ix]
    real_gallery = real[np.setdiff1d(np.arange(len(real)), q_ix)]
    model = _search_bench().FaceModel(real, names)
    t = time.perf_counter()
    syn, _ = model.sample(args.size - len(real_gallery), rng)
    gallery = np.concatenate([real_gallery, syn])
    ids = np.arange(1, len(gallery) + 1, dtype=np.int64)
    dim = gallery.shape[1]
    print(f"# gallery {len(gallery):,} x {dim} ({len(real_gallery):,} real LFW faces, {model.describe()}); "
          f"{len(queries)} held-out real queries; made in {time.perf_counter() - t:.0f} s", flush=True)
    print(f"# machine: {cpu_name()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start; "
          f"faiss {faiss.__version__}", flush=True)

    exact = faiss.IndexFlatIP(dim)
    exact.add(gallery)
    _, truth_pos = exact.search(queries, 10)
    truth = ids[truth_pos]
    rows = []

    # the embedded default at this size: the FAISS HNSW graph (as IndexManager builds it)
    from faceindex.vectors.faiss import HnswIndex

    t = time.perf_counter()
    hnsw = HnswIndex.empty(dim, ef_search=192)
    hnsw.add(ids, gallery)
    build = time.perf_counter() - t
    secs, found = timed(lambda q, ix=hnsw: ix.search(q, 10)[1], queries)
    rows.append(("FAISS HNSW (embedded default)", build, secs, recall10(found, truth), float("nan"), float("nan")))
    print(f"faiss-hnsw: built {build:.0f} s, p50 {ms(secs, 50):.2f} ms, recall {rows[-1][3]:.3f}", flush=True)
    del hnsw

    given = os.environ.get("FACEINDEX_TEST_MILVUS")
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    for kind in ("hnsw", "ivf_sq8"):
        # a fresh embedded server per index type, so that its memory and disk growth is this collection's alone
        server, base, url = None, args.server_dir, given
        if not given:
            from milvus import default_server as server

            base = Path(tempfile.mkdtemp(prefix="milvus-bench-", dir=args.tmp))
            server.set_base_dir(str(base))
            server.start()
            url = f"milvus://127.0.0.1:{server.listen_port}"
        try:
            pid = milvus_pid(int(url.rsplit(":", 1)[1]))
            time.sleep(10)
            rss0, disk0 = rss_mib(pid), du_mib(base)
            t = time.perf_counter()
            index = MilvusIndex(f"{url}/{prefix}?index={kind}", f"bench-{kind}@1/{dim}", dim, ef_search=192,
                                nprobe=args.nprobe)
            index.add(ids, gallery, sources=ids % 16)
            t_insert = time.perf_counter() - t
            index.flush()
            wait_indexed(index, len(ids))
            index.client.release_collection(index.name)
            index.client.load_collection(index.name)
            build = time.perf_counter() - t
            time.sleep(10)
            rss1, disk1 = rss_mib(pid), du_mib(base)
            secs, found = timed(lambda q, ix=index: ix.search(q, 10)[1], queries)
            per_vec = ((rss1 - rss0) * 2**20 / len(ids), (disk1 - disk0) * 2**20 / len(ids))
            rows.append((f"Milvus {kind.upper()}", build, secs, recall10(found, truth), *per_vec))
            if base is not None:
                print(f"milvus-{kind}: index files {index_bytes(base) / len(ids):,.0f} B/vector", flush=True)
            print(f"milvus-{kind}: inserted {t_insert:.0f} s ({len(ids) / t_insert:,.0f}/s), indexed+loaded "
                  f"{build:.0f} s, p50 {ms(secs, 50):.2f} ms, recall {rows[-1][3]:.3f}, server RSS +{rss1 - rss0:.0f} "
                  f"MiB, disk +{disk1 - disk0:.0f} MiB", flush=True)
            index.drop()
            index.close()
        finally:
            if server is not None:
                server.stop()
                shutil.rmtree(base, ignore_errors=True)

    base_p50 = ms(rows[0][2], 50)
    print(f"\n## search, {len(gallery):,} faces x {dim}-d, {len(queries)} single queries, k = 10 "
          f"(Milvus ef 192 / nprobe {args.nprobe})\n")
    print("| store | load + index (s) | p50 ms | p99 ms | p50 vs FAISS | recall@10 | server RSS B/vector | "
          "disk B/vector |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, build, secs, rec, rss, disk in rows:
        print(f"| {name} | {build:.0f} | {ms(secs, 50):.2f} | {ms(secs, 99):.2f} | {ms(secs, 50) / base_p50:.1f}x | "
              f"{rec:.3f} | {rss:,.0f} | {disk:,.0f} |")


def index_size_cmd(args) -> None:
    """Index-file bytes per vector of each Milvus index type (random unit vectors; the size does not depend on
    the values), on a fresh embedded server."""
    from milvus import default_server as server

    from faceindex.vectors.milvus import MilvusIndex

    base = Path(tempfile.mkdtemp(prefix="milvus-size-", dir=args.tmp))
    server.set_base_dir(str(base))
    server.start()
    try:
        rng = np.random.default_rng(0)
        v = rng.standard_normal((args.size, args.dim)).astype(np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        print(f"# {args.size:,} vectors x {args.dim}-d; index files per vector (a query node loads them; add 16 B "
              "of id and source per row)")
        for kind in ("hnsw", "ivf_sq8"):
            before = index_bytes(base)
            ix = MilvusIndex(f"milvus://127.0.0.1:{server.listen_port}/size?index={kind}", f"size-{kind}@1/{args.dim}",
                             args.dim)
            ix.add(np.arange(args.size), v)
            ix.flush()
            wait_indexed(ix, args.size)
            time.sleep(5)
            print(f"{kind}: {(index_bytes(base) - before) / args.size:,.0f} B/vector", flush=True)
            ix.close()
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("search", help="Milvus (HNSW, IVF_SQ8) vs FAISS: latency, recall, memory per vector")
    s.add_argument("--size", type=int, default=200_000, help="gallery size")
    s.add_argument("--queries", type=int, default=500, help="held-out real faces searched one at a time")
    s.add_argument("--nprobe", type=int, default=128, help="IVF_SQ8 lists visited per query")
    s.add_argument("--tmp", type=Path, default=None, help="folder for the embedded server's data")
    s.add_argument("--server-dir", type=Path, default=None,
                   help="with FACEINDEX_TEST_MILVUS: that server's base folder (for the disk figures)")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(fn=search_cmd)
    z = sub.add_parser("index-size", help="Milvus index-file bytes per vector, HNSW and IVF_SQ8")
    z.add_argument("--size", type=int, default=50_000)
    z.add_argument("--dim", type=int, default=256)
    z.add_argument("--tmp", type=Path, default=None)
    z.set_defaults(fn=index_size_cmd)
    args = ap.parse_args()
    if args.cmd == "search" and not EMB.is_file():
        sys.exit(f"{EMB} not found: run benchmarks/people.py (or search.py) once to cache LFW embeddings")
    args.fn(args)


if __name__ == "__main__":
    main()
