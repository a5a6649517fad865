"""What every ONNX-backed model shares: graph building, the sha256-keyed model cache, sessions, lazy loading.

A model read from foreign weights (dlib's .dat, OpenVINO's .xml + .bin) is turned into an ONNX graph once, serialised
into a cache folder under a name holding the sha256 of its source files and the builder's version, and run by ONNX
Runtime. Nothing happens at import time; `LazyOnnx` loads on first use, once, behind a lock.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
import threading
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..errors import ModelError

OPSET = 17


def default_cache_dir() -> Path:
    """$FACEINDEX_CACHE, else ~/.cache/faceindex."""
    env = os.environ.get("FACEINDEX_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "faceindex"


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file (the cache key of the ONNX model built from it)."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError as e:
        raise ModelError(f"cannot read model weights {path}: {e}") from e
    return h.hexdigest()


def sources_sha256(paths: Sequence[Path]) -> str:
    """The cache key of a model built from several files: one file's sha256, else the sha256 of their sha256s."""
    digests = [file_sha256(p) for p in paths]
    if len(digests) == 1:
        return digests[0]
    return hashlib.sha256("\n".join(digests).encode()).hexdigest()


class Graph:
    """Small helper around onnx.helper: unique names, initializers, nodes."""

    def __init__(self) -> None:
        import onnx
        from onnx import helper, numpy_helper

        self.onnx, self.helper, self.numpy_helper = onnx, helper, numpy_helper
        self.nodes: list = []
        self.inits: list = []
        self._n = 0

    def name(self, base: str) -> str:
        self._n += 1
        return f"{base}_{self._n}"

    def const(self, arr: np.ndarray, base: str) -> str:
        name = self.name(base)
        self.inits.append(self.numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def op(self, op_type: str, inputs: list[str], base: str | None = None, **attrs) -> str:
        out = self.name(base or op_type.lower())
        self.nodes.append(self.helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out

    def model(self, inputs: list, outputs: list, graph_name: str, doc: str):
        helper = self.helper
        graph = helper.make_graph(self.nodes, graph_name, inputs, outputs, initializer=self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="faceindex",
                                  doc_string=doc)
        model.ir_version = min(model.ir_version, 8)  # readable by older onnxruntime releases too
        self.onnx.checker.check_model(model)
        return model


def cached_model(digest: str, kind: str, builder_version: int, build: Callable[[], object],
                 cache_dir: Path) -> tuple[Path, bool, bytes | None]:
    """The serialised ONNX model of the sources with sha256 `digest`, built on first use and cached under it.

    Returns (path, built_now, model bytes when the cache could not be written, else None).
    """
    target = cache_dir / f"{kind}-{digest}-b{builder_version}.onnx"
    if target.is_file():
        return target, False, None
    data = build().SerializeToString()  # type: ignore[attr-defined]
    try:
        atomic_write(target, data)
    except OSError as e:  # a read-only home, say: run from memory, rebuild next time
        warnings.warn(f"faceindex: cannot cache the ONNX model in {cache_dir} ({e}); set FACEINDEX_CACHE",
                      RuntimeWarning, stacklevel=3)
        return target, True, data
    return target, True, None


def atomic_write(target: Path, data: bytes) -> None:
    """Write `data` to `target` so that readers see the old state or the whole file, never a part."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=target.name + ".", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def open_session(model: Path | bytes, threads: int):
    """An ONNX Runtime session with `threads` intra-op threads (CUDA when available, float32 kept exact)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, int(threads))
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    src = model if isinstance(model, bytes) else str(model)
    if "CUDAExecutionProvider" in ort.get_available_providers():
        # TF32 convolutions would cost ~3 decimal digits: keep float32 so that GPU results stay the CPU's results
        cuda = ("CUDAExecutionProvider", {"use_tf32": "0"})
        try:
            return ort.InferenceSession(src, sess_options=opts, providers=[cuda, "CPUExecutionProvider"])
        except Exception:  # an onnxruntime-gpu without that option, or a broken CUDA setup: plain CPU
            pass
    return ort.InferenceSession(src, sess_options=opts, providers=["CPUExecutionProvider"])


def check_runtime() -> None:
    """ModelError when onnx or onnxruntime is not installed."""
    for mod in ("onnx", "onnxruntime"):
        if importlib.util.find_spec(mod) is None:
            raise ModelError(f"package {mod} is not installed (pip install {mod})")


class LazyOnnx:
    """Shared lazy loading: parse the sources, build or reuse the cached ONNX model, open the session (once, locked).

    Subclasses set `kind` and `builder_version` (bump it when the generated graph changes, so that stale cached
    models are not reused) and implement `_parse` and `_build`.
    """

    kind = ""
    builder_version = 1

    def __init__(self, sources: Sequence[Path], cache_dir: Path | None, threads: int) -> None:
        check_runtime()
        self.sources = [Path(p) for p in sources]
        for p in self.sources:
            if not p.is_file():
                raise ModelError(f"model weights missing: {p}")
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.threads = threads
        self.model_path: Path | None = None
        self.built = False  # True when this instance had to build the ONNX model (cache miss)
        self._lock = threading.Lock()
        self._sess = None

    def _parse(self):
        raise NotImplementedError

    def _build(self, parsed):
        raise NotImplementedError

    def _after_load(self, parsed) -> None:
        """Hook for state derived from the parsed sources (None when the ONNX model came from the cache)."""

    def load(self) -> None:
        """Build or reuse the ONNX model and open the session now (otherwise done on first use)."""
        with self._lock:
            if self._sess is not None:
                return
            box: list = []

            def build():
                box.append(self._parse())
                return self._build(box[0])

            digest = sources_sha256(self.sources)
            path, built, data = cached_model(digest, self.kind, self.builder_version, build, self.cache_dir)
            try:
                sess = open_session(data if data is not None else path, self.threads)
            except Exception as e:
                names = ", ".join(str(p) for p in self.sources)
                if built:
                    raise ModelError(f"ONNX Runtime cannot load the model built from {names}: {e}") from e
                # a damaged cache file (disk trouble, a foreign file): rebuild it once
                path.unlink(missing_ok=True)
                path, built, data = cached_model(digest, self.kind, self.builder_version, build, self.cache_dir)
                try:
                    sess = open_session(data if data is not None else path, self.threads)
                except Exception as e2:
                    raise ModelError(f"ONNX Runtime cannot load {path}: {e2}") from e2
            self._after_load(box[0] if box else None)
            self.model_path = path if data is None else None  # None: not cached, ran from memory
            self.built, self._sess = built, sess

    def _session(self):
        if self._sess is None:
            self.load()
        return self._sess
