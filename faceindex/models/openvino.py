"""OpenVINO IR (v10/v11 `.xml` + `.bin`) read in numpy, its layer-by-layer numpy reference, and its ONNX equivalent.

No openvino package: the xml is the graph (layers, typed ports with static shapes, edges), the bin holds the Const
blobs at (offset, size). `read_ir` (in openvino_ir.py, re-exported here) parses and checks both into an `IrModel`
in topological order; `reference_forward` runs it op by op in float64 numpy (slow, plain: the proof that
`build_onnx` is right); `build_onnx` lowers it to an ONNX graph with a dynamic batch dimension, folding on the way
what can be folded exactly:

- constant Convert (FP16 -> FP32) and arithmetic on constants are evaluated at build time;
- a per-channel Add or Multiply by a constant right after a (Group)Convolution goes into its weights and bias;
- a PReLU with one shared slope becomes LeakyRelu (same function; ONNX Runtime fuses it into the convolution);
- an AvgPool whose window is the whole input becomes GlobalAveragePool;
- a per-channel scale (and shift) of a convolution's input goes into its weights (the input normalisation).

Only the ops in `SUPPORTED_OPS` are handled (those of Intel's face-reidentification-retail-0095, with their opset1
semantics); any other op is refused with a one-line ModelError naming it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ModelError
from .openvino_ir import DTYPES, IrLayer, IrModel, Key
from .openvino_ir import SUPPORTED_OPS as SUPPORTED_OPS  # re-exported with read_ir: callers import them here
from .openvino_ir import read_ir as read_ir

# ----------------------------------------------------------------------------------------------------------------
# Numpy reference: each op as its opset1 definition says, in float64, no cleverness


def _pads(layer: IrLayer, rank: int) -> tuple[list[int], list[int]]:
    auto = layer.attrs.get("auto_pad", "explicit").lower()
    if auto == "valid":
        return [0] * rank, [0] * rank
    if auto not in ("explicit", "notset", ""):
        raise ModelError(f"{layer.type} {layer.name!r}: auto_pad {auto!r} is not supported")
    return layer.ints("pads_begin"), layer.ints("pads_end")


def _ref_conv(x: np.ndarray, w: np.ndarray, groups: int, strides, dilations, begin, end) -> np.ndarray:
    """Grouped 2-D convolution: x (N, G*Cg, H, W), w (G, Og, Cg, kh, kw) -> (N, G*Og, H', W')."""
    n, c, h, wd = x.shape
    g, og, cg, kh, kw = w.shape
    if g * cg != c:
        raise ModelError(f"convolution over {c} channels with weights {w.shape}")
    xp = np.pad(x, ((0, 0), (0, 0), (begin[0], end[0]), (begin[1], end[1])))
    (sy, sx), (dy, dx) = strides, dilations
    oh = (h + begin[0] + end[0] - dy * (kh - 1) - 1) // sy + 1
    ow = (wd + begin[1] + end[1] - dx * (kw - 1) - 1) // sx + 1
    xg = xp.reshape(n, g, cg, xp.shape[2], xp.shape[3])
    out = np.zeros((n, g, og, oh, ow))
    for i in range(kh):
        for j in range(kw):
            patch = xg[:, :, :, i * dy:i * dy + sy * (oh - 1) + 1:sy, j * dx:j * dx + sx * (ow - 1) + 1:sx]
            out += np.einsum("ngchw,goc->ngohw", patch, w[:, :, :, i, j], optimize=True)
    return out.reshape(n, g * og, oh, ow)


def _ref_avgpool(x: np.ndarray, layer: IrLayer) -> np.ndarray:
    (kh, kw), (sy, sx) = layer.ints("kernel"), layer.ints("strides")
    begin, end = _pads(layer, 2)
    exclude = layer.attrs.get("exclude-pad", "false").lower() == "true"
    ceil = layer.attrs.get("rounding_type", "floor").lower() == "ceil"
    n, c, h, w = x.shape
    rnd = np.ceil if ceil else np.floor
    oh = int(rnd((h + begin[0] + end[0] - kh) / sy)) + 1
    ow = int(rnd((w + begin[1] + end[1] - kw) / sx)) + 1
    out = np.zeros((n, c, oh, ow))
    for r in range(oh):
        for q in range(ow):
            y0, x0 = r * sy - begin[0], q * sx - begin[1]
            y1, x1 = min(y0 + kh, h + end[0]), min(x0 + kw, w + end[1])  # the window inside the padded input
            window = x[:, :, max(y0, 0):min(y1, h), max(x0, 0):min(x1, w)]
            count = window.shape[2] * window.shape[3] if exclude else (y1 - y0) * (x1 - x0)
            out[:, :, r, q] = window.sum(axis=(2, 3)) / count
    return out


def _channel_slope(slope: np.ndarray, rank: int, channels: int) -> np.ndarray:
    """PReLU's slope as opset1 applies it: a 1-D slope of the channel count runs along axis 1, else numpy broadcast."""
    if slope.ndim == 1 and slope.size == channels and channels != 1 and rank >= 2:
        return slope.reshape((channels,) + (1,) * (rank - 2))
    return slope


def reference_forward(ir: IrModel, x: np.ndarray) -> np.ndarray:
    """Run the IR on `x` (shaped as its Parameter, any batch size) in float64 numpy; the (first) Result's input."""
    vals: dict[Key, np.ndarray] = {}
    out = None
    for layer in ir.layers:
        a = [vals[k] for k in layer.inputs]
        t = layer.type
        if t == "Parameter":
            y = np.asarray(x, np.float64)
        elif t == "Const":
            y = layer.value  # type: ignore[assignment]
        elif t == "Convert":
            dt = np.dtype(DTYPES[layer.attrs["destination_type"]])
            y = a[0].astype(np.float64 if dt.kind == "f" else dt)  # f16 -> f32 is exact; float64 holds both
        elif t in ("Add", "Multiply"):
            if layer.attrs.get("auto_broadcast", "numpy") not in ("numpy", "none") or (
                    layer.attrs.get("auto_broadcast") == "none" and a[0].shape != a[1].shape):
                raise ModelError(f"{t} {layer.name!r}: broadcast {layer.attrs.get('auto_broadcast')!r} not supported")
            p, q = a[0].astype(np.float64), a[1].astype(np.float64)
            y = p + q if t == "Add" else p * q
        elif t in ("Convolution", "GroupConvolution"):
            w = a[1].astype(np.float64)
            w = w[None] if t == "Convolution" else w
            begin, end = _pads(layer, 2)
            y = _ref_conv(a[0], w, w.shape[0], layer.ints("strides"), layer.ints("dilations"), begin, end)
        elif t == "AvgPool":
            y = _ref_avgpool(a[0], layer)
        elif t == "PReLU":
            s = _channel_slope(a[1].astype(np.float64), a[0].ndim, a[0].shape[1])
            y = np.where(a[0] < 0, a[0] * s, a[0])
        elif t == "Sigmoid":
            y = 0.5 * (1.0 + np.tanh(0.5 * a[0]))  # the logistic function, without exp's overflow
        elif t == "Result":
            out = a[0] if out is None else out
            continue
        else:  # read_ir refuses these already
            raise ModelError(f"unsupported OpenVINO op {t!r}")
        vals[(layer.id, min(layer.outputs) if layer.outputs else 0)] = y
    assert out is not None
    return out


# ----------------------------------------------------------------------------------------------------------------
# ONNX: lower the IR to a small op list, fold, emit


@dataclass
class _Op:
    kind: str  # Conv, AddC, MulC, Add, Mul, AvgPool, GlobalAveragePool, PRelu, LeakyRelu, Sigmoid, Cast
    inputs: list[Key]
    out: Key
    attrs: dict


def _lower(ir: IrModel, rewrite: bool = True) -> tuple[list[_Op], Key, Key]:
    """The IR as ops on dynamic tensors, constants evaluated, weights as arrays; and the input and output tensors.

    `rewrite`: shared-slope PReLU as LeakyRelu, whole-input AvgPool as GlobalAveragePool (same functions)."""
    consts: dict[Key, np.ndarray] = {}
    ops: list[_Op] = []
    source = sink = None
    if len(ir.parameters) != 1 or len(ir.results) != 1:
        raise ModelError(f"{ir.source}: {len(ir.parameters)} inputs and {len(ir.results)} outputs (one of each needed)")

    def const_of(key: Key, what: str, layer: IrLayer) -> np.ndarray:
        if key not in consts:
            raise ModelError(f"{layer.type} {layer.name!r}: the {what} is computed at run time (not supported)")
        return consts[key].astype(np.float32)

    for layer in ir.layers:
        t, ins = layer.type, list(layer.inputs)
        out = (layer.id, min(layer.outputs)) if layer.outputs else (layer.id, 0)
        if t == "Parameter":
            source = out
        elif t == "Const":
            consts[out] = layer.value  # type: ignore[assignment]
        elif t == "Result":
            sink = ins[0]
        elif t == "Convert":
            dt = np.dtype(DTYPES[layer.attrs["destination_type"]])
            if ins[0] in consts:
                consts[out] = consts[ins[0]].astype(dt)
            else:
                ops.append(_Op("Cast", ins, out, {"to": dt}))
        elif t in ("Add", "Multiply"):
            if layer.attrs.get("auto_broadcast", "numpy") not in ("numpy", "none"):
                raise ModelError(f"{t} {layer.name!r}: broadcast {layer.attrs.get('auto_broadcast')!r} not supported")
            known = [k in consts for k in ins]
            if all(known):
                p, q = consts[ins[0]], consts[ins[1]]
                consts[out] = (p + q) if t == "Add" else (p * q)
            elif any(known):
                c, x = (ins[0], ins[1]) if known[0] else (ins[1], ins[0])
                ops.append(_Op("AddC" if t == "Add" else "MulC", [x], out, {"c": consts[c].astype(np.float32)}))
            else:
                ops.append(_Op("Add" if t == "Add" else "Mul", ins, out, {}))
        elif t in ("Convolution", "GroupConvolution"):
            w = const_of(ins[1], "weight", layer)
            group = 1
            if t == "GroupConvolution":
                group = w.shape[0]
                w = w.reshape((w.shape[0] * w.shape[1],) + w.shape[2:])
            begin, end = _pads(layer, 2)
            ops.append(_Op("Conv", ins[:1], out, {"W": w, "B": None, "group": group, "strides": layer.ints("strides"),
                                                  "dilations": layer.ints("dilations"), "pads": begin + end}))
        elif t == "AvgPool":
            begin, end = _pads(layer, 2)
            kernel = layer.ints("kernel")
            spatial = ir.shape(ins[0])[2:]
            if rewrite and list(spatial) == kernel and not any(begin + end):  # one window over the whole input
                ops.append(_Op("GlobalAveragePool", ins, out, {}))
            else:
                ops.append(_Op("AvgPool", ins, out, {
                    "kernel_shape": kernel, "strides": layer.ints("strides"), "pads": begin + end,
                    "count_include_pad": int(layer.attrs.get("exclude-pad", "false").lower() != "true"),
                    "ceil_mode": int(layer.attrs.get("rounding_type", "floor").lower() == "ceil")}))
        elif t == "PReLU":
            slope = const_of(ins[1], "slope", layer)
            shape = ir.shape(ins[0])
            if rewrite and slope.size == 1:  # one shared slope: LeakyRelu is the same function, and fuses into the Conv
                ops.append(_Op("LeakyRelu", ins[:1], out, {"alpha": float(slope.reshape(-1)[0])}))
            else:
                ops.append(_Op("PRelu", ins[:1], out, {"slope": _channel_slope(slope, len(shape), shape[1])}))
        elif t == "Sigmoid":
            ops.append(_Op("Sigmoid", ins, out, {}))
        else:
            raise ModelError(f"unsupported OpenVINO op {t!r}")
    if source is None or sink is None or sink in consts:
        raise ModelError(f"{ir.source}: the output does not depend on the input")
    return ops, source, sink


def _per_channel(c: np.ndarray, channels: int) -> np.ndarray | None:
    """A constant that broadcasts over (N, C, H, W) along C only, as a (C,) vector; None when it does not."""
    if c.size == 1:
        return np.full(channels, c.reshape(-1)[0], np.float32)
    if c.size == channels and c.ndim >= 3 and c.shape[-3] == channels:  # (1, C, 1, 1) or (C, 1, 1)
        return c.reshape(channels)
    return None


def _fold(ops: list[_Op], sink: Key) -> list[_Op]:
    """Fold per-channel MulC / AddC that directly follow a Conv (and nothing else reads the Conv) into its W and B."""
    users: Counter = Counter(k for op in ops for k in op.inputs)
    users[sink] += 1
    out: list[_Op] = []
    producer: dict[Key, _Op] = {}
    for op in ops:
        prev = producer.get(op.inputs[0]) if op.inputs else None
        if op.kind in ("AddC", "MulC") and prev is not None and prev.kind == "Conv" and users[prev.out] == 1:
            k = prev.attrs["W"].shape[0]
            c = _per_channel(op.attrs["c"], k)
            if c is not None:
                w, b = prev.attrs["W"], prev.attrs["B"]
                b = np.zeros(k, np.float32) if b is None else b
                if op.kind == "MulC":
                    prev.attrs["W"], b = w * c.reshape(k, 1, 1, 1), b * c
                else:
                    b = b + c
                prev.attrs["B"] = b.astype(np.float32)
                del producer[prev.out]
                prev.out = op.out  # the Conv now computes the folded op's tensor
                producer[op.out] = prev
                continue
        out.append(op)
        producer[op.out] = op
    return out


def _fold_input_scale(ops: list[_Op], sink: Key) -> list[_Op]:
    """MulC(c) [-> AddC(d)] -> Conv, per input channel, becomes [AddC(d / c) ->] Conv(W * c).

    Exact with zero padding too: the padding is zero before and after the scaling (a*x + b = a*(x + b/a)), whereas
    an Add cannot enter a padded convolution. Saves a pass over the tensor (the input normalisation, here)."""
    users: Counter = Counter(k for op in ops for k in op.inputs)
    users[sink] += 1
    by_out = {op.out: op for op in ops}
    drop: set[int] = set()
    for conv in ops:
        if conv.kind != "Conv" or conv.attrs["group"] != 1:
            continue
        chain = [by_out.get(conv.inputs[0])]
        if chain[0] is not None and chain[0].kind == "AddC":
            chain.insert(0, by_out.get(chain[0].inputs[0]))
        mul = chain[0]
        if mul is None or mul.kind != "MulC" or any(users[op.out] != 1 for op in chain if op is not None):
            continue
        cin = conv.attrs["W"].shape[1]
        c = _per_channel(mul.attrs["c"], cin)
        add = chain[1] if len(chain) == 2 else None
        d = _per_channel(add.attrs["c"], cin) if add is not None else None
        if c is None or not np.all(c) or (add is not None and d is None):
            continue
        conv.attrs["W"] = (conv.attrs["W"] * c.reshape(1, cin, 1, 1)).astype(np.float32)
        if add is not None:
            add.attrs["c"] = (d / c).reshape(1, cin, 1, 1).astype(np.float32)
            add.inputs = list(mul.inputs)
        else:
            conv.inputs = list(mul.inputs)
        drop.add(id(mul))
    return [op for op in ops if id(op) not in drop]


def build_onnx(ir: IrModel, input_name: str = "input", output_name: str = "output", fold: bool = True):
    """The ONNX model of the IR (float32, dynamic batch "N"), folded as the module docstring says.

    `fold=False` gives the literal translation (constants still evaluated): for tests and benchmarks."""
    from onnx import TensorProto, helper

    from .onnx_util import Graph

    ops, source, sink = _lower(ir, rewrite=fold)
    if fold:
        ops = _fold_input_scale(_fold(ops, sink), sink)
    g = Graph()
    names: dict[Key, str] = {source: input_name}
    for op in ops:
        x = [names[k] for k in op.inputs]
        a = op.attrs
        if op.kind == "Conv":
            inputs = x + [g.const(a["W"], "W")] + ([g.const(a["B"], "B")] if a["B"] is not None else [])
            y = g.op("Conv", inputs, "conv", kernel_shape=list(a["W"].shape[2:]), strides=a["strides"],
                     dilations=a["dilations"], pads=a["pads"], group=a["group"])
        elif op.kind in ("AddC", "MulC"):
            y = g.op(op.kind[:3], x + [g.const(a["c"], "c")], op.kind.lower())
        elif op.kind in ("Add", "Mul", "Sigmoid", "GlobalAveragePool"):
            y = g.op(op.kind, x)
        elif op.kind == "AvgPool":
            y = g.op("AveragePool", x, "avgpool", **a)
        elif op.kind == "LeakyRelu":
            y = g.op("LeakyRelu", x, alpha=a["alpha"])
        elif op.kind == "PRelu":
            y = g.op("PRelu", x + [g.const(a["slope"].astype(np.float32), "slope")])
        elif op.kind == "Cast":
            y = g.op("Cast", x, to=helper.np_dtype_to_tensor_dtype(a["to"]))
        else:
            raise ModelError(f"internal: no ONNX lowering for {op.kind}")
        names[op.out] = y
    if sink == source:
        names[sink] = g.op("Identity", [input_name])
    for node in g.nodes:  # the node computing the output takes its name
        if node.output[0] == names[sink]:
            node.output[0] = output_name
    # batch dynamic ("N"); a dimension the IR leaves dynamic (-1) stays unnamed
    in_shape, out_shape = ([d if d >= 0 else None for d in ir.shape(k)[1:]] for k in (source, sink))
    return g.model([helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["N", *in_shape])],
                   [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["N", *out_shape])],
                   ir.name or "openvino_ir", f"OpenVINO IR {Path(ir.source).name} as ONNX (faceindex)")
