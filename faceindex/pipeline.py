"""Image -> faces: detect, landmark, align, embed, assess; and a process pool for batches of files."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image

from . import images, quality
from .config import Settings
from .errors import FaceIndexError
from .models import packs
from .models.base import Detection, ModelPack, PackModels
from .types import Box, Face


def normalise(v: np.ndarray) -> np.ndarray:
    """L2-normalise rows (float32)."""
    v = np.asarray(v, dtype=np.float32)
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.maximum(n, 1e-12)


class FacePipeline:
    """Detect and embed every face of an image with one process's models, all through one model pack."""

    def __init__(self, settings: Settings, models: PackModels | None = None, pack: ModelPack | None = None) -> None:
        self.settings = settings
        self.pack = pack or packs.get(settings.model or packs.DEFAULT, settings.resolved_data())
        self.models = models or self.pack.build(settings)

    @property
    def spec(self):
        return self.models.spec

    def detect(self, pixels: np.ndarray, fallback: bool = False) -> list[Detection]:
        """Face boxes (and landmarks when the detector gives them) in the pixels of `pixels`, largest first.

        Big images are downscaled for detection. With `fallback`, an image where the pack's detector finds nothing
        is searched again with its fallback (dlib: the CNN detector; slower, finds rotated and low-contrast faces).
        """
        h, w = pixels.shape[:2]
        scale = 1.0
        det_img = pixels
        if max(h, w) > self.settings.detect_max_side:
            scale = self.settings.detect_max_side / max(h, w)
            det_img = np.asarray(
                Image.fromarray(pixels).resize((max(1, round(w * scale)), max(1, round(h * scale))),
                                               Image.Resampling.BILINEAR)
            )
        dets = self.models.find(det_img, fallback, self.settings.upsample)
        out = []
        for d in dets:
            d = d.to_original(scale)
            left, top = max(0.0, d.left), max(0.0, d.top)
            right, bottom = min(float(w), d.right), min(float(h), d.bottom)
            if min(right - left, bottom - top) < self.settings.min_face:
                continue
            out.append(Detection(left, top, right, bottom, d.score, d.landmarks))
        out.sort(key=lambda d: (d.right - d.left) * (d.bottom - d.top), reverse=True)
        return out

    def faces(self, pixels: np.ndarray, fallback: bool | None = None) -> list[Face]:
        """Every face in an RGB uint8 image, largest first, with quality and L2-normalised embedding.

        `fallback` (default: the cnn_fallback setting) looks again with the pack's fallback detector when its
        detector finds nothing.
        """
        dets = self.detect(pixels, self.settings.cnn_fallback if fallback is None else fallback)
        return self.faces_at(pixels, dets)

    def faces_at(self, pixels: np.ndarray, dets: list[Detection]) -> list[Face]:
        """Align, embed and assess the faces at the given detections (in `pixels`' coordinates)."""
        if not dets:
            return []
        chips, points = self.models.align(pixels, dets)
        emb = self.embed_chips(chips)
        faces = []
        for i, (d, pts, chip) in enumerate(zip(dets, points, chips)):
            box = Box(int(round(d.left)), int(round(d.top)), int(round(d.right)), int(round(d.bottom)))
            q = quality.assess(min(box.width, box.height), chip, d.score, pts, self.models.detector_kind)
            faces.append(Face(box=box, landmarks=tuple((float(x), float(y)) for x, y in pts), quality=q,
                              embedding=emb[i], index=i))
        return faces

    def embed_chips(self, chips: np.ndarray) -> np.ndarray:
        """Embeddings of aligned chips; with `flip`, the mean of each chip's and its mirror's descriptor."""
        if len(chips) == 0:
            return np.zeros((0, self.spec.dim), np.float32)
        if self.settings.flip:
            both = self.models.embed(np.concatenate([chips, chips[:, :, ::-1]]))
            raw = both[: len(chips)] + both[len(chips):]
        else:
            raw = self.models.embed(chips)
        return normalise(raw)

    def process_file(self, path: str) -> ImageResult:
        """Read, decode and analyse one file; ImageError (or another FaceIndexError) says why it failed."""
        data = images.read_bytes(path, self.settings.max_file_bytes)
        return self.process_bytes(data, path)

    def process_bytes(self, data: bytes, path: str = "<bytes>") -> ImageResult:
        sha = images.sha256_bytes(data)
        pixels = images.decode(data, self.settings.max_pixels)
        h, w = pixels.shape[:2]
        return ImageResult(path=path, sha256=sha, size=len(data), width=w, height=h, faces=self.faces(pixels))


@dataclass(frozen=True, slots=True)
class ImageResult:
    """What the pipeline found in one image file."""

    path: str
    sha256: str
    size: int
    width: int
    height: int
    faces: list[Face]


@dataclass(frozen=True, slots=True)
class FileFailure:
    path: str
    reason: str


# --- process pool -------------------------------------------------------------------------------------------
def _analyse(pipe: FacePipeline, path: str) -> ImageResult | FileFailure:
    """One file, in a worker or in-process: never raises for a bad file (the failure says why)."""
    return _guarded(path, lambda: pipe.process_file(path))


def analyse_bytes(pipe: FacePipeline, data: bytes, path: str) -> ImageResult | FileFailure:
    """One file's bytes (read and checked by the caller, e.g. a Ray driver): never raises for a bad file."""
    return _guarded(path, lambda: pipe.process_bytes(data, path))


def _guarded(path: str, analyse: Callable[[], ImageResult]) -> ImageResult | FileFailure:
    if os.environ.get("_FACEINDEX_TEST_SLOW_S"):
        time.sleep(float(os.environ["_FACEINDEX_TEST_SLOW_S"]))  # test hook: a slow machine, so a kill lands mid-run
    try:
        return analyse()
    except FaceIndexError as e:
        return FileFailure(path, str(e))
    except MemoryError:
        return FileFailure(path, "out of memory while decoding")
    except Exception as e:  # one bad file never stops a batch
        return FileFailure(path, f"unexpected error: {type(e).__name__}: {e}")


def analyse_files(paths: Iterable[str], settings: Settings, workers: int,
                  pipeline: FacePipeline | None = None) -> Iterator[ImageResult | FileFailure]:
    """Analyse files with `workers` processes (in-process when 1), yielding results as they complete.

    Workers are started by `faceindex.workers` as `python -m faceindex.workers`, never by re-running the caller's
    main module, so this works the same from a script without a `__main__` guard, stdin, `python -c`, a notebook
    or a server thread. A worker that dies (a native crash on one file) does not stop the batch: the file it had
    is retried once in a fresh worker and reported as failed if it kills that one too. If no worker can start, one
    warning says why and the files are analysed in this process.
    """
    paths = list(paths)
    if workers <= 1 or len(paths) <= 1:
        pipe = pipeline or FacePipeline(settings)
        for p in paths:
            yield _analyse(pipe, p)
        return
    from .workers import run_pool

    fallback: list[FacePipeline] = []

    def in_process(path: str) -> ImageResult | FileFailure:
        if not fallback:
            fallback.append(pipeline or FacePipeline(settings))
        return _analyse(fallback[0], path)

    yield from run_pool(paths, settings, workers, in_process)
