"""Packs brought by the operator: a folder with a `pack.toml`, ONNX files and a calibration table.

    name = "my-pack"                # what --model NAME takes; not a built-in name
    version = "1"
    dim = 512                       # embedding size the embedder outputs
    licence = "Apache-2.0"
    description = "..."             # optional
    calibration = "calibration.json"  # a table in the folder (benchmarks/lfw.py format), or a shipped table's name
    calibration_sha256 = "..."      # needed when the table is a file

    [embedder]
    file = "embedder.onnx"          # one input (N, 3, S, S) or (N, S, S, 3), one output (N, dim)
    sha256 = "..."
    size = 112                      # chip size S
    channels = "RGB"                # or "BGR"
    layout = "NCHW"                 # or "NHWC"
    mean = [127.5, 127.5, 127.5]    # the graph gets (pixel - mean) / std
    std = [128.0, 128.0, 128.0]

    [detector]                      # optional: the built-in YuNet (5 landmarks, ArcFace template alignment)
    kind = "yunet"

`faceindex models add DIR` checks all of it (hashes, the graph's input and output shapes on a test batch) before
copying the folder into the data folder's `packs/`; a broken pack is refused with a one-line error.
"""

from __future__ import annotations

import threading
import tomllib
from pathlib import Path

import numpy as np

from ..errors import ModelError
from .base import ARCFACE_112, Alignment, InputSpec, ModelPack, PackFile, scaled_template

PACK_FILE = "pack.toml"


def _need(table: dict, key: str, kind: type | tuple, where: str):
    if key not in table:
        raise ModelError(f"{where}: '{key}' is missing")
    value = table[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise ModelError(f"{where}: '{key}' has the wrong type ({type(value).__name__})")
    return value


def _triple(table: dict, key: str, default: float, where: str) -> tuple[float, float, float]:
    v = table.get(key, [default] * 3)
    if not (isinstance(v, list) and len(v) == 3 and all(isinstance(x, int | float) for x in v)):
        raise ModelError(f"{where}: '{key}' must be a list of 3 numbers")
    return (float(v[0]), float(v[1]), float(v[2]))


def load_pack(folder: Path) -> ModelPack:
    """The pack described by `folder/pack.toml` (parsed and checked for shape, not yet hashed)."""
    from . import packs

    where = str(folder / PACK_FILE)
    try:
        meta = tomllib.loads((folder / PACK_FILE).read_text())
    except FileNotFoundError as e:
        raise ModelError(f"{where} not found: a model pack folder needs a pack.toml") from e
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ModelError(f"{where} is not readable TOML: {e}") from e
    name = _need(meta, "name", str, where)
    if not name or not all(c.isalnum() or c in "-_." for c in name):
        raise ModelError(f"{where}: name {name!r} may hold letters, digits, '-', '_' and '.' only")
    version = str(_need(meta, "version", (str, int), where))
    dim = _need(meta, "dim", int, where)
    if not 8 <= dim <= 4096:
        raise ModelError(f"{where}: dim {dim} is out of range (8-4096)")
    emb = _need(meta, "embedder", dict, where)
    ewhere = f"{where} [embedder]"
    size = _need(emb, "size", int, ewhere)
    if not 32 <= size <= 512:
        raise ModelError(f"{ewhere}: size {size} is out of range (32-512)")
    channels = emb.get("channels", "RGB")
    layout = emb.get("layout", "NCHW")
    if channels not in ("RGB", "BGR") or layout not in ("NCHW", "NHWC"):
        raise ModelError(f"{ewhere}: channels must be RGB or BGR and layout NCHW or NHWC")
    spec = InputSpec(size, channels, layout, _triple(emb, "mean", 0.0, ewhere), _triple(emb, "std", 1.0, ewhere))
    if any(s == 0 for s in spec.std):
        raise ModelError(f"{ewhere}: std must not be 0")
    detector = meta.get("detector", {"kind": "yunet"})
    if not isinstance(detector, dict) or detector.get("kind", "yunet") != "yunet":
        raise ModelError(f"{where} [detector]: only kind = \"yunet\" (the built-in detector) is supported")
    files = [PackFile("embedder", folder / _need(emb, "file", str, ewhere), _need(emb, "sha256", str, ewhere).lower()),
             PackFile("detector", packs.YUNET_FILE, packs.builtin()["yunet-omz95"].files[0].sha256)]
    cal = _need(meta, "calibration", str, where)
    cal_path = folder / cal if cal.endswith(".json") else None
    if cal_path is not None:
        files.append(PackFile("calibration", cal_path, _need(meta, "calibration_sha256", str, where).lower()))
    return ModelPack(
        name=name, version=version, dim=dim, detector="YuNet 2023mar (built-in)", landmarks="YuNet's 5 points",
        alignment=Alignment("similarity", size, scaled_template(ARCFACE_112, 112, size)), input=spec,
        calibration=cal_path.stem if cal_path else cal, calibration_path=cal_path,
        licence=_need(meta, "licence", str, where), description=str(meta.get("description", "")),
        origin=str(folder), files=tuple(files), factory=build_onnx_pack, builtin=False, root=folder)


class OnnxEmbedder:
    """Any ONNX embedder with one input and one (N, dim) output, fed as the pack's InputSpec says."""

    def __init__(self, path: Path, spec: InputSpec, dim: int, threads: int = 1) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        try:
            self._session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own types for unreadable graphs
            raise ModelError(f"ONNX embedder {path.name} does not load: {str(e).splitlines()[0]}") from e
        inputs = self._session.get_inputs()
        if len(inputs) != 1:
            raise ModelError(f"ONNX embedder {path.name} has {len(inputs)} inputs; one is needed")
        self._input = inputs[0].name
        self.input_spec = spec
        self.dim = dim

    def embed(self, chips: np.ndarray) -> np.ndarray:
        if len(chips) == 0:
            return np.zeros((0, self.dim), np.float32)
        try:
            out = self._session.run(None, {self._input: self.input_spec.prepare(chips)})[0]
        except Exception as e:
            raise ModelError(f"ONNX embedder failed: {str(e).splitlines()[0]}") from e
        out = np.asarray(out, np.float32).reshape(len(chips), -1)
        if out.shape[1] != self.dim:
            raise ModelError(f"ONNX embedder outputs {out.shape[1]} values per face; the pack says dim = {self.dim}")
        return out


def build_onnx_pack(pack: ModelPack, settings):
    """Runtime of a user pack: the built-in YuNet and alignment, the pack's ONNX embedder."""
    from .yunet_omz import YunetOmzModels

    class _Models(YunetOmzModels):
        def __init__(self) -> None:
            super().__init__(pack, settings.backend)
            self._emb_lock = threading.Lock()

        @property
        def embedder(self):
            with self._emb_lock:
                if self._embedder is None:
                    f = next(f for f in pack.files if f.role == "embedder")
                    self._embedder = OnnxEmbedder(f.path, pack.input, pack.dim)
                return self._embedder

    return _Models()


def check_pack(folder: Path) -> ModelPack:
    """Load, hash and trial-run a pack folder; ModelError with one line saying what is wrong."""
    from . import packs

    pack = load_pack(folder)
    if pack.name in packs.builtin():
        raise ModelError(f"a pack may not take the built-in name {pack.name!r}")
    problems = pack.verify()
    if problems:
        raise ModelError(problems[0])
    if pack.calibration_path is not None:
        from .. import calibration

        cal = calibration.load(pack.calibration, pack.calibration_path)
        if cal.model != pack.key:
            raise ModelError(f"{pack.calibration_path.name} calibrates model {cal.model}, not {pack.key}")
    else:
        from .. import calibration

        calibration.load(pack.calibration)
    emb = OnnxEmbedder(next(f for f in pack.files if f.role == "embedder").path, pack.input, pack.dim)
    chips = np.random.default_rng(0).integers(0, 256, (2, pack.input.size, pack.input.size, 3), dtype=np.uint8)
    out = emb.embed(chips)
    if not np.all(np.isfinite(out)):
        raise ModelError(f"{pack.name}: the embedder gives non-finite values on a test batch")
    return pack
