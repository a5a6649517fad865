"""Intel's face-reidentification-retail-0095 (Open Model Zoo, Apache-2.0) run by ONNX Runtime.

The OpenVINO IR that ships in the package (`files/omz-face-reidentification-retail-0095/`) is read by `openvino`,
turned into a folded ONNX graph, cached under the sha256 of the .xml and .bin (and the builder's version), and run
with a dynamic batch. Chips are 128x128 RGB, aligned by `align.warp_chip` (ArcFace template scaled by 128/112); the
network wants BGR 0-255 (its normalisation is inside the graph), which `embed` hands it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import ModelError
from .base import ModelSpec
from .onnx_util import LazyOnnx
from .openvino import IrModel, build_onnx, read_ir

MODEL_DIR = Path(__file__).resolve().parent / "files" / "omz-face-reidentification-retail-0095"
XML_FILE = MODEL_DIR / "face-reidentification-retail-0095.xml"
BIN_FILE = MODEL_DIR / "face-reidentification-retail-0095.bin"
# Chips per ONNX Runtime call. Measured on one CPU thread (benchmarks/embed.py): 4 is a little faster per face than
# 1 and clearly faster than 16, whose activations (~2 MB per face at the 64x64 layers) no longer stay in the caches.
EMBED_BATCH = 4

OMZ95_SPEC = ModelSpec("omz-face-reidentification-retail-0095", "2022.1", 256, "omz95")


class OmzEmbedder(LazyOnnx):
    """(N, 128, 128, 3) uint8 RGB chips -> (N, 256) float32 raw descriptors (not normalised)."""

    kind = "omz_face_reid_0095"
    # Bump when build_onnx's output changes, so that stale cached models are not reused.
    builder_version = 1
    spec = OMZ95_SPEC
    dim = 256
    input_size = 128

    def __init__(self, xml_path: str | os.PathLike | None = None, bin_path: str | os.PathLike | None = None,
                 cache_dir: Path | None = None, threads: int = 1) -> None:
        self.xml_path = Path(xml_path) if xml_path is not None else XML_FILE
        if bin_path is not None:
            self.bin_path = Path(bin_path)
        else:
            self.bin_path = BIN_FILE if xml_path is None else self.xml_path.with_suffix(".bin")
        super().__init__([self.xml_path, self.bin_path], cache_dir, threads)
        self.batch_size = EMBED_BATCH

    def _parse(self) -> IrModel:
        return read_ir(self.xml_path, self.bin_path)

    def _build(self, ir: IrModel):
        return build_onnx(ir)

    def embed(self, chips: np.ndarray) -> np.ndarray:
        """(N, 128, 128, 3) uint8 RGB aligned chips (or one (128, 128, 3) chip) -> (N, 256) float32 raw descriptors."""
        chips = np.asarray(chips)
        if chips.ndim == 3:
            chips = chips[None]
        size = self.input_size
        if chips.ndim != 4 or chips.shape[1:] != (size, size, 3):
            raise ValueError(f"expected (N, {size}, {size}, 3) chips, got {chips.shape}")
        if len(chips) == 0:
            return np.zeros((0, self.dim), np.float32)
        if chips.dtype != np.uint8:
            raise ValueError(f"expected uint8 chips, got {chips.dtype}")
        sess = self._session()
        out = []
        for i in range(0, len(chips), self.batch_size):
            # RGB -> BGR, NHWC -> NCHW, 0-255 float32: what the network was trained on
            x = np.ascontiguousarray(chips[i:i + self.batch_size, :, :, ::-1].transpose(0, 3, 1, 2), np.float32)
            y = sess.run(None, {"input": x})[0].reshape(len(x), -1)  # the IR's (N, 256, 1, 1)
            if y.shape[1] != self.dim:
                raise ModelError(f"{self.xml_path}: the network gives {y.shape[1]}-d embeddings, not {self.dim}")
            out.append(y)
        return np.concatenate(out).astype(np.float32, copy=False)
