"""Privacy: opt-out, subject access, erasure, deletion of faces, sources with their legal basis, retention."""

from __future__ import annotations

import contextlib
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import policy as policies
from . import search
from .catalog import now
from .errors import CatalogError, FaceIndexError, NotFoundError, PolicyError
from .text import MAX_LONG, check_text

if TYPE_CHECKING:
    from .engine import FaceIndex
    from .search import ImageInput

SAR_PURPOSE = "data-subject-request"  # the one purpose subject access serves


def optout_threshold(fi: FaceIndex) -> float:
    """Similarity at the policy's opt-out FMR for this index's model."""
    return fi.calibration.threshold_for(fi.policy.optout_fmr)


def access_threshold(fi: FaceIndex) -> float:
    """Similarity at the policy's subject-access FMR for this index's model."""
    return fi.calibration.threshold_for(fi.policy.access_fmr)


def _templates(fi: FaceIndex, photos: list[ImageInput], loaded: list | None = None) -> np.ndarray:
    """The largest face of each reference photo; the photos themselves are never stored."""
    if not photos:
        raise ValueError("at least one photo of the person is needed")
    loaded = loaded if loaded is not None else [search.load(fi, p) for p in photos]
    return np.stack([search.probe_faces(fi, x, True)[0].embedding for x in loaded])


def _matching_faces(fi: FaceIndex, templates: np.ndarray, threshold: float) -> dict[int, float]:
    """Face id -> best similarity, for every indexed face at or above `threshold` to any template."""
    best: dict[int, float] = {}
    for sims, ids in fi.index.range_search(templates, threshold - 1e-6):
        for s, i in zip(sims.tolist(), ids.tolist()):
            best[i] = max(best.get(i, -1.0), s)
    return best


def optout_add(fi: FaceIndex, photos: list[ImageInput], reference: str, *, _delete_uploads: bool = False) -> dict:
    """Register a person's opt-out: delete every matching face now, and block them from now on.

    Only the face templates (embeddings) and the reference are kept. Returns the receipt (also stored), with
    advice when a single reference photo was given (it leaks more of the person's faces: docs/benchmarks.md).
    Templates are also made with every other built-in model pack while the photos are at hand, so the opt-out
    still holds after a reindex into another model. An existing opt-out left without a template for this index's
    model (by a reindex) is renewed from the photos.
    """
    from . import reindex

    fi._allow("privacy")
    reference = check_reference(reference)
    loaded = [search.load(fi, p) for p in photos]
    templates = _templates(fi, photos, loaded)
    existing = {o["reference"]: o for o in fi.catalog.optouts()}
    renew = reference in existing and existing[reference]["templates"] == 0
    if reference in existing and not renew:
        raise CatalogError(f"an opt-out with reference {reference!r} already exists")
    matches = _matching_faces(fi, templates, optout_threshold(fi))
    image_ids = {r.image_id for r in fi.catalog.face_records(sorted(matches)).values()}
    uploads = _uploaded(fi, fi.catalog.image_files(sorted(image_ids))) if _delete_uploads else []
    images_affected = delete_faces(fi, sorted(matches))
    receipt = {"reference": reference, "time": now(), "actor": fi.settings.actor, "templates": len(templates),
               "faces_removed": len(matches), "images_affected": images_affected,
               "threshold": round(optout_threshold(fi), 5), "threshold_fmr": fi.policy.optout_fmr,
               "model": fi.pack.key}
    if len(templates) < 2:
        receipt["advice"] = ("one reference photo matched these faces; 2-3 photos (different days, angles) find "
                             "more of the person's faces now and block more later")
    if _delete_uploads:
        for path in uploads:  # photos uploaded through the server are ours to delete; the owner's files are not
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        receipt["uploads_deleted"] = len(uploads)
    receipt["templates_per_model"] = reindex.keep_templates_for_all_packs(
        fi, reference, [x.pixels for x in loaded], templates)
    if renew:
        receipt["renewed"] = True
        reindex.renew_optout(fi.catalog, reference, templates)
    else:
        fi.catalog.add_optout(reference, fi.settings.actor, templates, receipt)
    fi._record("optout.renew" if renew else "optout.add", case=reference,
               details={**receipt, "face_ids": sorted(matches), "gallery": fi._gallery_state()})
    return receipt


def optouts(fi: FaceIndex) -> list[dict]:
    fi._allow("privacy")
    return fi.catalog.optouts()


def optout_remove(fi: FaceIndex, reference: str) -> None:
    """Withdraw an opt-out (its faces are not restored; new photos will be indexed again). Audited."""
    from . import reindex

    fi._allow("privacy")
    reference = check_reference(reference)
    fi.catalog.remove_optout(reference)
    reindex.forget_templates(fi.catalog, reference)
    fi._record("optout.remove", case=reference, details={"reference": reference})


def access(fi: FaceIndex, photos: list[ImageInput], reference: str, out_dir: Path | None = None,
           *, purpose: str | None = None, _action: str = "access") -> dict:
    """Answer a subject access request: every face held that matches the person, with its provenance (source,
    legal basis, file name, box, date; not where the server keeps the file).

    Only for a data-subject request: `purpose` must be "data-subject-request" (PolicyError otherwise), and the
    reference names the request. With `out_dir`, writes `<reference>.json` and a self-contained
    `<reference>.html` with thumbnails.
    """
    fi._allow("privacy")
    reference = check_reference(reference)
    if purpose != SAR_PURPOSE:
        raise PolicyError(f"subject access answers a data-subject request only: give the purpose {SAR_PURPOSE!r} "
                          "and the request's reference")
    templates = _templates(fi, photos)
    matches = _matching_faces(fi, templates, access_threshold(fi))
    records = fi.catalog.face_records(list(matches))
    faces = []
    for fid in sorted(matches, key=lambda i: -matches[i]):
        r = records[fid]
        faces.append({"face_id": fid, "similarity": round(matches[fid], 5),
                      "fmr": float(fi.calibration.fmr_at(matches[fid])), "source": r.source, "basis": r.basis,
                      "file": os.path.basename(r.path), "box": r.box.as_list(), "added_at": r.added_at,
                      "image_id": r.image_id})
    report = {"reference": reference, "time": now(), "actor": fi.settings.actor, "templates": len(templates),
              "threshold": round(access_threshold(fi), 5), "threshold_fmr": fi.policy.access_fmr,
              "images": len({f["image_id"] for f in faces}), "faces": faces}
    if out_dir is not None:
        from .report import access_html

        out_dir.mkdir(parents=True, exist_ok=True)
        thumbs = {}
        for f in faces:
            with contextlib.suppress(FaceIndexError):  # listed without a thumbnail
                thumbs[f["face_id"]] = fi.face_crop(f["face_id"], size=96, audit=False)
        (out_dir / f"{reference}.json").write_text(json.dumps(report, indent=2))
        (out_dir / f"{reference}.html").write_text(access_html(report, thumbs))
        report["files"] = [str(out_dir / f"{reference}.json"), str(out_dir / f"{reference}.html")]
    fi._record(_action, purpose, case=reference, details={
        "templates": len(templates), "threshold": report["threshold"], "gallery": fi._gallery_state(),
        "results": [[f["face_id"], f["similarity"]] for f in faces], "exported": report.get("files", [])})
    return report


def erase(fi: FaceIndex, photos: list[ImageInput], reference: str, out_dir: Path | None = None) -> dict:
    """Access + deletion + opt-out in one step; returns the receipt."""
    fi._allow("privacy")
    reference = check_reference(reference)
    report = access(fi, photos, reference, out_dir, purpose=SAR_PURPOSE, _action="erase.access")
    receipt = optout_add(fi, photos, reference, _delete_uploads=True)
    receipt["faces_listed"] = len(report["faces"])
    fi._record("erase", case=reference, details=receipt)
    return receipt


def get_source(fi: FaceIndex, name: str) -> dict:
    """A registered source by name (NotFoundError if there is none)."""
    for s in fi.catalog.sources():
        if s["name"] == name:
            return s
    raise NotFoundError(f"no source named {name!r}")


def set_source(fi: FaceIndex, name: str, basis: str | None = None, retention_days: int | None = None,
               notice: str | None = None) -> dict:
    """Register a source, or change its legal basis, retention (0 = keep) or notice. Audited."""
    fi._allow("ingest")
    name = check_text(name, "a source name")
    notice = check_text(notice, "a source notice", max_len=MAX_LONG, optional=True)
    if basis is not None and basis not in policies.BASES:
        raise ValueError(f"unknown legal basis {basis!r}; one of: {', '.join(policies.BASES)}")
    if retention_days is not None and not 0 <= retention_days <= 36_500:
        raise ValueError("retention must be 0 (keep forever) to 36500 days")
    fi.catalog.put_source(name, basis, notice, retention_days)
    source = get_source(fi, name)
    fi._record("source.change", details={k: source[k] for k in ("name", "basis", "notice", "retention_days")})
    return source


def sources(fi: FaceIndex) -> list[dict]:
    """Sources with their basis, retention, file count and when their oldest file expires."""
    out = []
    for s in fi.catalog.sources():
        s = dict(s)
        if s["retention_days"] and s["oldest_file"]:
            s["next_expiry"] = _plus_days(s["oldest_file"], s["retention_days"])
        else:
            s["next_expiry"] = None
        out.append(s)
    return out


def source_usage(fi: FaceIndex, name: str) -> dict:
    """What a source holds and what deleting its images would remove (images and faces no other source holds)."""
    fi.allow_any("ingest", "delete", "privacy", "audit")
    return {"source": name, **fi.catalog.source_usage(get_source(fi, name)["id"])}


def delete_source_images(fi: FaceIndex, name: str) -> dict:
    """Forget every file of a source: images no other source holds go, with their faces. The source's
    registration (legal basis, notice, retention) stays. Audited."""
    fi._allow("delete")
    source = get_source(fi, name)
    files, imgs, face_ids = fi.catalog.remove_file_ids(fi.catalog.source_file_ids(source["id"]))
    fi.vectors.forget(face_ids)
    result = {"source": name, "files": files, "images": imgs, "faces": len(face_ids)}
    fi._record("source.delete_images", details={**result, "face_ids": face_ids, "gallery": fi._gallery_state()})
    return result


def retention_apply(fi: FaceIndex, at: datetime | None = None) -> dict:
    """Delete files older than their source's retention period (and faces no other file holds). Audited."""
    fi._allow("delete")
    at = at or datetime.now(UTC)
    result = {"files": 0, "images": 0, "faces": 0, "sources": {}}
    for s in fi.catalog.sources():
        if not s["retention_days"]:
            continue
        cutoff = (at - timedelta(days=s["retention_days"])).isoformat(timespec="seconds")
        ids = fi.catalog.expired_files(s["id"], cutoff)
        if not ids:
            continue
        files, imgs, face_ids = fi.catalog.remove_file_ids(ids)
        fi.vectors.forget(face_ids)
        result["files"] += files
        result["images"] += imgs
        result["faces"] += len(face_ids)
        result["sources"][s["name"]] = {"files": files, "images": imgs, "faces": len(face_ids), "cutoff": cutoff}
    fi._record("retention.apply", details={**result, "at": at.isoformat(timespec="seconds"),
                                             "gallery": fi._gallery_state()})
    return result


def delete_faces(fi: FaceIndex, face_ids: list[int]) -> int:
    """Delete faces from the catalog and the index; returns how many images were affected. Not audited."""
    images_affected = len({r.image_id for r in fi.catalog.face_records(face_ids).values()})
    fi.catalog.delete_faces(face_ids)
    fi.vectors.forget(face_ids)
    return images_affected


def delete_face(fi: FaceIndex, face_id: int) -> None:
    """Delete one face (the image stays, with its other faces). Audited."""
    fi._allow("delete")
    fi.catalog.face_record(face_id)
    delete_faces(fi, [face_id])
    fi._record("delete", details={"face_ids": [face_id], "gallery": fi._gallery_state()})


def _uploaded(fi: FaceIndex, paths: list[str]) -> list[str]:
    """The paths that are server uploads (under <data>/uploads), the only source files faceindex may delete."""
    root = os.path.realpath(fi.data / "uploads")
    return sorted({p for p in paths if os.path.commonpath([os.path.realpath(p), root]) == root})


def opted_out(fi: FaceIndex, face_ids: list[int]) -> set[int]:
    """Which of `face_ids` match a registered opt-out (faces that escaped one: a restored backup, a face indexed
    before the opt-out by another process). Every endpoint that returns faces filters them out."""
    templates = fi.catalog.optout_templates(fi.spec.dim)
    if not len(templates) or not face_ids:
        return set()
    out: set[int] = set()
    for ids, vecs in fi.catalog.embeddings(face_ids, dim=fi.spec.dim):
        out |= set(ids[search.matches_any(vecs, templates, optout_threshold(fi))].tolist())
    return out


def check_reference(ref: str) -> str:
    """A request reference, usable as a file name (no path separators or traversal)."""
    ref = (ref or "").strip()
    if not ref or len(ref) > 100 or not all(c.isalnum() or c in "-_.:" for c in ref) or ref.startswith("."):
        raise ValueError("a reference must be 1-100 characters of letters, digits and - _ . : (not starting with .)")
    return ref


def _plus_days(iso: str, days: int) -> str:
    return (datetime.fromisoformat(iso) + timedelta(days=days)).isoformat(timespec="seconds")
