"""The derived vector index's life cycle: load, repair from the catalog, choose its kind, rebuild beside, save.

The catalog is the source of truth; the index file in the data folder is derived state with a sidecar
(`vectors.json`: model, catalog generation, count, kind) that says what it reflects. Every process holding an
index reconciles it with the catalog when the catalog's generation moves (another process, a background ingest).

A rebuild (a change of kind as the gallery grows or shrinks, an IVF grown 8-fold, an HNSW graph full of
tombstones) never blocks searches: it runs in a thread on its own catalog connection while the live index keeps
serving and taking changes; then, under the lock, the new index is reconciled with the catalog by id sets and
swapped in, and saved atomically. A crash mid-rebuild leaves the old index file in place.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from pathlib import Path

import numpy as np

from ..catalog import Catalog
from ..errors import FaceIndexError
from .ef import calibration_sample
from .faiss import MAP_CODES, FaissIndex, HnswIndex, IvfSqIndex, Tombstoned, load_index

INDEX_FILE = "vectors.faiss"
INDEX_META = "vectors.json"
TRAINED = ("ivf", "ivfsq")  # kinds with lists trained on the gallery: retrained when it grows 8-fold
BUILD_BATCH = 100_000  # faces read from the catalog and added at a time while building
CHECKPOINT_EVERY = 1_000_000  # faces added between two saves of a build in progress (resumable builds)
HELD_OUT_SHARE = 0.1  # the largest share of a new graph's faces held out for its calibration (500 from 5,000 on)
PARTIAL_FILE = "vectors.partial.faiss"
PARTIAL_META = "vectors.partial.json"
PIN_QUIET = 30.0  # seconds without a change before a graph changed in memory is read into huge pages again
PIN_UP_TO = 2 << 30  # largest graph file read into huge pages: at 10M faces (4 GB) it gained 6%, and the read
# needs twice the graph's memory while it runs (docs/benchmarks.md, benchmarks/huge_pages.py)

AnyIndex = FaissIndex | Tombstoned


class IndexManager:
    """Owns one data folder's vector index; thread-safe (one lock for loading, repair, changes and swaps)."""

    def __init__(self, catalog: Catalog, data: Path, spec, settings) -> None:
        self.catalog = catalog
        self.data = data
        self.spec = spec
        self.settings = settings
        self.lock = threading.RLock()
        self.repaired: tuple[int, int] | None = None  # (added, removed) by the last repair on load
        self._index: AnyIndex | None = None
        self._gen = -1  # catalog generation the in-memory index reflects
        self._trained_n = 0
        self._gallery = (-1, 0.0, np.zeros(0, np.int64), 0)  # (generation, bar, low-quality ids, face count)
        self._rebuild_thread: threading.Thread | None = None
        self.rebuild_error: BaseException | None = None
        self._pin = False  # serve graphs from huge pages (`pin_graph`)
        self._pin_thread: threading.Thread | None = None
        self.pin_error: BaseException | None = None  # why the last read into huge pages failed
        self._pin_tried: tuple[int, int] | None = None  # (id, version) of the index last read into huge pages
        self._changed_at = float("-inf")  # monotonic time of the last change to the in-memory index

    # --- the index -------------------------------------------------------------------------------------------
    @property
    def index(self) -> AnyIndex:
        """The vector index, loaded once and repaired from the catalog when they disagree.

        When another process (or a background ingest) changed the catalog, the in-memory index is reconciled
        with it by id sets rather than reloaded.
        """
        with self.lock:
            gen = self.catalog.generation
            if self._index is None:
                self._index = self._load()
            elif self._gen != gen:
                if self._reconcile(self._index, self.catalog) != (0, 0):
                    self._changed_at = time.monotonic()
                self._gen = gen
                self._maybe_rebuild()
            self._maybe_pin()
            return self._index

    def switch_model(self, spec) -> None:
        """Another model's embeddings are in the catalog now (a reindex): drop the index, rebuild on next use."""
        self.wait()  # a rebuild of the old model's index must not be swapped in afterwards
        with self.lock:
            self.spec = spec
            self._index = None
            self._gen = -1
            self._trained_n = 0
            self._gallery = (-1, 0.0, np.zeros(0, np.int64), 0)

    def mark_current(self, changed: bool = True) -> None:
        """The in-memory index reflects the catalog's current generation (after a change made through it, which
        moved the generation by one transaction when `changed`). When it moved further, another process (an
        ingest on another host, a server sharing the catalog) committed too: reconcile by id sets, so that the
        saved sidecar never claims a generation whose faces the index lacks."""
        gen = self.catalog.generation
        if self._index is not None and self._gen >= 0 and gen > self._gen + int(changed):
            self._reconcile(self._index, self.catalog)
        self._gen = gen
        if changed:
            self._changed_at = time.monotonic()

    def _meta_path(self) -> Path:
        return self.data / INDEX_META

    def _reconcile(self, index: AnyIndex, catalog: Catalog) -> tuple[int, int]:
        """Make the index hold exactly the catalog's faces; returns (added, removed)."""
        cat_ids = catalog.face_ids()
        idx_ids = index.ids()
        missing = np.setdiff1d(cat_ids, idx_ids, assume_unique=True)
        extra = np.setdiff1d(idx_ids, cat_ids, assume_unique=True)
        index.remove(extra)
        for ids, vecs in catalog.embeddings(missing.tolist(), dim=self.spec.dim):
            index.add(ids, vecs)
        return len(missing), len(extra)

    def _load(self) -> AnyIndex:
        gen = self.catalog.generation
        meta: dict = {}
        index: AnyIndex | None = None
        try:
            meta = json.loads(self._meta_path().read_text())
            if meta.get("model") == self.spec.key and (self.data / INDEX_FILE).is_file():
                # the fp16 re-rank copy (the largest file of a quantised index) is mapped, not read
                index = load_index(self.data / INDEX_FILE, self.settings.nprobe, self.settings.ef_search, mmap=True)
                if isinstance(index, IvfSqIndex):
                    index.nprobe = self.settings.ivfsq_nprobe
        except (OSError, ValueError, FaceIndexError):
            index = None
        self._trained_n = meta.get("trained_n", 0) if index is not None and index.kind in TRAINED else 0
        if index is not None and meta.get("generation") == gen and meta.get("count") == index.count:
            self._gen = gen
        else:
            if index is None:
                # nothing usable on disk: serve from an exact index at once (a copy of the vectors, no training);
                # a graph, if the gallery is large enough for one, is built beside it
                index = self._build("exact", self.catalog)
                self.repaired = (index.count, 0)
            else:
                self.repaired = self._reconcile(index, self.catalog)
            self._gen = gen
            self._save(index, gen)
        self._index = index
        self._maybe_rebuild()
        return self._index

    # --- choosing the kind, rebuilding beside ----------------------------------------------------------------
    def wanted_kind(self, index: AnyIndex) -> str | None:
        """The kind the index should be rebuilt as, or None when it is fine as it is."""
        n = index.count
        t = self.settings.exact_threshold
        choice = self.settings.index_kind
        if choice == "auto":
            large = n >= t or (index.kind != "exact" and n >= t // 2)  # hysteresis: no flapping at the threshold
            g = self.settings.graph_threshold
            huge = n >= g or (index.kind == "hnswsq" and n >= g // 2)
            want = ("hnswsq" if huge else "hnsw") if large else "exact"
        else:
            want = choice
        if want != index.kind:
            return want
        if index.kind in TRAINED and n > 8 * max(1, self._trained_n or n):
            return index.kind  # the lists were trained on a gallery 8x smaller
        if isinstance(index, Tombstoned) and index.needs_compaction():
            return index.kind
        return None

    def _maybe_rebuild(self) -> None:
        """Start a rebuild beside the live index when its kind or state calls for one (at most one at a time)."""
        if self._index is None or self._rebuild_thread is not None and self._rebuild_thread.is_alive():
            return
        kind = self.wanted_kind(self._index)
        if kind is None:
            return
        if kind == "exact":  # cheap: no training, no graph; just do it
            self._swap(self._build("exact", self.catalog))
            return
        self._rebuild_thread = threading.Thread(target=self._rebuild_beside, args=(kind,), daemon=True,
                                                name="faceindex-index-rebuild")
        self._rebuild_thread.start()

    def _rebuild_beside(self, kind: str) -> None:
        catalog = self.catalog.reopen()  # its own connection: the live one keeps serving
        try:
            new = self._build(kind, catalog)
            with self.lock:
                self._swap(new)
        except BaseException as e:  # the live index keeps serving; the next change tries again
            self.rebuild_error = e
        finally:
            catalog.close()

    def _swap(self, new: AnyIndex) -> None:
        with self.lock:
            self._reconcile(new, self.catalog)  # changes made while it was built
            self._index = new
            self._gen = self.catalog.generation
            self._save(new, self._gen)

    def wait(self, timeout: float | None = None) -> None:
        """Wait for a rebuild or a read into huge pages in progress (benchmarks, tests, processes about to
        exit)."""
        for thread in (self._rebuild_thread, self._pin_thread):
            if thread is not None:
                thread.join(timeout)

    # --- huge pages: a long-lived process serves its graph from memory the kernel maps in 2 MB pages ----------
    def pin_graph(self) -> None:
        """Serve HNSW graphs from huge pages from now on (`faiss.read_pinned`: 0.87x the search time at 1M dlib
        faces). For long-lived processes, the server: the index still opens mapped (0.1 s at 1M), and a thread
        then reads the saved graph into huge pages (0.3-1.2 s at 1M) and swaps it in if it holds exactly the
        faces of the live one. An add reads the graph back into ordinary memory (a view of huge pages cannot
        grow); it is read into huge pages again once the index has been saved and left unchanged PIN_QUIET
        seconds, and after every rebuild. A one-shot CLI search would only pay for the read."""
        with self.lock:
            self._pin = True
            self._maybe_pin()

    def _maybe_pin(self) -> None:
        index = self._index
        if not self._pin or not MAP_CODES or not isinstance(index, HnswIndex) or index.pinned:
            return  # (not Linux: graphs are read whole, no descriptor to read them back from)
        if any(t is not None and t.is_alive() for t in (self._pin_thread, self._rebuild_thread)):
            return  # one at a time, and none beside a build: both want memory and cores
        key = (id(index), index.version)
        if key == self._pin_tried or time.monotonic() - self._changed_at < PIN_QUIET:
            return
        self._pin_tried = key
        self._pin_thread = threading.Thread(target=self._pin_beside, args=(index, key), daemon=True,
                                            name="faceindex-index-pin")
        self._pin_thread.start()

    def _pin_beside(self, index: HnswIndex, key: tuple[int, int]) -> None:
        path = self.data / INDEX_FILE
        try:
            if path.stat().st_size > PIN_UP_TO:
                return
            pinned = load_index(path, self.settings.nprobe, self.settings.ef_search, mmap=True, pin=True)
        except Exception as e:  # noqa: BLE001 - the live index keeps serving, as it was
            self.pin_error = e
            return
        with self.lock:  # swapped in only when the file held exactly the live index's faces and nothing changed
            if (self._index is index and (id(index), index.version) == key and isinstance(pinned, HnswIndex)
                    and pinned.pinned and np.array_equal(pinned.id_map, index.id_map)
                    and np.array_equal(pinned.alive, index.alive) and pinned.calibrated == index.calibrated):
                self._index = pinned

    def _build(self, kind: str, catalog: Catalog) -> AnyIndex:
        """A new index of `kind` from `catalog`'s embeddings, streamed in batches; trained kinds and graphs are
        checkpointed every CHECKPOINT_EVERY faces, and a build of the same kind and model resumes from there."""
        if kind == "exact":
            index: AnyIndex = FaissIndex.exact(self.spec.dim)
            for ids, vecs in catalog.embeddings(dim=self.spec.dim):
                index.add(ids, vecs)
            return index
        index, done, held = self._resume(kind)
        if index is None:
            index, done = self._new_index(kind, catalog), -1
            # a graph's calibration faces are kept out of it until it is calibrated (`_calibrate`)
            held = calibration_sample(catalog.face_ids(), HELD_OUT_SHARE) if isinstance(index, HnswIndex) else \
                np.zeros(0, np.int64)
        since = 0
        for ids, vecs in catalog.embeddings(dim=self.spec.dim, batch=BUILD_BATCH):
            if ids[-1] <= done:  # added before the checkpoint this build resumed from
                continue
            keep = (ids > done) & ~np.isin(ids, held)
            index.add(ids[keep], vecs[keep])
            since += int(keep.sum())
            if since >= CHECKPOINT_EVERY:
                self._checkpoint(index, int(ids[-1]), held)
                since = 0
        for path in [self.data / PARTIAL_META, *self.data.glob(PARTIAL_FILE + "*")]:
            with contextlib.suppress(OSError):
                path.unlink()
        if isinstance(index, HnswIndex):
            index.reorder()  # faces linked to each other next to each other in memory: faster searches
            self._calibrate(index, catalog, held)
        return index

    def _calibrate(self, graph: HnswIndex, catalog: Catalog, held: np.ndarray) -> None:
        """Calibrate a new graph's `auto` ef_search (`vectors/ef.py`) on the faces `held` out of it, then add them.

        A face the graph holds is a poor stand-in for a probe: its search reaches its own node, whose links are
        its nearest neighbours, so it finds them at an ef that new faces do not (200k dlib faces: recall@10 0.99
        at ef 80 for faces in the graph, 128 for the same faces held out, 144 for real probes;
        `benchmarks/calibration_faces.py`, docs/benchmarks.md). A build resumed from a checkpoint written before
        faces were held out calibrates on faces the graph holds, as before."""
        held_out = len(held) > 0
        got, vecs = _all_embeddings(catalog, self.spec.dim,  # faces deleted meanwhile are gone
                                    (held if held_out else calibration_sample(graph.ids())).tolist())
        graph.calibrate(vecs, got)
        if held_out:
            graph.add(got, vecs)
            if graph.calibrated is not None:  # it holds for the graph with them: ef grows from this size on
                graph.calibrated = (graph.calibrated[0], graph.count)

    def _new_index(self, kind: str, catalog: Catalog) -> AnyIndex:
        # codes, lists and a graph's span are trained on a sample; the vectors then stream in (10M x 256 float32
        # is 10 GB)
        ids = catalog.face_ids()
        rng = np.random.default_rng(0)
        pick = np.sort(rng.choice(ids, size=min(len(ids), 200_000), replace=False)).tolist()
        sample = _all_embeddings(catalog, self.spec.dim, pick)[1]
        if kind in ("hnsw", "hnswsq"):
            graph = HnswIndex.empty(self.spec.dim, ef_search=self.settings.ef_search,
                                    codes="sq8" if kind == "hnswsq" else "flat", project=True)
            graph.train(sample)
            return graph
        self._trained_n = len(ids)
        if kind == "ivfsq":
            return IvfSqIndex.trained(self.spec.dim, sample, len(ids), self.settings.ivfsq_nprobe)
        return FaissIndex.ivf(self.spec.dim, sample, self.settings.nprobe)

    # --- resumable builds: a build of millions of faces takes long; a killed one resumes from its checkpoint ---
    def _checkpoint(self, index: AnyIndex, done: int, held: np.ndarray) -> None:
        """Save the index being built (faces up to id `done`, but those `held` out for its calibration) beside the
        live one, file first, then its meta."""
        index.save(self.data / PARTIAL_FILE)
        meta = {"model": self.spec.key, "kind": index.kind, "done": done, "trained_n": self._trained_n,
                "held": held.tolist()}
        tmp = (self.data / PARTIAL_META).with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(meta))
        os.replace(tmp, self.data / PARTIAL_META)

    def _resume(self, kind: str) -> tuple[AnyIndex | None, int, np.ndarray]:
        """(the checkpointed build of `kind` for this model, last face id in it, the ids held out of it for its
        calibration), or (None, -1, none)."""
        none = np.zeros(0, np.int64)
        try:
            meta = json.loads((self.data / PARTIAL_META).read_text())
            if meta.get("model") != self.spec.key or meta.get("kind") != kind:
                return None, -1, none
            held = np.asarray(meta.get("held", []), np.int64)
            index = load_index(self.data / PARTIAL_FILE, self.settings.nprobe, self.settings.ef_search)
        except (OSError, ValueError, TypeError, FaceIndexError):
            return None, -1, none
        if index.kind != kind:
            return None, -1, none
        if isinstance(index, IvfSqIndex):
            index.nprobe = self.settings.ivfsq_nprobe
        self._trained_n = int(meta.get("trained_n", 0))
        return index, int(meta["done"]), held

    def all_embeddings(self, ids: list[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of every face in the catalog (or of `ids`), in id order."""
        return _all_embeddings(self.catalog, self.spec.dim, ids)

    def _save(self, index: AnyIndex, generation: int) -> None:
        index.save(self.data / INDEX_FILE)
        meta = {"model": self.spec.key, "generation": generation, "count": index.count, "kind": index.kind,
                "trained_n": self._trained_n if index.kind in TRAINED else 0}
        tmp = self._meta_path().with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(meta))
        os.replace(tmp, self._meta_path())

    def save(self) -> None:
        """Persist the in-memory index (if loaded) with the catalog generation it reflects."""
        with self.lock:
            if self._index is not None:
                self._save(self._index, self.catalog.generation)

    def close(self) -> None:
        """Let a rebuild in progress finish (its result is saved), so that exiting never wastes it."""
        self.wait()

    # --- changes ---------------------------------------------------------------------------------------------
    def apply(self, added_ids: list[int], added_vecs: list[np.ndarray], removed_ids: list[int]) -> None:
        """Mirror a committed catalog change (faces added and removed) in the loaded index."""
        with self.lock:
            index = self.index if self._index is None else self._index
            index.remove(np.asarray(removed_ids, np.int64))
            if added_ids:
                index.add(np.asarray(added_ids, np.int64), np.stack(added_vecs))
            self.mark_current(bool(added_ids or removed_ids))

    def finish_batch(self) -> None:
        """After a batch of changes: save, and rebuild beside if the gallery now calls for another kind."""
        with self.lock:
            self.save()
            self._maybe_rebuild()

    def forget(self, face_ids: list[int]) -> None:
        """Drop deleted faces from the loaded index and persist it."""
        with self.lock:
            if self._index is not None:
                self._index.remove(np.asarray(face_ids, np.int64))
                self.mark_current()
                self.save()
                self._maybe_rebuild()

    # --- the searchable gallery --------------------------------------------------------------------------------
    def searchable(self, min_quality: float) -> tuple[np.ndarray, int]:
        """(ids below the quality bar, face count), cached per catalog generation: no table scan per search."""
        gen = self.catalog.generation
        cached = self._gallery
        if cached[0] != gen or cached[1] != min_quality:
            cached = (gen, min_quality, self.catalog.low_quality_ids(min_quality), self.catalog.face_count())
            self._gallery = cached
        return cached[2], cached[3]


def open_manager(catalog: Catalog, data: Path, spec, settings) -> IndexManager:
    """The manager for `settings.vectors`: the FAISS file in the data folder (unset), or a Milvus collection
    (milvus://..., whose module, and pymilvus, are imported only then)."""
    if getattr(settings, "vectors", None) not in (None, "", "faiss"):
        from .milvus_manager import MilvusManager

        return MilvusManager(catalog, data, spec, settings)
    return IndexManager(catalog, data, spec, settings)


def _all_embeddings(catalog: Catalog, dim: int, ids: list[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    parts = list(catalog.embeddings(ids, dim=dim))
    if not parts:
        return np.zeros(0, np.int64), np.zeros((0, dim), np.float32)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
