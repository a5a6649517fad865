"""The people endpoints: list people by size or weakest first, cluster, one person with their faces, name, merge,
split.

Listing, clustering, viewing and naming reveal faces, so they need a purpose and a case (the `why` dependency) and
are audited by the engine; merges and splits are reviewers' decisions the engine records. Authentication happens in
app.py's middleware (POST, PUT) or the principal dependency (GET) before any body is read.
"""

from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query

from . import schemas as S
from .context import Context, Principal


def router(ctx: Context) -> APIRouter:
    """The people endpoints, as a router that create_app includes."""
    r = APIRouter()
    lock, as_, charge = ctx.lock, ctx.as_, ctx.charge
    Who = Annotated[Principal, Depends(ctx.principal)]
    Why = Annotated[tuple[str | None, str | None], Depends(ctx.why)]

    def person_out(x) -> S.PersonOut:
        return S.PersonOut(id=x.id, name=x.name, faces=x.face_count, images=x.image_count,
                           sample_face_ids=list(x.sample_face_ids), cohesion=x.cohesion, cohesion_fmr=x.cohesion_fmr)

    @r.get("/v1/people", response_model=list[S.PersonOut], tags=["people"])
    def people(p: Who, why: Why, min_faces: Annotated[int, Query(ge=1)] = 2,
               limit: Annotated[int, Query(ge=1, le=1000)] = 100,
               sort: Annotated[Literal["size", "weakest"], Query(
                   description="size: largest first; weakest: least cohesive first (review these)")] = "size",
               ) -> list[S.PersonOut]:
        """People by size or weakest first (audited: needs a purpose and a case)."""
        with lock:
            found = as_(p).people(limit=None, min_faces=min_faces, sort=sort, purpose=why[0], case=why[1])[:limit]
        charge(p, faces=sum(len(x.sample_face_ids) for x in found), upfront=False)
        return [person_out(x) for x in found]

    @r.post("/v1/people/cluster", response_model=list[S.PersonOut], tags=["people"])
    def cluster(p: Who, why: Why, full: Annotated[bool, Query(
            description="re-cluster every face (default: only faces not yet in a person)")] = False,
                ) -> list[S.PersonOut]:
        """Group faces into people (audited: needs a purpose and a case)."""
        with lock:
            found = as_(p).cluster(full=full, purpose=why[0], case=why[1])[:100]
        charge(p, faces=sum(x.face_count for x in found), upfront=False)
        return [person_out(x) for x in found]

    @r.get("/v1/people/{person_id}", response_model=S.PersonDetail, tags=["people"])
    def person(p: Who, person_id: int, why: Why) -> S.PersonDetail:
        """A person and their faces (audited: needs a purpose and a case)."""
        with lock:
            x, faces = as_(p).person(person_id, purpose=why[0], case=why[1])
        charge(p, faces=len(faces), upfront=False)
        return S.PersonDetail(**person_out(x).model_dump(), face_list=[
            S.PersonFace(face_id=f.id, path=Path(f.path).name, source=f.source, box=f.box.as_list(),
                         quality=round(f.quality, 3)) for f in faces])

    @r.put("/v1/people/{person_id}/name", response_model=S.PersonOut, tags=["people"])
    def name(p: Who, person_id: int, body: S.NameIn, why: Why) -> S.PersonOut:
        """Name a person (audited: needs a purpose and a case)."""
        with lock:
            fi = as_(p)
            fi.name_person(person_id, body.name, purpose=why[0], case=why[1])
            return person_out(fi.person(person_id, audit=False)[0])

    @r.post("/v1/people/merge", response_model=S.PersonOut, tags=["people"])
    def merge(p: Who, body: S.MergeIn) -> S.PersonOut:
        with lock:
            return person_out(as_(p).merge_people(body.person_ids))

    @r.post("/v1/people/{person_id}/split", response_model=S.PersonOut, tags=["people"])
    def split(p: Who, person_id: int, body: S.SplitIn) -> S.PersonOut:
        with lock:
            return person_out(as_(p).split_person(person_id, body.face_ids))

    return r
