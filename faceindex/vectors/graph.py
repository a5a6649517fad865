"""Large-gallery indexes that never delete in place (`Tombstoned`): the HNSW graphs (hnsw.py) and IVF with SQ8
codes (here). A removed face becomes a tombstone; the quantised and projected kinds re-rank their short list
exactly from an fp16 copy of the vectors held beside the index.

See docs/architecture.md ("Vector index kinds") for how the kind is chosen and why.
"""

from __future__ import annotations

import math
import os
import weakref
from collections.abc import Iterator
from pathlib import Path

import faiss
import numpy as np


def _as_ids(ids) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(ids, dtype=np.int64).reshape(-1))


def _as_vecs(vecs, dim: int) -> np.ndarray:
    v = np.ascontiguousarray(np.asarray(vecs, dtype=np.float32))
    if v.ndim != 2 or v.shape[1] != dim:
        raise ValueError(f"expected vectors of shape (n, {dim}), got {v.shape}")
    return v


def alive_path(path: Path) -> Path:
    return path.with_name(path.name + ".alive.npy")


def fine_path(path: Path) -> Path:
    return path.with_name(path.name + ".fp16.npy")


def _save_npy(path: Path, arr: np.ndarray) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}.npy")
    np.save(tmp, arr)
    os.replace(tmp, path)


class Tombstoned:
    """Base of the graph and IVF-SQ8 kinds: a FAISS index over positions 0..n-1 (`id_map[pos]` = catalog face id).

    A removed face is a tombstone, a bit cleared in the `alive` mask that a selector applies inside the search, so
    it is never returned from the moment `remove` returns; the index manager compacts (rebuilds beside) once
    tombstones pass `compact_fraction`. Quantised kinds (`fine` is not None) fetch `rerank` x k candidates and
    score them exactly on `fine`, an fp16 copy of the vectors (2 bytes a dimension), saved as `<file>.fp16.npy`;
    the mask is saved as `<file>.alive.npy`; a stale sidecar is caught by the manager's id-set reconciliation.
    The id map is a plain IndexIDMap (files written before this held an IndexIDMap2, still read): IDMap2's reverse
    hash map costs ~50 bytes a face in memory and is rebuilt on every open (0.6 GB and seconds at 10M faces),
    and `id_map` here does its job.
    """

    kind = "?"
    compact_fraction = 0.2
    rerank = 4

    def __init__(self, index: faiss.IndexIDMap, alive: np.ndarray | None = None,
                 fine: np.ndarray | None = None, quantised: bool = False) -> None:
        self.index = index
        self.inner = faiss.downcast_index(index.index)
        self.dim = index.d
        n = int(index.ntotal)
        self._id_map = faiss.vector_to_array(index.id_map).astype(np.int64)
        self._alive = np.ones(n, bool) if alive is None or len(alive) != n else alive.astype(bool)
        # the fp16 copy: `_fine` as loaded (often a read-only memory map) + `_fine_new`, rows added since, so that
        # adds never pull the mapped file into memory
        self._fine = None
        self._fine_new = np.zeros((0, self.dim), np.float16)
        if quantised:
            self._fine = fine if fine is not None and fine.shape == (n, self.dim) else self._decode_all()
        # chunks added since the arrays were last joined: a build adds 10M faces in 200 chunks, and joining
        # once per chunk would copy the arrays 200 times
        self._pending: list[tuple[np.ndarray, np.ndarray | None]] = []
        self._max_id = int(self._id_map.max()) if n else -1
        self._order: np.ndarray | None = None  # argsort of id_map, for id -> position lookups
        self._sel: tuple[int, np.ndarray | None, faiss.IDSelector] | None = None
        self._version = 0  # bumped on every change to id_map or alive
        self._count: int | None = None
        # set by map_codes: the file whose vectors (or codes) are memory-mapped rather than read
        self._mapped: tuple[int, weakref.finalize] | None = None
        self.pinned = False  # the index is a view of huge-page memory (`faiss.read_pinned`)

    def map_codes(self, fd: int, pinned: bool = False) -> None:
        """The index's vectors / codes are memory-mapped from the file open as `fd` (faiss IO_FLAG_MMAP_IFC):
        opening a 1M-face graph reads its links only (0.1-0.2 s instead of 0.7-1.2 s); or, `pinned`, the index
        is a view of that file read into huge pages. Neither store can grow, so the first add reads the whole
        index into ordinary memory from the same file (`fd` keeps it even if a newer index has replaced it
        since)."""
        self._mapped = (fd, weakref.finalize(self, os.close, fd))
        self.pinned = pinned

    def _materialise(self) -> None:
        if self._mapped is None:
            return
        fd, closer = self._mapped
        full = faiss.read_index(f"/proc/self/fd/{fd}")
        if int(full.ntotal) != int(self.index.ntotal):  # cannot happen: the same open file
            raise RuntimeError("the mapped vector index changed under its open file")
        self.index = full
        self.inner = faiss.downcast_index(full.index)
        self._mapped = None
        self.pinned = False
        closer()

    def _join(self) -> None:
        if self._pending:
            ids = [p[0] for p in self._pending]
            self._id_map = np.concatenate([self._id_map, *ids])
            self._alive = np.concatenate([self._alive, np.ones(sum(len(i) for i in ids), bool)])
            if self._fine is not None:
                self._fine_new = np.concatenate([self._fine_new, *(p[1] for p in self._pending)])
            self._pending = []

    @property
    def id_map(self) -> np.ndarray:
        self._join()
        return self._id_map

    @property
    def version(self) -> int:
        """Moves on every change to the faces the index holds (its id map or tombstones)."""
        return self._version

    @property
    def alive(self) -> np.ndarray:
        self._join()
        return self._alive

    @property
    def quantised(self) -> bool:
        """Whether searches re-rank on the fp16 copy (the index holds codes or projections, not the vectors)."""
        return self._fine is not None

    def fine_rows(self, pos: np.ndarray) -> np.ndarray:
        """fp16 vectors at positions `pos` (any shape; quantised kinds)."""
        self._join()
        assert self._fine is not None
        base = len(self._fine)
        if not len(self._fine_new):
            return self._fine[pos]
        out = np.empty(pos.shape + (self.dim,), np.float16)
        old = pos < base
        out[old] = self._fine[pos[old]]
        out[~old] = self._fine_new[pos[~old] - base]
        return out

    def _decode_all(self) -> np.ndarray:
        """fp16 vectors from the codes (only when the sidecar is missing or stale: SQ8 precision, not exact)."""
        n = int(self.index.ntotal)
        out = np.empty((n, self.dim), np.float16)
        for s in range(0, n, 65536):
            e = min(n, s + 65536)
            out[s:e] = self.inner.reconstruct_n(s, e - s)
        return out

    # --- bookkeeping ---------------------------------------------------------------------------------------------
    @property
    def count(self) -> int:
        if self._count is None:  # cached: summing a 10M-face mask costs a millisecond, a whole search's budget
            self._count = int(self.alive.sum())
        return self._count

    @property
    def tombstones(self) -> int:
        return len(self.alive) - self.count

    def needs_compaction(self) -> bool:
        return self.tombstones > self.compact_fraction * max(1, len(self.alive))

    def _changed(self) -> None:
        self._count = None
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

    def _train(self, v: np.ndarray) -> None:
        """Train the codes on the first vectors added (kinds that need it and were not trained before)."""

    def train(self, sample) -> None:
        """Train the codes on a sample of the vectors the index will hold, before the first add."""
        if not self.inner.is_trained:
            self._train(_as_vecs(sample, self.dim))
            self.index.is_trained = True

    def add(self, ids, vecs) -> None:
        ids = _as_ids(ids)
        if not len(ids):
            return
        v = _as_vecs(vecs, self.dim)
        if int(ids.min()) <= self._max_id:
            self.remove(ids)  # an id re-used by the catalog replaces its old entry
        if not self.inner.is_trained:
            self._train(v)
            self.index.is_trained = True  # the id map copied the flag when it was made
        self._materialise()
        self.index.add_with_ids(v, ids)
        self._pending.append((ids, None if self._fine is None else v.astype(np.float16)))
        self._max_id = max(self._max_id, int(ids.max()))
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

    # --- search --------------------------------------------------------------------------------------------------
    def _params(self, k: int, sel) -> faiss.SearchParameters:
        raise NotImplementedError

    def search(self, vecs, k: int, exclude=None) -> tuple[np.ndarray, np.ndarray]:
        v = _as_vecs(vecs, self.dim)
        k = max(1, min(int(k), max(1, self.count)))
        excl = _as_ids(exclude) if exclude is not None and len(exclude) else None
        sel = self._selector(excl)
        rerank, outside = self._plan(v)
        wide = min(max(1, self.count), k * self.rerank) if rerank else k
        sims, pos = self.inner.search(v, wide, params=self._params(wide, sel))
        if rerank:
            sims, pos = self._rerank(v, pos, k, sims, outside)
        ids = self.id_map[pos]
        ids[pos < 0] = -1
        return sims, ids

    def _plan(self, v: np.ndarray) -> tuple[bool, np.ndarray | None]:
        """(whether to re-rank a short list on the fp16 copy, the queries' parts outside a graph's span when the
        re-rank only adds their term to the graph's scores). Quantised kinds re-rank everything."""
        return self.quantised, None

    def _rerank(self, v: np.ndarray, pos: np.ndarray, k: int, sims: np.ndarray | None = None,
                outside: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The short list scored exactly (fp16 vectors, float32 arithmetic), best k kept. With `outside` (the
        queries' parts outside a graph's span), the graph's scores plus the missing <outside, vector> term: the
        graph's float scores stay exact in the span, and fp16 rounding only touches the usually empty rest."""
        cand = self.fine_rows(np.maximum(pos, 0)).astype(np.float32)  # (nq, wide, d)
        s = np.einsum("qwd,qd->qw", cand, v if outside is None else outside)
        if outside is not None:
            s += sims
        s[pos < 0] = -np.inf
        order = np.argsort(-s, axis=1, kind="stable")[:, :k]
        sims = np.take_along_axis(s, order, 1)
        pos = np.take_along_axis(pos, order, 1)
        pos[~np.isfinite(sims)] = -1
        return np.where(np.isfinite(sims), sims, -np.inf).astype(np.float32), pos

    def _exact_scores(self, v: np.ndarray, start: int, stop: int) -> np.ndarray:
        if self.quantised:
            return v @ self.fine_rows(np.arange(start, stop)).astype(np.float32).T
        return v @ self.inner.storage.reconstruct_n(start, stop - start).T

    def _exact_blocks(self, v: np.ndarray) -> Iterator[tuple[int, int, np.ndarray]]:
        """(start, stop, scores of positions start..stop, dead faces at -inf) over every face, block by block."""
        n = len(self.alive)
        for start in range(0, n, 131072):
            stop = min(n, start + 131072)
            s = self._exact_scores(v, start, stop).astype(np.float32)
            s[:, ~self.alive[start:stop]] = -np.inf
            yield start, stop, s

    def exact_top(self, vecs, k: int) -> np.ndarray:
        """Ids of the exact k best live faces for each query, best first (-1 where fewer), every face scored
        (the graph's own ef calibration, `ef.calibrate`)."""
        v = _as_vecs(vecs, self.dim)
        best_s = np.full((len(v), k), -np.inf, np.float32)  # padding: fewer than k live faces
        best_p = np.zeros((len(v), k), np.int64)
        for start, stop, s in self._exact_blocks(v):
            s = np.concatenate([best_s, s], 1)
            p = np.concatenate([best_p, np.broadcast_to(np.arange(start, stop), (len(v), stop - start))], 1)
            top = np.argpartition(-s, k - 1, axis=1)[:, :k]
            best_s, best_p = np.take_along_axis(s, top, 1), np.take_along_axis(p, top, 1)
        order = np.argsort(-best_s, axis=1, kind="stable")
        best_s, best_p = np.take_along_axis(best_s, order, 1), np.take_along_axis(best_p, order, 1)
        return np.where(np.isfinite(best_s), self.id_map[best_p], -1)

    def range_search(self, vecs, threshold: float) -> list[tuple[np.ndarray, np.ndarray]]:
        """Exact: every live vector with inner product > threshold (opt-out and access must miss nothing)."""
        v = _as_vecs(vecs, self.dim)
        hits: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in range(len(v))]
        for start, _, s in self._exact_blocks(v):
            for i in range(len(v)):
                p = np.flatnonzero(s[i] > threshold)
                if len(p):
                    hits[i].append((s[i, p], self.id_map[start + p]))
        return [(np.concatenate([h[0] for h in hs]), np.concatenate([h[1] for h in hs])) if hs else
                (np.zeros(0, np.float32), np.zeros(0, np.int64)) for hs in hits]

    def ids(self) -> np.ndarray:
        return np.sort(self.id_map[self.alive])

    def _save_fine(self, path: Path) -> None:
        """The fp16 copy, written in blocks (joining the mapped part and the new rows in memory would read the
        whole file into memory), to a temp file renamed over the old one (a map of the old one stays valid)."""
        self._join()
        assert self._fine is not None
        n = len(self._fine) + len(self._fine_new)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}.npy")
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(n, self.dim))
        for s in range(0, n, 262144):
            out[s:s + 262144] = self.fine_rows(np.arange(s, min(n, s + 262144)))
        out.flush()
        del out
        os.replace(tmp, path)

    def save(self, path: Path) -> None:
        """Index file and sidecars, each written atomically (sidecars first; the manager reconciles a mismatch
        after a crash between them)."""
        _save_npy(alive_path(path), self.alive)
        if self.quantised:
            self._save_fine(fine_path(path))
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        faiss.write_index(self.index, str(tmp))
        os.replace(tmp, path)


class IvfSqIndex(Tombstoned):
    """IVF lists of SQ8 codes (1 byte a dimension) + fp16 re-rank: the kind for galleries too large for a graph
    in memory (10M faces). Lists are trained once on a sample; the manager retrains when the gallery grows 8x."""

    kind = "ivfsq"

    def __init__(self, index: faiss.IndexIDMap, alive: np.ndarray | None = None, nprobe: int = 64,
                 fine: np.ndarray | None = None) -> None:
        super().__init__(index, alive, fine, quantised=True)
        self.nprobe = nprobe

    @property
    def nlist(self) -> int:
        return int(self.inner.nlist)

    @classmethod
    def trained(cls, dim: int, train: np.ndarray, expected: int, nprobe: int = 64) -> IvfSqIndex:
        """Lists for a gallery of `expected` faces (about 4 sqrt(n), up to 65,536), trained on `train`."""
        nlist = int(min(65536, max(16, 2 ** round(math.log2(4 * math.sqrt(max(1, expected)))))))
        nlist = min(nlist, max(1, len(train) // 39))  # k-means wants >= 39 points per centroid
        quantizer = faiss.IndexFlatIP(dim)
        ivf = faiss.IndexIVFScalarQuantizer(quantizer, dim, nlist, faiss.ScalarQuantizer.QT_8bit,
                                            faiss.METRIC_INNER_PRODUCT)
        ivf.cp.min_points_per_centroid = 5
        ivf.by_residual = False  # codes of the vectors themselves: one distance table for all lists
        ivf.train(_as_vecs(train, dim))
        return cls(faiss.IndexIDMap(ivf), nprobe=nprobe, fine=np.zeros((0, dim), np.float16))

    def _params(self, k: int, sel) -> faiss.SearchParameters:
        return faiss.SearchParametersIVF(nprobe=self.nprobe, sel=sel)
