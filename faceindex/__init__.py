"""faceindex: accountable face search over image collections you have the right to search."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import (
    AccessDenied,
    CatalogError,
    FaceIndexError,
    ImageError,
    ModelError,
    NoFaceError,
    NotFoundError,
    PolicyError,
)
from .types import AddReport, Box, Face, Match, Person, ProbeResult, Quality, Verification

if TYPE_CHECKING:
    from .drawing import draw, draw_matches
    from .engine import FaceIndex

__version__ = "0.1.0"

__all__ = [
    "AccessDenied", "AddReport", "Box", "CatalogError", "Face", "FaceIndex", "FaceIndexError", "ImageError",
    "Match", "ModelError", "NoFaceError", "NotFoundError", "Person", "PolicyError", "ProbeResult", "Quality",
    "Verification", "draw", "draw_matches", "open",
]


def __getattr__(name: str):
    # FaceIndex pulls in numpy, faiss and dlib; import it only when asked for.
    if name == "FaceIndex":
        from .engine import FaceIndex

        return FaceIndex
    if name in ("draw", "draw_matches"):  # Pillow drawing for notebooks; imported when first used
        from . import drawing

        return getattr(drawing, name)
    raise AttributeError(name)


def open(data: str = "./faceindex-data", **overrides) -> FaceIndex:  # noqa: A001 - mirrors FaceIndex.open
    """Open (or create) a face index in a data folder."""
    from .engine import FaceIndex

    return FaceIndex.open(data, **overrides)
