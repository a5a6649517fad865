"""`faceindex` command line: a thin shell over FaceIndex (Typer + rich)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from .cli_models import models_app
from .cli_models import reindex as _reindex
from .config import Settings
from .errors import EXIT_PARTIAL, FaceIndexError, NoFaceError, PolicyError
from .text import shown

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="Index the faces of your own photo collections and search them. Results are candidate "
                       "leads with calibrated false-match rates, never identifications.")
people_app = typer.Typer(help="Group faces into people, list them, show or name one.")
app.add_typer(people_app, name="people")
keys_app = typer.Typer(help="API keys for the server (stored hashed; a token is shown once).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(models_app, name="models")
app.command("reindex")(_reindex)

Purpose = Annotated[str | None, typer.Option(help="why this search is made (must be an allowed purpose)")]
Case = Annotated[str | None, typer.Option("--case", help="case or request reference, recorded in the audit trail")]

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

LEADS_NOTICE = ("Candidates are leads for a person to review, not identifications. A score's FMR is the share of "
                "different-person pairs that score as high (measured on LFW).")


class State:
    settings: Settings


state = State()


@app.callback()
def _root(
    data: Annotated[Path, typer.Option("--data", "-d", envvar="FACEINDEX_DATA", help="data folder")] = Path(
        "./faceindex-data"),
    catalog: Annotated[str | None, typer.Option(
        "--catalog", envvar="FACEINDEX_CATALOG",
        help="catalog URL: postgresql://USER@HOST/DB, or a SQLite file (default DATA/catalog.db)")] = None,
    detector: Annotated[str | None, typer.Option(help="face detector: hog (fast) or cnn (finds more faces)")] = None,
    backend: Annotated[str | None, typer.Option(help="embedding runtime: auto, onnx or dlib")] = None,
    model: Annotated[str | None, typer.Option(help="model pack of a new index (faceindex models list); an "
                                                   "existing index keeps its own")] = None,
    vectors: Annotated[str | None, typer.Option(help="vector store: milvus://host:port[/prefix] (default: the "
                                                     "FAISS file in the data folder; FACEINDEX_VECTORS)")] = None,
) -> None:
    overrides: dict = {"data": data}
    if catalog is not None:
        overrides["catalog"] = catalog
    if vectors is not None:
        overrides["vectors"] = vectors
    if model is not None:
        overrides["model"] = model
    if detector is not None:
        overrides["detector"] = detector
    if backend is not None:
        overrides["backend"] = backend
    try:
        state.settings = Settings(**overrides)
    except ValueError as e:
        raise typer.BadParameter(str(e).splitlines()[-1] if str(e) else "bad setting") from e


def _open():
    from .engine import FaceIndex

    return FaceIndex(state.settings)


def _fail(e: FaceIndexError) -> typer.Exit:
    err.print(f"error: {shown(e)}", markup=False, highlight=False)
    return typer.Exit(e.exit_code)


def _emit_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


# --- add ---------------------------------------------------------------------------------------------------------
@app.command()
def add(
    paths: Annotated[list[Path], typer.Argument(help="image files or folders (recursive)")],
    source: Annotated[str, typer.Option("--source", "-s", help="name of the registered source")] = "default",
    workers: Annotated[int | None, typer.Option("--workers", "-j", min=1, help="processes (default: all cores)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print a machine-readable summary")] = False,
    ray: Annotated[str | None, typer.Option(
        "--ray", help="analyse on a Ray cluster: auto or HOST:PORT of its head (FACEINDEX_RAY); -j is then ignored")] = None,
) -> None:
    """Index every face in every image under PATHS; only new or changed files are processed."""
    try:
        with _open() as fi, _progress(as_json) as bar:
            report = fi.add(paths, source, workers=workers, progress=_tracker(bar, "indexing"), ray=ray)
    except FaceIndexError as e:
        raise _fail(e) from e
    if as_json:
        _emit_json(report.as_dict())
    else:
        d = report.as_dict()
        out.print(f"source {report.source!r}: {report.files_seen} files seen, {report.images_indexed} images indexed "
                  f"({d['images_per_second'] or 0} images/s), {report.unchanged} unchanged, "
                  f"{report.moved_or_copied} moved or copied, {report.faces_found} faces found, "
                  f"{report.images_without_faces} images without a face, {len(report.errors)} errors",
                  markup=False, highlight=False)
        for e in report.errors:
            err.print(f"  failed: {e.path}: {e.reason}", markup=False, highlight=False)
    if report.errors:
        raise typer.Exit(EXIT_PARTIAL)


class _RateColumn(ProgressColumn):
    def render(self, task) -> Text:
        return Text(f"{task.speed or 0:6.1f} img/s")


def _tracker(bar: Progress, description: str):
    """An engine progress callback that drives one task of `bar` (files, faces found, errors)."""
    task = bar.add_task("scanning", total=None, faces=0, errors=0)
    totals = {"faces": 0, "errors": 0}

    def on(event: str, info: dict) -> None:
        if event == "scan":
            bar.update(task, total=info["files"], description=description)
        elif event == "file":
            totals["faces"] += info.get("faces", 0)
            totals["errors"] += 1 if info.get("error") else 0
            bar.update(task, advance=1, **totals)

    return on


def _progress(disabled: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        _RateColumn(),
        TextColumn("faces {task.fields[faces]}  errors {task.fields[errors]}"), TimeElapsedColumn(),
        console=err, disable=disabled, transient=False,
    )


# --- search / verify ---------------------------------------------------------------------------------------------
@app.command()
def search(
    probes: Annotated[list[Path], typer.Argument(help="one or more probe images")],
    top: Annotated[int, typer.Option("--top", "-k", min=1, max=1000, help="candidates per face")] = 10,
    largest: Annotated[bool, typer.Option(help="search only the largest face of each probe")] = False,
    include_low_quality: Annotated[bool, typer.Option(help="also return faces below the quality bar")] = False,
    crops: Annotated[Path | None, typer.Option(help="write probe and candidate face crops to this folder")] = None,
    purpose: Purpose = None,
    case: Case = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Ranked candidate leads for each face in each probe image (audited: needs --purpose and --case)."""
    from .engine import crop_jpeg

    results_json = []
    failed = 0
    with _open() as fi:
        model = fi.pack.name
        for probe in probes:
            try:
                results = fi.search(probe, top, purpose=purpose, case=case, largest=largest,
                                    include_low_quality=include_low_quality)
            except PolicyError as e:
                raise _fail(e) from e
            except FaceIndexError as e:
                failed = failed or e.exit_code
                err.print(f"error: {shown(e)}", markup=False, highlight=False)
                results_json.append({"probe": str(probe), "error": str(e), "code": type(e).__name__})
                continue
            for n, r in enumerate(results):
                if crops is not None:
                    _write_crops(fi, crops, probe, n, r, crop_jpeg, purpose, case)
                if as_json:
                    results_json.append(_probe_json(r, n))
                else:
                    _print_probe(r, n, fi.calibration.fmr_floor)
    if as_json:
        _emit_json({"notice": LEADS_NOTICE, "model": model, "results": results_json})
    else:
        err.print(f"{LEADS_NOTICE} Embeddings: model pack {model}.", style="dim")
    if failed:
        raise typer.Exit(failed)


def _write_crops(fi, folder: Path, probe: Path, n: int, r, crop_jpeg, purpose: str | None, case: str | None) -> None:
    from . import images

    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{probe.stem}_face{n}"
    pixels = images.load(probe, max_pixels=fi.settings.max_pixels, max_bytes=fi.settings.max_file_bytes).pixels
    (folder / f"{stem}_probe.jpg").write_bytes(crop_jpeg(pixels, r.face.box))
    for m in r.matches:
        try:
            (folder / f"{stem}_rank{m.rank:02d}_face{m.face_id}.jpg").write_bytes(
                fi.face_crop(m.face_id, purpose=purpose, case=case))
        except FaceIndexError as e:
            err.print(f"  no crop for face {m.face_id}: {e}", markup=False, highlight=False)


def _fmr_text(fmr: float, floor: float = 0.0) -> str:
    """'1 in N'; '< 1 in N' at the calibration table's resolution (no impostor pair scored that high)."""
    if fmr <= 0:
        return "0"
    return f"{'< ' if fmr <= floor * 1.0001 else ''}1 in {1 / fmr:,.0f}"


def _probe_json(r, n: int) -> dict:
    return {
        "probe": r.probe, "face": n, "box": r.face.box.as_list(), "quality": r.face.quality.as_dict(),
        "gallery_size": r.gallery_size, "expected_false_candidates": r.expected_false_candidates,
        "candidates": [{
            "rank": m.rank, "face_id": m.face_id, "similarity": round(m.similarity, 5), "fmr": m.fmr,
            "expected_false": m.expected_false, "label": m.label, "path": m.path, "source": m.source,
            "box": m.box.as_list(), "image_id": m.image_id, "person_id": m.person_id, "person_name": m.person_name,
        } for m in r.matches],
    }


def _print_probe(r, n: int, floor: float) -> None:
    q = r.face.quality
    out.print(f"\n{r.probe} face {n} at {r.face.box.as_list()} (quality {q.score:.2f}): gallery {r.gallery_size} "
              f"faces; about {r.expected_false_candidates:.2f} false candidates expected per search at the "
              f"'possible candidate' bar", markup=False, highlight=False)
    if not r.matches:
        out.print("  no faces in the gallery")
    for m in r.matches:
        who = shown(m.person_name) if m.person_name else (f"person {m.person_id}" if m.person_id else "no person")
        out.print(f"  {m.rank:>2}. {m.similarity:.4f}  FMR {_fmr_text(m.fmr, floor):<16} "
                  f"expected false {m.expected_false:<8.3g} {m.label:<18}  {who}  [{shown(m.source)}] {shown(m.path)}  "
                  f"box {m.box.as_list()}", markup=False, highlight=False)


@app.command()
def verify(
    a: Annotated[Path | None, typer.Argument(help="first image")] = None,
    b: Annotated[Path | None, typer.Argument(help="second image")] = None,
    pairs: Annotated[Path | None, typer.Option(help="file with two image paths per line (tab or space)")] = None,
    face_a: Annotated[int | None, typer.Option(min=0, help="face number in A (default: largest)")] = None,
    face_b: Annotated[int | None, typer.Option(min=0, help="face number in B (default: largest)")] = None,
    purpose: Purpose = None,
    case: Case = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Compare the largest face of two images (or many pairs with --pairs), with score and false-match rate."""
    if pairs is None and (a is None or b is None):
        raise typer.BadParameter("give two images, or --pairs FILE")
    if pairs is not None and (a is not None or b is not None):
        raise typer.BadParameter("give either two images or --pairs, not both")
    todo: list[tuple[str, str]] = []
    if pairs is not None:
        try:
            lines = pairs.read_text().splitlines()
        except OSError as e:
            raise typer.BadParameter(f"cannot read {pairs}: {e.strerror}") from e
        for i, line in enumerate(lines, 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            parts = line.split("\t") if "\t" in line else line.split()
            if len(parts) != 2:
                raise typer.BadParameter(f"{pairs}:{i}: expected two paths, got {len(parts)}")
            todo.append((parts[0].strip(), parts[1].strip()))
    else:
        todo.append((str(a), str(b)))
    rows, failed = [], 0
    with _open() as fi:
        floor = fi.calibration.fmr_floor
        for pa, pb in todo:
            try:
                v = fi.verify(pa, pb, purpose=purpose, case=case, face_a=face_a, face_b=face_b)
                rows.append({"a": pa, "b": pb, "similarity": round(v.similarity, 5), "fmr": v.fmr,
                             "decision": v.label, "same_person_candidate": v.same, "model": fi.pack.name})
            except PolicyError as e:
                raise _fail(e) from e
            except FaceIndexError as e:
                failed = failed or e.exit_code
                rows.append({"a": pa, "b": pb, "error": str(e), "code": type(e).__name__})
    if as_json:
        _emit_json(rows if pairs is not None else rows[0])
    else:
        for r in rows:
            if "error" in r:
                err.print(f"error: {r['a']} / {r['b']}: {r['error']}", markup=False, highlight=False)
            else:
                out.print(f"{r['a']}  {r['b']}  similarity {r['similarity']:.4f}  FMR {_fmr_text(r['fmr'], floor)}  "
                          f"-> {r['decision']}", markup=False, highlight=False)
    if failed:
        raise typer.Exit(failed)


# --- remove / stats ----------------------------------------------------------------------------------------------
@app.command()
def remove(
    path: Annotated[Path, typer.Argument(help="file or folder to forget")],
    source: Annotated[str | None, typer.Option("--source", "-s", help="only in this source")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Forget images: their files, faces, embeddings and index entries."""
    try:
        with _open() as fi:
            res = fi.remove(path, source)
    except FaceIndexError as e:
        raise _fail(e) from e
    if as_json:
        _emit_json(res)
    else:
        out.print(f"removed {res['files']} files, {res['images']} images, {res['faces']} faces", markup=False)


@app.command()
def stats(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Images, faces, people, sources, model, index kind and disk size."""
    try:
        with _open() as fi:
            s = fi.stats()
    except FaceIndexError as e:
        raise _fail(e) from e
    if as_json:
        _emit_json(s)
        return
    t = Table(show_header=False, show_edge=False)
    for k, v in s.items():
        if k == "sources_list":
            v = ", ".join(f"{shown(x['name'])} ({x['files']} files)" for x in v) or "-"
        elif k == "disk_bytes":
            k, v = "disk", f"{v / 1e6:.1f} MB"
        t.add_row(k, str(v))
    out.print(t)

@app.command()
def evaluate(
    folder: Annotated[Path, typer.Argument(help="labelled photos: one sub-folder per person")],
    out_dir: Annotated[Path, typer.Option("--out", help="where to write evaluation.json and .png")] = Path("evaluation"),
    write_calibration: Annotated[bool, typer.Option(help="make this index use the measured calibration")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Measure the model on your own labelled data: ROC/DET, TAR at FAR, open-set FNIR at FPIR."""
    with _open() as fi, _progress(as_json) as bar:
        r = fi.evaluate(folder, out_dir, write_calibration=write_calibration, progress=_tracker(bar, "embedding"))
    if as_json:
        _emit_json({k: v for k, v in r.items() if k not in ("curves", "histogram")})
        return
    c, v = r["counts"], r["verification"]
    out.print(f"{c['embedded']} images of {c['people_embedded']} people embedded ({c['failures']} failed); "
              f"{c['genuine_pairs']} same-person and {c['impostor_pairs']} different-person pairs", markup=False)
    out.print(f"EER {v['eer'] * 100:.2f}%", markup=False)
    for t in v["tar_at_far"]:
        out.print(f"TAR at FAR {t['far']:g}: " + (f"{t['tar'] * 100:.2f}%" if t["resolved"] else "not measurable"),
                  markup=False)
    if r.get("kfold"):
        out.print(f"verification accuracy ({r['kfold']['folds']}-fold): {r['kfold']['accuracy'] * 100:.2f}%", markup=False)
    o = r.get("open_set", {})
    if "rank1" in o:
        out.print(f"open-set: rank-1 {o['rank1'] * 100:.2f}%, FNIR at FPIR 1% {o['fnir_at_fpir_1pct'] * 100:.2f}%",
                  markup=False)
    for w in r["warnings"]:
        err.print(f"warning: {w}", markup=False, highlight=False)
    out.print(f"wrote {r['outputs']['json']} and {r['outputs']['png']}"
              + (" and installed the calibration" if write_calibration else ""), markup=False)

# --- server ----------------------------------------------------------------------------------------------------
@app.command()
def serve(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    ingest_root: Annotated[list[Path] | None, typer.Option(help="server-side folder the API may ingest from")] = None,
) -> None:
    """Serve the REST API (/v1, OpenAPI at /docs) and the web page (/) over the data folder."""
    import uvicorn

    from .server.app import create_app

    settings = state.settings
    if ingest_root:
        settings = settings.model_copy(update={"ingest_roots": [p.resolve() for p in ingest_root]})
    web = create_app(settings)
    if not any(k["role"] == "admin" and not k["revoked_at"] for k in web.state.engine.catalog.keys()):  # noqa: SIM118 (a method)
        # first run: nobody can sign in to the web page until an admin key exists
        err.print(f"No admin API key yet. Create the first one (its token is shown once), then sign in at "
                  f"http://{host}:{port}/ with it:\n  faceindex --data {shown(str(web.state.engine.data))} keys "
                  f"create --role admin --name admin", markup=False, highlight=False)
    # Slow clients cannot hold connections for ever: idle keep-alives close after 5 s and connections beyond
    # max_connections get 503. Header and body read timeouts belong to a reverse proxy (docs/security.md).
    uvicorn.run(web, host=host, port=port, log_level="info", access_log=False,
                timeout_keep_alive=5, limit_concurrency=settings.max_connections)


def main() -> None:
    """Entry point: map faceindex errors to one-line messages and exit codes, never tracebacks."""
    try:
        app()
    except NoFaceError as e:
        err.print(f"error: {shown(e)}", markup=False, highlight=False)
        sys.exit(e.exit_code)
    except FaceIndexError as e:
        err.print(f"error: {shown(e)}", markup=False, highlight=False)
        sys.exit(e.exit_code)
    except ValueError as e:  # bad parameters reaching the engine
        err.print(f"error: {shown(e)}", markup=False, highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted; everything indexed so far is kept")
        sys.exit(130)


# the other commands live in their own modules; importing them registers them on `app`
from . import cli_accountability, cli_demo, cli_migrate, cli_people  # noqa: E402, F401, I001
