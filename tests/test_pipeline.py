"""Detection, alignment, quality and embedding on real photos."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFilter

from faceindex import images
from faceindex.config import Settings
from faceindex.pipeline import FacePipeline
from faceindex.types import Box

from .conftest import DETECTION, annotations, lfw, needs_detection, needs_lfw


@pytest.fixture(scope="module")
def pipe() -> FacePipeline:
    return FacePipeline(Settings())


def _load(path) -> np.ndarray:
    return images.load(path, max_pixels=10**8, max_bytes=10**9).pixels


@needs_detection
def test_labelled_faces_are_found(pipe):
    """Recall of the hand-labelled boxes in dlib's example photos (IoU >= 0.3), and no face among the dogs."""
    found = total = 0
    for name, ann in annotations().items():
        boxes = [Box(x, y, x + w, y + h) for x, y, w, h in ann["boxes_xywh"]]
        faces = pipe.faces(_load(DETECTION / "dlib_faces" / name))
        total += len(boxes)
        found += sum(any(b.iou(f.box) >= 0.3 for f in faces) for b in boxes)
    assert total == 43
    assert found / total >= 0.9, f"found {found} of {total} labelled faces"
    assert pipe.faces(_load(DETECTION / "dlib_faces" / "dogs.jpg")) == []


@needs_detection
def test_group_photo_all_faces():
    faces = FacePipeline(Settings()).faces(_load(DETECTION / "solvay_conference_1927.jpg"))
    assert len(faces) >= 27  # 29 people; two are partly hidden
    sims = np.stack([f.embedding for f in faces]) @ np.stack([f.embedding for f in faces]).T
    np.fill_diagonal(sims, 0)
    assert sims.max() < 0.99  # all different people: no two near-identical embeddings


@needs_lfw
def test_embeddings_normalised_and_discriminative(pipe):
    a1, a2 = pipe.faces(_load(lfw("Tony_Blair", 1)))[0], pipe.faces(_load(lfw("Tony_Blair", 2)))[0]
    b = pipe.faces(_load(lfw("Serena_Williams", 1)))[0]
    for f in (a1, a2, b):
        assert f.embedding.shape == (pipe.spec.dim,) and f.embedding.dtype == np.float32
        assert abs(np.linalg.norm(f.embedding) - 1) < 1e-5
        assert len(f.landmarks) == 5
    assert float(a1.embedding @ a2.embedding) > float(a1.embedding @ b.embedding) + 0.03


@needs_lfw
def test_large_image_is_downscaled_for_detection_with_boxes_in_original_pixels():
    face = _load(lfw("Colin_Powell", 1))
    canvas = np.full((3000, 4000, 3), 128, np.uint8)
    big = np.asarray(Image.fromarray(face).resize((1000, 1000), Image.Resampling.BICUBIC))
    canvas[1500:2500, 2500:3500] = big
    direct = FacePipeline(Settings()).faces(big)[0].box
    faces = FacePipeline(Settings(detect_max_side=1000)).faces(canvas)
    assert len(faces) == 1
    box = faces[0].box
    expected = Box(direct.x1 + 2500, direct.y1 + 1500, direct.x2 + 2500, direct.y2 + 1500)
    assert box.iou(expected) > 0.7, (box, expected)


@needs_lfw
def test_quality_drops_for_blur_and_small_faces(pipe):
    img = Image.open(lfw("Tony_Blair", 3)).convert("RGB")
    sharp = pipe.faces(np.asarray(img))[0].quality
    blurred = pipe.faces(np.asarray(img.filter(ImageFilter.GaussianBlur(3))))
    small = pipe.faces(np.asarray(img.resize((110, 110))))
    assert sharp.score > 0.6
    assert blurred and blurred[0].quality.sharpness < sharp.sharpness / 2
    assert blurred[0].quality.score < sharp.score
    assert small and small[0].quality.size < sharp.size and small[0].quality.score < sharp.score


def test_no_face_in_synthetic_image(pipe):
    assert pipe.faces(np.full((200, 300, 3), 200, np.uint8)) == []
