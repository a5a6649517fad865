"""`faceindex demo`: a public-domain sample shipped in the package, and probes cut from it, in a data folder.

The sample is the 1927 Solvay conference photo (29 faces; see `faceindex/samples/README.md`). The demo needs no
test data and no network: it copies the photo into `<data>/photos/`, indexes it, and cuts its probes from the
indexed faces into `<data>/probes/` (outside `photos/`, so they are never indexed themselves).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image, ImageOps

from .errors import NoFaceError
from .types import Box

if TYPE_CHECKING:
    from .engine import FaceIndex

SAMPLE = "solvay_conference_1927.jpg"
PURPOSE, CASE = "testing", "demo"  # what the demo declares for its audited search and verify


def sample_bytes() -> bytes:
    """The shipped sample photo (JPEG bytes)."""
    return (resources.files("faceindex") / "samples" / SAMPLE).read_bytes()


def copy_sample(data: str | os.PathLike) -> Path:
    """Put the sample photo into `<data>/photos/` (kept as is when already there) and return its path."""
    photos = Path(data) / "photos"
    photos.mkdir(parents=True, exist_ok=True)
    target = photos / SAMPLE
    raw = sample_bytes()
    if not target.is_file() or target.read_bytes() != raw:  # rewriting an unchanged file would re-index it
        target.write_bytes(raw)
    return target


@dataclass(frozen=True)
class Probes:
    """Probe images cut from the indexed sample photo."""

    probe: Path  # face A, mirrored and enlarged 2x: a stand-in for another photo of that person
    same: Path  # face A again, not mirrored, at 80 %
    other: Path  # face B: someone else
    box: Box  # face A's box in the sample photo


def make_probes(fi: FaceIndex, photo: Path, folder: Path | None = None) -> Probes:
    """Cut the demo's probes from the two largest faces that `fi` holds for `photo`, into `folder`
    (default `<data>/probes`)."""
    target = os.path.abspath(photo)
    records = [r for r in fi.catalog.face_records([int(i) for i in fi.catalog.face_ids()]).values()
               if os.path.abspath(r.path) == target]
    if len(records) < 2:
        raise NoFaceError(f"the demo needs two faces in {photo}; the detector found {len(records)}")
    records.sort(key=lambda r: (-r.box.area, r.id))
    a, b = records[0].box, records[1].box
    with Image.open(photo) as im:
        img = ImageOps.exif_transpose(im).convert("RGB")
    folder = Path(fi.data) / "probes" if folder is None else Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = Probes(folder / "probe.jpg", folder / "same-face.jpg", folder / "other-person.jpg", a)
    crop = _crop(img, a, 0.35)  # more would take in a neighbour's face in this crowded photo
    ImageOps.mirror(crop).resize((crop.width * 2, crop.height * 2), Image.Resampling.LANCZOS).save(
        out.probe, quality=90)
    same = _crop(img, a, 0.3)
    same.resize((round(same.width * 0.8), round(same.height * 0.8)), Image.Resampling.LANCZOS).save(
        out.same, quality=90)
    _crop(img, b, 0.35).save(out.other, quality=90)
    return out


def _crop(img: Image.Image, box: Box, margin: float) -> Image.Image:
    """The box grown by `margin` of its size on every side, clipped to the image."""
    mx, my = round(box.width * margin), round(box.height * margin)
    return img.crop((max(0, box.x1 - mx), max(0, box.y1 - my), min(img.width, box.x2 + mx),
                     min(img.height, box.y2 + my)))
