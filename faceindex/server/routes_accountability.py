"""The accountability endpoints: opt-outs, subject access reports, erasure, the audit trail and its verification,
and API keys.

Opt-out, access and erasure take photos of the person; each is charged by the pixels it decodes and audited by the
engine with its reference. Authentication happens in app.py's middleware (POST) or the principal dependency (GET,
DELETE) before any body is read; the role is checked here before the photos are decoded.
"""

import contextlib
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Query, UploadFile
from fastapi.responses import HTMLResponse, Response

from ..errors import FaceIndexError
from . import schemas as S
from .context import Context, Principal


def router(ctx: Context) -> APIRouter:
    """The opt-out, access, erasure, audit and key endpoints, as a router that create_app includes."""
    r = APIRouter()
    lock, engine, as_, read_image, charge, upload_pixels, work, locked = (
        ctx.lock, ctx.engine, ctx.as_, ctx.read_image, ctx.charge, ctx.upload_pixels, ctx.work, ctx.locked)
    Who = Annotated[Principal, Depends(ctx.principal)]

    # --- privacy ---------------------------------------------------------------------------------------------
    @r.post("/v1/optouts", tags=["privacy"])
    async def optout_add(p: Who, photos: Annotated[list[UploadFile], File()],
                         reference: Annotated[str, Form()]) -> dict:
        blobs = [await read_image(f) for f in photos]
        as_(p).allow_any("privacy")
        charge(p, pixels=sum(upload_pixels(b) for b in blobs))
        return await work.run(locked, as_(p).optout_add, blobs, reference)

    @r.get("/v1/optouts", tags=["privacy"])
    def optouts(p: Who) -> list[dict]:
        with lock:
            return as_(p).optouts()

    @r.delete("/v1/optouts/{reference}", status_code=204, tags=["privacy"])
    def optout_remove(p: Who, reference: str) -> Response:
        with lock:
            as_(p).optout_remove(reference)
        return Response(status_code=204)

    @r.post("/v1/access", tags=["privacy"])
    async def access(p: Who, photos: Annotated[list[UploadFile], File()], reference: Annotated[str, Form()],
                     purpose: Annotated[str | None, Form(description='must be "data-subject-request"')] = None,
                     format: Annotated[str, Query(pattern="^(json|html)$")] = "json"):
        """A subject access report for a data-subject request (purpose "data-subject-request", its reference):
        the faces held that match the person, with source, legal basis and file name. Audited."""
        blobs = [await read_image(f) for f in photos]
        as_(p).allow_any("privacy")
        charge(p, pixels=sum(upload_pixels(b) for b in blobs))
        fi = as_(p)

        def run() -> dict | HTMLResponse:
            report = fi.access(blobs, reference, purpose=purpose)
            if format != "html":
                return report
            from ..report import access_html

            thumbs = {}
            for f in report["faces"]:
                with contextlib.suppress(FaceIndexError):
                    thumbs[f["face_id"]] = fi.face_crop(f["face_id"], size=96, audit=False)
            return HTMLResponse(access_html(report, thumbs))

        return await work.run(locked, run)

    @r.post("/v1/erase", tags=["privacy"])
    async def erase(p: Who, photos: Annotated[list[UploadFile], File()], reference: Annotated[str, Form()]) -> dict:
        blobs = [await read_image(f) for f in photos]
        as_(p).allow_any("privacy")
        charge(p, pixels=sum(upload_pixels(b) for b in blobs))
        return await work.run(locked, as_(p).erase, blobs, reference)

    # --- audit and keys ----------------------------------------------------------------------------------------
    @r.get("/v1/audit", tags=["audit"])
    def audit(p: Who, case: str | None = None, actor: str | None = None, action: str | None = None,
              since: datetime | None = None, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[dict]:
        with lock:
            rows = as_(p).audit_show(case_ref=case, actor=actor, action=action, since=since, limit=limit,
                                     newest_first=True)
        return [r.as_dict() for r in rows]

    @r.get("/v1/audit/verify", response_model=S.AuditVerifyOut, tags=["audit"])
    def audit_verify(p: Who) -> S.AuditVerifyOut:
        with lock:
            res = as_(p).audit_verify()
            seq, digest = engine.audit.head()
        return S.AuditVerifyOut(ok=res.ok, records=res.records_checked, first_bad_seq=res.first_bad_seq,
                                problem=res.problem, head=f"{seq}:{digest}")

    @r.get("/v1/keys", response_model=list[S.KeyOut], tags=["keys"])
    def keys(p: Who) -> list[S.KeyOut]:
        with lock:
            return [S.KeyOut(**{k: v for k, v in x.items() if k in S.KeyOut.model_fields}) for x in as_(p).api_keys()]

    @r.post("/v1/keys", response_model=S.KeyCreated, status_code=201, tags=["keys"])
    def create_key(p: Who, body: S.KeyIn) -> S.KeyCreated:
        with lock:
            fi = as_(p)
            key_id, token = fi.create_key(body.name, body.role)
            row = next(x for x in fi.api_keys() if x["id"] == key_id)
        return S.KeyCreated(**{k: v for k, v in row.items() if k in S.KeyOut.model_fields}, token=token)

    @r.delete("/v1/keys/{key_id}", status_code=204, tags=["keys"])
    def revoke_key(p: Who, key_id: int) -> Response:
        with lock:
            as_(p).revoke_key(key_id)
        return Response(status_code=204)

    return r
