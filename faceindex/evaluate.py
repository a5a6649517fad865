"""Measure the model on the operator's own labelled photos: verification, identification, calibration.

A labelled folder holds one sub-folder per person with that person's images inside. Every image contributes the
embedding of its largest face; images without a face, or that cannot be read, are counted as failures and never
stop the run. From the embeddings come: all same-person (genuine) and different-person (impostor) pair scores,
ROC and DET curves, TAR at FAR 1e-3 / 1e-4 (flagged when a FAR is finer than 1 / impostor pairs can resolve),
the EER, k-fold verification accuracy, open-set 1:N identification (rank-1, FNIR at FPIR = 1%), and a calibration
table that can replace the shipped one for this operator's data (`write_calibration`).

This module reads and embeds the folder, runs the metrics, writes the results and the plot. The metric functions
are pure (names + L2-normalised embeddings, or score arrays in) and live in `eval_metrics.py`; they are
re-exported here, so that benchmarks/lfw.py and the tests share them.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from . import images
from .calibration import POSSIBLE, STRONG, Calibration
from .config import Settings
from .errors import EvaluationError
from .eval_metrics import KFOLD_MAX_PAIRS as KFOLD_MAX_PAIRS  # re-exported with read_pairs: callers import them here
from .eval_metrics import (
    MAX_IMPOSTOR_PAIRS,
    Curves,
    _sig,
    all_pair_scores,
    eer,
    error_curves,
    open_set,
    pair_counts,
    sample_pairs,
    tar_at_far,
    verification_accuracy,
)
from .eval_metrics import read_pairs as read_pairs
from .models import packs
from .pipeline import FileFailure, ImageResult, analyse_files

Progress = Callable[[str, dict], None]  # (event, info), the same events as FaceIndex.add: "scan", "file"

FARS = (1e-3, 1e-4)
CALIBRATION_FMRS = (1e-2, 1e-3, 1e-4, 1e-5, 1e-6)


# --- labelled data ---------------------------------------------------------------------------------------------
def load_labelled(folder: str | os.PathLike) -> list[tuple[str, Path]]:
    """(person, image path) for every image of every person sub-folder of `folder` (recursively, sorted).

    Files directly in `folder` and hidden sub-folders are ignored. Raises EvaluationError unless there are at least
    two people and at least one person with two or more images (no same-person pair could be formed otherwise).
    """
    root = Path(folder)
    if not root.is_dir():
        raise EvaluationError(f"labelled folder not found: {root}")
    items: list[tuple[str, Path]] = []
    counts: dict[str, int] = {}
    for sub in sorted(root.iterdir()):
        if sub.name.startswith(".") or not sub.is_dir():
            continue
        files, _problems = images.iter_image_files(sub)
        files = [f for f in files if f.suffix.lower() in images.IMAGE_SUFFIXES]
        if files:
            counts[sub.name] = len(files)
            items += [(sub.name, f) for f in files]
    if len(counts) < 2:
        raise EvaluationError(
            f"{root} has {len(counts)} person folder(s) with images; evaluation needs at least 2 "
            "(one sub-folder per person, that person's images inside)")
    if max(counts.values()) < 2:
        raise EvaluationError(
            f"no person folder in {root} has 2 or more images; same-person pairs need at least one such person")
    return items


def embed_labelled(items: Sequence[tuple[str, Path]], settings: Settings, workers: int,
                   progress: Progress | None = None) -> tuple[list[str], np.ndarray, list[FileFailure]]:
    """(names, embeddings, failures): the largest face of each image; no face or a bad file is a failure."""
    emit = progress or (lambda _event, _info: None)
    emit("scan", {"files": len(items)})
    names: list[str] = []
    vecs: list[np.ndarray] = []
    failures: list[FileFailure] = []
    person_of = {str(p): person for person, p in items}
    for res in analyse_files(list(person_of), settings, max(1, workers)):  # results come as they complete
        person = person_of[res.path]
        if isinstance(res, ImageResult) and res.faces:
            names.append(person)
            vecs.append(res.faces[0].embedding)  # faces come largest first
            emit("file", {"path": res.path, "faces": len(res.faces)})
        else:
            reason = res.reason if isinstance(res, FileFailure) else "no face found"
            failures.append(FileFailure(res.path, reason))
            emit("file", {"path": res.path, "faces": 0, "error": True})
    dim = packs.get(settings.model or packs.DEFAULT, settings.resolved_data()).dim
    emb = np.stack(vecs).astype(np.float32) if vecs else np.zeros((0, dim), np.float32)
    return names, emb, failures


# --- the whole evaluation --------------------------------------------------------------------------------------
def evaluate(folder: str | os.PathLike, settings: Settings, out_dir: str | os.PathLike,
             workers: int | None = None, progress: Progress | None = None,
             max_impostor: int = MAX_IMPOSTOR_PAIRS) -> dict:
    """Evaluate the model on a labelled folder; write out_dir/evaluation.json and evaluation.png; return the JSON.

    The result's "calibration" → "table" is a calibration table for these settings and this data: install it with
    `write_calibration(Calibration.from_json(result["calibration"]["table"]), data_dir)`.
    """
    t0 = time.perf_counter()
    folder = Path(folder)
    out = Path(out_dir)
    items = load_labelled(folder)
    names, emb, failures = embed_labelled(items, settings, workers or settings.workers, progress)
    t_embed = time.perf_counter() - t0
    g_total, i_total = pair_counts(names)
    if g_total == 0 or i_total == 0:
        raise EvaluationError(
            f"after {len(failures)} of {len(items)} images failed (no face or unreadable), "
            f"{len(set(names))} people remain and there are {g_total} same-person and {i_total} different-person "
            "pairs; evaluation needs at least one of each")
    gen, imp = all_pair_scores(names, emb, max_impostor)
    curves = error_curves(gen, imp)
    e, e_t = eer(gen, imp)
    tars = [tar_at_far(gen, imp, f) for f in FARS]

    folds = sample_pairs(names)
    kfold = None
    if folds:
        acc, std, th = verification_accuracy(folds, lambda i, j: float(emb[i] @ emb[j]))
        kfold = {"folds": len(folds), "pairs": sum(len(f) for f in folds), "accuracy": acc, "std": std,
                 "mean_threshold": th}
    try:
        ident = open_set(names, emb, np.random.default_rng(0))
    except EvaluationError as err:
        ident = {"skipped": str(err)}

    key = packs.get(settings.model or packs.DEFAULT, settings.resolved_data()).key
    cal = Calibration.from_scores(
        key, gen, imp,
        source=f"operator data {folder.name}: {len(names)} images of {len(set(names))} people, "
               f"{_settings_tag(settings)}, {time.strftime('%Y-%m-%d')}")
    cal_points = []
    for f in CALIBRATION_FMRS:
        t = cal.threshold_for(f)
        cal_points.append({"fmr": f, "similarity": t, "fnmr": cal.fnmr_at(t), "resolved": f >= cal.fmr_floor})
    warnings = [t["note"] for t in tars if not t["resolved"]]
    if cal.fmr_floor > cal.strong_fmr:
        labels = f"'{STRONG}'" + (f" or '{POSSIBLE}'" if cal.fmr_floor > cal.possible_fmr else "")
        warnings.append(
            f"the calibration table resolves FMR only down to {cal.fmr_floor:.2g} ({len(imp)} impostor pairs): "
            f"installed, it lets no score be labelled {labels} (FMR <= {cal.strong_fmr:g} / {cal.possible_fmr:g})")

    per_person = np.unique(np.asarray(names), return_counts=True)[1]
    result = {
        "folder": str(folder.resolve()),
        "model": key,
        "settings": _settings_dict(settings),
        "counts": {
            "people": len({p for p, _ in items}),
            "images": len(items),
            "embedded": len(names),
            "failures": len(failures),
            "people_embedded": len(per_person),
            "people_with_2plus_images": int((per_person >= 2).sum()),
            "single_image_people": int((per_person == 1).sum()),
            "genuine_pairs": len(gen),
            "impostor_pairs": len(imp),
            "impostor_pairs_total": i_total,
            "impostor_subsampled": len(imp) < i_total,
        },
        "verification": {
            "eer": e, "eer_threshold": e_t,
            "fmr_resolution": 1.0 / len(imp),
            "tar_at_far": tars,
        },
        "kfold": kfold,
        "open_set": ident,
        "calibration": {"impostor_pairs": cal.impostor_pairs, "genuine_pairs": cal.genuine_pairs,
                        "fmr_floor": cal.fmr_floor, "thresholds": cal_points, "table": cal.to_json()},
        "curves": curves.to_json(),
        "histogram": _histogram(gen, imp),
        "failures": [{"path": f.path, "reason": f.reason} for f in failures],
        "warnings": warnings,
        "seconds": {"embedding": round(t_embed, 2)},
    }
    out.mkdir(parents=True, exist_ok=True)
    png = out / "evaluation.png"
    plot(result, curves, gen, imp, png)
    result["outputs"] = {"json": str(out / "evaluation.json"), "png": str(png)}
    result["seconds"]["total"] = round(time.perf_counter() - t0, 2)
    _write_atomic(out / "evaluation.json", json.dumps(result, indent=1))
    return result


def write_calibration(cal: Calibration, data_dir: str | os.PathLike) -> Path:
    """Install `cal` as data_dir/calibration.json, which the engine prefers to the shipped table."""
    path = Path(data_dir) / "calibration.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(path, json.dumps(cal.to_json(), indent=0))
    return path


# --- plot ------------------------------------------------------------------------------------------------------
def plot(result: dict, curves: Curves, genuine: np.ndarray, impostor: np.ndarray, path: Path) -> None:
    """ROC (log FMR), DET (log-log), genuine/impostor histograms and a summary panel, as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # no pyplot: no global backend state
    from matplotlib.figure import Figure

    c = result["counts"]
    v = result["verification"]
    floor = v["fmr_resolution"]
    fig = Figure(figsize=(14, 10.5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    (roc, det), (hist, text) = fig.subplots(2, 2)
    fig.suptitle(f"faceindex evaluation of {Path(result['folder']).name}: {c['embedded']} images of "
                 f"{c['people_embedded']} people, model {result['model']}", fontsize=14)
    tars = [t for t in v["tar_at_far"] if t["resolved"]]
    marks = ["o", "s", "D", "^"]
    colours = ["tab:red", "tab:purple", "tab:brown", "tab:olive"]

    # ROC
    ok = curves.fmr > 0
    roc.semilogx(curves.fmr[ok], curves.tar[ok], color="tab:blue", lw=2, label="ROC")
    roc.axvspan(floor / 10, floor, color="0.85", label=f"below resolution (1/{c['impostor_pairs']} impostor pairs)")
    lo_tar = float(curves.tar[ok].min()) if ok.any() else 0.0
    for t, mk, col in zip(tars, marks, colours):
        roc.plot([t["far"]], [t["tar"]], mk, color=col, ms=9,
                 label=f"TAR {t['tar'] * 100:.2f}% at FAR {t['far']:g} (score >= {t['threshold']:.3f})")
    roc.set_xlim(floor / 10, 1.0)
    roc.set_ylim(max(0.0, lo_tar - 0.02), 1.005)
    roc.set_xlabel("False match rate (FMR), log scale")
    roc.set_ylabel("True accept rate (TAR = 1 - FNMR)")
    roc.set_title("ROC: same-person pairs accepted vs different-person pairs accepted")
    roc.grid(True, which="both", alpha=0.3)
    roc.legend(loc="lower right", fontsize=9)

    # DET
    ok = (curves.fmr > 0) & (curves.fnmr > 0)
    det.loglog(curves.fmr[ok], curves.fnmr[ok], color="tab:blue", lw=2, label="DET")
    fnmr_floor = 1.0 / max(1, c["genuine_pairs"])
    det.plot([floor / 10, 1], [floor / 10, 1], ls="--", color="0.5", lw=1, label="FMR = FNMR")
    if v["eer"] > 0:
        det.plot([v["eer"]], [v["eer"]], "*", color="tab:green", ms=14,
                 label=f"EER {v['eer'] * 100:.2f}% (score {v['eer_threshold']:.3f})")
    for t, mk, col in zip(tars, marks, colours):
        if t["tar"] < 1:
            det.plot([t["far"]], [1 - t["tar"]], mk, color=col, ms=9, label=f"FNMR at FAR {t['far']:g}")
    if not ok.any():
        det.text(0.5, 0.5, "FNMR is 0 wherever FMR > 0:\nno errors to draw on a log scale",
                 transform=det.transAxes, ha="center", va="center", fontsize=11)
    det.axvspan(floor / 10, floor, color="0.85")
    det.set_xlim(floor / 10, 1.0)
    det.set_ylim(fnmr_floor / 2, 1.0)
    det.set_xlabel("False match rate (FMR), log scale")
    det.set_ylabel("False non-match rate (FNMR), log scale")
    det.set_title("DET: both error rates (lower left is better)")
    det.grid(True, which="both", alpha=0.3)
    det.legend(loc="lower left", fontsize=9)

    # histograms
    h = result["histogram"]
    edges = np.asarray(h["edges"])
    hist.stairs(h["impostor"], edges, fill=True, alpha=0.45, color="tab:orange",
                label=f"different people (impostor), {c['impostor_pairs']} pairs")
    hist.stairs(h["genuine"], edges, fill=True, alpha=0.45, color="tab:blue",
                label=f"same person (genuine), {c['genuine_pairs']} pairs")
    for t, col in zip(tars, colours):
        hist.axvline(t["threshold"], color=col, ls="--", lw=1.5, label=f"threshold at FAR {t['far']:g}")
    hist.axvline(v["eer_threshold"], color="tab:green", ls=":", lw=1.5, label="EER threshold")
    hist.set_xlabel("Cosine similarity of the two faces")
    hist.set_ylabel("Share of pairs per bin")
    hist.set_title("Score distributions: same person vs different people")
    hist.legend(loc="upper left", fontsize=9)
    hist.grid(True, alpha=0.3)

    # summary
    text.axis("off")
    text.set_title("Summary", loc="left")
    text.text(0.0, 1.0, "\n".join(_summary_lines(result)), va="top", ha="left", family="monospace", fontsize=10,
              transform=text.transAxes)
    fig.savefig(path, format="png")


def _summary_lines(r: dict) -> list[str]:
    c, v, k, o = r["counts"], r["verification"], r["kfold"], r["open_set"]
    lines = [
        f"images        {c['images']} in {c['people']} people; {c['embedded']} embedded, {c['failures']} failed",
        f"pairs         {c['genuine_pairs']} same-person, {c['impostor_pairs']} different-person"
        + (f" (sampled from {c['impostor_pairs_total']})" if c["impostor_subsampled"] else ""),
        f"EER           {v['eer'] * 100:.2f}%  at score {v['eer_threshold']:.4f}",
    ]
    for t in v["tar_at_far"]:
        what = (f"{t['tar'] * 100:.2f}%  at score >= {t['threshold']:.4f}" if t["resolved"]
                else f"not measurable (resolution {t['resolution']:.2g})")
        lines.append(f"TAR@FAR {t['far']:<6g} {what}")
    if k:
        lines.append(f"{k['folds']}-fold acc.  {k['accuracy'] * 100:.2f}% +- {k['std'] * 100:.2f} ({k['pairs']} pairs)")
    if "skipped" in o:
        lines.append(f"open-set 1:N  skipped: {o['skipped']}")
    else:
        lines += [f"open-set 1:N  gallery {o['gallery']}, {o['mated_probes']} mated and "
                  f"{o['nonmated_probes']} non-mated probes",
                  f"              rank-1 {o['rank1'] * 100:.2f}%, FNIR at FPIR 1% {o['fnir_at_fpir_1pct'] * 100:.2f}%"
                  + ("" if o["fpir_resolved"] else " (< 100 non-mated)")]
    lines.append("calibration   FMR -> similarity threshold, FNMR")
    for p in r["calibration"]["thresholds"]:
        lines.append(f"  {p['fmr']:<8g}  {p['similarity']:.4f}  {p['fnmr'] * 100:6.2f}%"
                     + ("" if p["resolved"] else "  (below resolution)"))
    lines += ["", "Scores are leads, never identifications."]
    return lines


# --- helpers ---------------------------------------------------------------------------------------------------
def _histogram(gen: np.ndarray, imp: np.ndarray, bins: int = 80) -> dict:
    lo = float(min(gen.min(), imp.min()))
    hi = float(max(gen.max(), imp.max()))
    edges = np.linspace(lo, hi if hi > lo else lo + 1e-6, bins + 1)
    g = np.histogram(gen, edges)[0] / len(gen)
    i = np.histogram(imp, edges)[0] / len(imp)
    return {"edges": _sig(edges), "genuine": _sig(g), "impostor": _sig(i)}


def _settings_dict(s: Settings) -> dict:
    return {k: getattr(s, k) for k in ("model", "detector", "backend", "flip", "upsample", "min_face",
                                       "detect_max_side")}


def _settings_tag(s: Settings) -> str:
    return f"{s.model or packs.DEFAULT}, {s.detector}, {s.backend}, {'flip' if s.flip else 'no flip'}"


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
