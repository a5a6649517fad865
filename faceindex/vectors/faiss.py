"""FAISS indexes over catalog face ids: exact inner-product search for small galleries, IVF-Flat as an operator's
choice (`index_kind`); the graph and IVF-SQ8 kinds for large galleries (with tombstones) are in graph.py.

See docs/architecture.md ("Vector index kinds") for how the kind is chosen and why.
"""

from __future__ import annotations

import contextlib
import math
import mmap as _mmap
import os
import sys
from pathlib import Path

import faiss
import numpy as np

from ..errors import CatalogError
from .graph import IvfSqIndex, Tombstoned, _as_ids, _as_vecs, alive_path, fine_path
from .hnsw import HnswIndex, graph_of

__all__ = ["FaissIndex", "HnswIndex", "IvfSqIndex", "Tombstoned", "load_index"]


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


MAP_CODES = sys.platform == "linux"  # mapped graphs re-read their file through /proc/self/fd on the first add


def read_pinned(fd: int) -> faiss.Index:
    """The index in the open file `fd`, read into anonymous memory that the kernel backs with 2 MB pages where it
    can (transparent huge pages on request, `MADV_HUGEPAGE`) and parsed in place (FAISS `ZeroCopyIOReader`): its
    links, vectors and codes are views of that memory, which the returned index keeps alive.

    A graph search visits ~11k faces at 1M, each a link list and a vector somewhere in 0.7 GB: with 4 kB pages
    nearly every one is a TLB miss, with 2 MB pages the whole graph fits the TLB's reach. 0.87x the search time
    of the mapped graph at 1M dlib faces, 0.93x at 1M 256-d and 0.94x at 10M SQ8 (`benchmarks/huge_pages.py`,
    docs/benchmarks.md). Raises RuntimeError on a file FAISS cannot read."""
    size = os.fstat(fd).st_size
    if size == 0:
        raise RuntimeError("empty index file")
    mem = _mmap.mmap(-1, size, flags=_mmap.MAP_PRIVATE | _mmap.MAP_ANONYMOUS)  # private: shared memory gets no THP
    with contextlib.suppress(AttributeError, OSError):  # not Linux, or a kernel without THP: 4 kB pages
        mem.madvise(_mmap.MADV_HUGEPAGE)
    with memoryview(mem) as view:
        got = 0
        while got < size:
            n = os.preadv(fd, [view[got:]], got)
            if n <= 0:
                raise RuntimeError("index file ended before its size")
            got += n
    buf = np.frombuffer(mem, np.uint8)
    index = faiss.read_index(faiss.ZeroCopyIOReader(faiss.swig_ptr(buf), size), 0)
    index.referenced_objects = [buf]  # the memory lives as long as the index (the faiss idiom)
    return index


def _read_mapped(path: Path, pin: bool = False) -> tuple[faiss.IndexIDMap, int] | None:
    """(the HNSW graph in `path` with its vectors / codes memory-mapped, or with `pin` read into huge pages
    (`read_pinned`); an open descriptor of that file), or None when the file holds another kind (read it the
    usual way: other kinds change their stores in place)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        index = read_pinned(fd) if pin else faiss.read_index(f"/proc/self/fd/{fd}", faiss.IO_FLAG_MMAP_IFC)
    except (RuntimeError, OSError):  # OSError: no memory for the huge-page copy
        os.close(fd)
        return None
    if isinstance(index, faiss.IndexIDMap) and graph_of(faiss.downcast_index(index.index)) is not None:
        return index, fd
    del index
    os.close(fd)
    return None


def load_index(path: Path, nprobe: int = 48, ef_search: int | str = "auto",
               mmap: bool = False, pin: bool = False) -> FaissIndex | Tombstoned:
    """Whichever kind of index `path` holds. `mmap`: map the graph's vectors or codes and the fp16 re-rank
    sidecar instead of reading them (a graph opens reading its links only; pages load as searches touch them,
    and the first add reads the rest, see `Tombstoned.map_codes`). `pin` (with `mmap`): read a graph whole into
    huge pages instead (`read_pinned`: slower to open, faster to search; the first add reads it again)."""
    if mmap and MAP_CODES:
        mapped = _read_mapped(path, pin)
        if mapped is not None:
            index, fd = mapped
            graph = load_graph(index, path, ef_search, nprobe, mmap)
            graph.map_codes(fd, pinned=pin)
            return graph
    try:
        index = faiss.read_index(str(path))
    except RuntimeError as e:
        raise CatalogError(f"cannot read vector index {path}: {e}") from e
    if isinstance(index, faiss.IndexIDMap):  # IndexIDMap2 too
        graph = load_graph(index, path, ef_search, nprobe, mmap)
        if graph is not None:
            return graph
    return FaissIndex(index, index.d, nprobe)


def load_graph(index: faiss.IndexIDMap, path: Path, ef_search: int | str, nprobe: int,
               mmap: bool) -> Tombstoned | None:
    """The tombstoned kind `index` (read from `path`) is, with its sidecars; None when it is none of them."""
    inner = faiss.downcast_index(index.index)
    alive = fine = None
    with contextlib.suppress(OSError, ValueError):
        alive = np.load(alive_path(path))
    if isinstance(inner, (faiss.IndexHNSWSQ, faiss.IndexIVFScalarQuantizer, faiss.IndexPreTransform)):
        with contextlib.suppress(OSError, ValueError):
            fine = np.load(fine_path(path), mmap_mode="r" if mmap else None)
    if graph_of(inner) is not None:
        graph = HnswIndex(index, alive, ef_search, fine)
        graph.read_calibration(path)
        if graph.projected:
            graph.read_span(path)
        return graph
    if isinstance(inner, faiss.IndexIVFScalarQuantizer):
        return IvfSqIndex(index, alive, nprobe, fine)
    return None
