"""`faceindex models ...`: list the model packs, verify their files, add one from a folder."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from .errors import FaceIndexError, ModelError

models_app = typer.Typer(help="Model packs: detector, alignment and embedder with their calibration and licence.",
                         no_args_is_help=True)
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def _settings():
    from .cli import state

    return state.settings


def _fail(e: FaceIndexError) -> typer.Exit:
    err.print(f"error: {e}", markup=False, highlight=False)
    return typer.Exit(e.exit_code)


@models_app.command("list")
def models_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Every pack usable with this data folder; * marks the default for a new index."""
    from .models import packs

    settings = _settings()
    rows = []
    for p in packs.available(settings.resolved_data()).values():
        rows.append({"name": p.name, "version": p.version, "dim": p.dim, "key": p.key,
                     "default": p.name == packs.DEFAULT, "builtin": p.builtin, "detector": p.detector,
                     "licence": p.licence, "calibration": p.calibration,
                     "files": [{"role": f.role, "path": str(f.path), "sha256": f.sha256} for f in p.files]})
    if as_json:
        import json
        import sys

        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    t = Table("", "name", "version", "dim", "files", "licence")
    for r in rows:
        files = "\n".join(f"{f['role']}: {Path(f['path']).name}" for f in r["files"])
        t.add_row("*" if r["default"] else "", r["name"], r["version"], str(r["dim"]), files, r["licence"])
    out.print(t)
    out.print("* the model of a new index (an existing index keeps the model it was made with)", markup=False)


@models_app.command("verify")
def models_verify() -> None:
    """Check the sha256 of every file of every pack; exit code 70 when one is missing or differs."""
    from .models import packs

    try:
        found = packs.available(_settings().resolved_data())
    except FaceIndexError as e:
        raise _fail(e) from e
    problems: list[str] = []
    for p in found.values():
        bad = p.verify()
        problems += bad
        out.print(f"{p.name}: {'FAILED' if bad else 'ok'} ({len(p.files)} files)", markup=False, highlight=False)
    for line in problems:
        err.print(f"error: {line}", markup=False, highlight=False)
    if problems:
        raise typer.Exit(ModelError.exit_code)


@models_app.command("add")
def models_add(folder: Annotated[Path, typer.Argument(help="a folder with pack.toml, the ONNX file(s), the "
                                                              "calibration table")]) -> None:
    """Check a pack folder (hashes, shapes, a trial batch) and add it to this data folder's packs."""
    from .models import packs
    from .models.userpack import check_pack

    data = _settings().resolved_data()
    try:
        pack = check_pack(folder.expanduser().resolve())
        if pack.name in packs.user_packs(data):
            raise ModelError(f"a pack named {pack.name!r} is already installed in {data / packs.PACKS_DIR}")
        target = data / packs.PACKS_DIR / pack.name
        tmp = target.with_name(f".{pack.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(folder, tmp)
        tmp.rename(target)  # a half-copied pack is never seen
    except FaceIndexError as e:
        raise _fail(e) from e
    except OSError as e:
        raise _fail(ModelError(f"cannot copy the pack: {e}")) from e
    out.print(f"added model pack {pack.name} ({pack.key}); use it for a new index with --model {pack.name}",
              markup=False, highlight=False)


def reindex(
    model: Annotated[str, typer.Option("--model", help="the model pack to move the index to (faceindex models list)")],
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable report")] = False,
) -> None:
    """Re-embed every face into another model pack, keeping people and names; swapped in atomically.

    Reads every image again from its files (still on disk, same content); a killed run resumes where it stopped
    and the old model stays in use until the swap. Faces whose file is gone are removed and listed.
    """
    from .cli import _emit_json, _open, _progress, _tracker

    try:
        with _open() as fi, _progress(as_json) as bar:
            report = fi.reindex(model, progress=_tracker(bar, "re-embedding"))
    except FaceIndexError as e:
        raise _fail(e) from e
    if as_json:
        _emit_json(report)
    else:
        out.print(f"index moved from {report['from']} to {report['to']}: {report['faces']} faces re-embedded "
                  f"({report['found_again']} found again by the new detector, {report['reembedded_at_old_box']} "
                  f"at their old box); {report['new_faces_not_added']} faces only the new detector sees were not "
                  "added", markup=False, highlight=False)
        gone = report["faces_removed_file_gone"]
        if gone:
            err.print(f"{len(gone)} faces removed: their image's file is gone or changed", markup=False)
            for g in gone:
                err.print(f"  face {g['face_id']}: {g['path']}", markup=False, highlight=False)
    for ref in report["optouts_needing_photos"]:
        err.print(f"WARNING: opt-out {ref} has no template for model {report['model']} and is NOT enforced until "
                  f"its reference photos are given again: faceindex optout add PHOTOS --reference {ref}",
                  markup=False, highlight=False)
