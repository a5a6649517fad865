"""FaceIndex: the one wiring point of catalog, audit log, vector index, pipeline, calibration and policy.

The work itself lives in cohesive modules that take the engine as their first argument: `ingest` (add, remove),
`search` (search, verify), `people` (clustering and people), `privacy` (opt-out, access, erasure, sources,
retention, deletion), `keys` (API keys, two-person confirmation), `crops`; the vector index's life cycle is
`vectors.manager.IndexManager`. FaceIndex methods are their public, documented entry points.
"""

from __future__ import annotations

import contextlib
import copy
import os
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import numpy as np

from . import anchor as anchoring
from . import calibration as calib
from . import crops, ingest, keys, people, privacy, search
from . import policy as policies
from .audit import key_actor as key_actor  # re-exported for the server
from .catalog import Catalog, FaceRecord, open_catalog
from .config import Settings
from .crops import crop_jpeg as crop_jpeg  # re-exported: the CLI writes crops of search results
from .errors import AccessDenied, EvaluationError, FaceIndexError, PolicyError
from .models import packs
from .models.base import ModelPack, ModelSpec
from .pipeline import FacePipeline
from .search import ImageInput
from .types import AddReport, Face, Person, ProbeResult, Verification
from .vectors import milvus as milvus_url
from .vectors.faiss import FaissIndex, Tombstoned
from .vectors.manager import open_manager

Progress = Callable[[str, dict], None]

CATALOG_FILE = "catalog.db"
AUDIT_FILE = "audit.db"
MIN_CALIBRATION_PAIRS = 100_000  # an installed table must resolve FMRs well below the 'strong' bar


def audit_target(catalog: Catalog, data: Path) -> Path | str:
    """Where the audit log lives: beside a SQLite catalog in the data folder, or in the PostgreSQL catalog's
    database (shared by every server)."""
    return data / AUDIT_FILE if catalog.dialect == "sqlite" else catalog.url


class _Shared:
    """An attribute kept on the root FaceIndex, so that `acting_as` views see and make the same changes."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.key = "_shared_" + name

    def __get__(self, obj, owner=None):
        return self if obj is None else obj._root.__dict__[self.key]

    def __set__(self, obj, value) -> None:
        obj._root.__dict__[self.key] = value


class _SharedPolicy(_Shared):
    """The policy; on a shared (PostgreSQL) catalog it is kept there too, and a change another server made is
    taken up on the next read (one meta lookup)."""

    def __get__(self, obj, owner=None):
        if obj is not None:
            obj._root._follow_policy()
        return super().__get__(obj, owner)


class FaceIndex:
    """A face index in one data folder: add images, search and verify faces, group them into people."""

    policy = _SharedPolicy()
    calibration = _Shared()
    pack = _Shared()
    _pipeline = _Shared()

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        vectors = milvus_url.check(settings.vectors)  # a bad URL or an unreachable server: refused, nothing made
        if vectors is not None:
            milvus_url.ping(vectors)
        self.data = settings.resolved_data()
        made = not self.data.exists()
        self.data.mkdir(parents=True, exist_ok=True)
        self.catalog: Catalog = open_catalog(settings.catalog or self.data / CATALOG_FILE)
        self._root = self  # views made by acting_as share the state below (objects, and _Shared attributes)
        # the model pack: the one the catalog records, else --model (a new index), else the default; recorded now
        recorded = self.catalog.get_meta("model")
        try:
            self.pack = packs.for_index(settings, recorded)
        except FaceIndexError:
            self.catalog.close()
            raise
        if recorded is None:
            self.catalog.check_model(self.pack.key)
        self.settings = settings.model_copy(update={"model": self.pack.name})  # worker processes build this pack
        self.calibration = packs.calibration_for(self.pack, self.data)
        self._pipeline = None
        self._lock = threading.RLock()
        self.vectors = open_manager(self.catalog, self.data, self.spec, settings)
        try:
            if vectors is not None:
                _ = self.vectors.index  # its collection (made by another model? refused now) and catch-up
        except FaceIndexError:
            self.catalog.close()
            if made:  # a folder made by this call holds only the new, empty catalog: leave nothing behind
                with contextlib.suppress(OSError):
                    for p in self.data.glob(CATALOG_FILE + "*"):
                        p.unlink()
                    self.data.rmdir()
            raise
        try:  # cross-checked with the head the catalog recorded: a deleted or truncated log stops us here
            self.audit = anchoring.open_audit(self.catalog, audit_target(self.catalog, self.data),
                                              anchoring.load_key(settings))
        except FaceIndexError:
            self.catalog.close()
            raise
        self._policy_sha: str | None = None  # the catalog's policy_sha this engine's policy reflects
        policy, sha = policies.load(self.data)
        held = self.catalog.get_meta("policy_sha") or ""
        self._policy_in_catalog = self.catalog.dialect != "sqlite"  # servers on one catalog share one policy
        if self._policy_in_catalog and sha in ("", held) and self.catalog.get_meta("policy"):
            self._policy_sha = "?"  # another server's policy: adopted (and its file written) by the first read
        else:
            self.policy, self._policy_sha = policy, held
            if sha != held:  # edited outside faceindex: record it
                self._record("policy.change", details={"how": "policy file changed outside faceindex",
                                                       "sha256": sha, "policy": policy.model_dump()})
                self._store_policy_sha(sha)

    def _store_policy_sha(self, sha: str) -> None:
        """Record the policy file's sha256 (and, on a shared catalog, the policy itself) in the catalog."""
        with self.catalog.transaction():
            self.catalog.set_meta("policy_sha", sha)
            if self._policy_in_catalog:
                path = self.data / policies.POLICY_FILE
                self.catalog.set_meta("policy", path.read_text() if path.is_file() else "")
        self._root._policy_sha = sha

    def _follow_policy(self) -> None:
        if not self.__dict__.get("_policy_in_catalog") or self.__dict__.get("_policy_sha") is None:
            return
        sha = self.catalog.get_meta("policy_sha") or ""
        if sha == self._policy_sha:
            return
        raw = self.catalog.get_meta("policy") or ""
        try:
            new = policies.Policy.model_validate_json(raw) if raw else policies.Policy()
        except ValueError as e:
            raise PolicyError(f"invalid policy in the catalog: {e}") from e
        if raw:
            policies.save(self.data, new)  # the local file follows the shared policy
        self.__dict__["_shared_" + "policy"] = new
        self._policy_sha = sha

    @classmethod
    def open(cls, data: str | os.PathLike = "./faceindex-data", *, catalog: str | os.PathLike | None = None,
             **overrides) -> FaceIndex:
        """Open (or create) the index in folder `data`; `catalog` a postgresql:// URL (or a SQLite file) instead of
        `<data>/catalog.db`; other keyword arguments override Settings fields."""
        if catalog is not None:
            overrides["catalog"] = os.fspath(catalog)
        return cls(Settings(data=Path(data), **overrides))

    def close(self) -> None:
        self.vectors.close()
        self.catalog.close()
        self.audit.close()

    def __enter__(self) -> FaceIndex:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def acting_as(self, actor: str, role: str) -> FaceIndex:
        """A view of this index that acts (and is audited) as another actor and role; shares every component."""
        view = copy.copy(self)
        view.settings = self.settings.model_copy(update={"actor": actor, "role": role})
        return view

    # --- accountability plumbing (used by the modules that do the work) ----------------------------------------
    def _allow(self, permission: str) -> None:
        policies.check_permission(self.settings.role, permission)

    def allow_any(self, *permissions: str) -> None:
        """AccessDenied unless the actor's role has at least one of `permissions`."""
        if not any(p in policies.PERMISSIONS.get(self.settings.role, ()) for p in permissions):
            raise AccessDenied(f"role {self.settings.role!r} may not do this")

    def _record(self, action: str, purpose: str | None = None, case: str | None = None,
                details: dict | None = None):
        """Append one audit record for the current actor."""
        return self.audit.append(action, actor=self.settings.actor, role=self.settings.role, purpose=purpose,
                                 case_ref=case, details=details or {})

    def _searchable(self) -> tuple[np.ndarray, int]:
        """(ids below the quality bar, face count), cached per catalog generation."""
        return self.vectors.searchable(self.settings.min_quality)

    def _gallery_state(self) -> dict:
        return {"faces": self._searchable()[1], "generation": self.catalog.generation}

    # --- components --------------------------------------------------------------------------------------------
    @property
    def spec(self) -> ModelSpec:
        """The embedding model's identity (key, dim, calibration table) of this index's pack."""
        self._follow_model()
        return self.pack.spec

    def _follow_model(self) -> None:
        """Take up the model another process moved the catalog to (faceindex reindex while a server runs)."""
        key = self.catalog.get_meta("model")
        if key is not None and key != self.pack.key:
            self._use_pack(packs.by_key(key, self.data))

    @property
    def pipeline(self) -> FacePipeline:
        self._follow_model()
        with self._lock:
            if self._pipeline is None:
                self._pipeline = FacePipeline(self.settings, pack=self.pack)
            return self._pipeline

    def _use_pack(self, pack: ModelPack) -> None:
        """Switch this engine (and its views) to another pack after a reindex swapped the catalog to it."""
        with self._lock:
            self.pack = pack
            self._root.settings = self._root.settings.model_copy(update={"model": pack.name})
            self.settings = self.settings.model_copy(update={"model": pack.name})
            self.calibration = packs.calibration_for(pack, self.data)
            self._pipeline = None
            self.vectors.switch_model(pack.spec)

    @property
    def index(self) -> FaissIndex | Tombstoned:
        """The vector index, loaded once and repaired from the catalog when they disagree."""
        self._follow_model()
        return self.vectors.index

    @property
    def repaired(self) -> tuple[int, int] | None:
        """(added, removed) by the repair of the vector index when it was loaded; None when none was needed."""
        return self.vectors.repaired

    def save(self) -> None:
        """Persist the vector index (it is also saved after each add/remove)."""
        self.vectors.save()

    # --- images -> faces -> index ------------------------------------------------------------------------------
    def faces(self, image: ImageInput, fallback: bool = True) -> list[Face]:
        """Detect and embed every face of an image without indexing it (largest first).

        With `fallback` (the default for probes) the CNN detector looks again when HOG finds no face.
        """
        return self.pipeline.faces(search.load(self, image).pixels, fallback)

    def add(self, paths: list[str | os.PathLike], source: str = "default", *, workers: int | None = None,
            progress: Progress | None = None, within: list[Path] | None = None, ray: str | None = None) -> AddReport:
        """Index every face of every image under `paths` (files or folders, recursively); see `ingest.add`."""
        return ingest.add(self, paths, source, workers=workers, progress=progress, within=within, ray=ray)

    def remove(self, path: str | os.PathLike, source: str | None = None) -> dict[str, int]:
        """Forget the files at `path` (a file or folder) in one source (or all): faces, embeddings, index."""
        return ingest.remove(self, path, source)

    def delete_face(self, face_id: int) -> None:
        """Delete one face (the image stays, with its other faces). Audited."""
        privacy.delete_face(self, face_id)

    # --- search / verify ---------------------------------------------------------------------------------------
    def gallery_size(self, include_low_quality: bool = False) -> int:
        low, n = self._searchable()
        return n if include_low_quality else n - len(low)

    def search(self, image: ImageInput, top: int = 10, *, purpose: str | None = None, case: str | None = None,
               largest: bool = False, face: int | None = None,
               include_low_quality: bool = False) -> list[ProbeResult]:
        """Candidate leads for each face of a probe image (or only the largest), best first. Audited."""
        return search.search(self, image, top, purpose=purpose, case=case, largest=largest, face=face,
                             include_low_quality=include_low_quality)

    def search_faces(self, faces: list[Face], top: int = 10, *, include_low_quality: bool = False,
                     probe: str = "<probe>") -> list[ProbeResult]:
        """Search already-embedded faces (see `faces`); opted-out people are never returned. Not audited."""
        return search.search_faces(self, faces, top, include_low_quality=include_low_quality, probe=probe)

    def verify(self, a: ImageInput, b: ImageInput, *, purpose: str | None = None, case: str | None = None,
               face_a: int | None = None, face_b: int | None = None) -> Verification:
        """Compare the largest (or chosen) face of two images. Audited."""
        return search.verify(self, a, b, purpose=purpose, case=case, face_a=face_a, face_b=face_b)

    def compare(self, fa: Face, fb: Face, name_a: str = "a", name_b: str = "b") -> Verification:
        """Compare two embedded faces. Not audited."""
        return search.compare(self, fa, fb, name_a, name_b)

    # --- people ------------------------------------------------------------------------------------------------
    def cluster(self, full: bool = False, *, purpose: str | None = None, case: str | None = None,
                limit: int | None = None) -> list[Person]:
        """Group searchable faces into people: new faces only, or all with `full`; names, reviewers' merges and
        splits stay. Returns the `limit` largest people (default all). Audited."""
        return people.cluster(self, full, purpose=purpose, case=case, limit=limit)

    def people(self, limit: int | None = None, min_faces: int = 1, sort: str = "size", *,
               purpose: str | None = None, case: str | None = None, audit: bool = True) -> list[Person]:
        """People by size, largest first; sort="weakest": least cohesive first (for review). Audited."""
        return people.people(self, limit, min_faces, sort, purpose=purpose, case=case, audit=audit)

    def person(self, person_id: int, *, purpose: str | None = None, case: str | None = None,
               audit: bool = True) -> tuple[Person, list[FaceRecord]]:
        """A person and their faces. Audited."""
        return people.person(self, person_id, purpose=purpose, case=case, audit=audit)

    def name_person(self, person_id: int, name: str | None, *, purpose: str | None = None,
                    case: str | None = None) -> None:
        """Name (or, with None, unname) a person; names survive re-clustering. Audited."""
        people.name_person(self, person_id, name, purpose=purpose, case=case)

    def merge_people(self, person_ids: list[int]) -> Person:
        """Merge people into the first one given; refused when two of them appear in one photo."""
        return people.merge_people(self, person_ids)

    def split_person(self, person_id: int, face_ids: list[int]) -> Person:
        """Move some faces of a person into a new person; returns the new person."""
        return people.split_person(self, person_id, face_ids)

    # --- opt-out, subject access, erasure, sources, retention --------------------------------------------------
    def optout_threshold(self) -> float:
        return privacy.optout_threshold(self)

    def access_threshold(self) -> float:
        return privacy.access_threshold(self)

    def optout_add(self, photos: list[ImageInput], reference: str) -> dict:
        """Register a person's opt-out: delete every matching face now, and block them from now on."""
        return privacy.optout_add(self, photos, reference)

    def optouts(self) -> list[dict]:
        return privacy.optouts(self)

    def optout_remove(self, reference: str) -> None:
        """Withdraw an opt-out (its faces are not restored; new photos will be indexed again). Audited."""
        privacy.optout_remove(self, reference)

    def access(self, photos: list[ImageInput], reference: str, out_dir: Path | None = None, *,
               purpose: str | None = None) -> dict:
        """Answer a subject access request (purpose must be "data-subject-request"): every face held that
        matches the person, with its provenance (source, basis, file name; never the server's paths)."""
        return privacy.access(self, photos, reference, out_dir, purpose=purpose)

    def erase(self, photos: list[ImageInput], reference: str, out_dir: Path | None = None) -> dict:
        """Access + deletion + opt-out in one step; returns the receipt."""
        return privacy.erase(self, photos, reference, out_dir)

    def set_source(self, name: str, basis: str | None = None, retention_days: int | None = None,
                   notice: str | None = None) -> dict:
        """Register a source, or change its legal basis, retention (0 = keep) or notice. Audited."""
        return privacy.set_source(self, name, basis, retention_days, notice)

    def sources(self) -> list[dict]:
        """Sources with their basis, retention, file count and when their oldest file expires."""
        return privacy.sources(self)

    def retention_apply(self, at: datetime | None = None) -> dict:
        """Delete files older than their source's retention period (and faces no other file holds). Audited."""
        return privacy.retention_apply(self, at)

    # --- model packs -------------------------------------------------------------------------------------------
    def reindex(self, model: str, progress: Progress | None = None) -> dict:
        """Re-embed every face into model pack `model` from the files still on disk and swap it in atomically.

        Faces keep their ids, people and names; a killed run resumes; the old model serves until the swap. The
        report lists faces whose file is gone (deleted at the swap) and opt-outs that need their reference photos
        again (no template for the new model). Audited. See `reindex.reindex`.
        """
        from . import reindex as rx

        self._allow("ingest")
        self._allow("policy")
        report = rx.reindex(self, model, progress)
        self._use_pack(packs.get(model, self.data))
        _ = self.index  # rebuilt from the new embeddings
        self.save()
        self._record("reindex", details={
            **{k: v for k, v in report.items() if k != "faces_removed_file_gone"},
            "faces_removed_file_gone": [f["face_id"] for f in report["faces_removed_file_gone"]]})
        return report

    # --- policy and calibration --------------------------------------------------------------------------------
    def set_policy(self, **changes) -> policies.Policy:
        """Change policy fields (validated), save the file and audit the change."""
        self._allow("policy")
        before = self.policy.model_dump()
        try:
            new = policies.Policy.model_validate({**before, **changes})
        except ValueError as e:
            raise PolicyError(f"invalid policy change: {e}") from e
        sha = policies.save(self.data, new)
        self._store_policy_sha(sha)
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
            self.calibration = packs.calibration_for(self.pack, self.data)
            self._record("policy.change", details={"calibration": str(path), "source": cal.source,
                                                   "impostor_pairs": cal.impostor_pairs})
        return result

    # --- API keys, two-person confirmation ---------------------------------------------------------------------
    def create_key(self, name: str, role: str) -> tuple[int, str]:
        """A new API key for `role`; returns (id, token). Only the token's hash is stored: show it once."""
        return keys.create_key(self, name, role)

    def api_keys(self) -> list[dict]:
        return keys.api_keys(self)

    def revoke_key(self, key_id: int) -> None:
        keys.revoke_key(self, key_id)

    def authenticate(self, token: str) -> dict:
        """The key behind a token ({id, name, role}); AccessDenied for unknown, malformed or revoked keys."""
        return keys.authenticate(self, token)

    def confirm(self, case: str, face_id: int) -> dict:
        """Confirm a candidate for a case. It counts as confirmed only once two different investigators have."""
        return keys.confirm(self, case, face_id)

    def confirmations(self, case: str) -> dict[int, dict]:
        return keys.confirmations(self, case)

    # --- audit --------------------------------------------------------------------------------------------------
    def audit_verify(self, expected_head: tuple[int, str] | None = None):
        self._allow("audit")
        return self.audit.verify(expected_head)

    def audit_show(self, **filters):
        self._allow("audit")
        return self.audit.query(**filters)

    # --- crops and stats ---------------------------------------------------------------------------------------
    def face_crop(self, face_id: int, size: int = 160, margin: float = 0.3, *, purpose: str | None = None,
                  case: str | None = None, audit: bool = True) -> bytes:
        """A JPEG crop of a stored face, read from its source file. Audited."""
        return crops.face_crop(self, face_id, size, margin, purpose=purpose, case=case, audit=audit)

    def face_in_image(self, face_id: int, max_side: int = 1600, *, purpose: str | None = None,
                      case: str | None = None) -> bytes:
        """The source image of a face, downscaled to `max_side`, with the face outlined (JPEG). Audited."""
        return crops.face_in_image(self, face_id, max_side, purpose=purpose, case=case)

    def stats(self) -> dict:
        """Counts, sources, model, index kind and size of the data folder."""
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
            "model_pack": self.pack.name,
            "detector": self.settings.detector if self.pack.name == "dlib" else self.pack.detector,
            "index_kind": index.kind,
            "index_count": index.count,
            "generation": self.catalog.generation,
            "data": str(self.data),
            "disk_bytes": disk,
        }
