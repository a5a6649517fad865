"""faceindex.draw and faceindex.draw_matches: faces and candidates as pictures (for notebooks)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from PIL import Image

import faceindex
from faceindex import demo, drawing


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    """The demo photo indexed in-process, its faces, and a search with the demo's probe."""
    from faceindex import FaceIndex

    data = tmp_path_factory.mktemp("draw")
    photo = demo.copy_sample(data)
    with FaceIndex.open(data) as fi:
        fi.add([photo], "demo", workers=1)
        faces = fi.faces(photo)
        probes = demo.make_probes(fi, photo)
        results = fi.search(probes.probe, 4, purpose=demo.PURPOSE, case=demo.CASE)
    return photo, faces, probes, results


def _is_grey(px) -> bool:
    return int(max(px)) - int(min(px)) <= 2


def test_draw_boxes_every_face_on_its_photo(indexed):
    photo, faces, _, _ = indexed
    img = faceindex.draw(photo, faces, max_side=None)
    assert isinstance(img, Image.Image) and img.size == Image.open(photo).size
    a = np.asarray(img)
    for f in faces:
        b = f.box
        edge = a[(b.y1 + b.y2) // 2, b.x1]  # the middle of the box's left side
        assert tuple(edge) == drawing.FACE_COLOUR, (f.index, edge)
        assert _is_grey(a[(b.y1 + b.y2) // 2, (b.x1 + b.x2) // 2])  # the face itself is untouched (grey photo)
    coloured = np.abs(a.astype(int) - a.mean(axis=2, keepdims=True)).max(axis=2) > 8
    assert coloured.sum() > len(faces) * 100  # the boxes and labels are there
    assert _is_grey(a[5, 5])  # the rest of the photo is not
    assert np.asarray(faceindex.draw(photo)).std() > 10  # no items: the photo as it is


def test_draw_scales_and_colours_matches_by_label(indexed):
    photo, _, probes, results = indexed
    matches = results[0].matches
    img = faceindex.draw(photo, matches, max_side=600)
    assert max(img.size) == 600
    scale = 600 / max(Image.open(photo).size)
    best = matches[0]
    assert best.label == "strong candidate" and best.box == probes.box  # the probe's own face comes first
    y = round((best.box.y1 + best.box.y2) / 2 * scale)
    x = round(best.box.x1 * scale)
    near = np.asarray(img)[y - 1:y + 2, x - 1:x + 2].reshape(-1, 3)
    assert any(tuple(p) == drawing.COLOURS["strong candidate"] for p in near)
    with pytest.raises(ValueError, match="labels"):
        faceindex.draw(photo, matches, labels=["one"])


def test_draw_matches_sheet(indexed, tmp_path):
    _, _, probes, results = indexed
    size, pad = 100, 6
    sheet = faceindex.draw_matches(probes.probe, results, size=size)
    assert sheet.width == (1 + len(results[0].matches)) * (size + pad) + pad
    a = np.asarray(sheet)
    assert tuple(a[pad + 1, pad + 1]) == drawing.FACE_COLOUR  # the probe's tile frame
    assert tuple(a[pad + 1, pad + size + pad + 1]) == drawing.COLOURS["strong candidate"]  # rank 1's frame
    assert sheet._repr_png_()[:4] == b"\x89PNG"  # what Jupyter calls to show it

    # a candidate whose photo has gone is a grey tile, not an error
    gone = dataclasses.replace(results[0], matches=(dataclasses.replace(results[0].matches[0],
                                                                        path=str(tmp_path / "gone.jpg")),))
    sheet = faceindex.draw_matches(probes.probe, [gone], size=size)
    assert tuple(np.asarray(sheet)[pad + size // 2, pad + size + pad + size // 2]) == (200, 200, 200)
    assert faceindex.draw_matches(probes.probe, []).size == (160, 160)
