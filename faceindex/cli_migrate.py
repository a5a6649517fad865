"""`faceindex migrate`: move an embedded index's catalog and audit log into PostgreSQL, verified."""

from __future__ import annotations

from typing import Annotated

import typer

from .cli import _emit_json, app, out, state


@app.command()
def migrate(
    to_catalog: Annotated[str, typer.Option("--to-catalog", help="target: postgresql://USER@HOST/DB (empty)")],
    to_vectors: Annotated[str | None, typer.Option(
        "--to-vectors", help="target vector store URL (milvus://HOST:PORT): filled from the migrated catalog and "
                             "checked against it (without it, each data folder rebuilds its FAISS index from the "
                             "target catalog on first open)")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Copy this data folder's catalog and audit log into an empty PostgreSQL database in one transaction, then
    verify it (row counts, an embedding checksum, the audit chain). Stop servers and ingests first. Afterwards
    run every command with --catalog URL (or FACEINDEX_CATALOG)."""
    from . import anchor
    from .engine import AUDIT_FILE, CATALOG_FILE
    from .migrate import migrate as run
    from .policy import check_permission

    settings = state.settings
    check_permission(settings.role, "policy")
    data = settings.resolved_data()
    report = run(settings.catalog or data / CATALOG_FILE, data / AUDIT_FILE, anchor.load_key(settings), to_catalog,
                 to_vectors)
    if to_vectors:
        report["vectors"] = _fill_vectors(settings.model_copy(update={"catalog": to_catalog, "vectors": to_vectors}))
    if as_json:
        _emit_json(report)
        return
    rows = report["rows"]
    out.print(f"migrated {rows['faces']} faces, {rows['images']} images, {rows['files']} files, {rows['people']} "
              f"people and {report['audit_records']} audit records; verified (row counts, embedding sha256 "
              f"{report['embedding_sha256'][:16]}..., audit chain)", markup=False, highlight=False)
    if to_vectors:
        out.print(f"vector store {to_vectors}: {report['vectors']['vectors']} vectors, one per face",
                  markup=False, highlight=False)
    vectors = f" --vectors {to_vectors}" if to_vectors else ""
    out.print(f"now use: faceindex --catalog {_shown(to_catalog)}{vectors} ...",
              markup=False, highlight=False)


def _fill_vectors(settings) -> dict:
    """Open the migrated catalog with the target vector store, which loads every face's embedding into it (the
    vector index is derived from the catalog), and check that it holds exactly the catalog's faces."""
    from .engine import FaceIndex
    from .errors import VectorStoreError

    with FaceIndex(settings) as fi:
        held, want = fi.index.count, fi.catalog.face_count()
        if held != want:
            raise VectorStoreError(f"the vector store holds {held} vectors, the migrated catalog {want} faces; "
                                   "run the migrate command's --to-vectors step again by opening the index")
        return {"url": settings.vectors, "vectors": held, "verified": True}


def _shown(url: str) -> str:
    from .catalog.postgres import redact

    return redact(url)
