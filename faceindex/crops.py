"""Face crops and source images with the face outlined, read from the files still on disk."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw

from . import search
from .errors import ImageError, NotFoundError
from .types import Box

if TYPE_CHECKING:
    from .catalog import FaceRecord
    from .engine import FaceIndex


def face_crop(fi: FaceIndex, face_id: int, size: int = 160, margin: float = 0.3, *, purpose: str | None = None,
              case: str | None = None, audit: bool = True) -> bytes:
    """A JPEG crop of a stored face, read from its source file. Audited ("face.crop" with the purpose and case),
    unless `audit` is False for a caller whose own record names the face (a subject access report's thumbnails)."""
    rec = _servable(fi, face_id)
    pixels = _read_source(fi, face_id, rec)
    data = crop_jpeg(pixels, rec.box, size, margin)
    if audit:
        fi._record("face.crop", purpose, case, {"face_ids": [face_id], "size": size})
    return data


def face_in_image(fi: FaceIndex, face_id: int, max_side: int = 1600, *, purpose: str | None = None,
                  case: str | None = None) -> bytes:
    """The source image of a face, downscaled to `max_side`, with the face outlined (JPEG). Audited."""
    rec = _servable(fi, face_id)
    pixels = _read_source(fi, face_id, rec)
    fi._record("face.image", purpose, case, {"face_ids": [face_id], "image_id": rec.image_id})
    img = Image.fromarray(pixels)
    scale = min(1.0, max_side / max(img.size))
    if scale < 1:
        img = img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.LANCZOS)
    b = [round(v * scale) for v in rec.box.as_list()]
    ImageDraw.Draw(img).rectangle(b, outline=(255, 196, 0), width=max(2, round(3 * max(img.size) / 800)))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=88)
    return buf.getvalue()


def _read_source(fi: FaceIndex, face_id: int, rec: FaceRecord) -> np.ndarray:
    """The pixels of the face's source file, only if it still holds the content that was indexed: a file swapped
    since (for a link to a file outside the ingest roots, say) is never served."""
    try:
        loaded = search.load(fi, rec.path)
    except ImageError as e:
        raise NotFoundError(f"the source image of face {face_id} is not readable any more") from e
    if loaded.sha256 != fi.catalog.image_sha256(rec.image_id):
        raise NotFoundError(f"the source image of face {face_id} has changed since it was indexed")
    return loaded.pixels


def _servable(fi: FaceIndex, face_id: int) -> FaceRecord:
    """The face's record; NotFoundError, as for a face that does not exist, when it matches an opt-out."""
    from .privacy import opted_out

    rec = fi.catalog.face_record(face_id)
    if opted_out(fi, [face_id]):
        raise NotFoundError(f"no face {face_id}")
    return rec


def crop_jpeg(pixels: np.ndarray, box: Box, size: int = 160, margin: float = 0.3) -> bytes:
    """A square JPEG around `box`, with a margin, scaled to `size` pixels."""
    h, w = pixels.shape[:2]
    side = max(box.width, box.height) * (1 + 2 * margin)
    cx, cy = (box.x1 + box.x2) / 2, (box.y1 + box.y2) / 2
    x1, y1 = max(0, int(cx - side / 2)), max(0, int(cy - side / 2))
    x2, y2 = min(w, int(cx + side / 2)), min(h, int(cy + side / 2))
    img = Image.fromarray(pixels[y1:y2, x1:x2]).resize((size, size), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()
