"""Model throughput: dlib vs ONNX Runtime for the ResNet embedder and the MMOD CNN face detector, same run, same CPU;
and Intel's face-reidentification-retail-0095 (OMZ) embedder next to dlib's ONNX embedder.

Embedder: real LFW chips (dlib HOG + 5-point landmarks + get_face_chip), batch 1 and 16, 1 and N processes; every
process runs one single-threaded model (dlib-bin is single-threaded; ONNX with threads=1) on all its chips, the
processes start together behind a barrier, throughput = all faces / slowest process, best of --repeats runs.
"per core" divides by the number of processes. CNN detector: a few detection photos, one process, ONNX threads=1.
OMZ: 128x128 chips of the same faces (ArcFace 5 points from dlib's 68 landmarks, `align.warp_chip`), one process,
threads=1, ms per face for the folded ONNX graph that faceindex builds and for a literal translation of the IR.

    python benchmarks/embed.py [--faces 48] [--batches 1 16] [--procs 1 2] [--repeats 2] [--det-images 3] [--upsample 0]
                               [--only-omz]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
LFW = DATA / "lfw" / "images"
FACES = DATA / "detection" / "dlib_faces"
sys.path.insert(0, str(ROOT))

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")


def lfw_chips(n: int) -> tuple[np.ndarray, np.ndarray]:
    """n aligned 150x150 dlib chips and the n 128x128 ArcFace chips of the same faces: the first LFW image of each
    person with a HOG detection, in sorted order."""
    import dlib

    from faceindex.models.align import warp_chip
    from faceindex.models.dlib_onnx import default_weights_path

    det = dlib.get_frontal_face_detector()
    sp = dlib.shape_predictor(str(default_weights_path("shape_predictor_5_face_landmarks.dat")))
    sp68 = dlib.shape_predictor(str(default_weights_path("shape_predictor_68_face_landmarks.dat")))
    out, arc = [], []
    for person in sorted(LFW.iterdir()):
        img = dlib.load_rgb_image(str(sorted(person.glob("*.jpg"))[0]))
        rects = det(img, 1)
        if rects:
            out.append(dlib.get_face_chip(img, sp(img, rects[0]), size=150, padding=0.25))
            s = sp68(img, rects[0])
            p = np.array([[s.part(i).x, s.part(i).y] for i in range(68)], np.float64)
            arc.append(warp_chip(img, np.stack([p[36:42].mean(0), p[42:48].mean(0), p[30], p[48], p[54]]), 128))
        if len(out) == n:
            break
    return np.stack(out), np.stack(arc)


def _make_embedder(backend: str, cache: str | None):
    if backend == "dlib":
        from faceindex.models.dlib import DlibEmbedder

        return DlibEmbedder()
    if backend in ("omz", "omz-literal"):
        from faceindex.models.omz import OmzEmbedder

        emb = (OmzEmbedder if backend == "omz" else _literal_omz())(cache_dir=Path(cache) if cache else None, threads=1)
        emb.load()
        return emb
    from faceindex.models.dlib_onnx import OnnxEmbedder

    emb = OnnxEmbedder(cache_dir=Path(cache) if cache else None, threads=1)
    emb.load()
    return emb


def _literal_omz():
    """The OMZ embedder with a literal translation of the IR (no folding, PReLU as PRelu): what folding is worth."""
    from faceindex.models.omz import OmzEmbedder
    from faceindex.models.openvino import build_onnx

    class LiteralOmz(OmzEmbedder):
        kind = "omz_face_reid_0095_literal"

        def _build(self, ir):
            return build_onnx(ir, fold=False)

    return LiteralOmz


def _embed_worker(backend: str, cache: str | None, chips: np.ndarray, batch: int, barrier, results) -> None:
    emb = _make_embedder(backend, cache)
    if hasattr(emb, "batch_size"):
        emb.batch_size = batch  # one ONNX Runtime call per batch, as asked
    emb.embed(chips[:batch])  # warm up (allocations, lazy init)
    barrier.wait()
    t, c = time.perf_counter(), time.process_time()
    for i in range(0, len(chips), batch):
        emb.embed(chips[i:i + batch])
    results.put((time.perf_counter() - t, time.process_time() - c))


def embed_throughput(backend: str, cache: str | None, chips: np.ndarray, batch: int, procs: int) -> float:
    """Faces per second over all processes."""
    return embed_rates(backend, cache, chips, batch, procs)[0]


def embed_rates(backend: str, cache: str | None, chips: np.ndarray, batch: int,
                procs: int) -> tuple[float, float]:
    """Faces per second over all processes, by wall-clock time and by CPU time (the latter discounts the time other
    jobs on a shared machine held the core)."""
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(procs), ctx.Queue()
    workers = [ctx.Process(target=_embed_worker, args=(backend, cache, chips, batch, barrier, results))
               for _ in range(procs)]
    for w in workers:
        w.start()
    secs = [results.get() for _ in workers]
    for w in workers:
        w.join()
        if w.exitcode:
            raise SystemExit(f"{backend} worker failed with exit code {w.exitcode}")
    return procs * len(chips) / max(s[0] for s in secs), procs * len(chips) / max(s[1] for s in secs)


def detector_times(paths: list[Path], upsample: int, cache: str | None) -> tuple[float, float, list[int]]:
    """Seconds per image for dlib's and the ONNX CNN detector, and the detection counts (which must agree)."""
    import dlib

    from faceindex.models.dlib_onnx import MMOD_FILE, OnnxCnnDetector, default_weights_path

    ref = dlib.cnn_face_detection_model_v1(str(default_weights_path(MMOD_FILE)))
    det = OnnxCnnDetector(cache_dir=Path(cache) if cache else None, threads=1)
    det.load()
    images = [dlib.load_rgb_image(str(p)) for p in paths]
    det.detect(images[0], upsample)  # warm up
    ref(images[0], upsample)
    t = time.perf_counter()
    counts_ref = [len(ref(img, upsample)) for img in images]
    t_dlib = (time.perf_counter() - t) / len(images)
    t = time.perf_counter()
    counts = [len(det.detect(img, upsample)) for img in images]
    t_onnx = (time.perf_counter() - t) / len(images)
    if counts != counts_ref:
        raise SystemExit(f"detections differ: dlib {counts_ref}, onnx {counts}")
    return t_dlib, t_onnx, counts


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--faces", type=int, default=48, help="LFW chips per process (default 48)")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 16], help="batch sizes (default 1 16)")
    ap.add_argument("--procs", type=int, nargs="+", default=[1, 2], help="process counts (default 1 2)")
    ap.add_argument("--det-images", type=int, default=3, help="detection photos for the CNN detector (default 3)")
    ap.add_argument("--upsample", type=int, default=0, help="CNN detector upsampling (default 0)")
    ap.add_argument("--repeats", type=int, default=2, help="runs of each configuration, best kept (default 2)")
    ap.add_argument("--cache", default=None, help="ONNX model cache folder (default $FACEINDEX_CACHE or ~/.cache)")
    ap.add_argument("--only-omz", action="store_true", help="only the OMZ vs dlib-ONNX comparison (skips dlib-bin)")
    args = ap.parse_args()
    if not LFW.is_dir():
        raise SystemExit(f"LFW images not found at {LFW}")

    import dlib
    import onnxruntime

    from faceindex.models.dlib_onnx import OnnxCnnDetector, OnnxEmbedder
    from faceindex.models.omz import OmzEmbedder

    # build (or find) the cached ONNX models once, before any worker starts
    cache = Path(args.cache) if args.cache else None
    t = time.perf_counter()
    emb = OnnxEmbedder(cache_dir=cache)
    emb.load()
    det = OnnxCnnDetector(cache_dir=cache)
    det.load()
    omz = [cls(cache_dir=cache) for cls in (OmzEmbedder, _literal_omz())]
    for m in omz:
        m.load()
    built = emb.built or det.built or any(m.built for m in omz)
    print(f"ONNX models {'built' if built else 'found in cache'} in {time.perf_counter() - t:.2f}s: "
          f"{emb.model_path.parent}")

    chips, arc_chips = lfw_chips(args.faces)
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; Python {platform.python_version()}, dlib {dlib.__version__}, "
          f"onnxruntime {onnxruntime.__version__}")
    omz_table(args, chips, arc_chips)
    if args.only_omz:
        return
    print(f"\nEmbedder: {len(chips)} LFW chips (150x150) per process, one single-threaded model per process\n")
    print(f"{'batch':>5} {'procs':>5} | {'dlib faces/s':>12} {'per core':>9} | {'onnx faces/s':>12} {'per core':>9} | "
          f"{'ONNX/dlib':>9}")
    for batch in args.batches:
        for procs in args.procs:
            d = o = 0.0
            for _ in range(max(1, args.repeats)):  # alternate, keep the best: other load on the machine only slows
                d = max(d, embed_throughput("dlib", args.cache, chips, batch, procs))
                o = max(o, embed_throughput("onnx", args.cache, chips, batch, procs))
            print(f"{batch:>5} {procs:>5} | {d:>12.2f} {d / procs:>9.2f} | {o:>12.2f} {o / procs:>9.2f} | "
                  f"{o / d:>8.1f}x", flush=True)

    if args.det_images > 0 and FACES.is_dir():
        photos = sorted(p for p in FACES.glob("20*.jpg"))[: args.det_images]
        t_dlib, t_onnx, counts = detector_times(photos, args.upsample, args.cache)
        sizes = ", ".join(f"{p.name}" for p in photos)
        print(f"\nCNN detector: {len(photos)} photos ({sizes}), upsample {args.upsample}, "
              f"faces found {counts} (identical), one process, ONNX threads=1\n")
        print(f"{'dlib images/s':>13} | {'onnx images/s':>13} | {'ONNX/dlib':>9}")
        print(f"{1 / t_dlib:>13.3f} | {1 / t_onnx:>13.3f} | {t_dlib / t_onnx:>8.1f}x")


def omz_table(args, chips: np.ndarray, arc_chips: np.ndarray) -> None:
    """ms per face, one process, one thread: dlib's ONNX embedder, the OMZ embedder (folded), its literal graph."""
    runs = max(1, args.repeats)
    print(f"\nOMZ face-reidentification-retail-0095 vs dlib's ResNet (both ONNX Runtime): {len(chips)} LFW faces, "
          f"one process, threads=1, best of {runs} runs; ms per face by wall clock (and by CPU time)\n")
    print(f"{'batch':>5} | {'dlib-onnx':>16} | {'omz':>16} | {'omz literal':>16} | {'omz/dlib-onnx':>13} | "
          f"{'literal/omz':>11}")
    for batch in args.batches:
        best = {k: (0.0, 0.0) for k in ("onnx", "omz", "omz-literal")}
        for _ in range(runs):  # alternate, keep the best: other load on the machine only slows
            for k, c in (("onnx", chips), ("omz", arc_chips), ("omz-literal", arc_chips)):
                w, cpu = embed_rates(k, args.cache, c, batch, 1)
                best[k] = (max(best[k][0], w), max(best[k][1], cpu))
        ms = {k: f"{1000 / w:6.2f} ({1000 / cpu:6.2f})" for k, (w, cpu) in best.items()}
        d, o, lit = best["onnx"][0], best["omz"][0], best["omz-literal"][0]
        print(f"{batch:>5} | {ms['onnx']:>16} | {ms['omz']:>16} | {ms['omz-literal']:>16} | {d / o:>12.2f}x | "
              f"{o / lit:>10.2f}x", flush=True)


if __name__ == "__main__":
    main()
