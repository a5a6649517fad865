"""A pure Python/numpy reader of dlib's DNN serialisation format, for the two networks faceindex runs.

dlib writes a network as its C++ type dictates: the file does not describe the topology (tag ids, skips, which
layer is which are all in the type), only each layer's state. So, like dlib, the reader walks the stream along a
known architecture (`RESNET_ARCH` for `dlib_face_recognition_resnet_model_v1.dat`, `MMOD_ARCH` for
`mmod_human_face_detector.dat`, both transcribed from dlib's examples) and checks every version string, shape and
hyper-parameter it meets against it. Anything unexpected raises `ModelError`.

Encoding (dlib/serialize.h): integers are one control byte (low nibble: byte count, 0x80: negative) followed by
that many little-endian magnitude bytes; bool is the ASCII byte '0' or '1'; float/double are a (mantissa int64,
exponent int16) pair of such integers; strings are a length then raw bytes; tensors (dlib/dnn/tensor.h) are a
version (2: raw little-endian float32, 1: per-element float encoding) and n, k, nr, nc.

Serialisation order (dlib/dnn/core.h): add_loss_layer writes version, loss details, subnetwork; add_layer writes
version, subnetwork, layer details, then its bookkeeping (3 bools, x_grad, cached_output and, for version 2,
params_grad); add_tag_layer / add_skip_layer write version, subnetwork. So a file is every wrapper's version from the
top down, then the input layer, then each layer's details from the bottom up.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelError

__all__ = [
    "DlibNetwork",
    "Layer",
    "MMOD_ARCH",
    "RESNET_ARCH",
    "read_mmod_detector",
    "read_network",
    "read_resnet_embedder",
]


# ----------------------------------------------------------------------------------------------------------------
# Architectures, top (loss side) to bottom (input side), transcribed from dlib's examples.
# Entries: ("con", num_filters, nr, nc, stride_y, stride_x), ("affine",), ("relu",), ("max_pool", nr, nc, sy, sx),
# ("avg_pool", nr, nc, sy, sx) (0 = whole input), ("fc", num_outputs, has_bias), ("add_prev", tag), ("tag", id),
# ("skip", tag), ("input", kind).

Arch = list[tuple]


def _block(n: int, stride: int, sub: Arch) -> Arch:
    # block<N,BN,stride,SUBNET> = BN<con<N,3,3,1,1,relu<BN<con<N,3,3,stride,stride,SUBNET>>>>>
    return [("affine",), ("con", n, 3, 3, 1, 1), ("relu",), ("affine",), ("con", n, 3, 3, stride, stride), *sub]


def _ares(n: int, sub: Arch) -> Arch:
    # relu<residual<block,N,affine,SUBNET>>, residual = add_prev1<block<N,BN,1,tag1<SUBNET>>>
    return [("relu",), ("add_prev", 1), *_block(n, 1, [("tag", 1), *sub])]


def _ares_down(n: int, sub: Arch) -> Arch:
    # relu<residual_down<...>>, residual_down = add_prev2<avg_pool<2,2,2,2,skip1<tag2<block<N,BN,2,tag1<SUBNET>>>>>>
    return [("relu",), ("add_prev", 2), ("avg_pool", 2, 2, 2, 2), ("skip", 1), ("tag", 2),
            *_block(n, 2, [("tag", 1), *sub])]


def _resnet_arch() -> Arch:
    # dlib/examples/dnn_face_recognition_ex.cpp, anet_type
    net: Arch = [("max_pool", 3, 3, 2, 2), ("relu",), ("affine",), ("con", 32, 7, 7, 2, 2),
                 ("input", "input_rgb_image_sized")]
    for _ in range(3):  # alevel4
        net = _ares(32, net)
    net = _ares_down(64, net)  # alevel3
    for _ in range(3):
        net = _ares(64, net)
    net = _ares_down(128, net)  # alevel2
    for _ in range(2):
        net = _ares(128, net)
    net = _ares_down(256, net)  # alevel1
    for _ in range(2):
        net = _ares(256, net)
    net = _ares_down(256, net)  # alevel0
    return [("loss", "loss_metric"), ("fc", 128, False), ("avg_pool", 0, 0, 1, 1), *net]


def _mmod_arch() -> Arch:
    # dlib/examples/dnn_mmod_face_detection_ex.cpp (and tools/python/src/cnn_face_detector.cpp), net_type:
    # loss_mmod<con<1,9,9,1,1,rcon5<45,rcon5<45,rcon5<45,downsampler<input_rgb_image_pyramid<pyramid_down<6>>>>>>>>
    # downsampler = relu<affine<con5d<32, relu<affine<con5d<32, relu<affine<con5d<16,SUBNET>>>>>>>>>
    # con5d<n> = con<n,5,5,2,2>, rcon5<n> = relu<affine<con<n,5,5,1,1>>>
    net: Arch = [("loss", "loss_mmod"), ("con", 1, 9, 9, 1, 1)]
    for _ in range(3):
        net += [("relu",), ("affine",), ("con", 45, 5, 5, 1, 1)]
    for n in (32, 32, 16):
        net += [("relu",), ("affine",), ("con", n, 5, 5, 2, 2)]
    return [*net, ("input", "input_rgb_image_pyramid")]


RESNET_ARCH: Arch = _resnet_arch()
MMOD_ARCH: Arch = _mmod_arch()


# ----------------------------------------------------------------------------------------------------------------


@dataclass
class Layer:
    """One layer in forward order (input side first)."""

    kind: str  # con, affine, relu, max_pool, avg_pool, fc, add_prev, tag, skip
    params: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:  # compact: shapes rather than arrays
        shown = {k: (v.shape if isinstance(v, np.ndarray) else v) for k, v in self.params.items()}
        return f"Layer({self.kind}, {shown})"


@dataclass
class DlibNetwork:
    """A parsed dlib network: loss options, input layer options, and the layers in forward order."""

    loss: str
    loss_options: dict[str, Any]
    input: str
    input_options: dict[str, Any]
    layers: list[Layer]

    @property
    def num_params(self) -> int:
        return sum(int(v.size) for lay in self.layers for v in lay.params.values() if isinstance(v, np.ndarray))


class _Reader:
    """Cursor over the raw bytes with dlib's primitive decoders; every failure becomes a ModelError."""

    def __init__(self, data: bytes, source: str) -> None:
        self.data = data
        self.pos = 0
        self.source = source

    def fail(self, what: str) -> ModelError:
        return ModelError(f"{self.source}: not a dlib network of the expected type ({what} at byte {self.pos})")

    def _take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise self.fail(f"file truncated while reading {what}")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def int_(self, what: str = "an integer", signed: bool = True) -> int:
        ctrl = self._take(1, what)[0]
        size = ctrl & 0x0F
        if size > 8 or (ctrl & 0x70):
            raise self.fail(f"bad integer control byte 0x{ctrl:02x} in {what}")
        neg = bool(ctrl & 0x80)
        if neg and not signed:
            raise self.fail(f"negative value for unsigned {what}")
        value = int.from_bytes(self._take(size, what), "little") if size else 0
        return -value if neg else value

    def uint(self, what: str = "an unsigned integer") -> int:
        return self.int_(what, signed=False)

    def byte(self, what: str = "a byte") -> int:
        return self._take(1, what)[0]

    def bool_(self, what: str = "a bool") -> bool:
        ch = self._take(1, what)
        if ch == b"1":
            return True
        if ch == b"0":
            return False
        raise self.fail(f"bad bool byte {ch!r} in {what}")

    def float_(self, what: str = "a float") -> float:
        ctrl = self._peek()
        if ctrl & 0x70:  # dlib's pre-2013 ASCII float format: never in these models
            raise self.fail(f"old ASCII float encoding in {what}")
        mantissa = self.int_(what)
        exponent = self.int_(what)
        if exponent == 32000:
            return math.inf
        if exponent == 32001:
            return -math.inf
        if exponent == 32002:
            return math.nan
        if not -32768 <= exponent <= 32767:
            raise self.fail(f"float exponent out of range in {what}")
        return math.ldexp(float(mantissa), exponent)

    def _peek(self) -> int:
        if self.pos >= len(self.data):
            raise self.fail("file truncated")
        return self.data[self.pos]

    def string(self, what: str = "a string", max_len: int = 256) -> str:
        n = self.uint(what)
        if n > max_len:
            raise self.fail(f"implausible string length {n} in {what}")
        raw = self._take(n, what)
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError as e:
            raise self.fail(f"non-ASCII bytes in {what}") from e

    def expect_version(self, expected: int | tuple[int, ...], what: str) -> int:
        ok = expected if isinstance(expected, tuple) else (expected,)
        v = self.int_(f"version of {what}")
        if v not in ok:
            raise self.fail(f"version {v} of {what}, expected {' or '.join(map(str, ok))}")
        return v

    def tensor(self, what: str) -> np.ndarray:
        version = self.int_(f"tensor version of {what}")
        dims = [self.int_(f"tensor dims of {what}") for _ in range(4)]
        if any(d < 0 for d in dims):
            raise self.fail(f"negative tensor dims {dims} in {what}")
        count = dims[0] * dims[1] * dims[2] * dims[3]
        if count > 1 << 28:
            raise self.fail(f"implausible tensor size {dims} in {what}")
        if version == 2:
            raw = self._take(4 * count, what)
            arr = np.frombuffer(raw, dtype="<f4").astype(np.float32)
        elif version == 1:
            arr = np.array([self.float_(what) for _ in range(count)], dtype=np.float32)
        else:
            raise self.fail(f"unknown tensor version {version} in {what}")
        return arr.reshape(dims)

    def alias(self, what: str) -> tuple[int, int, int, int]:
        self.expect_version(1, f"alias_tensor of {what}")
        dims = tuple(self.int_(f"alias_tensor dims of {what}") for _ in range(4))
        if any(d < 0 for d in dims):
            raise self.fail(f"negative alias_tensor dims {dims} in {what}")
        return dims  # type: ignore[return-value]


# ----------------------------------------------------------------------------------------------------------------
# Layer detail readers (dlib/dnn/layers.h). Each returns the params of one Layer and checks it against `spec`.


def _size(d: tuple[int, ...]) -> int:
    return int(np.prod(d)) if d else 0


def _read_con(r: _Reader, spec: tuple) -> dict[str, Any]:
    _, n_f, nr_, nc_, sy_, sx_ = spec
    version = r.string("con_ version")
    if version not in ("con_4", "con_5", "con_6"):
        raise r.fail(f"layer {version!r} where a con_ was expected")
    params = r.tensor("con_ params").reshape(-1)
    num_filters = r.int_("con_ num_filters")
    nr, nc = r.int_("con_ nr"), r.int_("con_ nc")
    sy, sx = r.int_("con_ stride_y"), r.int_("con_ stride_x")
    py, px = r.int_("con_ padding_y"), r.int_("con_ padding_x")
    filters = r.alias("con_ filters")
    biases = r.alias("con_ biases")
    for name in ("learning_rate_multiplier", "weight_decay_multiplier", "bias_learning_rate_multiplier",
                 "bias_weight_decay_multiplier"):
        r.float_(f"con_ {name}")
    use_bias = r.bool_("con_ use_bias") if version in ("con_5", "con_6") else True
    use_relu = r.bool_("con_ use_relu") if version == "con_6" else False
    if (num_filters, nr, nc, sy, sx) != (n_f, nr_, nc_, sy_, sx_):
        raise r.fail(f"con_ ({num_filters} filters {nr}x{nc} stride {sy},{sx}) where the network has "
                     f"({n_f} filters {nr_}x{nc_} stride {sy_},{sx_})")
    # dlib's default padding for con<>: nr/2 at stride 1, else 0
    if (py, px) != ((nr // 2) if sy == 1 else 0, (nc // 2) if sx == 1 else 0):
        raise r.fail(f"unexpected con_ padding {py},{px}")
    if filters[0] != num_filters or filters[2:] != (nr, nc):
        raise r.fail(f"con_ filter shape {filters} does not match {num_filters} filters of {nr}x{nc}")
    nw = _size(filters)
    nb = _size(biases) if use_bias else 0
    if use_bias and biases != (1, num_filters, 1, 1):
        raise r.fail(f"con_ bias shape {biases}")
    if params.size != nw + nb:
        raise r.fail(f"con_ params hold {params.size} values, expected {nw + nb}")
    out: dict[str, Any] = {
        "weight": params[:nw].reshape(filters).copy(),  # (out, in, kh, kw), cross-correlation as in cuDNN
        "bias": params[nw:nw + nb].copy() if use_bias else np.zeros(num_filters, np.float32),
        "stride": (sy, sx),
        "padding": (py, px),
    }
    if use_relu:
        raise r.fail("con_ with a fused relu is not supported")
    return out


def _read_bn_as_affine(r: _Reader, version: str) -> dict[str, Any]:
    # bn_con2 / bn_fc2 (what training wrote); dlib converts it on load into affine_ exactly like this (float math)
    params = r.tensor("bn_ params").reshape(-1)
    gamma = r.alias("bn_ gamma")
    r.alias("bn_ beta")
    r.tensor("bn_ means")
    r.tensor("bn_ invstds")
    running_means = r.tensor("bn_ running_means").reshape(-1)
    running_vars = r.tensor("bn_ running_variances").reshape(-1)
    r.uint("bn_ num_updates")
    r.uint("bn_ running_stats_window_size")
    for name in ("learning_rate_multiplier", "weight_decay_multiplier", "bias_learning_rate_multiplier",
                 "bias_weight_decay_multiplier"):
        r.float_(f"bn_ {name}")
    eps = r.float_("bn_ eps")
    n = _size(gamma)
    if params.size != 2 * n or running_means.size != n or running_vars.size != n:
        raise r.fail(f"bn_ tensor sizes disagree (params {params.size}, gamma {n})")
    if version != "bn_con2":
        raise r.fail(f"{version} (fully connected batch norm) where a conv-mode affine was expected")
    g_src, b_src = params[:n], params[n:]
    # affine_(const bn_&): g = sg / sqrt(var + eps); b = sb - g * mean, all in float32 as dlib's float matrices
    g = (g_src / np.sqrt(running_vars + np.float32(eps))).astype(np.float32)
    b = (b_src - g * running_means).astype(np.float32)
    return {"gamma": g, "beta": b, "mode": "conv"}


def _read_affine(r: _Reader, spec: tuple) -> dict[str, Any]:
    version = r.string("affine_ version")
    if version in ("bn_con2", "bn_fc2"):
        return _read_bn_as_affine(r, version)
    if version not in ("affine_", "affine_2"):
        raise r.fail(f"layer {version!r} where an affine_ was expected")
    params = r.tensor("affine_ params").reshape(-1)
    gamma = r.alias("affine_ gamma")
    beta = r.alias("affine_ beta")
    mode = r.int_("affine_ mode")
    disabled = r.bool_("affine_ disabled") if version == "affine_2" else False
    if disabled:
        raise r.fail("disabled affine_ layer")
    if mode != 0:  # CONV_MODE == 0 in dlib's layer_mode
        raise r.fail(f"affine_ mode {mode}, expected CONV_MODE")
    n = _size(gamma)
    if gamma != beta or gamma[0] != 1 or gamma[2:] != (1, 1) or params.size != 2 * n:
        raise r.fail(f"affine_ shapes gamma {gamma} beta {beta} params {params.size}")
    return {"gamma": params[:n].copy(), "beta": params[n:].copy(), "mode": "conv"}


def _read_relu(r: _Reader, spec: tuple) -> dict[str, Any]:
    version = r.string("relu_ version")
    if version != "relu_":
        raise r.fail(f"layer {version!r} where a relu_ was expected")
    return {}


def _read_pool(r: _Reader, spec: tuple) -> dict[str, Any]:
    kind, nr_, nc_, sy_, sx_ = spec
    name = f"{kind}_"
    version = r.string(f"{name} version")
    if version != f"{name}2":
        raise r.fail(f"layer {version!r} where a {name}2 was expected")
    nr, nc = r.int_(f"{name} nr"), r.int_(f"{name} nc")
    sy, sx = r.int_(f"{name} stride_y"), r.int_(f"{name} stride_x")
    py, px = r.int_(f"{name} padding_y"), r.int_(f"{name} padding_x")
    if (nr, nc, sy, sx) != (nr_, nc_, sy_, sx_):
        raise r.fail(f"{name} {nr}x{nc} stride {sy},{sx} where the network has {nr_}x{nc_} stride {sy_},{sx_}")
    if (py, px) != ((nr // 2) if sy == 1 else 0, (nc // 2) if sx == 1 else 0):
        raise r.fail(f"unexpected {name} padding {py},{px}")
    return {"kernel": (nr, nc), "stride": (sy, sx), "padding": (py, px)}


def _read_fc(r: _Reader, spec: tuple) -> dict[str, Any]:
    _, n_out_, has_bias_ = spec
    version = r.string("fc_ version")
    if version not in ("fc_2", "fc_3"):
        raise r.fail(f"layer {version!r} where an fc_ was expected")
    n_out = r.uint("fc_ num_outputs")
    n_in = r.uint("fc_ num_inputs")
    params = r.tensor("fc_ params").reshape(-1)
    weights = r.alias("fc_ weights")
    biases = r.alias("fc_ biases")
    bias_mode = r.int_("fc_ bias_mode")  # FC_HAS_BIAS = 0, FC_NO_BIAS = 1
    for name in ("learning_rate_multiplier", "weight_decay_multiplier", "bias_learning_rate_multiplier",
                 "bias_weight_decay_multiplier"):
        r.float_(f"fc_ {name}")
    use_bias = r.bool_("fc_ use_bias") if version == "fc_3" else True
    has_bias = bias_mode == 0 and use_bias
    if n_out != n_out_ or has_bias != has_bias_:
        raise r.fail(f"fc_ with {n_out} outputs (bias {has_bias}) where the network has {n_out_} (bias {has_bias_})")
    if weights != (n_in, n_out, 1, 1):
        raise r.fail(f"fc_ weight shape {weights} for {n_in} inputs and {n_out} outputs")
    nb = n_out if has_bias else 0
    if params.size != n_in * n_out + nb:
        raise r.fail(f"fc_ params hold {params.size} values, expected {n_in * n_out + nb}")
    out: dict[str, Any] = {"weight": params[:n_in * n_out].reshape(n_in, n_out).copy()}  # output = x @ W (+ b)
    out["bias"] = params[n_in * n_out:].copy() if has_bias else None
    if has_bias and biases != (1, n_out, 1, 1):
        raise r.fail(f"fc_ bias shape {biases}")
    return out


def _read_add_prev(r: _Reader, spec: tuple) -> dict[str, Any]:
    version = r.string("add_prev_ version")
    if version != "add_prev_":
        raise r.fail(f"layer {version!r} where an add_prev_ was expected")
    return {"tag": spec[1]}


_DETAIL_READERS = {
    "con": _read_con,
    "affine": _read_affine,
    "relu": _read_relu,
    "max_pool": _read_pool,
    "avg_pool": _read_pool,
    "fc": _read_fc,
    "add_prev": _read_add_prev,
}


# ----------------------------------------------------------------------------------------------------------------
# Input layers (dlib/dnn/input.h) and losses (dlib/dnn/loss.h)


def _read_input(r: _Reader, kind: str) -> dict[str, Any]:
    version = r.string("input layer version")
    if kind == "input_rgb_image_sized":
        if version != "input_rgb_image_sized":
            raise r.fail(f"input layer {version!r}, expected input_rgb_image_sized")
        avg = [np.float32(r.float_("input avg")) for _ in range(3)]
        nr, nc = r.uint("input nr"), r.uint("input nc")
        return {"avg_rgb": tuple(float(a) for a in avg), "size": (nr, nc)}
    if kind == "input_rgb_image_pyramid":
        if version not in ("input_rgb_image_pyramid", "input_rgb_image_pyramid2"):
            raise r.fail(f"input layer {version!r}, expected input_rgb_image_pyramid")
        avg = [np.float32(r.float_("input avg")) for _ in range(3)]
        if version == "input_rgb_image_pyramid2":
            padding, outer = r.uint("pyramid_padding"), r.uint("pyramid_outer_padding")
        else:
            padding, outer = 10, 11
        # pyramid_down<6> is part of the C++ type, not of the file
        return {"avg_rgb": tuple(float(a) for a in avg), "pyramid_padding": padding,
                "pyramid_outer_padding": outer, "pyramid_rate": 6}
    raise r.fail(f"unsupported input layer {kind}")


def _read_test_box_overlap(r: _Reader, what: str) -> dict[str, float]:
    return {"iou_thresh": r.float_(f"{what} iou_thresh"), "percent_covered_thresh": r.float_(f"{what} covered")}


def _read_loss(r: _Reader, kind: str) -> dict[str, Any]:
    version = r.string("loss layer version")
    if kind == "loss_metric":
        if version == "loss_metric_":
            return {}
        if version == "loss_metric_2":
            return {"margin": r.float_("loss_metric margin"), "dist_thresh": r.float_("loss_metric dist_thresh")}
        raise r.fail(f"loss layer {version!r}, expected loss_metric_")
    if kind == "loss_mmod":
        if version != "loss_mmod_":
            raise r.fail(f"loss layer {version!r}, expected loss_mmod_")
        v = r.expect_version((1, 2, 3, 4), "mmod_options")
        windows = []
        if v == 1:
            windows.append({"width": r.uint("detector width"), "height": r.uint("detector height"), "label": ""})
        else:
            n = r.uint("detector_windows size")
            if n > 1000:
                raise r.fail(f"implausible number of detector windows {n}")
            for _ in range(n):
                # detector_window_details: version (1 or 2), width, height, [label]
                dv = r.expect_version((1, 2), "detector_window_details")
                w, h = r.uint("detector width"), r.uint("detector height")
                windows.append({"width": w, "height": h, "label": r.string("detector label") if dv == 2 else ""})
        opts: dict[str, Any] = {
            "detector_windows": windows,
            "loss_per_false_alarm": r.float_("loss_per_false_alarm"),
            "loss_per_missed_target": r.float_("loss_per_missed_target"),
            "truth_match_iou_threshold": r.float_("truth_match_iou_threshold"),
            "overlaps_nms": _read_test_box_overlap(r, "overlaps_nms"),
            "overlaps_ignore": _read_test_box_overlap(r, "overlaps_ignore"),
            "assume_image_pyramid": True,
            "use_bounding_box_regression": False,
        }
        if v >= 3:
            opts["assume_image_pyramid"] = bool(r.byte("assume_image_pyramid"))  # a uint8_t: one raw byte
        if v >= 4:
            opts["use_bounding_box_regression"] = r.bool_("use_bounding_box_regression")
            opts["bbr_lambda"] = r.float_("bbr_lambda")
        if not windows:
            raise r.fail("loss_mmod_ without detector windows")
        return opts
    raise r.fail(f"unsupported loss {kind}")


# ----------------------------------------------------------------------------------------------------------------


def _parse(r: _Reader, arch: Arch) -> DlibNetwork:
    if arch[0][0] != "loss" or arch[-1][0] != "input":
        raise ValueError("architecture must start with a loss and end with an input")
    r.expect_version(1, "add_loss_layer")
    loss_kind = arch[0][1]
    loss_options = _read_loss(r, loss_kind)
    wrappers = arch[1:-1]  # top to bottom
    input_kind = arch[-1][1]
    if not wrappers:
        raise ValueError("empty architecture")

    # 1. every wrapper's version, top down
    versions = []
    for i, w in enumerate(wrappers):
        bottom = i == len(wrappers) - 1
        if w[0] in ("tag", "skip"):
            if bottom and w[0] == "tag":
                versions.append(r.expect_version((1, 2), "add_tag_layer"))
            elif bottom:
                raise ValueError("a skip layer cannot sit on the input layer")
            else:
                versions.append(r.expect_version(1, f"add_{w[0]}_layer"))
        else:
            versions.append(r.expect_version((2, 3) if bottom else (1, 2), f"add_layer<{w[0]}>"))

    # 2. the input layer, then (for the bottom wrapper) its details and bookkeeping
    input_options = _read_input(r, input_kind)
    layers: list[Layer] = []
    for i in range(len(wrappers) - 1, -1, -1):  # bottom up
        w, v = wrappers[i], versions[i]
        bottom = i == len(wrappers) - 1
        what = f"layer {len(wrappers) - i} ({w[0]})"
        if w[0] == "tag":
            layers.append(Layer("tag", {"tag": w[1]}))
            if bottom:  # add_tag_layer<ID, INPUT_LAYER>: cached_output, grad_final, bool, [sample_expansion_factor]
                r.tensor(f"{what} cached_output")
                r.tensor(f"{what} grad_final")
                r.bool_(f"{what} gradient_input_is_stale")
                if v >= 2:
                    r.uint(f"{what} sample_expansion_factor")
            continue
        if w[0] == "skip":
            layers.append(Layer("skip", {"tag": w[1]}))
            continue
        reader = _DETAIL_READERS.get(w[0])
        if reader is None:
            raise ValueError(f"unknown layer kind {w[0]}")
        layers.append(Layer(w[0], reader(r, w)))
        for name in ("this_layer_setup_called", "gradient_input_is_stale", "get_output_and_gradient_input_disabled"):
            r.bool_(f"{what} {name}")
        r.tensor(f"{what} x_grad")
        r.tensor(f"{what} cached_output")
        if bottom:  # add_layer<LAYER, INPUT_LAYER>: grad_final, [sample_expansion_factor]
            r.tensor(f"{what} grad_final")
            if v >= 3:
                r.uint(f"{what} sample_expansion_factor")
        elif v == 2:
            r.tensor(f"{what} params_grad")

    if r.pos != len(r.data):
        raise r.fail(f"{len(r.data) - r.pos} unexpected trailing bytes")
    _check_channels(r, layers, 3)
    return DlibNetwork(loss_kind, loss_options, input_kind, input_options, layers)


def _check_channels(r: _Reader, layers: list[Layer], channels: int) -> None:
    """Every conv/affine/fc must take the number of channels the layer below produces."""
    tags: dict[int, int] = {}
    k = channels
    for i, lay in enumerate(layers):
        p = lay.params
        if lay.kind == "con":
            if p["weight"].shape[1] != k:
                raise r.fail(f"con_ #{i} expects {p['weight'].shape[1]} input channels, gets {k}")
            k = p["weight"].shape[0]
        elif lay.kind == "affine":
            if p["gamma"].size != k:
                raise r.fail(f"affine_ #{i} has {p['gamma'].size} channels, gets {k}")
        elif lay.kind == "tag":
            tags[p["tag"]] = k
        elif lay.kind == "skip":
            k = tags[p["tag"]]
        elif lay.kind == "add_prev":
            k = max(k, tags[p["tag"]])
        elif lay.kind == "fc" and p["weight"].shape[0] % k:
            raise r.fail(f"fc_ has {p['weight'].shape[0]} inputs for {k} channels")


def read_network(path: str | os.PathLike, arch: Arch) -> DlibNetwork:
    """Parse a dlib .dat network file along `arch`; ModelError when it is missing, truncated or of another type."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ModelError(f"cannot read model weights {path}: {e}") from e
    return parse_network(data, arch, str(path))


def parse_network(data: bytes, arch: Arch, source: str = "<bytes>") -> DlibNetwork:
    """As read_network, from bytes already in memory."""
    r = _Reader(data, source)
    try:
        return _parse(r, arch)
    except ModelError:
        raise
    except (ValueError, KeyError, IndexError, OverflowError) as e:  # corrupted values that slip past the checks
        raise r.fail(f"corrupt data ({e})") from e


def read_resnet_embedder(path: str | os.PathLike) -> DlibNetwork:
    """dlib_face_recognition_resnet_model_v1.dat: the 29-layer ResNet metric network (150x150 RGB -> 128-d)."""
    return read_network(path, RESNET_ARCH)


def read_mmod_detector(path: str | os.PathLike) -> DlibNetwork:
    """mmod_human_face_detector.dat: the MMOD CNN face detector."""
    return read_network(path, MMOD_ARCH)
