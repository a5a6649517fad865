"""5-point alignment: the least-squares similarity transform and the warped chip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceindex.models.align import (
    ARCFACE_112,
    alignment_matrix,
    arcface_template,
    invert_affine,
    similarity_transform,
    warp_chip,
)

LFW = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "lfw" / "images"
# Landmarks of Colin_Powell_0001 (deep-funneled LFW, 250x250), from dlib's 68-point model, ArcFace order
POWELL_LANDMARKS = np.array([[107.5, 115.17], [142.33, 114.17], [132.0, 129.0], [112.0, 159.0], [143.0, 158.0]])


def similarity(scale: float, angle_deg: float, tx: float, ty: float) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    return np.array([[scale * np.cos(a), -scale * np.sin(a), tx], [scale * np.sin(a), scale * np.cos(a), ty]])


def apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ m[:, :2].T + m[:, 2]


def bilinear_reference(img: np.ndarray, inv: np.ndarray, size: int) -> np.ndarray:
    """Plain numpy bilinear sampling, pixel centres at integers, zero outside (OpenCV's warpAffine convention)."""
    j, i = np.mgrid[0:size, 0:size]
    xs = inv[0, 0] * i + inv[0, 1] * j + inv[0, 2]
    ys = inv[1, 0] * i + inv[1, 1] * j + inv[1, 2]
    x0, y0 = np.floor(xs).astype(int), np.floor(ys).astype(int)
    dx, dy = (xs - x0)[..., None], (ys - y0)[..., None]
    h, w = img.shape[:2]

    def px(y, x):
        ok = ((x >= 0) & (x < w) & (y >= 0) & (y < h))[..., None]
        return np.where(ok, img[np.clip(y, 0, h - 1), np.clip(x, 0, w - 1)].astype(np.float64), 0.0)

    return (px(y0, x0) * (1 - dx) * (1 - dy) + px(y0, x0 + 1) * dx * (1 - dy) + px(y0 + 1, x0) * (1 - dx) * dy
            + px(y0 + 1, x0 + 1) * dx * dy)


@pytest.mark.parametrize("scale, angle, tx, ty", [(1.0, 0.0, 0.0, 0.0), (2.7, 33.0, -40.5, 12.25),
                                                  (0.31, -170.0, 300.0, 5.0)])
def test_a_known_similarity_is_recovered_exactly(scale, angle, tx, ty):
    m = similarity(scale, angle, tx, ty)
    src = ARCFACE_112 + np.array([13.0, -7.0])
    got = similarity_transform(src, apply(m, src))
    assert np.allclose(got, m, atol=1e-9)


def test_least_squares_and_no_reflection():
    rng = np.random.default_rng(1)
    dst = arcface_template(128)
    src = apply(similarity(1.9, 12.0, 40.0, 60.0), dst) + rng.normal(0, 2.0, dst.shape)
    m = similarity_transform(src, dst)
    err = ((apply(m, src) - dst) ** 2).sum()
    for _ in range(200):  # no nearby similarity fits better
        a, b, c, d = rng.normal(0, 1e-3, 4)
        p = m.copy()
        p[:, :2] += np.array([[a, -b], [b, a]])
        p[:, 2] += (c, d)
        assert ((apply(p, src) - dst) ** 2).sum() >= err - 1e-9
    mirrored = src * np.array([-1.0, 1.0])  # a mirror image of the face: still a rotation, never a reflection
    assert np.linalg.det(similarity_transform(mirrored, dst)[:, :2]) > 0


def test_template_and_bad_input():
    assert np.allclose(arcface_template(128)[0], [38.2946 * 128 / 112, 51.6963 * 128 / 112])
    assert np.allclose(apply(alignment_matrix(arcface_template(128), 128), arcface_template(128)),
                       arcface_template(128))
    with pytest.raises(ValueError):
        alignment_matrix(np.zeros((4, 2)))
    with pytest.raises(ValueError):
        alignment_matrix(np.zeros((5, 2)))  # all at one point
    with pytest.raises(ValueError):
        warp_chip(np.zeros((10, 10), np.uint8), POWELL_LANDMARKS)


@pytest.fixture(scope="module")
def powell() -> np.ndarray:
    path = LFW / "Colin_Powell" / "Colin_Powell_0001.jpg"
    if not path.is_file():
        pytest.skip(f"LFW images not found at {LFW} (../shared/data)")
    return np.asarray(Image.open(path).convert("RGB"))


def test_chip_is_the_bilinear_warp(powell):
    chip = warp_chip(powell, POWELL_LANDMARKS, 128)
    assert chip.shape == (128, 128, 3) and chip.dtype == np.uint8
    ref = bilinear_reference(powell, invert_affine(alignment_matrix(POWELL_LANDMARKS, 128)), 128)
    assert np.abs(chip - ref).max() <= 1.0  # PIL truncates where the reference keeps the fraction


def test_chip_of_a_rotated_and_scaled_image_is_the_same_chip(powell):
    chip = warp_chip(powell, POWELL_LANDMARKS, 128).astype(np.float64)
    # the photo turned by 25 degrees and enlarged 1.6x onto a bigger canvas, with the landmarks moved along
    m = similarity(1.6, 25.0, 150.0, -20.0)
    inv = invert_affine(m)
    big = np.asarray(Image.fromarray(powell).transform(
        (520, 520), Image.Transform.AFFINE,
        tuple((inv + np.hstack([np.zeros((2, 2)), (0.5 - inv[:, :2] @ [0.5, 0.5])[:, None]])).reshape(-1)),
        resample=Image.Resampling.BICUBIC))
    moved = apply(m, POWELL_LANDMARKS)
    again = warp_chip(big, moved, 128).astype(np.float64)
    diff = np.abs(chip - again)[4:-4, 4:-4]  # the border rows may see the canvas's black edge
    print(f"\nchip vs chip of the rotated photo: mean |diff| {diff.mean():.2f}, 99th pct {np.percentile(diff, 99):.1f}")
    assert diff.mean() < 2.5 and np.percentile(diff, 99) < 20


def test_faces_at_the_border_are_padded_black(powell):
    shifted = POWELL_LANDMARKS - np.array([110.0, 0.0])  # the face half out of the photo, to the left
    chip = warp_chip(powell, shifted, 128)
    assert chip[:, :20].max() == 0 and chip[:, 80:].mean() > 30
    assert warp_chip(powell, POWELL_LANDMARKS + 5000.0, 64).shape == (64, 64, 3)  # nowhere near: all black
    assert warp_chip(powell, POWELL_LANDMARKS + 5000.0, 64).max() == 0
