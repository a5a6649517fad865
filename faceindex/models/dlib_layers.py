"""The layer readers of dlib's DNN format: each layer's details (dlib/dnn/layers.h), the input layers
(dlib/dnn/input.h) and the losses (dlib/dnn/loss.h), read from a `dlib_format._Reader` and checked against the
architecture's spec.

`dlib_format.py` walks the file along the architecture and calls these for each layer; what each returns becomes
one `Layer`'s params (or the network's input or loss options). Every mismatch raises ModelError via `r.fail`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .dlib_format import _Reader


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


DETAIL_READERS = {
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


def read_input(r: _Reader, kind: str) -> dict[str, Any]:
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


def read_loss(r: _Reader, kind: str) -> dict[str, Any]:
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
