"""People: group faces into people, list and show them, name, merge and split them."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from . import cluster as clustering
from . import privacy
from .errors import PolicyError
from .text import check_text
from .types import Person

if TYPE_CHECKING:
    from .catalog import FaceRecord
    from .engine import FaceIndex

CLUSTER_FMR = 1e-4  # edges of the people graph: pairs at least this unlikely to be different people


def cluster(fi: FaceIndex, *, purpose: str | None = None, case: str | None = None) -> list[Person]:
    """Group all searchable faces into people; names given earlier stay with their people. Audited."""
    fi._allow("people")
    ids, image_ids = fi.catalog.face_image_ids()
    low = set(fi.catalog.low_quality_ids(fi.settings.min_quality).tolist())
    keep = np.array([i not in low for i in ids.tolist()], dtype=bool)
    ids, image_ids = ids[keep], image_ids[keep]
    got, vecs = fi.vectors.all_embeddings(ids.tolist())
    assert np.array_equal(got, ids)
    threshold = fi.calibration.threshold_for(CLUSTER_FMR)
    labels = clustering.cluster(vecs, image_ids, threshold)
    groups: dict[int, list[int]] = {}
    for fid, lab in zip(ids.tolist(), labels.tolist()):
        groups.setdefault(lab, []).append(fid)
    new_groups = sorted(groups.values(), key=len, reverse=True)
    old = fi.catalog.people_faces()
    named = set(fi.catalog.person_names())
    mapping = clustering.carry_over(old, new_groups, named)
    fi.catalog.replace_people(list(zip(mapping, new_groups)))
    found = people(fi, audit=False)
    fi._record("people.cluster", purpose, case, {"people": len(found), "faces": int(len(ids)),
                                                  "gallery": fi._gallery_state()})
    return found


def people(fi: FaceIndex, limit: int | None = None, min_faces: int = 1, *, purpose: str | None = None,
           case: str | None = None, audit: bool = True) -> list[Person]:
    """People by size, largest first. Audited (one record naming the people listed), unless `audit` is False for
    a caller that records the listing itself."""
    fi._allow("people")
    out = []
    samples = fi.catalog.sample_faces()
    hidden = privacy.opted_out(fi, [f for s in samples.values() for f in s])
    for pid, name, n_faces, n_images in fi.catalog.people(limit):
        if n_faces >= min_faces:
            shown = tuple(f for f in samples.get(pid, ()) if f not in hidden)
            out.append(Person(pid, name, n_faces, n_images, shown))
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
    return Person(person_id, name, len(faces), len({f.image_id for f in faces}),
                  tuple(f.id for f in faces[:8])), faces


def name_person(fi: FaceIndex, person_id: int, name: str | None, *, purpose: str | None = None,
                case: str | None = None) -> None:
    """Name a person (None removes the name). Audited."""
    fi._allow("people")
    name = check_text(name, "a person's name", optional=True)
    fi.catalog.name_person(person_id, name)
    fi._record("people.name", purpose, case, {"person_id": person_id, "name": name})


def merge_people(fi: FaceIndex, person_ids: list[int]) -> Person:
    """Merge people into the first one given (its name wins, else the first name found). Refused when two
    of them appear in one photo: a photo never shows the same person twice."""
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
    fi.catalog.move_faces([fid for pid, fid, _ in rows if pid != target], target)
    if names[target] is None:
        name = next((n for n in names.values() if n), None)
        if name:
            fi.catalog.name_person(target, name)
    fi._record("people.merge", details={"into": target, "merged": ids[1:]})
    return fi.person(target, audit=False)[0]


def split_person(fi: FaceIndex, person_id: int, face_ids: list[int]) -> Person:
    """Move some faces of a person into a new person; returns the new person."""
    fi._allow("people")
    _, faces = fi.catalog.person(person_id)
    own = {f.id for f in faces}
    stray = [f for f in face_ids if f not in own]
    if stray:
        raise ValueError(f"faces {stray[:5]} do not belong to person {person_id}")
    if set(face_ids) >= own:
        raise ValueError("a split must leave at least one face with the person")
    new = fi.catalog.move_faces(list(dict.fromkeys(face_ids)))
    fi._record("people.split", details={"from": person_id, "to": new, "face_ids": face_ids})
    return fi.person(new, audit=False)[0]
