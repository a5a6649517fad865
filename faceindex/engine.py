"""FaceIndex: the one wiring point of catalog, vector index, pipeline and calibration."""

from __future__ import annotations

import io
import json
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
from PIL import Image

from . import calibration as calib
from . import cluster as clustering
from . import images
from .catalog import Catalog, FaceRecord
from .config import Settings
from .errors import FaceIndexError, ImageError, NoFaceError, NotFoundError
from .models.dlib import RESNET_SPEC
from .pipeline import FacePipeline, FileFailure, ImageResult, analyse_files
from .types import AddReport, Box, Face, FileError, Match, Person, ProbeResult, Verification
from .vectors.faiss import FaissIndex

ImageInput = str | os.PathLike | bytes | np.ndarray
Progress = Callable[[str, dict], None]

CATALOG_FILE = "catalog.db"
INDEX_FILE = "vectors.faiss"
INDEX_META = "vectors.json"
CHECKPOINT_SECONDS = 120.0
CLUSTER_FMR = 1e-4  # edges of the people graph: pairs at least this unlikely to be different people


class FaceIndex:
    """A face index in one data folder: add images, search and verify faces, group them into people."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.data = settings.resolved_data()
        self.data.mkdir(parents=True, exist_ok=True)
        self.catalog = Catalog(self.data / CATALOG_FILE)
        self.spec = RESNET_SPEC
        self.calibration = calib.load(self.spec.calibration, self.data / "calibration.json")
        self._pipeline: FacePipeline | None = None
        self._index: FaissIndex | None = None
        self._index_gen = -1
        self._lock = threading.RLock()
        self.repaired: tuple[int, int] | None = None  # (added, removed) by the last index repair

    @classmethod
    def open(cls, data: str | os.PathLike = "./faceindex-data", **overrides) -> FaceIndex:
        """Open (or create) the index in folder `data`; keyword arguments override Settings fields."""
        return cls(Settings(data=Path(data), **overrides))

    def close(self) -> None:
        self.catalog.close()

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
        """The vector index, loaded once and repaired from the catalog when they disagree."""
        with self._lock:
            if self._index is None or self._index_gen != self.catalog.generation:
                self._index = self._load_index()
            return self._index

    def _meta_path(self) -> Path:
        return self.data / INDEX_META

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
            cat_ids = self.catalog.face_ids()
            idx_ids = index.ids()
            missing = np.setdiff1d(cat_ids, idx_ids, assume_unique=True)
            extra = np.setdiff1d(idx_ids, cat_ids, assume_unique=True)
            index.remove(extra)
            for ids, vecs in self.catalog.embeddings(missing.tolist(), dim=self.spec.dim):
                index.add(ids, vecs)
            self.repaired = (len(missing), len(extra))
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

    _trained_n = 0

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
    def _pixels(self, image: ImageInput) -> np.ndarray:
        if isinstance(image, np.ndarray):
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise ImageError("an image array must be (H, W, 3) uint8 RGB")
            return image
        return images.load(image, max_pixels=self.settings.max_pixels,
                           max_bytes=self.settings.max_file_bytes).pixels

    def faces(self, image: ImageInput, fallback: bool = True) -> list[Face]:
        """Detect and embed every face of an image without indexing it (largest first).

        With `fallback` (the default for probes) the CNN detector looks again when HOG finds no face.
        """
        return self.pipeline.faces(self._pixels(image), fallback)

    def _probe_faces(self, image: ImageInput, largest: bool, face: int | None = None) -> list[Face]:
        found = self.faces(image)
        name = _name(image)
        if not found:
            raise NoFaceError(f"no face found in {name}")
        if face is not None:
            if not 0 <= face < len(found):
                raise NoFaceError(f"{name} has {len(found)} face(s); there is no face {face}")
            return [found[face]]
        return found[:1] if largest else found

    # --- add / remove --------------------------------------------------------------------------------------------
    def add(self, paths: Iterable[str | os.PathLike], source: str = "default", *, workers: int | None = None,
            progress: Progress | None = None) -> AddReport:
        """Index every face of every image under `paths` (files or folders, recursively).

        Unchanged files are skipped, files whose content is already indexed (moved or copied) keep their faces,
        bad files are reported in the result and never stop the batch.
        """
        t0 = time.perf_counter()
        report = AddReport(source=source)
        emit = progress or (lambda _event, _info: None)
        self.catalog.check_model(self.spec.key)
        source_id = self.catalog.source_id(source, create=True)
        index = self.index  # load (and repair) before we change anything

        files: list[Path] = []
        for root in paths:
            found, problems = images.iter_image_files(Path(root))
            files += found
            report.errors += [FileError(str(p), why) for p, why in problems]
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
                    image_id, ids, removed = self.catalog.add_image(
                        source_id, r.path, mtime, r.sha256, r.size, r.width, r.height, r.faces)
                    removed_all += removed
                    if ids:
                        added_ids += ids
                        added_vecs += [f.embedding for f in r.faces]
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
        return report

    def remove(self, path: str | os.PathLike, source: str | None = None) -> dict[str, int]:
        """Forget the files at `path` (a file or folder) in one source (or all): faces, embeddings, index."""
        source_id = self.catalog.source_id(source) if source is not None else None
        index = self.index
        files, imgs, face_ids = self.catalog.remove_files(source_id, os.path.abspath(path))
        index.remove(np.asarray(face_ids, np.int64))
        self._index_gen = self.catalog.generation
        self.save()
        return {"files": files, "images": imgs, "faces": len(face_ids)}

    # --- search / verify ---------------------------------------------------------------------------------------
    def gallery_size(self, include_low_quality: bool = False) -> int:
        n = self.catalog.face_count()
        return n if include_low_quality else n - len(self.catalog.low_quality_ids(self.settings.min_quality))

    def search(self, image: ImageInput, top: int = 10, *, largest: bool = False,
               include_low_quality: bool = False) -> list[ProbeResult]:
        """Candidate leads for each face of a probe image (or only the largest), best first."""
        if top < 1:
            raise ValueError("top must be at least 1")
        probe_faces = self._probe_faces(image, largest)
        return self.search_faces(probe_faces, top, include_low_quality=include_low_quality, probe=_name(image))

    def search_faces(self, faces: list[Face], top: int = 10, *, include_low_quality: bool = False,
                     probe: str = "<probe>") -> list[ProbeResult]:
        """Search already-embedded faces (see `faces`)."""
        exclude = None if include_low_quality else self.catalog.low_quality_ids(self.settings.min_quality)
        gallery = self.catalog.face_count() - (0 if exclude is None else len(exclude))
        results = []
        if not faces:
            return results
        index = self.index
        sims, ids = index.search(np.stack([f.embedding for f in faces]), top, exclude)
        records = self.catalog.face_records([int(i) for i in ids.reshape(-1) if i >= 0])
        expected = self.calibration.possible_fmr * gallery
        for face, row_s, row_i in zip(faces, sims, ids):
            matches = []
            for s, i in zip(row_s, row_i):
                rec = records.get(int(i))
                if rec is None:
                    continue
                fmr, label = self.calibration.label(float(s))
                matches.append(_match(rec, float(s), fmr, label, len(matches) + 1, fmr * gallery))
            results.append(ProbeResult(probe, face, tuple(matches), gallery, expected))
        return results

    def verify(self, a: ImageInput, b: ImageInput, *, face_a: int | None = None,
               face_b: int | None = None) -> Verification:
        """Compare the largest (or chosen) face of two images."""
        fa = self._probe_faces(a, True, face_a)[0]
        fb = self._probe_faces(b, True, face_b)[0]
        return self.compare(fa, fb, _name(a), _name(b))

    def compare(self, fa: Face, fb: Face, name_a: str = "a", name_b: str = "b") -> Verification:
        sim = float(np.dot(fa.embedding, fb.embedding))
        fmr, label = self.calibration.label(sim)
        return Verification(name_a, name_b, fa, fb, sim, fmr, label, label != calib.NONE)

    # --- people ------------------------------------------------------------------------------------------------
    def cluster(self) -> list[Person]:
        """Group all searchable faces into people; names given earlier stay with their people."""
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
        out = []
        for pid, name, n_faces, n_images in self.catalog.people(limit):
            if n_faces >= min_faces:
                out.append(Person(pid, name, n_faces, n_images))
        return out

    def person(self, person_id: int) -> tuple[Person, list[FaceRecord]]:
        name, faces = self.catalog.person(person_id)
        return Person(person_id, name, len(faces), len({f.image_id for f in faces}),
                      tuple(f.id for f in faces[:8])), faces

    def name_person(self, person_id: int, name: str | None) -> None:
        if name is not None and not name.strip():
            raise ValueError("a name must not be empty")
        self.catalog.name_person(person_id, name.strip() if name else None)

    # --- crops and stats ---------------------------------------------------------------------------------------
    def face_crop(self, face_id: int, size: int = 160, margin: float = 0.3) -> bytes:
        """A JPEG crop of a stored face, read from its source file."""
        rec = self.catalog.face_record(face_id)
        try:
            pixels = self._pixels(rec.path)
        except ImageError as e:
            raise NotFoundError(f"source image of face {face_id} is not readable: {rec.path}: {e}") from e
        return crop_jpeg(pixels, rec.box, size, margin)

    def stats(self) -> dict:
        counts = self.catalog.counts()
        index = self.index
        disk = sum(p.stat().st_size for p in self.data.iterdir() if p.is_file())
        return {
            **counts,
            "low_quality_faces": len(self.catalog.low_quality_ids(self.settings.min_quality)),
            "sources_list": self.catalog.sources(),
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


def _match(rec: FaceRecord, sim: float, fmr: float, label: str, rank: int, expected: float) -> Match:
    return Match(face_id=rec.id, similarity=sim, fmr=fmr, label=label, image_id=rec.image_id, path=rec.path,
                 source=rec.source, box=rec.box, person_id=rec.person_id, person_name=rec.person_name, rank=rank,
                 expected_false=expected)


def _name(image: ImageInput) -> str:
    if isinstance(image, bytes | bytearray):
        return "<bytes>"
    if isinstance(image, np.ndarray):
        return "<array>"
    return os.fspath(image)
