"""faceindex.evaluate: metric functions on synthetic scores with known answers, and an end-to-end run on LFW."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceindex import calibration
from faceindex.calibration import Calibration
from faceindex.config import Settings
from faceindex.errors import FaceIndexError
from faceindex.evaluate import (
    EvaluationError,
    all_pair_scores,
    eer,
    error_curves,
    evaluate,
    load_labelled,
    open_set,
    pair_counts,
    read_pairs,
    sample_pairs,
    tar_at_far,
    verification_accuracy,
    write_calibration,
)
from faceindex.pipeline import normalise

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
LFW = DATA / "lfw" / "images"


def clusters(people: int, per: int | list[int], spread: float = 0.05, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """Tight synthetic identity clusters around random unit vectors (128-d, like the dlib embedder)."""
    rng = np.random.default_rng(seed)
    counts = per if isinstance(per, list) else [per] * people
    centres = normalise(rng.normal(size=(len(counts), 128)))
    names, vecs = [], []
    for p, c in enumerate(counts):
        for _ in range(c):
            names.append(f"person{p:03d}")
            vecs.append(centres[p] + rng.normal(scale=spread, size=128))
    return names, normalise(np.array(vecs))


# --- verification metrics ---------------------------------------------------------------------------------------
def test_perfect_separation_gives_tar_1_and_eer_0():
    rng = np.random.default_rng(0)
    gen = rng.uniform(0.7, 1.0, 500)
    imp = rng.uniform(-0.3, 0.5, 200_000)
    e, t = eer(gen, imp)
    assert e == 0.0 and imp.max() < t <= gen.min()
    for far in (1e-3, 1e-4):
        r = tar_at_far(gen, imp, far)
        assert r["resolved"] and r["tar"] == 1.0 and r["fmr"] <= far
        assert r["threshold"] <= gen.min() and (imp >= r["threshold"]).sum() == int(far * len(imp))


def test_hand_computed_case():
    gen = np.array([0.9, 0.8, 0.6, 0.3])
    imp = np.array([0.7, 0.5, 0.2, 0.1])
    # accepting >= 0.6: one impostor (0.7) and one genuine miss (0.3) out of four each
    e, t = eer(gen, imp)
    assert e == pytest.approx(0.25)
    assert 0.5 < t <= 0.7
    r = tar_at_far(gen, imp, 0.25)  # one false accept allowed: threshold just above 0.5
    assert r["resolved"] and r["tar"] == pytest.approx(0.75) and r["fmr"] == pytest.approx(0.25)
    assert 0.5 < r["threshold"] < 0.5001
    r = tar_at_far(gen, imp, 0.1)  # finer than 1/4: cannot be measured with four impostor pairs
    assert not r["resolved"] and r["tar"] is None and "below the resolution" in r["note"]
    c = error_curves(gen, imp)
    assert np.all(np.diff(c.fmr) <= 0) and np.all(np.diff(c.fnmr) >= 0)
    assert c.fmr[0] == 1.0 and c.fnmr[0] == 0.0 and c.fmr[-1] == 0.0 and c.fnmr[-1] == 1.0
    i = int(np.searchsorted(c.threshold, 0.6))
    assert c.threshold[i] == 0.6 and c.fmr[i] == 0.25 and c.fnmr[i] == 0.25


def test_ties_never_exceed_the_far():
    gen = np.array([0.8, 0.8, 0.9])
    imp = np.array([0.8, 0.8, 0.1, 0.1])  # two impostors tied with two genuine scores
    r = tar_at_far(gen, imp, 0.25)  # one false accept allowed, but accepting 0.8 would let in two
    assert r["fmr"] == 0.0 and r["tar"] == pytest.approx(1 / 3)


def test_pair_scores_exact_and_capped():
    names, emb = clusters(7, [5, 1, 3, 2, 4, 1, 6], spread=0.3)
    g, i = pair_counts(names)
    gen, imp = all_pair_scores(names, emb, max_impostor=10**9)
    assert (len(gen), len(imp)) == (g, i) == (10 + 3 + 1 + 6 + 15, 231 - 35)
    full = emb @ emb.T
    same = np.array(names)[:, None] == np.array(names)[None, :]
    upper = np.triu(np.ones_like(same), 1)
    np.testing.assert_allclose(np.sort(gen), np.sort(full[upper & same]), atol=1e-6)
    np.testing.assert_allclose(np.sort(imp), np.sort(full[upper & ~same]), atol=1e-6)
    gen2, imp2 = all_pair_scores(names, emb, max_impostor=50)
    assert len(gen2) == g and 40 <= len(imp2) <= 50  # every 4th of 196
    np.testing.assert_array_equal(imp2, all_pair_scores(names, emb, max_impostor=50)[1])  # deterministic
    assert set(np.round(imp2, 5)) <= set(np.round(imp, 5))


# --- k-fold accuracy -------------------------------------------------------------------------------------------
def test_kfold_accuracy_on_synthetic_pairs():
    rng = np.random.default_rng(3)
    # scores: genuine ~ N(1, 0.5), impostor ~ N(-1, 0.5): the best threshold near 0 gives ~97.7% accuracy
    folds = [[(float(rng.normal(1, 0.5)), True) for _ in range(300)] + [(float(rng.normal(-1, 0.5)), False)
                                                                        for _ in range(300)] for _ in range(10)]
    acc, std, th = verification_accuracy(folds, lambda s: s)
    assert 0.965 < acc < 0.99 and std < 0.03 and abs(th) < 0.15
    # separable data: every fold perfect, the threshold between the classes
    sep = [[(0.9, True), (0.8, True), (0.2, False), (0.1, False)] for _ in range(5)]
    assert verification_accuracy(sep, lambda s: s) == (1.0, 0.0, pytest.approx(0.5))


def test_sample_pairs_balanced_folds():
    names, emb = clusters(12, 4, spread=0.03)
    folds = sample_pairs(names, folds=10, max_pairs=60)
    assert len(folds) == 10
    pairs = [p for f in folds for p in f]
    assert len(pairs) == 60 and len({(i, j) for i, j, _ in pairs}) == 60
    assert all((names[i] == names[j]) == same and i < j for i, j, same in pairs)
    assert all(sum(s for *_, s in f) * 2 == len(f) for f in folds)
    acc, _, _ = verification_accuracy(folds, lambda i, j: float(emb[i] @ emb[j]))
    assert acc == 1.0
    assert sample_pairs(["a", "a", "b"], folds=10) == []  # one same-person pair: no split possible
    lopsided = [p for f in sample_pairs(["a"] * 300 + ["b"], max_pairs=600) for p in f]  # every impostor pair
    assert sorted((i, j) for i, j, same in lopsided if not same) == [(i, 300) for i in range(300)]


def test_read_pairs(tmp_path):
    f = tmp_path / "pairs.txt"
    f.write_text("2\t1\nAnn\t1\t2\nAnn\t1\tBob\t3\nCy\t2\t4\nBob\t1\tCy\t1\n")
    assert read_pairs(f) == [[("Ann", 1, "Ann", 2, True), ("Ann", 1, "Bob", 3, False)],
                             [("Cy", 2, "Cy", 4, True), ("Bob", 1, "Cy", 1, False)]]


# --- open-set identification -----------------------------------------------------------------------------------
def test_open_set_on_clusters():
    names, emb = clusters(40, [4] * 20 + [1] * 20)
    r = open_set(names, emb, np.random.default_rng(0))
    assert r["gallery"] == 20 + 10 and r["mated_probes"] == 60 and r["nonmated_probes"] == 10
    assert r["rank1"] == 1.0 and r["fnir_at_fpir_1pct"] == 0.0 and r["nonmated_from"] == "single-image people"
    # noisy clusters: some mated probes land on the wrong person, FNIR rises
    names, emb = clusters(40, [4] * 20 + [1] * 20, spread=0.2)
    noisy = open_set(names, emb, np.random.default_rng(0))
    assert noisy["rank1"] < 1.0 and noisy["fnir_at_fpir_1pct"] > 0.0


def test_open_set_without_single_image_people_holds_people_out():
    names, emb = clusters(8, 3)
    r = open_set(names, emb, np.random.default_rng(0))
    assert r["held_out_people"] == 2 and r["nonmated_probes"] == 6 and r["gallery"] == 6
    assert r["mated_probes"] == 12 and r["rank1"] == 1.0 and r["fnir_at_fpir_1pct"] == 0.0
    assert r["nonmated_from"].startswith("held-out")


# --- labelled folders ------------------------------------------------------------------------------------------
def _img(path: Path, value: int = 128) -> None:
    Image.fromarray(np.full((64, 64, 3), value, np.uint8)).save(path)


def test_load_labelled_and_its_errors(tmp_path):
    (tmp_path / "alice").mkdir()
    _img(tmp_path / "alice" / "a.png")
    (tmp_path / "alice" / "notes.txt").write_text("not an image")
    with pytest.raises(EvaluationError, match="at least 2"):  # one person
        load_labelled(tmp_path)
    (tmp_path / "bob").mkdir()
    _img(tmp_path / "bob" / "b.JPG")
    with pytest.raises(EvaluationError, match="2 or more images") as e:  # nobody with two images
        load_labelled(tmp_path)
    assert isinstance(e.value, FaceIndexError) and e.value.exit_code == 65
    (tmp_path / "bob" / "sub").mkdir()
    _img(tmp_path / "bob" / "sub" / "c.webp")
    _img(tmp_path / "loose.png")  # not in a person folder: ignored
    items = load_labelled(tmp_path)
    assert [(p, f.name) for p, f in items] == [("alice", "a.png"), ("bob", "b.JPG"), ("bob", "c.webp")]
    with pytest.raises(EvaluationError, match="not found"):
        load_labelled(tmp_path / "missing")


def test_evaluate_one_person_is_a_clear_error(tmp_path):
    (tmp_path / "only").mkdir()
    for i in range(3):
        _img(tmp_path / "only" / f"{i}.png", 40 * i)
    with pytest.raises(EvaluationError, match="person folder"):
        evaluate(tmp_path, Settings(), tmp_path / "out", workers=1)
    assert not (tmp_path / "out").exists()


# --- end to end on real faces ----------------------------------------------------------------------------------
PEOPLE = ["Colin_Powell", "Tony_Blair", "Donald_Rumsfeld", "Gerhard_Schroeder", "Ariel_Sharon", "Hugo_Chavez"]


@pytest.mark.skipif(not LFW.is_dir(), reason=f"LFW images not found at {LFW} (../shared/data)")
def test_evaluate_end_to_end_on_lfw(tmp_path):
    root = tmp_path / "labelled"
    for name in PEOPLE:  # 6 people x 4 images
        (root / name).mkdir(parents=True)
        for i in range(1, 5):
            src = LFW / name / f"{name}_{i:04d}.jpg"
            (root / name / src.name).symlink_to(src)
    singles = []
    for d in sorted(LFW.iterdir()):  # 6 single-image people
        files = list(d.glob("*.jpg"))
        if len(files) == 1:
            singles.append(files[0])
            if len(singles) == 6:
                break
    for f in singles:
        (root / f.parent.name).mkdir()
        (root / f.parent.name / f.name).symlink_to(f)
    (root / PEOPLE[0] / "broken.jpg").write_bytes(b"not a jpeg")  # a bad file and a faceless image: failures
    _img(root / PEOPLE[1] / "blank.png")

    events = []
    out = tmp_path / "report"
    r = evaluate(root, Settings(), out, workers=2, progress=lambda e, info: events.append(e))
    assert events.count("file") == 32 and events[0] == "scan"

    saved = json.loads((out / "evaluation.json").read_text())
    assert saved["counts"] == r["counts"]
    c = r["counts"]
    assert (c["people"], c["images"], c["embedded"], c["failures"]) == (12, 32, 30, 2)
    assert (c["genuine_pairs"], c["impostor_pairs"], c["single_image_people"]) == (36, 30 * 29 // 2 - 36, 6)
    assert {Path(f["path"]).name for f in saved["failures"]} == {"broken.jpg", "blank.png"}
    assert any("no face" in f["reason"] for f in saved["failures"])
    v = saved["verification"]
    assert 0.0 <= v["eer"] < 0.1  # six well-known people: the model separates them
    assert v["fmr_resolution"] == pytest.approx(1 / c["impostor_pairs"])
    # 399 impostor pairs cannot resolve FAR 1e-3 or 1e-4: said so, and no number is made up
    assert [(t["far"], t["resolved"], t["tar"]) for t in v["tar_at_far"]] == [(1e-3, False, None), (1e-4, False, None)]
    assert any("below the resolution" in w for w in saved["warnings"])
    assert saved["kfold"]["folds"] == 10 and saved["kfold"]["accuracy"] > 0.9
    o = saved["open_set"]
    assert (o["gallery"], o["mated_probes"], o["nonmated_probes"]) == (9, 18, 3) and o["rank1"] > 0.9
    assert len(saved["curves"]["fmr"]) == len(saved["curves"]["fnmr"]) > 10
    assert saved["settings"]["model"] is None and saved["model"] == "yunet-omz95@1/256"  # the default pack

    png = out / "evaluation.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(png) as im:
        assert im.format == "PNG" and im.width >= 1000 and im.height >= 700

    data = tmp_path / "data"
    path = write_calibration(Calibration.from_json(r["calibration"]["table"]), data)
    assert path == data / "calibration.json"
    cal = calibration.load("yunet-omz95", path)
    assert cal.impostor_pairs == c["impostor_pairs"] and cal.genuine_pairs == 36  # ours, not the shipped table
    f = np.asarray(cal.fmr_at(np.linspace(-1.0, 1.0, 401)))
    assert np.all(np.diff(f) <= 0) and f[0] > 0.99 and f[-1] == pytest.approx(cal.fmr_floor)
