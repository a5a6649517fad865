"""The vector-store protocol on a Milvus server or cluster (pymilvus), for galleries past one machine.

One collection per embedding model (`<prefix>_<model key>`; its description records the model key, so a
collection made by another model or dimension is refused), the face's source as partition key (a search limited
to sources only visits their partitions), HNSW below `hnsw_max` vectors and IVF_SQ8 above (see docs/scale.md).

Milvus is derived state like the FAISS file: the catalog is the source of truth. Searches run at "Session"
consistency by default: a process sees its own inserts and deletes at once (as with FAISS), and another
process's only within Milvus' staleness bound, as at the server's default "Bounded" (which the URL may choose:
`?consistency=Bounded`, cheaper still). Either way a face deleted a moment ago, by this process or another, may
still come back from Milvus; it is never returned by this class, because every result is checked against `alive`
(the catalog, given by the index manager) and against the deletions made through this object, and the search
asks for more than k (growing up to Milvus' top-k limit) until k live results are found.

pymilvus is imported only here, and this module only when a `milvus://` URL is chosen.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np

from ..errors import ModelError, VectorStoreError

DEFAULT_PORT = 19530
HNSW_MAX = 10_000_000  # vectors; above, IVF_SQ8 (a quarter of HNSW's memory, see docs/scale.md)
TOPK_LIMIT = 16_384  # Milvus' largest top-k
RECENT_S = 60.0  # deletions remembered locally for this long (Bounded staleness is a few seconds)
CONSISTENCY = ("Strong", "Session", "Bounded", "Eventually")
INDEX_TYPES = ("auto", "hnsw", "ivf_sq8")
# pymilvus pings every 10 s by default; servers that allow fewer pings answer with GOAWAY (too_many_pings) and
# the connection drops in the middle of a long index build or bulk insert. grpc-go's default floor is 5 min.
GRPC_OPTIONS = {"grpc.keepalive_time_ms": 300_000, "grpc.keepalive_timeout_ms": 20_000,
                "grpc.keepalive_permit_without_calls": True}


class MilvusURL:
    """`milvus://host[:port][/prefix][?index=auto|hnsw|ivf_sq8&consistency=Session&hnsw_max=N]`."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme != "milvus" or not parts.hostname:
            raise VectorStoreError(f"bad vectors URL {url!r}: expected milvus://host:port (or leave it unset for "
                                   "the embedded FAISS file)")
        try:
            self.port = parts.port or DEFAULT_PORT
        except ValueError as e:
            raise VectorStoreError(f"bad vectors URL {url!r}: {e}") from e
        self.host = parts.hostname
        self.prefix = parts.path.strip("/") or "faceindex"
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,100}", self.prefix):
            raise VectorStoreError(f"bad vectors URL {url!r}: the collection prefix must be letters, digits, _")
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        self.index = query.pop("index", "auto").lower()
        self.consistency = query.pop("consistency", "Session").capitalize()
        try:
            self.hnsw_max = int(query.pop("hnsw_max", HNSW_MAX))
        except ValueError as e:
            raise VectorStoreError(f"bad vectors URL {url!r}: hnsw_max must be a number") from e
        if self.index not in INDEX_TYPES or self.consistency not in CONSISTENCY or query:
            raise VectorStoreError(f"bad vectors URL {url!r}: index is one of {', '.join(INDEX_TYPES)}, consistency "
                                   f"one of {', '.join(CONSISTENCY)}; nothing else is understood")
        self.url = url

    def collection(self, model_key: str) -> str:
        """The collection of one model: `<prefix>_<model key with every other character as _>`."""
        return f"{self.prefix}_{re.sub(r'[^A-Za-z0-9]', '_', model_key)}"[:255]


def check(url: str | None) -> MilvusURL | None:
    """The parsed `vectors` setting: None for the embedded FAISS file (unset, "" or "faiss"), else a MilvusURL;
    VectorStoreError for anything else."""
    if not url or url == "faiss":
        return None
    if not str(url).startswith("milvus:"):
        raise VectorStoreError(f"bad vectors URL {url!r}: expected milvus://host:port (or leave it unset for the "
                               "embedded FAISS file)")
    return MilvusURL(str(url))


def ping(url: MilvusURL, timeout: float = 10.0) -> None:
    """VectorStoreError unless a Milvus server answers at `url` (checked before anything is written)."""
    from pymilvus import MilvusClient, MilvusException

    try:
        client = MilvusClient(uri=f"http://{url.host}:{url.port}", timeout=timeout, grpc_options=GRPC_OPTIONS)
        client.close()
    except MilvusException as e:
        raise VectorStoreError(f"cannot reach Milvus at {url.host}:{url.port}: {e.message}") from e


def _as_ids(ids) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(ids, dtype=np.int64).reshape(-1))


class MilvusIndex:
    """One model's collection on a Milvus server; implements `vectors.base.VectorIndex`."""

    def __init__(self, url: str | MilvusURL, model_key: str, dim: int, *, ef_search: int = 192,
                 nprobe: int = 128, alive: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        from pymilvus import MilvusClient, MilvusException  # here: only when milvus:// is chosen

        self.url = url if isinstance(url, MilvusURL) else MilvusURL(url)
        self.model_key = model_key
        self.dim = dim
        self.ef_search = ef_search
        self.nprobe = nprobe
        self.alive = alive  # ids -> mask of those the catalog still holds (None: trust Milvus and local deletes)
        self.scan: Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]] | None = None  # exact range search source
        self.name = self.url.collection(model_key)
        self._errors = MilvusException
        self._recent: dict[int, float] = {}  # id -> when it was removed through this object
        try:
            self.client = MilvusClient(uri=f"http://{self.url.host}:{self.url.port}", timeout=30,
                                       grpc_options=GRPC_OPTIONS)
        except MilvusException as e:
            raise VectorStoreError(f"cannot reach Milvus at {self.url.host}:{self.url.port}: {e.message}") from e
        try:
            self._open()
        except BaseException:
            self.client.close()
            raise

    # --- the collection ------------------------------------------------------------------------------------------
    def _call(self, what: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except self._errors as e:
            raise VectorStoreError(f"Milvus {what} failed on {self.name}: {e.message}") from e

    def _open(self) -> None:
        """Create the collection, or check that an existing one holds this model's vectors; then load it."""
        c = self.client
        tag = f"faceindex vectors of model {self.model_key}"
        self.created = False
        if self._call("list", c.has_collection, self.name):
            info = self._call("describe", c.describe_collection, self.name)
            dims = [f.get("params", {}).get("dim") for f in info["fields"] if f["name"] == "vec"]
            if info.get("description") != tag or dims != [self.dim]:
                raise ModelError(f"Milvus collection {self.name} was not made for model {self.model_key} "
                                 f"(dim {self.dim}): it says {info.get('description')!r}; use another prefix")
        else:
            from pymilvus import DataType, MilvusClient

            schema = MilvusClient.create_schema(auto_id=False, description=tag)
            schema.add_field("id", DataType.INT64, is_primary=True)
            schema.add_field("source", DataType.INT64, is_partition_key=True)
            schema.add_field("vec", DataType.FLOAT_VECTOR, dim=self.dim)
            # 64 partitions (Milvus' default for a partition key) hashed from source ids: a source filter prunes
            # the search to one partition in 64
            self._call("create", c.create_collection, self.name, schema=schema,
                       index_params=self._index_params("hnsw" if self.url.index == "auto" else self.url.index),
                       num_partitions=64, consistency_level="Bounded")
            self.created = True
        self._call("load", c.load_collection, self.name)
        self.kind = "milvus-" + self._index_type()

    def _index_type(self) -> str:
        desc = self._call("describe index", self.client.describe_index, self.name, "vec")
        return str(desc.get("index_type", "")).lower()

    def _index_params(self, kind: str):
        params = self.client.prepare_index_params()
        if kind == "hnsw":  # M 32 / efConstruction 100: measured on Milvus (recall@10 0.998 at 200k, benchmarks.md)
            params.add_index("vec", index_type="HNSW", metric_type="IP", params={"M": 32, "efConstruction": 100})
        else:
            # IVF is built per segment (512 MB by default): Milvus' rule of thumb 4 sqrt(rows per segment) gives
            # ~2,900 lists for full segments of 256-d faces; 1,024 is the largest count that never exceeds the
            # rows of a segment Milvus indexes at all (>= 1,024 rows), so small segments sealed when idle build too
            params.add_index("vec", index_type="IVF_SQ8", metric_type="IP", params={"nlist": 1024})
        return params

    def wanted_index(self, n: int) -> str:
        """HNSW below `hnsw_max` vectors, IVF_SQ8 above (back to HNSW only below half: no flapping)."""
        if self.url.index != "auto":
            return self.url.index
        current = self.kind.removeprefix("milvus-")
        large = n >= self.url.hnsw_max or (current == "ivf_sq8" and n >= self.url.hnsw_max // 2)
        return "ivf_sq8" if large else "hnsw"

    def ensure_index(self, n: int | None = None) -> bool:
        """Rebuild the index as the kind the size calls for; True when it did. Searches wait meanwhile (Milvus
        must release a collection to drop its index), so the manager calls this on open only."""
        n = self.count if n is None else n
        want = self.wanted_index(n)
        if self.kind == "milvus-" + want:
            return False
        c = self.client
        self._call("release", c.release_collection, self.name)
        self._call("drop index", c.drop_index, self.name, "vec")
        self._call("create index", c.create_index, self.name, self._index_params(want))
        self._call("load", c.load_collection, self.name)
        self.kind = "milvus-" + want
        return True

    # --- the protocol --------------------------------------------------------------------------------------------
    def add(self, ids, vecs, sources=None) -> None:
        """Add vectors; `sources` (source id per vector, the partition key) defaults to 0.

        An id already held is replaced: deleted first, then inserted (Milvus 2.3's upsert loses the partition
        key, and its insert would keep both rows)."""
        ids = _as_ids(ids)
        if not len(ids):
            return
        v = np.ascontiguousarray(np.asarray(vecs, dtype=np.float32))
        if v.ndim != 2 or v.shape != (len(ids), self.dim):
            raise ValueError(f"expected vectors of shape ({len(ids)}, {self.dim}), got {v.shape}")
        src = np.zeros(len(ids), np.int64) if sources is None else _as_ids(sources)
        self._delete(ids)
        for a in range(0, len(ids), 10_000):  # gRPC messages stay well under Milvus' 64 MB default
            rows = [{"id": int(i), "source": int(s), "vec": x} for i, s, x in
                    zip(ids[a:a + 10_000], src[a:a + 10_000], v[a:a + 10_000].tolist())]
            self._call("insert", self.client.insert, self.name, rows)
        for i in ids.tolist():
            self._recent.pop(i, None)

    def _delete(self, ids: np.ndarray) -> None:
        for a in range(0, len(ids), 10_000):
            chunk = ids[a:a + 10_000].tolist()
            self._call("delete", self.client.delete, self.name, filter=f"id in {chunk}")

    def remove(self, ids) -> int:
        """Delete ids; returns how many were present (one Strong query: the count must not lag)."""
        ids = _as_ids(ids)
        if not len(ids):
            return 0
        present = self._present(ids)
        self._delete(ids)
        now = time.monotonic()
        self._recent.update({int(i): now for i in ids.tolist()})
        return len(present)

    def _present(self, ids: np.ndarray) -> list[int]:
        out: list[int] = []
        for a in range(0, len(ids), 10_000):
            chunk = ids[a:a + 10_000].tolist()
            rows = self._call("query", self.client.query, self.name, filter=f"id in {chunk}", output_fields=["id"],
                              consistency_level="Strong")
            out += [r["id"] for r in rows]
        return out

    def _dead(self, ids: np.ndarray) -> np.ndarray:
        """Mask of ids that must not be returned: removed here lately, or gone from the catalog."""
        now = time.monotonic()
        if self._recent:
            self._recent = {i: t for i, t in self._recent.items() if now - t < RECENT_S}
        dead = np.isin(ids, np.fromiter(self._recent, np.int64, len(self._recent))) if self._recent else \
            np.zeros(len(ids), bool)
        if self.alive is not None and len(ids):
            dead |= ~self.alive(ids)
        return dead

    def search(self, vecs, k: int, exclude=None, sources: list[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k inner products and ids (-1 pads), skipping `exclude` ids and dead ones; `sources` limits the
        search to those sources' partitions."""
        v = np.ascontiguousarray(np.asarray(vecs, dtype=np.float32))
        if v.ndim != 2 or v.shape[1] != self.dim:
            raise ValueError(f"expected vectors of shape (n, {self.dim}), got {v.shape}")
        k = max(1, int(k))
        excl = _as_ids(exclude) if exclude is not None and len(exclude) else np.zeros(0, np.int64)
        sims = np.full((len(v), k), -np.inf, np.float32)
        out = np.full((len(v), k), -1, np.int64)
        todo = list(range(len(v)))
        fetch = min(TOPK_LIMIT, k + 32 + len(self._recent))
        flt = f"source in {[int(s) for s in sources]}" if sources is not None else ""
        while todo:
            hits = self._raw_search(v[todo], fetch, flt)
            again = []
            for row, q in zip(hits, todo):
                ids = np.array([h["id"] for h in row], np.int64)
                ds = np.array([h["distance"] for h in row], np.float32)
                _, first = np.unique(ids, return_index=True)  # a replaced id seen twice while deletes settle
                keep = np.zeros(len(ids), bool)
                keep[first] = True
                keep &= ~np.isin(ids, excl) & ~self._dead(ids)
                ids, ds = ids[keep][:k], ds[keep][:k]
                if len(ids) < k and len(row) == fetch and fetch < TOPK_LIMIT:
                    again.append(q)  # too many dead or excluded among the results: ask for more
                    continue
                order = np.argsort(-ds, kind="stable")
                out[q, :len(ids)], sims[q, :len(ids)] = ids[order], ds[order]
            todo, fetch = again, min(TOPK_LIMIT, fetch * 4)
        return sims, out

    def _raw_search(self, v: np.ndarray, limit: int, flt: str = "", params: dict | None = None) -> list:
        if params is None:
            params = {"ef": max(self.ef_search, limit)} if self.kind == "milvus-hnsw" else {"nprobe": self.nprobe}
        return self._call("search", self.client.search, self.name, data=v.tolist(), limit=limit, filter=flt,
                          search_params={"metric_type": "IP", "params": params},
                          consistency_level=self.url.consistency)

    def range_search(self, vecs, threshold: float) -> list[tuple[np.ndarray, np.ndarray]]:
        """Every live vector with inner product > threshold. Exact over `scan` (the catalog's embeddings) when
        the manager gave one: opt-out and subject access must miss nothing, and ANN range search can."""
        v = np.ascontiguousarray(np.asarray(vecs, dtype=np.float32))
        if self.scan is not None:
            parts: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in range(len(v))]
            for ids, gallery in self.scan():
                s = v @ gallery.T
                for q in range(len(v)):
                    hit = s[q] > threshold
                    parts[q].append((s[q][hit], ids[hit]))
            return [(np.concatenate([p[0] for p in ps]) if ps else np.zeros(0, np.float32),
                     np.concatenate([p[1] for p in ps]) if ps else np.zeros(0, np.int64)) for ps in parts]
        out = []
        radius = {"radius": float(threshold), "range_filter": 1.01}
        extra = {"ef": TOPK_LIMIT} if self.kind == "milvus-hnsw" else {"nprobe": self.nprobe}
        for row in self._raw_search(v, TOPK_LIMIT, "", {**radius, **extra}):
            ids = np.array([h["id"] for h in row], np.int64)
            ds = np.array([h["distance"] for h in row], np.float32)
            keep = ~self._dead(ids) & (ds > threshold)
            out.append((ds[keep], ids[keep]))
        return out

    def iter_ids(self, batch: int = 10_000) -> Iterator[np.ndarray]:
        """Every id held, in batches (a Strong query iterator: for reconciliation and tests, not per request)."""
        it = self._call("query", self.client.query_iterator, self.name, batch_size=batch, filter="",
                        output_fields=["id"], consistency_level="Strong")
        try:
            while rows := self._call("query", it.next):
                ids = np.array([r["id"] for r in rows], np.int64)
                yield ids[~np.isin(ids, np.fromiter(self._recent, np.int64, len(self._recent)))]
        finally:
            it.close()

    def ids(self) -> np.ndarray:
        parts = list(self.iter_ids())
        return np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.int64)

    @property
    def count(self) -> int:
        rows = self._call("count", self.client.query, self.name, filter="", output_fields=["count(*)"],
                          consistency_level="Strong")
        return int(rows[0]["count(*)"])

    def save(self, path: Path | None = None) -> None:
        """Nothing to write: Milvus logs every insert and delete before it answers. `flush` seals segments."""

    def flush(self) -> None:
        """Seal the growing segments so that they are indexed (after a bulk load; Milvus also does it itself)."""
        self._call("flush", self.client.flush, self.name)

    def drop(self) -> None:
        """Delete the collection (tests, and `migrate` undoing a half-made copy)."""
        self._call("drop", self.client.drop_collection, self.name)

    def close(self) -> None:
        self.client.close()
