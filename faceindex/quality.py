"""Face quality: size, sharpness, detector confidence and frontalness folded into one score in [0, 1]."""

from __future__ import annotations

import numpy as np

from .types import Quality


def sharpness(chip: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian of the grey chip (blurry faces score low)."""
    g = chip.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32) if chip.ndim == 3 else chip
    lap = -4.0 * g[1:-1, 1:-1] + g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:]
    return float(lap.var())


def frontalness(points: np.ndarray) -> float:
    """1.0 for a frontal face, towards 0 as the head turns, from dlib's 5 landmarks.

    Points 0-1 and 2-3 are the corners of the two eyes, point 4 the base of the nose: in a frontal face the nose
    projects onto the middle of the eye axis; in profile it moves towards one eye.
    """
    e1 = points[0:2].mean(axis=0)
    e2 = points[2:4].mean(axis=0)
    axis = e2 - e1
    d = float(np.hypot(*axis))
    if d < 1e-6:
        return 0.0
    offset = float(np.dot(points[4] - (e1 + e2) / 2, axis / d)) / d
    return float(np.clip(1.0 - 2.0 * abs(offset), 0.0, 1.0))


def assess(size: int, chip: np.ndarray, detector_score: float, points: np.ndarray, detector: str) -> Quality:
    """Combine the measurements; each factor maps to [0, 1] and the score is their geometric mean."""
    sharp = sharpness(chip)
    frontal = frontalness(points)
    s_size = float(np.clip((size - 16) / (64 - 16), 0.0, 1.0))
    s_sharp = float(np.clip(np.log10(max(sharp, 1.0)) / 2.0, 0.0, 1.0))  # 100 and above -> 1
    # HOG margins are mostly in [-0.5, 2.5]; MMOD confidences in [0, 1.5]
    lo, hi = (-0.5, 1.0) if detector == "hog" else (0.0, 1.0)
    s_det = float(np.clip((detector_score - lo) / (hi - lo), 0.05, 1.0))
    s_front = max(frontal, 0.05)
    factors = np.array([max(s_size, 1e-3), max(s_sharp, 1e-3), s_det, s_front])
    weights = np.array([1.0, 1.0, 0.5, 1.0])
    score = float(np.exp((weights * np.log(factors)).sum() / weights.sum()))
    return Quality(size=int(size), sharpness=sharp, detector_score=float(detector_score), frontal=frontal,
                   score=score)
