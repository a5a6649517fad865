"""The model-pack interface: everything that turns pixels into comparable embeddings, and the protocols behind it.

A *model pack* bundles a detector, a source of 5 landmarks, an alignment, an embedder with its input spec, the
embedding size, a calibration table, the files (with sha256) and their licence. The engine, the catalog, the vector
index and calibration only see the pack (its `key`, `dim`, `calibration`) and the runtime it builds
(`PackModels`), never a particular library.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from ..config import Settings


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """Identity of an embedding model; an index refuses embeddings from any other spec."""

    name: str
    version: str
    dim: int
    calibration: str  # name of the calibration table (faceindex/calibration_tables/<name>.json)

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

    def to_original(self, scale: float, dx: float = 0.0, dy: float = 0.0) -> Detection:
        """Mapped back from an image resized by `scale` (then offset by a crop at (dx, dy)): p / scale + d."""
        lm = None if self.landmarks is None else (
            np.asarray(self.landmarks, np.float32) / scale + np.array([dx, dy], np.float32))
        return Detection(self.left / scale + dx, self.top / scale + dy, self.right / scale + dx,
                         self.bottom / scale + dy, self.score, lm)


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
        """(N, S, S, 3) uint8 aligned RGB chips -> (N, dim) float32 raw (not normalised) descriptors."""
        ...


# --- the pack ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class InputSpec:
    """What the embedder's graph expects: chip size, channel order and normalisation (x - mean) / std."""

    size: int
    channels: Literal["RGB", "BGR"] = "RGB"
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def prepare(self, chips: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) uint8 RGB chips -> float32 tensor in this spec's order, layout and normalisation."""
        x = np.asarray(chips, np.float32)
        if self.channels == "BGR":
            x = x[..., ::-1]
        x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        if self.layout == "NCHW":
            x = x.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(x)


# ArcFace's 112 x 112 five-point template (right eye, left eye, nose tip, right and left mouth corner, viewer's side)
ARCFACE_112 = ((38.2946, 51.6963), (73.5318, 51.5014), (56.0252, 71.7366), (41.5493, 92.3655), (70.7299, 92.2041))


@dataclass(frozen=True, slots=True)
class Alignment:
    """How a face becomes a chip: dlib's own chip extraction, or a similarity transform onto a 5-point template."""

    method: Literal["dlib", "similarity"]
    chip_size: int
    template: tuple[tuple[float, float], ...] | None = None  # in chip pixels (already scaled to chip_size)
    padding: float = 0.0  # dlib chips only


def scaled_template(template: tuple[tuple[float, float], ...], from_size: int,
                    to_size: int) -> tuple[tuple[float, float], ...]:
    """A template given at `from_size` pixels, scaled to a `to_size` chip."""
    f = to_size / from_size
    return tuple((round(x * f, 4), round(y * f, 4)) for x, y in template)


@dataclass(frozen=True, slots=True)
class PackFile:
    """One file a pack needs; `path` is absolute (resolved by the registry), `sha256` what it must hash to."""

    role: str  # detector | landmarker | embedder | licence | ...
    path: Path
    sha256: str

    def actual_sha256(self) -> str:
        h = hashlib.sha256()
        with open(self.path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()


class PackModels(Protocol):
    """The runtime a pack builds for one process: lazily loaded, thread-safe first use."""

    spec: ModelSpec
    detector_kind: str  # what quality.assess needs to read detector scores and landmarks ("hog", "cnn", "yunet")

    def find(self, image: np.ndarray, fallback: bool, upsample: int | None) -> list[Detection]:
        """Faces in `image` (RGB uint8), in its pixels; `fallback` looks harder when nothing is found."""
        ...

    def align(self, image: np.ndarray, dets: list[Detection]) -> tuple[np.ndarray, list[np.ndarray]]:
        """(N, S, S, 3) uint8 aligned chips and each face's (5, 2) landmarks in image pixels."""
        ...

    def embed(self, chips: np.ndarray) -> np.ndarray:
        """Aligned chips -> (N, dim) float32 raw descriptors."""
        ...


@dataclass(frozen=True)
class ModelPack:
    """Everything that turns pixels into comparable embeddings, with its identity, files and licence."""

    name: str  # what users type: --model NAME
    version: str
    dim: int
    detector: str  # description of the detector, e.g. "YuNet 2023mar (ONNX)"
    landmarks: str  # where the 5 landmarks come from
    alignment: Alignment
    input: InputSpec
    calibration: str  # calibration table name
    licence: str
    factory: Callable[[ModelPack, Settings], PackModels] = field(repr=False, compare=False)
    files: tuple[PackFile, ...] = ()
    embedding_name: str = ""  # the model name in the key (kept as "dlib_resnet_v1" so old indexes open unchanged)
    description: str = ""
    origin: str = ""
    builtin: bool = True
    root: Path | None = None  # folder of a user pack
    calibration_path: Path | None = None  # a user pack's own table (else the shipped table `calibration`)

    @property
    def spec(self) -> ModelSpec:
        return ModelSpec(self.embedding_name or self.name, self.version, self.dim, self.calibration)

    @property
    def key(self) -> str:
        """Recorded in the catalog; an index holds embeddings of exactly one key."""
        return self.spec.key

    def build(self, settings: Settings) -> PackModels:
        """The runtime for one process (models load lazily on first use)."""
        return self.factory(self, settings)

    def verify(self) -> list[str]:
        """One line per file that is missing or whose sha256 differs; empty when the pack is intact."""
        problems = []
        for f in self.files:
            if not f.path.is_file():
                problems.append(f"{self.name}: {f.role} file missing: {f.path}")
                continue
            actual = f.actual_sha256()
            if actual != f.sha256:
                problems.append(f"{self.name}: {f.role} file {f.path.name} has sha256 {actual[:16]}..., "
                                f"expected {f.sha256[:16]}...")
        return problems
