"""Request and response models of the HTTP API (kept apart from the engine's dataclasses)."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, Field

from ..text import MAX_LONG, check_identity, check_text

# Free text is checked by the same function as in the engine and the CLI (faceindex.text.check_text).
ShortText = Annotated[str, AfterValidator(lambda v: check_text(v, "the text"))]
LongText = Annotated[str, AfterValidator(lambda v: check_text(v, "the text", max_len=MAX_LONG))]
KeyName = Annotated[str, AfterValidator(lambda v: check_identity(v, "the key name"))]


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody


class Health(BaseModel):
    status: str
    faces: int


class FaceOut(BaseModel):
    index: int
    box: list[int]
    quality: dict[str, float]


class Candidate(BaseModel):
    rank: int
    face_id: int
    similarity: float
    fmr: float
    expected_false: float
    label: str
    image_id: int
    path: str
    source: str
    box: list[int]
    person_id: int | None
    person_name: str | None
    confirmed_by: list[str] = []
    confirmation: str = "unconfirmed"


class ProbeOut(BaseModel):
    face: FaceOut
    gallery_size: int
    expected_false_candidates: float
    candidates: list[Candidate]


class SearchOut(BaseModel):
    notice: str
    model: str = ""  # the model pack that made the embeddings (faceindex models list)
    purpose: str
    case: str
    results: list[ProbeOut]


class VerifyOut(BaseModel):
    model: str = ""
    similarity: float
    fmr: float
    decision: str
    same_person_candidate: bool
    face_a: FaceOut
    face_b: FaceOut


class PersonOut(BaseModel):
    id: int
    name: str | None
    faces: int
    images: int
    sample_face_ids: list[int] = []  # the best faces, for a mosaic
    cohesion: float | None = None  # mean similarity of the weakest merge that formed the group (None: one face)
    cohesion_fmr: float | None = None  # FMR of that similarity: how likely it is between two different people


class PersonFace(BaseModel):
    face_id: int
    path: str
    source: str
    box: list[int]
    quality: float


class PersonDetail(PersonOut):
    face_list: list[PersonFace]


class NameIn(BaseModel):
    name: ShortText = Field(min_length=1, max_length=200)


class MergeIn(BaseModel):
    person_ids: list[int] = Field(min_length=2, max_length=1000)


class SplitIn(BaseModel):
    face_ids: list[int] = Field(min_length=1, max_length=10_000)


class SourceIn(BaseModel):
    name: str = Field(min_length=1, max_length=200, pattern=r"^[\w.\- ]+$")
    basis: str | None = None
    retention_days: int | None = Field(default=None, ge=0)
    notice: LongText | None = Field(default=None, max_length=2000)


class PathIngestIn(BaseModel):
    path: str = Field(min_length=1, max_length=4096)
    source: str = Field(min_length=1, max_length=200, pattern=r"^[\w.\- ]+$")


class JobOut(BaseModel):
    id: str
    kind: str
    state: str  # queued | running | done | failed
    total: int | None
    done: int
    faces: int
    errors: int
    result: dict | None = None
    error: str | None = None


class ConfirmIn(BaseModel):
    case: ShortText = Field(min_length=1, max_length=100)
    face_id: int


class ConfirmOut(BaseModel):
    case: str
    face_id: int
    confirmed_by: list[str]
    status: str


class KeyOut(BaseModel):
    id: int
    name: str
    role: str
    prefix: str
    created_at: str
    created_by: str
    revoked_at: str | None


class KeyIn(BaseModel):
    name: KeyName = Field(min_length=1, max_length=64)
    role: str


class KeyCreated(KeyOut):
    token: str


class AuditVerifyOut(BaseModel):
    ok: bool
    records: int
    first_bad_seq: int | None
    problem: str | None
    head: str
