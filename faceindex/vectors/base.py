"""The protocol every vector index implements."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np


class VectorIndex(Protocol):
    kind: str

    def add(self, ids: np.ndarray, vecs: np.ndarray) -> None:
        """Add (n,) int64 ids with (n, dim) float32 L2-normalised vectors."""
        ...

    def remove(self, ids: np.ndarray) -> int:
        """Remove ids; returns how many were present."""
        ...

    def search(self, vecs: np.ndarray, k: int, exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k inner products and ids (id -1 pads missing results), skipping `exclude` ids."""
        ...

    def ids(self) -> np.ndarray:
        """All ids held, sorted."""
        ...

    def save(self, path: Path) -> None: ...

    @property
    def count(self) -> int: ...
