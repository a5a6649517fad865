"""`faceindex people` end to end at 100k-1M faces: the real command (engine + catalog), full and incremental.

The data folder holds every face of every LFW image (default pack yunet-omz95, 256-d, cached by
benchmarks/lfw_faces.py) plus synthetic look-alike distractors (benchmarks/people.py's `Distractors`) up to N
faces, bulk-written into the catalog (benchmarks/bulk_catalog.py; no photos, quality 0.9 so every face is
clustered). About 1% more faces are kept aside as the "new" faces of the incremental run: one held-out image
of each LFW person with 3+ images (people already known) and fresh distractor identities.

Each step runs `python -m faceindex people ...` in a subprocess on a copy of the folder and reports wall
seconds, CPU seconds (user + system) and peak RSS of that process (/usr/bin/time), and its phases from a
cProfile of the same run (engine open, catalog read, constraints, k-NN graph, rounds, write-back, listing):

1. `people --full` with this checkout, and (`--baseline SRC`: a faceindex source tree, e.g. `git archive` of
   main; run after this checkout's steps) with the code before, on the same folder: BCubed precision / recall /
   F of the scored LFW faces (the face nearest each image's centre) as in benchmarks/people.py, and their ratio
   new / before.
2. The LFW people of the new faces are named (the person holding most of their faces, through the API), the new
   faces are bulk-added, and the incremental `people` (no --full) is timed: names kept, share of the new LFW
   faces that joined their named person, and BCubed after it. The baseline's incremental run starts from the
   same state (this checkout's full run, names and new faces).

`--recall knn_pairs,knn_graph` also measures, in process, the share of the exact k-NN pairs above the
clustering floor (of 2,000 random faces) that each k-NN method finds.

    python benchmarks/people_scale.py --size 100000 [--new 0.01] [--baseline /work/cache/faceindex-base]
                                      [--folder /work/cache/people-scale-100000] [--recall knn_pairs,knn_graph]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import pstats
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bulk_catalog import write_faces  # noqa: E402
from knn_ivf import knn_ivf  # noqa: E402
from lfw_faces import load_or_embed  # noqa: E402
from people import Distractors, scores  # noqa: E402

from faceindex import calibration  # noqa: E402
from faceindex.catalog import open_catalog  # noqa: E402
from faceindex.engine import CATALOG_FILE  # noqa: E402
from faceindex.models import packs  # noqa: E402

MODEL = "yunet-omz95"
ROOT = Path(__file__).resolve().parents[1]
# profile entries (file suffix, function) -> phase; cumulative seconds, nested phases subtracted below
PHASES = [
    ("open", "engine.py", "__init__"),
    ("read faces", "people.py", "_faces"),
    ("constraints+assigned", "people.py", "_constraints"),
    ("constraints+assigned", "people_store.py", "assignments"),
    ("k-NN graph", "cluster.py", "knn_graph"),
    ("k-NN graph", "cluster.py", "knn_pairs"),
    ("clustering (rounds)", "cluster.py", "group_faces"),
    ("carry over names", "people.py", "carry_over"),
    ("write-back", "people_store.py", "store"),
    ("listing", "people.py", "people"),
]


# --- the data folder -------------------------------------------------------------------------------------------
def build(folder: Path, size: int, new_share: float, seed: int = 0) -> None:
    """Write the catalog of `size` faces and `truth.npz` (labels, scored faces, the new faces kept aside)."""
    d = load_or_embed(MODEL, 2)
    emb, image, names = d["emb"].astype(np.float32), d["image"], d["names"]
    _, person_of_image = np.unique(names, return_inverse=True)
    person_of_face = person_of_image[image]
    scored = np.zeros(len(emb), bool)
    scored[d["labelled"]] = True
    rng = np.random.default_rng(seed)
    cal = calibration.load(MODEL)
    n_new = max(1, int(size * new_share))
    # new faces: one held-out image (its every face) per LFW person with 3+ images, up to half the new faces
    imgs_per_person = np.bincount(person_of_image)
    held_imgs = []
    for p in rng.permutation(np.nonzero(imgs_per_person >= 3)[0]):
        held_imgs.append(int(rng.choice(np.nonzero(person_of_image == p)[0])))
        if int(np.isin(image, held_imgs).sum()) >= n_new // 2:
            break
    held = np.isin(image, held_imgs)
    n_lfw = len(emb) - int(held.sum())
    n_fake_new = n_new - int(held.sum())
    dist = Distractors(emb[d["labelled"]], person_of_image, cal, cal.threshold_for(1e-5), rng)
    fake, ident = dist.sample(size - n_lfw + n_fake_new)
    del dist
    truth_fake = person_of_image.max() + 1 + ident
    image_fake = image.max() + 1 + np.arange(len(fake))
    # the gallery: LFW (not held) then distractors; the new faces: the held LFW images then fresh identities
    # (the distractor sample's last identities; an identity cut in two keeps its faces on both sides)
    cut = len(fake) - n_fake_new
    vecs = np.concatenate([emb[~held], fake[:cut]])
    old = {"vecs": vecs, "image": np.concatenate([image[~held], image_fake[:cut]]) + 1,
           "truth": np.concatenate([person_of_face[~held], truth_fake[:cut]]),
           "scored": np.concatenate([scored[~held], np.zeros(cut, bool)])}
    new = {"vecs": np.concatenate([emb[held], fake[cut:]]),
           "image": np.concatenate([image[held], image_fake[cut:]]) + 1,
           "truth": np.concatenate([person_of_face[held], truth_fake[cut:]]),
           "scored": np.concatenate([scored[held], np.zeros(n_fake_new, bool)])}
    folder.mkdir(parents=True)
    cat = open_catalog(folder / CATALOG_FILE)
    t = time.perf_counter()
    try:
        ids = write_faces(cat, old["vecs"], np.full(len(vecs), 0.9), packs.builtin()[MODEL].key, old["image"])
    finally:
        cat.close()
    print(f"catalog: {len(ids)} faces written in {time.perf_counter() - t:.0f} s "
          f"({(folder / CATALOG_FILE).stat().st_size / 2**20:.0f} MiB); {len(new['vecs'])} new faces kept aside "
          f"({int(held.sum())} faces of {len(held_imgs)} LFW people)", flush=True)
    np.savez(folder / "truth.npz", ids=ids, lfw_names=np.unique(names),
             **{f"old_{k}": v for k, v in old.items() if k != "vecs"},
             **{f"new_{k}": v for k, v in new.items()})


# --- running the command ---------------------------------------------------------------------------------------
def run_people(folder: Path, args: list[str], src: Path | None, prof: Path) -> dict:
    """Run `faceindex people ARGS` under cProfile; wall, CPU, peak RSS and phases of that process."""
    env = dict(os.environ, FACEINDEX_DATA=str(folder), FACEINDEX_ACTOR="bench")
    if src is not None:
        env["PYTHONPATH"] = str(src)
    # /usr/bin/time reports the child's own peak RSS (a child forked from this big process would inherit its
    # high-water mark) and CPU seconds
    timing = prof.with_suffix(".time")
    cmd = ["/usr/bin/time", "-f", "%e %U %S %M", "-o", str(timing), sys.executable, "-m", "cProfile", "-o",
           str(prof), "-m", "faceindex", "people", *args, "--json", "--limit", "3"]
    t = time.perf_counter()
    with open(prof.with_suffix(".out"), "wb") as fo, open(prof.with_suffix(".err"), "wb") as fe:
        code = subprocess.call(cmd, env=env, stdout=fo, stderr=fe, cwd="/")
    wall = time.perf_counter() - t
    out = prof.with_suffix(".out").read_bytes()
    if code:
        sys.exit(f"faceindex people {' '.join(args)} failed ({code}):\n"
                 f"{prof.with_suffix('.err').read_text()[-3000:]}")
    _, user, system, kib = timing.read_text().split()[-4:]
    ru = {"cpu": float(user) + float(system), "rss_gib": int(kib) / 2**20}
    return {"wall": wall, "ru": ru, "phases": phases(prof), "out": out}


def phases(prof: Path) -> dict[str, float]:
    st = pstats.Stats(str(prof), stream=io.StringIO())
    got: dict[str, float] = {}
    for (file, _line, fn), (_cc, _nc, _tt, ct, _callers) in st.stats.items():
        if fn == "knn_graph" and any(c[2] == "knn_pairs" for c in _callers):
            continue  # (the exact case of knn_pairs: counted there)
        for phase, suffix, name in PHASES:
            if fn == name and file.endswith("/" + suffix):
                got[phase] = got.get(phase, 0.0) + ct
        if fn in ("knn_graph", "knn_pairs") and file.endswith("/cluster.py") and any(
                c[2] == "group_faces" for c in _callers):  # inside group_faces (a full run): not the rounds
            got["knn in rounds"] = got.get("knn in rounds", 0.0) + ct
    if "clustering (rounds)" in got:
        got["clustering (rounds)"] -= got.pop("knn in rounds", 0.0)
    order = [p[0] for p in PHASES]
    return dict(sorted(got.items(), key=lambda kv: order.index(kv[0])))


def labels_of(folder: Path, ids: np.ndarray) -> np.ndarray:
    """Each face's person (faces in none: a group of their own) in the order of `ids`."""
    db = sqlite3.connect(folder / CATALOG_FILE)
    rows = np.array(db.execute("SELECT id, COALESCE(person_id, -id) FROM faces ORDER BY id").fetchall(), np.int64)
    db.close()
    return rows[np.searchsorted(rows[:, 0], ids), 1]


def line(tag: str, r: dict, q: dict | None) -> str:
    """One result row: wall, CPU, peak RSS, quality, then the phases."""
    cpu, rss = r["ru"]["cpu"], r["ru"]["rss_gib"]
    qual = f" P {q['P']:.4f} R {q['R']:.4f} F {q['F']:.4f}" if q else ""
    ph = ", ".join(f"{k} {v:.1f}" for k, v in r["phases"].items())
    return f"{tag:<22} wall {r['wall']:7.1f} s  cpu {cpu:7.1f} s  peak RSS {rss:5.2f} GiB{qual}\n{'':<22} {ph}"


def name_people(folder: Path, truth: dict) -> dict[int, str]:
    """Name, for each LFW person of the new faces, the person holding most of their faces (through the API)."""
    from faceindex import FaceIndex
    from faceindex.config import Settings

    ids = truth["ids"]
    lab = labels_of(folder, ids)
    want = np.unique(truth["new_truth"][truth["new_scored"]])
    named: dict[int, str] = {}
    fi = FaceIndex(Settings(data=folder, actor="bench"))
    try:
        for p in want.tolist():
            rows = np.nonzero((truth["old_truth"] == p) & truth["old_scored"])[0]
            pids, counts = np.unique(lab[rows], return_counts=True)
            pid = int(pids[np.argmax(counts)])
            if pid < 0 or pid in named:
                continue
            named[pid] = str(truth["lfw_names"][p])
            fi.name_person(pid, named[pid])
    finally:
        fi.close()
    return named


def check_incremental(folder: Path, truth: dict, new_ids: np.ndarray, named: dict[int, str]) -> str:
    db = sqlite3.connect(folder / CATALOG_FILE)
    names = dict(db.execute("SELECT id, name FROM people WHERE name IS NOT NULL").fetchall())
    db.close()
    kept = sum(names.get(pid) == n for pid, n in named.items())
    lab = labels_of(folder, new_ids)
    by_name = {n: pid for pid, n in named.items()}
    lfw = np.nonzero(truth["new_scored"])[0]
    target = [by_name.get(str(truth["lfw_names"][truth["new_truth"][i]])) for i in lfw]
    has = [t is not None for t in target]
    joined = sum(int(lab[i] == t) for i, t in zip(lfw, target) if t is not None)
    return (f"names kept {kept}/{len(named)}; new LFW faces that joined their named person "
            f"{joined}/{sum(has)}")


def quality(folder: Path, truth: dict, new_ids: np.ndarray | None = None) -> dict[str, float]:
    ids, tr, sc = truth["ids"], truth["old_truth"], truth["old_scored"]
    if new_ids is not None:
        ids = np.concatenate([ids, new_ids])
        tr = np.concatenate([tr, truth["new_truth"]])
        sc = np.concatenate([sc, truth["new_scored"]])
    return scores(labels_of(folder, ids), tr, sc)


def pair_recall(folder: Path, k: int, sample: int, methods: list[str]) -> None:
    """Recall of the k-NN pairs above the clustering floor, against exact search, for `sample` random faces."""
    from faceindex import cluster
    from faceindex.people import PER_FACE, RHO, Threshold

    db = sqlite3.connect(folder / CATALOG_FILE)
    blob = b"".join(r[0] for r in db.execute("SELECT embedding FROM faces ORDER BY id"))
    db.close()
    vecs = np.frombuffer(blob, np.float32).reshape(-1, packs.builtin()[MODEL].dim)
    n = len(vecs)
    cal = calibration.load(MODEL)
    tau = Threshold(cal.threshold_for(max(cal.fmr_floor, min(1e-4, PER_FACE / n))), cal.threshold_for(0.5), RHO)
    floor = float(tau.group)
    rows = np.sort(np.random.default_rng(1).choice(n, sample, replace=False))
    truth: set[tuple[int, int]] = set()
    for c in range(0, sample, 200):  # (200 x 1M similarities at a time: 0.8 GB)
        part = rows[c:c + 200]
        sim = vecs[part] @ vecs.T
        top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        keep = np.take_along_axis(sim, top, 1) >= floor
        truth |= set(zip(np.repeat(part, k)[keep.reshape(-1)].tolist(), top[keep].tolist()))
    for method in methods:
        t = time.perf_counter()
        if method == "knn_graph":  # the IVF search used before (k-NN of every face, then the floor)
            sims, nbrs = knn_ivf(vecs, k)
            a, b = np.repeat(np.arange(n), k), nbrs.reshape(-1)
            ok = (b >= 0) & (sims.reshape(-1) >= floor)
            a, b = a[ok], b[ok]
        else:
            a, b, _ = cluster.knn_pairs(vecs, k, floor)
        secs = time.perf_counter() - t
        sel = np.isin(a, rows)
        found = set(zip(a[sel].tolist(), b[sel].tolist()))
        print(f"k-NN pairs above the floor {floor:.4f}, {method}: recall {len(found & truth) / len(truth):.4f} "
              f"({len(truth)} exact pairs of {sample} faces), {secs:.1f} s in process", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=100_000)
    ap.add_argument("--new", type=float, default=0.01, help="share of new faces for the incremental run")
    ap.add_argument("--folder", type=Path, help="the pristine data folder (built once; default under /work/cache)")
    ap.add_argument("--work", type=Path, help="where the copies run (default: FOLDER-run)")
    ap.add_argument("--baseline", type=Path, help="a faceindex source tree to compare with (the code before), "
                                                  "run after this checkout's runs")
    ap.add_argument("--skip", default="", help="comma-separated steps to skip: full, incremental")
    ap.add_argument("--recall", default="", help="also measure the k-NN pairs' recall (in process): "
                                                 "knn_pairs,knn_graph")
    args = ap.parse_args()
    folder = args.folder or Path(f"/work/cache/people-scale-{args.size}")
    work = args.work or Path(str(folder) + "-run")
    skip = set(args.skip.split(",")) - {""}
    print(f"# faceindex people at {args.size} faces ({MODEL}); {platform.machine()}, {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.1f}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '-')}", flush=True)
    if not (folder / "truth.npz").is_file():
        shutil.rmtree(folder, ignore_errors=True)
        build(folder, args.size, args.new)
    truth = dict(np.load(folder / "truth.npz"))
    if args.recall:
        pair_recall(folder, 21, 2000, args.recall.split(","))
    if {"full", "incremental"} <= skip:
        return
    runs = [("now", None), ("before", args.baseline)] if args.baseline else [("now", None)]
    results: dict[str, dict] = {}
    staged = Path(str(work) + "-inc")
    named: dict[int, str] = {}
    new_ids = np.zeros(0, np.int64)
    for tag, src in runs:
        # full: on a copy of the pristine folder; then (this checkout's result) names, new faces, incremental
        into = work if tag == "now" else Path(str(work) + "-" + tag)
        shutil.rmtree(into, ignore_errors=True)
        shutil.copytree(folder, into)
        if "full" not in skip or tag == "now":
            r = run_people(into, ["--full"], src, into / "full.prof")
            results[tag] = q = quality(into, truth)
            if "full" not in skip:
                print(line(f"full ({tag})", r, q), flush=True)
        if tag != "now":
            shutil.rmtree(into, ignore_errors=True)
        if len(results) == 2:
            b, n = results["before"], results["now"]
            print(f"quality now / before: P {n['P'] / b['P']:.4f} R {n['R'] / b['R']:.4f} "
                  f"F {n['F'] / b['F']:.4f}", flush=True)
        if "incremental" in skip:
            continue
        if tag == "now":
            named = name_people(work, truth)
            cat = open_catalog(work / CATALOG_FILE)
            try:
                new_ids = write_faces(cat, truth["new_vecs"], np.full(len(truth["new_vecs"]), 0.9),
                                      packs.builtin()[MODEL].key, truth["new_image"])
            finally:
                cat.close()
            print(f"{len(named)} people named; {len(new_ids)} new faces added", flush=True)
        shutil.rmtree(staged, ignore_errors=True)
        shutil.copytree(work, staged)  # the same start for both: this checkout's full run, names, new faces
        r = run_people(staged, [], src, staged / "inc.prof")
        print(line(f"incremental ({tag})", r, quality(staged, truth, new_ids)), flush=True)
        print(f"{'':<22} {check_incremental(staged, truth, new_ids, named)}; "
              f"{json.loads(r['out'] or b'[]')[:1]}", flush=True)
    # (the last copy stays, with its profile, for a closer look)


if __name__ == "__main__":
    main()
