"""The search endpoints and a face's own endpoints: detect, search, verify, confirmations; a face's crop, its photo
with the face outlined, and deleting a face.

Searches and verifications are audited by the engine with their purpose and case; crops and photos reveal faces,
so they need a purpose and a case too (the `why` dependency) and are charged by the pixels they decode.
Authentication happens in app.py's middleware (POST) or the principal dependency (GET, DELETE) before any body is
read; the role is checked here before any image is decoded.
"""

import re
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Query, UploadFile
from fastapi.responses import Response

from . import schemas as S
from .context import Context, Principal

NOTICE = ("Results are candidate leads for a person to review, never identifications. FMR is the share of "
          "different-person pairs scoring as high; expected false candidates = FMR x gallery size.")


def router(ctx: Context) -> APIRouter:
    """The search, verify, confirmation and face endpoints, as a router that create_app includes."""
    r = APIRouter()
    lock, engine, as_, read_image, charge, upload_pixels, work, locked = (
        ctx.lock, ctx.engine, ctx.as_, ctx.read_image, ctx.charge, ctx.upload_pixels, ctx.work, ctx.locked)
    Who = Annotated[Principal, Depends(ctx.principal)]
    Why = Annotated[tuple[str | None, str | None], Depends(ctx.why)]

    def face_out(f) -> S.FaceOut:
        return S.FaceOut(index=f.index, box=f.box.as_list(), quality=f.quality.as_dict())

    @r.post("/v1/detect", response_model=list[S.FaceOut], tags=["search"])
    async def detect(p: Who, image: Annotated[UploadFile, File()]) -> list[S.FaceOut]:
        """Faces found in an image (to pick one before searching). Nothing is stored."""
        data = await read_image(image)
        fi = as_(p)
        fi.allow_any("search", "verify", "privacy")
        charge(p, pixels=upload_pixels(data))
        return [face_out(f) for f in await work.run(locked, fi.faces, data)]

    @r.post("/v1/search", response_model=S.SearchOut, tags=["search"])
    async def search(p: Who, probe: Annotated[UploadFile, File()], purpose: Annotated[str, Form()],
                     case: Annotated[str, Form()], top: Annotated[int, Form(ge=1, le=200)] = 10,
                     face: Annotated[int | None, Form(ge=0)] = None,
                     largest: Annotated[bool, Form()] = False) -> S.SearchOut:
        """Candidate leads for the faces of a probe photo (or one face of it). Audited; the probe is not kept."""
        data = await read_image(probe)
        fi = as_(p)
        fi.allow_any("search")
        charge(p, pixels=upload_pixels(data))

        def run() -> tuple:
            results = fi.search(data, top, purpose=purpose, case=case, largest=largest and face is None, face=face)
            return results, (fi.confirmations(case) if _safe_ref(case) else {})

        results, confirmed = await work.run(locked, run)
        ctx.searches.inc()
        out = []
        for r in results:
            cands = []
            for m in r.matches:
                c = confirmed.get(m.face_id, {"confirmed_by": [], "status": "unconfirmed"})
                cands.append(S.Candidate(
                    rank=m.rank, face_id=m.face_id, similarity=round(m.similarity, 5), fmr=m.fmr,
                    expected_false=m.expected_false, label=m.label, image_id=m.image_id, path=Path(m.path).name,
                    source=m.source, box=m.box.as_list(), person_id=m.person_id, person_name=m.person_name,
                    confirmed_by=c["confirmed_by"], confirmation=c["status"]))
            out.append(S.ProbeOut(face=face_out(r.face), gallery_size=r.gallery_size,
                                  expected_false_candidates=r.expected_false_candidates, candidates=cands))
        return S.SearchOut(notice=NOTICE, model=fi.pack.name, purpose=purpose, case=case, results=out)

    @r.post("/v1/verify", response_model=S.VerifyOut, tags=["search"])
    async def verify(p: Who, a: Annotated[UploadFile, File()], b: Annotated[UploadFile, File()],
                     purpose: Annotated[str, Form()], case: Annotated[str, Form()],
                     face_a: Annotated[int | None, Form(ge=0, le=10_000, description="face of a (POST /v1/detect's "
                                                       "index); default: the largest")] = None,
                     face_b: Annotated[int | None, Form(ge=0, le=10_000, description="face of b")] = None,
                     ) -> S.VerifyOut:
        """Compare one face of each of two photos (the largest unless chosen). Audited with purpose and case."""
        da, db = await read_image(a), await read_image(b)
        as_(p).allow_any("verify")
        charge(p, pixels=upload_pixels(da) + upload_pixels(db))
        v = await work.run(locked, as_(p).verify, da, db, purpose=purpose, case=case, face_a=face_a, face_b=face_b)
        return S.VerifyOut(model=as_(p).pack.name, similarity=round(v.similarity, 5), fmr=v.fmr, decision=v.label,
                           same_person_candidate=v.same, face_a=face_out(v.face_a), face_b=face_out(v.face_b))

    @r.post("/v1/confirmations", response_model=S.ConfirmOut, tags=["search"])
    def confirm(p: Who, body: S.ConfirmIn) -> S.ConfirmOut:
        """Confirm a candidate for a case: it shows as confirmed only after a second, different investigator."""
        with lock:
            return S.ConfirmOut(**as_(p).confirm(body.case, body.face_id))

    @r.get("/v1/confirmations", tags=["search"])
    def confirmations(p: Who, case: Annotated[str, Query(min_length=1, max_length=100)]) -> dict:
        with lock:
            return {str(k): v for k, v in as_(p).confirmations(case).items()}

    def face_reader(p, face_id: int):
        """The engine as `p`, once `p` may see faces and has been charged by the pixels of the face's photo."""
        fi = as_(p)
        fi.allow_any("search", "people", "privacy")
        with lock:
            pixels = engine.catalog.face_pixels(face_id)
        charge(p, pixels=pixels)
        return fi

    @r.get("/v1/faces/{face_id}/crop", tags=["faces"], response_class=Response,
             responses={200: {"content": {"image/jpeg": {}}}})
    def face_crop(p: Who, face_id: int, why: Why, size: Annotated[int, Query(ge=32, le=512)] = 160) -> Response:
        """A face's crop (JPEG). Audited: needs a purpose and a case; charged by the pixels of its photo."""
        fi = face_reader(p, face_id)
        with lock:
            data = fi.face_crop(face_id, size=size, purpose=why[0], case=why[1])
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=300"})

    @r.get("/v1/faces/{face_id}/image", tags=["faces"], response_class=Response,
             responses={200: {"content": {"image/jpeg": {}}}})
    def face_image(p: Who, face_id: int, why: Why) -> Response:
        """The face's source image with the face outlined. Audited: needs a purpose and a case; charged by its
        pixels."""
        fi = face_reader(p, face_id)
        with lock:
            data = fi.face_in_image(face_id, purpose=why[0], case=why[1])
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=300"})

    @r.delete("/v1/faces/{face_id}", status_code=204, tags=["faces"])
    def delete_face(p: Who, face_id: int) -> Response:
        with lock:
            as_(p).delete_face(face_id)
        return Response(status_code=204)

    return r


def _safe_ref(ref: str) -> bool:
    return bool(re.fullmatch(r"[\w\-.:]{1,100}", ref or "")) and not ref.startswith(".")
