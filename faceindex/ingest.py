"""Ingest: index every face of every image under some paths (incremental, parallel, crash-safe), and forget them."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import images, privacy
from .errors import ImageError, ModelError, PolicyError
from .executors import Executor, make_executor
from .pipeline import FileFailure, ImageResult
from .search import matches_any
from .text import check_text
from .types import AddReport, FileError

if TYPE_CHECKING:
    from collections.abc import Callable

    from .engine import FaceIndex

    Progress = Callable[[str, dict], None]

CHECKPOINT_SECONDS = 120.0  # the vector index is saved at least this often during a long add


def add(fi: FaceIndex, paths: list[str | os.PathLike], source: str = "default", *, workers: int | None = None,
        progress: Progress | None = None, within: list[Path] | None = None, ray: str | None = None) -> AddReport:
    """Index every face of every image under `paths` (files or folders, recursively).

    Unchanged files are skipped, files whose content is already indexed (moved or copied) keep their faces,
    bad files are reported in the result and never stop the batch. The files are analysed by an executor (see
    `executors.py`): worker processes on this machine, or, with `ray` ("auto" or HOST:PORT; default: the `ray`
    setting), worker actors on a Ray cluster; the listing, the skips and the commits are the same for both.
    """
    fi._allow("ingest")
    t0 = time.perf_counter()
    fi.catalog.check_model(fi.spec.key)
    source = check_text(source, "a source name")
    workers = max(1, workers or fi.settings.workers)
    # chosen (and a cluster joined) before anything is written: a bad address or a missing Ray changes nothing
    executor = make_executor(fi.settings, workers=workers, ray=ray if ray is not None else fi.settings.ray,
                             pipeline=fi._pipeline if workers == 1 else None,
                             within=[os.path.realpath(r) for r in within] if within is not None else None,
                             expect_model=fi.pack.key)
    try:
        return _add(fi, paths, source, executor, t0, progress, within)
    finally:
        executor.close()


def _add(fi: FaceIndex, paths: list[str | os.PathLike], source: str, executor: Executor, t0: float,
         progress: Progress | None, within: list[Path] | None) -> AddReport:
    report = AddReport(source=source)
    emit = progress or (lambda _event, _info: None)
    source_id = fi.catalog.source_id(source, create=True)
    if fi.policy.require_source_basis and privacy.get_source(fi, source)["basis"] == "unspecified":
        raise PolicyError(f"source {source!r} has no legal basis; register it with "
                          f"`faceindex source add {source} --basis ...`")
    _ = fi.index  # load (and repair) before we change anything
    optout_gen = fi.catalog.optout_generation()
    optouts = fi.catalog.optout_templates(fi.spec.dim)
    optout_threshold = privacy.optout_threshold(fi)

    files: list[Path] = []
    for root in paths:
        found, problems = images.iter_image_files(Path(root))
        files += found
        report.errors += [FileError(str(p), why) for p, why in problems]
    if within is not None:  # server-side ingest: nothing outside the allowed roots, symlinks included
        roots = [os.path.realpath(r) for r in within]
        inside = [f for f in files if _is_within(os.path.realpath(f), roots)]
        # Name only the link that leads outside (a file link, or a folder link once), never what lies behind it.
        refused = sorted({_exit_point(Path(f), roots) for f in files if f not in inside})
        report.errors += [FileError(p, "outside the allowed ingest roots") for p in refused]
        files = inside
    report.files_seen = len(files)
    emit("scan", {"files": len(files)})

    known = fi.catalog.file_states(source_id)
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
            data = images.read_bytes(path, fi.settings.max_file_bytes,
                                     [os.path.realpath(r) for r in within] if within is not None else None)
        except ImageError as e:
            report.errors.append(FileError(path, str(e)))
            emit("file", {"path": path, "error": True})
            continue
        sha = images.sha256_bytes(data)
        image_id = fi.catalog.image_id_by_sha(sha)
        if image_id is not None:  # content already indexed: moved, copied or touched
            removed = fi.catalog.put_file(source_id, path, image_id, st.st_size, st.st_mtime_ns)
            fi.vectors.apply([], [], removed)
            report.moved_or_copied += 1 if state is None else 0
            report.unchanged += 1 if state is not None else 0
            emit("file", {"path": path, "skipped": True})
            continue
        by_sha.setdefault(sha, []).append((path, st.st_size, st.st_mtime_ns))
    checked_sha = {group[0][0]: sha for sha, group in by_sha.items()}
    for group in by_sha.values():
        todo.append(group[0])
    duplicates = {group[0][0]: group[1:] for group in by_sha.values() if len(group) > 1}
    emit("analyse", {"files": len(todo)})

    stat_of = {p: (size, mtime) for p, size, mtime in todo}
    pending: list[ImageResult] = []
    last_flush = last_checkpoint = time.monotonic()

    def flush() -> None:
        nonlocal optouts, optout_gen
        with fi.catalog.transaction():
            # An opt-out (or erasure) registered while this job runs reaches the very next batch: re-read the
            # templates inside the write transaction, where no opt-out can commit behind our back.
            if fi.catalog.get_meta("model") != fi.pack.key:  # a reindex swapped the model while we embedded
                raise ModelError(f"this index was moved to model {fi.catalog.get_meta('model')} while this ingest ran "
                                 f"with {fi.pack.key}; nothing of this batch was kept: run add again")
            gen = fi.catalog.optout_generation()
            if gen != optout_gen:
                optouts, optout_gen = fi.catalog.optout_templates(fi.spec.dim), gen
            added_ids, added_vecs, removed_all = [], [], []
            for r in pending:
                size, mtime = stat_of[r.path]
                if within is not None and r.sha256 != checked_sha[r.path]:
                    # what the analysis read is not what was checked to lie inside the roots: swapped meanwhile
                    report.errors.append(FileError(r.path, "changed while being indexed: refused"))
                    report.images_indexed -= 1
                    report.faces_found -= len(r.faces)
                    continue
                faces = r.faces
                if len(optouts) and faces:  # opted-out people are never indexed, whatever the source
                    blocked = matches_any(np.stack([f.embedding for f in faces]), optouts, optout_threshold)
                    report.skipped_opted_out += int(blocked.sum())
                    faces = [f for f, b in zip(faces, blocked) if not b]
                    report.faces_found -= int(blocked.sum())
                image_id, ids, removed = fi.catalog.add_image(
                    source_id, r.path, mtime, r.sha256, r.size, r.width, r.height, faces)
                removed_all += removed
                if ids:
                    added_ids += ids
                    added_vecs += [f.embedding for f in faces]
                for dup_path, dsize, dmtime in duplicates.get(r.path, []):
                    fi.catalog.put_file(source_id, dup_path, image_id, dsize, dmtime)
                    report.moved_or_copied += 1
        fi.vectors.apply(added_ids, added_vecs, removed_all)
        # One record per committed batch: after a crash the log still says what the catalog holds.
        fi._record("ingest.batch", details={"source": source, "images": len(pending), "face_ids": added_ids,
                                            "generation": fi.catalog.generation})
        pending.clear()

    try:
        for res in executor.analyse([p for p, _, _ in todo]):
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
                fi.vectors.save()
                last_checkpoint = now
    finally:
        if pending:
            flush()
        fi.vectors.finish_batch()
    report.seconds = time.perf_counter() - t0
    summary = report.as_dict()
    summary["errors"] = len(report.errors)
    fi._record("ingest", details={"paths": [os.fspath(p) for p in paths], **summary,
                                    "gallery": fi._gallery_state()})
    return report


def remove(fi: FaceIndex, path: str | os.PathLike, source: str | None = None) -> dict[str, int]:
    """Forget the files at `path` (a file or folder) in one source (or all): faces, embeddings, index."""
    fi._allow("delete")
    source_id = fi.catalog.source_id(source) if source is not None else None
    files, imgs, face_ids = fi.catalog.remove_files(source_id, os.path.abspath(path))
    fi.vectors.forget(face_ids)
    result = {"files": files, "images": imgs, "faces": len(face_ids)}
    fi._record("delete", details={"path": os.path.abspath(path), "source": source, **result,
                                    "face_ids": face_ids, "gallery": fi._gallery_state()})
    return result


def _exit_point(path: Path, roots: list[str]) -> str:
    """The outermost part of `path` whose real location is outside `roots` (the link that leads out)."""
    for parent in reversed(path.parents):
        if parent != parent.parent and not _is_within(os.path.realpath(parent), roots) and \
                _is_within(os.path.realpath(parent.parent), roots):
            return str(parent)
    return str(path)


def _is_within(path: str, roots: list[str]) -> bool:
    return any(os.path.commonpath([path, r]) == r for r in roots)
