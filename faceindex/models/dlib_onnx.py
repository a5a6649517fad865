"""dlib's face networks run by ONNX Runtime, with dlib's results and no C++ build step.

The weights are read from dlib's own .dat files (`dlib_format`), turned into ONNX graphs with the `onnx` helper
functions, serialised once into a cache folder keyed by the sha256 of the weights file, and run by ONNX Runtime.

- `OnnxEmbedder`: the ResNet metric network; (N, 150, 150, 3) uint8 chips -> (N, 128) raw descriptors, the same
  numbers (to float rounding) as `dlib.face_recognition_model_v1(path).compute_face_descriptor(chip)`.
- `OnnxCnnDetector`: the MMOD CNN face detector; dlib's tiled image pyramid and detection decoding in numpy
  (dlib_pyramid.py), the conv network in ONNX; the same rectangles and confidences as
  `dlib.cnn_face_detection_model_v1(path)(img, n)`.

Nothing happens at import time; models load lazily on first use, once, behind a lock.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import ModelError
from .base import Detection
from .dlib import RESNET_SPEC, weights_dir  # the dlib backend's spec: same network, same numbers
from .dlib_format import DlibNetwork, Layer, read_mmod_detector, read_resnet_embedder
from .dlib_pyramid import (
    conv_out,
    input_fits,
    mmod_decode,
    output_to_input_map,
    pyramid_up2,
    rect_down2,
    tiled_pyramid_tensor,
)
from .dlib_pyramid import resize_float as resize_float  # re-exported: the tests import the resizes from here
from .dlib_pyramid import resize_rgb as resize_rgb
from .onnx_util import OPSET, LazyOnnx, default_cache_dir, file_sha256  # noqa: F401  (re-exported, public before)
from .onnx_util import Graph as _Graph

RESNET_FILE = "dlib_face_recognition_resnet_model_v1.dat"
MMOD_FILE = "mmod_human_face_detector.dat"
# Bump when the generated graphs change, so that stale cached models are not reused.
BUILDER_VERSION = 1
EMBED_BATCH = 16


def default_weights_path(name: str) -> Path:
    """A weights file of the `face_recognition_models` package (located without importing it: no pkg_resources)."""
    return weights_dir() / name


# ----------------------------------------------------------------------------------------------------------------
# ONNX graph construction


def _add_layers(g: _Graph, x: str, shape: tuple[int, int, int] | None, layers: list[Layer]) -> tuple[str, tuple | None]:
    """Append dlib layers to the graph. `shape` (C, H, W) is tracked when static (needed by size-mismatched adds)."""
    tags: dict[int, tuple[str, tuple | None]] = {}
    for lay in layers:
        p = lay.params
        if lay.kind == "con":
            w, b = p["weight"], p["bias"]
            (sy, sx), (py, px) = p["stride"], p["padding"]
            x = g.op("Conv", [x, g.const(w, "W"), g.const(b, "B")], "conv", kernel_shape=list(w.shape[2:]),
                     strides=[sy, sx], pads=[py, px, py, px])
            if shape is not None:
                shape = (w.shape[0], conv_out(shape[1], w.shape[2], sy, py), conv_out(shape[2], w.shape[3], sx, px))
        elif lay.kind == "affine":
            k = p["gamma"].size
            x = g.op("Mul", [x, g.const(p["gamma"].reshape(1, k, 1, 1), "gamma")], "affine_mul")
            x = g.op("Add", [x, g.const(p["beta"].reshape(1, k, 1, 1), "beta")], "affine_add")
        elif lay.kind == "relu":
            x = g.op("Relu", [x])
        elif lay.kind in ("max_pool", "avg_pool"):
            (kh, kw), (sy, sx), (py, px) = p["kernel"], p["stride"], p["padding"]
            if kh == 0 and kw == 0:  # dlib's *_pool_everything: the whole input
                x = g.op("GlobalAveragePool" if lay.kind == "avg_pool" else "GlobalMaxPool", [x])
                shape = (shape[0], 1, 1) if shape is not None else None
            else:
                if kh == 0 or kw == 0:
                    raise ModelError("pooling over a whole single axis is not supported")
                attrs = {"kernel_shape": [kh, kw], "strides": [sy, sx], "pads": [py, px, py, px]}
                if lay.kind == "avg_pool":
                    attrs["count_include_pad"] = 0  # as cuDNN's AVERAGE_COUNT_EXCLUDE_PADDING that dlib uses
                x = g.op("MaxPool" if lay.kind == "max_pool" else "AveragePool", [x], lay.kind, **attrs)
                if shape is not None:
                    shape = (shape[0], conv_out(shape[1], kh, sy, py), conv_out(shape[2], kw, sx, px))
        elif lay.kind == "tag":
            tags[p["tag"]] = (x, shape)
        elif lay.kind == "skip":
            x, shape = tags[p["tag"]]
        elif lay.kind == "add_prev":
            y, yshape = tags[p["tag"]]
            if shape != yshape:
                # dlib's tt::add zero-pads the smaller tensor at the end of each axis (output = max of the dims)
                if shape is None or yshape is None:
                    raise ModelError("add_prev of tensors of unknown, possibly different, shapes")
                out = tuple(max(a, b) for a, b in zip(shape, yshape))
                x = _pad_to(g, x, shape, out)
                y = _pad_to(g, y, yshape, out)
                shape = out
            x = g.op("Add", [x, y], "add_prev")
        elif lay.kind == "fc":
            x = g.op("Flatten", [x], axis=1)
            x = g.op("MatMul", [x, g.const(p["weight"], "fcW")], "fc")
            if p["bias"] is not None:
                x = g.op("Add", [x, g.const(p["bias"], "fcB")], "fc_bias")
            shape = (p["weight"].shape[1], 1, 1)
        else:
            raise ModelError(f"unsupported dlib layer {lay.kind}")
    return x, shape


def _pad_to(g: _Graph, x: str, shape: tuple, out: tuple) -> str:
    if shape == out:
        return x
    pads = np.array([0, 0, 0, 0, 0, out[0] - shape[0], out[1] - shape[1], out[2] - shape[2]], np.int64)
    return g.op("Pad", [x, g.const(pads, "pads")], "zero_pad", mode="constant")


def build_embedder_model(net: DlibNetwork):
    """ONNX model: chips (N, H, W, 3) uint8 RGB -> descriptors (N, 128) float32, as dlib's loss_metric network."""
    from onnx import TensorProto, helper

    if net.input != "input_rgb_image_sized":
        raise ModelError(f"not an embedder network (input layer {net.input})")
    nr, nc = net.input_options["size"]
    g = _Graph()
    x = g.op("Cast", ["chips"], "to_float", to=TensorProto.FLOAT)
    avg = np.array(net.input_options["avg_rgb"], np.float32)
    x = g.op("Sub", [x, g.const(avg, "avg_rgb")], "center")  # (pixel - avg) in float, as dlib
    x = g.op("Mul", [x, g.const(np.array(1 / 256, np.float32), "scale")], "scale")  # /256: exact
    x = g.op("Transpose", [x], "nchw", perm=[0, 3, 1, 2])
    x, shape = _add_layers(g, x, (3, nr, nc), net.layers)
    g.nodes[-1].output[0] = "descriptors"
    dim = shape[0] if shape else 128
    return g.model([helper.make_tensor_value_info("chips", TensorProto.UINT8, ["N", nr, nc, 3])],
                   [helper.make_tensor_value_info("descriptors", TensorProto.FLOAT, ["N", dim])],
                   "dlib_resnet_embedder", "dlib_face_recognition_resnet_model_v1 as ONNX (faceindex)")


def build_detector_model(net: DlibNetwork):
    """ONNX model: a dlib-normalised tiled pyramid (N, 3, H, W) float32 -> MMOD scores (N, windows, h, w)."""
    from onnx import TensorProto, helper

    if net.input != "input_rgb_image_pyramid":
        raise ModelError(f"not an MMOD detector network (input layer {net.input})")
    g = _Graph()
    _add_layers(g, "pyramid", None, net.layers)
    g.nodes[-1].output[0] = "scores"
    k = len(net.loss_options["detector_windows"])
    return g.model([helper.make_tensor_value_info("pyramid", TensorProto.FLOAT, ["N", 3, "H", "W"])],
                   [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", k, "h", "w"])],
                   "dlib_mmod_detector", "mmod_human_face_detector as ONNX (faceindex)")


# ----------------------------------------------------------------------------------------------------------------
# Cache and sessions


class _LazyOnnx(LazyOnnx):
    """A model read from one dlib .dat file (the packaged one by default)."""

    builder_version = BUILDER_VERSION

    def __init__(self, weights_path: str | os.PathLike | None, cache_dir: Path | None, threads: int,
                 default_file: str) -> None:
        self.weights_path = Path(weights_path) if weights_path is not None else default_weights_path(default_file)
        super().__init__([self.weights_path], cache_dir, threads)


class OnnxEmbedder(_LazyOnnx):
    """dlib's ResNet face embedder (128-d) in ONNX Runtime; same spec and same numbers as the dlib backend."""

    spec = RESNET_SPEC
    kind = "dlib_resnet_v1"

    def __init__(self, weights_path: str | None = None, cache_dir: Path | None = None, threads: int = 1) -> None:
        super().__init__(weights_path, cache_dir, threads, RESNET_FILE)
        self.batch_size = EMBED_BATCH

    def _parse(self) -> DlibNetwork:
        return read_resnet_embedder(self.weights_path)

    def _build(self, net: DlibNetwork):
        return build_embedder_model(net)

    def embed(self, chips: np.ndarray) -> np.ndarray:
        """(N, 150, 150, 3) uint8 aligned chips -> (N, 128) float32 raw descriptors (not normalised)."""
        chips = np.asarray(chips)
        if chips.ndim == 3:
            chips = chips[None]
        if chips.ndim != 4 or chips.shape[1:] != (150, 150, 3):
            raise ValueError(f"expected (N, 150, 150, 3) chips, got {chips.shape}")
        if len(chips) == 0:
            return np.zeros((0, self.spec.dim), np.float32)
        if chips.dtype != np.uint8:
            raise ValueError(f"expected uint8 chips, got {chips.dtype}")
        sess = self._session()
        out = [sess.run(None, {"chips": np.ascontiguousarray(chips[i:i + self.batch_size])})[0]
               for i in range(0, len(chips), self.batch_size)]
        return np.concatenate(out).astype(np.float32, copy=False)


class OnnxCnnDetector(_LazyOnnx):
    """dlib's MMOD CNN face detector: conv network in ONNX Runtime, pyramid and decoding in numpy (dlib's numbers)."""

    kind = "dlib_mmod_v1"

    def __init__(self, weights_path: str | None = None, cache_dir: Path | None = None, threads: int = 1,
                 adjust_threshold: float = 0.0) -> None:
        super().__init__(weights_path, cache_dir, threads, MMOD_FILE)
        self.adjust_threshold = adjust_threshold
        self._opts: dict | None = None

    def _parse(self) -> DlibNetwork:
        return read_mmod_detector(self.weights_path)

    def _build(self, net: DlibNetwork):
        return build_detector_model(net)

    def _after_load(self, net: DlibNetwork | None) -> None:
        # The decoding needs the loss options and layer geometry: parse the (small) weights file when the ONNX model
        # came from the cache.
        net = net if net is not None else self._parse()
        self._opts = {
            "loss": net.loss_options,
            "input": net.input_options,
            "map": output_to_input_map(net.layers),
            "convs": [(lay.params["weight"].shape[2:], lay.params["stride"], lay.params["padding"])
                      for lay in net.layers if lay.kind == "con"],
        }

    def detect(self, image: np.ndarray, upsample: int = 0) -> list[Detection]:
        """Faces in an RGB (or grayscale) uint8 image, as dlib.cnn_face_detection_model_v1(path)(image, upsample)."""
        img = np.asarray(image)
        if img.ndim == 2:
            img = np.repeat(img[:, :, None], 3, axis=2)
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {img.shape} {img.dtype}")
        if upsample < 0:
            raise ValueError("upsample must be >= 0")
        sess = self._session()
        opts = self._opts
        assert opts is not None
        for _ in range(upsample):
            img = pyramid_up2(img)
        inp = opts["input"]
        data, rects = tiled_pyramid_tensor(img, inp["avg_rgb"], inp["pyramid_rate"], inp["pyramid_padding"],
                                           inp["pyramid_outer_padding"])
        if not rects or not input_fits(data.shape[2:], opts["convs"]):
            return []  # too small for the network (dlib itself crashes on such images)
        scores = sess.run(None, {"pyramid": data})[0][0]
        found = mmod_decode(scores, rects, opts["loss"], opts["map"], inp["pyramid_rate"], self.adjust_threshold)
        out = []
        for rect, score in found:
            left, top, right, bottom = rect_down2(rect, upsample)
            out.append(Detection(left, top, right + 1, bottom + 1, score))
        return out
