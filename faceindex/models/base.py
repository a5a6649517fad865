"""Protocols every face model implements, and the spec an index records about its model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """Identity of an embedding model; an index refuses embeddings from any other spec."""

    name: str
    version: str
    dim: int
    calibration: str  # name of the calibration table (faceindex/calibration/<name>.json)

    @property
    def key(self) -> str:
        return f"{self.name}@{self.version}/{self.dim}"


@dataclass(frozen=True, slots=True)
class Detection:
    """A raw detection in the pixels of the image passed to the detector."""

    left: float
    top: float
    right: float
    bottom: float
    score: float
    # (5, 2) landmarks in the same pixels when the detector gives them (YuNet: right eye, left eye, nose tip,
    # right and left mouth corner, from the viewer's side), else None (dlib's landmarker finds them later)
    landmarks: np.ndarray | None = None


class Detector(Protocol):
    def detect(self, image: np.ndarray, upsample: int) -> list[Detection]:
        """Faces in an RGB uint8 image (H, W, 3)."""
        ...


class Landmarker(Protocol):
    def landmarks(self, image: np.ndarray, box: Detection) -> np.ndarray:
        """(5, 2) float landmarks in image pixels for the face in `box`."""
        ...


class Embedder(Protocol):
    spec: ModelSpec

    def embed(self, chips: np.ndarray) -> np.ndarray:
        """(N, 150, 150, 3) uint8 aligned chips -> (N, dim) float32 raw (not normalised) descriptors."""
        ...
