"""People clustering: no chaining through bridges, constraints kept, reviewers' decisions survive, LFW floor."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from faceindex import FaceIndex, cluster
from faceindex.cluster import components, group_faces

from .conftest import LFW, lfw, needs_lfw, person_of

D = 128
TAU = 0.9


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _tight(centre: np.ndarray, n: int, rng: np.random.Generator, spread: float = 0.02) -> np.ndarray:
    return _unit(centre + rng.normal(scale=spread, size=(n, D)))


def _bridge_gallery(rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """Two tight people 0.5 apart, joined by a chain of 40 faces whose neighbours are all above TAU."""
    a, b = _unit(rng.normal(size=D)), _unit(rng.normal(size=D))
    chain = _unit(np.array([a * (1 - t) + b * t for t in np.linspace(0.02, 0.98, 40)]))
    return np.concatenate([_tight(a, 25, rng), _tight(b, 25, rng), chain]), 25


def test_a_chain_of_faces_does_not_join_two_people():
    rng = np.random.default_rng(1)
    vecs, n = _bridge_gallery(rng)
    # the gallery is a real bridge: every face is linked above the threshold to the next one
    sims = vecs @ vecs.T
    i, j = np.nonzero(np.triu(sims >= TAU, 1))
    assert components(len(vecs), i, j).max() == 0, "single linkage would make one person of everyone"
    res = group_faces(vecs, np.arange(len(vecs)), TAU)
    la, lb = res.labels[:n], res.labels[n:2 * n]
    assert len(set(la.tolist())) == 1 and len(set(lb.tolist())) == 1  # each person found whole
    assert la[0] != lb[0]  # and the two stay two people
    # every group's faces are similar on average, however long the chain
    for lab in np.unique(res.labels):
        g = vecs[res.labels == lab]
        if len(g) > 1:
            assert (g.sum(0) @ g.sum(0) - len(g)) / (len(g) * (len(g) - 1)) >= TAU - 1e-6
    assert res.cohesion.min() >= TAU - 1e-6 and res.cohesion.max() <= 1.0


def test_faces_of_one_photo_are_never_one_person():
    rng = np.random.default_rng(2)
    c = _unit(rng.normal(size=D))
    vecs = _tight(c, 6, rng, 0.005)  # six near-identical faces ...
    image_ids = np.array([0, 0, 1, 2, 3, 3])  # ... two photos show two of them together (twins, a mirror)
    res = group_faces(vecs, image_ids, TAU)
    assert res.labels[0] != res.labels[1] and res.labels[4] != res.labels[5]
    for img in np.unique(image_ids):
        labs = res.labels[image_ids == img]
        assert len(set(labs.tolist())) == len(labs)
    assert len(np.unique(res.labels)) == 2  # the others join one of the two


def test_must_and_cannot_links_are_obeyed():
    rng = np.random.default_rng(3)
    a, b = _unit(rng.normal(size=D)), _unit(rng.normal(size=D))
    vecs = np.concatenate([_tight(a, 5, rng), _tight(b, 5, rng)])
    ids = np.arange(10)
    free = group_faces(vecs, ids, TAU).labels
    assert len(set(free[:5].tolist())) == 1 and free[0] != free[5]
    # a reviewer merged a face of b into a, and split a's first two faces off
    res = group_faces(vecs, ids, TAU, must=np.array([[0, 9]]), cannot=np.array([[1, 2]]))
    assert res.labels[0] == res.labels[9]
    assert res.labels[1] != res.labels[2]


def test_frozen_people_stay_apart_and_new_faces_join_the_best():
    rng = np.random.default_rng(4)
    a = _unit(rng.normal(size=D))
    b = _unit(a + rng.normal(scale=0.03, size=D))  # a look-alike: the two people are similar
    old = np.concatenate([_tight(a, 6, rng), _tight(b, 6, rng)])
    new = np.concatenate([_tight(a, 2, rng), _tight(_unit(rng.normal(size=D)), 2, rng)])
    vecs = np.concatenate([old, new])
    initial = np.array([0] * 6 + [1] * 6 + [-1] * 4)
    frozen = initial >= 0
    assert group_faces(old, np.arange(12), 0.85).labels.max() == 0  # unfrozen, the look-alikes would merge
    res = group_faces(vecs, np.arange(16), 0.85, initial=initial, frozen=frozen)
    lab = res.labels
    assert len(set(lab[:6].tolist())) == 1 and len(set(lab[6:12].tolist())) == 1 and lab[0] != lab[6]
    assert lab[12] == lab[0] and lab[13] == lab[0]  # new photos of a join a
    assert lab[14] == lab[15] and lab[14] not in (lab[0], lab[6])  # a newcomer forms a new person


def test_components():
    assert components(5, np.array([0, 3, 4]), np.array([1, 4, 3])).tolist() == [0, 0, 1, 2, 2]
    assert components(3, np.zeros(0, int), np.zeros(0, int)).tolist() == [0, 1, 2]


# --- over a real index: reviewers' decisions, names, incremental runs, quality --------------------------------
A, B, C, NEWCOMER = "Colin_Powell", "Tony_Blair", "Serena_Williams", "Gerhard_Schroeder"
N = 6


@pytest.fixture(scope="module")
def small_index(tmp_path_factory) -> Path:
    """A data folder with N photos of each of A, B and C, built once; tests work on copies."""
    if not LFW.is_dir():
        pytest.skip(f"LFW images not found at {LFW} (../shared/data)")
    root = tmp_path_factory.mktemp("people")
    photos = root / "photos"
    for name in (A, B, C):
        (photos / name).mkdir(parents=True)
        for i in range(1, N + 1):
            (photos / name / lfw(name, i).name).symlink_to(lfw(name, i))
    with FaceIndex.open(root / "data") as fi:
        assert fi.add([photos], "lfw", workers=2).ok
    return root / "data"


@pytest.fixture()
def fi(small_index, tmp_path):
    shutil.copytree(small_index, tmp_path / "data")
    with FaceIndex.open(tmp_path / "data") as index:
        yield index


def _faces_of(fi, name: str) -> list[int]:
    rows = fi.catalog.db.execute(
        "SELECT f.id FROM faces f JOIN files fl ON fl.image_id = f.image_id WHERE fl.path LIKE ? AND f.idx = 0 "
        "ORDER BY f.id", (f"%/{name}_%",)).fetchall()
    return [r[0] for r in rows]


def _person_of(fi, face_ids: list[int]) -> list[int | None]:
    return [fi.catalog.face_record(f).person_id for f in face_ids]


def _main_person(fi, name: str) -> int:
    pids = [p for p in _person_of(fi, _faces_of(fi, name)) if p is not None]
    return max(set(pids), key=pids.count)


def _members(fi, pid: int) -> list[int]:
    return sorted(f.id for f in fi.person(pid)[1])


@needs_lfw
def test_each_person_found_and_cohesion_shown(fi):
    fi.cluster(full=True)
    mains = {name: _main_person(fi, name) for name in (A, B, C)}
    assert len(set(mains.values())) == 3
    for name, pid in mains.items():
        assert len(set(_members(fi, pid)) & set(_faces_of(fi, name))) >= N - 1, name  # a hard photo may stay alone
        assert set(_members(fi, pid)) <= set(_faces_of(fi, name)), name  # and nobody else is in the group
    found = fi.people(min_faces=2)
    assert {p.id for p in found} == set(mains.values())
    for p in found:
        assert p.cohesion is not None and 0 < p.cohesion <= 1
        assert p.cohesion_fmr == pytest.approx(float(fi.calibration.fmr_at(p.cohesion)), rel=0.01)
        assert p.cohesion >= fi.calibration.threshold_for(0.01)  # no merge of dissimilar groups
    weakest = fi.people(min_faces=2, sort="weakest")
    assert [p.cohesion for p in weakest] == sorted(p.cohesion for p in found)
    # a limited listing is the head of the whole one (samples fetched for the listed people only)
    for sort, whole in (("size", found), ("weakest", weakest)):
        assert fi.people(2, min_faces=2, sort=sort) == whole[:2]
    assert fi.people(1, min_faces=N + 1) == [p for p in found if p.face_count >= N + 1][:1]
    assert fi.person(found[0].id)[0].cohesion == found[0].cohesion


@needs_lfw
def test_manual_split_is_never_undone_and_names_stay(fi):
    fi.cluster(full=True)
    pid = _main_person(fi, A)
    fi.name_person(pid, "Colin")
    members = _members(fi, pid)
    part, rest = members[:2], members[2:]
    new = fi.split_person(pid, part)
    for full in (True, False, True):  # full and incremental runs alike
        fi.cluster(full=full)
        assert set(_person_of(fi, part)) == {new.id}
        assert set(_person_of(fi, rest)) == {pid}
        assert fi.person(pid)[0].name == "Colin"


@needs_lfw
def test_manual_merge_is_never_split(fi):
    fi.cluster(full=True)
    a, c = _main_person(fi, A), _main_person(fi, C)
    both = _members(fi, a) + _members(fi, c)
    fi.name_person(c, "Serena")
    merged = fi.merge_people([a, c])  # the reviewer's word wins, even over the clustering
    assert merged.id == a and merged.name == "Serena"
    for full in (True, False):
        fi.cluster(full=full)
        assert set(_person_of(fi, both)) == {a}
        assert _main_person(fi, B) != a


@needs_lfw
@pytest.mark.parametrize("exact_limit", [None, 8], ids=["exact", "list-join"])
def test_incremental_add_joins_the_right_person(fi, tmp_path, monkeypatch, exact_limit):
    if exact_limit:  # the k-NN pairs of a large collection (cluster.knn_pairs's list join), full and incremental
        monkeypatch.setattr(cluster, "EXACT_LIMIT", exact_limit)
    fi.cluster(full=True)
    before = {name: _main_person(fi, name) for name in (A, B, C)}
    members = {pid: _members(fi, pid) for pid in before.values()}
    fi.name_person(before[B], "Tony")
    more = tmp_path / "more"
    more.mkdir()
    for name, i in ((B, N + 1), (B, N + 2), (NEWCOMER, 1), (NEWCOMER, 2), (NEWCOMER, 3)):
        (more / lfw(name, i).name).symlink_to(lfw(name, i))
    assert fi.add([more], "more", workers=1).ok
    new_b = [f for f in _faces_of(fi, B) if fi.catalog.face_record(f).person_id is None]
    assert len(new_b) >= 2 and all(p is None for p in _person_of(fi, _faces_of(fi, NEWCOMER)))
    fi.cluster()
    joined = set(_person_of(fi, new_b))
    assert before[B] in joined  # B's new photos joined B (who kept the name) ...
    for pid in joined:  # ... or B's lone hard photo; never anyone else
        assert set(_members(fi, pid)) <= set(_faces_of(fi, B))
    assert fi.person(before[B])[0].name == "Tony"
    newcomer = _person_of(fi, _faces_of(fi, NEWCOMER))
    assert max(newcomer.count(p) for p in set(newcomer)) >= 2  # the newcomer is a new person ...
    assert set(newcomer).isdisjoint(before.values())  # ... joined to nobody known
    for pid, faces in members.items():  # the others keep their faces
        assert set(_person_of(fi, faces)) == {pid}


@needs_lfw
def test_quality_floor_on_real_faces(built_index):
    """BCubed precision and recall over ~250 LFW faces of 10 people and 80 strangers (measured: see docs)."""
    built_index.cluster(full=True)
    rows = built_index.catalog.db.execute(
        "SELECT f.person_id, fl.path FROM faces f JOIN files fl ON fl.image_id = f.image_id WHERE f.idx = 0 "
        "AND f.person_id IS NOT NULL").fetchall()
    labels = np.array([r[0] for r in rows])
    truth = np.unique([person_of(r[1]) for r in rows], return_inverse=True)[1]
    p, r = _bcubed(labels, truth)
    print(f"BCubed precision {p:.3f} recall {r:.3f} over {len(rows)} faces")
    assert p >= 0.95 and r >= 0.8, (p, r)


def _bcubed(labels: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    pair = labels.astype(np.int64) * (truth.max() + 1) + truth
    _, cell, n_cl = np.unique(pair, return_inverse=True, return_counts=True)
    n_c = np.unique(labels, return_inverse=True, return_counts=True)
    n_l = np.unique(truth, return_inverse=True, return_counts=True)
    return (float((n_cl[cell] / n_c[2][n_c[1]]).mean()), float((n_cl[cell] / n_l[2][n_l[1]]).mean()))


@needs_lfw
def test_cli_full_and_weakest_first(small_index, tmp_path):
    from .test_cli import run

    data = tmp_path / "data"
    shutil.copytree(small_index, data)
    listed = json.loads(run("people", "--full", "--weakest", "--json", data=data, check=0).stdout)
    assert len(listed) == 3
    cohesion = [p["cohesion"] for p in listed]
    assert cohesion == sorted(cohesion) and all(0 < p["cohesion_fmr"] < 1 for p in listed)
    shown = run("people", "show", listed[0]["id"], data=data, check=0).stdout
    assert "weakest link: FMR" in shown
