"""Request and response models of the HTTP API (kept apart from the engine's dataclasses)."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

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


class FileErrorOut(BaseModel):
    file: str  # the file's name (never a server path)
    reason: str


class JobOut(BaseModel):
    id: str
    kind: str
    state: str  # uploading | queued | running | done | failed | cancelled
    total: int | None
    done: int
    faces: int
    errors: int
    result: dict | None = None
    error: str | None = None
    source: str | None = None
    received: int | None = None  # files received so far by an upload job
    created_at: str | None = None
    updated_at: str | None = None
    seconds: float | None = None  # indexing time so far (running) or in all (ended)
    images_per_second: float | None = None
    error_files: list[FileErrorOut] = []


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
    last_used_at: str | None = None


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


# --- admin pages (routes_admin.py) ------------------------------------------------------------------------------------
SourceName = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[\w.\- ]+$")]


class SourceEdit(BaseModel):
    """Fields of a registered source to change (absent: unchanged)."""

    model_config = ConfigDict(extra="forbid")

    basis: str | None = None
    retention_days: int | None = Field(default=None, ge=0, le=36_500)
    notice: LongText | None = Field(default=None, max_length=2000)


class SourceOut(BaseModel):
    name: str
    created_at: str
    basis: str
    notice: str | None
    retention_days: int | None
    files: int
    images: int
    faces: int
    oldest_file: str | None
    next_expiry: str | None
    expired: bool  # files older than the retention period are still held (run `faceindex retention apply`)


class SourceUsage(BaseModel):
    source: str
    files: int
    images: int
    faces: int
    images_only_here: int  # what deleting the source's images removes; the rest is also held by other sources
    faces_only_here: int


class SourceDeleted(BaseModel):
    source: str
    files: int
    images: int
    faces: int


class UploadStart(BaseModel):
    source: SourceName


class ChunkOut(BaseModel):
    job: str
    chunk: int
    files: int  # files stored from this chunk
    received: int  # files received by the job so far


class IngestLimits(BaseModel):
    max_upload_bytes: int  # one file
    max_request_bytes: int  # one request (a chunk of files)
    max_files_per_request: int
    ingest_roots: list[str]  # the server folders (and what lies below them) that may be named for ingest
    bases: list[str]  # the legal bases a source may have


class PolicyRate(BaseModel):
    fmr: float
    similarity: float | None  # this model's similarity at that FMR
    leak_rate: float | None  # share of the person's own faces left after an opt-out (None: not measured)
    over_removal: float | None  # share of everybody else's faces removed by one opt-out


class PolicyOut(BaseModel):
    require_purpose: bool
    require_case: bool
    allowed_purposes: list[str]
    require_source_basis: bool
    optout_fmr: float
    access_fmr: float
    model: str
    optout: PolicyRate  # the rates at the current thresholds
    access: PolicyRate
    rates: list[PolicyRate]  # every measured threshold, for choosing another
    rates_source: str  # where the measured rates come from


class PolicyIn(BaseModel):
    """Policy fields to change (absent: unchanged)."""

    model_config = ConfigDict(extra="forbid")

    require_purpose: bool | None = None
    require_case: bool | None = None
    allowed_purposes: list[Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[\w.\-: ]+$")]] | None = \
        Field(default=None, max_length=100)
    require_source_basis: bool | None = None
    optout_fmr: float | None = Field(default=None, gt=0, lt=1)
    access_fmr: float | None = Field(default=None, gt=0, lt=1)
