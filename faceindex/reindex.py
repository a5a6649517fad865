"""Re-embed an index into another model pack, keeping faces, people and names; swapped in one transaction.

Every face keeps its id (so people, names, confirmations and the audit trail still point at it): a face the new
pack's detector finds again (box IoU >= MATCH_IOU) takes the new box, landmarks, quality and embedding; a face it
does not find is re-embedded at its old box. Faces the new detector finds that the old one did not are counted,
not added (the index's set of faces does not change under a reindex). Work is staged in `reindex_*` tables,
committed image by image, so a killed run resumes where it stopped; the old embeddings stay in use until the swap,
which replaces them, the catalog's model key and the opt-out templates in one transaction. Faces whose image has
no readable file with its content any more cannot be re-embedded: they are deleted at the swap and reported.

Opt-out templates are kept per model (table `optout_models`): at the swap the old model's templates are saved
and the new model's are put in force; an opt-out with no template for the new model is reported loudly (its
reference photos are needed again: `faceindex optout add PHOTOS --reference REF`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import numpy as np

from . import images
from .errors import FaceIndexError, ModelError
from .models import packs
from .models.base import Detection
from .pipeline import FacePipeline
from .types import Box, Face

MATCH_IOU = 0.3  # dlib's HOG boxes are tighter than YuNet's: the same face gives IoU ~0.5-0.7
BATCH = 16  # images per committed batch


Progress = Callable[[str, dict], None]


def _clear_staging(catalog) -> None:
    with catalog.transaction():
        catalog.db.execute("DELETE FROM reindex_images")
        catalog.db.execute("DELETE FROM reindex_faces")
        catalog.db.execute("DELETE FROM meta WHERE key IN ('reindex_model', 'reindex_new_faces')")


def _readable_file(catalog, image_id: int, sha256: str, max_bytes: int) -> tuple[str | None, bytes | None]:
    """The first file of an image still on disk with the same content: (path, bytes), else (None, None)."""
    for (path,) in catalog.db.execute("SELECT path FROM files WHERE image_id=? ORDER BY id", (image_id,)):
        try:
            data = images.read_bytes(path, max_bytes)
        except FaceIndexError:
            continue
        if images.sha256_bytes(data) == sha256:
            return path, data
    return None, None


def match_faces(old: list[tuple[int, Box]], new: list[Face]) -> dict[int, Face]:
    """Old face id -> the new face with the highest box IoU (>= MATCH_IOU), each new face used once."""
    pairs = sorted(((o.iou(f.box), fid, j) for fid, o in old for j, f in enumerate(new)), reverse=True)
    out: dict[int, Face] = {}
    used: set[int] = set()
    for iou, fid, j in pairs:
        if iou < MATCH_IOU:
            break
        if fid not in out and j not in used:
            out[fid] = new[j]
            used.add(j)
    return out


def _stage(catalog, fid: int, f: Face, matched: bool) -> None:
    q = f.quality
    catalog.db.execute("DELETE FROM reindex_faces WHERE face_id=?", (fid,))  # (INSERT OR REPLACE, both dialects)
    catalog.db.execute(
        "INSERT INTO reindex_faces VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (fid, f.box.x1, f.box.y1, f.box.x2, f.box.y2, json.dumps([[round(x, 2), round(y, 2)] for x, y in f.landmarks]),
         q.detector_score, q.size, q.sharpness, q.frontal, q.score, np.asarray(f.embedding, np.float32).tobytes(),
         int(matched)))


def reindex(fi, model: str, progress: Progress | None = None) -> dict:
    """Re-embed every face of `fi` with pack `model` and swap it in; returns the report (also audited)."""
    emit = progress or (lambda _event, _info: None)
    cat = fi.catalog
    target = packs.get(model, fi.data)
    current = cat.get_meta("model")
    if current == target.key:
        raise ModelError(f"this index already holds embeddings of model {target.name} ({target.key})")
    packs.calibration_for(target, fi.data)  # the new model must be usable after the swap: checked before any work
    if cat.get_meta("reindex_model") != target.key:  # a run for another model was left over: start afresh
        _clear_staging(cat)
        with cat.transaction():
            cat.set_meta("reindex_model", target.key)
    pipe = FacePipeline(fi.settings.model_copy(update={"model": target.name}), pack=target)
    todo = cat.db.execute("SELECT id, sha256 FROM images WHERE id NOT IN (SELECT image_id FROM reindex_images) "
                          "ORDER BY id").fetchall()
    total = cat.db.execute("SELECT COUNT(*) FROM images").fetchone()[0]
    emit("scan", {"files": total, "resumed": total - len(todo)})
    stop_after = int(os.environ.get("_FACEINDEX_TEST_REINDEX_STOP_AFTER", "0"))  # test hook: a killed run
    for start in range(0, len(todo), BATCH):
        with cat.transaction():
            for image_id, sha in todo[start:start + BATCH]:
                old = [(fid, Box(x1, y1, x2, y2)) for fid, x1, y1, x2, y2 in cat.db.execute(
                    "SELECT id, x1, y1, x2, y2 FROM faces WHERE image_id=? ORDER BY idx", (image_id,))]
                path, data = _readable_file(cat, image_id, sha, fi.settings.max_file_bytes)
                if data is None:
                    cat.db.execute("INSERT INTO reindex_images VALUES(?, 'missing', NULL)", (image_id,))
                    emit("file", {"path": None, "faces": 0, "error": True})
                    continue
                new_faces = 0
                if old:
                    try:
                        pixels = images.decode(data, fi.settings.max_pixels)
                    except FaceIndexError:
                        cat.db.execute("INSERT INTO reindex_images VALUES(?, 'missing', ?)", (image_id, path))
                        continue
                    found = pipe.faces(pixels)
                    matched = match_faces(old, found)
                    for fid, f in matched.items():
                        _stage(cat, fid, f, True)
                    rest = [(fid, b) for fid, b in old if fid not in matched]
                    if rest:  # not found again: re-embedded where the old detector saw them
                        again = pipe.faces_at(pixels, [Detection(b.x1, b.y1, b.x2, b.y2, 0.0) for _, b in rest])
                        for (fid, _), f in zip(rest, again):
                            _stage(cat, fid, f, False)
                    new_faces = len(found) - len(matched)
                cat.db.execute("INSERT INTO reindex_images VALUES(?, 'done', ?)", (image_id, path))
                if new_faces:
                    cat.db.execute("INSERT INTO meta(key, value) VALUES('reindex_new_faces', ?) ON CONFLICT(key) "
                                   "DO UPDATE SET value = CAST(CAST(meta.value AS INTEGER) + "
                                   "CAST(excluded.value AS INTEGER) AS TEXT)",
                                   (str(new_faces),))
                emit("file", {"path": path, "faces": len(old)})
        if stop_after and start + BATCH >= stop_after:
            os._exit(137)
    report = _swap(fi, target, current)
    report["resumed_images"] = total - len(todo)
    return report


def _swap(fi, target, current: str | None) -> dict:
    """Replace the embeddings, the model key and the opt-out templates in one transaction."""
    cat = fi.catalog
    db = cat.db
    with cat.transaction():
        missing = db.execute("SELECT f.id, (SELECT path FROM files WHERE image_id = f.image_id ORDER BY id LIMIT 1) "
                             "FROM faces f JOIN reindex_images r ON r.image_id = f.image_id "
                             "WHERE r.status = 'missing'").fetchall()
        lost = [fid for fid, _ in missing]
        cat.delete_faces(lost)
        stats = db.execute("SELECT COUNT(*), COALESCE(SUM(matched), 0) FROM reindex_faces").fetchone()
        db.execute("UPDATE faces SET (x1, y1, x2, y2, landmarks, det_score, q_size, q_sharpness, q_frontal, quality, "
                   "embedding) = (SELECT x1, y1, x2, y2, landmarks, det_score, q_size, q_sharpness, q_frontal, "
                   "quality, embedding FROM reindex_faces r WHERE r.face_id = faces.id) "
                   "WHERE id IN (SELECT face_id FROM reindex_faces)")
        left = db.execute("SELECT COUNT(*) FROM faces WHERE id NOT IN (SELECT face_id FROM reindex_faces)").fetchone()[0]
        if left:  # every face must carry the new model's embedding before the key changes
            raise ModelError(f"{left} faces were not re-embedded; the index is unchanged (run reindex again)")
        need_photos = _swap_optouts(cat, current, target.key)
        new_faces = int(cat.get_meta("reindex_new_faces") or 0)
        cat.set_meta("model", target.key)
        cat._bump()
        db.execute("DELETE FROM reindex_images")
        db.execute("DELETE FROM reindex_faces")
        db.execute("DELETE FROM meta WHERE key IN ('reindex_model', 'reindex_new_faces')")
    return {"from": current, "to": target.key, "model": target.name, "faces": int(stats[0]),
            "found_again": int(stats[1]), "reembedded_at_old_box": int(stats[0] - stats[1]),
            "new_faces_not_added": new_faces,
            "faces_removed_file_gone": [{"face_id": fid, "path": p} for fid, p in missing],
            "optouts_needing_photos": need_photos}


def _swap_optouts(cat, old_key: str | None, new_key: str) -> list[str]:
    """Keep each opt-out's templates under the old model, put the new model's in force; list those without."""
    db = cat.db
    need = []
    for reference, blob, n in db.execute("SELECT reference, templates, n_templates FROM optouts").fetchall():
        if old_key and n:
            db.execute("INSERT INTO optout_models VALUES(?,?,?,?) ON CONFLICT DO NOTHING", (reference, old_key, blob, n))
        row = db.execute("SELECT templates, n_templates FROM optout_models WHERE reference=? AND model=?",
                         (reference, new_key)).fetchone()
        if row is None:
            need.append(reference)
            db.execute("UPDATE optouts SET templates=?, n_templates=0 WHERE reference=?", (b"", reference))
        else:
            db.execute("UPDATE optouts SET templates=?, n_templates=? WHERE reference=?", (row[0], row[1], reference))
    return need


def store_templates(cat, reference: str, key: str, templates: np.ndarray) -> None:
    """Keep an opt-out's templates for model `key` (made from its reference photos while they are at hand)."""
    t = np.ascontiguousarray(templates, dtype=np.float32)
    with cat.transaction():
        cat.db.execute("INSERT INTO optout_models VALUES(?,?,?,?) ON CONFLICT(reference, model) DO UPDATE SET "
                       "templates=excluded.templates, n_templates=excluded.n_templates",
                       (reference, key, t.tobytes(), len(t)))


def keep_templates_for_all_packs(fi, reference: str, pixels: list[np.ndarray], current: np.ndarray) -> dict:
    """Store an opt-out's templates for the index's model and for every other built-in pack, made from the
    reference photos while they are at hand, so that the opt-out still holds after a reindex. Returns
    {model key: number of templates}."""
    store_templates(fi.catalog, reference, fi.pack.key, current)
    made = {fi.pack.key: len(current)}
    for p in packs.builtin().values():
        if p.key == fi.pack.key:
            continue
        pipe = FacePipeline(fi.settings.model_copy(update={"model": p.name}), pack=p)
        found = [faces[0].embedding for faces in (pipe.faces(px, True) for px in pixels) if faces]
        if found:
            store_templates(fi.catalog, reference, p.key, np.stack(found))
        made[p.key] = len(found)
    return made


def forget_templates(cat, reference: str) -> None:
    """Drop an opt-out's templates of every model (the opt-out was withdrawn)."""
    with cat.transaction():
        cat.db.execute("DELETE FROM optout_models WHERE reference=?", (reference,))


def renew_optout(cat, reference: str, templates: np.ndarray) -> None:
    """Put templates back in force for an opt-out a reindex left without any for the index's model."""
    t = np.ascontiguousarray(templates, dtype=np.float32)
    with cat.transaction():
        # a new id, so that optout_generation() changes and running ingests re-read the templates
        cat.db.execute("UPDATE optouts SET templates=?, n_templates=?, id=? WHERE reference=?",
                       (t.tobytes(), len(t), cat.reserve_ids("optouts", 1)[0], reference))
