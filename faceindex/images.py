"""Decode images into RGB uint8 arrays: formats, EXIF orientation, size and decompression-bomb limits."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"})


@dataclass(frozen=True, slots=True)
class Loaded:
    """A decoded image and the facts about its file."""

    pixels: np.ndarray  # (H, W, 3) uint8 RGB, EXIF-rotated
    sha256: str
    size: int  # bytes


def read_bytes(path: str | os.PathLike, max_bytes: int, within: list[str] | None = None) -> bytes:
    """Read a regular file, refusing anything else with a clear ImageError.

    With `within` (real paths of allowed folders), the file actually opened must lie inside one of them: its open
    descriptor's real path is checked, so a file swapped for a link after an earlier check is refused.
    """
    p = os.fspath(path)
    try:
        st = os.stat(p)  # follows symlinks: a loop or dangling link fails here
    except OSError as e:
        raise ImageError(f"cannot read file: {e.strerror or e}") from e
    if not stat.S_ISREG(st.st_mode):
        raise ImageError("not a regular file")
    if st.st_size == 0:
        raise ImageError("empty file (0 bytes)")
    if st.st_size > max_bytes:
        raise ImageError(f"file too large ({st.st_size} bytes > limit {max_bytes})")
    try:
        with open(p, "rb") as f:
            if within is not None:
                real = os.path.realpath(f"/proc/self/fd/{f.fileno()}")
                if not any(os.path.commonpath([real, r]) == r for r in within):
                    raise ImageError("outside the allowed ingest roots: refused")
            return f.read()
    except OSError as e:
        raise ImageError(f"cannot read file: {e.strerror or e}") from e


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# A 1 x 60,000,000 "image" is within any pixel budget but is no photo, and decoding it costs seconds and gigabytes.
MAX_ASPECT = 25


def decode(data: bytes, max_pixels: int) -> np.ndarray:
    """Decode image bytes to an EXIF-rotated RGB uint8 array, or raise ImageError saying why."""
    if not data:
        raise ImageError("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if w <= 0 or h <= 0:
                raise ImageError("image has no pixels")
            if w * h > max_pixels:
                raise ImageError(f"image too large: {w}x{h} = {w * h} pixels > limit {max_pixels}")
            if max(w, h) > MAX_ASPECT * min(w, h):
                raise ImageError(f"image is {w}x{h}: an aspect ratio over {MAX_ASPECT}:1 is refused (not a photo)")
            img.load()  # first frame only for GIF / multi-page TIFF
            img = ImageOps.exif_transpose(img) or img
            return _to_rgb(img)
    except ImageError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageError(f"image too large (decompression bomb guard): {e}") from e
    except Image.DecompressionBombWarning as e:
        raise ImageError(f"image too large (decompression bomb guard): {e}") from e
    except UnidentifiedImageError as e:
        raise ImageError("not an image, or an unsupported format") from e
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        msg = str(e) or type(e).__name__
        if "truncated" in msg.lower():
            raise ImageError("truncated or corrupt image data") from e
        raise ImageError(f"corrupt image: {msg}") from e


def _to_rgb(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        a = np.asarray(img, dtype=np.float64)
        hi = float(a.max()) if a.size else 0.0
        if hi > 255:  # 16-bit (or wider) samples: map the format's range onto 0..255
            a = a * (255.0 / (65535.0 if hi <= 65535 else hi))
        a = np.clip(a, 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.stack([a, a, a], axis=-1))
    if mode == "F":
        a = np.asarray(img, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        a = ((a - lo) / (hi - lo) * 255.0) if hi > lo else np.zeros_like(a)
        a = a.astype(np.uint8)
        return np.ascontiguousarray(np.stack([a, a, a], axis=-1))
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8))


def load(source: str | os.PathLike | bytes, *, max_pixels: int, max_bytes: int) -> Loaded:
    """Load a path or raw bytes into a `Loaded` image."""
    data = source if isinstance(source, bytes | bytearray) else read_bytes(source, max_bytes)
    if len(data) > max_bytes:
        raise ImageError(f"file too large ({len(data)} bytes > limit {max_bytes})")
    return Loaded(decode(bytes(data), max_pixels), sha256_bytes(bytes(data)), len(data))


def iter_image_files(root: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Image-like files under `root` (recursively, following directory links once) and unreadable entries.

    Returns (files, problems). Directory symlink loops are visited once; files are matched by suffix so that
    a text file named .jpg is still tried (and reported) rather than silently skipped.
    """
    if root.is_file() or (root.is_symlink() and not root.is_dir()):
        return [root], []
    if not root.exists():
        return [], [(root, "no such file or directory")]
    files: list[Path] = []
    problems: list[tuple[Path, str]] = []
    seen_dirs: set[tuple[int, int]] = set()

    def onerror(e: OSError) -> None:
        problems.append((Path(e.filename or root), f"cannot list folder: {e.strerror or e}"))

    for dirpath, dirnames, filenames in os.walk(root, followlinks=True, onerror=onerror):
        try:
            st = os.stat(dirpath)
        except OSError as e:
            problems.append((Path(dirpath), f"cannot list folder: {e.strerror or e}"))
            dirnames[:] = []
            continue
        key = (st.st_dev, st.st_ino)
        if key in seen_dirs:  # a directory symlink loop, or the same folder reached twice
            dirnames[:] = []
            continue
        seen_dirs.add(key)
        dirnames.sort()
        for name in sorted(filenames):
            if Path(name).suffix.lower() in IMAGE_SUFFIXES:
                files.append(Path(dirpath) / name)
    return files, problems
