"""Vector index kinds side by side at the faiss level: HNSW graphs (float32, or SQ8 codes + an exact re-rank),
IVF with SQ8 codes + re-rank, against the IVF-Flat nprobe 128 baseline of issue 11, over the same gallery in
the same run.

Gallery = real LFW embeddings of one pack (/work/cache/lfw-<pack>-embeddings.npz, written by benchmarks/lfw.py)
plus synthetic distractors from benchmarks/search.py's two-level Gaussian fitted to them. Queries: held-out real
faces of people with 2+ images. For every kind: build time (all threads), bytes held in memory (the serialized
index plus the fp16 re-rank matrix where used), open time of the saved file (plain read and memory-mapped
codes), single-query p50/p99 on one thread interleaved query by query with the baseline (so both see the same
load of this shared machine), recall@10 vs exact search, same-person recall, and batch throughput (1,000
queries in one call, all threads).

    python benchmarks/index_kinds.py --pack dlib --size 300000 --kinds base,hnsw32,hnswsq32,ivfsq

A "p" after the prefix (`hnswp32`, `hnswsqp32`) builds the graph over the span of the training sample, as the
engine does (`faceindex/vectors/hnsw.py: span_basis`), and, as the engine, the script renumbers every graph it has built
in link order (`HnswIndex.reorder`; `benchmarks/graph_order.py` compares the two orders). Graphs are searched as the
server serves them: read into huge pages up to the manager's PIN_UP_TO, memory-mapped above (`--mapped`: always
mapped; `benchmarks/huge_pages.py` compares the two).

Large galleries: `--store DIR` keeps the gallery (a memory-mapped .npy written in chunks) and every built index
there, and checkpoints a build every `--checkpoint` faces; a killed run resumes from its last checkpoint, and a
finished build is loaded instead of built again. `--build-only` builds (or resumes) and stops:

    nice -n 19 python benchmarks/index_kinds.py --pack dlib --size 10000000 --kinds hnswsq32 --store DIR --build-only
    python benchmarks/index_kinds.py --pack dlib --size 10000000 --kinds hnswsq32 --store DIR

A gallery is the first rows of every larger one of the same pack and `--queries`, so a checkpoint of a build
(`DIR/<pack>-<size>-<kind>-efc<efC>/partial`, holding `done.txt`'s count of faces) moved to
`DIR2/<pack>-<count>-<kind>-efc<efC>/partial` is measured as a finished graph of that size with `--size <count>
--store DIR2`.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from search import FaceModel, mate_recall, recall_at_k  # noqa: E402

from faceindex.vectors.ef import CALIBRATION_FACES, write_calibration  # noqa: E402
from faceindex.vectors.faiss import FaissIndex, HnswIndex, IvfSqIndex, load_index  # noqa: E402
from faceindex.vectors.manager import PIN_UP_TO  # noqa: E402

CHUNK = 1_000_000  # faces generated, searched exactly, or added between two checkpoints at a time


def load_real(pack: str) -> tuple[np.ndarray, np.ndarray]:
    path = Path(f"/work/cache/lfw-{pack}-embeddings.npz")
    if not path.is_file():
        raise SystemExit(f"{path} not found: run `python benchmarks/lfw.py --model {pack}` first (it writes it)")
    z = np.load(path)
    emb = np.ascontiguousarray(z["embeddings"], np.float32)
    keep = z["detected"].astype(bool) if "detected" in z.files else np.ones(len(emb), bool)
    names = np.array([Path(str(p)).parent.name for p in z["paths"]])
    emb, names = emb[keep], names[keep]
    return emb / np.linalg.norm(emb, axis=1, keepdims=True), names


def gallery(pack: str, size: int, n_queries: int, seed: int, store: Path | None = None):
    """(gallery, queries, exact top-10 of each query, mates of each query). With `store`, the gallery is written
    there once (a memory-mapped .npy: 10M x 128 float32 is 5 GB) and read back on later runs."""
    files = (store / f"gallery-{pack}-{size}-{n_queries}-{seed}.npy",
             store / f"queries-{pack}-{size}-{n_queries}-{seed}.npz") if store else None
    if files and files[0].is_file() and files[1].is_file():
        z = np.load(files[1], allow_pickle=True)
        return np.load(files[0], mmap_mode="r"), z["queries"], z["truth"], [set(m.tolist()) for m in z["mates"]]
    rng = np.random.default_rng(seed)
    emb, names, q_idx, rest, model = _model(pack, n_queries, rng)
    shape = (size, emb.shape[1])
    gal = np.lib.format.open_memmap(files[0], mode="w+", dtype=np.float32, shape=shape) if files else \
        np.empty(shape, np.float32)
    real = min(size, len(rest))
    gal[:real] = emb[rest][:real]
    for s in range(real, size, CHUNK):  # in chunks: the sampler's float64 temporaries of 10M faces are 10 GB
        # whole chunks, the last one cut: a smaller gallery is then the first rows of a larger one (same seed and
        # queries), so a checkpoint of a large build can be measured as a graph of its size
        end = min(size, s + CHUNK)
        gal[s:end] = model.sample(CHUNK, rng)[0][:end - s]
    queries = np.ascontiguousarray(emb[q_idx])
    mates = [set(np.searchsorted(rest, rest[names[rest] == names[i]]).tolist()) for i in q_idx]
    truth = exact_top(gal, queries, 10)
    if files:
        gal.flush()
        np.savez(files[1], queries=queries, truth=truth,
                 mates=np.array([np.array(sorted(m), np.int64) for m in mates], dtype=object))
    return gal, queries, truth, mates


def _model(pack: str, n_queries: int, rng: np.random.Generator):
    """(real embeddings, names, the held-out query rows, the other rows, the generator fitted to those)."""
    emb, names = load_real(pack)
    uniq, inv, counts = np.unique(names, return_inverse=True, return_counts=True)
    multi = np.flatnonzero(counts[inv] >= 2)
    # one held-out face per person with 2+ images, so every query has mates in the gallery
    first = {}
    for i in rng.permutation(multi):
        first.setdefault(inv[i], i)
    q_idx = np.array(list(first.values()))[:n_queries]
    rest = np.setdiff1d(np.arange(len(emb)), q_idx)
    return emb, names, q_idx, rest, FaceModel(emb[rest], names[rest])


def stand_ins(pack: str, n_queries: int, seed: int) -> np.ndarray:
    """CALIBRATION_FACES new faces from the gallery's generator, in no graph: what the engine's calibration faces
    are (faces of the gallery held out of the graph until it is calibrated) for a graph built with them all."""
    _, _, _, _, model = _model(pack, n_queries, np.random.default_rng(seed))
    return np.ascontiguousarray(model.sample(CALIBRATION_FACES, np.random.default_rng(seed + 7919))[0], np.float32)


def exact_top(gal: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Rows of the exact top k of each query (flat inner product over the gallery, a chunk at a time)."""
    best_s = np.full((len(queries), k), -np.inf, np.float32)
    best_i = np.zeros((len(queries), k), np.int64)
    for s in range(0, len(gal), CHUNK):
        flat = faiss.IndexFlatIP(gal.shape[1])
        flat.add(np.ascontiguousarray(gal[s:s + CHUNK]))
        d, i = flat.search(queries, k)
        both_s, both_i = np.concatenate([best_s, d], 1), np.concatenate([best_i, i + s], 1)
        o = np.argsort(-both_s, axis=1, kind="stable")[:, :k]
        best_s, best_i = np.take_along_axis(both_s, o, 1), np.take_along_axis(both_i, o, 1)
    return best_i


# --- the kinds ---------------------------------------------------------------------------------------------------
def build(kind: str, gal: np.ndarray, args, stored: Path | None = None):
    """(index object with .search(q, k) -> (sims, ids), its description). With `stored`, the kinds other than the
    baseline save a checkpoint there every `--checkpoint` faces, and a build killed midway resumes from its last."""
    d = gal.shape[1]
    ids = np.arange(len(gal), dtype=np.int64)
    if kind == "base":  # as benchmarks/search.py makes it: lists by the 200k training sample (2,048)
        base = FaissIndex.ivf(d, _sample(gal), 128)
        base.add(ids, gal)
        return _Plain(base.index, 128), f"IVF-Flat nlist={base.index.nlist} nprobe=128 (baseline)"
    partial = stored / "partial" if stored else None
    if partial and (partial / "index").is_file():
        done, spent, desc = (partial / "done.txt").read_text().split("\t")
        ix, start, spent = load_index(partial / "index", args.nprobe, args.ef), int(done), float(spent)
        print(f"    resuming {desc} at {start:,} faces", file=sys.stderr, flush=True)
    else:
        ix, desc = _empty(kind, gal, args)
        start, spent = 0, 0.0
    _add_chunked(ix, ids, gal, start, partial, spent, desc, every=args.checkpoint)
    if isinstance(ix, HnswIndex):  # as the engine leaves a graph it has built
        t = time.perf_counter()
        ix.reorder()
        ix.build_seconds += time.perf_counter() - t
        desc += ", BFS order"
    return ix, desc


def _empty(kind: str, gal: np.ndarray, args):
    """(an empty index of `kind`, trained where it needs it, its description)."""
    d = gal.shape[1]
    for prefix, codes, name in (("hnswsq", "sq8", "HNSW-SQ8"), ("hnsw", "flat", "HNSW-Flat")):
        if kind.startswith(prefix):  # hnsw32, hnswsq32; "p" after the prefix: over the span (hnswp32)
            project = kind[len(prefix):].startswith("p")
            m = int(kind[len(prefix):].lstrip("p") or 32)
            ix = HnswIndex.empty(d, m=m, ef_construction=args.efc, ef_search=args.ef, codes=codes, project=project)
            if codes == "sq8" or project:
                ix.train(_sample(gal))
            span = f"/{ix._basis().shape[1]}-d" if ix.projected else ""
            return ix, f"{name}{span} M={m} efC={args.efc}" + (" + fp16 re-rank" if ix.quantised else "")
    if kind == "ivfsq":
        ix = IvfSqIndex.trained(d, _sample(gal), len(gal), nprobe=args.nprobe)
        return ix, f"IVF-SQ8 nlist={ix.nlist} + fp16 re-rank"
    raise SystemExit(f"unknown kind {kind}")


def _sample(gal: np.ndarray, n: int = 200_000) -> np.ndarray:
    """The training sample: as the engine takes it, 200k faces at random (seed 0), in gallery order."""
    rng = np.random.default_rng(0)
    return np.ascontiguousarray(gal[np.sort(rng.choice(len(gal), min(len(gal), n), replace=False))])


def _add_chunked(ix, ids, vecs, start: int = 0, partial: Path | None = None, spent: float = 0.0,
                 desc: str = "", step: int = 100_000, every: int = CHUNK) -> None:
    """Add vecs[start:] in steps; with `partial`, checkpoint every `every` faces (index, then done count and the
    build seconds spent so far, so that a resumed build reports its whole time)."""
    t = time.perf_counter()
    for s in range(start, len(ids), step):
        ix.add(ids[s:s + step], np.ascontiguousarray(vecs[s:s + step]))
        done = min(len(ids), s + step)
        print(f"    {done:,} added ({(done - start) / (time.perf_counter() - t):,.0f}/s)", file=sys.stderr,
              flush=True)
        if partial is not None and done % every == 0 and done < len(ids):
            partial.mkdir(parents=True, exist_ok=True)
            ix.save(partial / "index")
            (partial / "done.txt").write_text(f"{done}\t{spent + time.perf_counter() - t}\t{desc}")
    ix.build_seconds = spent + time.perf_counter() - t


class _Plain:
    kind = "ivf-flat"

    def __init__(self, ix, nprobe: int) -> None:
        self.owner = ix  # the id map owns the IVF index: freeing it would free the IVF index too
        self.ix = faiss.extract_index_ivf(ix)
        self.ix.nprobe = nprobe

    def search(self, q, k, exclude=None):
        return self.ix.search(q, k)

    def set_width(self, w: int) -> None:
        self.ix.nprobe = w

    def save(self, path: Path) -> None:
        faiss.write_index(self.ix, str(path))


def set_width(ix, w: int) -> None:
    if isinstance(ix, _Plain):
        ix.set_width(w)
    elif isinstance(ix, HnswIndex):
        ix.ef_search = w
    else:
        ix.nprobe = w


def allocated() -> int:
    """Anonymous resident bytes of this process (what it allocated; mapped files are not counted)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    return 0


def mapped_resident(folder: Path) -> int:
    """Resident bytes of this process's mappings of files in `folder` (a mapped graph's vectors or codes, its
    fp16 copy): the pages searches have touched."""
    total, inside = 0, False
    prefix = str(folder.resolve()) + "/"
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()
        if head and "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
            inside = len(head) >= 6 and head[5].startswith(prefix)
        elif inside and line.startswith("Rss:"):
            total += int(head[1]) * 1024
    return total


def served_pinned(folder: Path, args) -> bool:
    """Whether the server would serve the graph saved in `folder` from huge pages (`IndexManager.pin_graph`)."""
    return not args.mapped and (folder / "index").stat().st_size <= PIN_UP_TO


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pack", default="dlib", help="dlib (128-d) or yunet-omz95 (256-d)")
    ap.add_argument("--size", type=int, default=300_000)
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--kinds", default="base,hnsw32,hnswsq32,ivfsq")
    ap.add_argument("--efc", type=int, default=100, help="HNSW efConstruction")
    ap.add_argument("--ef", type=lambda v: v if v == "auto" else int(v), default="auto",
                    help="HNSW ef_search for the main row; auto (default): calibrated after the build as the engine does "
                         "(faceindex/vectors/ef.py), on 500 new faces of new people from the gallery's generator "
                         "(the engine holds 500 gallery faces out of the graph; these need a little more)")
    ap.add_argument("--nprobe", type=int, default=64, help="IVF-SQ8 nprobe for the main row")
    ap.add_argument("--sweep", default="", help="widths to sweep per kind, e.g. hnsw:96,192,384;ivfsq:32,64,128")
    ap.add_argument("--build-threads", type=int, default=0, help="faiss threads while building (0 = all)")
    ap.add_argument("--checkpoint", type=int, default=CHUNK, help="faces added between two checkpoints (--store)")
    ap.add_argument("--build-only", action="store_true", help="build (or resume) the kinds into --store and stop")
    ap.add_argument("--mapped", action="store_true",
                    help="search graphs memory-mapped as opened, not read into huge pages (up to the manager's "
                    "PIN_UP_TO) as the server serves them")
    ap.add_argument("--store", type=Path, default=None,
                    help="folder keeping built indexes (not the baseline) between runs: a kind already built for "
                         "this pack, size and efConstruction is loaded instead of built again (its build time is "
                         "then the one recorded when it was built)")
    args = ap.parse_args()
    if args.build_only and not args.store:
        ap.error("--build-only needs --store")
    if args.store:
        args.store.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    faiss.omp_set_num_threads(args.build_threads or os.cpu_count() or 1)
    gal, queries, truth, mates = gallery(args.pack, args.size, args.queries, 0, args.store)
    print(f"# {args.pack}: gallery {len(gal):,} x {gal.shape[1]} (real + synthetic), {len(queries)} queries, "
          f"load {os.getloadavg()}", flush=True)
    sweeps = {}
    for part in filter(None, args.sweep.split(";")):
        name, ws = part.split(":")
        sweeps[name] = [int(w) for w in ws.split(",")]
    built = {}
    for kind in args.kinds.split(","):
        faiss.omp_set_num_threads(args.build_threads or os.cpu_count() or 1)
        stored = args.store / f"{args.pack}-{args.size}-{kind}-efc{args.efc}" if args.store and kind != "base" \
            else None
        anon_before = allocated()
        if stored is not None and (stored / "index").is_file():
            ix = load_index(stored / "index", args.nprobe, args.ef, mmap=True, pin=served_pinned(stored, args))
            desc, secs = (stored / "built.txt").read_text().split("\t")
            secs = float(secs)
            print(f"  {kind}: loaded from {stored}", flush=True)
        else:
            t = time.perf_counter()
            ix, desc = build(kind, gal, args, stored)
            secs = getattr(ix, "build_seconds", time.perf_counter() - t)
            if stored is not None:
                stored.mkdir(parents=True, exist_ok=True)
                ix.save(stored / "index")
                (stored / "built.txt").write_text(f"{desc}\t{secs}")
                shutil.rmtree(stored / "partial", ignore_errors=True)
        if args.build_only:
            print(f"  built {kind}: {desc} in {secs:.1f} s ({len(gal) / secs:,.0f} vectors/s)", flush=True)
            continue
        if args.ef == "auto" and isinstance(ix, HnswIndex) and ix.calibrated is None:
            t = time.perf_counter()
            faces = stand_ins(args.pack, args.queries, 0)
            ix.calibrate(faces, -1 - np.arange(len(faces)))  # ids no face of the graph has
            print(f"  {kind}: ef auto calibrated to {ix.calibrated[0]} (recall@10 {ix.calibration_recall:.4f} on "
                  f"{len(faces)} new faces from the gallery's generator) in {time.perf_counter() - t:.1f} s",
                  flush=True)
            if stored is not None:  # kept with the stored graph; opened again so that the pages the calibration's
                # exact scan read are not counted as the searches' resident memory
                write_calibration(stored / "index", ix.calibrated, ix.calibration_recall)
                del ix
                ix = load_index(stored / "index", args.nprobe, args.ef, mmap=True, pin=served_pinned(stored, args))
        anon = allocated() - anon_before
        folder = stored if stored is not None else \
            Path(tempfile.mkdtemp(prefix=f"kinds-{kind}-", dir=os.environ.get("TMPDIR", "/tmp")))
        if stored is None:
            ix.save(folder / "index")
        size = sum(p.stat().st_size for p in folder.glob("index*"))
        opens = []
        if not isinstance(ix, _Plain):
            # reading a 10M-face graph whole would take 3+ GB more memory than the mapped one measured: not above 2 GB
            for mmap in (False, True) if size < 2**31 else (True,):
                t = time.perf_counter()
                again = load_index(folder / "index", mmap=mmap)
                opens.append(time.perf_counter() - t)
                del again
        opens = [float("nan")] * (2 - len(opens)) + opens  # not measured: the baseline, or a read over 2 GB
        if isinstance(ix, HnswIndex) and not ix.pinned and served_pinned(folder, args):  # as the server serves it
            t = time.perf_counter()
            ix = load_index(folder / "index", args.nprobe, args.ef, mmap=True, pin=True)
            print(f"  {kind}: read into huge pages in {time.perf_counter() - t:.2f} s", flush=True)
        if stored is None:
            shutil.rmtree(folder)
        built[kind] = (ix, desc, secs, size, opens, anon, stored)
        print(f"  built {kind}: {desc} in {secs:.1f} s ({len(gal) / secs:,.0f} vectors/s), {size / 2**20:.0f} MiB "
              f"on disk ({size / len(gal):.0f} B/vector), open {' / '.join(f'{o:.2f}' for o in opens)} s "
              f"(read / mmap), allocated {anon / 2**30:.2f} GiB (mapped files not counted), peak RSS "
              f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB", flush=True)
    if args.build_only:
        return
    faiss.omp_set_num_threads(1)
    kinds = list(built)
    lat = {k: [] for k in kinds}
    found = {k: [] for k in kinds}
    for i in range(len(queries)):
        q = queries[i:i + 1]
        for k in kinds:
            t = time.perf_counter()
            _, ids = built[k][0].search(q, 10)
            lat[k].append(time.perf_counter() - t)
            found[k].append(ids[0])
    base_p50 = np.median(lat["base"]) if "base" in lat else float("nan")
    print(f"\n# single query, 1 thread, k=10, {len(queries)} queries interleaved; load {os.getloadavg()}")
    for k in kinds:
        anon, stored = built[k][5], built[k][6]
        touched = mapped_resident(stored) if stored is not None else 0
        print(f"  {k}: resident {(anon + touched) / 2**30:.2f} GiB = {anon / 2**30:.2f} allocated on open + "
              f"{touched / 2**30:.2f} of its mapped files touched by the searches")
    print(f"{'kind':<46}{'build s':>9}{'MiB':>7}{'B/vec':>7}{'open s':>8}{'mmap s':>8}{'p50 ms':>8}{'p99 ms':>8}"
          f"{'ratio':>7}{'rec@10':>8}{'same-p':>8}{'batch q/s':>10}")
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    for k in kinds:
        ix, desc, secs, size, opens = built[k][:5]
        f = np.stack(found[k])
        t = time.perf_counter()
        ix.search(queries, 10)
        qps = len(queries) / (time.perf_counter() - t)
        p50, p99 = np.median(lat[k]) * 1e3, np.quantile(lat[k], 0.99) * 1e3
        o = opens + [float("nan")] * (2 - len(opens))
        print(f"{desc[:45]:<46}{secs:>9.1f}{size / 2**20:>7.0f}{size / len(gal):>7.0f}{o[0]:>8.2f}{o[1]:>8.2f}"
              f"{p50:>8.2f}{p99:>8.2f}{p50 / 1e3 / base_p50:>7.2f}{recall_at_k(f, truth):>8.4f}"
              f"{mate_recall(f, truth, mates):>8.4f}{qps:>10.0f}", flush=True)
    faiss.omp_set_num_threads(1)
    for k, widths in sweeps.items():
        if k not in built:
            continue
        ix = built[k][0]
        print(f"\n# {built[k][1]}: width sweep (HNSW ef_search / IVF nprobe), 1 thread")
        for w in widths:
            set_width(ix, w)
            ls, fs = [], []
            for i in range(len(queries)):
                t = time.perf_counter()
                _, ids = ix.search(queries[i:i + 1], 10)
                ls.append(time.perf_counter() - t)
                fs.append(ids[0])
            f = np.stack(fs)
            print(f"  width {w:>4}: p50 {np.median(ls) * 1e3:6.2f} ms  p99 {np.quantile(ls, 0.99) * 1e3:6.2f} ms  "
                  f"recall@10 {recall_at_k(f, truth):.4f}  same-person {mate_recall(f, truth, mates):.4f}",
                  flush=True)
    print(f"\ntotal {time.perf_counter() - t_all:.0f} s, peak RSS "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB, load {os.getloadavg()}")


if __name__ == "__main__":
    main()
