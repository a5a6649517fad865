"""FAISS indexes over catalog face ids: exact inner-product search for small galleries, an HNSW graph (with
tombstones for deleted faces) for large ones, and IVF-Flat as an operator's choice (`index_kind`).

See docs/architecture.md ("Vector index kinds") for how the kind is chosen and why.
"""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path

import faiss
import numpy as np

from ..errors import CatalogError


def _as_ids(ids) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(ids, dtype=np.int64).reshape(-1))


def _as_vecs(vecs, dim: int) -> np.ndarray:
    v = np.ascontiguousarray(np.asarray(vecs, dtype=np.float32))
    if v.ndim != 2 or v.shape[1] != dim:
        raise ValueError(f"expected vectors of shape (n, {dim}), got {v.shape}")
    return v


class FaissIndex:
    """A FAISS index with catalog face ids; `kind` is "exact" or "ivf"."""

    def __init__(self, index: faiss.Index, dim: int, nprobe: int = 48) -> None:
        self.index = index
        self.dim = dim
        self.nprobe = nprobe
        self.kind = "ivf" if isinstance(index, faiss.IndexIVF) else "exact"
        self._excluded: tuple[np.ndarray, faiss.IDSelector] | None = None  # (ids, selector of all but them)

    @classmethod
    def exact(cls, dim: int) -> FaissIndex:
        return cls(faiss.IndexIDMap2(faiss.IndexFlatIP(dim)), dim)

    @classmethod
    def ivf(cls, dim: int, train: np.ndarray, nprobe: int = 48) -> FaissIndex:
        """An IVF-Flat index trained on `train` (a sample of the vectors it will hold)."""
        n = len(train)
        nlist = int(min(65536, max(16, 2 ** round(math.log2(4 * math.sqrt(n))))))
        nlist = min(nlist, max(1, n // 39))  # k-means wants >= 39 points per centroid
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.min_points_per_centroid = 5
        index.train(_as_vecs(train, dim))
        return cls(index, dim, nprobe)

    @property
    def count(self) -> int:
        return int(self.index.ntotal)

    def add(self, ids, vecs) -> None:
        ids = _as_ids(ids)
        if len(ids):
            self.index.add_with_ids(_as_vecs(vecs, self.dim), ids)

    def remove(self, ids) -> int:
        ids = _as_ids(ids)
        if not len(ids):
            return 0
        return int(self.index.remove_ids(faiss.IDSelectorBatch(ids)))

    def search(self, vecs, k: int, exclude=None) -> tuple[np.ndarray, np.ndarray]:
        v = _as_vecs(vecs, self.dim)
        k = max(1, min(int(k), max(1, self.count)))
        sel = None
        if exclude is not None and len(exclude):
            sel = self._all_but(_as_ids(exclude))
        if self.kind == "ivf":
            params = faiss.SearchParametersIVF(sel=sel, nprobe=self.nprobe)
        else:
            params = faiss.SearchParameters(sel=sel) if sel is not None else None
        sims, ids = self.index.search(v, k, params=params)
        return sims, ids

    def range_search(self, vecs, threshold: float) -> list[tuple[np.ndarray, np.ndarray]]:
        """For each query, (sims, ids) of every vector with inner product > threshold."""
        v = _as_vecs(vecs, self.dim)
        if self.count == 0:
            return [(np.zeros(0, np.float32), np.zeros(0, np.int64)) for _ in range(len(v))]
        params = faiss.SearchParametersIVF(nprobe=self.nprobe) if self.kind == "ivf" else None
        lims, sims, ids = self.index.range_search(v, float(threshold), params=params)
        return [(sims[lims[i]:lims[i + 1]], ids[lims[i]:lims[i + 1]]) for i in range(len(v))]

    def _all_but(self, ids: np.ndarray) -> faiss.IDSelector:
        """A selector of every id except `ids`, reused while the same ids are excluded.

        The engine excludes the same low-quality faces from every search: building a hash-set selector of 50k ids
        takes ~30 ms, 30x an IVF search of 1M faces, so it is built once; a bitmap (up to 8 MiB, ids < 2**26) is
        also quicker to build and to test than faiss's hash set.
        """
        cached = self._excluded
        if cached is not None and np.array_equal(cached[0], ids):
            return cached[1]
        if ids.min() >= 0 and ids.max() < 1 << 26:
            mask = np.zeros(int(ids.max()) + 1, dtype=bool)
            mask[ids] = True
            inner = faiss.IDSelectorBitmap(np.packbits(mask, bitorder="little"))
        else:
            inner = faiss.IDSelectorBatch(ids)
        sel = faiss.IDSelectorNot(inner)
        self._excluded = (ids.copy(), sel)
        return sel

    def ids(self) -> np.ndarray:
        if self.kind == "exact":
            return np.sort(faiss.vector_to_array(self.index.id_map).astype(np.int64))
        ivf = faiss.extract_index_ivf(self.index)
        lists = ivf.invlists
        parts = [faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy()
                 for i in range(ivf.nlist) if lists.list_size(i)]
        return np.sort(np.concatenate(parts).astype(np.int64)) if parts else np.zeros(0, np.int64)

    def save(self, path: Path) -> None:
        """Write atomically: a crash leaves the previous file or the new one, never half of one."""
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        faiss.write_index(self.index, str(tmp))
        os.replace(tmp, path)


class HnswIndex:
    """A FAISS HNSW graph over catalog face ids, for large galleries: sub-millisecond search at high recall.

    FAISS's HNSW cannot delete, so a removed face becomes a tombstone: a bit cleared in the `alive` mask, which
    a selector applies inside the graph search (a tombstoned face is never returned, from the moment `remove`
    returns). The graph still routes through tombstones, so recall holds until they pile up; the index manager
    rebuilds (compacts) it beside the live one when they pass `compact_fraction` of the graph.
    Positions are the graph's internal ids; `id_map[pos]` is the catalog face id. The mask is saved beside the
    index file (`<file>.alive.npy`); a stale mask is caught by the manager's id-set reconciliation.
    """

    kind = "hnsw"
    compact_fraction = 0.2

    def __init__(self, index: faiss.IndexIDMap2, alive: np.ndarray | None = None, ef_search: int = 192) -> None:
        self.index = index
        self.graph = faiss.downcast_index(index.index)
        self.dim = index.d
        self.ef_search = ef_search
        n = int(index.ntotal)
        self.id_map = faiss.vector_to_array(index.id_map).astype(np.int64)
        self.alive = np.ones(n, bool) if alive is None or len(alive) != n else alive.astype(bool)
        self._order: np.ndarray | None = None  # argsort of id_map, for id -> position lookups
        self._sel: tuple[int, np.ndarray | None, faiss.IDSelector] | None = None
        self._version = 0  # bumped on every change to id_map or alive

    @classmethod
    def empty(cls, dim: int, m: int = 32, ef_construction: int = 100, ef_search: int = 192) -> HnswIndex:
        graph = faiss.IndexHNSWFlat(dim, m, faiss.METRIC_INNER_PRODUCT)
        graph.hnsw.efConstruction = ef_construction
        return cls(faiss.IndexIDMap2(graph), ef_search=ef_search)

    @property
    def count(self) -> int:
        return int(self.alive.sum())

    @property
    def tombstones(self) -> int:
        return len(self.alive) - self.count

    def needs_compaction(self) -> bool:
        return self.tombstones > self.compact_fraction * max(1, len(self.alive))

    def _changed(self) -> None:
        self._version += 1
        self._order = None
        self._sel = None

    def _positions(self, ids: np.ndarray) -> np.ndarray:
        """Positions of the live entries holding `ids` (ids not held are skipped)."""
        if not len(ids) or not len(self.id_map):
            return np.zeros(0, np.int64)
        if self._order is None:
            self._order = np.argsort(self.id_map, kind="stable")
        sorted_ids = self.id_map[self._order]
        lo = np.searchsorted(sorted_ids, ids, side="left")
        hi = np.searchsorted(sorted_ids, ids, side="right")
        pos = np.concatenate([self._order[a:b] for a, b in zip(lo, hi) if b > a]) if (hi > lo).any() else \
            np.zeros(0, np.int64)
        return pos[self.alive[pos]]

    def add(self, ids, vecs) -> None:
        ids = _as_ids(ids)
        if not len(ids):
            return
        v = _as_vecs(vecs, self.dim)
        self.remove(ids)  # an id re-used by the catalog replaces its old entry
        self.index.add_with_ids(v, ids)
        self.id_map = np.concatenate([self.id_map, ids])
        self.alive = np.concatenate([self.alive, np.ones(len(ids), bool)])
        self._changed()

    def remove(self, ids) -> int:
        pos = self._positions(_as_ids(ids))
        if len(pos):
            self.alive[pos] = False
            self._changed()
        return len(pos)

    def _selector(self, exclude: np.ndarray | None) -> faiss.IDSelector | None:
        """Live positions minus those holding `exclude` ids, cached while neither changes."""
        cached = self._sel
        if cached is not None and cached[0] == self._version and (
                (cached[1] is None and exclude is None) or
                (cached[1] is not None and exclude is not None and np.array_equal(cached[1], exclude))):
            return cached[2]
        allowed = self.alive.copy()
        if exclude is not None and len(exclude):
            allowed[self._positions(exclude)] = False
        sel = None if allowed.all() else faiss.IDSelectorBitmap(np.packbits(allowed, bitorder="little"))
        self._sel = (self._version, None if exclude is None else exclude.copy(), sel)
        return sel

    def search(self, vecs, k: int, exclude=None) -> tuple[np.ndarray, np.ndarray]:
        v = _as_vecs(vecs, self.dim)
        k = max(1, min(int(k), max(1, self.count)))
        excl = _as_ids(exclude) if exclude is not None and len(exclude) else None
        sel = self._selector(excl)
        params = faiss.SearchParametersHNSW(efSearch=max(self.ef_search, k), sel=sel)
        sims, pos = self.graph.search(v, k, params=params)
        ids = np.where(pos >= 0, self.id_map[np.maximum(pos, 0)], -1)
        return sims, ids

    def range_search(self, vecs, threshold: float) -> list[tuple[np.ndarray, np.ndarray]]:
        """Exact: every live vector with inner product > threshold (opt-out and access must miss nothing)."""
        v = _as_vecs(vecs, self.dim)
        if not len(self.alive):
            return [(np.zeros(0, np.float32), np.zeros(0, np.int64)) for _ in range(len(v))]
        lims, sims, pos = self.graph.storage.range_search(v, float(threshold))
        out = []
        for i in range(len(v)):
            p, s = pos[lims[i]:lims[i + 1]], sims[lims[i]:lims[i + 1]]
            keep = self.alive[p]
            out.append((s[keep], self.id_map[p[keep]]))
        return out

    def ids(self) -> np.ndarray:
        return np.sort(self.id_map[self.alive])

    def save(self, path: Path) -> None:
        """Index file and tombstone mask, each written atomically (mask first; the manager reconciles a
        mismatch after a crash between the two)."""
        tmp = _alive_path(path).with_name(_alive_path(path).name + f".tmp{os.getpid()}.npy")
        np.save(tmp, self.alive)
        os.replace(tmp, _alive_path(path))
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        faiss.write_index(self.index, str(tmp))
        os.replace(tmp, path)


def _alive_path(path: Path) -> Path:
    return path.with_name(path.name + ".alive.npy")


def load_index(path: Path, nprobe: int = 48, ef_search: int = 192) -> FaissIndex | HnswIndex:
    """Whichever kind of index `path` holds."""
    try:
        index = faiss.read_index(str(path))
    except RuntimeError as e:
        raise CatalogError(f"cannot read vector index {path}: {e}") from e
    if isinstance(index, faiss.IndexIDMap2) and isinstance(faiss.downcast_index(index.index), faiss.IndexHNSW):
        alive = None
        with contextlib.suppress(OSError, ValueError):
            alive = np.load(_alive_path(path))
        return HnswIndex(index, alive, ef_search)
    return FaissIndex(index, index.d, nprobe)
