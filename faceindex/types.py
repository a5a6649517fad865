"""Public, immutable result types. Boxes are in pixels of the EXIF-rotated image."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, slots=True)
class Box:
    """Face box (x1, y1) inclusive top-left, (x2, y2) exclusive bottom-right, in image pixels."""

    x1: int
    y1: int
    x2: int
    y2: int

    @property
    def width(self) -> int:
        return self.x2 - self.x1

    @property
    def height(self) -> int:
        return self.y2 - self.y1

    @property
    def area(self) -> int:
        return max(0, self.width) * max(0, self.height)

    def iou(self, other: Box) -> float:
        ix = max(0, min(self.x2, other.x2) - max(self.x1, other.x1))
        iy = max(0, min(self.y2, other.y2) - max(self.y1, other.y1))
        inter = ix * iy
        union = self.area + other.area - inter
        return inter / union if union else 0.0

    def as_list(self) -> list[int]:
        return [self.x1, self.y1, self.x2, self.y2]


@dataclass(frozen=True, slots=True)
class Quality:
    """How usable a face is for recognition; `score` in [0, 1] combines the others."""

    size: int  # shorter side of the face box, in pixels of the original image
    sharpness: float  # variance of the Laplacian of the aligned grey chip
    detector_score: float
    frontal: float  # 1.0 = frontal, 0.0 = full profile (from the 5 landmarks)
    score: float

    def as_dict(self) -> dict[str, float]:
        return {
            "size": self.size,
            "sharpness": round(self.sharpness, 2),
            "detector_score": round(self.detector_score, 4),
            "frontal": round(self.frontal, 4),
            "score": round(self.score, 4),
        }


@dataclass(frozen=True, slots=True, eq=False)
class Face:
    """One detected face: where it is, how good it is and its L2-normalised embedding."""

    box: Box
    landmarks: tuple[tuple[float, float], ...]
    quality: Quality
    embedding: np.ndarray = field(repr=False)
    index: int = 0  # position in the image, largest face first


@dataclass(frozen=True, slots=True)
class Decision:
    """A calibrated reading of a similarity score."""

    similarity: float
    fmr: float  # estimated false-match rate of a score this high (LFW impostor pairs)
    label: str  # "strong candidate" | "possible candidate" | "no candidate"


@dataclass(frozen=True, slots=True)
class Match:
    """A candidate lead from the gallery for one probe face. Never an identification."""

    face_id: int
    similarity: float
    fmr: float
    label: str
    image_id: int
    path: str
    source: str
    box: Box
    person_id: int | None
    person_name: str | None
    rank: int
    expected_false: float  # FMR x gallery size: false candidates expected at this score or higher


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """Candidates for one face of a probe image."""

    probe: str
    face: Face
    matches: tuple[Match, ...]
    gallery_size: int
    expected_false_candidates: float  # at the "possible candidate" threshold: its FMR x gallery size


@dataclass(frozen=True, slots=True)
class Verification:
    """1:1 comparison of two faces."""

    a: str
    b: str
    face_a: Face
    face_b: Face
    similarity: float
    fmr: float
    label: str  # "same person (candidate)" or "different people"
    same: bool


@dataclass(frozen=True, slots=True)
class Person:
    """A group of faces the clustering believes to be one person."""

    id: int
    name: str | None
    face_count: int
    image_count: int
    sample_face_ids: tuple[int, ...] = ()
    # the weakest merge that formed the group: mean similarity between its two parts, and the share of
    # different-person pairs scoring that high (FMR). None for a single face. Review the highest FMR first.
    cohesion: float | None = None
    cohesion_fmr: float | None = None


@dataclass(frozen=True, slots=True)
class FileError:
    """A file that could not be indexed, and why."""

    path: str
    reason: str


@dataclass(slots=True)
class AddReport:
    """Summary of one `add` run."""

    source: str
    files_seen: int = 0
    images_indexed: int = 0
    unchanged: int = 0
    moved_or_copied: int = 0
    faces_found: int = 0
    images_without_faces: int = 0
    skipped_opted_out: int = 0
    errors: list[FileError] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.errors

    def as_dict(self) -> dict:
        return {
            "source": self.source,
            "files_seen": self.files_seen,
            "images_indexed": self.images_indexed,
            "unchanged": self.unchanged,
            "moved_or_copied": self.moved_or_copied,
            "faces_found": self.faces_found,
            "images_without_faces": self.images_without_faces,
            "skipped_opted_out": self.skipped_opted_out,
            "errors": [{"path": e.path, "reason": e.reason} for e in self.errors],
            "seconds": round(self.seconds, 3),
            "images_per_second": round(self.images_indexed / self.seconds, 2) if self.seconds else None,
        }
