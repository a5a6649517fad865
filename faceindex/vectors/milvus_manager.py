"""The index manager for a Milvus vector store: no file in the data folder, a watermark in the catalog instead.

Every change is committed to the catalog first and written to Milvus after, so a crash in between leaves Milvus
behind the catalog. The manager records what Milvus reflects in the catalog's meta table
(`milvus_synced:<host>:<port>/<collection>` = catalog generation and highest face id written) after each write;
on open, when the catalog's generation moved past it, it writes the faces above the watermark again (and a window
of `WINDOW` ids below it, because SQLite reuses the largest ids after they are deleted) instead of scanning every
id, which at a billion faces would take hours. Deletions missed by a crash need no repair for correctness: every
search result is checked against the catalog (see `MilvusIndex`), and dead ids seen that way are deleted from
Milvus then. Several processes share one collection: each writes its own changes, none reconciles at a
generation change.
"""

from __future__ import annotations

import contextlib
import json

import numpy as np

from ..errors import FaceIndexError
from .manager import IndexManager
from .milvus import MilvusIndex, MilvusURL

WINDOW = 10_000
MILVUS_AUTO_EF = 192  # ef_search "auto" on Milvus: its graph had recall@10 0.998 at 200k faces (benchmarks.md)


class MilvusManager(IndexManager):
    """`IndexManager` with the vectors in a Milvus collection (one per model)."""

    def __init__(self, catalog, data, spec, settings) -> None:
        super().__init__(catalog, data, spec, settings)
        self.url = MilvusURL(settings.vectors)  # a bad URL fails here, before anything is written
        self._source_ids: dict[str, int] = {}

    @property
    def index(self) -> MilvusIndex:
        with self.lock:
            if self._index is None:
                self._index = self._load()
            self._gen = self.catalog.generation
            return self._index

    def _key(self) -> str:
        return f"milvus_synced:{self.url.host}:{self.url.port}/{self.url.collection(self.spec.key)}"

    def _load(self) -> MilvusIndex:
        ef = self.settings.ef_search
        index = MilvusIndex(self.url, self.spec.key, self.spec.dim, ef_search=MILVUS_AUTO_EF if ef == "auto" else ef,
                            nprobe=self.settings.nprobe, alive=self._alive)
        try:
            index.scan = lambda: self.catalog.embeddings(dim=self.spec.dim)
            raw = self.catalog.get_meta(self._key())
            mark = json.loads(raw) if raw else {"generation": -1, "max_id": -1}
            if mark["generation"] != self.catalog.generation or index.created:
                after = mark["max_id"] - WINDOW if mark["max_id"] >= 0 and index.count else -1
                ids = self.catalog.face_ids_after(after)
                for chunk in range(0, len(ids), 50_000):
                    part = ids[chunk:chunk + 50_000].tolist()
                    for got, vecs in self.catalog.embeddings(part, dim=self.spec.dim):
                        index.add(got, vecs, self._sources(got))
                self.repaired = (len(ids), 0)
                self._synced(index, int(ids.max()) if len(ids) else None)
            index.ensure_index()
        except BaseException:
            index.close()
            raise
        return index

    def _synced(self, index: MilvusIndex, max_id: int | None) -> None:
        """Record that Milvus reflects the catalog's current generation (and ids up to `max_id`)."""
        raw = self.catalog.get_meta(self._key())
        old = json.loads(raw)["max_id"] if raw else -1
        mark = {"generation": self.catalog.generation, "max_id": max(old, -1 if max_id is None else max_id)}
        with self.catalog.transaction():
            self.catalog.set_meta(self._key(), json.dumps(mark))

    def _alive(self, ids: np.ndarray) -> np.ndarray:
        """Which ids the catalog still holds; the others are deleted from Milvus as they are met."""
        held = self.catalog.face_records(ids.tolist())
        mask = np.fromiter((int(i) in held for i in ids), bool, len(ids))
        if not mask.all() and self._index is not None:
            with contextlib.suppress(FaceIndexError):  # garbage collection only: the search filtered them out
                self._index._delete(ids[~mask])
        return mask

    def _sources(self, ids: np.ndarray) -> np.ndarray:
        """The partition key of each face: the id of the source of its image's first file."""
        records = self.catalog.face_records(ids.tolist())
        out = np.zeros(len(ids), np.int64)
        for n, i in enumerate(ids.tolist()):
            rec = records.get(i)
            if rec is not None:
                if rec.source not in self._source_ids:
                    self._source_ids[rec.source] = self.catalog.source_id(rec.source)
                out[n] = self._source_ids[rec.source]
        return out

    def source_ids(self, names: list[str]) -> list[int]:
        """Source names -> the partition-key values of a source-limited search."""
        return [self.catalog.source_id(n) for n in names]

    def switch_model(self, spec) -> None:
        with self.lock:
            if self._index is not None:
                self._index.close()
            super().switch_model(spec)

    def _maybe_rebuild(self) -> None:
        """Milvus builds its own indexes segment by segment; the kind is checked on open (`ensure_index`)."""

    def apply(self, added_ids: list[int], added_vecs: list[np.ndarray], removed_ids: list[int]) -> None:
        with self.lock:
            index = self.index
            index.remove(np.asarray(removed_ids, np.int64))
            if added_ids:
                ids = np.asarray(added_ids, np.int64)
                index.add(ids, np.stack(added_vecs), self._sources(ids))
            self._synced(index, max(added_ids) if added_ids else None)
            self.mark_current()

    def finish_batch(self) -> None:
        """Nothing to save or rebuild: the watermark was written with the change."""

    def forget(self, face_ids: list[int]) -> None:
        with self.lock:
            index = self.index
            index.remove(np.asarray(face_ids, np.int64))
            self._synced(index, None)
            self.mark_current()

    def save(self) -> None:
        """No file: Milvus persists every write; the watermark is recorded with each change."""

    def close(self) -> None:
        with self.lock:
            if self._index is not None:
                self._index.close()
                self._index = None
