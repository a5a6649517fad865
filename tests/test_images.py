"""Decoding: formats, orientation, modes, limits and every kind of bad file, each with a clear ImageError."""

from __future__ import annotations

import io
import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from faceindex import images
from faceindex.errors import ImageError

LIMIT = dict(max_pixels=50_000_000, max_bytes=50_000_000)


def _grad(w=64, h=48) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 4 % 256, y * 5 % 256, (x + y) % 256], -1).astype(np.uint8)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF"])
def test_formats_decode_to_rgb(fmt):
    buf = io.BytesIO()
    Image.fromarray(_grad()).save(buf, fmt)
    px = images.load(buf.getvalue(), **LIMIT).pixels
    assert px.shape == (48, 64, 3) and px.dtype == np.uint8


def test_gif_first_frame():
    frames = [Image.new("RGB", (20, 10), c) for c in ((255, 0, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    px = images.load(buf.getvalue(), **LIMIT).pixels
    assert px[5, 5, 0] > 200 and px[5, 5, 2] < 50  # red: the first frame


def test_exif_orientation_applied():
    img = Image.fromarray(_grad(64, 48))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif.tobytes())
    px = images.load(buf.getvalue(), **LIMIT).pixels
    assert px.shape == (64, 48, 3)


@pytest.mark.parametrize("mode", ["L", "CMYK", "P", "RGBA", "LA", "I;16", "1"])
def test_modes(mode):
    if mode == "I;16":
        img = Image.fromarray((np.arange(40 * 30).reshape(30, 40) * 50).astype(np.uint16))
        fmt = "PNG"
    else:
        img = Image.fromarray(_grad(40, 30)).convert(mode)
        fmt = "TIFF" if mode == "CMYK" else "PNG"
    buf = io.BytesIO()
    img.save(buf, fmt)
    px = images.load(buf.getvalue(), **LIMIT).pixels
    assert px.shape == (30, 40, 3) and px.dtype == np.uint8
    if mode == "I;16":  # 16-bit range is mapped, not clipped to white
        assert 0 < px.mean() < 255 and px.max() > 100


def _png_header_only(w: int, h: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_decompression_bomb_refused_before_decoding():
    with pytest.raises(ImageError, match="too large"):
        images.load(_png_header_only(100_000, 100_000), **LIMIT)


def test_pixel_limit_is_configurable():
    buf = io.BytesIO()
    Image.fromarray(_grad(200, 100)).save(buf, "PNG")
    with pytest.raises(ImageError, match="20000 pixels > limit 10000"):
        images.load(buf.getvalue(), max_pixels=10_000, max_bytes=10**6)


def test_file_size_limit(tmp_path):
    p = tmp_path / "big.jpg"
    p.write_bytes(b"\xff" * 2000)
    with pytest.raises(ImageError, match="file too large"):
        images.load(p, max_pixels=10**6, max_bytes=1000)


def test_bad_files(tmp_path):
    good = io.BytesIO()
    Image.fromarray(_grad(300, 200)).save(good, "JPEG")
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "truncated.jpg").write_bytes(good.getvalue()[: len(good.getvalue()) // 2])
    (tmp_path / "text.jpg").write_text("this is not an image\n")
    os.symlink("loop.jpg", tmp_path / "loop.jpg")
    os.symlink("missing.jpg", tmp_path / "dangling.jpg")
    os.mkfifo(tmp_path / "pipe.jpg")
    expect = {"empty.jpg": "empty", "truncated.jpg": "truncated", "text.jpg": "not an image",
              "loop.jpg": "symbolic links", "dangling.jpg": "No such file", "pipe.jpg": "not a regular file"}
    for name, why in expect.items():
        with pytest.raises(ImageError, match=why):
            images.load(tmp_path / name, **LIMIT)


def test_walk_handles_directory_loops(tmp_path):
    (tmp_path / "a").mkdir()
    Image.fromarray(_grad()).save(tmp_path / "a" / "x.png")
    os.symlink("..", tmp_path / "a" / "up")  # a loop back to the root
    (tmp_path / "notes.txt").write_text("ignored: not an image suffix")
    files, problems = images.iter_image_files(tmp_path)
    assert [f.name for f in files] == ["x.png"]
    assert problems == []
