"""Probes and candidates: load a probe once, find its faces, search the gallery (1:N), verify two faces (1:1)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from . import calibration as calib
from . import images
from .catalog import FaceRecord
from .errors import ImageError, NoFaceError
from .types import Face, Match, ProbeResult, Verification

if TYPE_CHECKING:
    from .engine import FaceIndex

ImageInput = str | os.PathLike | bytes | np.ndarray


class Probe(NamedTuple):
    """An image read and decoded once: pixels, sha256 (for the audit trail) and a name for messages."""

    pixels: np.ndarray
    sha256: str
    name: str


def load(fi: FaceIndex, image: ImageInput) -> Probe:
    """Read and decode an image once, within the size limits. Errors about a file name it (a search may have
    several probes); bytes and arrays have no name to give."""
    name = _name(image)
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ImageError("an image array must be (H, W, 3) uint8 RGB")
        return Probe(image, images.sha256_bytes(np.ascontiguousarray(image).tobytes()), name)
    try:
        loaded = images.load(image, max_pixels=fi.settings.max_pixels, max_bytes=fi.settings.max_file_bytes)
    except ImageError as e:
        if isinstance(image, bytes | bytearray):
            raise
        raise ImageError(f"{name}: {e}") from e
    return Probe(loaded.pixels, loaded.sha256, name)


def probe_faces(fi: FaceIndex, probe: Probe, largest: bool, face: int | None = None) -> list[Face]:
    """The faces of a probe (all, the largest, or face number `face`); NoFaceError when there is none."""
    found = fi.pipeline.faces(probe.pixels, True)
    if not found:
        raise NoFaceError(f"no face found in {probe.name}")
    if face is not None:
        if not 0 <= face < len(found):
            raise NoFaceError(f"{probe.name} has {len(found)} face(s); there is no face {face}")
        return [found[face]]
    return found[:1] if largest else found


def search(fi: FaceIndex, image: ImageInput, top: int = 10, *, purpose: str | None = None, case: str | None = None,
           largest: bool = False, face: int | None = None, include_low_quality: bool = False) -> list[ProbeResult]:
    """Candidate leads for each face of a probe image (or only the largest), best first. Audited."""
    fi._allow("search")
    fi.policy.check_purpose(purpose, case)
    if top < 1:
        raise ValueError("top must be at least 1")
    probe = load(fi, image)
    params = {"top": top, "largest": largest, "face": face, "include_low_quality": include_low_quality}
    try:
        found = probe_faces(fi, probe, largest, face)
    except NoFaceError:
        fi._record("search", purpose, case, {"probe_sha256": probe.sha256, **params, "faces": 0, "results": [],
                                              "gallery": fi._gallery_state()})
        raise
    results = search_faces(fi, found, top, include_low_quality=include_low_quality, probe=probe.name)
    fi._record("search", purpose, case, {
        "probe_sha256": probe.sha256, **params, "faces": len(results), "gallery": fi._gallery_state(),
        "possible_fmr": fi.calibration.possible_fmr, "strong_fmr": fi.calibration.strong_fmr,
        "results": [[[m.face_id, round(m.similarity, 5)] for m in r.matches] for r in results]})
    return results


def search_faces(fi: FaceIndex, faces: list[Face], top: int = 10, *, include_low_quality: bool = False,
                 probe: str = "<probe>") -> list[ProbeResult]:
    """Search already-embedded faces; opted-out people are never returned. Not audited: callers outside the
    engine use `search`."""
    low, count = fi._searchable()
    exclude = None if include_low_quality else low
    gallery = count - (0 if exclude is None else len(exclude))
    results: list[ProbeResult] = []
    if not faces:
        return results
    index = fi.index
    optouts = fi.catalog.optout_templates(fi.spec.dim)
    fetch = top if not len(optouts) else top * 2 + 32
    sims, ids = index.search(np.stack([f.embedding for f in faces]), fetch, exclude)
    flat = [int(i) for i in ids.reshape(-1) if i >= 0]
    blocked: set[int] = set()
    if len(optouts) and flat:
        for cand_ids, vecs in fi.catalog.embeddings(flat, dim=fi.spec.dim):
            hit = matches_any(vecs, optouts, fi.optout_threshold())
            blocked |= set(cand_ids[hit].tolist())
    records = fi.catalog.face_records([i for i in flat if i not in blocked])
    expected = fi.calibration.possible_fmr * gallery
    for f, row_s, row_i in zip(faces, sims, ids):
        matches: list[Match] = []
        for s, i in zip(row_s, row_i):
            rec = records.get(int(i))
            if rec is None or len(matches) == top:
                continue
            fmr, label = fi.calibration.label(float(s))
            matches.append(_match(rec, float(s), fmr, label, len(matches) + 1, fmr * gallery))
        results.append(ProbeResult(probe, f, tuple(matches), gallery, expected))
    return results


def verify(fi: FaceIndex, a: ImageInput, b: ImageInput, *, purpose: str | None = None, case: str | None = None,
           face_a: int | None = None, face_b: int | None = None) -> Verification:
    """Compare the largest (or chosen) face of two images. Audited."""
    fi._allow("verify")
    fi.policy.check_purpose(purpose, case)
    pa, pb = load(fi, a), load(fi, b)
    details = {"a_sha256": pa.sha256, "b_sha256": pb.sha256, "face_a": face_a, "face_b": face_b}
    try:
        fa = probe_faces(fi, pa, True, face_a)[0]
        fb = probe_faces(fi, pb, True, face_b)[0]
    except NoFaceError as e:
        fi._record("verify", purpose, case, {**details, "error": str(e)})
        raise
    v = compare(fi, fa, fb, pa.name, pb.name)
    fi._record("verify", purpose, case, {**details, "similarity": round(v.similarity, 5), "fmr": v.fmr,
                                         "decision": v.label})
    return v


def compare(fi: FaceIndex, fa: Face, fb: Face, name_a: str = "a", name_b: str = "b") -> Verification:
    """1:1 comparison of two embedded faces with the index's calibration. Not audited."""
    sim = float(np.dot(fa.embedding, fb.embedding))
    fmr, label = fi.calibration.label(sim)
    return Verification(name_a, name_b, fa, fb, sim, fmr, label, label != calib.NONE)


def matches_any(vecs: np.ndarray, templates: np.ndarray, threshold: float) -> np.ndarray:
    """Boolean mask: which of `vecs` reach `threshold` against any template."""
    if not len(templates) or not len(vecs):
        return np.zeros(len(vecs), dtype=bool)
    return (np.asarray(vecs, np.float32) @ templates.T).max(axis=1) >= threshold


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
