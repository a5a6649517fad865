"""The HTTP API (/v1) and the web page (/) over one data folder.

`create_app(settings)` builds the app. Every endpoint but /healthz needs an API key (Authorization: Bearer or
X-API-Key); the key's role decides what it may do and its name is the actor in the audit trail. Errors are JSON
`{"error": {"code", "message"}}` with one mapping from the engine's exceptions to HTTP statuses, never a trace.
"""


import io
import logging
import math
import os
import re
import secrets
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..config import Settings
from ..engine import FaceIndex
from ..errors import (
    AccessDenied,
    CatalogError,
    EvaluationError,
    FaceIndexError,
    ImageError,
    ModelError,
    NoFaceError,
    NotFoundError,
    PolicyError,
)
from . import routes_accountability, routes_admin, routes_people, routes_search
from . import schemas as S
from .context import Context, Principal
from .guard import (
    FACES_PER_UNIT,
    IMAGE_REQUEST_COST,
    PIXELS_PER_UNIT,
    WEB_HEADERS,
    BodyLimit,
    Busy,
    RateLimiter,
    WorkQueue,
)
from .jobs import Jobs
from .routes_overview import overview_router
from .routes_search import NOTICE

log = logging.getLogger("faceindex.server")
STATIC = Path(__file__).parent / "static"
IMAGE_ROUTE = re.compile(r"^/v1/faces/\d+/(crop|image)$")
UPLOAD_SUFFIX = re.compile(r"\.(jpe?g|jpe|png|webp|bmp|tiff?|gif)$", re.IGNORECASE)  # images.IMAGE_SUFFIXES


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


# One place that maps engine errors to HTTP statuses.
ERROR_STATUS: list[tuple[type[Exception], int, str]] = [
    (AccessDenied, 403, "forbidden"),
    (PolicyError, 403, "policy"),
    (NoFaceError, 422, "no_face"),
    (ImageError, 422, "bad_image"),
    (EvaluationError, 422, "bad_data"),
    (NotFoundError, 404, "not_found"),
    (ModelError, 500, "model_error"),
    (CatalogError, 500, "catalog_error"),
    (FaceIndexError, 400, "error"),
    (OverflowError, 422, "out_of_range"),  # an id or number beyond what the catalog (SQLite int64) can hold
    (ValueError, 400, "bad_request"),
]


# Documented for every operation, so that clients see the real error body (not FastAPI's default 422 schema).
ERROR_RESPONSES: dict[int | str, dict] = {code: {"model": S.ErrorResponse, "description": why} for code, why in (
    (400, "bad request"), (401, "missing, invalid or revoked API key"), (403, "not allowed for this role or policy"),
    (404, "not found"), (413, "upload too large"), (415, "not an image type"),
    (422, "invalid request, image, or no face"), (429, "rate limited: see Retry-After"))}


def _error(status: int, code: str, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def create_app(settings: Settings) -> FastAPI:
    """The faceindex API and web page over `settings.data`."""
    engine = FaceIndex(settings)
    engine.vectors.pin_graph()  # a long-lived process: graphs are served from huge pages once loaded
    lock = threading.RLock()  # the engine's catalog connection and index are used by one request at a time
    limiter = RateLimiter(settings.rate_limit)
    work = WorkQueue(settings.max_pending)  # engine work of async endpoints: in threads, bounded, 503 beyond

    def locked(fn: Callable, *args, **kwargs):
        with lock:
            return fn(*args, **kwargs)
    auth_failures = RateLimiter(settings.auth_failure_limit)  # per client address
    jobs = Jobs(settings, engine, lock)  # in the catalog: a restart resumes what was queued or running
    registry = CollectorRegistry()
    m_requests = Counter("faceindex_http_requests", "HTTP requests", ["method", "route", "status"],
                         registry=registry)
    m_latency = Histogram("faceindex_http_request_seconds", "HTTP request latency", ["route"], registry=registry,
                          buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
    m_faces = Gauge("faceindex_faces", "faces in the catalog", registry=registry)
    m_searches = Counter("faceindex_searches", "searches served", registry=registry)

    app = FastAPI(title="faceindex", version=__version__,
                  description="Accountable face search. " + NOTICE,
                  # the interactive docs page loads its scripts from a CDN: off unless asked for
                  docs_url="/docs" if settings.api_docs else None, redoc_url=None,
                  responses=ERROR_RESPONSES)
    bearer = HTTPBearer(auto_error=False, description="API key from `faceindex keys create`")

    # --- errors ----------------------------------------------------------------------------------------------
    @app.exception_handler(ApiError)
    async def _api_error(_r: Request, e: ApiError):
        return _error(e.status, e.code, e.message, e.headers)

    @app.exception_handler(Busy)
    async def _busy(_r: Request, _e: Busy):
        return _error(503, "busy", "the server is busy; retry shortly", {"Retry-After": "2"})

    @app.exception_handler(RequestValidationError)
    async def _validation(_r: Request, e: RequestValidationError):
        first = e.errors()[0] if e.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        return _error(422, "invalid_request", f"{where}: {first.get('msg', 'invalid request')}".strip(": "))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_r: Request, e: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code, "http_error")
        return _error(e.status_code, code, str(e.detail))

    async def _mapped(_r: Request, e: Exception):
        for kind, status, code in ERROR_STATUS:
            if isinstance(e, kind):
                if status >= 500:
                    log.error("%s: %s", type(e).__name__, e)
                return _error(status, code, str(e))
        return _error(500, "internal", "internal error")

    for kind, _status, _code in ERROR_STATUS:
        app.add_exception_handler(kind, _mapped)

    @app.exception_handler(Exception)
    async def _any(_r: Request, e: Exception):
        log.exception("internal error")  # details stay in the server log, never in the response
        return _error(500, "internal", "internal error")

    # --- middleware: size limit and metrics ------------------------------------------------------------------
    max_body = settings.max_upload_bytes * 4 + 1_000_000

    @app.middleware("http")
    async def _guard(request: Request, call_next: Callable):
        t = time.perf_counter()
        if request.method in ("POST", "PUT", "PATCH"):
            length = request.headers.get("content-length")
            if length is None and "multipart" in request.headers.get("content-type", "").lower():
                return _error(411, "length_required", "uploads need a Content-Length")
            if length is not None and (not length.isdigit() or int(length) > max_body):
                return _error(413, "too_large", f"request larger than {max_body} bytes")
            if request.url.path.startswith("/v1/"):
                try:  # from the headers alone, before a byte of the body is read
                    await run_in_threadpool(authenticate, request)
                except ApiError as e:
                    return _error(e.status, e.code, e.message, e.headers)
        response = await call_next(request)
        route = request.scope.get("route")
        name = getattr(route, "path", "static")
        m_requests.labels(request.method, name, str(response.status_code)).inc()
        m_latency.labels(name).observe(time.perf_counter() - t)
        for header, value in WEB_HEADERS.items():
            response.headers.setdefault(header, value)
        return response

    app.add_middleware(BodyLimit, max_body=max_body)  # outside _guard: counts every body as it streams in

    # --- auth ------------------------------------------------------------------------------------------------
    def limited(wait: float, what: str) -> ApiError:
        return ApiError(429, "rate_limited", what, {"Retry-After": str(max(1, math.ceil(wait)))})

    def authenticate(request: Request) -> dict:
        """The key of a request's Authorization (Bearer) or X-API-Key header; 401, or 429 while this client
        address has failed too often (failures are counted per address)."""
        addr = ("addr", request.client.host if request.client else "?")
        wait = auth_failures.wait(addr)
        if wait:  # guessing keys from this address: stop answering until the budget refills
            raise limited(wait, "too many failed authentications from this address")
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        token = credentials.strip() if scheme.lower() == "bearer" else request.headers.get("x-api-key", "")
        try:
            if not token:
                raise AccessDenied("an API key is required")
            with lock:
                return engine.authenticate(token)
        except AccessDenied as e:
            auth_failures.charge(addr, 1.0)
            raise ApiError(401, "unauthorized", str(e), {"WWW-Authenticate": "Bearer"}) from e

    def principal(request: Request,
                  _creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)] = None) -> Principal:
        key = authenticate(request)
        p = Principal(key["id"], key["name"], key["role"])
        # images are charged in their endpoints, by the pixels they decode
        cost = IMAGE_REQUEST_COST if request.method == "GET" and IMAGE_ROUTE.match(request.url.path) else 1.0
        wait = limiter.take(p.user, cost)
        if wait:
            raise limited(wait, "too many requests for this user")
        return p

    def charge(p: Principal, *, pixels: int = 0, faces: int = 0, upfront: bool = True) -> None:
        """Charge a user for decoding `pixels` and returning `faces`: up front (429 before the work) or after."""
        cost = pixels / PIXELS_PER_UNIT + faces / FACES_PER_UNIT
        if cost <= 0:
            return
        if not upfront:
            limiter.charge(p.user, cost)
            return
        wait = limiter.take(p.user, cost)
        if wait:
            raise limited(wait, "too many requests for this user (large images cost more)")

    def upload_pixels(data: bytes) -> int:
        """Pixels an upload will decode, from its header alone (0 when unreadable: decoding will say why)."""
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(io.BytesIO(data)) as img:
                return int(img.width) * int(img.height)
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
            return 0

    def why(purpose: Annotated[str | None, Query(max_length=200, description="why (an allowed purpose); "
                                                 "reads that reveal faces are audited")] = None,
            case: Annotated[str | None, Query(max_length=100, description="the case reference")] = None
            ) -> tuple[str | None, str | None]:
        """Purpose and case of a read that reveals faces (people, crops, photos), checked like a search's."""
        engine.policy.check_purpose(purpose, case)
        return (purpose.strip() if purpose else None), (case.strip() if case else None)

    Who = Annotated[Principal, Depends(principal)]

    def as_(p: Principal) -> FaceIndex:
        return engine.acting_as(p.actor, p.role)

    async def read_image(upload: UploadFile) -> bytes:
        ctype = (upload.content_type or "").lower()
        if not (ctype.startswith("image/") or ctype == "application/octet-stream"):
            raise ApiError(415, "unsupported_media_type",
                           f"{upload.filename or 'upload'}: expected an image, got {ctype or 'no type'}")
        data = await upload.read(settings.max_upload_bytes + 1)
        if len(data) > settings.max_upload_bytes:
            raise ApiError(413, "too_large",
                           f"{upload.filename or 'upload'} is larger than {settings.max_upload_bytes} bytes")
        if not data:
            raise ApiError(422, "bad_image", f"{upload.filename or 'upload'} is empty")
        return data

    ctx = Context(
        settings=settings, engine=engine, lock=lock, jobs=jobs, principal=principal, why=why, as_=as_,
        read_image=read_image, charge=charge, upload_pixels=upload_pixels, work=work, locked=locked,
        searches=m_searches, error=ApiError, max_body=max_body, slug=_slug, image_suffix=UPLOAD_SUFFIX)

    # --- health, metrics, stats ------------------------------------------------------------------------------
    health = {"faces": 0}

    @app.get("/healthz", response_model=S.Health, tags=["system"])
    async def healthz() -> S.Health:
        """Instant, even while the engine is busy: the face count is refreshed only when the engine is free."""
        if lock.acquire(blocking=False):
            try:
                health["faces"] = engine.catalog.face_count()
            finally:
                lock.release()
        return S.Health(status="ok", faces=health["faces"])

    @app.get("/metrics", tags=["system"], response_class=Response,
             responses={200: {"content": {"text/plain": {}}}})
    def metrics(p: Who) -> Response:
        as_(p).allow_any("audit", "keys")
        with lock:
            m_faces.set(engine.catalog.face_count())
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/stats", tags=["system"])
    def stats(p: Who) -> dict:
        with lock:
            s = as_(p).stats()
        s.pop("data", None)  # no server paths to clients
        return s

    @app.get("/v1/me", tags=["system"])
    def me(p: Who) -> dict:
        from ..policy import PERMISSIONS

        return {"name": p.name, "role": p.role, "key_id": p.key_id, "actor": p.actor,
                "permissions": sorted(PERMISSIONS[p.role]), "allowed_purposes": engine.policy.allowed_purposes}

    # --- search, verify, faces (routes_search.py) ---------------------------------------------------------------
    app.include_router(routes_search.router(ctx))

    # --- people (routes_people.py) --------------------------------------------------------------------------------
    app.include_router(routes_people.router(ctx))

    # --- sources and ingest ------------------------------------------------------------------------------------
    @app.get("/v1/sources", tags=["ingest"])
    def sources(p: Who) -> list[dict]:
        fi = as_(p)
        fi.allow_any("ingest", "privacy", "audit")
        with lock:
            return [{k: v for k, v in s.items() if k != "id"} for s in fi.sources()]

    @app.post("/v1/sources", tags=["ingest"])
    def put_source(p: Who, body: S.SourceIn) -> dict:
        with lock:
            s = as_(p).set_source(body.name, body.basis, body.retention_days, body.notice)
        return {k: v for k, v in s.items() if k != "id"}

    @app.post("/v1/ingest/upload", response_model=S.JobOut, status_code=202, tags=["ingest"])
    async def ingest_upload(p: Who, files: Annotated[list[UploadFile], File()],
                            source: Annotated[str, Form(min_length=1, max_length=200, pattern=r"^[\w.\- ]+$")]
                            ) -> S.JobOut:
        """Store uploaded photos in the data folder's uploads/ and index them in a background job."""
        as_(p).allow_any("ingest")
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(4)
        folder = settings.resolved_data() / "uploads" / (_slug(source) or "source") / stamp
        blobs = [(await read_image(f), f.filename or "upload") for f in files]
        charge(p, pixels=sum(upload_pixels(b) for b, _ in blobs))
        folder.mkdir(parents=True, exist_ok=True)
        for i, (data, fname) in enumerate(blobs):
            name = _slug(Path(fname).name)[:80] or "image"
            if not UPLOAD_SUFFIX.search(name):  # the folder walk only picks up image suffixes; decoding goes by content
                name += ".jpg"
            (folder / f"{i:05d}-{name}").write_bytes(data)
        return jobs.start(p.key_id, {"paths": [str(folder)], "source": source, "uploads": str(folder),
                                     "actor": p.actor, "role": p.role}).out()

    @app.post("/v1/ingest/path", response_model=S.JobOut, status_code=202, tags=["ingest"])
    def ingest_path(p: Who, body: S.PathIngestIn) -> S.JobOut:
        """Index a server-side folder, which must lie under one of the configured ingest roots."""
        as_(p).allow_any("ingest")
        roots = [os.path.realpath(r) for r in settings.ingest_roots]
        real = os.path.realpath(body.path)
        if not roots or not any(os.path.commonpath([real, r]) == r for r in roots):
            raise ApiError(403, "path_not_allowed", "path is outside the allowed ingest roots")
        if not os.path.exists(real):
            raise ApiError(404, "not_found", "no such path")
        return jobs.start(p.key_id, {"paths": [real], "source": body.source, "within": roots,
                                     "actor": p.actor, "role": p.role}).out()

    @app.get("/v1/jobs/{job_id}", response_model=S.JobOut, tags=["ingest"])
    def job(p: Who, job_id: str) -> S.JobOut:
        j = jobs.get(job_id)
        if j is None or (j.owner != p.key_id and p.role != "admin"):
            raise ApiError(404, "not_found", "no such job")
        return j.out()

    # --- admin: sources, jobs, chunked uploads, policy (routes_admin.py) ---------------------------------------------
    app.include_router(routes_admin.router(ctx))

    # --- privacy, audit and keys (routes_accountability.py) ---------------------------------------------------------
    app.include_router(routes_accountability.router(ctx))

    app.include_router(overview_router(engine, jobs, lock, principal, as_))

    # --- the web page ------------------------------------------------------------------------------------------
    if STATIC.is_dir():
        app.mount("/", StaticFiles(directory=STATIC, html=True), name="web")

    app.state.engine = engine
    app.state.jobs = jobs
    resumed = jobs.resume()
    if resumed:
        log.warning("resumed %d ingest job(s) interrupted by a restart", resumed)
    return app


def _slug(text: str) -> str:
    return re.sub(r"[^\w.\-]+", "_", text).strip("._")

