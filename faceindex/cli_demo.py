"""`faceindex demo`: index the shipped sample photo, search and verify in it, and show the commands behind it."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer

from . import demo as sample
from .cli import LEADS_NOTICE, _fail, _fmr_text, _print_probe, _progress, _tracker, app, err, out, state
from .errors import FaceIndexError

DEFAULT_DATA = Path("faceindex-demo")


def _say(text: str = "") -> None:
    out.print(text, markup=False, highlight=False)


@app.command()
def demo(
    ctx: typer.Context,
    data: Annotated[Path | None, typer.Option("--data", "-d", help="data folder for the demo [default: "
                                                                    "./faceindex-demo]")] = None,
) -> None:
    """Index a public-domain sample photo shipped with faceindex (29 faces), then search and verify in it.

    Works offline, with no test data: the photo is copied into DATA/photos, probes cut from it go to DATA/probes,
    and the data folder is left for you to explore with the other commands.
    """
    parent = ctx.parent
    if data is None:  # `faceindex --data X demo` (or FACEINDEX_DATA) counts too
        source = parent.get_parameter_source("data") if parent is not None else None
        given = getattr(source, "name", "DEFAULT") not in ("DEFAULT", "DEFAULT_MAP")  # typer vendors click's enum
        data = state.settings.data if given else DEFAULT_DATA
    from .engine import FaceIndex

    d = shlex.quote(str(data))
    why = f"--purpose {sample.PURPOSE} --case {sample.CASE}"
    try:
        photo = sample.copy_sample(data)
        _say(f"faceindex demo: the 1927 Solvay conference photo (public domain, shipped with faceindex), "
             f"indexed into {data}/\n")
        _say(f"$ faceindex --data {d} add {shlex.quote(str(photo.parent))} --source demo")
        with FaceIndex(state.settings.model_copy(update={"data": data})) as fi:
            with _progress(False) as bar:
                report = fi.add([photo.parent], "demo", progress=_tracker(bar, "indexing"))
            _say(f"source 'demo': {report.images_indexed} images indexed, {report.unchanged} unchanged, "
                 f"{fi.stats()['faces']} faces in the index")
            probes = sample.make_probes(fi, photo, Path(data) / "probes")
            _say(f"\nA probe: the face at {probes.box.as_list()} of the photo, cut out, mirrored and enlarged 2x "
                 f"({probes.probe}),\nas another photo of that person would be. Search the index with it:")
            _say(f"$ faceindex --data {d} search {shlex.quote(str(probes.probe))} --top 3 {why}")
            floor = fi.calibration.fmr_floor
            for n, r in enumerate(fi.search(probes.probe, 3, purpose=sample.PURPOSE, case=sample.CASE)):
                _print_probe(r, n, floor)
            err.print(LEADS_NOTICE, style="dim")
            _say("\nVerify (1:1): the same face at another size, then someone else from the photo:")
            for other in (probes.same, probes.other):
                _say(f"$ faceindex --data {d} verify {shlex.quote(str(probes.probe))} {shlex.quote(str(other))} "
                     f"{why}")
                v = fi.verify(probes.probe, other, purpose=sample.PURPOSE, case=sample.CASE)
                _say(f"{probes.probe}  {other}  similarity {v.similarity:.4f}  FMR {_fmr_text(v.fmr, floor)}  "
                     f"-> {v.label}")
    except FaceIndexError as e:
        raise _fail(e) from e
    _say(f"\nEverything is in {data}/ (catalog, vector index, audit log, photos/, probes/). Explore it:")
    for cmd in ("stats", "people --min-faces 1", f"search {shlex.quote(str(probes.other))} --crops "
                f"{shlex.quote(str(Path(data) / 'review'))} {why}", "audit show", "audit verify"):
        _say(f"  faceindex --data {d} {cmd}")
    _say(f"  faceindex --data {d} keys create --role admin --name me && faceindex --data {d} serve   "
         "# the web page at http://127.0.0.1:8000/")
    _say("Index your own photos: faceindex add ~/photos --source family  (into ./faceindex-data)")
