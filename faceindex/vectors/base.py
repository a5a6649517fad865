"""The protocol every vector index implements: FAISS in the data folder (vectors/faiss.py, the embedded
default) and a Milvus collection (vectors/milvus.py). tests/test_vector_contract.py runs one contract on each.

Ids are catalog face ids; the catalog is the source of truth. A store may be shared by several processes
(Milvus): then the index manager, not the store, decides what a search may return (see vectors/milvus.py)."""

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

    def range_search(self, vecs: np.ndarray, threshold: float) -> list[tuple[np.ndarray, np.ndarray]]:
        """For each query, (sims, ids) of every vector with inner product > threshold: exact, since opt-out and
        subject access must miss nothing."""
        ...

    def ids(self) -> np.ndarray:
        """All ids held, sorted."""
        ...

    def save(self, path: Path) -> None:
        """FAISS: write the file atomically. Milvus: seal its segments (every write is already durable)."""
        ...

    @property
    def count(self) -> int: ...
