"""dlib's image resizing, tiled image pyramid and MMOD detection decoding, in numpy with dlib's exact numbers.

`OnnxCnnDetector` (dlib_onnx.py) runs only the conv network in ONNX Runtime; everything around it is here: the
bilinear resize dlib uses (its SIMD/scalar split reproduced, so the pyramid and the scores are identical), the
upsampling pyramid level, the tiled pyramid the network sees, and the decoding of its score maps into rectangles
(thresholding, mapping back through the pyramid and the conv stack, non-max suppression).
"""

from __future__ import annotations

import numpy as np

from ..errors import ModelError
from .dlib_format import Layer


def conv_out(size: int, k: int, s: int, p: int) -> int:
    """Output length of a convolution of kernel k, stride s and padding p over `size` inputs."""
    return (size + 2 * p - k) // s + 1


# ----------------------------------------------------------------------------------------------------------------
# dlib's image resizing, bit for bit (dlib/image_transforms/interpolation.h, resize_image with interpolate_bilinear).
# dlib runs 4 output columns at a time in float32 (SSE simd4f: float positions accumulated in float, truncating
# conversions) until the 4th column's right neighbour leaves the image, then finishes the row in scalar code
# (double positions). Reproducing that split is what makes the pyramid, and so the scores, identical.


def _resize_rows(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ys = (n_in - 1) / float(max(n_out - 1, 1))
    y = np.cumsum(np.concatenate([[-ys], np.full(n_out, ys)]))[1:]  # y += y_scale, in double, as dlib
    top = np.floor(y).astype(np.intp)
    return top, np.minimum(top + 1, n_in - 1), y - top


def _resize_cols(n_in: int, n_out: int):
    xs = (n_in - 1) / float(max(n_out - 1, 1))
    x0 = -4 * xs
    groups = (n_out + 3) // 4 + 1
    step = np.float32(4 * xs)
    lanes = []
    for j in range(4):  # simd4f _x(x, x+x_scale, x+2*x_scale, x+3*x_scale); then _x += 4*x_scale, in float32
        seq = np.full(groups + 1, step, np.float32)
        seq[0] = np.float32(x0 + j * xs) if j else np.float32(x0)
        lanes.append(np.cumsum(seq, dtype=np.float32)[1:])
    x = np.stack(lanes, 1)
    left = np.trunc(x).astype(np.intp)
    stop = np.nonzero(left[:, 3] + 1 >= n_in)[0]
    split = min(4 * (int(stop[0]) if len(stop) else groups), n_out)
    xs_simd = x.reshape(-1)[:split]
    l_simd = left.reshape(-1)[:split]
    lr_simd = xs_simd - l_simd.astype(np.float32)
    xt = np.cumsum(np.concatenate([[-xs + split * xs], np.full(n_out - split, xs)]))[1:]
    l_tail = np.floor(xt).astype(np.intp)
    return split, l_simd, l_simd + 1, lr_simd, l_tail, np.minimum(l_tail + 1, n_in - 1), xt - l_tail


def resize_float(src: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """(C, H, W) float32 -> (C, out_h, out_w), exactly as dlib's bilinear resize_image of float images."""
    _, h, w = src.shape
    top, bottom, tb = _resize_rows(h, out_h)
    split, l_s, r_s, lr_s, l_t, r_t, lr_t = _resize_cols(w, out_w)
    out = np.empty((src.shape[0], out_h, out_w), np.float32)
    t_rows, b_rows = src[:, top], src[:, bottom]
    if split:
        tb32 = tb.astype(np.float32)[:, None]
        itb32 = (1 - tb).astype(np.float32)[:, None]
        ilr = np.float32(1) - lr_s
        out[:, :, :split] = (((itb32 * ilr) * t_rows[:, :, l_s] + (itb32 * lr_s) * t_rows[:, :, r_s])
                             + (tb32 * ilr) * b_rows[:, :, l_s]) + (tb32 * lr_s) * b_rows[:, :, r_s]
    if split < out_w:
        lr32 = lr_t.astype(np.float32)
        ilr32 = np.float32(1) - lr32
        a = (ilr32 * t_rows[:, :, l_t] + lr32 * t_rows[:, :, r_t]).astype(np.float64)
        b = (ilr32 * b_rows[:, :, l_t] + lr32 * b_rows[:, :, r_t]).astype(np.float64)
        out[:, :, split:] = ((1 - tb)[:, None] * a + tb[:, None] * b).astype(np.float32)
    return out


def resize_rgb(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (out_h, out_w, 3) uint8, exactly as dlib's bilinear resize_image of rgb_pixel images."""
    h, w, _ = img.shape
    top, bottom, tb = _resize_rows(h, out_h)
    split, l_s, r_s, lr_s, l_t, r_t, lr_t = _resize_cols(w, out_w)
    out = np.empty((out_h, out_w, 3), np.uint8)
    if split:
        t_rows, b_rows = img[top].astype(np.float32), img[bottom].astype(np.float32)
        tb32 = tb.astype(np.float32)[:, None, None]
        itb32 = (1 - tb).astype(np.float32)[:, None, None]
        lr = lr_s[:, None]
        ilr = np.float32(1) - lr
        v = (((itb32 * ilr) * t_rows[:, l_s] + (itb32 * lr) * t_rows[:, r_s]) + (tb32 * ilr) * b_rows[:, l_s]
             + (tb32 * lr) * b_rows[:, r_s])
        out[:, :split] = np.trunc(v).astype(np.uint8)
    if split < out_w:
        t_rows, b_rows = img[top].astype(np.float64), img[bottom].astype(np.float64)
        lr, tbb = lr_t[:, None], tb[:, None, None]
        v = (1 - tbb) * ((1 - lr) * t_rows[:, l_t] + lr * t_rows[:, r_t]) + tbb * ((1 - lr) * b_rows[:, l_t]
                                                                              + lr * b_rows[:, r_t])
        out[:, split:] = np.trunc(v).astype(np.uint8)
    return out


def _round(v: float) -> int:
    """dlib's double -> long conversion of coordinates: floor(v + 0.5)."""
    return int(np.floor(v + 0.5))


def pyramid_up2(img: np.ndarray) -> np.ndarray:
    """dlib::pyramid_up(img, pyramid_down<2>()): what dlib's Python CNN detector does once per `upsample`."""
    h, w = img.shape[:2]
    if h == 0 or w == 0:
        return img
    # rect_up of get_rect(img) with point_up(p) = (p + (1.25, 0.75)) * 2, rounded back to a rectangle
    left, top = _round(1.25 * 2), _round(0.75 * 2)
    right, bottom = _round((w - 1 + 1.25) * 2), _round((h - 1 + 0.75) * 2)
    if left > right or top > bottom:
        return np.zeros((0, 0, 3), np.uint8)
    return resize_rgb(img, bottom + 1, right + 1)


# ----------------------------------------------------------------------------------------------------------------
# dlib's tiled image pyramid (dlib/image_transforms/image_pyramid.h, dlib/dnn/input.h input_rgb_image_pyramid)

Rect = tuple[int, int, int, int]  # left, top, right, bottom (inclusive, like dlib::rectangle)


def tiled_pyramid_rects(nr: int, nc: int, rate: int = 6, padding: int = 10,
                        outer_padding: int = 11) -> tuple[list[Rect], int, int]:
    """impl::compute_tiled_image_pyramid_details for pyramid_down<rate>: level rectangles and the tiled image size."""
    if nr * nc == 0:
        return [], 0, 0
    min_height = 5
    sizes = [(nc, nr)]
    ratio = (rate - 1.0) / rate
    while True:
        nr, nc = int(np.floor(ratio * nr)), int(np.floor(ratio * nc))
        if nr * nc == 0 or nr < min_height:
            break
        sizes.append((nc, nr))
    first_w, first_h = sizes[0]
    total_height = sum(h + padding for _, h in sizes) - padding * 2
    height = 0
    prev_width = 0
    for w, h in sizes:
        if w <= first_w - prev_width - padding and (height - first_h) * 2 >= (total_height - first_h):
            break
        height += h + padding
        prev_width = w
    height -= padding
    width = first_w
    out_nr, out_nc = height + outer_padding * 2, width + outer_padding * 2
    rects: list[Rect] = []
    y = outer_padding
    i = 0
    while y < height + outer_padding and i < len(sizes):
        w, h = sizes[i]
        rects.append((outer_padding, y, outer_padding + w - 1, y + h - 1))
        y += h + padding
        i += 1
    y -= padding
    while i < len(sizes):
        w, h = sizes[i]
        x2, y2 = outer_padding + width - 1, y - 1  # p1; p2 = p1 - br_corner(rectangle(w, h)) = p1 - (w-1, h-1)
        rect = (x2 - (w - 1), y2 - (h - 1), x2, y2)
        r0 = rects[0]
        if max(r0[0], rect[0]) <= min(r0[2], rect[2]) and max(r0[1], rect[1]) <= min(r0[3], rect[3]):
            break  # would overlap the original image
        rects.append(rect)
        y -= h + padding
        i += 1
    return rects, out_nr, out_nc


def tiled_pyramid_tensor(img: np.ndarray, avg_rgb: tuple[float, float, float], rate: int = 6, padding: int = 10,
                         outer_padding: int = 11) -> tuple[np.ndarray, list[Rect]]:
    """input_rgb_image_pyramid::to_tensor: (1, 3, NR, NC) float32 tensor and the level rectangles."""
    rects, nr, nc = tiled_pyramid_rects(img.shape[0], img.shape[1], rate, padding, outer_padding)
    data = np.zeros((1, 3, nr, nc), np.float32)
    if not rects:
        return data, rects
    l0, t0, r0, b0 = rects[0]
    chw = img.transpose(2, 0, 1).astype(np.float32)
    data[0, :, t0:b0 + 1, l0:r0 + 1] = (chw - np.array(avg_rgb, np.float32)[:, None, None]) * np.float32(1 / 256)
    for (pl, pt, pr, pb), (ql, qt, qr, qb) in zip(rects, rects[1:]):
        data[0, :, qt:qb + 1, ql:qr + 1] = resize_float(data[0, :, pt:pb + 1, pl:pr + 1], qb - qt + 1, qr - ql + 1)
    return data, rects


def _nearest_rect(rects: list[Rect], x: int, y: int) -> int:
    best, best_d = 0, np.inf
    for i, (left, top, right, bottom) in enumerate(rects):
        if left <= x <= right and top <= y <= bottom:
            return i
        nx, ny = min(max(x, left), right), min(max(y, top), bottom)
        d = float(np.hypot(nx - x, ny - y))
        if d < best_d:
            best, best_d = i, d
    return best


def _box_overlaps(a: Rect, b: Rect, iou_thresh: float, covered_thresh: float) -> bool:
    """dlib::test_box_overlap (note: "outer" is the bounding box of both rectangles, as in dlib)."""
    iw = min(a[2], b[2]) - max(a[0], b[0]) + 1
    ih = min(a[3], b[3]) - max(a[1], b[1]) + 1
    if iw <= 0 or ih <= 0:
        return False
    inner = float(iw * ih)
    outer = float((max(a[2], b[2]) - min(a[0], b[0]) + 1) * (max(a[3], b[3]) - min(a[1], b[1]) + 1))
    area_a = float((a[2] - a[0] + 1) * (a[3] - a[1] + 1))
    area_b = float((b[2] - b[0] + 1) * (b[3] - b[1] + 1))
    return inner / outer > iou_thresh or inner / area_a > covered_thresh or inner / area_b > covered_thresh


def output_to_input_map(layers: list[Layer]) -> tuple[int, int, int, int]:
    """output_tensor_to_input_tensor for a plain conv stack: input = output * scale + offset (per axis)."""
    sy, oy, sx, ox = 1, 0, 1, 0
    for lay in reversed(layers):  # top (output) first, as dlib's visitor walks the network
        if lay.kind == "con":
            kh, kw = lay.params["weight"].shape[2:]
            (st_y, st_x), (py, px) = lay.params["stride"], lay.params["padding"]
            # p -> p*stride - padding + k/2, composed onto the mapping so far
            oy, sy = oy * st_y - py + kh // 2, sy * st_y
            ox, sx = ox * st_x - px + kw // 2, sx * st_x
        elif lay.kind not in ("affine", "relu"):
            raise ModelError(f"cannot map coordinates through a {lay.kind} layer")
    return sy, oy, sx, ox


def mmod_decode(scores: np.ndarray, rects: list[Rect], options: dict, coord_map: tuple[int, int, int, int],
                rate: int = 6, adjust_threshold: float = 0.0) -> list[tuple[Rect, float]]:
    """loss_mmod_::to_label for one image: threshold, map windows back to image space, sort, non-max suppression."""
    windows = options["detector_windows"]
    if options.get("use_bounding_box_regression"):
        raise ModelError("MMOD models with bounding box regression are not supported")
    sy, oy, sx, ox = coord_map
    up = rate / (rate - 1.0)  # pyramid_down<N>::point_up: p*N/(N-1) + 0.3
    dets: list[tuple[float, Rect]] = []
    for k, win in enumerate(windows):
        ys, xs = np.nonzero(scores[k] > adjust_threshold)
        hw, hh = (win["width"] - 1) / 2, (win["height"] - 1) / 2  # centered_drect
        for r, c in zip(ys.tolist(), xs.tolist()):
            px, py = float(c * sx + ox), float(r * sy + oy)
            left, top, right, bottom = px - hw, py - hh, px + hw, py + hh
            level = _nearest_rect(rects, _round((left + right) / 2), _round((top + bottom) / 2))
            lx, ly = rects[level][0], rects[level][1]
            left, top, right, bottom = left - lx, top - ly, right - lx, bottom - ly
            for _ in range(level):
                left, top, right, bottom = left * up + 0.3, top * up + 0.3, right * up + 0.3, bottom * up + 0.3
            dets.append((float(scores[k, r, c]), (_round(left), _round(top), _round(right), _round(bottom))))
    dets.sort(key=lambda d: d[0], reverse=True)
    nms = options["overlaps_nms"]
    final: list[tuple[Rect, float]] = []
    for score, rect in dets:
        if any(_box_overlaps(kept, rect, nms["iou_thresh"], nms["percent_covered_thresh"]) for kept, _ in final):
            continue
        final.append((rect, score))
    return final


def input_fits(hw: tuple[int, ...], convs: list) -> bool:
    """Whether an input of size hw leaves at least one output position after the conv stack."""
    h, w = hw
    for (kh, kw), (sy, sx), (py, px) in convs:
        if h + 2 * py < kh or w + 2 * px < kw:
            return False
        h, w = conv_out(h, kh, sy, py), conv_out(w, kw, sx, px)
    return h > 0 and w > 0


def rect_down2(rect: Rect, levels: int) -> Rect:
    """pyramid_down<2>::rect_down(rect, levels), rounded to a dlib::rectangle."""
    left, top, right, bottom = (float(v) for v in rect)
    for _ in range(levels):
        left, top, right, bottom = left / 2 - 1.25, top / 2 - 0.75, right / 2 - 1.25, bottom / 2 - 0.75
    return _round(left), _round(top), _round(right), _round(bottom)
