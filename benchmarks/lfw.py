"""LFW accuracy of the faceindex pipeline, and the calibration table (similarity -> FMR) it ships.

Prints: 10-fold verification accuracy on pairs.txt; open-set 1:N identification over all of LFW (first image of
each person with 2+ images enrolled, single-image people split into enrolled distractors and non-mated probes):
rank-1 and FNIR at FPIR = 1%; the number of images where no face was found. With --write-calibration it writes
faceindex/calibration_tables/<the pack's table>.json from all same-person and different-person pairs of LFW.
The per-image embeddings are also saved to /work/cache/lfw-<model>-embeddings.npz (paths, embeddings, detected)
for other analyses (--embeddings-out to put them elsewhere).

    python benchmarks/lfw.py [--model yunet-omz95|dlib] [--backend onnx|dlib] [--flip/--no-flip] [--workers N]
                             [--write-calibration]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from faceindex.calibration import Calibration
from faceindex.config import Settings
from faceindex.evaluate import all_pair_scores, open_set, read_pairs, verification_accuracy
from faceindex.models import packs
from faceindex.models.base import Detection
from faceindex.pipeline import FacePipeline, normalise

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "lfw"
# LFW deep-funneled images are 250x250 with the face centred; this box is the fallback when no face is detected
CENTRE_BOX = Detection(68.0, 68.0, 182.0, 182.0, -1.0)

_pipe: FacePipeline | None = None


def _init(settings_json: str) -> None:
    global _pipe
    _pipe = FacePipeline(Settings.model_validate_json(settings_json))


def _embed(path: str) -> tuple[np.ndarray, bool]:
    """Embedding of the face nearest the centre; (embedding, detected) with the centre-box fallback."""
    assert _pipe is not None
    from faceindex import images

    pixels = images.load(path, max_pixels=10**8, max_bytes=10**9).pixels
    faces = _pipe.faces(pixels)
    h, w = pixels.shape[:2]
    if faces:
        best = min(faces, key=lambda f: ((f.box.x1 + f.box.x2) / 2 - w / 2) ** 2
                   + ((f.box.y1 + f.box.y2) / 2 - h / 2) ** 2)
        return best.embedding, True
    return _pipe.faces_at(pixels, [CENTRE_BOX])[0].embedding, False


def embed_all(paths: list[str], settings: Settings, workers: int) -> tuple[np.ndarray, np.ndarray]:
    ctx = mp.get_context("forkserver")
    with ctx.Pool(workers, initializer=_init, initargs=(settings.model_dump_json(),)) as pool:
        out = []
        t = time.perf_counter()
        for i, r in enumerate(pool.imap(_embed, paths, chunksize=16)):
            out.append(r)
            if (i + 1) % 1000 == 0:
                rate = (i + 1) / (time.perf_counter() - t)
                print(f"  embedded {i + 1}/{len(paths)} ({rate:.1f} images/s)", file=sys.stderr, flush=True)
    return normalise(np.stack([e for e, _ in out])), np.array([d for _, d in out])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=packs.DEFAULT, choices=sorted(packs.builtin()), help="model pack")
    ap.add_argument("--backend", default="auto", choices=["auto", "onnx", "dlib"])
    ap.add_argument("--detector", default="hog", choices=["hog", "cnn"], help="the dlib pack's detector")
    ap.add_argument("--flip", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--limit", type=int, default=0, help="use only the first N people folders (quick runs)")
    ap.add_argument("--cache", type=Path, default=ROOT / "bench-out")
    ap.add_argument("--embeddings-out", type=Path, default=None,
                    help="where to save the per-image embeddings (default /work/cache/lfw-<model>-embeddings.npz)")
    ap.add_argument("--write-calibration", action="store_true")
    args = ap.parse_args()
    if not DATA.is_dir():
        sys.exit(f"LFW not found at {DATA}")

    people = sorted(p.name for p in (DATA / "images").iterdir() if p.is_dir())
    if args.limit:
        people = people[: args.limit]
    paths, names = [], []
    for p in people:
        for f in sorted((DATA / "images" / p).glob("*.jpg")):
            paths.append(str(f))
            names.append(p)
    pack = packs.get(args.model)
    settings = Settings(model=args.model, backend=args.backend, detector=args.detector, flip=args.flip)
    args.cache.mkdir(exist_ok=True)
    det = f"-{args.detector}" if args.model == "dlib" else ""
    # the dlib pack keeps its old tag so that cached runs stay valid
    tag = (f"{args.backend}{det}-{'flip' if args.flip else 'noflip'}-{len(paths)}" if args.model == "dlib"
           else f"{args.model}-{args.backend}-{'flip' if args.flip else 'noflip'}-{len(paths)}")
    cache = args.cache / f"lfw-{tag}.npz"
    if cache.is_file():
        z = np.load(cache)
        emb, detected, secs = z["emb"], z["detected"], float(z["secs"])
    else:
        t = time.perf_counter()
        emb, detected = embed_all(paths, settings, args.workers)
        secs = time.perf_counter() - t
        np.savez(cache, emb=emb, detected=detected, secs=secs)
    if not args.limit:
        out = args.embeddings_out or Path("/work/cache") / f"lfw-{args.model}-embeddings.npz"
        if out.parent.is_dir() or args.embeddings_out:
            out.parent.mkdir(parents=True, exist_ok=True)
            np.savez(out, paths=np.array(paths), embeddings=emb, detected=detected, model=pack.key)
            print(f"embeddings saved to {out}", file=sys.stderr)
    index = {(n, int(Path(p).stem.rsplit("_", 1)[1])): i for i, (n, p) in enumerate(zip(names, paths))}

    print(f"# LFW with faceindex ({tag}); {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    print(f"images: {len(paths)}  people: {len(people)}  embedding time: {secs:.0f} s "
          f"({len(paths) / secs:.1f} images/s, {args.workers} workers)")
    print(f"images with no face found: {int((~detected).sum())} (centre-box fallback used for those)")

    def sim_of(a: str, i: int, b: str, j: int) -> float:
        return float(emb[index[(a, i)]] @ emb[index[(b, j)]])

    if not args.limit:
        folds = read_pairs(DATA / "pairs.txt")
        acc, std, th = verification_accuracy(folds, sim_of)
        print(f"verification accuracy (pairs.txt, 10-fold): {acc * 100:.2f}% +- {std * 100:.2f}  "
              f"(mean threshold: cosine {th:.4f})")
    res = open_set(names, emb, np.random.default_rng(0))
    print(f"open-set 1:N: gallery {res['gallery']}, mated probes {res['mated_probes']}, "
          f"non-mated probes {res['nonmated_probes']}")
    print(f"  rank-1: {res['rank1'] * 100:.2f}%   FNIR at FPIR=1%: {res['fnir_at_fpir_1pct'] * 100:.2f}% "
          f"(threshold {res['threshold_at_fpir_1pct']:.4f})")
    gen, imp = all_pair_scores(names, emb, max_impostor=100_000_000)
    cal = Calibration.from_scores(pack.key, gen, imp,
                                  source=f"LFW deep-funneled, all pairs ({tag})")
    for f in (1e-2, 1e-3, 1e-4, 1e-5, 1e-6):
        t = cal.threshold_for(f)
        print(f"  FMR {f:.0e}: similarity >= {t:.4f}  FNMR {cal.fnmr_at(t) * 100:.2f}%")
    print(f"calibration: {len(gen)} genuine pairs, {len(imp)} impostor pairs")
    if args.write_calibration:
        out = ROOT / "faceindex" / "calibration_tables" / f"{pack.calibration}.json"
        out.write_text(json.dumps(cal.to_json(), indent=0))
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
