"""Opt-out matching: leak rate and over-removal at several thresholds, over many LFW people.

For every LFW person with at least --min-images images, the first --templates images play the requester's
selfies (the opt-out templates) and the person's other images play their faces held in the collection. At a
threshold t (similarity of the calibrated FMR):
- leak rate: share of the person's held faces whose best similarity to the templates is below t (still indexed,
  still returned by search);
- over-removal: share of other people's faces (all of LFW) at or above t against the templates, i.e. removed
  wrongly by one opt-out; also shown per million faces in the gallery.
Uses the embeddings written by benchmarks/lfw.py (run that first): either its per-run cache in bench-out/ (`emb`, in
LFW's sorted order, dlib pack) or its per-image file (`paths`, `embeddings`, `model`; e.g.
/work/cache/lfw-yunet-omz95-embeddings.npz), whose pack's calibration table sets the thresholds. The row at the
policy's default `optout_fmr` is marked with `*`.

    python benchmarks/optout.py [--cache /work/cache/lfw-yunet-omz95-embeddings.npz] [--fmrs 1e-3,3e-4]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from faceindex.calibration import load
from faceindex.models import packs
from faceindex.policy import Policy

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
    z = np.load(cache)
    if "paths" in z.files:  # lfw.py's per-image file: names from the paths, the pack from its key
        emb = z["embeddings"]
        names = [Path(str(p)).parent.name for p in z["paths"]]
        pack = packs.by_key(str(z["model"]))
    else:  # lfw.py's bench-out cache: LFW in sorted order, dlib pack
        emb = z["emb"]
        names = [p.parent.name for p in sorted(LFW.glob("*/*.jpg"), key=lambda p: (p.parent.name, p.name))]
        names = names[: len(emb)]
        pack = packs.get("dlib")
    names_arr = np.array(names)
    cal = load(pack.calibration)
    default_fmr = Policy().optout_fmr
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
    print(f"# opt-out matching on LFW ({cache.name}, pack {pack.name}): {len(people)} people with "
          f">= {args.min_images} images, "
          f"{args.templates} template photos each, {held_total} held faces, "
          f"{others_total // len(people)} other faces per opt-out")
    print(f"{'FMR':>8} {'similarity':>10} {'leak rate':>10} {'over-removal':>13} {'per 1M faces':>13}")
    for f, t, lk, wr in zip(fmrs, thresholds, leaks, wrong):
        rate = wr / others_total
        mark = " *" if f == default_fmr else ""
        print(f"{f:>8.0e} {t:>10.4f} {lk / held_total * 100:>9.2f}% {rate * 100:>12.4f}% {rate * 1e6:>13.0f}{mark}")
    print(f"* the policy's default optout_fmr ({default_fmr:g})")


if __name__ == "__main__":
    main()
