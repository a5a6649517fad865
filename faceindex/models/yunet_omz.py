"""The `yunet-omz95` pack's runtime: YuNet faces and landmarks, ArcFace-template chips, Intel's 256-d embedder.

When YuNet finds nothing and a fallback is asked for (probes), dlib's CNN detector looks (as for the dlib pack);
YuNet then runs again on an enlarged crop around each CNN box to get the 5 landmarks, and when even that fails the
landmarks are placed from the box with the template (a chip is still made, at lower quality).
"""

from __future__ import annotations

import threading

import numpy as np
from PIL import Image

from .base import Detection, ModelPack

_CROP_MARGIN = 0.6  # crop this much of the box's size around it before looking again with YuNet
_CROP_SIDE = 320  # and resize the crop so its longer side is this many pixels


class YunetOmzModels:
    """Lazily loaded YuNet detector and OMZ embedder for one process (thread-safe first use)."""

    detector_kind = "yunet"

    def __init__(self, pack: ModelPack, backend: str = "auto", threads: int = 1) -> None:
        self.pack = pack
        self.spec = pack.spec
        self.chip_size = pack.alignment.chip_size
        self.template = np.asarray(pack.alignment.template, np.float32)
        self.threads = threads
        self.backend = backend
        self._lock = threading.Lock()
        self._detector = None
        self._embedder = None
        self._dlib = None

    @property
    def detector(self):
        with self._lock:
            if self._detector is None:
                from .yunet import YuNetDetector

                self._detector = YuNetDetector(threads=self.threads)
            return self._detector

    @property
    def embedder(self):
        with self._lock:
            if self._embedder is None:
                from .omz import OmzEmbedder

                self._embedder = OmzEmbedder(threads=self.threads)
            return self._embedder

    @property
    def dlib(self):
        """dlib's runtime, for its CNN detector as a fallback only."""
        with self._lock:
            if self._dlib is None:
                from .dlib import DlibModels

                self._dlib = DlibModels("hog", self.backend, self.threads)
            return self._dlib

    # --- models.base.PackModels ------------------------------------------------------------------------------------
    def find(self, image: np.ndarray, fallback: bool, upsample: int | None) -> list[Detection]:
        """YuNet's faces (with landmarks); with `fallback`, CNN boxes re-examined by YuNet when it finds none."""
        dets = list(self.detector.detect(image, upsample))
        if dets or not fallback:
            return dets
        return [self._landmarked(image, d) for d in self.dlib.cnn_fallback(image)]

    def _landmarked(self, image: np.ndarray, box: Detection) -> Detection:
        """A CNN box with 5 landmarks: YuNet on an enlarged crop around it, else the template placed on the box."""
        h, w = image.shape[:2]
        bw, bh = box.right - box.left, box.bottom - box.top
        x0, y0 = max(0, int(box.left - _CROP_MARGIN * bw)), max(0, int(box.top - _CROP_MARGIN * bh))
        x1, y1 = min(w, int(box.right + _CROP_MARGIN * bw) + 1), min(h, int(box.bottom + _CROP_MARGIN * bh) + 1)
        crop = image[y0:y1, x0:x1]
        if crop.size:
            scale = _CROP_SIDE / max(crop.shape[:2])
            small = np.asarray(Image.fromarray(crop).resize(
                (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale))),
                Image.Resampling.BILINEAR))
            found = [d.to_original(scale, x0, y0) for d in self.detector.detect(small)]
            if found:
                from ..types import Box

                target = Box(int(box.left), int(box.top), int(box.right), int(box.bottom))
                best = max(found, key=lambda d: target.iou(Box(int(d.left), int(d.top), int(d.right), int(d.bottom))))
                if target.iou(Box(int(best.left), int(best.top), int(best.right), int(best.bottom))) > 0.3:
                    return Detection(box.left, box.top, box.right, box.bottom, box.score, best.landmarks)
        return Detection(box.left, box.top, box.right, box.bottom, box.score, self._landmarked_box(box))

    def align(self, image: np.ndarray, dets: list[Detection]) -> tuple[np.ndarray, list[np.ndarray]]:
        """Chips warped by the similarity transform of each face's 5 landmarks onto the ArcFace template (a box
        without landmarks gets them from YuNet on a crop around it, else from the template placed on the box)."""
        from .align import warp_chip

        points = [np.asarray((d if d.landmarks is not None else self._landmarked(image, d)).landmarks,
                             np.float32).reshape(5, 2) for d in dets]
        if not dets:
            return np.zeros((0, self.chip_size, self.chip_size, 3), np.uint8), []
        chips = np.stack([warp_chip(image, p, self.chip_size) for p in points])
        return chips, points

    def _landmarked_box(self, d: Detection) -> np.ndarray:
        """The template's points spread over the box as over a chip (no detector gave landmarks)."""
        bw, bh = d.right - d.left, d.bottom - d.top
        return (self.template / self.chip_size * np.array([bw, bh], np.float32)
                + np.array([d.left, d.top], np.float32)).astype(np.float32)

    def embed(self, chips: np.ndarray) -> np.ndarray:
        if len(chips) == 0:
            return np.zeros((0, self.spec.dim), np.float32)
        return np.asarray(self.embedder.embed(chips), np.float32)


def build_yunet_omz(pack: ModelPack, settings) -> YunetOmzModels:
    """The yunet-omz95 pack's factory (models.packs)."""
    return YunetOmzModels(pack, settings.backend)
