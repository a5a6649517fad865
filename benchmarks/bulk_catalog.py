"""Bulk-write synthetic faces into a faceindex catalog (no photos needed), for benchmarks at 100k-1M faces.

One source, one image and one file per distinct image id, one face per row of the embeddings; everything in one
transaction and with executemany, so a million faces take a minute or two rather than hours through `add`.
Used by benchmarks/people_scale.py and benchmarks/search.py (one face per image there).
"""

from __future__ import annotations

import json

import numpy as np

from faceindex.catalog import Catalog, now

LANDMARKS = json.dumps([[640.0, 450.0], [610.0, 452.0], [690.0, 450.0], [720.0, 452.0], [665.0, 500.0]])


def write_faces(cat: Catalog, vecs: np.ndarray, quality: np.ndarray, model_key: str,
                image_ids: np.ndarray | None = None, first_id: int | None = None, source: str = "bench") -> np.ndarray:
    """Insert one face per row of `vecs` (L2-normalised float32) with the given qualities; returns the face ids.

    `image_ids` (default: one image per face) group faces into photos (faces of one photo are never one person);
    ids already in the catalog are reused (more faces in an existing photo is not supported: give new ids).
    Face ids run from `first_id` (default: above the largest in the catalog). Moves the catalog generation on."""
    vecs = np.ascontiguousarray(vecs, np.float32)
    n = len(vecs)
    cat.check_model(model_key)
    top = cat.db.execute("SELECT COALESCE(MAX(id), 0) FROM faces").fetchone()[0]
    first = int(first_id if first_id is not None else top + 1)
    top_img = cat.db.execute("SELECT COALESCE(MAX(id), 0) FROM images").fetchone()[0]
    image_ids = (top_img + 1 + np.arange(n)) if image_ids is None else np.asarray(image_ids, np.int64)
    ts = now()
    with cat.transaction() as db:
        row = db.execute("SELECT id FROM sources WHERE name=?", (source,)).fetchone()
        src = row[0] if row else db.execute("INSERT INTO sources(name, created_at) VALUES(?, ?)",
                                            (source, ts)).lastrowid
        imgs, counts = np.unique(image_ids, return_counts=True)
        known = {r[0] for r in db.execute("SELECT id FROM images WHERE id >= ?", (int(imgs.min()),))} if n else set()
        fresh = [(int(i), int(c)) for i, c in zip(imgs.tolist(), counts.tolist()) if i not in known]
        db.executemany(
            "INSERT INTO images(id, sha256, size, width, height, face_count, added_at) VALUES(?,?,?,?,?,?,?)",
            ((i, f"{i:064x}", 180_000, 1600, 1200, c, ts) for i, c in fresh))
        top_file = db.execute("SELECT COALESCE(MAX(id), 0) FROM files").fetchone()[0]
        db.executemany(
            "INSERT INTO files(id, source_id, path, image_id, size, mtime_ns, added_at) VALUES(?,?,?,?,?,?,?)",
            ((top_file + 1 + j, src, f"/photos/{i // 1000:04d}/{i:07d}.jpg", i, 180_000, 0, ts)
             for j, (i, _) in enumerate(fresh)))
        # idx: the face's place in its photo
        order = np.argsort(image_ids, kind="stable")
        starts = np.searchsorted(image_ids[order], image_ids[order])
        idx = np.empty(n, np.int64)
        idx[order] = np.arange(n) - starts
        db.executemany(
            "INSERT INTO faces(id, image_id, idx, x1, y1, x2, y2, landmarks, det_score, q_size, q_sharpness, "
            "q_frontal, quality, embedding, created_at) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            ((first + r, int(image_ids[r]), int(idx[r]), 600 + 200 * int(idx[r]), 400, 760 + 200 * int(idx[r]), 560,
              LANDMARKS, 1.2, 160, 300.0, 0.95, float(quality[r]), vecs[r].tobytes(), ts) for r in range(n)))
        db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key='generation'")
    return first + np.arange(n, dtype=np.int64)
