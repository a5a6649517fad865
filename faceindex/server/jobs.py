"""Background ingest jobs that survive the server: kept in the catalog, resumed after a restart.

A job is its spec (what to index, as whom) and its progress. The spec and every state change are written to the
catalog's `jobs` table, so after a crash (kill -9, power cut) the restarted server finds the jobs that were queued
or running and runs them again: ingest is incremental (files already committed are skipped as unchanged), and
each committed batch has its own `ingest.batch` audit record, so the log and the catalog agree on what was indexed
before the crash. A job that cannot be resumed (its uploads are gone) is reported failed, with what it had done.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..catalog import Catalog, now
from ..config import Settings
from ..engine import FaceIndex
from ..errors import FaceIndexError
from . import schemas as S

log = logging.getLogger("faceindex.server")
UPLOAD_PREFIX = re.compile(r"^\d{5}-(\d{3}-)?")  # the order prefix uploads get on disk



@dataclass
class Job:
    id: str
    kind: str
    spec: dict[str, Any]  # paths, source, within, uploads, actor, role
    state: str = "queued"
    total: int | None = None
    done: int = 0
    faces: int = 0
    errors: int = 0
    result: dict | None = None
    error: str | None = None
    owner: int = 0
    started: float = field(default_factory=time.time)  # when indexing started (for images/s)
    created_at: str = ""
    updated_at: str = ""
    seconds: float | None = None  # how long indexing ran, once it ended
    cancel: str | None = None  # who asked to cancel: the next file event stops the job
    failed: list[str] = field(default_factory=list)  # names of the files that failed so far (reasons: at the end)

    def out(self) -> S.JobOut:
        running = self.state == "running"
        secs = (time.time() - self.started) if running else self.seconds
        rate = round(self.done / secs, 2) if secs and self.done else None
        return S.JobOut(id=self.id, kind=self.kind, state=self.state, total=self.total, done=self.done,
                        faces=self.faces, errors=self.errors, result=self.result, error=self.error,
                        source=self.spec.get("source"), received=self.spec.get("received"),
                        created_at=self.created_at or None, updated_at=self.updated_at or None,
                        seconds=round(secs, 2) if secs else None, images_per_second=rate,
                        error_files=_error_files(self.result) if self.result else
                        [S.FileErrorOut(file=n, reason="") for n in self.failed])

    def progress(self) -> str:
        return json.dumps({"total": self.total, "done": self.done, "faces": self.faces, "errors": self.errors,
                           "result": self.result, "error": self.error, "seconds": self.seconds,
                           "failed": self.failed})


class Cancelled(Exception):
    """Raised from a job's progress callback when someone cancelled it: ingest stops after committing what it
    had analysed (every committed batch has its audit record)."""


def _error_files(result: dict | None) -> list[dict]:
    """The files an ingest could not index and why, by file name only (no server paths to clients)."""
    errors = (result or {}).get("errors") or []
    return [{"file": _display_name(e.get("path")), "reason": str(e.get("reason", ""))} for e in errors[:500]]


def _display_name(path: str | None) -> str:
    """A file's name as the user gave it: no server folder, no upload order prefix."""
    return UPLOAD_PREFIX.sub("", Path(str(path or "")).name)


def save(catalog: Catalog, job: Job) -> None:
    """Write the job's spec, state and progress (one small transaction)."""
    stamp = now()
    job.created_at = job.created_at or stamp
    job.updated_at = stamp
    with catalog.transaction() as db:  # (the jobs table is in the catalog's schema)
        db.execute("INSERT INTO jobs(id, kind, owner, spec, state, progress, created_at, updated_at) "
                   "VALUES(?,?,?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET state=excluded.state, "
                   "spec=excluded.spec, progress=excluded.progress, updated_at=excluded.updated_at",
                   (job.id, job.kind, job.owner, json.dumps(job.spec), job.state, job.progress(), stamp, stamp))


COLUMNS = "id, kind, owner, spec, state, progress, created_at, updated_at"


def load(catalog: Catalog, job_id: str | None = None, states: tuple[str, ...] = (), *,
         owner: int | None = None, limit: int | None = None) -> list[Job]:
    """Jobs from the catalog: one by id, all in `states` (oldest first), or the newest `limit` (of `owner`)."""
    with catalog.transaction() as db:
        if job_id is not None:
            rows = db.execute(f"SELECT {COLUMNS} FROM jobs WHERE id=?", (job_id,))
        elif limit is not None:
            where, args = ("WHERE owner=?", (owner,)) if owner is not None else ("", ())
            rows = db.execute(f"SELECT {COLUMNS} FROM jobs {where} ORDER BY created_at DESC, id DESC LIMIT ?",
                              (*args, limit))
        else:
            rows = db.execute(f"SELECT {COLUMNS} FROM jobs WHERE state IN "
                              f"({','.join('?' * len(states))}) ORDER BY created_at", states)
        rows = rows.fetchall()
    out = []
    for jid, kind, owner_id, spec, state, progress, created, updated in rows:
        p = json.loads(progress)
        out.append(Job(jid, kind, json.loads(spec), state, p["total"], p["done"], p["faces"], p["errors"],
                       p["result"], p["error"], owner_id, created_at=created, updated_at=updated,
                       seconds=p.get("seconds"), failed=p.get("failed") or []))
    return out


class Jobs:
    """The server's ingest jobs: in memory while they run, in the catalog for good."""

    def __init__(self, settings: Settings, engine: FaceIndex, lock: threading.RLock) -> None:
        self.settings, self.engine, self.lock = settings, engine, lock
        self.running: dict[str, Job] = {}

    def start(self, owner: int, spec: dict[str, Any], job_id: str | None = None, created_at: str = "") -> Job:
        job = Job(id=job_id or uuid.uuid4().hex, kind="ingest", spec=spec, owner=owner, created_at=created_at)
        self.running[job.id] = job
        with self.lock:
            save(self.engine.catalog, job)
        threading.Thread(target=self._run, args=(job,), name=f"job-{job.id[:8]}", daemon=True).start()
        return job

    def receive(self, owner: int, spec: dict[str, Any]) -> Job:
        """A job that collects uploaded files in chunks (state "uploading") until it is started."""
        job = Job(id=uuid.uuid4().hex, kind="ingest", spec={**spec, "received": 0}, state="uploading", owner=owner)
        with self.lock:
            save(self.engine.catalog, job)
        return job

    def get(self, job_id: str) -> Job | None:
        job = self.running.get(job_id)
        if job is not None:
            return job
        with self.lock:
            found = load(self.engine.catalog, job_id)
        return found[0] if found else None

    def recent(self, owner: int | None, limit: int) -> list[Job]:
        """The newest jobs (of `owner`, or everyone's), live progress for those running."""
        with self.lock:
            found = load(self.engine.catalog, owner=owner, limit=limit)
        return [self.running.get(j.id, j) for j in found]

    def save(self, job: Job) -> None:
        with self.lock:
            save(self.engine.catalog, job)

    def request_cancel(self, job: Job, actor: str) -> Job:
        """Cancel a job: one still uploading ends now (its files go); a queued or running one stops at its next
        file (what it committed stays indexed). ValueError when it already ended."""
        if job.state in ("done", "failed", "cancelled"):
            raise ValueError(f"job {job.id} has already ended ({job.state})")
        job.cancel = actor
        if job.state == "uploading":
            if job.spec.get("uploads"):
                shutil.rmtree(job.spec["uploads"], ignore_errors=True)
            job.state, job.error = "cancelled", f"cancelled by {actor} while uploading"
            self.save(job)
        return job

    def resume(self) -> int:
        """Run again the jobs a previous server left queued or running; returns how many."""
        with self.lock:
            left = load(self.engine.catalog, states=("queued", "running"))
        for job in left:
            uploads = job.spec.get("uploads")
            if uploads and not Path(uploads).is_dir():
                job.state, job.error = "failed", (f"interrupted after {job.done} of {job.total or '?'} files; "
                                                  "its uploaded files are gone, so it cannot be resumed")
                with self.lock:
                    save(self.engine.catalog, job)
                continue
            job.spec["resumed"] = job.spec.get("resumed", 0) + 1
            self.start(job.owner, job.spec, job.id, job.created_at)
        return len(left)

    def _run(self, job: Job) -> None:
        spec = job.spec
        job.state = "running"
        job.started = time.time()
        try:
            with FaceIndex(self.settings) as own:  # its own catalog connection: searches keep being served
                save(own.catalog, job)
                fi = own.acting_as(spec["actor"], spec["role"])
                try:
                    report = fi.add([Path(p) for p in spec["paths"]], spec["source"], progress=self._progress(job),
                                    within=[Path(r) for r in spec["within"]] if spec.get("within") else None)
                finally:  # indexed (or refused): uploaded copies go, unless the operator keeps them on purpose
                    if spec.get("uploads") and not self.settings.keep_uploads:
                        shutil.rmtree(spec["uploads"], ignore_errors=True)
                job.result = report.as_dict()
                if spec.get("resumed"):
                    job.result["resumed_after_restart"] = spec["resumed"]
                # files refused before analysis (outside the roots, unreadable folders) send no progress event
                job.errors = max(job.errors, len(job.result.get("errors") or []))
                job.state = "done"
                job.seconds = time.time() - job.started
                save(own.catalog, job)
        except Cancelled:
            job.seconds = time.time() - job.started
            job.state, job.error = "cancelled", (f"cancelled by {job.cancel} after {job.done} of "
                                                 f"{job.total or '?'} files; what was indexed stays")
            self._save_quietly(job)
        except FaceIndexError as e:
            job.state, job.error = "failed", str(e)
            self._save_quietly(job)
        except Exception:
            log.exception("job %s failed", job.id)
            job.state, job.error = "failed", "internal error"
            self._save_quietly(job)

    def _save_quietly(self, job: Job) -> None:
        try:
            with self.lock:
                save(self.engine.catalog, job)
        except FaceIndexError:
            log.exception("job %s: cannot record its state", job.id)

    @staticmethod
    def _progress(job: Job) -> Callable[[str, dict], None]:
        def on(event: str, info: dict) -> None:
            if event == "scan":
                job.total = info["files"]
            elif event == "file":
                job.done += 1
                job.faces += info.get("faces", 0)
                if info.get("error"):
                    job.errors += 1
                    if len(job.failed) < 500:
                        job.failed.append(_display_name(info.get("path")))
            if job.cancel:  # after counting the event: the job's figures say what was done
                raise Cancelled()
        return on
