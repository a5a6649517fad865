"""5-point face alignment onto the ArcFace template: a least-squares similarity transform and the warped chip.

Landmarks come in the ArcFace order: right eye, left eye, nose tip, right mouth corner, left mouth corner, from the
viewer's side (the eye with the smaller x first), in pixel coordinates whose integer values are pixel centres (as
YuNet and OpenCV give them). The template is ArcFace's 112x112 one, scaled by size/112.
"""

from __future__ import annotations

import numpy as np

# ArcFace's 5-point template for 112x112 chips (insightface), pixel centres at integers
ARCFACE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655],
                        [70.7299, 92.2041]], np.float64)


def arcface_template(size: int = 112) -> np.ndarray:
    """The (5, 2) ArcFace template for a size x size chip."""
    return ARCFACE_112 * (size / 112.0)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The (2, 3) similarity (rotation, uniform scale, translation; no reflection) that maps `src` points onto
    `dst` points with the least squared error (Umeyama 1991)."""
    src = np.asarray(src, np.float64).reshape(-1, 2)
    dst = np.asarray(dst, np.float64).reshape(-1, 2)
    if src.shape != dst.shape or len(src) < 2:
        raise ValueError(f"need two matching sets of at least 2 points, got {src.shape} and {dst.shape}")
    if not (np.isfinite(src).all() and np.isfinite(dst).all()):
        raise ValueError("landmarks must be finite")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    var_s = (s * s).sum() / len(src)
    if var_s <= 0:
        raise ValueError("landmarks are all at one point")
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    e = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:  # the best orthogonal map would be a reflection: take a rotation
        e[1, 1] = -1
    rot = u @ e @ vt
    scale = (sig * np.diag(e)).sum() / var_s
    m = np.empty((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def alignment_matrix(landmarks: np.ndarray, size: int = 128) -> np.ndarray:
    """The (2, 3) similarity that maps image pixels to chip pixels for these (5, 2) landmarks."""
    lm = np.asarray(landmarks, np.float64)
    if lm.shape != (5, 2):
        raise ValueError(f"expected (5, 2) landmarks, got {lm.shape}")
    return similarity_transform(lm, arcface_template(size))


def invert_affine(m: np.ndarray) -> np.ndarray:
    """The inverse of a (2, 3) affine map."""
    a = np.linalg.inv(m[:, :2])
    return np.hstack([a, -a @ m[:, 2:]])


def warp_chip(image: np.ndarray, landmarks: np.ndarray, size: int = 128) -> np.ndarray:
    """The (size, size, 3) uint8 chip of the face with these (5, 2) landmarks in an (H, W, 3) uint8 RGB image:
    bilinear, black outside the image (as OpenCV's warpAffine with a constant border)."""
    from PIL import Image

    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {img.shape} {img.dtype}")
    inv = invert_affine(alignment_matrix(landmarks, size))  # chip pixel -> image pixel
    # Only the part of the image under the chip is handed to PIL (a copy of a whole photo per face would cost more
    # than the warp): the chip's corners, mapped back, with a pixel of margin for the bilinear neighbours.
    corners = inv[:, :2] @ np.array([[-1, -1], [size, -1], [-1, size], [size, size]], np.float64).T + inv[:, 2:]
    h, w = img.shape[:2]
    x0 = int(np.clip(np.floor(corners[0].min()) - 1, 0, w))
    y0 = int(np.clip(np.floor(corners[1].min()) - 1, 0, h))
    x1 = int(np.clip(np.ceil(corners[0].max()) + 2, x0, w))
    y1 = int(np.clip(np.ceil(corners[1].max()) + 2, y0, h))
    if x1 <= x0 or y1 <= y0:
        return np.zeros((size, size, 3), np.uint8)
    crop = Image.fromarray(np.ascontiguousarray(img[y0:y1, x0:x1]))
    # PIL samples output pixel (i, j) at its centre (i + 0.5, j + 0.5) and reads the input with pixel centres at
    # k + 0.5: shift the centre-at-integer map by half a pixel on both sides, and by the crop's origin.
    a = inv[:, :2]
    t = inv[:, 2] - np.array([x0, y0]) + 0.5 - a @ np.array([0.5, 0.5])
    coeffs = (a[0, 0], a[0, 1], t[0], a[1, 0], a[1, 1], t[1])
    chip = crop.transform((size, size), Image.Transform.AFFINE, coeffs, resample=Image.Resampling.BILINEAR)
    return np.asarray(chip)
