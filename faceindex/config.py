"""Settings, read once by the entry point (CLI flags, FACEINDEX_* environment) and passed down."""

from __future__ import annotations

import getpass
import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every tunable of faceindex. Environment variables use the prefix FACEINDEX_."""

    model_config = SettingsConfigDict(env_prefix="FACEINDEX_", extra="ignore")

    data: Path = Field(default=Path("./faceindex-data"), description="the data folder (catalog + index)")
    catalog: str | None = Field(
        default=None, description="the catalog: a postgresql://USER@HOST/DB URL (many servers) or a SQLite file; "
                                  "default <data>/catalog.db. The data folder keeps the derived vector index")
    model: str | None = Field(
        default=None, description="model pack of a new index (faceindex models list); an index keeps its own")
    detector: Literal["hog", "cnn"] = Field(default="hog", description="the dlib pack's detector: hog or cnn")
    backend: Literal["auto", "onnx", "dlib"] = Field(
        default="auto", description="embedding runtime: onnx (fast) or dlib (reference); auto = onnx if it loads"
    )
    max_pixels: int = Field(default=60_000_000, gt=0, description="refuse images with more pixels than this")
    max_file_bytes: int = Field(default=200_000_000, gt=0, description="refuse files larger than this")
    detect_max_side: int = Field(
        default=3000, ge=200, description="downscale images whose longer side exceeds this for detection"
    )
    upsample: int | None = Field(
        default=None, ge=0, le=3, description="detector upsampling; None = adaptive to the image size"
    )
    min_face: int = Field(default=20, ge=8, description="faces smaller than this (pixels) are ignored")
    min_quality: float = Field(
        default=0.3, ge=0.0, le=1.0, description="faces below this quality are kept but not search candidates"
    )
    cnn_fallback: bool = Field(
        default=True, description="when HOG finds no face in an image, look again with the CNN detector")
    flip: bool = Field(default=True, description="average the embedding of the chip and its mirror image")
    workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)
    ray: str | None = Field(
        default=None, description="add: analyse the files on a Ray cluster (FACEINDEX_RAY): auto (the cluster this "
                                  "machine joined with `ray start`) or HOST:PORT of its head; unset: local processes")
    exact_threshold: int = Field(
        default=100_000, ge=1, description="use exact search below this many faces, a graph (HNSW) above"
    )
    index_kind: Literal["auto", "exact", "hnsw", "hnswsq", "ivf", "ivfsq"] = Field(
        default="auto", description="vector index kind: auto = exact below exact_threshold faces, hnsw up to "
                                    "graph_threshold, hnswsq (graph on SQ8 codes + fp16 re-rank) above")
    graph_threshold: int = Field(
        default=4_000_000, ge=1, description="above this many faces auto keeps the graph on SQ8 codes (hnswsq) "
                                             "instead of float32 (memory: see docs/architecture.md)")
    ivfsq_nprobe: int = Field(default=128, ge=1, description="IVF-SQ8 lists visited per query (index_kind ivfsq)")
    vectors: str | None = Field(
        default=None, description="vector store: unset = the FAISS file in the data folder; milvus://host:port"
                                  "[/prefix] = a Milvus server or cluster (docs/scale.md)")
    ef_search: Annotated[int, Field(ge=8, le=4096)] | Literal["auto"] = Field(
        default="auto", description="HNSW candidates kept per query (recall vs latency, see docs/benchmarks.md); "
                                    "auto: the smallest that finds 99% of the exact 10 nearest faces, calibrated on "
                                    "the gallery when the graph is built, grown with it after "
                                    "(docs/architecture.md)")
    nprobe: int = Field(default=128, ge=1, description="IVF lists visited per query (see docs/benchmarks.md)")
    max_upload_bytes: int = Field(default=20_000_000, gt=0, description="largest upload the server accepts")
    rate_limit: int = Field(
        default=120, ge=1, description="work units per minute per user (server): a request is 1, each 2 megapixels "
                                       "decoded 1 more, each 100 faces returned 1 more; a user's keys share it")
    keep_uploads: bool = Field(
        default=False, description="keep photos uploaded to the server in <data>/uploads after they are indexed "
                                   "(their crops and photos can then be shown); erase deletes a person's either way")
    max_pending: int = Field(
        default=8, ge=1, description="engine requests (searches, uploads) running or waiting at once before 503")
    max_connections: int = Field(default=200, ge=1, description="open connections before 503 (server)")
    api_docs: bool = Field(
        default=False, description="serve the interactive API docs at /docs (its page loads scripts from a CDN)")
    auth_failure_limit: int = Field(
        default=30, ge=1, description="failed authentications per minute per client address before 429 (server)")
    ingest_roots: list[Path] = Field(
        default_factory=list, description="server-side folders the server may ingest from (none by default)")
    actor: str = Field(default_factory=lambda: _user(), min_length=1, description="who is acting (audit trail)")
    role: Literal["owner", "admin", "investigator", "auditor", "privacy-officer"] = Field(
        default="owner", description="the actor's role; the local operator owns the data folder")

    audit_key: SecretStr | None = Field(
        default=None, description="key of a keyed (HMAC) audit chain (FACEINDEX_AUDIT_KEY); keep it out of the data folder")
    audit_key_file: Path | None = Field(
        default=None, description="file holding the audit key (FACEINDEX_AUDIT_KEY_FILE), outside the data folder")

    @field_validator("ray")
    @classmethod
    def _clean_ray(cls, value: str | None) -> str | None:
        return (value.strip() or None) if value is not None else None

    @field_validator("actor")
    @classmethod
    def _clean_actor(cls, value: str) -> str:
        from .text import check_text

        return check_text(value, "the actor (FACEINDEX_ACTOR)")

    def resolved_data(self) -> Path:
        return self.data.expanduser().resolve()


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
