"""Every face of every LFW image, embedded with the faceindex pipeline and cached (used by benchmarks/people.py).

The cache `/work/cache/people-lfw-<model>.npz` holds: `emb` (faces x dim, L2-normalised), `image` (image index of
each face), `quality`, `labelled` (image -> the face nearest the image centre, the one the LFW name belongs to),
`detected` (image -> a face was found; else the centre box was embedded as LFW's labelled face), `names` (image ->
person), `paths`.

    python benchmarks/lfw_faces.py [--model dlib] [--workers 2]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

import numpy as np

from faceindex.config import Settings
from faceindex.models.base import Detection
from faceindex.pipeline import FacePipeline

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "lfw"
CACHE = Path(os.environ.get("FACEINDEX_CACHE", "/work/cache"))
# LFW deep-funneled images are 250x250 with the face centred; embedded when no face is detected
CENTRE_BOX = Detection(68.0, 68.0, 182.0, 182.0, -1.0)

_pipe: FacePipeline | None = None


def settings_for(model: str, workers: int = 1) -> Settings:
    """Pipeline settings for a model pack name ('dlib' works on every version; others need Settings.model)."""
    if "model" in Settings.model_fields:
        return Settings(model=model, workers=workers)
    if model != "dlib":
        sys.exit(f"this faceindex has no Settings.model: only the dlib pack can be used, not {model!r}")
    return Settings(workers=workers)


def _init(settings_json: str) -> None:
    global _pipe
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _pipe = FacePipeline(Settings.model_validate_json(settings_json))


def _embed(path: str) -> tuple[np.ndarray, np.ndarray, int, bool]:
    """(embeddings, qualities, index of the face nearest the centre, detected) of one image."""
    assert _pipe is not None
    from faceindex import images

    pixels = images.load(path, max_pixels=10**8, max_bytes=10**9).pixels
    faces = _pipe.faces(pixels)
    h, w = pixels.shape[:2]
    if faces:
        d = [((f.box.x1 + f.box.x2) / 2 - w / 2) ** 2 + ((f.box.y1 + f.box.y2) / 2 - h / 2) ** 2 for f in faces]
        return (np.stack([f.embedding for f in faces]).astype(np.float32),
                np.array([f.quality.score for f in faces], np.float32), int(np.argmin(d)), True)
    if hasattr(_pipe, "faces_at"):  # model packs
        emb = _pipe.faces_at(pixels, [CENTRE_BOX])[0].embedding[None]
    else:
        lm = _pipe.models.landmarker
        emb = _pipe.embed_chips(lm.chips(pixels, [lm.shape(pixels, CENTRE_BOX)]))
    return emb.astype(np.float32), np.zeros(1, np.float32), 0, False


def lfw_paths() -> tuple[list[str], list[str]]:
    people = sorted(p.name for p in (DATA / "images").iterdir() if p.is_dir())
    paths, names = [], []
    for p in people:
        for f in sorted((DATA / "images" / p).glob("*.jpg")):
            paths.append(str(f))
            names.append(p)
    return paths, names


def cache_path(model: str) -> Path:
    return CACHE / f"people-lfw-{model}.npz"


def load_or_embed(model: str, workers: int) -> dict[str, np.ndarray]:
    """The cached faces of all LFW images for `model`, embedding them first when the cache is absent."""
    cache = cache_path(model)
    if cache.is_file():
        z = np.load(cache, allow_pickle=False)
        return {k: z[k] for k in z.files}
    if not DATA.is_dir():
        sys.exit(f"LFW not found at {DATA}")
    paths, names = lfw_paths()
    settings = settings_for(model, workers)
    t = time.perf_counter()
    out = []
    with mp.get_context("forkserver").Pool(workers, initializer=_init,
                                           initargs=(settings.model_dump_json(),)) as pool:
        for i, r in enumerate(pool.imap(_embed, paths, chunksize=16)):
            out.append(r)
            if (i + 1) % 1000 == 0:
                rate = (i + 1) / (time.perf_counter() - t)
                print(f"  embedded {i + 1}/{len(paths)} ({rate:.1f} images/s)", file=sys.stderr, flush=True)
    secs = time.perf_counter() - t
    counts = np.array([len(e) for e, _, _, _ in out])
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    data = {
        "emb": np.concatenate([e for e, _, _, _ in out]),
        "quality": np.concatenate([q for _, q, _, _ in out]),
        "image": np.repeat(np.arange(len(paths)), counts),
        "labelled": starts + np.array([c for _, _, c, _ in out]),
        "detected": np.array([d for _, _, _, d in out]),
        "names": np.array(names),
        "paths": np.array([str(Path(p).relative_to(DATA)) for p in paths]),
        "secs": np.array(secs),
    }
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp.npz")
    np.savez(tmp, **data)
    tmp.replace(cache)
    return data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="dlib")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    d = load_or_embed(args.model, args.workers)
    print(f"{args.model}: {len(d['emb'])} faces in {len(d['names'])} images "
          f"({int((~d['detected']).sum())} without a detected face), dim {d['emb'].shape[1]}, "
          f"embedded in {float(d['secs']):.0f} s -> {cache_path(args.model)}")


if __name__ == "__main__":
    main()
