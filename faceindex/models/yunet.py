"""YuNet face detector (OpenCV Zoo, 2023mar, MIT) run by onnxruntime, decoded and NMS-ed in numpy.

The shipped ONNX file declares a fixed 1x3x640x640 input, but every reshape in it uses -1 and its upsampling uses
scale factors, so the graph is loaded with symbolic height and width (in memory; the file is untouched) and run on
the image's own size padded to a multiple of 32. Input: BGR, raw 0-255 floats, NCHW (as OpenCV's FaceDetectorYN
feeds it). Outputs per stride 8/16/32: cls and obj (already sigmoid), bbox (centre offset and log size in strides)
and kps (5 landmark offsets in strides), decoded the way FaceDetectorYN decodes them. Checked once against OpenCV
5.0's FaceDetectorYN (not a dependency) on the 12 dlib_faces photos and 30 LFW images, one pass at threshold 0.8:
the same faces, boxes, landmarks and scores within 2e-4.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import ImageError, ModelError
from .base import Detection

DEFAULT_PATH = Path(__file__).parent / "files" / "yunet" / "face_detection_yunet_2023mar.onnx"
STRIDES = (8, 16, 32)
ALIGN = 32  # input sides are padded to a multiple of the largest stride
# Measured here on 100 LFW faces shrunk onto a grey canvas, at the default threshold 0.8: 92% of the faces whose
# YuNet box is 14 px are found at the image's own scale, 98% at 17 px, all from 22 px (at threshold 0.6: all from
# 14 px). Big faces are missed: LFW faces blown up to 525 px were found in 25 of 30 images, at 700 px in none
# (tight crops), hence the coarse pass.
RELIABLE_FACE = 20
COARSE_SHORT = 400  # the coarse pass runs on a copy whose shorter side is this (faces up to ~400 px: all found)
COARSE_PIXELS = 240_000  # ... and never bigger than this (a panorama's coarse copy gets thinner instead)
# The coarse pass only answers for faces that are big in the fine copy (the fine pass finds them reliably up to
# ~450 px, so the two overlap): at low resolution YuNet takes more things for faces (the orange dog of dogs.jpg
# scores 0.77 at 1x but 0.84-0.86 at 0.4-0.6x), and medium faces are the fine pass's job.
COARSE_MIN_FACE = 200
MAX_UPSCALE = 2.0
RETRY_PIXELS = 1_000_000  # the retry at twice the scale runs only on copies up to this size (small images)
# Default score threshold, chosen on ../shared/data/detection: the 43 labelled dlib_faces faces score 0.86-0.95,
# the 29 Solvay faces 0.89-0.94 (its next best candidate 0.61), the dog faces of dogs.jpg 0.77 at most.
SCORE_THRESHOLD = 0.8


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices of the boxes (x1, y1, x2, y2) kept by greedy non-maximum suppression, best score first.

    Vectorised per kept box: each round keeps the best remaining box and drops every box overlapping it by more
    than `iou_threshold`.
    """
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = boxes.T
    area = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = np.maximum(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0)
        h = np.maximum(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0)
        inter = w * h
        iou = inter / np.maximum(area[i] + area[rest] - inter, 1e-9)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


class YuNetDetector:
    """YuNet on onnxruntime: `detect(rgb)` -> faces in original pixels with 5 ArcFace-order landmarks."""

    def __init__(self, onnx_path: str | Path | None = None, threads: int = 1, score_threshold: float = SCORE_THRESHOLD,
                 nms_threshold: float = 0.3, max_pixels: int = 4_000_000, min_face: int = RELIABLE_FACE,
                 retry_upscale: bool = True, top_k: int = 5000) -> None:
        if not 0.0 <= score_threshold <= 1.0 or not 0.0 < nms_threshold <= 1.0:
            raise ModelError("YuNet thresholds must lie in [0, 1]")
        if max_pixels < 64 * 64 or min_face < 1:
            raise ModelError("YuNet max_pixels must be >= 4096 and min_face >= 1")
        self.onnx_path = Path(onnx_path) if onnx_path is not None else DEFAULT_PATH
        self.threads = threads
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.max_pixels = max_pixels
        self.min_face = min_face
        self.retry_upscale = retry_upscale
        self.top_k = top_k
        self._lock = threading.Lock()
        self._session = None

    def _get_session(self):
        with self._lock:
            if self._session is None:
                self._session = self._load()
            return self._session

    def _load(self):
        try:
            import onnx
            import onnxruntime as ort
        except ImportError as e:  # pragma: no cover - both are hard dependencies
            raise ModelError(f"onnxruntime is not importable ({e})") from e
        try:
            model = onnx.load(str(self.onnx_path))
        except Exception as e:
            raise ModelError(f"cannot read the YuNet model {self.onnx_path}: {e}") from e
        names = [o.name for o in model.graph.output]
        if len(model.graph.input) != 1 or sorted(names) != sorted(f"{k}_{s}" for k in ("cls", "obj", "bbox", "kps")
                                                                   for s in STRIDES):
            raise ModelError(f"{self.onnx_path} is not a YuNet detector (outputs {names})")
        # Free the spatial sizes (the graph holds nothing that depends on them but the declared shapes)
        dims = model.graph.input[0].type.tensor_type.shape.dim
        dims[2].dim_param, dims[3].dim_param = "height", "width"
        for o in model.graph.output:
            o.type.tensor_type.shape.dim[1].dim_param = "cells"
        del model.graph.value_info[:]
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        try:
            sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        except Exception as e:
            raise ModelError(f"onnxruntime cannot load the YuNet model {self.onnx_path}: {e}") from e
        self._input = sess.get_inputs()[0].name
        return sess

    def raw(self, image: np.ndarray, threshold: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One pass at the image's own scale: (boxes (N,4) x1y1x2y2, scores (N,), landmarks (N,5,2)) before NMS."""
        sess = self._get_session()
        thr = self.score_threshold if threshold is None else threshold
        h, w = image.shape[:2]
        ph, pw = -(-h // ALIGN) * ALIGN, -(-w // ALIGN) * ALIGN
        blob = np.zeros((1, 3, ph, pw), np.float32)
        blob[0, :, :h, :w] = image[:, :, ::-1].transpose(2, 0, 1)  # RGB -> BGR planes, raw 0-255
        out = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {self._input: blob})))
        boxes, scores, marks = [], [], []
        for s in STRIDES:
            cols = pw // s
            score = np.sqrt(np.clip(out[f"cls_{s}"][0, :, 0], 0, 1) * np.clip(out[f"obj_{s}"][0, :, 0], 0, 1))
            idx = np.nonzero(score >= thr)[0]
            if idx.size == 0:
                continue
            grid = np.stack([idx % cols, idx // cols], axis=1).astype(np.float32)
            bb = out[f"bbox_{s}"][0, idx]
            centre = (grid + bb[:, :2]) * s
            size = np.exp(bb[:, 2:4]) * s
            boxes.append(np.concatenate([centre - size / 2, centre + size / 2], axis=1))
            marks.append((out[f"kps_{s}"][0, idx].reshape(-1, 5, 2) + grid[:, None, :]) * s)
            scores.append(score[idx])
        if not boxes:
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32)
        return np.concatenate(boxes), np.concatenate(scores), np.concatenate(marks)

    def scales(self, height: int, width: int) -> list[float]:
        """The scales of the passes `detect` makes on an image of this size (the retry excepted).

        Fine pass: the image's own scale, upscaled (at most 2x) when `min_face` is below the size YuNet finds
        reliably, and downscaled so that it never exceeds `max_pixels` (the cost bound). Coarse pass, only when the
        fine copy's shorter side exceeds 1.2 x 400 px: a copy with a shorter side of 400 px and at most 240,000
        pixels, for faces too big for the fine pass (close-ups); it keeps only faces of 200 px and more at the fine
        scale.
        """
        px = float(height) * float(width)
        fine = min(max(1.0, RELIABLE_FACE / self.min_face), MAX_UPSCALE, (self.max_pixels / px) ** 0.5)
        out = [fine]
        if min(height, width) * fine > 1.2 * COARSE_SHORT:
            out.append(min(COARSE_SHORT / min(height, width), (COARSE_PIXELS / px) ** 0.5))
        return out

    def detect(self, image: np.ndarray, upsample: int | None = None) -> list[Detection]:
        """Faces in an RGB uint8 image (H, W, 3), largest first, in the image's own pixels.

        Each Detection carries `landmarks`, (5, 2) float32 in ArcFace order (right eye, left eye, nose tip, right
        and left mouth corner, as the viewer sees them: the eye with the smaller x first), and `score` in [0, 1]
        (sqrt(cls * obj)). Boxes are clipped to the image; landmarks are not. Cost: at most `max_pixels` pixels
        for the fine pass + at most 240,000 for the coarse pass; when both find nothing and the image is small
        (twice its scale fits in 1 MP), one retry at twice the scale. `upsample` (dlib's detector protocol) asks for
        that many extra doublings of the fine scale, still within `max_pixels`.
        """
        image = _as_rgb(image)
        h, w = image.shape[:2]
        passes = self.scales(h, w)
        if upsample:
            passes[0] = min(passes[0] * 2.0 ** upsample, (self.max_pixels / (h * w)) ** 0.5)
        fine = passes[0]
        found = self._passes(image, [(fine, 0.0)] + [(c, COARSE_MIN_FACE / fine) for c in passes[1:]])
        retry = fine * 2.0
        if (not found[1].size and self.retry_upscale and retry <= MAX_UPSCALE
                and retry ** 2 * h * w <= min(self.max_pixels, RETRY_PIXELS)):
            found = self._passes(image, [(retry, 0.0)])
        boxes, scores, marks = found
        boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0.0, w)
        boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0.0, h)
        dets = [Detection(float(b[0]), float(b[1]), float(b[2]), float(b[3]), float(s), m.astype(np.float32))
                for b, s, m in zip(boxes, scores, marks) if b[2] > b[0] and b[3] > b[1]]
        dets.sort(key=lambda d: (d.right - d.left) * (d.bottom - d.top), reverse=True)
        return dets

    def _passes(self, image: np.ndarray, passes: list[tuple[float, float]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Candidates of every (scale, smallest face side in `image` pixels) pass mapped back to `image`'s pixels,
        then one NMS over all of them."""
        h, w = image.shape[:2]
        boxes, scores, marks = [], [], []
        for s, smallest in passes:
            dw, dh = max(1, round(w * s)), max(1, round(h * s))
            copy = image if (dw, dh) == (w, h) else np.asarray(
                Image.fromarray(image).resize((dw, dh), Image.Resampling.BILINEAR))
            b, sc, m = self.raw(copy)
            # exact per-axis ratios: the copy's sides were rounded
            fx, fy = w / dw, h / dh
            if smallest > 0:
                big = np.minimum((b[:, 2] - b[:, 0]) * fx, (b[:, 3] - b[:, 1]) * fy) >= smallest
                b, sc, m = b[big], sc[big], m[big]
            boxes.append(b * np.array([fx, fy, fx, fy], np.float32))
            marks.append(m * np.array([fx, fy], np.float32))
            scores.append(sc)
        b, sc, m = np.concatenate(boxes), np.concatenate(scores), np.concatenate(marks)
        if sc.size > self.top_k:
            top = np.argsort(-sc, kind="stable")[: self.top_k]
            b, sc, m = b[top], sc[top], m[top]
        keep = nms(b, sc, self.nms_threshold)
        return b[keep], sc[keep], m[keep]


def _as_rgb(image: np.ndarray) -> np.ndarray:
    """The image as a C-contiguous (H, W, 3) uint8 array; grey (H, W) and RGBA are accepted, the rest refused."""
    a = np.asarray(image)
    if a.dtype != np.uint8:
        raise ImageError(f"YuNet needs uint8 pixels, got {a.dtype}")
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    elif a.ndim == 3 and a.shape[2] == 4:
        a = a[:, :, :3]
    if a.ndim != 3 or a.shape[2] != 3 or a.shape[0] < 1 or a.shape[1] < 1:
        raise ImageError(f"YuNet needs an RGB image (H, W, 3), got shape {a.shape}")
    return np.ascontiguousarray(a)
