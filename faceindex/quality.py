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


# |nose-tip offset| x this = |dlib nose-base offset| for the same face: a least-squares fit through the origin over
# 387 faces (300 LFW DevTrain images + the dlib_faces photos) found by both HOG and YuNet gave 0.646 (correlation of
# the absolute offsets 0.80; the 99th percentiles match exactly). The tip sticks out further than the base, so it
# moves further as the head turns; this keeps one frontalness scale across detectors.
NOSE_TIP_TO_BASE = 0.65


def frontalness_arcface(points: np.ndarray) -> float:
    """1.0 for a frontal face, towards 0 as the head turns, from 5 landmarks in ArcFace order (YuNet's).

    Points: right eye, left eye, nose tip, right and left mouth corner. In a frontal face the nose tip projects onto
    the middle of the eyes and mouth corners along the eye axis; as the head turns it moves towards one side.
    """
    axis = points[1] - points[0]
    d = float(np.hypot(*axis))
    if d < 1e-6:
        return 0.0
    centre = points[[0, 1, 3, 4]].mean(axis=0)
    offset = float(np.dot(points[2] - centre, axis / d)) / d * NOSE_TIP_TO_BASE
    return float(np.clip(1.0 - 2.0 * abs(offset), 0.0, 1.0))


# Detector score -> [0, 1] factor: (lo, hi) per detector. HOG margins are mostly in [-0.5, 2.5]; MMOD confidences
# in [0, 1.5]; YuNet's sqrt(cls * obj) is in [0, 1], clear faces score 0.86-0.95 on the detection photos and the
# default threshold is 0.8.
SCORE_RANGES = {"hog": (-0.5, 1.0), "cnn": (0.0, 1.0), "yunet": (0.5, 0.9)}


def assess(size: int, chip: np.ndarray, detector_score: float, points: np.ndarray, detector: str) -> Quality:
    """Combine the measurements; each factor maps to [0, 1] and the score is their geometric mean.

    `detector` names what produced the box and the points: "hog" or "cnn" (dlib's 5 points: eye corners and nose
    base) or "yunet" (YuNet's 5 points in ArcFace order, score in [0, 1]).
    """
    sharp = sharpness(chip)
    frontal = frontalness_arcface(points) if detector == "yunet" else frontalness(points)
    s_size = float(np.clip((size - 16) / (64 - 16), 0.0, 1.0))
    s_sharp = float(np.clip(np.log10(max(sharp, 1.0)) / 2.0, 0.0, 1.0))  # 100 and above -> 1
    lo, hi = SCORE_RANGES.get(detector, (0.0, 1.0))
    s_det = float(np.clip((detector_score - lo) / (hi - lo), 0.05, 1.0))
    s_front = max(frontal, 0.05)
    factors = np.array([max(s_size, 1e-3), max(s_sharp, 1e-3), s_det, s_front])
    weights = np.array([1.0, 1.0, 0.5, 1.0])
    score = float(np.exp((weights * np.log(factors)).sum() / weights.sum()))
    return Quality(size=int(size), sharpness=sharp, detector_score=float(detector_score), frontal=frontal,
                   score=score)
