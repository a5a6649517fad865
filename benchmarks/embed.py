"""Model throughput: dlib vs ONNX Runtime for the ResNet embedder and the MMOD CNN face detector, same run, same CPU.

Embedder: real LFW chips (dlib HOG + 5-point landmarks + get_face_chip), batch 1 and 16, 1 and N processes; every
process runs one single-threaded model (dlib-bin is single-threaded; ONNX with threads=1) on all its chips, the
processes start together behind a barrier, throughput = all faces / slowest process, best of --repeats runs.
"per core" divides by the number of processes. CNN detector: a few detection photos, one process, ONNX threads=1.

    python benchmarks/embed.py [--faces 48] [--batches 1 16] [--procs 1 2] [--repeats 2] [--det-images 3] [--upsample 0]
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


def lfw_chips(n: int) -> np.ndarray:
    """n aligned 150x150 chips: the first LFW image of each person with a HOG detection, in sorted order."""
    import dlib

    from faceindex.models.dlib_onnx import default_weights_path

    det = dlib.get_frontal_face_detector()
    sp = dlib.shape_predictor(str(default_weights_path("shape_predictor_5_face_landmarks.dat")))
    out = []
    for person in sorted(LFW.iterdir()):
        img = dlib.load_rgb_image(str(sorted(person.glob("*.jpg"))[0]))
        rects = det(img, 1)
        if rects:
            out.append(dlib.get_face_chip(img, sp(img, rects[0]), size=150, padding=0.25))
        if len(out) == n:
            break
    return np.stack(out)


def _make_embedder(backend: str, cache: str | None):
    if backend == "dlib":
        from faceindex.models.dlib import DlibEmbedder

        return DlibEmbedder()
    from faceindex.models.dlib_onnx import OnnxEmbedder

    emb = OnnxEmbedder(cache_dir=Path(cache) if cache else None, threads=1)
    emb.load()
    return emb


def _embed_worker(backend: str, cache: str | None, chips: np.ndarray, batch: int, barrier, results) -> None:
    emb = _make_embedder(backend, cache)
    emb.embed(chips[:batch])  # warm up (allocations, lazy init)
    barrier.wait()
    t = time.perf_counter()
    for i in range(0, len(chips), batch):
        emb.embed(chips[i:i + batch])
    results.put(time.perf_counter() - t)


def embed_throughput(backend: str, cache: str | None, chips: np.ndarray, batch: int, procs: int) -> float:
    """Faces per second over all processes."""
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
    return procs * len(chips) / max(secs)


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
    args = ap.parse_args()
    if not LFW.is_dir():
        raise SystemExit(f"LFW images not found at {LFW}")

    import dlib
    import onnxruntime

    from faceindex.models.dlib_onnx import OnnxCnnDetector, OnnxEmbedder

    # build (or find) the cached ONNX models once, before any worker starts
    cache = Path(args.cache) if args.cache else None
    t = time.perf_counter()
    emb = OnnxEmbedder(cache_dir=cache)
    emb.load()
    det = OnnxCnnDetector(cache_dir=cache)
    det.load()
    print(f"ONNX models {'built' if emb.built or det.built else 'found in cache'} in {time.perf_counter() - t:.2f}s: "
          f"{emb.model_path.parent}")

    chips = lfw_chips(args.faces)
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; Python {platform.python_version()}, dlib {dlib.__version__}, "
          f"onnxruntime {onnxruntime.__version__}")
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


if __name__ == "__main__":
    main()
