"""Measure the model on the operator's own labelled photos: verification, identification, calibration.

A labelled folder holds one sub-folder per person with that person's images inside. Every image contributes the
embedding of its largest face; images without a face, or that cannot be read, are counted as failures and never
stop the run. From the embeddings come: all same-person (genuine) and different-person (impostor) pair scores,
ROC and DET curves, TAR at FAR 1e-3 / 1e-4 (flagged when a FAR is finer than 1 / impostor pairs can resolve),
the EER, k-fold verification accuracy, open-set 1:N identification (rank-1, FNIR at FPIR = 1%), and a calibration
table that can replace the shipped one for this operator's data (`write_calibration`).

The metric functions are pure (names + L2-normalised embeddings, or score arrays in), so that benchmarks/lfw.py
and the tests share them.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import images
from .calibration import POSSIBLE, STRONG, Calibration
from .config import Settings
from .errors import EvaluationError
from .models import packs
from .pipeline import FileFailure, ImageResult, analyse_files

Progress = Callable[[str, dict], None]  # (event, info), the same events as FaceIndex.add: "scan", "file"

FARS = (1e-3, 1e-4)
MAX_IMPOSTOR_PAIRS = 20_000_000  # ~80 MB of float32 scores; resolves FMR down to 5e-8
KFOLD_MAX_PAIRS = 6000  # like LFW's pairs.txt: half same-person, half different-person
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


# --- pair scores -----------------------------------------------------------------------------------------------
def pair_counts(names: Sequence[str]) -> tuple[int, int]:
    """(same-person pairs, different-person pairs) among `names`."""
    _, sizes = np.unique(np.asarray(names), return_counts=True)
    n = len(names)
    genuine = int(sum(int(c) * (int(c) - 1) // 2 for c in sizes))
    return genuine, n * (n - 1) // 2 - genuine


def all_pair_scores(names: Sequence[str], emb: np.ndarray,
                    max_impostor: int = MAX_IMPOSTOR_PAIRS) -> tuple[np.ndarray, np.ndarray]:
    """Genuine scores (all same-person pairs) and impostor scores (all different-person pairs, up to a cap).

    Pairs are taken row by row (i < j) from a chunked matmul. Above the cap, every k-th impostor pair of that order
    is kept (k = ceil(impostor pairs / cap)), so the sample is deterministic and spread over all people.
    """
    if len(names) != len(emb):
        raise ValueError(f"{len(names)} names for {len(emb)} embeddings")
    labels = np.unique(np.asarray(names), return_inverse=True)[1]
    emb = np.asarray(emb, np.float32)
    n = len(emb)
    _, total_imp = pair_counts(names)
    keep = max(1, math.ceil(total_imp / max(1, max_impostor)))
    step = max(1, min(n, 16_000_000 // max(1, n)))  # rows per block: ~64 MB of float32 scores
    gen, imp = [], []
    seen = 0  # impostor pairs passed so far, for the global stride
    for s in range(0, n, step):
        e = min(n, s + step)
        block = emb[s:e] @ emb[s:].T  # columns s.. only: the upper triangle of these rows
        upper = np.arange(s, n)[None, :] > np.arange(s, e)[:, None]
        same = labels[s:e, None] == labels[None, s:]
        gen.append(block[upper & same])
        rest = block[upper & ~same]
        imp.append(rest[(-seen) % keep::keep] if keep > 1 else rest)
        seen += len(rest)
    empty = np.zeros(0, np.float32)
    return (np.concatenate(gen) if gen else empty), (np.concatenate(imp) if imp else empty)


# --- verification metrics --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Curves:
    """FMR and FNMR over ascending thresholds (accept when score >= threshold); TAR = 1 - FNMR."""

    threshold: np.ndarray
    fmr: np.ndarray  # non-increasing
    fnmr: np.ndarray  # non-decreasing

    @property
    def tar(self) -> np.ndarray:
        return 1.0 - self.fnmr

    def to_json(self) -> dict:
        return {"threshold": _sig(self.threshold), "fmr": _sig(self.fmr), "fnmr": _sig(self.fnmr)}


def _rates(gen: np.ndarray, imp: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FMR, FNMR) at thresholds `t` for sorted score arrays."""
    fmr = (len(imp) - np.searchsorted(imp, t, side="left")) / max(1, len(imp))
    fnmr = np.searchsorted(gen, t, side="left") / max(1, len(gen))
    return fmr, fnmr


def error_curves(genuine: np.ndarray, impostor: np.ndarray, points: int = 300) -> Curves:
    """ROC / DET points: FMR and FNMR at thresholds dense in both tails (where the low error rates are)."""
    gen = np.sort(np.asarray(genuine, np.float64))
    imp = np.sort(np.asarray(impostor, np.float64))
    if not len(gen) or not len(imp):
        raise ValueError("error curves need genuine and impostor scores")
    lo, hi = min(gen[0], imp[0]), max(gen[-1], imp[-1])
    n, m = len(imp), len(gen)
    t = np.concatenate([
        np.linspace(lo, hi, points),
        imp[np.clip(n - np.geomspace(1, n, points).astype(np.int64), 0, n - 1)],  # FMR = k / n, k geometric
        gen[np.clip(np.geomspace(1, m, points).astype(np.int64) - 1, 0, m - 1)],  # FNMR = k / m
        [np.nextafter(hi, np.inf)],  # everything rejected
    ])
    t = np.unique(t)
    fmr, fnmr = _rates(gen, imp, t)
    return Curves(t, fmr, fnmr)


def tar_at_far(genuine: np.ndarray, impostor: np.ndarray, far: float) -> dict:
    """TAR at the lowest threshold whose FMR is <= `far` (accept when score >= threshold).

    A FAR below 1 / impostor pairs cannot be measured: then `resolved` is False and `tar` and `threshold` are None.
    """
    gen = np.sort(np.asarray(genuine, np.float64))
    imp = np.sort(np.asarray(impostor, np.float64))
    n = len(imp)
    resolution = 1.0 / max(1, n)
    out: dict = {"far": far, "resolution": resolution, "impostor_pairs": n}
    if n == 0 or far < resolution * (1 - 1e-9):
        out.update(resolved=False, tar=None, threshold=None, fmr=None,
                   note=f"FAR {far:g} is below the resolution of {n} impostor pairs (1/{n} = {resolution:.2g}); "
                        "more different-person pairs (more people or images) are needed to measure it")
        return out
    k = min(n, int(math.floor(far * n + 1e-9)))  # impostor pairs allowed at or above the threshold
    if k >= n:
        threshold = float(imp[0])
        accepted = gen >= threshold
        fmr = 1.0
    else:
        # accept only scores strictly above the (k+1)-th highest impostor: ties there would exceed the FAR
        edge = imp[n - k - 1]
        threshold = float(np.nextafter(edge, np.inf))
        accepted = gen > edge
        fmr = float((imp > edge).sum() / n)
    out.update(resolved=True, tar=float(accepted.mean()) if len(gen) else None, threshold=threshold, fmr=fmr)
    return out


def eer(genuine: np.ndarray, impostor: np.ndarray) -> tuple[float, float]:
    """(equal error rate, threshold): where FMR = FNMR, linearly interpolated between adjacent thresholds."""
    gen = np.sort(np.asarray(genuine, np.float64))
    imp = np.sort(np.asarray(impostor, np.float64))
    if not len(gen) or not len(imp):
        raise ValueError("the EER needs genuine and impostor scores")
    t = np.unique(np.concatenate([gen, imp, [np.nextafter(max(gen[-1], imp[-1]), np.inf)]]))
    fmr, fnmr = _rates(gen, imp, t)
    i = int(np.argmax(fnmr >= fmr))  # first crossing; exists since the last threshold has FMR 0
    if i == 0:
        return float((fmr[0] + fnmr[0]) / 2), float(t[0])
    d0, d1 = fmr[i - 1] - fnmr[i - 1], fmr[i] - fnmr[i]  # d0 > 0 >= d1
    a = d0 / (d0 - d1)
    return float(fmr[i - 1] + a * (fmr[i] - fmr[i - 1])), float(t[i - 1] + a * (t[i] - t[i - 1]))


# --- k-fold verification accuracy ------------------------------------------------------------------------------
def read_pairs(path: Path) -> list[list[tuple[str, int, str, int, bool]]]:
    """LFW pairs.txt: folds of (person a, image number, person b, image number, same person)."""
    lines = Path(path).read_text().split("\n")
    folds, per = (int(x) for x in lines[0].split())
    rows = [ln.split() for ln in lines[1:] if ln.strip()]
    out = []
    for f in range(folds):
        chunk = rows[f * 2 * per:(f + 1) * 2 * per]
        fold = []
        for r in chunk:
            if len(r) == 3:
                fold.append((r[0], int(r[1]), r[0], int(r[2]), True))
            else:
                fold.append((r[0], int(r[1]), r[2], int(r[3]), False))
        out.append(fold)
    return out


def verification_accuracy(folds: Sequence[Sequence[tuple]], sim_of: Callable[..., float]) -> tuple[float, float, float]:
    """Mean and std of k-fold accuracy, each fold's threshold chosen on the other folds; and the mean threshold.

    Each pair is a tuple whose last item says "same person" and whose other items are passed to `sim_of`.
    """
    scores = [np.array([sim_of(*p[:-1]) for p in f], np.float64) for f in folds]
    labels = [np.array([bool(p[-1]) for p in f]) for f in folds]
    accs, ths = [], []
    for k in range(len(folds)):
        tr_s = np.concatenate([scores[i] for i in range(len(folds)) if i != k])
        tr_l = np.concatenate([labels[i] for i in range(len(folds)) if i != k])
        cands = np.unique(tr_s)
        cands = (cands[:-1] + cands[1:]) / 2 if len(cands) > 1 else cands
        pos, neg = np.sort(tr_s[tr_l]), np.sort(tr_s[~tr_l])
        # correct decisions at each candidate: genuine at or above it, impostors below it
        correct = (len(pos) - np.searchsorted(pos, cands, side="left")) + np.searchsorted(neg, cands, side="left")
        t = cands[int(np.argmax(correct))]
        ths.append(t)
        accs.append(((scores[k] >= t) == labels[k]).mean())
    return float(np.mean(accs)), float(np.std(accs)), float(np.mean(ths))


def _tri_decode(r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pair index r -> (a, b), a < b, in the order (0,1), (0,2), (1,2), (0,3), ..."""
    r = np.asarray(r, np.int64)
    b = ((1 + np.sqrt(1 + 8 * r.astype(np.float64))) // 2).astype(np.int64)
    b -= (b * (b - 1) // 2 > r).astype(np.int64)  # float rounding
    b += ((b + 1) * b // 2 <= r).astype(np.int64)
    return r - b * (b - 1) // 2, b


def _impostor_pairs(labels: np.ndarray, h: int, total: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """`h` distinct different-person pairs (i < j), uniformly drawn from the `total` there are."""
    order = np.argsort(labels, kind="stable")  # images grouped by person
    sizes = np.bincount(labels)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    if total <= max(4 * h, 1_000_000):  # few enough to list: each person's images against every later person's
        a = np.concatenate([np.repeat(order[starts[p]:starts[p + 1]], len(order) - starts[p + 1])
                            for p in range(len(sizes))])
        b = np.concatenate([np.tile(order[starts[p + 1]:], sizes[p]) for p in range(len(sizes))])
        pick = rng.choice(total, h, replace=False)
        return [(int(min(x, y)), int(max(x, y))) for x, y in zip(a[pick], b[pick])]
    # many more than we need: an image weighted by its number of impostor partners, then one of those partners
    n = len(labels)
    weight = (n - sizes[labels]).astype(np.float64)
    weight /= weight.sum()
    chosen: dict[tuple[int, int], None] = {}
    while len(chosen) < h:
        m = 2 * (h - len(chosen)) + 16
        i = rng.choice(n, m, p=weight)
        li = labels[i]
        r = (rng.random(m) * (n - sizes[li])).astype(np.int64)
        r = np.where(r < starts[li], r, r + sizes[li])  # skip the block of i's own person
        for x, y in zip(i, order[r]):
            chosen.setdefault((int(min(x, y)), int(max(x, y))))
            if len(chosen) == h:
                break
    return list(chosen)


def sample_pairs(names: Sequence[str], folds: int = 10, max_pairs: int = KFOLD_MAX_PAIRS,
                 seed: int = 0) -> list[list[tuple[int, int, bool]]]:
    """Folds of (index a, index b, same person), half same-person and half different-person pairs, like LFW.

    Up to max_pairs / 2 of each, drawn without replacement with a fixed seed; fewer folds when there are fewer
    same-person pairs than folds. Empty when no fold split is possible.
    """
    rng = np.random.default_rng(seed)
    arr = np.asarray(names)
    g_total, i_total = pair_counts(names)
    h = min(g_total, i_total, max_pairs // 2)
    k = min(folds, h)
    if k < 2:
        return []
    # same-person pairs: a pair index over the concatenated per-person triangles
    inverse = np.unique(arr, return_inverse=True)[1]
    order = np.argsort(inverse, kind="stable")  # images grouped by person
    count = np.bincount(inverse)
    starts = np.concatenate([[0], np.cumsum(count)])
    sizes = count * (count - 1) // 2
    ends = np.cumsum(sizes)
    pick = np.sort(rng.choice(g_total, h, replace=False))
    owner = np.searchsorted(ends, pick, side="right")
    a, b = _tri_decode(pick - (ends[owner] - sizes[owner]))
    genuine = [(int(order[starts[o] + x]), int(order[starts[o] + y])) for o, x, y in zip(owner, a, b)]
    impostor = _impostor_pairs(inverse, h, i_total, rng)
    out: list[list[tuple[int, int, bool]]] = [[] for _ in range(k)]
    for idx, (i, j) in enumerate(genuine[q] for q in rng.permutation(h)):
        out[idx % k].append((i, j, True))
    for idx, (i, j) in enumerate(impostor[q] for q in rng.permutation(h)):
        out[idx % k].append((i, j, False))
    return out


# --- open-set identification -----------------------------------------------------------------------------------
def open_set(names: Sequence[str], emb: np.ndarray, rng: np.random.Generator, holdout: float = 0.25) -> dict:
    """Open-set 1:N search: rank-1 of mated probes and FNIR at FPIR = 1%.

    The first image of each person with 2+ images is enrolled and their other images are mated probes; people with
    one image are split into enrolled distractors and non-mated probes. Without single-image people, a share
    `holdout` of the multi-image people (at least one) is left out of the gallery and all their images become the
    non-mated probes.
    """
    by_person: dict[str, list[int]] = {}
    for i, n in enumerate(names):
        by_person.setdefault(n, []).append(i)
    multi = [p for p, ix in by_person.items() if len(ix) >= 2]
    single = [p for p, ix in by_person.items() if len(ix) == 1]
    held: list[str] = []
    if single:
        single = list(rng.permutation(single))
        distract, nonmated = single[: len(single) // 2], single[len(single) // 2:]
        nonmated_ix = [by_person[p][0] for p in nonmated]
        source = "single-image people"
    else:
        if len(multi) < 2:
            raise EvaluationError("open-set identification needs a second person for the non-mated probes")
        n_hold = min(len(multi) - 1, max(1, round(holdout * len(multi))))
        held = [str(p) for p in rng.permutation(multi)[:n_hold]]
        multi = [p for p in multi if p not in held]
        distract = []
        nonmated_ix = [i for p in held for i in by_person[p]]
        source = "held-out people with several images"
    if not multi:
        raise EvaluationError("open-set identification needs a person with 2 or more images")
    gallery = [by_person[p][0] for p in multi] + [by_person[p][0] for p in distract]
    gallery_person = [p for p in multi] + list(distract)
    mated = [i for p in multi for i in by_person[p][1:]]
    g = emb[gallery]
    sm = emb[mated] @ g.T
    top = sm.argmax(axis=1)
    top_s = sm.max(axis=1)
    correct = np.array([gallery_person[t] == names[i] for t, i in zip(top, mated)])
    sn = (emb[nonmated_ix] @ g.T).max(axis=1)
    t1 = float(np.quantile(sn, 0.99))
    fnir = float(1 - (correct & (top_s > t1)).mean())
    return {"gallery": len(gallery), "mated_probes": len(mated), "nonmated_probes": len(nonmated_ix),
            "rank1": float(correct.mean()), "fnir_at_fpir_1pct": fnir, "threshold_at_fpir_1pct": t1,
            "nonmated_from": source, "held_out_people": len(held), "distractors": len(distract),
            # FPIR = 1% is an interpolated quantile with fewer than 100 non-mated probes
            "fpir_resolved": len(nonmated_ix) >= 100}


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


def _sig(a: np.ndarray, digits: int = 6) -> list[float]:
    return [float(f"{x:.{digits}g}") for x in np.asarray(a, np.float64)]


def _settings_dict(s: Settings) -> dict:
    return {k: getattr(s, k) for k in ("model", "detector", "backend", "flip", "upsample", "min_face",
                                       "detect_max_side")}


def _settings_tag(s: Settings) -> str:
    return f"{s.model or packs.DEFAULT}, {s.detector}, {s.backend}, {'flip' if s.flip else 'no flip'}"


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
