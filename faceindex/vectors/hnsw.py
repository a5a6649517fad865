"""HNSW graphs (FAISS), float32 vectors or SQ8 codes, optionally over the gallery's span (`span_basis`); their
`ef_search` "auto" is in `ef.py`.

See docs/architecture.md ("Vector index kinds") for how the kind is chosen and why.
"""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np

from ..models.onnx_util import atomic_write
from .ef import auto_ef, calibrate, read_calibration, write_calibration
from .graph import Tombstoned, _as_vecs

SPAN_LOST = 1e-6  # share of a training sample's energy the directions a projected graph drops may hold
SPAN_SHARE = 0.9  # project only when that keeps at most 90% of the dimensions
SPAN_ALIGN = 16  # a span is widened to a multiple of this many directions where that still fits SPAN_SHARE
SPAN_DRIFT = 1e-3  # share of an added face's energy outside the span that counts it as drifted
SPAN_REBUILD = 0.01  # drifted faces (share of the graph) that call for a rebuild on a fresh sample
SPAN_SLACK = 1e-4  # largest score error allowed from the parts outside the span (fp16 rounding is ~1e-3)
VISITED_BYTES_UP_TO = 1 << 31  # graphs up to this many faces track visited nodes in a byte array, not a hash set


def visit_with_bytes() -> None:
    """Have FAISS track the nodes a graph search visits in a byte per face rather than a hash set.

    FAISS (1.11 on) switches to a std::unordered_set once a graph holds `visited_table_hashset_threshold` faces
    (500k in its first releases with it, 10M in 1.15) to spare the array's memory. Each visited node then costs
    a hash insert: on the 10M-face graph of docs/benchmarks.md the byte array is 1.5-1.7x faster (ef 256: 2.96
    vs 4.42 ms; ef 576: 4.18 vs 7.16 ms, `benchmarks/visited_table.py`), on a 1M one 2x. The array costs one
    byte per face per searching thread (10 MB at 10M). A process-wide FAISS setting; FAISS before 1.11 has no
    hash set and no such setting.
    """
    try:
        if faiss.cvar.visited_table_hashset_threshold < VISITED_BYTES_UP_TO:
            faiss.cvar.visited_table_hashset_threshold = VISITED_BYTES_UP_TO
    except AttributeError:
        pass


def span_basis(sample: np.ndarray) -> np.ndarray | None:
    """(d, d') orthonormal basis of the directions holding all but SPAN_LOST of `sample`'s energy, or None when
    it would keep more than SPAN_SHARE of the d dimensions (or the sample is too small to tell: < 8 d vectors).

    Face embedders do not fill their space: dlib's 128-d descriptors of all 13,233 LFW faces lie in 78
    directions (the rest of the spectrum is ~1e-13 of the first eigenvalue: units of the last layer that never
    fire), the 256-d OMZ ones in ~150. A graph over the coordinates in that span computes the same inner
    products with 61% (59%) of the arithmetic and memory per visited face. The basis is uncentred (eigenvectors
    of the second moment, not the covariance), so that inner products, not just distances, are kept.

    The span is widened with the next directions to a multiple of SPAN_ALIGN (dlib: 80, OMZ: 160) where that
    still fits: FAISS scores SQ8 and fp16 codes with SIMD only when the width is a multiple of 16 (8 without
    AVX-512), and one element at a time otherwise. On a 1M-face SQ8 graph over dlib's 78 directions that made
    searches 2.7-2.9x slower (fp16: 3.1-3.3x) than over the same directions padded to 80
    (`benchmarks/code_width.py`, docs/benchmarks.md).
    """
    s = np.asarray(sample, np.float64)
    n, d = s.shape
    if n < 8 * d:
        return None
    w, v = np.linalg.eigh(s.T @ s / n)
    w, v = w[::-1], v[:, ::-1]
    kept = np.cumsum(w) / max(float(w.sum()), 1e-30)
    dims = widened(int(np.searchsorted(kept, 1 - SPAN_LOST)) + 1, d)
    if dims > SPAN_SHARE * d:
        return None
    return np.ascontiguousarray(v[:, :dims], np.float32)


def widened(dims: int, d: int) -> int:
    """`dims` span directions widened to the next multiple of SPAN_ALIGN where that still fits SPAN_SHARE of d."""
    aligned = -(-dims // SPAN_ALIGN) * SPAN_ALIGN
    return aligned if aligned <= SPAN_SHARE * d else dims


def span_path(path: Path) -> Path:
    return path.with_name(path.name + ".span.json")


def graph_of(inner: faiss.Index) -> faiss.IndexHNSW | None:
    """The HNSW graph `inner` is, or holds under a projection (IndexPreTransform); None for other kinds."""
    if isinstance(inner, faiss.IndexPreTransform):
        inner = faiss.downcast_index(inner.index)
    return inner if isinstance(inner, faiss.IndexHNSW) else None


def bfs_order(hnsw: faiss.HNSW, n: int, chunk: int = 65536) -> np.ndarray:
    """The graph's n nodes in breadth-first order of their level-0 links from the entry point (each frontier in
    the order its nodes were first linked to), then any node not reached; `order[new] = old`.

    Read in place (no copy of the link array, 4 GB at 10M faces) and a frontier `chunk` nodes at a time.
    """
    if n == 0:
        return np.zeros(0, np.int64)
    links = faiss.rev_swig_ptr(hnsw.neighbors.data(), hnsw.neighbors.size())
    starts = faiss.rev_swig_ptr(hnsw.offsets.data(), hnsw.offsets.size())
    slots = np.arange(hnsw.nb_neighbors(0), dtype=np.int64)
    seen = np.zeros(n, bool)
    order = np.empty(n, np.int64)
    frontier = np.array([max(0, int(hnsw.entry_point))], np.int64)
    seen[frontier] = True
    done = 0
    while len(frontier):
        order[done:done + len(frontier)] = frontier
        done += len(frontier)
        nxt = []
        for s in range(0, len(frontier), chunk):
            x = links[starts[frontier[s:s + chunk]].astype(np.int64)[:, None] + slots].ravel()
            x = x[x >= 0]
            x = x[~seen[x]]
            x = x[np.sort(np.unique(x, return_index=True)[1])]  # each once, where first linked
            seen[x] = True
            nxt.append(x.astype(np.int64))
        frontier = np.concatenate(nxt)
    order[done:] = np.flatnonzero(~seen)
    return order


GRAPH_SHAPE = (48, 200)
"""(M, efConstruction) of the graphs faceindex builds. Measured (docs/benchmarks.md) against M 32 /
efConstruction 100: at 1M 128-d faces recall@10 0.991 at ef 192 (1.3 ms) where M 32 needs ef 384 (2.5 ms) for
0.990; at 300k 256-d faces 0.990 at ef 384, which M 32 did not reach at any ef measured. Cost: 1.3-2.3x the build
time and 128 more bytes of links a face."""


class HnswIndex(Tombstoned):
    """An HNSW graph for large galleries: FAISS IndexHNSWFlat (kind "hnsw"), or IndexHNSWSQ with SQ8 codes and
    an fp16 re-rank (kind "hnswsq": half the memory of the flat graph at 256-d, for the largest galleries).

    Made with `project=True` and trained on a sample (`train`), the graph holds the faces' coordinates in the
    sample's span (`span_basis`) under a faiss LinearTransform, saved in the same file, with an fp16 copy of the
    whole vectors beside it. The graph's score of a face misses <query part outside the span, face part outside
    it>, at most |q_out| |x_out|; the index keeps the largest |x_out|^2 of its faces (saved beside it as
    `<file>.span.json`; unknown = 1), and when that bound is within SPAN_SLACK (real embeddings: |q_out|^2 and
    |x_out|^2 ~1e-5 or less) the graph's float scores are returned as they are. Otherwise a short list of 4 k is
    re-ranked with the missing term added from the fp16 copy, so a face added later with energy outside the span
    is still scored exactly and found by its projection. Once more than SPAN_REBUILD of the faces have drifted
    out of the span (a share over SPAN_DRIFT of their energy), `needs_compaction` asks the manager for a rebuild,
    which trains on a fresh sample.
    """

    kind = "hnsw"

    def __init__(self, index: faiss.IndexIDMap, alive: np.ndarray | None = None, ef_search: int | str = "auto",
                 fine: np.ndarray | None = None) -> None:
        inner = faiss.downcast_index(index.index)
        codes = isinstance(graph_of(inner), faiss.IndexHNSWSQ)
        super().__init__(index, alive, fine, codes or isinstance(inner, faiss.IndexPreTransform))
        visit_with_bytes()
        self.kind = "hnswsq" if codes else "hnsw"
        self.ef_search = ef_search  # an int, or "auto": auto_ef(live faces, the calibration)
        self.calibrated: tuple[int, int] | None = None  # (ef, faces then) from `calibrate`, saved beside the file
        self.calibration_recall: float | None = None
        self._spec: tuple[int, int, str] | None = None  # (m, efConstruction, codes) of a graph not trained yet
        self._span: np.ndarray | None = None  # the projection's basis, once read
        self._outside: np.ndarray | None = None  # (d, d) projection onto the span's complement, once made
        self._search_params: tuple[int, object, faiss.SearchParameters] | None = None  # (ef, selector, params)
        # faces added with over SPAN_DRIFT of their energy outside the span; the largest such energy of any face
        self._drifted, self._outside_max = 0, 0.0

    @staticmethod
    def _graph(dim: int, m: int, ef_construction: int, codes: str) -> faiss.IndexHNSW:
        if codes == "sq8":
            graph = faiss.IndexHNSWSQ(dim, faiss.ScalarQuantizer.QT_8bit, m, faiss.METRIC_INNER_PRODUCT)
        else:
            graph = faiss.IndexHNSWFlat(dim, m, faiss.METRIC_INNER_PRODUCT)
        graph.hnsw.efConstruction = ef_construction
        return graph

    @classmethod
    def empty(cls, dim: int, m: int = GRAPH_SHAPE[0], ef_construction: int = GRAPH_SHAPE[1],
              ef_search: int | str = "auto", codes: str = "flat", project: bool = False) -> HnswIndex:
        """A new graph (M and efConstruction: GRAPH_SHAPE unless given); with `project`, `train` on a sample of
        the gallery may put it over the sample's span."""
        out = cls(faiss.IndexIDMap(cls._graph(dim, m, ef_construction, codes)), ef_search=ef_search)
        if codes == "sq8":
            out._fine = np.zeros((0, dim), np.float16)
        if project:
            out._spec = (m, ef_construction, codes)
        return out

    @property
    def projected(self) -> bool:
        return isinstance(self.inner, faiss.IndexPreTransform)

    def _basis(self) -> np.ndarray:
        """(d, d') basis of the projection (the transform's matrix is its transpose), read once."""
        if self._span is None:
            lt = faiss.downcast_VectorTransform(self.inner.chain.at(0))
            self._span = np.ascontiguousarray(faiss.vector_to_array(lt.A).reshape(lt.d_out, lt.d_in).T)
        return self._span

    def train(self, sample) -> None:
        v = _as_vecs(sample, self.dim)
        if self._spec is not None and not int(self.index.ntotal):
            basis = span_basis(v)
            if basis is not None:
                m, efc, codes = self._spec
                lt = faiss.LinearTransform(self.dim, basis.shape[1], False)
                faiss.copy_array_to_vector(np.ascontiguousarray(basis.T).ravel(), lt.A)
                lt.is_trained = True
                lt.set_is_orthonormal()  # lets faiss map coordinates back (reconstruct) when the fp16 copy is lost
                self.inner = faiss.IndexPreTransform(lt, self._graph(basis.shape[1], m, efc, codes))
                self.index = faiss.IndexIDMap(self.inner)
                self._fine = np.zeros((0, self.dim), np.float16)
            self._spec = None
        super().train(v)

    def _train(self, v: np.ndarray) -> None:
        self.inner.train(v)

    def _plan(self, v: np.ndarray) -> tuple[bool, np.ndarray | None]:
        if not self.projected or self.kind == "hnswsq":  # SQ8 codes: the fp16 re-rank scores everything
            return super()._plan(v)
        if self._outside is None:  # I - B B^T: a query's part outside the span in one product (3 numpy calls a
            # search instead of 5; each costs microseconds with the caches cold from the last search)
            b = self._basis().astype(np.float64)
            self._outside = (np.eye(self.dim) - b @ b.T).astype(np.float32)
        out = v @ self._outside
        bound = float(np.einsum("nd,nd->n", out, out).max()) * self._outside_max
        return bound > SPAN_SLACK ** 2, out

    def add(self, ids, vecs) -> None:
        if self.projected:
            v = _as_vecs(vecs, self.dim)
            inside = np.einsum("nd,nd->n", *(2 * [v @ self._basis()]))
            total = np.maximum(np.einsum("nd,nd->n", v, v), 1e-30)
            self._drifted += int((1 - inside / total > SPAN_DRIFT).sum())
            self._outside_max = max(self._outside_max, float((total - inside).max()))
        super().add(ids, vecs)

    def reorder(self) -> None:
        """Renumber the faces in breadth-first order of the graph's links (`bfs_order`), so that faces linked to
        each other lie near each other in memory: a search's ~11k visited faces then touch fewer pages (TLB
        misses) and DRAM rows. The same graph and results in 0.79-0.89x the search time at 1M and 10M faces
        (docs/benchmarks.md, `benchmarks/graph_order.py`). The manager calls it once a build is complete, before
        the graph serves (not safe beside searches); faces added later go at the end, in the order they come,
        until the next rebuild. Reads a mapped index into memory first."""
        self._materialise()
        self._join()
        graph = graph_of(self.inner)
        if not int(graph.ntotal):
            return
        order = bfs_order(graph.hnsw, int(graph.ntotal))
        graph.permute_entries(order)  # links and vectors / codes (new position i holds old order[i])
        self._id_map = self._id_map[order]
        faiss.copy_array_to_vector(self._id_map, self.index.id_map)
        self._alive = self._alive[order]
        if self._fine is not None:
            self._fine = self.fine_rows(order)
            self._fine_new = np.zeros((0, self.dim), np.float16)
        self._changed()

    def calibrate(self, faces: np.ndarray, face_ids: np.ndarray) -> int | None:
        """Calibrate `auto` ef_search on `faces` (best faces the graph does not hold: `ef.calibrate`); the ef
        chosen, or None when the graph is too small to tell (the fixed curve then). Before the graph serves."""
        got = calibrate(self, faces, face_ids)
        self.calibrated = None if got is None else (got[0], self.count)
        self.calibration_recall = None if got is None else got[1]
        return None if got is None else got[0]

    def read_calibration(self, path: Path) -> None:
        self.calibrated = read_calibration(path)

    def save(self, path: Path) -> None:
        write_calibration(path, self.calibrated, self.calibration_recall)
        if self.projected:  # before the index (as the other sidecars): a crash between leaves a bound too high
            atomic_write(span_path(path), json.dumps({"outside_max": self._outside_max,
                                                      "drifted": self._drifted}).encode())
        super().save(path)

    def read_span(self, path: Path) -> None:
        """The span's statistics saved beside `path`; missing or unreadable: the bound is unknown (1)."""
        try:
            got = json.loads(span_path(path).read_text())
            self._outside_max, self._drifted = float(got["outside_max"]), int(got["drifted"])
        except (OSError, ValueError, KeyError, TypeError):
            self._outside_max, self._drifted = 1.0, 0

    def needs_compaction(self) -> bool:
        return (super().needs_compaction() or self._drifted > SPAN_REBUILD * max(1, len(self.alive))
                or self.narrow_span)

    @property
    def narrow_span(self) -> bool:
        """Whether the graph's span is narrower than SIMD width where `span_basis` now widens it (graphs saved
        before it did: dlib's 78 directions, 80 now): such a graph takes 1.13x the search time as floats, 2.7-2.9x
        as SQ8 codes (docs/benchmarks.md), so the manager rebuilds it beside, once, on a fresh sample."""
        if not self.projected:
            return False
        width = self._basis().shape[1]
        return widened(width, self.dim) != width

    def _params(self, k: int, sel) -> faiss.SearchParameters:
        ef = auto_ef(self.count, self.calibrated) if self.ef_search == "auto" else int(self.ef_search)
        ef = max(ef, k)
        cached = self._search_params  # made once per (ef, selector): a SWIG object costs ~10-40 us a search
        if cached is not None and cached[0] == ef and cached[1] is sel:
            return cached[2]
        params = faiss.SearchParametersHNSW(efSearch=ef, sel=sel)
        self._search_params = (ef, sel, params)
        return params
