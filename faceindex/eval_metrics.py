"""The metrics of a face model's evaluation, as pure functions: names + L2-normalised embeddings, or score arrays, in.

Pair scores (every same-person pair, different-person pairs up to a cap), ROC/DET curves, TAR at a FAR (with the
resolution the impostor pairs allow), the EER, k-fold verification accuracy over LFW-style pair folds, and open-set
1:N identification (rank-1, FNIR at FPIR = 1%). No files, no models: `evaluate.py` embeds a labelled folder and
writes the results; benchmarks/lfw.py and the tests call these directly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import EvaluationError

MAX_IMPOSTOR_PAIRS = 20_000_000  # ~80 MB of float32 scores; resolves FMR down to 5e-8
KFOLD_MAX_PAIRS = 6000  # like LFW's pairs.txt: half same-person, half different-person


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


def _sig(a: np.ndarray, digits: int = 6) -> list[float]:
    return [float(f"{x:.{digits}g}") for x in np.asarray(a, np.float64)]
