"""`faceindex people ...`: group faces into people and list them, show one person's faces, name a person.

Every command here reveals faces or who they belong to, so each takes a purpose and a case and is audited by the
engine. The `people` group itself is made in cli.py (where its place among the commands is set); importing this
module registers its commands on it.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from .cli import Case, Purpose, _emit_json, _fail, _open, out, people_app
from .errors import FaceIndexError
from .text import shown


@people_app.callback(invoke_without_command=True)
def people(
    ctx: typer.Context,
    full: Annotated[bool, typer.Option(
        "--full", "--recluster",
        help="re-cluster every face (default: only faces added since the last run join or form people)")] = False,
    weakest: Annotated[bool, typer.Option(
        "--weakest", help="least cohesive people first (the groups most likely to mix two people: review these)")
    ] = False,
    min_faces: Annotated[int, typer.Option(min=1, help="list only people with at least this many faces")] = 2,
    limit: Annotated[int, typer.Option(min=1, help="list at most this many people")] = 50,
    purpose: Purpose = None,
    case: Case = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Group faces into people (new faces only, unless --full) and list them (audited). Names, merges and splits
    stay.

    'weakest link' is the false-match rate of the weakest merge that formed a group: the share of different-person
    pairs that are as similar. The higher it is, the more a reviewer should check the group."""
    if ctx.invoked_subcommand is not None:
        return
    with _open() as fi:
        if full or fi.catalog.get_meta("people_generation") != str(fi.catalog.generation):
            fi.cluster(full=full, purpose=purpose, case=case, limit=1)  # (listed below)
            with fi.catalog.transaction():
                fi.catalog.set_meta("people_generation", str(fi.catalog.generation))
        found = fi.people(limit, min_faces=min_faces, sort="weakest" if weakest else "size", purpose=purpose,
                           case=case)
    if as_json:
        _emit_json([{"id": p.id, "name": p.name, "faces": p.face_count, "images": p.image_count,
                     "cohesion": p.cohesion, "cohesion_fmr": p.cohesion_fmr} for p in found])
        return
    t = Table(show_edge=False)
    for c in ("person", "name", "faces", "images", "weakest link (FMR)"):
        t.add_column(c)
    for p in found:
        t.add_row(str(p.id), shown(p.name or "-"), str(p.face_count), str(p.image_count), _cohesion(p))
    out.print(t)


def _cohesion(p) -> str:
    return "-" if p.cohesion_fmr is None else f"{p.cohesion_fmr:.1e} (similarity {p.cohesion:.3f})"


@people_app.command("show")
def people_show(person_id: int, purpose: Purpose = None, case: Case = None,
                as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """A person's faces and the images they are in (audited)."""
    try:
        with _open() as fi:
            p, faces = fi.person(person_id, purpose=purpose, case=case)
    except FaceIndexError as e:
        raise _fail(e) from e
    if as_json:
        _emit_json({"id": p.id, "name": p.name, "cohesion": p.cohesion, "cohesion_fmr": p.cohesion_fmr, "faces": [
            {"face_id": f.id, "path": f.path, "source": f.source, "box": f.box.as_list(),
             "quality": round(f.quality, 3)} for f in faces]})
        return
    out.print(f"person {p.id} ({shown(p.name or 'unnamed')}): {p.face_count} faces in {p.image_count} images; "
              f"weakest link: FMR {_cohesion(p)}", markup=False, highlight=False)
    for f in faces:
        out.print(f"  face {f.id}  {shown(f.path)}  box {f.box.as_list()}  quality {f.quality:.2f}", markup=False,
                  highlight=False)


@people_app.command("name")
def people_name(person_id: int, name: str, purpose: Purpose = None, case: Case = None) -> None:
    """Give a person a name (kept when people are re-clustered; audited)."""
    try:
        with _open() as fi:
            fi.name_person(person_id, name, purpose=purpose, case=case)
    except FaceIndexError as e:
        raise _fail(e) from e
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e
    out.print(f"person {person_id} is now named {shown(name)!r}", markup=False, highlight=False)
