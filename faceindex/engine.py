"""FaceIndex: the one wiring point of catalog, vector index, pipeline and calibration."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import hmac
import io
import json
import os
import secrets
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

from . import calibration as calib
from . import cluster as clustering
from . import images
from . import policy as policies
from .audit import AuditLog
from .audit import key_actor as key_actor  # re-exported for the server
from .catalog import Catalog, FaceRecord, now
from .config import Settings
from .errors import EvaluationError, FaceIndexError, ImageError, NoFaceError, NotFoundError, PolicyError
from .models.dlib import RESNET_SPEC
from .pipeline import FacePipeline, FileFailure, ImageResult, analyse_files
from .types import AddReport, Box, Face, FileError, Match, Person, ProbeResult, Verification
from .vectors.faiss import FaissIndex

ImageInput = str | os.PathLike | bytes | np.ndarray
Progress = Callable[[str, dict], None]

CATALOG_FILE = "catalog.db"
AUDIT_FILE = "audit.db"
INDEX_FILE = "vectors.faiss"
INDEX_META = "vectors.json"
CHECKPOINT_SECONDS = 120.0
MIN_CALIBRATION_PAIRS = 100_000  # an installed table must resolve FMRs well below the 'strong' bar
CLUSTER_FMR = 1e-4  # edges of the people graph: pairs at least this unlikely to be different people


class _Shared:
    """An attribute kept on the root FaceIndex, so that `acting_as` views see and make the same changes."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.key = "_shared_" + name

    def __get__(self, obj, owner=None):
        return self if obj is None else obj._root.__dict__[self.key]

    def __set__(self, obj, value) -> None:
        obj._root.__dict__[self.key] = value


class FaceIndex:
    """A face index in one data folder: add images, search and verify faces, group them into people."""

    policy = _Shared()
    calibration = _Shared()
    repaired = _Shared()
    _pipeline = _Shared()
    _index = _Shared()
    _index_gen = _Shared()
    _trained_n = _Shared()
    _gallery = _Shared()

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.data = settings.resolved_data()
        self.data.mkdir(parents=True, exist_ok=True)
        self.catalog = Catalog(self.data / CATALOG_FILE)
        self.spec = RESNET_SPEC
        self._root = self  # views made by acting_as share the state below through _Shared attributes
        self.calibration = calib.load(self.spec.calibration, self.data / "calibration.json")
        self._pipeline = None
        self._index = None
        self._index_gen = -1
        self._trained_n = 0
        self._gallery = (-1, 0.0, np.zeros(0, np.int64), 0)  # (generation, bar, low-quality ids, face count)
        self._lock = threading.RLock()
        self.repaired = None  # (added, removed) by the last index repair
        self.audit = AuditLog(self.data / AUDIT_FILE)
        self.policy, sha = policies.load(self.data)
        if sha != (self.catalog.get_meta("policy_sha") or ""):  # edited outside faceindex: record it
            self._record("policy.change", details={"how": "policy file changed outside faceindex",
                                                   "sha256": sha, "policy": self.policy.model_dump()})
            with self.catalog.transaction():
                self.catalog.set_meta("policy_sha", sha)

    @classmethod
    def open(cls, data: str | os.PathLike = "./faceindex-data", **overrides) -> FaceIndex:
        """Open (or create) the index in folder `data`; keyword arguments override Settings fields."""
        return cls(Settings(data=Path(data), **overrides))

    def close(self) -> None:
        self.catalog.close()
        self.audit.close()

    # --- accountability plumbing -------------------------------------------------------------------------------
    def _allow(self, permission: str) -> None:
        policies.check_permission(self.settings.role, permission)

    def allow_any(self, *permissions: str) -> None:
        """AccessDenied unless the actor's role has at least one of `permissions`."""
        from .errors import AccessDenied

        if not any(p in policies.PERMISSIONS.get(self.settings.role, ()) for p in permissions):
            raise AccessDenied(f"role {self.settings.role!r} may not do this")

    def _record(self, action: str, purpose: str | None = None, case: str | None = None,
                details: dict | None = None):
        """Append one audit record for the current actor."""
        return self.audit.append(action, actor=self.settings.actor, role=self.settings.role, purpose=purpose,
                                 case_ref=case, details=details or {})

    def _gallery_state(self) -> dict:
        return {"faces": self._searchable()[1], "generation": self.catalog.generation}

    def __enter__(self) -> FaceIndex:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- components --------------------------------------------------------------------------------------------
    @property
    def pipeline(self) -> FacePipeline:
        with self._lock:
            if self._pipeline is None:
                self._pipeline = FacePipeline(self.settings)
            return self._pipeline

    @property
    def index(self) -> FaissIndex:
        """The vector index, loaded once and repaired from the catalog when they disagree.

        When another process (or a background ingest) changed the catalog, the in-memory index is reconciled
        with it by id sets rather than reloaded.
        """
        with self._lock:
            gen = self.catalog.generation
            if self._index is None:
                self._index = self._load_index()
            elif self._index_gen != gen:
                self._reconcile(self._index)
                self._index = self._maybe_reshape(self._index, {"trained_n": self._trained_n or self._index.count})
                self._index_gen = gen
            return self._index

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

    def _load_index(self) -> FaissIndex:
        gen = self.catalog.generation
        meta: dict = {}
        index: FaissIndex | None = None
        try:
            meta = json.loads(self._meta_path().read_text())
            if meta.get("model") == self.spec.key and (self.data / INDEX_FILE).is_file():
                index = FaissIndex.load(self.data / INDEX_FILE, self.settings.nprobe)
        except (OSError, ValueError, FaceIndexError):
            index = None
        if index is not None and meta.get("generation") == gen and meta.get("count") == index.count:
            self._index_gen = gen
            return self._maybe_reshape(index, meta)
        if index is None:
            index = self._rebuild()
            self.repaired = (index.count, 0)
        else:
            self.repaired = self._reconcile(index)
        index = self._maybe_reshape(index, meta)
        self._save_index(index, gen, meta.get("trained_n", 0) if index.kind == "ivf" else 0)
        return index

    def _maybe_reshape(self, index: FaissIndex, meta: dict) -> FaissIndex:
        """Exact below the threshold, IVF above; retrain IVF when the gallery has grown 8-fold."""
        n = index.count
        t = self.settings.exact_threshold
        stale_ivf = index.kind == "ivf" and n > 8 * max(1, meta.get("trained_n", n))
        if (index.kind == "exact" and n >= t) or (index.kind == "ivf" and n < t // 2) or stale_ivf:
            index = self._rebuild()
            self._save_index(index, self.catalog.generation, self._trained_n)
        self._index_gen = self.catalog.generation
        return index

    def _rebuild(self) -> FaissIndex:
        """Build the vector index from the catalog's embeddings."""
        n = self.catalog.face_count()
        if n >= self.settings.exact_threshold:
            all_ids, all_vecs = self._all_embeddings()
            rng = np.random.default_rng(0)
            sample = all_vecs[rng.choice(len(all_vecs), size=min(len(all_vecs), 200_000), replace=False)]
            index = FaissIndex.ivf(self.spec.dim, sample, self.settings.nprobe)
            index.add(all_ids, all_vecs)
            self._trained_n = n
        else:
            index = FaissIndex.exact(self.spec.dim)
            for ids, vecs in self.catalog.embeddings(dim=self.spec.dim):
                index.add(ids, vecs)
        self._index_gen = self.catalog.generation
        return index

    def _all_embeddings(self) -> tuple[np.ndarray, np.ndarray]:
        parts = list(self.catalog.embeddings(dim=self.spec.dim))
        if not parts:
            return np.zeros(0, np.int64), np.zeros((0, self.spec.dim), np.float32)
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def _save_index(self, index: FaissIndex, generation: int, trained_n: int = 0) -> None:
        index.save(self.data / INDEX_FILE)
        meta = {"model": self.spec.key, "generation": generation, "count": index.count, "kind": index.kind,
                "trained_n": trained_n or self._trained_n}
        tmp = self._meta_path().with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(meta))
        os.replace(tmp, self._meta_path())

    def save(self) -> None:
        """Persist the vector index (it is also saved after each add/remove)."""
        with self._lock:
            if self._index is not None:
                self._save_index(self._index, self.catalog.generation)

    # --- images -> faces ---------------------------------------------------------------------------------------
    def _load(self, image: ImageInput) -> _Probe:
        """An image read and decoded once: its pixels, its sha256 (for the audit trail) and a name for messages.

        Errors about a file name it (a search may have several probes); bytes and arrays have no name to give.
        """
        name = _name(image)
        if isinstance(image, np.ndarray):
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise ImageError("an image array must be (H, W, 3) uint8 RGB")
            return _Probe(image, images.sha256_bytes(np.ascontiguousarray(image).tobytes()), name)
        try:
            loaded = images.load(image, max_pixels=self.settings.max_pixels, max_bytes=self.settings.max_file_bytes)
        except ImageError as e:
            if isinstance(image, bytes | bytearray):
                raise
            raise ImageError(f"{name}: {e}") from e
        return _Probe(loaded.pixels, loaded.sha256, name)

    def faces(self, image: ImageInput, fallback: bool = True) -> list[Face]:
        """Detect and embed every face of an image without indexing it (largest first).

        With `fallback` (the default for probes) the CNN detector looks again when HOG finds no face.
        """
        return self.pipeline.faces(self._load(image).pixels, fallback)

    def _probe_faces(self, probe: _Probe, largest: bool, face: int | None = None) -> list[Face]:
        found = self.pipeline.faces(probe.pixels, True)
        if not found:
            raise NoFaceError(f"no face found in {probe.name}")
        if face is not None:
            if not 0 <= face < len(found):
                raise NoFaceError(f"{probe.name} has {len(found)} face(s); there is no face {face}")
            return [found[face]]
        return found[:1] if largest else found

    # --- add / remove --------------------------------------------------------------------------------------------
    def add(self, paths: list[str | os.PathLike], source: str = "default", *, workers: int | None = None,
            progress: Progress | None = None, within: list[Path] | None = None) -> AddReport:
        """Index every face of every image under `paths` (files or folders, recursively).

        Unchanged files are skipped, files whose content is already indexed (moved or copied) keep their faces,
        bad files are reported in the result and never stop the batch.
        """
        self._allow("ingest")
        t0 = time.perf_counter()
        report = AddReport(source=source)
        emit = progress or (lambda _event, _info: None)
        self.catalog.check_model(self.spec.key)
        source_id = self.catalog.source_id(source, create=True)
        if self.policy.require_source_basis and self._source(source)["basis"] == "unspecified":
            raise PolicyError(f"source {source!r} has no legal basis; register it with "
                              f"`faceindex source add {source} --basis ...`")
        index = self.index  # load (and repair) before we change anything
        optouts = self.catalog.optout_templates(self.spec.dim)
        optout_threshold = self.optout_threshold()

        files: list[Path] = []
        for root in paths:
            found, problems = images.iter_image_files(Path(root))
            files += found
            report.errors += [FileError(str(p), why) for p, why in problems]
        if within is not None:  # server-side ingest: nothing outside the allowed roots, symlinks included
            roots = [os.path.realpath(r) for r in within]
            inside = [f for f in files if _is_within(os.path.realpath(f), roots)]
            report.errors += [FileError(str(f), "outside the allowed ingest roots") for f in files if f not in inside]
            files = inside
        report.files_seen = len(files)
        emit("scan", {"files": len(files)})

        known = self.catalog.file_states(source_id)
        todo: list[tuple[str, int, int]] = []  # (path, size, mtime_ns)
        by_sha: dict[str, list[tuple[str, int, int]]] = {}
        for f in files:
            path = os.path.abspath(f)
            try:
                st = os.stat(path)
            except OSError as e:
                report.errors.append(FileError(path, f"cannot read file: {e.strerror or e}"))
                emit("file", {"path": path, "error": True})
                continue
            state = known.get(path)
            if state is not None and state.size == st.st_size and state.mtime_ns == st.st_mtime_ns:
                report.unchanged += 1
                emit("file", {"path": path, "skipped": True})
                continue
            try:
                data = images.read_bytes(path, self.settings.max_file_bytes)
            except ImageError as e:
                report.errors.append(FileError(path, str(e)))
                emit("file", {"path": path, "error": True})
                continue
            sha = images.sha256_bytes(data)
            image_id = self.catalog.image_id_by_sha(sha)
            if image_id is not None:  # content already indexed: moved, copied or touched
                removed = self.catalog.put_file(source_id, path, image_id, st.st_size, st.st_mtime_ns)
                index.remove(np.asarray(removed, np.int64))
                report.moved_or_copied += 1 if state is None else 0
                report.unchanged += 1 if state is not None else 0
                emit("file", {"path": path, "skipped": True})
                continue
            by_sha.setdefault(sha, []).append((path, st.st_size, st.st_mtime_ns))
        for group in by_sha.values():
            todo.append(group[0])
        duplicates = {group[0][0]: group[1:] for group in by_sha.values() if len(group) > 1}
        emit("analyse", {"files": len(todo)})

        workers = max(1, workers or self.settings.workers)
        stat_of = {p: (size, mtime) for p, size, mtime in todo}
        pending: list[ImageResult] = []
        last_flush = last_checkpoint = time.monotonic()

        def flush() -> None:
            with self.catalog.transaction():
                added_ids, added_vecs, removed_all = [], [], []
                for r in pending:
                    size, mtime = stat_of[r.path]
                    faces = r.faces
                    if len(optouts) and faces:  # opted-out people are never indexed, whatever the source
                        blocked = _matches_any(np.stack([f.embedding for f in faces]), optouts, optout_threshold)
                        report.skipped_opted_out += int(blocked.sum())
                        faces = [f for f, b in zip(faces, blocked) if not b]
                        report.faces_found -= int(blocked.sum())
                    image_id, ids, removed = self.catalog.add_image(
                        source_id, r.path, mtime, r.sha256, r.size, r.width, r.height, faces)
                    removed_all += removed
                    if ids:
                        added_ids += ids
                        added_vecs += [f.embedding for f in faces]
                    for dup_path, dsize, dmtime in duplicates.get(r.path, []):
                        self.catalog.put_file(source_id, dup_path, image_id, dsize, dmtime)
                        report.moved_or_copied += 1
            index.remove(np.asarray(removed_all, np.int64))
            if added_ids:
                index.add(np.asarray(added_ids, np.int64), np.stack(added_vecs))
            self._index_gen = self.catalog.generation
            pending.clear()

        try:
            for res in analyse_files([p for p, _, _ in todo], self.settings, workers,
                                     self._pipeline if workers == 1 else None):
                if isinstance(res, FileFailure):
                    report.errors.append(FileError(res.path, res.reason))
                    emit("file", {"path": res.path, "error": True})
                    continue
                report.images_indexed += 1
                report.faces_found += len(res.faces)
                report.images_without_faces += 0 if res.faces else 1
                pending.append(res)
                emit("file", {"path": res.path, "faces": len(res.faces)})
                now = time.monotonic()
                if len(pending) >= 64 or now - last_flush > 2.0:
                    flush()
                    last_flush = now
                if now - last_checkpoint > CHECKPOINT_SECONDS:
                    self.save()
                    last_checkpoint = now
        finally:
            if pending:
                flush()
            self._index = self._maybe_reshape(index, {"trained_n": self._trained_n or index.count})
            self.save()
        report.seconds = time.perf_counter() - t0
        summary = report.as_dict()
        summary["errors"] = len(report.errors)
        self._record("ingest", details={"paths": [os.fspath(p) for p in paths], **summary,
                                        "gallery": self._gallery_state()})
        return report

    def remove(self, path: str | os.PathLike, source: str | None = None) -> dict[str, int]:
        """Forget the files at `path` (a file or folder) in one source (or all): faces, embeddings, index."""
        self._allow("delete")
        source_id = self.catalog.source_id(source) if source is not None else None
        files, imgs, face_ids = self.catalog.remove_files(source_id, os.path.abspath(path))
        self._forget(face_ids)
        result = {"files": files, "images": imgs, "faces": len(face_ids)}
        self._record("delete", details={"path": os.path.abspath(path), "source": source, **result,
                                        "face_ids": face_ids, "gallery": self._gallery_state()})
        return result

    def _forget(self, face_ids: list[int]) -> None:
        """Drop deleted faces from the vector index and persist it."""
        with self._lock:
            if self._index is not None:
                self._index.remove(np.asarray(face_ids, np.int64))
                self._index_gen = self.catalog.generation
                self.save()

    # --- search / verify ---------------------------------------------------------------------------------------
    def _searchable(self) -> tuple[np.ndarray, int]:
        """(ids below the quality bar, face count), cached per catalog generation: no table scan per search."""
        gen, bar = self.catalog.generation, self.settings.min_quality
        cached = self._gallery
        if cached[0] != gen or cached[1] != bar:
            cached = (gen, bar, self.catalog.low_quality_ids(bar), self.catalog.face_count())
            self._gallery = cached
        return cached[2], cached[3]

    def gallery_size(self, include_low_quality: bool = False) -> int:
        low, n = self._searchable()
        return n if include_low_quality else n - len(low)

    def search(self, image: ImageInput, top: int = 10, *, purpose: str | None = None, case: str | None = None,
               largest: bool = False, face: int | None = None,
               include_low_quality: bool = False) -> list[ProbeResult]:
        """Candidate leads for each face of a probe image (or only the largest), best first. Audited."""
        self._allow("search")
        self.policy.check_purpose(purpose, case)
        if top < 1:
            raise ValueError("top must be at least 1")
        probe = self._load(image)
        params = {"top": top, "largest": largest, "face": face, "include_low_quality": include_low_quality}
        try:
            probe_faces = self._probe_faces(probe, largest, face)
        except NoFaceError:
            self._record("search", purpose, case, {"probe_sha256": probe.sha256, **params, "faces": 0, "results": [],
                                                    "gallery": self._gallery_state()})
            raise
        results = self.search_faces(probe_faces, top, include_low_quality=include_low_quality, probe=probe.name)
        self._record("search", purpose, case, {
            "probe_sha256": probe.sha256, **params, "faces": len(results), "gallery": self._gallery_state(),
            "possible_fmr": self.calibration.possible_fmr, "strong_fmr": self.calibration.strong_fmr,
            "results": [[[m.face_id, round(m.similarity, 5)] for m in r.matches] for r in results]})
        return results

    def search_faces(self, faces: list[Face], top: int = 10, *, include_low_quality: bool = False,
                     probe: str = "<probe>") -> list[ProbeResult]:
        """Search already-embedded faces (see `faces`); opted-out people are never returned. Not audited:
        callers outside the engine use `search`."""
        low, count = self._searchable()
        exclude = None if include_low_quality else low
        gallery = count - (0 if exclude is None else len(exclude))
        results: list[ProbeResult] = []
        if not faces:
            return results
        index = self.index
        optouts = self.catalog.optout_templates(self.spec.dim)
        fetch = top if not len(optouts) else top * 2 + 32
        sims, ids = index.search(np.stack([f.embedding for f in faces]), fetch, exclude)
        flat = [int(i) for i in ids.reshape(-1) if i >= 0]
        blocked: set[int] = set()
        if len(optouts) and flat:
            for cand_ids, vecs in self.catalog.embeddings(flat, dim=self.spec.dim):
                hit = _matches_any(vecs, optouts, self.optout_threshold())
                blocked |= set(cand_ids[hit].tolist())
        records = self.catalog.face_records([i for i in flat if i not in blocked])
        expected = self.calibration.possible_fmr * gallery
        for face, row_s, row_i in zip(faces, sims, ids):
            matches: list[Match] = []
            for s, i in zip(row_s, row_i):
                rec = records.get(int(i))
                if rec is None or len(matches) == top:
                    continue
                fmr, label = self.calibration.label(float(s))
                matches.append(_match(rec, float(s), fmr, label, len(matches) + 1, fmr * gallery))
            results.append(ProbeResult(probe, face, tuple(matches), gallery, expected))
        return results

    def verify(self, a: ImageInput, b: ImageInput, *, purpose: str | None = None, case: str | None = None,
               face_a: int | None = None, face_b: int | None = None) -> Verification:
        """Compare the largest (or chosen) face of two images. Audited."""
        self._allow("verify")
        self.policy.check_purpose(purpose, case)
        pa, pb = self._load(a), self._load(b)
        details = {"a_sha256": pa.sha256, "b_sha256": pb.sha256, "face_a": face_a, "face_b": face_b}
        try:
            fa = self._probe_faces(pa, True, face_a)[0]
            fb = self._probe_faces(pb, True, face_b)[0]
        except NoFaceError as e:
            self._record("verify", purpose, case, {**details, "error": str(e)})
            raise
        v = self.compare(fa, fb, pa.name, pb.name)
        self._record("verify", purpose, case, {**details, "similarity": round(v.similarity, 5), "fmr": v.fmr,
                                               "decision": v.label})
        return v

    def compare(self, fa: Face, fb: Face, name_a: str = "a", name_b: str = "b") -> Verification:
        sim = float(np.dot(fa.embedding, fb.embedding))
        fmr, label = self.calibration.label(sim)
        return Verification(name_a, name_b, fa, fb, sim, fmr, label, label != calib.NONE)

    # --- people ------------------------------------------------------------------------------------------------
    def cluster(self) -> list[Person]:
        """Group all searchable faces into people; names given earlier stay with their people."""
        self._allow("people")
        ids, image_ids = self.catalog.face_image_ids()
        low = set(self.catalog.low_quality_ids(self.settings.min_quality).tolist())
        keep = np.array([i not in low for i in ids.tolist()], dtype=bool)
        ids, image_ids = ids[keep], image_ids[keep]
        vecs = np.zeros((0, self.spec.dim), np.float32)
        if len(ids):
            parts = list(self.catalog.embeddings(ids.tolist(), dim=self.spec.dim))
            got = np.concatenate([p[0] for p in parts])
            vecs = np.concatenate([p[1] for p in parts])
            assert np.array_equal(got, ids)
        threshold = self.calibration.threshold_for(CLUSTER_FMR)
        labels = clustering.cluster(vecs, image_ids, threshold)
        groups: dict[int, list[int]] = {}
        for fid, lab in zip(ids.tolist(), labels.tolist()):
            groups.setdefault(lab, []).append(fid)
        new_groups = sorted(groups.values(), key=len, reverse=True)
        old = self.catalog.people_faces()
        named = set(self.catalog.person_names())
        mapping = clustering.carry_over(old, new_groups, named)
        self.catalog.replace_people(list(zip(mapping, new_groups)))
        return self.people()

    def people(self, limit: int | None = None, min_faces: int = 1) -> list[Person]:
        """People by size, largest first."""
        self._allow("people")
        out = []
        samples = self.catalog.sample_faces()
        for pid, name, n_faces, n_images in self.catalog.people(limit):
            if n_faces >= min_faces:
                out.append(Person(pid, name, n_faces, n_images, tuple(samples.get(pid, ()))))
        return out

    def person(self, person_id: int) -> tuple[Person, list[FaceRecord]]:
        self._allow("people")
        name, faces = self.catalog.person(person_id)
        return Person(person_id, name, len(faces), len({f.image_id for f in faces}),
                      tuple(f.id for f in faces[:8])), faces

    def name_person(self, person_id: int, name: str | None) -> None:
        self._allow("people")
        if name is not None and not name.strip():
            raise ValueError("a name must not be empty")
        self.catalog.name_person(person_id, name.strip() if name else None)

    # --- opt-out, subject access, erasure ----------------------------------------------------------------------
    def optout_threshold(self) -> float:
        return self.calibration.threshold_for(self.policy.optout_fmr)

    def access_threshold(self) -> float:
        return self.calibration.threshold_for(self.policy.access_fmr)

    def _templates(self, photos: list[ImageInput]) -> np.ndarray:
        """The largest face of each reference photo; the photos themselves are never stored."""
        if not photos:
            raise ValueError("at least one photo of the person is needed")
        return np.stack([self._probe_faces(self._load(p), True)[0].embedding for p in photos])

    def _matching_faces(self, templates: np.ndarray, threshold: float) -> dict[int, float]:
        """Face id -> best similarity, for every indexed face at or above `threshold` to any template."""
        best: dict[int, float] = {}
        for sims, ids in self.index.range_search(templates, threshold - 1e-6):
            for s, i in zip(sims.tolist(), ids.tolist()):
                best[i] = max(best.get(i, -1.0), s)
        return best

    def _delete_faces(self, face_ids: list[int]) -> int:
        images_affected = len({r.image_id for r in self.catalog.face_records(face_ids).values()})
        self.catalog.delete_faces(face_ids)
        self._forget(face_ids)
        return images_affected

    def optout_add(self, photos: list[ImageInput], reference: str) -> dict:
        """Register a person's opt-out: delete every matching face now, and block them from now on.

        Only the face templates (embeddings) and the reference are kept. Returns the receipt (also stored).
        """
        self._allow("privacy")
        reference = _reference(reference)
        templates = self._templates(photos)
        matches = self._matching_faces(templates, self.optout_threshold())
        images_affected = self._delete_faces(sorted(matches))
        receipt = {"reference": reference, "time": now(), "actor": self.settings.actor, "templates": len(templates),
                   "faces_removed": len(matches), "images_affected": images_affected,
                   "threshold": round(self.optout_threshold(), 5), "threshold_fmr": self.policy.optout_fmr}
        self.catalog.add_optout(reference, self.settings.actor, templates, receipt)
        self._record("optout.add", case=reference, details={**receipt, "face_ids": sorted(matches),
                                                             "gallery": self._gallery_state()})
        return receipt

    def optouts(self) -> list[dict]:
        self._allow("privacy")
        return self.catalog.optouts()

    def optout_remove(self, reference: str) -> None:
        """Withdraw an opt-out (its faces are not restored; new photos will be indexed again). Audited."""
        self._allow("privacy")
        self.catalog.remove_optout(reference)
        self._record("optout.remove", case=reference, details={"reference": reference})

    def access(self, photos: list[ImageInput], reference: str, out_dir: Path | None = None,
               *, _action: str = "access") -> dict:
        """Answer a subject access request: every face held that matches the person, with its provenance.

        With `out_dir`, writes `<reference>.json` and a self-contained `<reference>.html` with thumbnails.
        """
        self._allow("privacy")
        reference = _reference(reference)
        templates = self._templates(photos)
        matches = self._matching_faces(templates, self.access_threshold())
        records = self.catalog.face_records(list(matches))
        faces = []
        for fid in sorted(matches, key=lambda i: -matches[i]):
            r = records[fid]
            faces.append({"face_id": fid, "similarity": round(matches[fid], 5),
                          "fmr": float(self.calibration.fmr_at(matches[fid])), "source": r.source, "basis": r.basis,
                          "path": r.path, "box": r.box.as_list(), "added_at": r.added_at, "image_id": r.image_id})
        report = {"reference": reference, "time": now(), "actor": self.settings.actor, "templates": len(templates),
                  "threshold": round(self.access_threshold(), 5), "threshold_fmr": self.policy.access_fmr,
                  "images": len({f["image_id"] for f in faces}), "faces": faces}
        if out_dir is not None:
            from .report import access_html

            out_dir.mkdir(parents=True, exist_ok=True)
            thumbs = {}
            for f in faces:
                with contextlib.suppress(FaceIndexError):  # listed without a thumbnail
                    thumbs[f["face_id"]] = self.face_crop(f["face_id"], size=96)
            (out_dir / f"{reference}.json").write_text(json.dumps(report, indent=2))
            (out_dir / f"{reference}.html").write_text(access_html(report, thumbs))
            report["files"] = [str(out_dir / f"{reference}.json"), str(out_dir / f"{reference}.html")]
        self._record(_action, case=reference, details={
            "templates": len(templates), "threshold": report["threshold"], "gallery": self._gallery_state(),
            "results": [[f["face_id"], f["similarity"]] for f in faces], "exported": report.get("files", [])})
        return report

    def erase(self, photos: list[ImageInput], reference: str, out_dir: Path | None = None) -> dict:
        """Access + deletion + opt-out in one step; returns the receipt."""
        self._allow("privacy")
        reference = _reference(reference)
        report = self.access(photos, reference, out_dir, _action="erase.access")
        receipt = self.optout_add(photos, reference)
        receipt["faces_listed"] = len(report["faces"])
        self._record("erase", case=reference, details=receipt)
        return receipt

    # --- sources, retention, policy ---------------------------------------------------------------------------
    def _source(self, name: str) -> dict:
        for s in self.catalog.sources():
            if s["name"] == name:
                return s
        raise NotFoundError(f"no source named {name!r}")

    def set_source(self, name: str, basis: str | None = None, retention_days: int | None = None,
                   notice: str | None = None) -> dict:
        """Register a source, or change its legal basis, retention (0 = keep) or notice. Audited."""
        self._allow("ingest")
        if basis is not None and basis not in policies.BASES:
            raise ValueError(f"unknown legal basis {basis!r}; one of: {', '.join(policies.BASES)}")
        if retention_days is not None and not 0 <= retention_days <= 36_500:
            raise ValueError("retention must be 0 (keep forever) to 36500 days")
        self.catalog.put_source(name, basis, notice, retention_days)
        source = self._source(name)
        self._record("source.change", details={k: source[k] for k in ("name", "basis", "notice", "retention_days")})
        return source

    def sources(self) -> list[dict]:
        """Sources with their basis, retention, file count and when their oldest file expires."""
        out = []
        for s in self.catalog.sources():
            s = dict(s)
            if s["retention_days"] and s["oldest_file"]:
                s["next_expiry"] = _plus_days(s["oldest_file"], s["retention_days"])
            else:
                s["next_expiry"] = None
            out.append(s)
        return out

    def retention_apply(self, at: datetime | None = None) -> dict:
        """Delete files older than their source's retention period (and faces no other file holds). Audited."""
        self._allow("delete")
        at = at or datetime.now(UTC)
        result = {"files": 0, "images": 0, "faces": 0, "sources": {}}
        for s in self.catalog.sources():
            if not s["retention_days"]:
                continue
            cutoff = (at - timedelta(days=s["retention_days"])).isoformat(timespec="seconds")
            ids = self.catalog.expired_files(s["id"], cutoff)
            if not ids:
                continue
            files, imgs, face_ids = self.catalog.remove_file_ids(ids)
            self._forget(face_ids)
            result["files"] += files
            result["images"] += imgs
            result["faces"] += len(face_ids)
            result["sources"][s["name"]] = {"files": files, "images": imgs, "faces": len(face_ids), "cutoff": cutoff}
        self._record("retention.apply", details={**result, "at": at.isoformat(timespec="seconds"),
                                                 "gallery": self._gallery_state()})
        return result

    def set_policy(self, **changes) -> policies.Policy:
        """Change policy fields (validated), save the file and audit the change."""
        self._allow("policy")
        before = self.policy.model_dump()
        try:
            new = policies.Policy.model_validate({**before, **changes})
        except ValueError as e:
            raise PolicyError(f"invalid policy change: {e}") from e
        sha = policies.save(self.data, new)
        with self.catalog.transaction():
            self.catalog.set_meta("policy_sha", sha)
        self.policy = new
        self._record("policy.change", details={"before": before, "after": new.model_dump(), "sha256": sha})
        return new

    def evaluate(self, folder: str | os.PathLike, out_dir: str | os.PathLike, *, write_calibration: bool = False,
                 progress: Progress | None = None) -> dict:
        """Measure the model on labelled data (one folder per person); optionally install its calibration."""
        from . import evaluate as ev

        self._allow("policy" if write_calibration else "verify")
        result = ev.evaluate(folder, self.settings, out_dir, progress=progress)
        if write_calibration:
            cal = calib.Calibration.from_json(result["calibration"]["table"])
            if cal.impostor_pairs < MIN_CALIBRATION_PAIRS:
                raise EvaluationError(
                    f"only {cal.impostor_pairs} different-person pairs: too few to calibrate false-match rates down "
                    f"to {self.calibration.strong_fmr:g} (need {MIN_CALIBRATION_PAIRS}); calibration not changed")
            path = ev.write_calibration(cal, self.data)
            self.calibration = calib.load(self.spec.calibration, path)
            self._record("policy.change", details={"calibration": str(path), "source": cal.source,
                                                   "impostor_pairs": cal.impostor_pairs})
        return result

    # --- API keys, actors, two-person confirmation -------------------------------------------------------------
    def create_key(self, name: str, role: str) -> tuple[int, str]:
        """A new API key for `role`; returns (id, token). Only the token's hash is stored: show it once."""
        self._allow("keys")
        if role not in policies.PERMISSIONS or role == "owner":
            raise ValueError(f"unknown role {role!r}; one of: admin, investigator, auditor, privacy-officer")
        if not name.strip():
            raise ValueError("a key needs a name")
        prefix = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        key_id = self.catalog.add_key(name.strip(), role, prefix, _sha256(secret), self.settings.actor)
        self._record("key.create", details={"key_id": key_id, "name": name, "role": role, "prefix": prefix})
        return key_id, f"fi_{prefix}_{secret}"

    def api_keys(self) -> list[dict]:
        self._allow("keys")
        return self.catalog.keys()

    def revoke_key(self, key_id: int) -> None:
        self._allow("keys")
        self.catalog.revoke_key(key_id)
        self._record("key.revoke", details={"key_id": key_id})

    def authenticate(self, token: str) -> dict:
        """The key behind a token ({id, name, role}); AccessDenied for unknown, malformed or revoked keys."""
        from .errors import AccessDenied

        parts = (token or "").split("_", 2)
        if len(parts) != 3 or parts[0] != "fi":
            raise AccessDenied("invalid API key")
        row = self.catalog.key_by_prefix(parts[1])
        if row is None or not hmac.compare_digest(row[3], _sha256(parts[2])):
            raise AccessDenied("invalid API key")
        if row[4] is not None:
            raise AccessDenied("this API key has been revoked")
        last = row[5]
        if last is None or datetime.fromisoformat(last) < datetime.now(UTC) - timedelta(minutes=1):
            self.catalog.touch_key(row[0])  # at most once a minute: no write per request
        return {"id": row[0], "name": row[1], "role": row[2]}

    def acting_as(self, actor: str, role: str) -> FaceIndex:
        """A view of this index that acts (and is audited) as another actor and role; shares every component."""
        view = copy.copy(self)
        view.settings = self.settings.model_copy(update={"actor": actor, "role": role})
        return view

    def confirm(self, case: str, face_id: int) -> dict:
        """Confirm a candidate for a case. It counts as confirmed only once two different investigators have."""
        self._allow("search")
        case = _reference(case)
        self.catalog.face_record(face_id)  # must exist
        actors = self.catalog.add_confirmation(case, face_id, self.settings.actor)
        status = _confirmation_status(actors)
        self._record("confirm", case=case, details={"face_id": face_id, "confirmed_by": actors, "status": status})
        return {"case": case, "face_id": face_id, "confirmed_by": actors, "status": status}

    def confirmations(self, case: str) -> dict[int, dict]:
        self._allow("search")
        return {fid: {"confirmed_by": a, "status": _confirmation_status(a)}
                for fid, a in self.catalog.confirmations(_reference(case)).items()}

    # --- audit --------------------------------------------------------------------------------------------------
    def audit_verify(self, expected_head: tuple[int, str] | None = None):
        self._allow("audit")
        return self.audit.verify(expected_head)

    def audit_show(self, **filters):
        self._allow("audit")
        return self.audit.query(**filters)

    def merge_people(self, person_ids: list[int]) -> Person:
        """Merge people into the first one given (its name wins, else the first name found). Refused when two
        of them appear in one photo: a photo never shows the same person twice."""
        self._allow("people")
        ids = list(dict.fromkeys(person_ids))
        if len(ids) < 2:
            raise ValueError("give at least two different people to merge")
        names = {}
        for pid in ids:
            names[pid], _ = self.catalog.person(pid)  # NotFoundError for unknown ids
        rows = self.catalog.person_face_images(ids)
        seen: dict[int, int] = {}
        for pid, _fid, image_id in rows:
            if seen.setdefault(image_id, pid) != pid:
                raise PolicyError(f"people {seen[image_id]} and {pid} both appear in image {image_id}: "
                                  "they cannot be one person")
        target = ids[0]
        self.catalog.move_faces([fid for pid, fid, _ in rows if pid != target], target)
        if names[target] is None:
            name = next((n for n in names.values() if n), None)
            if name:
                self.catalog.name_person(target, name)
        self._record("people.merge", details={"into": target, "merged": ids[1:]})
        return self.person(target)[0]

    def split_person(self, person_id: int, face_ids: list[int]) -> Person:
        """Move some faces of a person into a new person; returns the new person."""
        self._allow("people")
        _, faces = self.catalog.person(person_id)
        own = {f.id for f in faces}
        stray = [f for f in face_ids if f not in own]
        if stray:
            raise ValueError(f"faces {stray[:5]} do not belong to person {person_id}")
        if set(face_ids) >= own:
            raise ValueError("a split must leave at least one face with the person")
        new = self.catalog.move_faces(list(dict.fromkeys(face_ids)))
        self._record("people.split", details={"from": person_id, "to": new, "face_ids": face_ids})
        return self.person(new)[0]

    def delete_face(self, face_id: int) -> None:
        """Delete one face (the image stays, with its other faces). Audited."""
        self._allow("delete")
        self.catalog.face_record(face_id)
        self._delete_faces([face_id])
        self._record("delete", details={"face_ids": [face_id], "gallery": self._gallery_state()})

    # --- crops and stats ---------------------------------------------------------------------------------------
    def face_crop(self, face_id: int, size: int = 160, margin: float = 0.3) -> bytes:
        """A JPEG crop of a stored face, read from its source file."""
        rec = self.catalog.face_record(face_id)
        try:
            pixels = self._load(rec.path).pixels
        except ImageError as e:
            raise NotFoundError(f"the source image of face {face_id} is not readable any more") from e
        return crop_jpeg(pixels, rec.box, size, margin)

    def face_in_image(self, face_id: int, max_side: int = 1600) -> bytes:
        """The source image of a face, downscaled to `max_side`, with the face outlined (JPEG)."""
        from PIL import ImageDraw

        rec = self.catalog.face_record(face_id)
        try:
            pixels = self._load(rec.path).pixels
        except ImageError as e:
            raise NotFoundError(f"the source image of face {face_id} is not readable any more") from e
        img = Image.fromarray(pixels)
        scale = min(1.0, max_side / max(img.size))
        if scale < 1:
            img = img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.LANCZOS)
        b = [round(v * scale) for v in rec.box.as_list()]
        ImageDraw.Draw(img).rectangle(b, outline=(255, 196, 0), width=max(2, round(3 * max(img.size) / 800)))
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=88)
        return buf.getvalue()

    def stats(self) -> dict:
        counts = self.catalog.counts()
        index = self.index
        disk = sum(p.stat().st_size for p in self.data.iterdir() if p.is_file())
        return {
            **counts,
            "low_quality_faces": len(self._searchable()[0]),
            "sources_list": self.sources(),
            "optouts": len(self.catalog.optouts()),
            "audit_records": self.audit.count(),
            "model": self.catalog.get_meta("model") or self.spec.key,
            "detector": self.settings.detector,
            "index_kind": index.kind,
            "index_count": index.count,
            "generation": self.catalog.generation,
            "data": str(self.data),
            "disk_bytes": disk,
        }


def crop_jpeg(pixels: np.ndarray, box: Box, size: int = 160, margin: float = 0.3) -> bytes:
    """A square JPEG around `box`, with a margin, scaled to `size` pixels."""
    h, w = pixels.shape[:2]
    side = max(box.width, box.height) * (1 + 2 * margin)
    cx, cy = (box.x1 + box.x2) / 2, (box.y1 + box.y2) / 2
    x1, y1 = max(0, int(cx - side / 2)), max(0, int(cy - side / 2))
    x2, y2 = min(w, int(cx + side / 2)), min(h, int(cy + side / 2))
    img = Image.fromarray(pixels[y1:y2, x1:x2]).resize((size, size), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _matches_any(vecs: np.ndarray, templates: np.ndarray, threshold: float) -> np.ndarray:
    """Boolean mask: which of `vecs` reach `threshold` against any template."""
    if not len(templates) or not len(vecs):
        return np.zeros(len(vecs), dtype=bool)
    return (np.asarray(vecs, np.float32) @ templates.T).max(axis=1) >= threshold


def _is_within(path: str, roots: list[str]) -> bool:
    return any(os.path.commonpath([path, r]) == r for r in roots)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _confirmation_status(actors: list[str]) -> str:
    return "confirmed" if len(set(actors)) >= 2 else f"awaiting second confirmation ({len(set(actors))} of 2)"


def _reference(ref: str) -> str:
    """A request reference, usable as a file name (no path separators or traversal)."""
    ref = (ref or "").strip()
    if not ref or len(ref) > 100 or not all(c.isalnum() or c in "-_.:" for c in ref) or ref.startswith("."):
        raise ValueError("a reference must be 1-100 characters of letters, digits and - _ . : (not starting with .)")
    return ref


def _plus_days(iso: str, days: int) -> str:
    return (datetime.fromisoformat(iso) + timedelta(days=days)).isoformat(timespec="seconds")


def _match(rec: FaceRecord, sim: float, fmr: float, label: str, rank: int, expected: float) -> Match:
    return Match(face_id=rec.id, similarity=sim, fmr=fmr, label=label, image_id=rec.image_id, path=rec.path,
                 source=rec.source, box=rec.box, person_id=rec.person_id, person_name=rec.person_name, rank=rank,
                 expected_false=expected)


class _Probe(NamedTuple):
    pixels: np.ndarray
    sha256: str
    name: str


def _name(image: ImageInput) -> str:
    if isinstance(image, bytes | bytearray):
        return "<bytes>"
    if isinstance(image, np.ndarray):
        return "<array>"
    return os.fspath(image)
