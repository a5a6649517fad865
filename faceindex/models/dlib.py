"""The embedded default model: dlib's HOG / CNN detectors, 5-point landmarks and ResNet embedder.

Weights come from the `face_recognition_models` package; nothing is downloaded. Everything loads lazily, once,
behind a lock, inside a `DlibModels` object that the pipeline owns.
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path

import numpy as np

from ..errors import ModelError
from .base import Detection, ModelSpec

RESNET_SPEC = ModelSpec(name="dlib_resnet_v1", version="1", dim=128, calibration="dlib_resnet_v1")
CHIP_SIZE = 150
CHIP_PADDING = 0.25
SMALL_IMAGE_SIDE = 1200  # images up to this size are upsampled once so that ~40 px faces are found
FALLBACK_PIXELS = 6_000_000  # upsampling as a fallback only below this many pixels
CNN_FALLBACK_PIXELS = 1_200_000  # the CNN fallback runs on a copy at most this large (bounded cost per image)


def weights_dir() -> Path:
    """Folder of the weight files installed by `face_recognition_models` (found without importing it)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("package face_recognition_models is not installed (pip install face_recognition_models)")
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def weights_path(name: str) -> Path:
    path = weights_dir() / name
    if not path.is_file():
        raise ModelError(f"model weights missing: {path}")
    return path


def _dlib():
    try:
        import dlib
    except ImportError as e:  # pragma: no cover - dlib-bin is a hard dependency
        raise ModelError(f"dlib is not importable ({e}); pip install dlib-bin") from e
    return dlib


class HogDetector:
    """dlib's frontal-face HOG + linear SVM detector (fast, frontal faces >= ~40 px at upsample 1)."""

    def __init__(self) -> None:
        self._det = _dlib().get_frontal_face_detector()

    def detect(self, image: np.ndarray, upsample: int) -> list[Detection]:
        rects, scores, _ = self._det.run(image, upsample, 0.0)
        return [Detection(r.left(), r.top(), r.right() + 1, r.bottom() + 1, float(s)) for r, s in zip(rects, scores)]


class DlibCnnDetector:
    """dlib's MMOD CNN detector run by dlib itself (reference; slow on CPU)."""

    def __init__(self) -> None:
        self._det = _dlib().cnn_face_detection_model_v1(str(weights_path("mmod_human_face_detector.dat")))

    def detect(self, image: np.ndarray, upsample: int) -> list[Detection]:
        out = []
        for d in self._det(image, upsample):
            r = d.rect
            out.append(Detection(r.left(), r.top(), r.right() + 1, r.bottom() + 1, float(d.confidence)))
        return out


class DlibLandmarker:
    """dlib's 5-point shape predictor (eye corners and the base of the nose)."""

    def __init__(self) -> None:
        dlib = _dlib()
        self._dlib = dlib
        self._sp = dlib.shape_predictor(str(weights_path("shape_predictor_5_face_landmarks.dat")))

    def shape(self, image: np.ndarray, det: Detection):
        rect = self._dlib.rectangle(
            int(round(det.left)), int(round(det.top)), int(round(det.right)) - 1, int(round(det.bottom)) - 1
        )
        return self._sp(image, rect)

    def chips(self, image: np.ndarray, shapes: list) -> np.ndarray:
        """Aligned (N, 150, 150, 3) uint8 chips, exactly as dlib's face recognition example builds them."""
        if not shapes:
            return np.zeros((0, CHIP_SIZE, CHIP_SIZE, 3), np.uint8)
        dets = self._dlib.full_object_detections()
        for s in shapes:
            dets.append(s)
        return np.stack(self._dlib.get_face_chips(image, dets, size=CHIP_SIZE, padding=CHIP_PADDING))

    @staticmethod
    def points(shape) -> np.ndarray:
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)


class DlibEmbedder:
    """dlib's ResNet-34-like metric network run by dlib (single thread, no BLAS in dlib-bin)."""

    spec = RESNET_SPEC

    def __init__(self) -> None:
        self._net = _dlib().face_recognition_model_v1(str(weights_path("dlib_face_recognition_resnet_model_v1.dat")))

    def embed(self, chips: np.ndarray) -> np.ndarray:
        if len(chips) == 0:
            return np.zeros((0, self.spec.dim), np.float32)
        out = self._net.compute_face_descriptor([np.ascontiguousarray(c) for c in chips])
        return np.asarray([np.asarray(v) for v in out], dtype=np.float32)


class DlibModels:
    """The dlib pack's runtime: lazily loaded detector, landmarker and embedder (thread-safe first use)."""

    def __init__(self, detector: str = "hog", backend: str = "auto", threads: int = 1) -> None:
        if detector not in ("hog", "cnn"):
            raise ModelError(f"unknown detector {detector!r} (hog or cnn)")
        if backend not in ("auto", "onnx", "dlib"):
            raise ModelError(f"unknown backend {backend!r} (auto, onnx or dlib)")
        self.detector_name = detector
        self.backend_name = backend
        self.threads = threads
        self._lock = threading.Lock()
        self._detector = None
        self._cnn = None
        self._landmarker: DlibLandmarker | None = None
        self._embedder = None
        self.spec = RESNET_SPEC
        self.detector_kind = detector

    # --- the pack runtime (models.base.PackModels) ----------------------------------------------------------------
    def find(self, image: np.ndarray, fallback: bool, upsample: int | None) -> list[Detection]:
        """HOG (or CNN) faces with adaptive upsampling; with `fallback`, the CNN detector when HOG finds nothing."""
        if upsample is not None:
            tries = [upsample]
        else:
            dh, dw = image.shape[:2]
            first = 1 if max(dh, dw) <= SMALL_IMAGE_SIDE else 0
            tries = [first]
            if first == 1:
                tries.append(0)  # HOG's score at one scale can miss a face the other finds
            if first < 2 and dh * dw * 4 ** (first + 1) <= FALLBACK_PIXELS:
                tries.append(first + 1)
        detector = self.detector
        dets: list[Detection] = []
        for up in tries:
            dets = detector.detect(image, up)
            if dets:
                break
        if not dets and fallback and self.detector_name == "hog":
            dets = self.cnn_fallback(image)
        return dets

    def cnn_fallback(self, img: np.ndarray) -> list[Detection]:
        """The CNN detector on a copy of at most CNN_FALLBACK_PIXELS, boxes mapped back to `img`'s pixels."""
        from PIL import Image

        h, w = img.shape[:2]
        scale = min(1.0, (CNN_FALLBACK_PIXELS / (h * w)) ** 0.5)
        small = img if scale == 1.0 else np.asarray(
            Image.fromarray(img).resize((max(1, round(w * scale)), max(1, round(h * scale))),
                                        Image.Resampling.BILINEAR))
        up = 1 if small.shape[0] * small.shape[1] <= CNN_FALLBACK_PIXELS // 4 else 0
        return [d.to_original(scale) for d in self.cnn_detector.detect(small, up)]

    def align(self, image: np.ndarray, dets: list[Detection]) -> tuple[np.ndarray, list[np.ndarray]]:
        """dlib's 5-point shapes and its own 150 px chips (padding 0.25), as dlib's example builds them."""
        lm = self.landmarker
        shapes = [lm.shape(image, d) for d in dets]
        return lm.chips(image, shapes), [lm.points(s) for s in shapes]

    def embed(self, chips: np.ndarray) -> np.ndarray:
        return self.embedder.embed(chips)

    @property
    def detector(self):
        with self._lock:
            if self._detector is None:
                self._detector = self._make_detector()
            return self._detector

    @property
    def cnn_detector(self):
        """The CNN detector, also used as a fallback when HOG finds no face in a probe."""
        if self.detector_name == "cnn":
            return self.detector
        with self._lock:
            if self._cnn is None:
                self._cnn = self._make_cnn()
            return self._cnn

    @property
    def landmarker(self) -> DlibLandmarker:
        with self._lock:
            if self._landmarker is None:
                self._landmarker = DlibLandmarker()
            return self._landmarker

    @property
    def embedder(self):
        with self._lock:
            if self._embedder is None:
                self._embedder = self._make_embedder()
            return self._embedder

    def _onnx_module(self):
        try:
            from . import dlib_onnx
        except ImportError:
            return None
        return dlib_onnx

    def _make_detector(self):
        return HogDetector() if self.detector_name == "hog" else self._make_cnn()

    def _make_cnn(self):
        onnx_mod = self._onnx_module() if self.backend_name != "dlib" else None
        if onnx_mod is not None and hasattr(onnx_mod, "OnnxCnnDetector"):
            try:
                return onnx_mod.OnnxCnnDetector(threads=self.threads)
            except Exception as e:
                if self.backend_name == "onnx":
                    raise ModelError(f"ONNX CNN detector failed to load: {e}") from e
        return DlibCnnDetector()

    def _make_embedder(self):
        if self.backend_name == "dlib":
            return DlibEmbedder()
        onnx_mod = self._onnx_module()
        if onnx_mod is not None and hasattr(onnx_mod, "OnnxEmbedder"):
            try:
                return onnx_mod.OnnxEmbedder(threads=self.threads)
            except Exception as e:
                if self.backend_name == "onnx":
                    raise ModelError(f"ONNX embedder failed to load: {e}") from e
        elif self.backend_name == "onnx":
            raise ModelError("the ONNX backend is not available")
        return DlibEmbedder()


def build_dlib(pack, settings) -> DlibModels:
    """The dlib pack's factory (models.packs): detector and runtime from the settings."""
    return DlibModels(settings.detector, settings.backend)
