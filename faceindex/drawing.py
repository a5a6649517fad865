"""Results as pictures, for notebooks: faces boxed on their photo, and each probe face beside its candidates.

Both functions return a `PIL.Image.Image`, which Jupyter and IPython display as they are (the image's
`_repr_png_`); elsewhere, `.save("out.png")` or `.show()`. Boxes are in pixels of the EXIF-rotated image, as
everywhere in faceindex, so photos are read the way the engine reads them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from . import images
from .calibration import NONE, POSSIBLE, STRONG
from .config import Settings
from .errors import FaceIndexError
from .types import Box, Face, Match, ProbeResult

ImageLike = str | os.PathLike | bytes | np.ndarray | Image.Image

COLOURS = {STRONG: (0, 170, 60), POSSIBLE: (240, 150, 0), NONE: (150, 150, 150)}
FACE_COLOUR = (255, 196, 0)  # faces that carry no label (detections)


def _pixels(image: ImageLike) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, np.ndarray):
        return Image.fromarray(np.ascontiguousarray(image[..., :3]).astype(np.uint8)).convert("RGB")
    s = Settings()
    return Image.fromarray(images.load(image, max_pixels=s.max_pixels, max_bytes=s.max_file_bytes).pixels)


def _box_of(item: Face | Match | ProbeResult | Box) -> Box:
    if isinstance(item, Box):
        return item
    if isinstance(item, ProbeResult):
        return item.face.box
    return item.box


def _default_label(item, n: int) -> str:
    if isinstance(item, Match):
        return f"#{item.rank} {item.similarity:.3f}"
    if isinstance(item, ProbeResult):
        return f"face {n}"
    if isinstance(item, Face):
        return str(item.index)
    return str(n)


def _colour(item) -> tuple[int, int, int]:
    if isinstance(item, Match):
        return COLOURS.get(item.label, FACE_COLOUR)
    if isinstance(item, ProbeResult) and item.matches:
        return COLOURS.get(item.matches[0].label, FACE_COLOUR)
    return FACE_COLOUR


def _font(px: int):
    try:
        return ImageFont.load_default(size=px)
    except TypeError:  # Pillow < 10.1: one bitmap size
        return ImageFont.load_default()


def _line_height(font) -> int:
    left, top, right, bottom = font.getbbox("Ag")
    return int(bottom - min(0, top))


def draw(image: ImageLike, items: Iterable[Face | Match | ProbeResult | Box] = (), *,
         labels: Sequence[str] | None = None, max_side: int | None = 1200) -> Image.Image:
    """`image` with a box and a label on each of `items` (faces from `FaceIndex.faces`, search results, matches
    in this image, or plain boxes); scaled down to `max_side` pixels (None: full size).

    Matches and search results are coloured by their label: green strong, orange possible, grey no candidate.
    """
    img = _pixels(image)
    items = list(items)
    if labels is not None and len(labels) != len(items):
        raise ValueError(f"{len(labels)} labels for {len(items)} items")
    scale = 1.0
    if max_side is not None and max(img.size) > max_side:
        scale = max_side / max(img.size)
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                         Image.Resampling.LANCZOS)
    pen = ImageDraw.Draw(img)
    width = max(2, round(max(img.size) / 400))
    font = _font(max(12, round(max(img.size) / 70)))
    for n, item in enumerate(items):
        b = _box_of(item)
        x1, y1, x2, y2 = (round(v * scale) for v in b.as_list())
        colour = _colour(item)
        pen.rectangle((x1, y1, x2, y2), outline=colour, width=width)
        text = labels[n] if labels is not None else _default_label(item, n)
        if text:
            tx, ty = x1, max(0, y1 - _line_height(font) - width)
            left, top, right, bottom = pen.textbbox((tx, ty), text, font=font)
            pen.rectangle((left - 1, top - 1, right + 1, bottom + 1), fill=colour)
            pen.text((tx, ty), text, fill=(0, 0, 0), font=font)
    return img


def _cell(img: Image.Image, box: Box, size: int, colour, caption: list[str], font) -> Image.Image:
    """A square crop around `box` (margin 30 %), the box drawn, and caption lines under it."""
    side = max(box.width, box.height) * 1.6
    cx, cy = (box.x1 + box.x2) / 2, (box.y1 + box.y2) / 2
    x1, y1 = cx - side / 2, cy - side / 2
    crop = img.crop((round(x1), round(y1), round(x1 + side), round(y1 + side))).resize((size, size),
                                                                                        Image.Resampling.LANCZOS)
    f = size / side
    pen = ImageDraw.Draw(crop)
    pen.rectangle(((box.x1 - x1) * f, (box.y1 - y1) * f, (box.x2 - x1) * f, (box.y2 - y1) * f), outline=colour,
                  width=max(2, size // 64))
    return _captioned(crop, colour, caption, font)


def _captioned(tile: Image.Image, colour, caption: list[str], font) -> Image.Image:
    line = _line_height(font) + 4
    cell = Image.new("RGB", (tile.width, tile.height + line * len(caption) + 4), (255, 255, 255))
    cell.paste(tile, (0, 0))
    pen = ImageDraw.Draw(cell)
    pen.rectangle((0, 0, cell.width - 1, tile.height - 1), outline=colour, width=3)
    for i, text in enumerate(caption):
        pen.text((3, tile.height + 2 + i * line), text, fill=(0, 0, 0), font=font)
    return cell


def draw_matches(probe: ImageLike, results: Sequence[ProbeResult], *, size: int = 160,
                 top: int | None = None) -> Image.Image:
    """A sheet with one row per probe face: the face cut from `probe`, then its candidates (rank, similarity,
    label, false-match rate), each cut from its own photo with the face boxed. Candidates are leads for a person
    to review, never identifications; a candidate whose photo is no longer readable is shown as a grey tile."""
    src = _pixels(probe)
    font = _font(max(10, size // 13))
    rows: list[list[Image.Image]] = []
    cache: dict[str, Image.Image | None] = {}
    for n, r in enumerate(results):
        row = [_cell(src, r.face.box, size, FACE_COLOUR, [f"probe face {n}", f"quality {r.face.quality.score:.2f}"],
                     font)]
        for m in r.matches[:top]:
            if m.path not in cache:
                try:
                    cache[m.path] = _pixels(m.path)
                except (FaceIndexError, OSError):
                    cache[m.path] = None
            colour = COLOURS.get(m.label, FACE_COLOUR)
            caption = [f"#{m.rank} {m.similarity:.3f}", m.label, "FMR " + (f"1 in {1 / m.fmr:,.0f}" if m.fmr > 0 else "0")]
            pic = cache[m.path]
            if pic is None:
                row.append(_captioned(Image.new("RGB", (size, size), (200, 200, 200)), colour,
                                      caption + ["(photo not readable)"], font))
            else:
                row.append(_cell(pic, m.box, size, colour, caption, font))
        rows.append(row)
    if not rows:
        return Image.new("RGB", (size, size), (255, 255, 255))
    cell_h = max(c.height for row in rows for c in row)
    pad = 6
    sheet = Image.new("RGB", (max(len(row) for row in rows) * (size + pad) + pad, len(rows) * (cell_h + pad) + pad),
                      (255, 255, 255))
    for i, row in enumerate(rows):
        for j, c in enumerate(row):
            sheet.paste(c, (pad + j * (size + pad), pad + i * (cell_h + pad)))
    return sheet
