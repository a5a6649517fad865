"""People: group faces into people (full or incremental), list and show them, name, merge and split them.

The algorithm is in `cluster.py` (reciprocal average linkage over the k-NN graph); what is kept beyond
face -> person (reviewers' merges and splits, each person's cohesion) in `people_store.py`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np

from . import people_store, privacy
from .cluster import Threshold, group_faces, knn_pairs
from .errors import CatalogError, PolicyError
from .text import check_text
from .types import Person

if TYPE_CHECKING:
    from .catalog import FaceRecord
    from .engine import FaceIndex

# Merge thresholds, all as false-match rates of the model's calibration (so they suit every model pack):
PAIR_FMR = 1e-4  # two single faces: at most this FMR ...
PER_FACE = 0.1  # ... and at most this many chance matches per face in the collection (FMR x faces)
RHO = 0.8  # how fast the bar falls for bigger groups (see cluster.Threshold), measured on LFW's dev split
K = 20  # neighbours per face in the candidate graph


def threshold(fi: FaceIndex, n: int) -> Threshold:
    """The merge threshold for a collection of n faces, from the model's calibration."""
    cal = fi.calibration
    fmr = max(cal.fmr_floor, min(PAIR_FMR, PER_FACE / max(n, 1)))
    return Threshold(cal.threshold_for(fmr), cal.threshold_for(0.5), RHO)


def _faces(fi: FaceIndex) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(face ids ascending, image ids, embeddings) of the searchable faces (low-quality faces are left out)."""
    ids, image_ids = fi.catalog.face_image_ids()
    keep = ~np.isin(ids, fi.catalog.low_quality_ids(fi.settings.min_quality))
    ids, image_ids = ids[keep], image_ids[keep]
    if not len(ids):
        return ids, image_ids, np.zeros((0, fi.spec.dim), np.float32)
    # one pass over every face (in id order) beats asking for the searchable ones by id, 900 at a time
    got, vecs = fi.vectors.all_embeddings()
    pos = np.searchsorted(got, ids)
    if len(got) < len(ids) or not np.array_equal(got[np.minimum(pos, len(got) - 1)], ids):
        raise CatalogError("the catalog changed while reading its faces: run again")
    return ids, image_ids, vecs if len(got) == len(ids) else vecs[pos]


def _constraints(fi: FaceIndex, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Must-link and cannot-link pairs (rows into `ids`) from reviewers' merges and splits."""
    bfaces, bblocks, apart = people_store.constraints(fi.catalog)
    present = np.isin(bfaces, ids)
    pos, blk = np.searchsorted(ids, bfaces[present]), bblocks[present]
    o = np.lexsort((pos, blk))
    pos, blk = pos[o], blk[o]
    same = np.nonzero(blk[1:] == blk[:-1])[0]
    must = np.stack([pos[same], pos[same + 1]], 1)
    # one face stands for its block: blocks are must-linked, so keeping two faces apart keeps the blocks apart
    heads = np.concatenate([[True], blk[1:] != blk[:-1]]) if len(blk) else np.zeros(0, bool)
    rep = dict(zip(blk[heads].tolist(), pos[heads].tolist()))
    cannot = [(rep[a], rep[b]) for a, b in apart.tolist() if a in rep and b in rep]
    return must.reshape(-1, 2), np.array(cannot, np.int64).reshape(-1, 2)


def run(fi: FaceIndex, full: bool = False) -> dict:
    """Group faces into people. Incremental by default: faces not yet in a person join the person they match
    best or form new people, and existing people are neither merged nor split. `full` re-clusters every face;
    names carry over to the group holding most of the person's faces. Reviewers' merges and splits hold in both."""
    ids, image_ids, vecs = _faces(fi)
    tau = threshold(fi, len(ids))
    must, cannot = _constraints(fi, ids)
    assigned = people_store.assignments(fi.catalog)
    person = np.array([assigned.get(i, -1) for i in ids.tolist()], np.int64)
    new = person < 0
    if not full and (~new).any():
        if not new.any():
            return {"mode": "incremental", "faces": 0, "joined": 0, "new_people": 0}
        _, initial = np.unique(np.where(new, -1, person), return_inverse=True)
        initial = np.where(new, -1, initial)
        # only the new faces look for neighbours (among all faces): the old ones keep their people
        a, b, s = knn_pairs(vecs, K + 1, float(tau.group), queries=vecs[new])
        res = group_faces(vecs, image_ids, tau, must=must, cannot=cannot, initial=initial, frozen=~new,
                      edges=(np.nonzero(new)[0][a], b, s))
        touched = np.unique(res.labels[new])
        old_coh = people_store.cohesion(fi.catalog)
        groups = []
        joined = 0
        # the faces of each touched group, from one sort (not one pass over every face per group)
        rows = np.nonzero(np.isin(res.labels, touched))[0]
        rows = rows[np.argsort(res.labels[rows], kind="stable")]
        bounds = np.searchsorted(res.labels[rows], np.append(touched, touched[-1] + 1))
        for i, lab in enumerate(touched.tolist()):
            members = rows[bounds[i]:bounds[i + 1]]
            olds = np.unique(person[members[~new[members]]])
            pid = int(olds[0]) if len(olds) else None
            joined += int(new[members].sum()) if pid is not None else 0
            c = float(res.cohesion[lab])
            if pid is not None:
                c = min(c, old_coh.get(pid, 1.0))
            groups.append((pid, ids[members].tolist(), c))
        people_store.store(fi.catalog, groups, replace=False)
        return {"mode": "incremental", "faces": int(new.sum()), "joined": joined,
                "new_people": sum(1 for g in groups if g[0] is None)}
    res = group_faces(vecs, image_ids, tau, k=K, must=must, cannot=cannot)
    order = np.argsort(res.labels, kind="stable")
    bounds = np.searchsorted(res.labels[order], np.arange(res.labels.max() + 2 if len(ids) else 1))
    members = [ids[order[bounds[g]:bounds[g + 1]]].tolist() for g in range(len(bounds) - 1)]
    keep = carry_over(person, res.labels, set(fi.catalog.person_names()) | set(assigned.values()))
    groups = [(keep[g], members[g], float(res.cohesion[g])) for g in range(len(members))]
    people_store.store(fi.catalog, groups, replace=True)
    return {"mode": "full", "faces": len(ids), "people": len(groups), "rounds": res.rounds}


def carry_over(old: np.ndarray, labels: np.ndarray, keep: set[int]) -> list[int | None]:
    """Old person id for each new group (largest overlap first, each id once), so ids and names survive.

    `old` is each face's previous person (-1 for none); only ids in `keep` are carried."""
    m = int(labels.max()) + 1 if len(labels) else 0
    result: list[int | None] = [None] * m
    has = old >= 0
    if not has.any():
        return result
    pairs, counts = np.unique(np.stack([labels[has], old[has]], 1), axis=0, return_counts=True)
    used: set[int] = set()
    for i in np.argsort(-counts, kind="stable").tolist():
        g, pid = int(pairs[i, 0]), int(pairs[i, 1])
        if result[g] is None and pid not in used and pid in keep:
            result[g] = pid
            used.add(pid)
    return result


def _mean_links(fi, face_sets: list[list[int]]) -> float:
    """The weakest mean similarity between any two of the face sets."""
    sums = []
    for faces in face_sets:
        vecs = np.concatenate([v for _, v in fi.catalog.embeddings(faces, dim=fi.spec.dim)])
        sums.append((vecs.sum(0), len(vecs)))
    worst = 1.0
    for i in range(len(sums)):
        for j in range(i + 1, len(sums)):
            worst = min(worst, float(sums[i][0] @ sums[j][0]) / (sums[i][1] * sums[j][1]))
    return worst


def cluster(fi: FaceIndex, full: bool = False, *, purpose: str | None = None,
            case: str | None = None, limit: int | None = None) -> list[Person]:
    """Group faces into people (see `run`) and list them (the `limit` largest). Audited."""
    fi._allow("people")
    summary = run(fi, full)
    found = people(fi, limit, audit=False)
    count = len(found) if not limit else people_store.count(fi.catalog)
    fi._record("people.cluster", purpose, case, {"people": count, **summary, "gallery": fi._gallery_state()})
    return found


def _person(fi: FaceIndex, pid: int, name: str | None, n_faces: int, n_images: int, samples: tuple[int, ...],
            coh: float | None) -> Person:
    if coh is None or n_faces < 2:
        return Person(pid, name, n_faces, n_images, samples)
    return Person(pid, name, n_faces, n_images, samples, round(float(coh), 5), float(fi.calibration.fmr_at(coh)))


def people(fi: FaceIndex, limit: int | None = None, min_faces: int = 1,
           sort: Literal["size", "weakest"] = "size", *, purpose: str | None = None, case: str | None = None,
           audit: bool = True) -> list[Person]:
    """People by size, largest first; or, with sort="weakest", the least cohesive first (to review). Audited (one
    record naming the people listed), unless `audit` is False for a caller that records the listing itself."""
    fi._allow("people")
    rows = fi.catalog.people(None if sort == "weakest" else limit, min_faces)
    coh = people_store.cohesion(fi.catalog, [r[0] for r in rows] if limit and sort == "size" else None)
    if sort == "weakest":
        def weakest(r: tuple) -> tuple:
            c = coh.get(r[0])
            return (round(float(c), 5) if c is not None and r[2] >= 2 else 2.0, -r[2], r[0])
        rows = sorted(rows, key=weakest)[:limit] if limit else sorted(rows, key=weakest)
    # samples of the people listed only (a million people's would take longer than the listing)
    samples = fi.catalog.sample_faces(person_ids=[r[0] for r in rows] if limit else None)
    hidden = privacy.opted_out(fi, [f for s in samples.values() for f in s])
    out = [_person(fi, pid, name, n_faces, n_images, tuple(f for f in samples.get(pid, ()) if f not in hidden),
                   coh.get(pid))
           for pid, name, n_faces, n_images in rows]
    if audit:
        fi._record("people.list", purpose, case, {"people": [p.id for p in out], "min_faces": min_faces})
    return out


def person(fi: FaceIndex, person_id: int, *, purpose: str | None = None, case: str | None = None,
           audit: bool = True) -> tuple[Person, list[FaceRecord]]:
    """A person and their faces. Audited (the face ids shown)."""
    fi._allow("people")
    name, faces = fi.catalog.person(person_id)
    hidden = privacy.opted_out(fi, [f.id for f in faces])
    faces = [f for f in faces if f.id not in hidden]
    if audit:
        fi._record("people.show", purpose, case, {"person_id": person_id, "face_ids": [f.id for f in faces]})
    coh = people_store.cohesion(fi.catalog, [person_id]).get(person_id)
    return _person(fi, person_id, name, len(faces), len({f.image_id for f in faces}),
                   tuple(f.id for f in faces[:8]), coh), faces


def name_person(fi: FaceIndex, person_id: int, name: str | None, *, purpose: str | None = None,
                case: str | None = None) -> None:
    """Name a person (None removes the name). Audited."""
    fi._allow("people")
    name = check_text(name, "a person's name", optional=True)
    fi.catalog.name_person(person_id, name)
    fi._record("people.name", purpose, case, {"person_id": person_id, "name": name})


def merge_people(fi: FaceIndex, person_ids: list[int]) -> Person:
    """Merge people into the first one given (its name wins, else the first name found), for good: later
    clusterings never split them. Refused when two of them appear in one photo."""
    fi._allow("people")
    ids = list(dict.fromkeys(person_ids))
    if len(ids) < 2:
        raise ValueError("give at least two different people to merge")
    names = {}
    for pid in ids:
        names[pid], _ = fi.catalog.person(pid)  # NotFoundError for unknown ids
    rows = fi.catalog.person_face_images(ids)
    seen: dict[int, int] = {}
    for pid, _fid, image_id in rows:
        if seen.setdefault(image_id, pid) != pid:
            raise PolicyError(f"people {seen[image_id]} and {pid} both appear in image {image_id}: "
                              "they cannot be one person")
    target = ids[0]
    by_person: dict[int, list[int]] = {}
    for pid, fid, _ in rows:
        by_person.setdefault(pid, []).append(fid)
    coh = people_store.cohesion(fi.catalog, ids)
    weakest = min([_weakest_link(fi, list(by_person.values()))] + [coh.get(p, 1.0) for p in ids])
    with fi.catalog.transaction():
        fi.catalog.move_faces([fid for pid, fid, _ in rows if pid != target], target)
        people_store.join(fi.catalog, [fid for _, fid, _ in rows])
        people_store.store(fi.catalog, [(target, [fid for _, fid, _ in rows], weakest)], replace=False)
        if names[target] is None:
            name = next((n for n in names.values() if n), None)
            if name:
                fi.catalog.name_person(target, name)
    fi._record("people.merge", details={"into": target, "merged": ids[1:]})
    return fi.person(target, audit=False)[0]


def split_person(fi: FaceIndex, person_id: int, face_ids: list[int]) -> Person:
    """Move some faces of a person into a new person, for good: later clusterings keep the two parts apart
    (and each part together). Returns the new person."""
    fi._allow("people")
    _, faces = fi.catalog.person(person_id)
    own = {f.id for f in faces}
    stray = [f for f in face_ids if f not in own]
    if stray:
        raise ValueError(f"faces {stray[:5]} do not belong to person {person_id}")
    part = list(dict.fromkeys(face_ids))
    if set(part) >= own:
        raise ValueError("a split must leave at least one face with the person")
    rest = [f.id for f in faces if f.id not in set(part)]
    with fi.catalog.transaction():
        new = fi.catalog.move_faces(part)
        people_store.separate(fi.catalog, part, rest)
        people_store.store(fi.catalog, [(new, part, _internal(fi, part)), (person_id, rest, _internal(fi, rest))],
                           replace=False)
    fi._record("people.split", details={"from": person_id, "to": new, "face_ids": face_ids})
    return fi.person(new, audit=False)[0]


def _sums(fi: FaceIndex, faces: list[int]) -> tuple[np.ndarray, int]:
    _, vecs = fi.vectors.all_embeddings(faces)
    return vecs.astype(np.float64).sum(0), len(vecs)


def _weakest_link(fi: FaceIndex, face_sets: list[list[int]]) -> float:
    """The lowest mean similarity between two of the face sets."""
    sums = [_sums(fi, faces) for faces in face_sets]
    worst = 1.0
    for i in range(len(sums)):
        for j in range(i + 1, len(sums)):
            worst = min(worst, float(sums[i][0] @ sums[j][0]) / max(1, sums[i][1] * sums[j][1]))
    return worst


def _internal(fi: FaceIndex, faces: list[int]) -> float:
    """Mean similarity between two different faces of a set (1.0 for one face)."""
    s, n = _sums(fi, faces)
    return 1.0 if n < 2 else float((s @ s - n) / (n * (n - 1)))
