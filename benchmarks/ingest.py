"""Indexing throughput: faceindex `add` with 1 worker and all workers vs the face_recognition package's pipeline.

The baseline is what most Python users run today: face_recognition.face_locations (dlib HOG, upsample 1) +
face_recognition.face_encodings (same dlib ResNet model, 5-point alignment) in one process, on the same images.
It needs `pip install --no-deps face_recognition` (its declared dlib dependency would build dlib from source;
dlib-bin already provides the module).

    python benchmarks/ingest.py [--images 600] [--model yunet-omz95 dlib] [--backend auto|onnx|dlib ...]
    python benchmarks/ingest.py --probe [--images 100] [--model yunet-omz95 dlib]

--backend applies to the dlib pack (its embedder's runtime); yunet-omz95 always runs on ONNX Runtime.
--probe measures a search's probe analysis instead: `FaceIndex.faces(path)` (decode + detect + embed, with the
fallback detector as a search uses it) of one image at a time in this process, one onnxruntime thread, the packs
interleaved image by image so that a load change hits them alike; wall-clock ms and the process's CPU ms.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LFW = ROOT.parent / "shared" / "data" / "lfw" / "images"


def sample(n: int) -> list[Path]:
    """n LFW images, spread over people (every k-th file in sorted order)."""
    files = sorted(LFW.glob("*/*.jpg"))
    step = max(1, len(files) // n)
    return files[::step][:n]


def cpu_seconds() -> float:
    """CPU seconds of this process and its reaped children (the worker processes once the pool has stopped)."""
    ch = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + ch.ru_utime + ch.ru_stime


def run_faceindex(files: list[Path], workers: int, backend: str, flip: bool, model: str) -> tuple[float, int, float]:
    from faceindex import FaceIndex

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "photos"
        src.mkdir()
        for f in files:
            (src / f.name).symlink_to(f)
        with FaceIndex.open(Path(tmp) / "data", model=model, backend=backend, flip=flip) as fi:
            c, t = cpu_seconds(), time.perf_counter()
            rep = fi.add([src], "bench", workers=workers)
            secs = time.perf_counter() - t
            assert rep.ok and rep.images_indexed == len(files), rep.errors
        return secs, rep.faces_found, cpu_seconds() - c


def run_face_recognition(files: list[Path]) -> tuple[float, int, float]:
    import face_recognition

    c, t = cpu_seconds(), time.perf_counter()
    faces = 0
    for f in files:
        img = face_recognition.load_image_file(str(f))
        locs = face_recognition.face_locations(img)
        faces += len(face_recognition.face_encodings(img, locs))
    return time.perf_counter() - t, faces, cpu_seconds() - c


def run_probe(files: list[Path], models: list[str], backend: str) -> None:
    """Median/mean/p90 ms of one probe's analysis per pack (after one warm-up image that loads the models)."""
    from faceindex import FaceIndex

    wall: dict[str, list[float]] = {m: [] for m in models}
    cpu: dict[str, list[float]] = {m: [] for m in models}
    faces: dict[str, int] = dict.fromkeys(models, 0)
    with tempfile.TemporaryDirectory() as tmp:
        engines = {m: FaceIndex.open(Path(tmp) / m, model=m, backend=backend) for m in models}
        try:
            for fi in engines.values():
                fi.faces(files[0])  # warm-up: loads (and on first use builds) the models
            for f in files:
                for m, fi in engines.items():
                    c, t = time.process_time(), time.perf_counter()
                    faces[m] += len(fi.faces(f))
                    wall[m].append((time.perf_counter() - t) * 1000)
                    cpu[m].append((time.process_time() - c) * 1000)
        finally:
            for fi in engines.values():
                fi.close()
    print(f"{'pack':14} {'faces':>6} {'median ms':>10} {'mean ms':>8} {'p90 ms':>7} {'median CPU ms':>14}")
    for m in models:
        w = np.array(wall[m])
        print(f"{m:14} {faces[m]:>6} {np.median(w):>10.1f} {w.mean():>8.1f} {np.percentile(w, 90):>7.1f}"
              f" {np.median(cpu[m]):>14.1f}")
    if len(models) == 2:
        a, b = (np.median(wall[m]) for m in models)
        print(f"median ratio {models[1]}/{models[0]}: {b / a:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=600)
    ap.add_argument("--model", nargs="+", default=["yunet-omz95", "dlib"], help="model packs to measure")
    ap.add_argument("--backend", nargs="+", default=["dlib", "onnx"], choices=["dlib", "onnx", "auto"],
                    help="runtimes of the dlib pack's embedder")
    ap.add_argument("--flip", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--probe", action="store_true", help="time a search's probe analysis per image instead")
    args = ap.parse_args()
    if not LFW.is_dir():
        sys.exit(f"LFW not found at {LFW}")
    files = sample(args.images)
    if args.probe:
        print(f"# probe analysis: {len(files)} LFW images (250x250), {platform.machine()}, {os.cpu_count()} cores, "
              f"1 onnxruntime thread, dlib backend {args.backend[-1]}")
        run_probe(files, args.model, args.backend[-1])
        return
    print(f"# ingest benchmark: {len(files)} LFW images (250x250), {platform.machine()}, {os.cpu_count()} cores, "
          f"flip={'on' if args.flip else 'off'}")
    rows = []
    try:
        secs, faces, cpu = run_face_recognition(files)
        base, base_cpu = len(files) / secs, cpu
        rows.append(("face_recognition (baseline)", 1, secs, faces, cpu))
    except ImportError:
        base = base_cpu = None
        print("face_recognition not installed: pip install --no-deps face_recognition (baseline skipped)")
    runs = [(m, b) for m in args.model for b in (args.backend if m == "dlib" else ["auto"])]
    for model, backend in runs:
        for w in sorted({1, args.workers}):
            secs, faces, cpu = run_faceindex(files, w, backend, args.flip, model)
            name = f"faceindex add, {model}" + (f", backend {backend}" if model == "dlib" else "")
            rows.append((name, w, secs, faces, cpu))
    print(f"{'pipeline':40} {'workers':>7} {'seconds':>8} {'images/s':>9} {'faces/s':>8} {'img/s/core':>10}"
          f" {'vs baseline/core':>16} {'CPU s':>7} {'vs baseline CPU':>15}")
    one_worker: dict[str, float] = {}
    for name, w, secs, faces, cpu in rows:
        ips = len(files) / secs
        per_core = ips / w
        if w == 1:
            one_worker[name] = ips
        ratio = f"{per_core / base:.2f}x" if base else "-"
        cpu_ratio = f"{base_cpu / cpu:.2f}x" if base_cpu else "-"
        print(f"{name:40} {w:>7} {secs:>8.1f} {ips:>9.2f} {faces / secs:>8.2f} {per_core:>10.2f} {ratio:>16}"
              f" {cpu:>7.1f} {cpu_ratio:>15}")
    print("CPU s: CPU time of this process and its (stopped) worker processes; the CPU ratio is the baseline's CPU "
          "per image over this row's, the per-core speed-up with the other jobs' load taken out")
    for name, w, secs, *_ in rows:
        if w > 1 and name in one_worker:
            print(f"scaling {name}: {len(files) / secs / one_worker[name]:.2f}x with {w} workers")


if __name__ == "__main__":
    main()
