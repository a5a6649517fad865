"""GET /v1/overview: the landing page's summary, filtered by the caller's role.

Every role sees the gallery's size, the model pack and the index kind. What else is shown follows the permissions
of the endpoints that hold it: sources with their retention (ingest, privacy, audit: like GET /v1/sources), recent
ingest jobs (ingest), the audit chain's full state with its head (audit; others see intact or not and the record
count), and for the admin (ingest or keys) what needs attention: a failed job, a source holding files past its
retention (not yet purged), a broken audit chain. Nothing here reveals a face, so nothing here is audited.
"""

import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel

from .. import anchor as anchoring
from ..audit import AuditLog, AuditVerification
from ..catalog import now as catalog_now
from ..engine import FaceIndex, audit_target
from ..errors import FaceIndexError
from ..policy import PERMISSIONS
from .jobs import Jobs

log_ = logging.getLogger("faceindex.server")
RECENT_JOBS = 10
CHAIN_CACHE_S = 30.0  # the audit chain is verified again (in the background) when its last check is older
CHAIN_WAIT_S = 2.0  # how long an overview waits for a check that is due


class OverviewSource(BaseModel):
    name: str
    basis: str | None
    retention_days: int | None
    files: int
    next_expiry: str | None  # when the oldest file outlives the retention (None: kept)
    expired: bool  # files past their retention are still held: `faceindex retention apply` deletes them


class OverviewJob(BaseModel):
    id: str
    state: str  # queued | running | done | failed
    source: str | None
    started_by: str | None
    total: int | None
    done: int
    faces: int
    errors: int
    error: str | None
    created_at: str
    updated_at: str


class AuditChain(BaseModel):
    ok: bool | None  # None: the first check is still running
    records: int
    checked_at: str | None = None  # when the chain was verified (UTC)
    first_bad_seq: int | None = None  # admin and audit roles only
    problem: str | None = None  # admin and audit roles only
    head: str | None = None  # audit roles only: SEQ:HASH to keep elsewhere


class Attention(BaseModel):
    kind: Literal["job_failed", "source_expired", "audit_broken"]
    message: str
    page: str | None = None  # the web page where it is dealt with (photos: Add photos; collections; audit)


class OverviewOut(BaseModel):
    name: str
    role: str
    gallery_faces: int  # searchable faces (above the quality bar)
    faces: int
    images: int
    model_pack: str
    index_kind: str
    source_count: int
    sources: list[OverviewSource] | None = None  # None: not shown to this role
    jobs: list[OverviewJob] | None = None
    audit: AuditChain
    attention: list[Attention] | None = None  # admin only


def _parse(iso: str | None) -> datetime | None:
    if not iso:
        return None
    try:
        d = datetime.fromisoformat(iso)
    except ValueError:
        return None
    return d if d.tzinfo else d.replace(tzinfo=UTC)


def recent_jobs(engine: FaceIndex, jobs: Jobs, limit: int = RECENT_JOBS) -> list[OverviewJob]:
    """The latest ingest jobs, newest first; a running job's progress from memory (fresher than the catalog)."""
    with engine.catalog.transaction() as db:
        rows = db.execute("SELECT id, spec, state, progress, created_at, updated_at FROM jobs "
                          "ORDER BY created_at DESC, id DESC LIMIT ?", (limit,)).fetchall()
    out = []
    for jid, spec, state, progress, created, updated in rows:
        spec, p = json.loads(spec), json.loads(progress)
        live = jobs.running.get(jid)
        if live is not None and live.state in ("queued", "running"):
            state, p = live.state, {"total": live.total, "done": live.done, "faces": live.faces,
                                    "errors": live.errors, "error": live.error}
        out.append(OverviewJob(id=jid, state=state, source=spec.get("source"), started_by=spec.get("actor"),
                               total=p.get("total"), done=p.get("done") or 0, faces=p.get("faces") or 0,
                               errors=p.get("errors") or 0, error=p.get("error"), created_at=created,
                               updated_at=updated))
    return out


class ChainCheck:
    """The audit chain's verification for the overview, run in a background thread on its own connection.

    Verifying reads every record (seconds for a million), so the landing page never does it inline: a check
    starts when the last one is older than CHAIN_CACHE_S, and a request waits at most CHAIN_WAIT_S for it (a small
    log is answered fresh; a large one shows the previous result and when it was made). The check opens its own
    AuditLog connection: a snapshot read under WAL, so searches keep appending their records meanwhile (the
    engine's AuditLog would hold its lock, and every audited action, for the whole walk)."""

    def __init__(self, engine: FaceIndex, lock: threading.RLock) -> None:
        self.engine, self.app_lock = engine, lock
        self.lock = threading.Lock()
        self.result: tuple[AuditVerification, str, float] | None = None  # (verification, checked at, monotonic)
        self.thread: threading.Thread | None = None

    def _run(self) -> None:
        try:
            with self.app_lock:  # the catalog's connection is the engine's
                anchor = anchoring.read_anchor(self.engine.catalog)
            target = audit_target(self.engine.catalog, self.engine.data)  # a file, or the PostgreSQL catalog
            with AuditLog(target, key=anchoring.load_key(self.engine.settings)) as log:
                res = log.verify(anchor)
        except FaceIndexError as e:
            res = AuditVerification(False, 0, None, f"The audit log cannot be verified: {e}.")
        except Exception:  # the thread must not die silently: the overview would wait forever for a result
            log_.exception("audit chain check failed")
            res = AuditVerification(False, 0, None, "The audit log cannot be verified: internal error.")
        with self.lock:
            self.result = (res, catalog_now(), time.monotonic())
            self.thread = None

    def get(self, wait: float | None = None) -> tuple[AuditVerification, str] | None:
        """The latest verification and when it was made (None while the first one runs past the wait)."""
        with self.lock:
            due = self.result is None or time.monotonic() - self.result[2] >= CHAIN_CACHE_S
            if due and self.thread is None:
                self.thread = threading.Thread(target=self._run, name="audit-chain-check", daemon=True)
                self.thread.start()
            running = self.thread
        if running is not None:
            running.join(CHAIN_WAIT_S if wait is None else wait)
        with self.lock:
            return None if self.result is None else self.result[:2]


def overview_router(engine: FaceIndex, jobs: Jobs, lock: threading.RLock, who: Callable[..., Any],
                    as_: Callable[[Any], FaceIndex]) -> APIRouter:
    """The router of GET /v1/overview; `who` is the app's principal dependency (authentication, rate limit)."""
    router = APIRouter()
    chain = ChainCheck(engine, lock)

    @router.get("/v1/overview", response_model=OverviewOut, tags=["system"])
    def overview(p: Annotated[Any, Depends(who)],
                 jobs_limit: Annotated[int, Query(ge=1, le=50, description="recent jobs to list")] = RECENT_JOBS,
                 ) -> OverviewOut:
        """What this role may see of the data folder: gallery, model, index, sources, jobs, audit chain, and for
        the admin what needs attention. Reveals no face; not audited."""
        perms = PERMISSIONS.get(p.role, frozenset())
        fi = as_(p)
        with lock:
            counts = engine.catalog.counts()
            gallery = fi.gallery_size()
            pack, kind = engine.pack.name, engine.index.kind
            raw_sources = fi.sources()
            listed = recent_jobs(engine, jobs, jobs_limit) if "ingest" in perms else None
        checked = chain.get()
        seq, digest = engine.audit.head()
        now = datetime.now(UTC)
        sources = []
        for s in raw_sources:
            expiry = _parse(s.get("next_expiry"))
            sources.append(OverviewSource(name=s["name"], basis=s.get("basis"), retention_days=s.get("retention_days"),
                                          files=s.get("files") or 0, next_expiry=s.get("next_expiry"),
                                          expired=bool(expiry and expiry <= now)))
        admin = bool(perms & {"ingest", "keys"})
        res = checked[0] if checked else None
        audit = AuditChain(ok=None, records=seq)
        if res is not None:
            audit.ok, audit.records, audit.checked_at = res.ok, res.records_checked, checked[1]
            if admin or "audit" in perms:
                audit.first_bad_seq, audit.problem = res.first_bad_seq, res.problem
        if "audit" in perms:
            audit.head = f"{seq}:{digest}"
        out = OverviewOut(name=p.name, role=p.role, gallery_faces=gallery, faces=counts["faces"],
                          images=counts["images"], model_pack=pack, index_kind=kind, source_count=len(sources),
                          audit=audit)
        if perms & {"ingest", "privacy", "audit"}:
            out.sources = sources
        out.jobs = listed
        if admin:
            out.attention = _attention(sources, listed or [], res)
        return out

    return router


def _attention(sources: list[OverviewSource], listed: list[OverviewJob],
               res: AuditVerification | None) -> list[Attention]:
    """What the admin should deal with: a broken audit chain, failed recent jobs, expired files still held."""
    out = []
    if res is not None and not res.ok:
        where = f" at record {res.first_bad_seq}" if res.first_bad_seq else ""
        out.append(Attention(kind="audit_broken", message=f"The audit chain is broken{where}: {res.problem} "
                             "Keep the data folder as it is and tell your auditor.", page="audit"))
    for j in listed:
        if j.state == "failed":
            out.append(Attention(kind="job_failed", page="photos", message=(
                f"Ingest job {j.id[:8]} ({j.source or 'no source'}, started {j.created_at}) failed: "
                f"{j.error or 'no reason recorded'}.")))
    for s in sources:
        if s.expired:
            out.append(Attention(kind="source_expired", page="collections", message=(
                f"Source {s.name} holds files past its {s.retention_days}-day retention (since {s.next_expiry}); "
                "`faceindex retention apply` deletes them.")))
    return out
