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
from .dlib_layers import DETAIL_READERS, read_input, read_loss

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


def _parse(r: _Reader, arch: Arch) -> DlibNetwork:
    if arch[0][0] != "loss" or arch[-1][0] != "input":
        raise ValueError("architecture must start with a loss and end with an input")
    r.expect_version(1, "add_loss_layer")
    loss_kind = arch[0][1]
    loss_options = read_loss(r, loss_kind)
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
    input_options = read_input(r, input_kind)
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
        reader = DETAIL_READERS.get(w[0])
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
