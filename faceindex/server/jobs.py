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
    started: float = field(default_factory=time.time)

    def out(self) -> S.JobOut:
        return S.JobOut(id=self.id, kind=self.kind, state=self.state, total=self.total, done=self.done,
                        faces=self.faces, errors=self.errors, result=self.result, error=self.error)

    def progress(self) -> str:
        return json.dumps({"total": self.total, "done": self.done, "faces": self.faces, "errors": self.errors,
                           "result": self.result, "error": self.error})


def save(catalog: Catalog, job: Job) -> None:
    """Write the job's spec, state and progress (one small transaction)."""
    with catalog.transaction() as db:  # (the jobs table is in the catalog's schema)
        db.execute("INSERT INTO jobs(id, kind, owner, spec, state, progress, created_at, updated_at) "
                   "VALUES(?,?,?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET state=excluded.state, "
                   "progress=excluded.progress, updated_at=excluded.updated_at",
                   (job.id, job.kind, job.owner, json.dumps(job.spec), job.state, job.progress(), now(), now()))


def load(catalog: Catalog, job_id: str | None = None, states: tuple[str, ...] = ()) -> list[Job]:
    """Jobs from the catalog: one by id, or all in `states`."""
    with catalog.transaction() as db:
        if job_id is not None:
            rows = db.execute("SELECT id, kind, owner, spec, state, progress FROM jobs WHERE id=?", (job_id,))
        else:
            rows = db.execute("SELECT id, kind, owner, spec, state, progress FROM jobs WHERE state IN "
                              f"({','.join('?' * len(states))}) ORDER BY created_at", states)
        rows = rows.fetchall()
    out = []
    for jid, kind, owner, spec, state, progress in rows:
        p = json.loads(progress)
        out.append(Job(jid, kind, json.loads(spec), state, p["total"], p["done"], p["faces"], p["errors"],
                       p["result"], p["error"], owner))
    return out


class Jobs:
    """The server's ingest jobs: in memory while they run, in the catalog for good."""

    def __init__(self, settings: Settings, engine: FaceIndex, lock: threading.RLock) -> None:
        self.settings, self.engine, self.lock = settings, engine, lock
        self.running: dict[str, Job] = {}

    def start(self, owner: int, spec: dict[str, Any], job_id: str | None = None) -> Job:
        job = Job(id=job_id or uuid.uuid4().hex, kind="ingest", spec=spec, owner=owner)
        self.running[job.id] = job
        with self.lock:
            save(self.engine.catalog, job)
        threading.Thread(target=self._run, args=(job,), name=f"job-{job.id[:8]}", daemon=True).start()
        return job

    def get(self, job_id: str) -> Job | None:
        job = self.running.get(job_id)
        if job is not None:
            return job
        with self.lock:
            found = load(self.engine.catalog, job_id)
        return found[0] if found else None

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
            self.start(job.owner, job.spec, job.id)
        return len(left)

    def _run(self, job: Job) -> None:
        spec = job.spec
        job.state = "running"
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
                save(own.catalog, job)
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
                job.errors += 1 if info.get("error") else 0
        return on
