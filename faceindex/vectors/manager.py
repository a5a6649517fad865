"""The derived vector index's life cycle: load, repair from the catalog, reshape (exact <-> IVF), save.

The catalog is the source of truth; the index file in the data folder is derived state with a sidecar
(`vectors.json`: model, catalog generation, count) that says what it reflects. Every process holding an index
reconciles it with the catalog when the catalog's generation moves (another process, or a background ingest).
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np

from ..catalog import Catalog
from ..errors import FaceIndexError
from .faiss import FaissIndex

INDEX_FILE = "vectors.faiss"
INDEX_META = "vectors.json"


class IndexManager:
    """Owns one data folder's vector index; thread-safe (one lock for loading, repair, and changes)."""

    def __init__(self, catalog: Catalog, data: Path, spec, exact_threshold: int, nprobe: int) -> None:
        self.catalog = catalog
        self.data = data
        self.spec = spec
        self.exact_threshold = exact_threshold
        self.nprobe = nprobe
        self.lock = threading.RLock()
        self.repaired: tuple[int, int] | None = None  # (added, removed) by the last repair on load
        self._index: FaissIndex | None = None
        self._gen = -1  # catalog generation the in-memory index reflects
        self._trained_n = 0
        self._gallery = (-1, 0.0, np.zeros(0, np.int64), 0)  # (generation, bar, low-quality ids, face count)

    # --- the index -------------------------------------------------------------------------------------------
    @property
    def index(self) -> FaissIndex:
        """The vector index, loaded once and repaired from the catalog when they disagree.

        When another process (or a background ingest) changed the catalog, the in-memory index is reconciled
        with it by id sets rather than reloaded.
        """
        with self.lock:
            gen = self.catalog.generation
            if self._index is None:
                self._index = self._load()
            elif self._gen != gen:
                self._reconcile(self._index)
                self._index = self.reshape(self._index)
                self._gen = gen
            return self._index

    def switch_model(self, spec) -> None:
        """Another model's embeddings are in the catalog now (a reindex): drop the index, rebuild on next use."""
        with self.lock:
            self.spec = spec
            self._index = None
            self._gen = -1
            self._trained_n = 0
            self._gallery = (-1, 0.0, np.zeros(0, np.int64), 0)

    @property
    def loaded(self) -> FaissIndex | None:
        return self._index

    def mark_current(self) -> None:
        """The in-memory index reflects the catalog's current generation (after a change made through it)."""
        self._gen = self.catalog.generation

    def _meta_path(self) -> Path:
        return self.data / INDEX_META

    def _reconcile(self, index: FaissIndex) -> tuple[int, int]:
        """Make the index hold exactly the catalog's faces; returns (added, removed)."""
        cat_ids = self.catalog.face_ids()
        idx_ids = index.ids()
        missing = np.setdiff1d(cat_ids, idx_ids, assume_unique=True)
        extra = np.setdiff1d(idx_ids, cat_ids, assume_unique=True)
        index.remove(extra)
        for ids, vecs in self.catalog.embeddings(missing.tolist(), dim=self.spec.dim):
            index.add(ids, vecs)
        return len(missing), len(extra)

    def _load(self) -> FaissIndex:
        gen = self.catalog.generation
        meta: dict = {}
        index: FaissIndex | None = None
        try:
            meta = json.loads(self._meta_path().read_text())
            if meta.get("model") == self.spec.key and (self.data / INDEX_FILE).is_file():
                index = FaissIndex.load(self.data / INDEX_FILE, self.nprobe)
        except (OSError, ValueError, FaceIndexError):
            index = None
        if index is not None and meta.get("generation") == gen and meta.get("count") == index.count:
            self._trained_n = meta.get("trained_n", 0)
            self._gen = gen
            return self.reshape(index)
        if index is None:
            index = self._rebuild()
            self.repaired = (index.count, 0)
        else:
            self._trained_n = meta.get("trained_n", 0) if index.kind == "ivf" else 0
            self.repaired = self._reconcile(index)
        index = self.reshape(index)
        self._save(index, gen)
        return index

    def reshape(self, index: FaissIndex) -> FaissIndex:
        """Exact below the threshold, IVF above; retrain IVF when the gallery has grown 8-fold."""
        n = index.count
        t = self.exact_threshold
        stale_ivf = index.kind == "ivf" and n > 8 * max(1, self._trained_n or n)
        if (index.kind == "exact" and n >= t) or (index.kind == "ivf" and n < t // 2) or stale_ivf:
            index = self._rebuild()
            self._save(index, self.catalog.generation)
        self._gen = self.catalog.generation
        return index

    def _rebuild(self) -> FaissIndex:
        """Build the vector index from the catalog's embeddings."""
        n = self.catalog.face_count()
        if n >= self.exact_threshold:
            all_ids, all_vecs = self.all_embeddings()
            rng = np.random.default_rng(0)
            sample = all_vecs[rng.choice(len(all_vecs), size=min(len(all_vecs), 200_000), replace=False)]
            index = FaissIndex.ivf(self.spec.dim, sample, self.nprobe)
            index.add(all_ids, all_vecs)
            self._trained_n = n
        else:
            index = FaissIndex.exact(self.spec.dim)
            self._trained_n = 0
            for ids, vecs in self.catalog.embeddings(dim=self.spec.dim):
                index.add(ids, vecs)
        self._gen = self.catalog.generation
        return index

    def all_embeddings(self, ids: list[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of every face in the catalog (or of `ids`), in id order."""
        parts = list(self.catalog.embeddings(ids, dim=self.spec.dim))
        if not parts:
            return np.zeros(0, np.int64), np.zeros((0, self.spec.dim), np.float32)
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def _save(self, index: FaissIndex, generation: int) -> None:
        index.save(self.data / INDEX_FILE)
        meta = {"model": self.spec.key, "generation": generation, "count": index.count, "kind": index.kind,
                "trained_n": self._trained_n if index.kind == "ivf" else 0}
        tmp = self._meta_path().with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(meta))
        os.replace(tmp, self._meta_path())

    def save(self) -> None:
        """Persist the in-memory index (if loaded) with the catalog generation it reflects."""
        with self.lock:
            if self._index is not None:
                self._save(self._index, self.catalog.generation)

    # --- changes ---------------------------------------------------------------------------------------------
    def apply(self, added_ids: list[int], added_vecs: list[np.ndarray], removed_ids: list[int]) -> None:
        """Mirror a committed catalog change (faces added and removed) in the loaded index."""
        with self.lock:
            index = self.index if self._index is None else self._index
            index.remove(np.asarray(removed_ids, np.int64))
            if added_ids:
                index.add(np.asarray(added_ids, np.int64), np.stack(added_vecs))
            self.mark_current()

    def finish_batch(self) -> None:
        """After a batch of changes: reshape if the size crossed a threshold, then save."""
        with self.lock:
            if self._index is not None:
                self._index = self.reshape(self._index)
            self.save()

    def forget(self, face_ids: list[int]) -> None:
        """Drop deleted faces from the loaded index and persist it."""
        with self.lock:
            if self._index is not None:
                self._index.remove(np.asarray(face_ids, np.int64))
                self.mark_current()
                self.save()

    # --- the searchable gallery --------------------------------------------------------------------------------
    def searchable(self, min_quality: float) -> tuple[np.ndarray, int]:
        """(ids below the quality bar, face count), cached per catalog generation: no table scan per search."""
        gen = self.catalog.generation
        cached = self._gallery
        if cached[0] != gen or cached[1] != min_quality:
            cached = (gen, min_quality, self.catalog.low_quality_ids(min_quality), self.catalog.face_count())
            self._gallery = cached
        return cached[2], cached[3]
