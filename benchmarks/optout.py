"""Opt-out matching: leak rate and over-removal at several thresholds, over many LFW people.

For every LFW person with at least --min-images images, the first --templates images play the requester's
selfies (the opt-out templates) and the person's other images play their faces held in the collection. At a
threshold t (similarity of the calibrated FMR):
- leak rate: share of the person's held faces whose best similarity to the templates is below t (still indexed,
  still returned by search);
- over-removal: share of other people's faces (all of LFW) at or above t against the templates, i.e. removed
  wrongly by one opt-out; also shown per million faces in the gallery.
Uses the embeddings cached by benchmarks/lfw.py (run that first).

    python benchmarks/optout.py [--cache bench-out/lfw-auto-hog-flip-13233.npz]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from faceindex.calibration import load

ROOT = Path(__file__).resolve().parents[1]
LFW = ROOT.parent / "shared" / "data" / "lfw" / "images"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, default=None, help="an npz written by benchmarks/lfw.py")
    ap.add_argument("--templates", type=int, default=2)
    ap.add_argument("--min-images", type=int, default=4)
    ap.add_argument("--fmrs", default="1e-2,3e-3,1e-3,3e-4,1e-4")
    args = ap.parse_args()
    caches = sorted((ROOT / "bench-out").glob("lfw-*.npz"), key=lambda p: p.stat().st_size)
    cache = args.cache or (caches[-1] if caches else None)
    if cache is None or not cache.is_file():
        sys.exit("no cached LFW embeddings: run benchmarks/lfw.py first")
    emb = np.load(cache)["emb"]
    names = [p.parent.name for p in sorted(LFW.glob("*/*.jpg"), key=lambda p: (p.parent.name, p.name))]
    if len(names) != len(emb):
        names = names[: len(emb)]
    names_arr = np.array(names)
    cal = load("dlib_resnet_v1")
    fmrs = [float(x) for x in args.fmrs.split(",")]
    thresholds = [cal.threshold_for(f) for f in fmrs]
    people = [p for p, c in zip(*np.unique(names_arr, return_counts=True)) if c >= args.min_images]
    held_total = 0
    leaks = np.zeros(len(fmrs))
    wrong = np.zeros(len(fmrs))
    others_total = 0
    for person in people:
        idx = np.nonzero(names_arr == person)[0]
        tpl, held = idx[: args.templates], idx[args.templates:]
        best = (emb @ emb[tpl].T).max(axis=1)
        mask_other = names_arr != person
        held_total += len(held)
        others_total += int(mask_other.sum())
        for k, t in enumerate(thresholds):
            leaks[k] += int((best[held] < t).sum())
            wrong[k] += int((best[mask_other] >= t).sum())
    print(f"# opt-out matching on LFW ({cache.name}): {len(people)} people with >= {args.min_images} images, "
          f"{args.templates} template photos each, {held_total} held faces, "
          f"{others_total // len(people)} other faces per opt-out")
    print(f"{'FMR':>8} {'similarity':>10} {'leak rate':>10} {'over-removal':>13} {'per 1M faces':>13}")
    for f, t, lk, wr in zip(fmrs, thresholds, leaks, wrong):
        rate = wr / others_total
        print(f"{f:>8.0e} {t:>10.4f} {lk / held_total * 100:>9.2f}% {rate * 100:>12.4f}% {rate * 1e6:>13.0f}")


if __name__ == "__main__":
    main()
