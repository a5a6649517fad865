"""Search latency, recall@10 and index open/build time of faceindex's own vector index path at 100k and 1M faces,
against the previous default (IVF-Flat, nprobe 128) over the same gallery in the same run.

Gallery = real LFW face embeddings + synthetic distractors that look like real dlib embeddings: a two-level
Gaussian (a random "person" centre from the between-person covariance, then each of the person's faces from the
within-person covariance, both fitted to the real embeddings; then L2-normalised). With no person labels it falls
back to one Gaussian (mean + covariance). The script prints how the distractors' similarities to real faces
compare with real impostor (and genuine) similarities.

Faces are bulk-written into a faceindex Catalog in a temporary data folder; then `FaceIndex.open(data).index`
is timed twice: first open = the engine builds the vector index from the catalog and saves it ("build"), second
open = it loads the saved index ("open", warm page cache). Queries are real LFW faces held out of the gallery,
searched one at a time (batch 1): raw `FaissIndex.search` and engine-level `FaceIndex.search_faces` (which adds
the catalog work: low-quality exclusion list, gallery count, records of the 10 results), with faiss on 1 thread
and on all cores. recall@10 is measured against exact inner-product search over the same gallery.

Real embeddings: the largest bench-out/lfw-*.npz (written by benchmarks/lfw.py, or by this script) with enough
rows; otherwise this script embeds a sample of LFW images with FacePipeline(Settings(model="dlib")) once and caches it
there.

    python benchmarks/search.py [--sizes 100000,1000000] [--queries 1000] [--nprobes 16,32,48,64,128]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import faiss
import numpy as np

from faceindex.catalog import open_catalog
from faceindex.config import Settings
from faceindex.engine import CATALOG_FILE, FaceIndex
from faceindex.models.dlib import RESNET_SPEC
from faceindex.types import Box, Face, Quality
from faceindex.vectors.faiss import FaissIndex
from faceindex.vectors.manager import INDEX_FILE

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bulk_catalog import write_faces  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LFW = ROOT.parent / "shared" / "data" / "lfw"
K = 10
DIM = RESNET_SPEC.dim
MIN_REAL_GALLERY = 500  # real faces kept in the gallery besides the held-out queries
QUANTILES = (0.01, 0.1, 0.5, 0.9, 0.99, 0.999)


# --- real embeddings ---------------------------------------------------------------------------------------------
def lfw_people() -> dict[str, list[Path]]:
    """LFW images per person, in benchmarks/lfw.py's order (people sorted, files sorted)."""
    root = LFW / "images"
    return {p.name: sorted(p.glob("*.jpg")) for p in sorted(root.iterdir()) if p.is_dir()}


def names_in_lfw_order(n: int) -> np.ndarray | None:
    """Person names of the first n images in lfw.py's order, if n ends exactly at a person's last image."""
    if not (LFW / "images").is_dir():
        return None
    names: list[str] = []
    for person, files in lfw_people().items():
        if len(names) >= n:
            break
        names += [person] * len(files)
    return np.array(names) if len(names) == n else None


def find_cached(need: int) -> tuple[Path, np.ndarray, np.ndarray | None] | None:
    """The largest bench-out/lfw-*.npz with at least `need` embeddings: (path, embeddings, names or None)."""
    best = None
    for path in sorted((ROOT / "bench-out").glob("lfw-*.npz")):
        with np.load(path) as z:
            if "emb" not in z.files:
                continue
            n = z["emb"].shape[0]
            if n >= need and (best is None or n > best[1]):
                best = (path, n)
    if best is None:
        return None
    with np.load(best[0]) as z:
        emb = np.ascontiguousarray(z["emb"], dtype=np.float32)
        names = z["names"] if "names" in z.files else names_in_lfw_order(len(emb))
    return best[0], emb, names


_pipe = None


def _init_worker() -> None:
    global _pipe
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from faceindex.pipeline import FacePipeline

    _pipe = FacePipeline(Settings(model="dlib"))


def _embed(path: str) -> np.ndarray | None:
    """Embedding of the detected face nearest the image centre (LFW images are centred on one person)."""
    from faceindex import images

    assert _pipe is not None
    pixels = images.load(path, max_pixels=10**8, max_bytes=10**9).pixels
    faces = _pipe.faces(pixels)
    if not faces:
        return None
    h, w = pixels.shape[:2]
    best = min(faces, key=lambda f: ((f.box.x1 + f.box.x2) / 2 - w / 2) ** 2 + ((f.box.y1 + f.box.y2) / 2 - h / 2) ** 2)
    return best.embedding


def embed_sample(n_images: int, workers: int, rng: np.random.Generator) -> tuple[Path, np.ndarray, np.ndarray]:
    """Embed up to 4 images each of randomly chosen LFW people with 2+ images; cache in bench-out/."""
    if not (LFW / "images").is_dir():
        sys.exit(f"LFW images not found at {LFW / 'images'} and no usable bench-out/lfw-*.npz: nothing to benchmark "
                 "with (run benchmarks/lfw.py, or put LFW there)")
    people = [(p, f) for p, f in lfw_people().items() if len(f) >= 2]
    paths, names = [], []
    for i in rng.permutation(len(people)):
        person, files = people[i]
        for j in sorted(rng.choice(len(files), size=min(4, len(files)), replace=False)):
            paths.append(str(files[j]))
            names.append(person)
        if len(paths) >= n_images:
            break
    print(f"embedding {len(paths)} LFW images with FacePipeline(Settings(model='dlib')) on {workers} processes "
          "(once; cached in bench-out/) ...", file=sys.stderr, flush=True)
    import multiprocessing as mp

    t = time.perf_counter()
    out: list[np.ndarray | None] = []
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("forkserver"), initializer=_init_worker) as pool:
        for i, e in enumerate(pool.map(_embed, paths, chunksize=8)):
            out.append(e)
            if (i + 1) % 250 == 0:
                rate = (i + 1) / (time.perf_counter() - t)
                print(f"  {i + 1}/{len(paths)} ({rate:.1f} images/s)", file=sys.stderr, flush=True)
    keep = [i for i, e in enumerate(out) if e is not None]
    emb = np.stack([out[i] for i in keep]).astype(np.float32)
    names_arr = np.array([names[i] for i in keep])
    s = Settings(model="dlib")
    cache = ROOT / "bench-out" / f"lfw-sample-{s.backend}-{s.detector}-{'flip' if s.flip else 'noflip'}-{len(emb)}.npz"
    cache.parent.mkdir(exist_ok=True)
    np.savez(cache, emb=emb, names=names_arr, paths=np.array([paths[i] for i in keep]),
             secs=time.perf_counter() - t)
    return cache, emb, names_arr


# --- synthetic distractors ---------------------------------------------------------------------------------------
def _sqrt_psd(c: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((c + c.T) / 2)
    return v * np.sqrt(np.clip(w, 0.0, None))


class FaceModel:
    """Two-level Gaussian of embeddings: person centre ~ N(mu, Sb), face ~ N(centre, Sw); then L2-normalised."""

    def __init__(self, emb: np.ndarray, names: np.ndarray | None) -> None:
        e = emb.astype(np.float64)
        self.mu = e.mean(axis=0)
        total = np.cov(e, rowvar=False)
        within = np.zeros_like(total)
        self.sizes = np.ones(1, np.int64)
        self.two_level = False
        if names is not None:
            labels = np.unique(names, return_inverse=True)[1]
            counts = np.bincount(labels)
            dof = int((counts[counts >= 2] - 1).sum())
            if dof >= 4 * e.shape[1]:
                centres = np.stack([e[labels == k].mean(axis=0) for k in range(len(counts))])
                resid = e - centres[labels]
                within = resid.T @ resid / dof
                self.sizes = counts
                self.two_level = True
        self.a_between = _sqrt_psd(total - within)
        self.a_within = _sqrt_psd(within)

    def describe(self) -> str:
        if not self.two_level:
            return "one Gaussian fitted to the real embeddings (mean + full covariance), samples L2-normalised"
        return ("two-level Gaussian fitted to the real embeddings: person centre ~ N(mean, between-person cov), "
                "each face ~ N(centre, pooled within-person cov), L2-normalised; faces per person drawn from the "
                f"real set's distribution (mean {self.sizes.mean():.2f})")

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """n embeddings (float32, L2-normalised) and their synthetic person ids."""
        sizes = rng.choice(self.sizes, size=n // max(1, int(self.sizes.min())) + 1)
        person = np.repeat(np.arange(len(sizes)), sizes)[:n]
        out = np.empty((n, len(self.mu)), np.float32)
        step = 200_000
        for s in range(0, n, step):
            p = person[s:s + step]
            first, inv = np.unique(p, return_inverse=True)
            centres = self.mu + rng.standard_normal((len(first), len(self.mu))) @ self.a_between.T
            x = centres[inv] + rng.standard_normal((len(p), len(self.mu))) @ self.a_within.T
            out[s:s + step] = x / np.linalg.norm(x, axis=1, keepdims=True)
        # chunks may split a person in two; harmless for a distractor set
        return out, person


def pair_scores(a: np.ndarray, la: np.ndarray, b: np.ndarray | None = None, lb: np.ndarray | None = None,
                cap: int = 2_000_000, rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(genuine, impostor) cosine scores between rows of a (and b, or a itself: pairs i < j)."""
    same_set = b is None
    b = a if b is None else b
    lb = la if lb is None else lb
    s = a @ b.T
    same = la[:, None] == lb[None, :]
    valid = np.triu(np.ones_like(same), 1) if same_set else np.ones_like(same)
    gen, imp = s[same & valid], s[~same & valid]
    if rng is not None and len(imp) > cap:
        imp = rng.choice(imp, cap, replace=False)
    return gen, imp


def q_row(label: str, x: np.ndarray) -> str:
    return f"  {label:<44}" + "".join(f"{v:>8.3f}" for v in np.quantile(x, QUANTILES)) + f"   (n={len(x):,})"


# --- catalog -----------------------------------------------------------------------------------------------------


def write_catalog(folder: Path, vecs: np.ndarray, quality: np.ndarray) -> None:
    """Bulk-insert one image, one file and one face per row of `vecs` (face id = row + 1), in one transaction."""
    folder.mkdir(parents=True)
    cat = open_catalog(folder / CATALOG_FILE)
    try:
        write_faces(cat, vecs, quality, RESNET_SPEC.key, first_id=1)
    finally:
        cat.close()


# --- measurement -------------------------------------------------------------------------------------------------
def latencies(fn: Callable[[int], object], n: int, budget_s: float = float("inf"), warmup: int = 10) -> np.ndarray:
    """Seconds per call of fn(i) for i < n (after `warmup` untimed calls), stopping early past budget_s."""
    t = faiss.omp_get_max_threads()
    return by_threads({"": (fn, n)}, [t], budget_s, warmup)[""][t]


def by_threads(fns: dict[str, tuple[Callable[[int], object], int]], thread_counts: list[int],
               budget_s: float = float("inf"), warmup: int = 10) -> dict[str, dict[int, np.ndarray]]:
    """Seconds per call of each fn(i), i < its n, for each faiss thread count: {name: {threads: seconds}}.

    Functions and thread counts are interleaved query by query, so that all of them see the same load of this
    shared machine; stops early once past budget_s (with at least 20 calls each).
    """
    before = faiss.omp_get_max_threads()
    out: dict[str, dict[int, list[float]]] = {name: {t: [] for t in thread_counts} for name in fns}
    try:
        for t in thread_counts:
            faiss.omp_set_num_threads(t)
            for fn, n in fns.values():
                for i in range(min(warmup, n)):
                    fn(i)
        start = time.perf_counter()
        for i in range(max(n for _, n in fns.values())):
            for name, (fn, n) in fns.items():
                if i >= n:
                    continue
                for t in thread_counts:
                    faiss.omp_set_num_threads(t)
                    t0 = time.perf_counter()
                    fn(i)
                    out[name][t].append(time.perf_counter() - t0)
            if time.perf_counter() - start > budget_s and i >= 19:
                break
    finally:
        faiss.omp_set_num_threads(before)
    return {name: {t: np.array(v) for t, v in d.items()} for name, d in out.items()}


def ms(x: np.ndarray, q: float) -> float:
    return float(np.quantile(x, q) * 1e3)


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f.tolist()) & set(t.tolist())) / truth.shape[1] for f, t in zip(found, truth)]))


def rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def probe_face(v: np.ndarray) -> Face:
    q = Quality(size=160, sharpness=300.0, detector_score=1.2, frontal=0.95, score=0.9)
    return Face(box=Box(600, 400, 760, 560), landmarks=(), quality=q, embedding=v)


def mate_recall(found: np.ndarray, truth: np.ndarray, mates: list[set[int]]) -> float:
    """Of the same-person gallery faces in the exact top k, the share that the index also returned."""
    hit = total = 0
    for f, t, m in zip(found, truth, mates):
        want = m.intersection(t.tolist())
        total += len(want)
        hit += len(want.intersection(f.tolist()))
    return hit / total if total else float("nan")


def bench_size(data: Path, gallery: np.ndarray, quality: np.ndarray, queries: np.ndarray, n_real: int,
               mates: list[set[int]], args: argparse.Namespace, nprobes: list[int],
               thread_counts: list[int]) -> tuple[list, list]:
    """Build a catalog of `gallery` in `data`, time opening it, and measure search; returns (rows, sweep rows)."""
    settings = Settings(model="dlib")
    size = len(gallery)
    cores = max(thread_counts)
    ids = np.arange(1, size + 1, dtype=np.int64)
    t = time.perf_counter()
    write_catalog(data, gallery, quality)
    t_cat = time.perf_counter() - t
    print(f"catalog bulk insert: {t_cat:.1f} s, {(data / CATALOG_FILE).stat().st_size / 2**20:.0f} MiB", flush=True)

    faiss.omp_set_num_threads(cores)
    t = time.perf_counter()
    with FaceIndex.open(data) as fi:
        built = fi.index
        fi.vectors.wait()  # a graph is built beside the exact index that serves meanwhile
        built = fi.index
        t_build = time.perf_counter() - t
        repaired = fi.repaired
        del built
    t = time.perf_counter()
    fi = FaceIndex.open(data)
    index = fi.index
    t_open = time.perf_counter() - t
    assert fi.repaired is None, "second open rebuilt the index instead of loading it"
    assert index.count == size
    nlist = faiss.extract_index_ivf(index.index).nlist if index.kind == "ivf" else 0
    t = time.perf_counter()
    for _ in fi.catalog.embeddings(dim=DIM):
        pass
    t_read = time.perf_counter() - t
    print(f"index: {index.kind}{f' (nlist={nlist}, nprobe={index.nprobe})' if nlist else ''}; "
          f"first open (build from catalog + save): {t_build:.1f} s (repaired={repaired}; reading all embeddings "
          f"from the catalog alone takes {t_read:.1f} s); second open (load saved index): {t_open:.2f} s; "
          f"{(data / INDEX_FILE).stat().st_size / 2**20:.0f} MiB on disk", flush=True)

    # ground truth with faceindex's own exact index
    exact = FaissIndex.exact(DIM)
    exact.add(ids, gallery)
    t = time.perf_counter()
    _, truth = exact.search(queries, K)
    n_mates = sum(len(m.intersection(t.tolist())) for m, t in zip(mates, truth)) / len(queries)
    print(f"exact ground truth (batch of {len(queries)}): {time.perf_counter() - t:.1f} s; in the exact top {K}, on "
          f"average: {np.mean(truth <= n_real) * K:.2f} real faces, {n_mates:.2f} of the query's own person",
          flush=True)

    # the baseline named in issue 11: the previous default, IVF-Flat at nprobe 128, over the same gallery
    t = time.perf_counter()
    rng = np.random.default_rng(0)
    base = FaissIndex.ivf(DIM, gallery[rng.choice(size, size=min(size, 200_000), replace=False)], 128)
    base.add(ids, gallery)
    print(f"baseline IVF-Flat nlist={faiss.extract_index_ivf(base.index).nlist} nprobe=128 built in "
          f"{time.perf_counter() - t:.1f} s", flush=True)

    rows, sweep = [], []
    probes = [[probe_face(q)] for q in queries]
    got = np.empty((len(queries), K), np.int64)
    got_base = np.empty((len(queries), K), np.int64)

    def raw(i: int) -> None:
        got[i] = index.search(queries[i:i + 1], K)[1][0]

    def raw_base(i: int) -> None:
        got_base[i] = base.search(queries[i:i + 1], K)[1][0]

    # the index, the baseline and exact search interleaved (same machine load for all); then the engine, on a budget
    timed = by_threads({"index": (raw, len(queries)), "baseline": (raw_base, len(queries)),
                        "exact": (lambda i: exact.search(queries[i:i + 1], K), min(args.exact_queries, len(queries)))},
                       thread_counts)
    rec, mrec = recall_at_k(got, truth), mate_recall(got, truth, mates)
    b_rec, b_mrec = recall_at_k(got_base, truth), mate_recall(got_base, truth, mates)
    # batch throughput: 1,000-query batches on all cores
    faiss.omp_set_num_threads(cores)
    batch = np.resize(queries, (1000, DIM)) if len(queries) < 1000 else queries[:1000]
    qps = {}
    for name, ix in (("index", index), ("baseline", base)):
        ix.search(batch[:10], K)
        t = time.perf_counter()
        ix.search(batch, K)
        qps[name] = len(batch) / (time.perf_counter() - t)
    print(f"batch of {len(batch)} queries on {cores} threads: {index.kind} {qps['index']:,.0f} queries/s; "
          f"baseline IVF nprobe=128 {qps['baseline']:,.0f} queries/s", flush=True)
    eng = by_threads({"engine": (lambda i: fi.search_faces(probes[i], K), len(queries))}, thread_counts,
                     args.engine_seconds)["engine"]
    for threads in thread_counts:
        a, e, x = timed["index"][threads], eng[threads], timed["exact"][threads]
        b = timed["baseline"][threads]
        r = dict(size=size, kind=index.kind, nlist=nlist, nprobe=index.nprobe if nlist else 0, build=t_build,
                 open=t_open, threads=threads, p50=ms(a, .5), p99=ms(a, .99), recall=rec, mate=mrec,
                 eng_p50=ms(e, .5), eng_p99=ms(e, .99), eng_n=len(e), ex_p50=ms(x, .5), ex_p99=ms(x, .99), ex_n=len(x),
                 b_p50=ms(b, .5), b_p99=ms(b, .99), b_recall=b_rec, b_mate=b_mrec, qps=qps["index"],
                 b_qps=qps["baseline"], ef=getattr(index, "ef_search", 0))
        rows.append(r)
        print(f"threads={threads}: {index.kind} p50 {r['p50']:.2f} ms p99 {r['p99']:.2f} ms recall@10 {rec:.4f} "
              f"same-person recall {mrec:.4f}; baseline IVF np=128 p50 {r['b_p50']:.2f} ms p99 {r['b_p99']:.2f} ms "
              f"recall@10 {b_rec:.4f} same-person {b_mrec:.4f} (p50 ratio {r['p50'] / r['b_p50']:.2f}); "
              f"search_faces p50 {r['eng_p50']:.1f} ms p99 {r['eng_p99']:.1f} ms ({len(e)} queries); "
              f"exact p50 {r['ex_p50']:.2f} ms p99 {r['ex_p99']:.2f} ms ({len(x)} queries)", flush=True)

    # where the engine-level time goes (1 thread)
    faiss.omp_set_num_threads(1)
    excl = fi.catalog.low_quality_ids(settings.min_quality)
    parts = {
        "catalog.low_quality_ids()": lambda i: fi.catalog.low_quality_ids(settings.min_quality),
        "catalog.face_count()": lambda i: fi.catalog.face_count(),
        "index.search()": lambda i: index.search(queries[i:i + 1], K),
        f"index.search(exclude={len(excl):,} ids)": lambda i: index.search(queries[i:i + 1], K, excl),
        f"catalog.face_records({K} ids)": lambda i: fi.catalog.face_records(truth[i].tolist()),
    }
    print("search_faces parts (1 thread, p50): " + "; ".join(
        f"{name} {ms(latencies(fn, 50, 10.0, warmup=2), .5):.2f} ms" for name, fn in parts.items()), flush=True)

    if index.kind == "ivf":
        default = index.nprobe
        for p in nprobes:
            index.nprobe = p
            faiss.omp_set_num_threads(cores)
            _, found = index.search(queries, K)
            faiss.omp_set_num_threads(1)
            lat = latencies(lambda i: index.search(queries[i:i + 1], K), len(queries))
            sweep.append(dict(size=size, nlist=nlist, nprobe=p, recall=recall_at_k(found, truth),
                              mate=mate_recall(found, truth, mates), p50=ms(lat, .5), p99=ms(lat, .99)))
            w = sweep[-1]
            print(f"nprobe={p}: recall@10 {w['recall']:.4f}, same-person {w['mate']:.4f}, p50 {w['p50']:.2f} ms, "
                  f"p99 {w['p99']:.2f} ms (1 thread)", flush=True)
        index.nprobe = default
    if index.kind == "hnsw":
        default = index.ef_search
        for ef in sorted({32, 48, 64, 96, 128, 192, default}):
            index.ef_search = ef
            faiss.omp_set_num_threads(cores)
            _, found = index.search(queries, K)
            faiss.omp_set_num_threads(1)
            lat = latencies(lambda i: index.search(queries[i:i + 1], K), len(queries))
            sweep.append(dict(size=size, nlist=0, nprobe=ef, recall=recall_at_k(found, truth),
                              mate=mate_recall(found, truth, mates), p50=ms(lat, .5), p99=ms(lat, .99)))
            w = sweep[-1]
            print(f"ef_search={ef}: recall@10 {w['recall']:.4f}, same-person {w['mate']:.4f}, p50 {w['p50']:.2f} ms, "
                  f"p99 {w['p99']:.2f} ms (1 thread)", flush=True)
        index.ef_search = default
    fi.close()
    shutil.rmtree(data)
    return rows, sweep


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100000,1000000", help="gallery sizes, comma-separated")
    ap.add_argument("--queries", type=int, default=1000, help="held-out real faces searched one at a time")
    ap.add_argument("--nprobes", default="16,32,48,64,128", help="IVF nprobe values for the recall sweep")
    ap.add_argument("--exact-queries", type=int, default=200, help="queries for the exact (flat) latency")
    ap.add_argument("--engine-seconds", type=float, default=30.0,
                    help="time budget per engine-level latency run (fewer queries if exceeded)")
    ap.add_argument("--low-quality", type=float, default=0.05,
                    help="share of distractor faces stored below Settings.min_quality (excluded from results)")
    ap.add_argument("--real-images", type=int, default=2400,
                    help="LFW images to embed when no bench-out/lfw-*.npz is large enough")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes for embedding LFW images")
    ap.add_argument("--tmp", type=Path, default=None, help="folder for the temporary data folders")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    settings = Settings(model="dlib")
    nprobes = sorted({int(p) for p in args.nprobes.split(",")} | {settings.nprobe})
    cores = os.cpu_count() or 1
    thread_counts = sorted({1, cores})
    rng = np.random.default_rng(args.seed)
    t_start = time.perf_counter()

    # real embeddings
    need = args.queries + MIN_REAL_GALLERY
    found = find_cached(need)
    if found is None:
        found = embed_sample(max(args.real_images, need + 200), args.workers, rng)
    src, real, names = found
    if len(real) < need:
        sys.exit(f"only {len(real)} real embeddings could be made; need {need} (lower --queries)")
    if names is None:
        names = np.array([f"#{i}" for i in range(len(real))])  # unknown people: every face its own
        labelled = False
    else:
        labelled = True

    # queries: one held-out image per person with 2+ images first (so they have a mate in the gallery)
    by_person: dict[str, list[int]] = {}
    for i, n in enumerate(names.tolist()):
        by_person.setdefault(n, []).append(i)
    multi = [ix for ix in by_person.values() if len(ix) >= 2]
    first = [ix[int(rng.integers(len(ix)))] for ix in (multi[j] for j in rng.permutation(len(multi)))]
    rest = np.setdiff1d(np.arange(len(real)), first)
    order = np.concatenate([np.array(first, np.int64), rng.permutation(rest)])
    q_ix = np.sort(order[: args.queries])
    g_ix = np.setdiff1d(np.arange(len(real)), q_ix)
    queries, real_gallery = real[q_ix], real[g_ix]
    gallery_ids: dict[str, set[int]] = {}
    for face_id, n in enumerate(names[g_ix].tolist(), start=1):  # real faces are catalog ids 1..len(g_ix)
        gallery_ids.setdefault(n, set()).add(face_id)
    mates = [gallery_ids.get(n, set()) for n in names[q_ix].tolist()]
    mated = sum(1 for m in mates if m)
    if max(sizes) < len(real_gallery):
        sys.exit(f"the smallest gallery must hold the {len(real_gallery)} real faces")

    model = FaceModel(real, names if labelled else None)
    n_syn = max(sizes) - len(real_gallery)
    t = time.perf_counter()
    synthetic, syn_person = model.sample(n_syn, rng)
    t_syn = time.perf_counter() - t
    quality = np.full(max(sizes), 0.9)
    low = rng.random(max(sizes)) < args.low_quality
    low[: len(real_gallery)] = False
    quality[low] = rng.uniform(0.05, settings.min_quality * 0.9, int(low.sum()))

    print(f"# faceindex search benchmark: {platform.processor() or platform.machine()}, {cores} cores, "
          f"Python {platform.python_version()}, faiss {faiss.__version__}")
    print(f"load average at start: {' '.join(f'{x:.1f}' for x in os.getloadavg())} (shared machine: "
          "multi-thread timings suffer when other processes hold the cores)")
    print(f"settings: exact_threshold={settings.exact_threshold:,} (HNSW at >= this), ef_search={settings.ef_search}, "
          f"min_quality={settings.min_quality}")
    print(f"real faces: {len(real):,} LFW embeddings from {src.relative_to(ROOT) if src.is_relative_to(ROOT) else src}"
          f" ({len(by_person):,} people{'' if labelled else ', person labels unknown'})")
    print(f"queries: {len(queries):,} real faces held out of the gallery (not in it); {mated:,} of them have another "
          f"image of the same person in the gallery; searched one at a time, top {K}")
    print(f"gallery: the other {len(real_gallery):,} real faces + synthetic distractors ({n_syn:,} made in "
          f"{t_syn:.1f} s)")
    print(f"distractors: {model.describe()}")
    print(f"low quality: {low.sum() / max(1, len(low) - len(real_gallery)) * 100:.1f}% of distractors stored with "
          f"quality < min_quality (search_faces excludes them; the raw index search does not)")

    # do the distractors look like faces? similarity quantiles
    sub = rng.choice(len(real), min(len(real), 3000), replace=False)
    r_gen, r_imp = pair_scores(real[sub], names[sub], rng=rng)
    m = min(3000, n_syn)
    s_gen, s_imp = pair_scores(synthetic[:m], syn_person[:m], rng=rng)
    _, x_imp = pair_scores(synthetic[:m], np.full(m, "~syn"), real[sub], names[sub], rng=rng)
    u = rng.standard_normal((m, DIM)).astype(np.float32)
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    print("\ncosine similarity quantiles" + " " * 20 + "".join(f"{q:>8}" for q in QUANTILES))
    print(q_row("real vs real, different people (impostor)", r_imp))
    print(q_row("synthetic vs real", x_imp))
    print(q_row("synthetic vs synthetic, different people", s_imp))
    if labelled:
        print(q_row("real vs real, same person (genuine)", r_gen))
    if model.two_level:
        print(q_row("synthetic vs synthetic, same person", s_gen))
    print(q_row("(uniform on the sphere vs real, for contrast)", (u[:1000] @ real[sub].T).ravel()))
    nn_real = (queries @ real_gallery.T)
    nn_real[names[q_ix][:, None] == names[g_ix][None, :]] = -1
    g = len(real_gallery)
    print(q_row(f"query -> best real impostor (of {g:,} real)", nn_real.max(axis=1)))
    print(q_row(f"query -> best synthetic (of {min(g, n_syn):,})", (queries @ synthetic[:g].T).max(axis=1)))

    rows: list[dict] = []
    sweep: list[dict] = []
    base = Path(tempfile.mkdtemp(prefix="faceindex-search-bench-", dir=args.tmp))
    try:
        for size in sizes:
            print(f"\n## {size:,} faces", flush=True)
            gallery = np.concatenate([real_gallery, synthetic[: size - len(real_gallery)]])
            r, s = bench_size(base / f"g{size}", gallery, quality[:size], queries, len(real_gallery), mates,
                              args, nprobes, thread_counts)
            rows += r
            sweep += s
            del gallery
            print(f"peak RSS so far: {rss_gib():.2f} GiB", flush=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
        faiss.omp_set_num_threads(cores)

    print(f"\n# summary (latencies in ms, one query at a time, k={K}; recall@10 vs exact search; "
          f"'open' = load the saved index, 'build' = first open, building it from the catalog; "
          f"base = IVF-Flat nprobe 128, the previous default, in the same run)")
    head = (f"{'faces':>9} {'index':<18} {'build s':>8} {'open s':>7} {'thr':>4} {'p50':>6} {'p99':>6} "
            f"{'recall@10':>9} {'same-pers':>9} {'base p50':>8} {'base p99':>8} {'base rec':>8} {'base same':>9} "
            f"{'p50 ratio':>9} {'engine p50':>10} {'exact p50':>9} {'batch q/s':>9} {'base q/s':>8}")
    print(head)
    print("-" * len(head))
    for r in rows:
        desc = (f"{r['kind']} nlist={r['nlist']} np={r['nprobe']}" if r["nlist"] else
                f"{r['kind']} ef={r['ef']}" if r["ef"] else r["kind"])
        print(f"{r['size']:>9,} {desc:<18} {r['build']:>8.1f} {r['open']:>7.2f} {r['threads']:>4} {r['p50']:>6.2f} "
              f"{r['p99']:>6.2f} {r['recall']:>9.4f} {r['mate']:>9.4f} {r['b_p50']:>8.2f} {r['b_p99']:>8.2f} "
              f"{r['b_recall']:>8.4f} {r['b_mate']:>9.4f} {r['p50'] / r['b_p50']:>9.2f} {r['eng_p50']:>10.1f} "
              f"{r['ex_p50']:>9.2f} {r['qps']:>9,.0f} {r['b_qps']:>8,.0f}")
    print(f"same-pers = of the query's own person's faces in the exact top {K}, the share the index returned too")
    print(f"engine = FaceIndex.search_faces (index search + catalog work); queries per engine row: "
          f"{', '.join(str(r['eng_n']) for r in rows)}; exact = FaissIndex.exact (flat) over the same gallery, "
          f"{', '.join(str(r['ex_n']) for r in rows)} queries; thread settings interleaved query by query; "
          f"batch = one search call of 1,000 queries on all cores")
    if sweep:
        print("\n# recall@10 vs the search-width knob (IVF: nprobe; HNSW: ef_search), latency on 1 thread")
        head = f"{'faces':>9} {'index':>6} {'knob':>6} {'recall@10':>9} {'same-pers':>9} {'p50':>7} {'p99':>7}"
        print(head)
        print("-" * len(head))
        for s in sweep:
            kind = f"ivf{s['nlist']}" if s["nlist"] else "hnsw"
            print(f"{s['size']:>9,} {kind:>6} {s['nprobe']:>6} {s['recall']:>9.4f} {s['mate']:>9.4f} "
                  f"{s['p50']:>7.2f} {s['p99']:>7.2f}")
    print(f"\ntotal time {time.perf_counter() - t_start:.0f} s, peak RSS {rss_gib():.2f} GiB, load average at end: "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
