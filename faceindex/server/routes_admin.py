"""The admin's endpoints behind the web page's Collections, Add photos and Policy pages.

Sources with their counts, editing a source, what deleting a source's images removes and deleting them; ingest
jobs listed and cancelled; photos uploaded into one job in bounded chunks (so a thousand photos work: each chunk
is one request under the body limit, retried on its own); the policy with the measured leak and over-removal rates
of its thresholds. Authentication happens in app.py's middleware before a byte of the body is read; the role (and,
for chunks, the job's owner) is checked here before a multipart body is parsed. Every change is audited by the
engine (source.change, source.delete_images, policy.change) or here (ingest.cancel).
"""

import json
import math
import secrets
import threading
from datetime import UTC, datetime
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from starlette.datastructures import UploadFile  # what request.form() gives (FastAPI's is a subclass)

from .. import privacy
from ..engine import FaceIndex
from ..policy import BASES
from . import schemas as S
from .context import Context
from .jobs import Job

MAX_FILES_PER_REQUEST = 200  # files in one chunk; the web page sends fewer (see static/photos.js)
CHUNK_FORM = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["files"],
    "properties": {"files": {"type": "array", "items": {"type": "string", "format": "binary"}}}}}}}}


@lru_cache(maxsize=1)
def measured_rates() -> dict:
    """The opt-out leak and over-removal rates measured per model pack (calibration_tables/optout_rates.json)."""
    return json.loads(resources.files("faceindex.calibration_tables").joinpath("optout_rates.json").read_text())


def router(ctx: Context) -> APIRouter:
    """The admin endpoints, as a router that create_app includes."""
    r = APIRouter()
    lock, jobs = ctx.lock, ctx.jobs
    receiving = threading.Lock()  # a chunk's files and an upload job's start or cancel, one at a time
    Who = Annotated[Any, Depends(ctx.principal)]

    # --- sources -------------------------------------------------------------------------------------------------
    def source_out(fi: FaceIndex, s: dict) -> S.SourceOut:
        usage = fi.catalog.source_usage(s["id"])
        expiry = s.get("next_expiry")
        expired = bool(expiry) and datetime.fromisoformat(expiry) < datetime.now(UTC)
        return S.SourceOut(name=s["name"], created_at=s["created_at"], basis=s["basis"], notice=s["notice"],
                           retention_days=s["retention_days"], files=usage["files"], images=usage["images"],
                           faces=usage["faces"], oldest_file=s["oldest_file"], next_expiry=expiry, expired=expired)

    @r.get("/v1/sources/summary", response_model=list[S.SourceOut], tags=["ingest"])
    def sources_summary(p: Who) -> list[S.SourceOut]:
        """Every source with its legal basis, notice, retention, file/image/face counts and next expiry."""
        fi = ctx.as_(p)
        fi.allow_any("ingest", "delete", "privacy", "audit")
        with lock:
            return [source_out(fi, s) for s in fi.sources()]

    @r.put("/v1/sources/{name}", response_model=S.SourceOut, tags=["ingest"])
    def source_edit(p: Who, name: str, body: S.SourceEdit) -> S.SourceOut:
        """Change a registered source's legal basis, retention (0 = keep) or notice (404 for an unknown source).
        Audited (source.change)."""
        fi = ctx.as_(p)
        fi.allow_any("ingest")
        with lock:
            privacy.get_source(fi, name)
            fi.set_source(name, body.basis, body.retention_days, body.notice)
            return source_out(fi, next(s for s in fi.sources() if s["name"] == name))

    @r.get("/v1/sources/{name}/images", response_model=S.SourceUsage, tags=["ingest"])
    def source_images(p: Who, name: str) -> S.SourceUsage:
        """What deleting the source's images would remove: its files, and the images and faces no other source
        holds. Nothing changes."""
        with lock:
            return S.SourceUsage(**privacy.source_usage(ctx.as_(p), name))

    @r.delete("/v1/sources/{name}/images", response_model=S.SourceDeleted, tags=["ingest"])
    def source_delete_images(p: Who, name: str) -> S.SourceDeleted:
        """Forget every file of the source; images and faces no other source holds are deleted. The source's
        registration stays. Audited (source.delete_images)."""
        fi = ctx.as_(p)
        fi.allow_any("delete")
        with lock:
            return S.SourceDeleted(**privacy.delete_source_images(fi, name))

    # --- jobs ------------------------------------------------------------------------------------------------------
    def own_job(p: Any, job_id: str) -> Job:
        job = jobs.get(job_id)
        if job is None or (job.owner != p.key_id and p.role != "admin"):
            raise ctx.error(404, "not_found", "no such job")
        return job

    @r.get("/v1/jobs", response_model=list[S.JobOut], tags=["ingest"])
    def jobs_list(p: Who, limit: Annotated[int, Query(ge=1, le=200)] = 20) -> list[S.JobOut]:
        """The newest ingest jobs with their state (an admin sees everyone's, others their own); kept in the
        catalog, so they are listed after a restart too."""
        ctx.as_(p).allow_any("ingest")
        return [j.out() for j in jobs.recent(None if p.role == "admin" else p.key_id, limit)]

    @r.post("/v1/jobs/{job_id}/cancel", response_model=S.JobOut, tags=["ingest"])
    def job_cancel(p: Who, job_id: str) -> S.JobOut:
        """Cancel a job: an upload ends now (its files are deleted); indexing stops at the next file and keeps
        what it committed. 409 when the job has already ended. Audited (ingest.cancel)."""
        fi = ctx.as_(p)
        fi.allow_any("ingest")
        try:
            with receiving:
                job = own_job(p, job_id)
                jobs.request_cancel(job, p.actor)
        except ValueError as e:
            raise ctx.error(409, "job_ended", str(e)) from e
        with lock:
            fi._record("ingest.cancel", details={"job": job.id, "state": job.state, "done": job.done,
                                                 "total": job.total, "source": job.spec.get("source")})
        return job.out()

    @r.get("/v1/ingest/limits", response_model=S.IngestLimits, tags=["ingest"])
    def ingest_limits(p: Who) -> S.IngestLimits:
        """How big an upload chunk may be, the server folders that may be named, the legal bases of sources."""
        ctx.as_(p).allow_any("ingest")
        return S.IngestLimits(max_upload_bytes=ctx.settings.max_upload_bytes, max_request_bytes=ctx.max_body,
                              max_files_per_request=MAX_FILES_PER_REQUEST,
                              ingest_roots=[str(x) for x in ctx.settings.ingest_roots], bases=list(BASES))

    # --- uploads in chunks into one job ------------------------------------------------------------------------------
    @r.post("/v1/ingest/uploads", response_model=S.JobOut, status_code=201, tags=["ingest"])
    def upload_open(p: Who, body: S.UploadStart) -> S.JobOut:
        """Open an upload job for a source (state "uploading"): send the photos in chunks to
        /v1/ingest/uploads/{job}/files, then start it."""
        ctx.as_(p).allow_any("ingest")
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(4)
        folder = ctx.settings.resolved_data() / "uploads" / (ctx.slug(body.source) or "source") / stamp
        folder.mkdir(parents=True, exist_ok=True)
        return jobs.receive(p.key_id, {"paths": [str(folder)], "source": body.source, "uploads": str(folder),
                                       "actor": p.actor, "role": p.role}).out()

    @r.post("/v1/ingest/uploads/{job_id}/files", response_model=S.ChunkOut, tags=["ingest"],
            openapi_extra=CHUNK_FORM)
    async def upload_chunk(p: Who, job_id: str, request: Request,
                           chunk: Annotated[int, Query(ge=0, le=99_999, description="the chunk's number: "
                                                       "sending a chunk again replaces it (safe to retry)")]
                           ) -> S.ChunkOut:
        """Store one chunk of photos (form field `files`, at most 200 files and the request size limit)."""
        ctx.as_(p).allow_any("ingest")
        job = own_job(p, job_id)  # role and owner before the body is parsed
        if job.state != "uploading":
            raise ctx.error(409, "not_uploading", f"job {job_id} is {job.state}, not receiving files")
        form = await request.form(max_files=MAX_FILES_PER_REQUEST, max_fields=10)
        try:
            files = [v for k, v in form.multi_items() if k == "files" and isinstance(v, UploadFile)]
            if not files:
                raise ctx.error(422, "invalid_request", "files: at least one photo is needed")
            blobs = [(await ctx.read_image(f), f.filename or "upload") for f in files]
        finally:
            await form.close()
        ctx.charge(p, pixels=sum(ctx.upload_pixels(b) for b, _ in blobs))
        with receiving:  # the job may have been started or cancelled while the body arrived
            job = own_job(p, job_id)
            target = Path(job.spec.get("uploads") or "")
            if job.state != "uploading" or not target.is_dir():
                raise ctx.error(409, "not_uploading", f"job {job_id} is {job.state}, not receiving files")
            for old in target.glob(f"{chunk:05d}-*"):  # a retried chunk replaces what arrived of it before
                old.unlink(missing_ok=True)
            for i, (data, fname) in enumerate(blobs):
                name = ctx.slug(Path(fname).name)[:80] or "image"
                if not ctx.image_suffix.search(name):  # the folder walk takes image suffixes; decoding goes by content
                    name += ".jpg"
                (target / f"{chunk:05d}-{i:03d}-{name}").write_bytes(data)
            job.spec["received"] = sum(1 for _ in target.iterdir())
            jobs.save(job)
        return S.ChunkOut(job=job.id, chunk=chunk, files=len(blobs), received=job.spec["received"])

    @r.post("/v1/ingest/uploads/{job_id}/start", response_model=S.JobOut, status_code=202, tags=["ingest"])
    def upload_start(p: Who, job_id: str) -> S.JobOut:
        """Index what an upload job received (also after a reload or a restart left it uploading)."""
        ctx.as_(p).allow_any("ingest")
        with receiving:
            job = own_job(p, job_id)
            if job.state != "uploading":
                raise ctx.error(409, "not_uploading", f"job {job_id} is {job.state}, not receiving files")
            if not job.spec.get("received"):
                raise ctx.error(422, "no_files", "no photos were uploaded to this job")
            return jobs.start(job.owner, job.spec, job.id, job.created_at).out()

    # --- policy ----------------------------------------------------------------------------------------------------
    def rate(fi: FaceIndex, fmr: float, rows: list[dict]) -> S.PolicyRate:
        row = next((x for x in rows if math.isclose(x["fmr"], fmr, rel_tol=1e-6)), {})
        return S.PolicyRate(fmr=fmr, similarity=round(float(fi.calibration.threshold_for(fmr)), 4),
                            leak_rate=row.get("leak_rate"), over_removal=row.get("over_removal"))

    def policy_out(fi: FaceIndex) -> S.PolicyOut:
        pol = fi.policy
        table = measured_rates()
        rows = table["packs"].get(fi.pack.name, [])
        return S.PolicyOut(**pol.model_dump(), model=fi.pack.name, optout=rate(fi, pol.optout_fmr, rows),
                           access=rate(fi, pol.access_fmr, rows), rates=[rate(fi, x["fmr"], rows) for x in rows],
                           rates_source=table["measured"] if rows else f"no measured rates for model {fi.pack.name}")

    @r.get("/v1/policy", response_model=S.PolicyOut, tags=["policy"])
    def policy_get(p: Who) -> S.PolicyOut:
        """The policy, with the measured leak and over-removal rates of its opt-out and access thresholds."""
        fi = ctx.as_(p)
        fi.allow_any("policy")
        with lock:
            return policy_out(fi)

    @r.put("/v1/policy", response_model=S.PolicyOut, tags=["policy"])
    def policy_put(p: Who, body: S.PolicyIn) -> S.PolicyOut:
        """Change policy fields (absent: unchanged). Validated, saved and audited (policy.change, with the
        policy before and after)."""
        fi = ctx.as_(p)
        fi.allow_any("policy")
        changes = body.model_dump(exclude_none=True)
        if not changes:
            raise ctx.error(422, "invalid_request", "nothing to change")
        with lock:
            fi.set_policy(**changes)
            return policy_out(fi)

    return r

