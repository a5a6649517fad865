"""Face detection: YuNet (onnxruntime) vs today's dlib HOG pipeline detector, same images, same run, one core.

Speed: ms per image (each image timed as the best of --repeats runs, so other jobs on the machine inflate it less)
on --lfw LFW images (250x250, the first image of every k-th line of pairs.txt) and on the detection photos
(../shared/data/detection: the dlib_faces photos and the 3000x2171 Solvay photo). HOG is `FacePipeline.detect`
with default settings and no CNN fallback (adaptive upsampling, downscaling to detect_max_side); YuNet is
`YuNetDetector()` with its defaults (threshold 0.8, 4 MP pixel budget, coarse pass, small-image retry), threads=1.
Recall: the 43 hand-labelled boxes of dlib_faces, greedy one-to-one at IoU >= 0.4 (see tests/test_yunet.py for
why 0.4), and the detections that match no label, on the photos as they are (faces 37-109 px) and on copies at
0.5x and 0.35x (smaller faces, labels scaled alike); Solvay: faces found (29 sitters); dogs.jpg: detections (none
wanted); LFW: images with a face near the centre. With --pairs: YuNet alone on every image of pairs.txt (7,701),
counting the images without a face (the model-pack target is none).

    nice -n 10 python benchmarks/detect.py [--lfw 200] [--repeats 3] [--pairs]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import numpy as np  # noqa: E402
from embed import cpu_name  # noqa: E402 - benchmarks/ is on sys.path when a script of it runs
from PIL import Image  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
LFW = DATA / "lfw"
DETECTION = DATA / "detection"
FACES = DETECTION / "dlib_faces"
sys.path.insert(0, str(ROOT))

MATCH_IOU = 0.4


def iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def matched(labels, boxes) -> tuple[int, int]:
    """(labels matched, boxes matching no label), greedy one-to-one at IoU >= MATCH_IOU."""
    free = list(boxes)
    hits = 0
    for g in labels:
        scores = [iou(g, d) for d in free]
        if scores and max(scores) >= MATCH_IOU:
            free.pop(int(np.argmax(scores)))
            hits += 1
    return hits, len(free)


def timed(fn, img: np.ndarray, repeats: int) -> tuple[float, list]:
    best, out = float("inf"), []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn(img)
        best = min(best, time.perf_counter() - t)
    return best * 1000.0, [(d.left, d.top, d.right, d.bottom) for d in out]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lfw", type=int, default=200, help="LFW images to time")
    ap.add_argument("--repeats", type=int, default=3, help="runs per image; the best counts")
    ap.add_argument("--pairs", action="store_true", help="also run YuNet on all 7,701 images of pairs.txt")
    args = ap.parse_args()
    if not FACES.is_dir() or not (LFW / "pairs.txt").is_file():
        sys.exit(f"needs ../shared/data (LFW and detection photos) at {DATA}")

    from faceindex.config import Settings
    from faceindex.models.yunet import YuNetDetector
    from faceindex.pipeline import FacePipeline

    hog = FacePipeline(Settings(cnn_fallback=False))
    yunet = YuNetDetector(threads=1)
    detectors = {"hog": lambda im: hog.detect(im, False), "yunet": yunet.detect}
    warm = np.asarray(Image.open(FACES / "2008_002506.jpg").convert("RGB"))
    for fn in detectors.values():
        fn(warm)  # model loading is not timed

    lines = (LFW / "pairs.txt").read_text().splitlines()[1:]
    step = max(1, len(lines) // args.lfw)
    lfw_paths = []
    for line in lines[::step][: args.lfw]:
        f = line.split("\t")
        lfw_paths.append(LFW / "images" / f[0] / f"{f[0]}_{int(f[1]):04d}.jpg")
    ann = json.loads((FACES / "annotations_xywh.json").read_text())
    photos = sorted(FACES.glob("*.jpg")) + [DETECTION / "solvay_conference_1927.jpg"]

    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores visible; one thread per detector; best of {args.repeats}")
    lfw_ms = {k: [] for k in detectors}
    central = dict.fromkeys(detectors, 0)
    for p in lfw_paths:
        img = np.asarray(Image.open(p).convert("RGB"))
        for k, fn in detectors.items():
            ms, boxes = timed(fn, img, args.repeats)
            lfw_ms[k].append(ms)
            central[k] += any(abs((b[0] + b[2]) / 2 - 125) < 30 and abs((b[1] + b[3]) / 2 - 125) < 40 for b in boxes)
    print(f"\nLFW, {len(lfw_paths)} images of 250x250")
    print("detector | ms/image mean  median | images with a central face")
    for k in detectors:
        print(f"{k:8} | {np.mean(lfw_ms[k]):13.2f} {np.median(lfw_ms[k]):7.2f} | {central[k]}/{len(lfw_paths)}")
    print(f"HOG/YuNet time ratio: {np.mean(lfw_ms['hog']) / np.mean(lfw_ms['yunet']):.1f}x")

    print("\nDetection photos")
    print(f"{'photo':28} {'size':>10} | {'hog ms':>8} {'faces':>5} {'match':>5} | {'yunet ms':>8} {'faces':>5} "
          f"{'match':>5} | labels")
    tot = {k: [0.0, 0, 0] for k in detectors}  # ms, matched, unmatched detections (labelled photos)
    n_labels = 0
    big_ms = {k: 0.0 for k in detectors}
    for p in photos:
        img = np.asarray(Image.open(p).convert("RGB"))
        a = ann.get(p.name)
        labels = [(x, y, x + w, y + h) for x, y, w, h in a["boxes_xywh"]] if a else None
        row = []
        for k, fn in detectors.items():
            ms, boxes = timed(fn, img, args.repeats)
            big_ms[k] += ms
            hit, extra = matched(labels, boxes) if labels else (0, 0)
            if labels:
                tot[k][1] += hit
                tot[k][2] += extra
            row.append(f"{ms:8.1f} {len(boxes):5d} {(str(hit) if labels else '-'):>5}")
        n_labels += len(labels or [])
        print(f"{p.name:28} {img.shape[1]:>4}x{img.shape[0]:<5} | {row[0]} | {row[1]} | {len(labels or []) or '-'}")
    print(f"\nall {len(photos)} photos: HOG {big_ms['hog']:.0f} ms, YuNet {big_ms['yunet']:.0f} ms, "
          f"HOG/YuNet time ratio {big_ms['hog'] / big_ms['yunet']:.1f}x")
    for k in detectors:
        print(f"{k:6} recall on the {n_labels} labelled faces: {tot[k][1]}/{n_labels} "
              f"({100 * tot[k][1] / n_labels:.1f}%), detections matching no label: {tot[k][2]}")
    print("\nRecall on smaller copies of the labelled photos (matched / 43, detections matching no label)")
    for f in (0.5, 0.35):
        res = dict.fromkeys(detectors, (0, 0))
        for name, a in ann.items():
            im = Image.open(FACES / name).convert("RGB")
            img = np.asarray(im.resize((round(im.width * f), round(im.height * f)), Image.Resampling.BILINEAR))
            labels = [(x * f, y * f, (x + w) * f, (y + h) * f) for x, y, w, h in a["boxes_xywh"]]
            for k, fn in detectors.items():
                hit, extra = matched(labels, [(d.left, d.top, d.right, d.bottom) for d in fn(img)])
                res[k] = (res[k][0] + hit, res[k][1] + extra)
        print(f"scale {f}: " + ", ".join(f"{k} {v[0]}/43 ({v[1]})" for k, v in res.items()))

    if args.pairs:
        pairs_images(yunet)


def pairs_images(yunet) -> None:
    """YuNet on every image of LFW pairs.txt: images with no face, and with no face near the centre."""
    names = set()
    for line in (LFW / "pairs.txt").read_text().splitlines()[1:]:
        f = line.split("\t")
        names.add((f[0], int(f[1])))
        names.add((f[2], int(f[3])) if len(f) == 4 else (f[0], int(f[2])))
    none, off_centre, t0 = [], [], time.perf_counter()
    for name, i in sorted(names):
        path = LFW / "images" / name / f"{name}_{i:04d}.jpg"
        dets = yunet.detect(np.asarray(Image.open(path).convert("RGB")))
        if not dets:
            none.append(path.name)
        elif not any(abs((d.left + d.right) / 2 - 125) < 30 and abs((d.top + d.bottom) / 2 - 125) < 40 for d in dets):
            off_centre.append(path.name)
    dt = time.perf_counter() - t0
    print(f"\nLFW pairs.txt: {len(names)} images, {len(none)} without a face {none[:10]}, "
          f"{len(off_centre)} without a central face {off_centre[:10]} ({1000 * dt / len(names):.1f} ms/image "
          "incl. decoding)")


if __name__ == "__main__":
    main()
