"""People clustering quality and speed on LFW (every face of every image), with synthetic distractors at scale.

Faces come from benchmarks/lfw_faces.py (cached in /work/cache/people-lfw-<model>.npz; embedded on first use).
Scored faces: the face of each image nearest the centre, labelled with the LFW name; every face is clustered.
Printed per collection size: BCubed precision / recall / F and pairwise precision / recall over the labelled
faces, the number of groups, the largest group, how many groups mix two or more people, the time and the rounds.

Sizes: `dev` (people of pairsDevTrain.txt, for tuning), nested subsets of people with >= 2k, 6k faces, all of LFW
(~13k), and LFW plus synthetic distractor identities up to 100k and 1M faces (see `Distractors`). Distractor
faces count as strangers to every LFW person: a real face grouped with one lowers precision.

    python benchmarks/people.py [--model dlib] [--sizes dev,2000,6000,all,100000,1000000]
                                [--methods rac,single,cw] [--fmr 1e-4]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import knn_ivf as knn_ivf_mod  # noqa: E402
from knn_ivf import knn_ivf  # noqa: E402
from lfw_faces import DATA, load_or_embed  # noqa: E402

from faceindex import calibration  # noqa: E402
from faceindex import cluster as cluster_mod  # noqa: E402
from faceindex.cluster import Threshold, group_faces  # noqa: E402

CALIBRATION = {"dlib": "dlib_resnet_v1", "yunet-omz95-centre": "yunet-omz95"}


# --- metrics --------------------------------------------------------------------------------------------------
def scores(labels: np.ndarray, truth: np.ndarray, scored: np.ndarray) -> dict[str, float]:
    """BCubed and pairwise precision / recall over `scored` faces; `truth` < 0 = unknown (left out of both)."""
    known = truth >= 0
    lab, tr = labels[known], truth[known]
    _, li = np.unique(lab, return_inverse=True)
    _, ti = np.unique(tr, return_inverse=True)
    key = li.astype(np.int64) * (ti.max() + 1) + ti
    cells, cell_of, n_cl = np.unique(key, return_inverse=True, return_counts=True)
    n_c = np.bincount(li)
    n_l = np.bincount(ti)
    s = scored[known]
    # per scored face: share of its group with its name; share of its name in its group
    p_i = n_cl[cell_of][s] / n_c[li][s]
    r_i = n_cl[cell_of][s] / n_l[ti][s]
    p, r = float(p_i.mean()), float(r_i.mean())
    # pairwise, over scored faces only
    cl_s, cnt = np.unique(key[s], return_counts=True)
    same = float((cnt * (cnt - 1) / 2).sum())
    c_cnt = np.bincount(li[s])
    l_cnt = np.bincount(ti[s])
    return {"P": p, "R": r, "F": 2 * p * r / (p + r),
            "pairP": same / max(1.0, float((c_cnt * (c_cnt - 1) / 2).sum())),
            "pairR": same / max(1.0, float((l_cnt * (l_cnt - 1) / 2).sum()))}


def group_stats(labels: np.ndarray, truth: np.ndarray) -> dict[str, int]:
    sizes = np.bincount(labels)
    known = truth >= 0
    pairs = np.unique(labels[known].astype(np.int64) * (truth.max() + 1) + truth[known])
    people_per_group = np.bincount(pairs // (truth.max() + 1))
    return {"groups": int((sizes > 0).sum()), "largest": int(sizes.max()),
            "mixed": int((people_per_group > 1).sum()), "most_people": int(people_per_group.max())}


# --- synthetic distractors ------------------------------------------------------------------------------------
class Distractors:
    """Synthetic identities that look, to this embedder, like real strangers.

    A model of the embedding space fitted on LFW: an identity's centre is a random LFW person's mean embedding
    pushed away by a * N(0, B), B the between-person covariance (so distractors keep the real space's structure:
    a pure Gaussian has far too light an impostor tail for these embedders), its faces are centre + N(0, w^2 W),
    W the within-person covariance, then L2-normalised. Each is a look-alike of one LFW person rather than a
    random stranger, which makes them harder than real strangers for that person and easier for the others.
    Identity sizes are drawn from LFW's own images-per-person distribution (most have one or
    two faces, a few dozens). The scales a and w are fitted so that (1) synthetic-vs-real pairs reach the model's
    calibrated impostor tail: their false-match rate at FMR 1e-5's threshold equals the calibration's, and (2)
    the mean similarity of two faces of one synthetic identity equals LFW's mean same-person similarity. So a
    distractor is as likely to be mistaken for an LFW person as another LFW person is, and its own faces are as
    spread as a real person's photos.
    """

    def __init__(self, emb: np.ndarray, person: np.ndarray, cal: calibration.Calibration, tau: float,
                 rng: np.random.Generator) -> None:
        self.rng = rng
        d = emb.shape[1]
        _, pi, counts = np.unique(person, return_inverse=True, return_counts=True)
        means = np.zeros((len(counts), d))
        np.add.at(means, pi, emb)
        means /= counts[:, None]
        multi = counts[pi] >= 2
        dev = (emb - means[pi])[multi]
        self.W = np.linalg.cholesky(np.cov(dev.T) + 1e-9 * np.eye(d))
        self.mean = means.mean(0)
        self.means = means
        self.B = np.linalg.cholesky(np.cov(means.T) + 1e-9 * np.eye(d))
        self.sizes = counts
        self.real = emb
        self.cal, self.tau = cal, tau
        # target: LFW mean same-person similarity
        g = emb[multi]
        gp = pi[multi]
        o = np.argsort(gp, kind="stable")
        g, gp = g[o], gp[o]
        nxt = np.nonzero(gp[1:] == gp[:-1])[0]
        self.genuine_mean = float((g[nxt] * g[nxt + 1]).sum(1).mean())
        self.a, self.w = self._fit()

    def sample(self, n_faces: int, a: float | None = None, w: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(faces, identity of each face), about `n_faces` faces (exactly, after trimming)."""
        a = self.a if a is None else a
        w = self.w if w is None else w
        sizes = self.rng.choice(self.sizes, size=int(n_faces / self.sizes.mean() * 1.2) + 10)
        sizes = sizes[np.cumsum(sizes) <= n_faces]
        short = n_faces - int(sizes.sum())
        sizes = np.concatenate([sizes, np.ones(short, int)])
        d = len(self.mean)
        out = np.empty((n_faces, d), np.float32)
        ident = np.repeat(np.arange(len(sizes)), sizes)
        chunk = 200_000
        for s in range(0, len(sizes), chunk):
            c = self._centres(len(sizes[s:s + chunk]), a)
            lo, hi = int(sizes[:s].sum()), int(sizes[:s + chunk].sum())
            x = np.repeat(c, sizes[s:s + chunk], 0) + w * (self.rng.standard_normal((hi - lo, d)) @ self.W.T)
            out[lo:hi] = x / np.linalg.norm(x, axis=1, keepdims=True)
        return out, ident

    def _centres(self, m: int, a: float) -> np.ndarray:
        """Identity centres: a real person's mean pushed away by a * N(0, B)."""
        anchors = self.means[self.rng.integers(0, len(self.means), m)]
        return anchors + a * (self.rng.standard_normal((m, len(self.mean))) @ self.B.T)

    def impostor_fmr(self, fake: np.ndarray, tau: float) -> float:
        """Share of synthetic-vs-real pairs at or above `tau`."""
        hits = sum(int((fake[s:s + 2000] @ self.real.T >= tau).sum()) for s in range(0, len(fake), 2000))
        return hits / (len(fake) * len(self.real))

    def _fit(self) -> tuple[float, float]:
        """Alternate: the within-identity scale for the genuine mean, the between scale for the impostor tail."""
        target = float(self.cal.fmr_at(self.tau))
        a, w = 1.0, 1.0
        for _ in range(3):
            lo, hi = 0.05, 5.0
            for _ in range(10):  # genuine similarity falls as faces spread around their identity
                w = (lo * hi) ** 0.5
                c = self._centres(2000, a)
                x1 = c + w * (self.rng.standard_normal(c.shape) @ self.W.T)
                x2 = c + w * (self.rng.standard_normal(c.shape) @ self.W.T)
                x1 /= np.linalg.norm(x1, axis=1, keepdims=True)
                x2 /= np.linalg.norm(x2, axis=1, keepdims=True)
                lo, hi = (w, hi) if (x1 * x2).sum(1).mean() > self.genuine_mean else (lo, w)
            w = (lo * hi) ** 0.5
            lo, hi = 0.05, 5.0
            for _ in range(10):  # impostor similarity falls as identities spread apart
                a = (lo * hi) ** 0.5
                fake, _ = Distractors.sample(self, 4000, a=a, w=w)
                lo, hi = (a, hi) if self.impostor_fmr(fake, self.tau) > target else (lo, a)
            a = (lo * hi) ** 0.5
        return a, w


# --- reference and baseline methods ---------------------------------------------------------------------------
def chinese_whispers(vecs: np.ndarray, tau: float, k: int = 20) -> np.ndarray:
    """dlib's Chinese whispers at the same threshold: all pairs up to 20k faces, else the k-NN graph above tau."""
    import dlib

    if len(vecs) <= 20_000:
        desc = [dlib.vector(v.astype(float).tolist()) for v in vecs]
        return np.asarray(dlib.chinese_whispers_clustering(desc, float(np.sqrt(2 - 2 * tau))), np.int64)
    sims, nbrs = knn_ivf(vecs, k + 1)
    a = np.repeat(np.arange(len(vecs)), nbrs.shape[1])
    b = nbrs.reshape(-1)
    ok = (b > a) & (sims.reshape(-1) >= tau)
    edges = list(zip(a[ok].tolist(), b[ok].tolist()))
    edges += [(i, i) for i in range(len(vecs))]  # every face is a vertex
    return np.unique(np.asarray(dlib.chinese_whispers(edges), np.int64), return_inverse=True)[1]


def single_linkage(vecs: np.ndarray, image_ids: np.ndarray, tau: float, k: int = 20,
                   min_links: float = 0.0, mutual: bool = False) -> np.ndarray:
    """The clustering faceindex shipped before: k-NN edges above tau merged strongest first (union-find), with the
    cannot-link for faces of one photo, optional min_links and (variant) mutual-neighbour edges only."""
    n = len(vecs)
    sims, nbrs = knn_ivf(vecs, k + 1)
    rows = np.repeat(np.arange(n), nbrs.shape[1])
    cols, s = nbrs.reshape(-1), sims.reshape(-1)
    keep = (cols >= 0) & (cols != rows) & (s >= tau)
    rows, cols, s = rows[keep], cols[keep], s[keep]
    a, b = np.minimum(rows, cols), np.maximum(rows, cols)
    key, first, cnt = np.unique(a.astype(np.int64) * n + b, return_index=True, return_counts=True)
    a, b, s = a[first], b[first], s[first]
    if mutual:
        a, b, s = a[cnt == 2], b[cnt == 2], s[cnt == 2]
    order = np.argsort(-s, kind="stable")
    parent = np.arange(n)
    size = np.ones(n, np.int64)
    photos = {i: {int(image_ids[i])} for i in range(n)}
    links: dict[tuple[int, int], int] = {}

    def find(x: int) -> int:
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    for e in order:
        ra, rb = find(int(a[e])), find(int(b[e]))
        if ra == rb:
            continue
        pair = (ra, rb) if ra < rb else (rb, ra)
        links[pair] = links.get(pair, 0) + 1
        if photos[ra] & photos[rb]:
            continue
        if min_links and links[pair] < min_links * min(size[ra], size[rb]):
            continue
        if size[ra] < size[rb]:
            ra, rb = rb, ra
        parent[rb] = ra
        size[ra] += size[rb]
        photos[ra] |= photos.pop(rb)
    roots = np.array([find(i) for i in range(n)])
    return np.unique(roots, return_inverse=True)[1]


def cpu_now() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def report(tag: str, method: str, labels: np.ndarray, truth: np.ndarray, scored: np.ndarray, rounds: int,
           t: float, cpu0: float) -> None:
    """One line of the table: quality, groups, seconds since `t`, rounds and the process's peak memory."""
    secs = time.perf_counter() - t
    ru = resource.getrusage(resource.RUSAGE_SELF)
    cpu = ru.ru_utime + ru.ru_stime - cpu0
    m = scores(labels, truth, scored)
    g = group_stats(labels, truth)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{tag:>11} {method:<18} {m['P']:.4f} {m['R']:.4f} {m['F']:.4f} {m['pairP']:.4f} "
          f"{m['pairR']:.4f} {g['groups']:>7} {g['largest']:>7} {g['mixed']:>6} {secs:>7.1f} "
          f"{rounds:>6} {peak:>7.0f} {cpu:>7.1f}", flush=True)


# --- the run --------------------------------------------------------------------------------------------------
def dev_people() -> set[str]:
    names = set()
    for line in (DATA / "pairsDevTrain.txt").read_text().splitlines()[1:]:
        f = line.split("\t")
        names.update([f[0]] if len(f) == 3 else [f[0], f[2]])
    return names


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="dlib")
    ap.add_argument("--sizes", default="dev,2000,6000,all,100000,1000000")
    ap.add_argument("--methods", default="rac,cw")
    ap.add_argument("--fmr", default="1e-4", help="comma-separated FMRs for the threshold (of one pair)")
    ap.add_argument("--rho", default="1", help="comma-separated rho values (1 = one threshold for every merge)")
    ap.add_argument("--per-face", type=float, default=0.0,
                    help="if set, the pair FMR is min(FMR, this / faces): a fixed number of chance matches per face")
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--nprobe", type=int, default=0,
                    help="lists each face visits in the k-NN graph above 50k faces: knn_pairs (rac) and the IVF "
                         "search of knn_ivf (cw, single) (0: the defaults)")
    ap.add_argument("--knn-dims", type=float, default=0.0,
                    help="PCA share of dimensions for knn_ivf's IVF search (cw, single; 0: default)")
    ap.add_argument("--calibration", type=Path, help="a calibration table file (default: the one faceindex ships)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()

    if args.nprobe:
        knn_ivf_mod.KNN_NPROBE = cluster_mod.JOIN_PROBE = args.nprobe
    if args.knn_dims:
        knn_ivf_mod.KNN_DIMS = args.knn_dims
    d = load_or_embed(args.model, args.workers)
    emb, image = d["emb"].astype(np.float32), d["image"]
    names = d["names"]
    _, person_of_image = np.unique(names, return_inverse=True)
    truth = np.full(len(emb), -1, np.int64)
    truth[d["labelled"]] = person_of_image
    scored_all = np.zeros(len(emb), bool)
    scored_all[d["labelled"]] = True
    person_of_face = person_of_image[image]
    cal = calibration.load(CALIBRATION.get(args.model, args.model), args.calibration)

    print(f"# people clustering, model {args.model}: {len(emb)} faces in {len(names)} LFW images "
          f"({int((~d['detected']).sum())} without a detected face: centre box embedded); "
          f"{platform.machine()}, {os.cpu_count()} cores")
    rng = np.random.default_rng(0)
    people = rng.permutation(person_of_image.max() + 1)
    faces_per_person = np.bincount(person_of_face, minlength=len(people))
    dev = np.isin(np.unique(names), sorted(dev_people()))
    distractors = None
    for fmr_s in args.fmr.split(","):
        fmr = float(fmr_s)
        tau = cal.threshold_for(fmr)
        print(f"\n## threshold: similarity {tau:.4f} (FMR {fmr:g} in calibration {cal.model})")
        print(f"{'size':>11} {'method':<18} {'P':>6} {'R':>6} {'F':>6} {'pairP':>6} {'pairR':>6} {'groups':>7} "
              f"{'largest':>7} {'mixed':>6} {'secs':>7} {'rounds':>6} {'peakMB':>7} {'cpu_s':>7}")
        for size_s in args.sizes.split(","):
            if size_s == "dev":
                keep_people = np.nonzero(dev)[0]
            elif size_s == "all":
                keep_people = people
            else:
                cum = np.cumsum(faces_per_person[people])
                want = min(int(size_s), len(emb))
                keep_people = people[: int(np.searchsorted(cum, want)) + 1]
            sel = np.isin(person_of_face, keep_people)
            v, im, tr, sc = emb[sel], image[sel], truth[sel], scored_all[sel]
            extra = int(size_s) - len(v) if size_s.isdigit() else 0
            if extra > 0:
                if distractors is None:
                    distractors = Distractors(emb[d["labelled"]], person_of_image, cal, cal.threshold_for(1e-5),
                                              rng)
                    fake, _ = distractors.sample(20_000)
                    rates = ", ".join(f"{f:g}: {distractors.impostor_fmr(fake, cal.threshold_for(f)):.1e}"
                                      for f in (1e-3, 1e-4, 1e-5, 1e-6))
                    print(f"  distractor model: a={distractors.a:.3f} w={distractors.w:.3f}; synthetic-vs-LFW FMR "
                          f"at the thresholds of calibrated FMR {rates}", flush=True)
                fake, ident = distractors.sample(extra)
                v = np.concatenate([v, fake])
                im = np.concatenate([im, image.max() + 1 + np.arange(extra)])
                tr = np.concatenate([tr, truth.max() + 1 + ident])
                sc = np.concatenate([sc, np.zeros(extra, bool)])
                del fake
            tag = f"{size_s}({len(v)})" if not size_s.isdigit() else str(len(v))
            for method in args.methods.split(","):
                if method == "single" and len(v) > 20_000:
                    continue  # a pure-Python loop over edges: not run at scale
                t, cpu0 = time.perf_counter(), cpu_now()
                rounds = 0
                if method.startswith("rac"):
                    for rho in [float(x) for x in args.rho.split(",")]:
                        pair_fmr = min(fmr, args.per_face / len(v)) if args.per_face else fmr
                        bar = Threshold(cal.threshold_for(pair_fmr), cal.threshold_for(0.5), rho)
                        t, cpu0 = time.perf_counter(), cpu_now()
                        res = group_faces(v, im, bar, k=args.k)
                        report(tag, f"rac r{rho:g} p{pair_fmr:.0e}", res.labels, tr, sc, res.rounds, t, cpu0)
                    continue
                elif method == "cw":
                    labels = chinese_whispers(v, tau, args.k)
                elif method == "single":
                    labels = single_linkage(v, im, tau, args.k)
                elif method == "minlinks":
                    labels = single_linkage(v, im, tau, args.k, min_links=0.3)
                elif method == "mutual":
                    labels = single_linkage(v, im, tau, args.k, mutual=True)
                else:
                    sys.exit(f"unknown method {method}")
                report(tag, method, labels, tr, sc, rounds, t, cpu0)


if __name__ == "__main__":
    main()
