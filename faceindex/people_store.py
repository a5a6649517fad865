"""What the catalog keeps about people beyond face -> person: reviewers' decisions and each person's cohesion.

- Blocks (`face_blocks`): faces a reviewer put together (a manual merge, or either part of a manual split) stay
  one person in every later clustering: a must-link.
- Apart (`blocks_apart`): two blocks a reviewer split are never one person again: a cannot-link.
- Cohesion (`person_cohesion`): the mean similarity of the weakest merge that formed each person (1.0 for one
  face), so reviewers can check the weakest groups first.

Rows of deleted faces go with them (ON DELETE CASCADE); a block lives while one of its faces does.
"""

from __future__ import annotations

import numpy as np

from .catalog import Catalog, now


def cohesion(cat: Catalog, person_ids: list[int] | None = None) -> dict[int, float]:
    """Person id -> weakest-merge similarity."""
    if person_ids is None:
        return dict(cat.db.execute("SELECT person_id, similarity FROM person_cohesion").fetchall())
    out: dict[int, float] = {}
    for s in range(0, len(person_ids), 900):
        chunk = person_ids[s:s + 900]
        marks = ",".join("?" * len(chunk))
        out.update(cat.db.execute(
            f"SELECT person_id, similarity FROM person_cohesion WHERE person_id IN ({marks})", chunk).fetchall())
    return out


def constraints(cat: Catalog) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(face ids, their block) of every blocked face, and the (m, 2) pairs of blocks kept apart."""
    rows = np.array(cat.db.execute("SELECT face_id, block FROM face_blocks").fetchall(), np.int64).reshape(-1, 2)
    apart = np.array(cat.db.execute("SELECT a, b FROM blocks_apart").fetchall(), np.int64).reshape(-1, 2)
    return rows[:, 0], rows[:, 1], apart


def _new_block(cat: Catalog) -> int:
    row = cat.db.execute("SELECT MAX(m) FROM (SELECT MAX(block) AS m FROM face_blocks "
                         "UNION ALL SELECT MAX(a) FROM blocks_apart UNION ALL SELECT MAX(b) FROM blocks_apart) AS tops")
    top = row.fetchone()[0]
    return 0 if top is None else int(top) + 1


def _blocks_of(cat: Catalog, face_ids: list[int]) -> set[int]:
    out: set[int] = set()
    for s in range(0, len(face_ids), 900):
        chunk = face_ids[s:s + 900]
        marks = ",".join("?" * len(chunk))
        out.update(r[0] for r in cat.db.execute(f"SELECT DISTINCT block FROM face_blocks WHERE face_id IN ({marks})",
                                                chunk))
    return out


def _put(cat: Catalog, face_ids: list[int], block: int) -> None:
    cat.db.executemany("INSERT INTO face_blocks(face_id, block) VALUES(?, ?) "
                       "ON CONFLICT(face_id) DO UPDATE SET block=excluded.block", [(f, block) for f in face_ids])


def _inherit(cat: Catalog, old: set[int], new: int) -> None:
    """Block `new` is kept apart from whatever the `old` blocks were kept apart from."""
    for b in old:
        for x, y in cat.db.execute("SELECT a, b FROM blocks_apart WHERE a=? OR b=?", (b, b)).fetchall():
            other = y if x == b else x
            if other not in old and other != new:
                cat.db.execute("INSERT INTO blocks_apart(a, b) VALUES(?, ?) ON CONFLICT DO NOTHING",
                               (min(new, other), max(new, other)))


def _drop_blocks(cat: Catalog, blocks: set[int]) -> None:
    for b in blocks:
        cat.db.execute("DELETE FROM blocks_apart WHERE a=? OR b=?", (b, b))


def join(cat: Catalog, face_ids: list[int]) -> int:
    """A manual merge: the faces (and every face already blocked with them) become one block."""
    with cat.transaction():
        old = _blocks_of(cat, face_ids)
        block = _new_block(cat)
        members = list(face_ids)
        for b in old:
            members += [r[0] for r in cat.db.execute("SELECT face_id FROM face_blocks WHERE block=?", (b,))]
        _put(cat, list(dict.fromkeys(members)), block)
        _inherit(cat, old, block)
        _drop_blocks(cat, old)
        return block


def separate(cat: Catalog, part: list[int], rest: list[int]) -> tuple[int, int]:
    """A manual split: `part` and `rest` each become a block, kept apart from each other for good."""
    with cat.transaction():
        old = _blocks_of(cat, part + rest)
        a = _new_block(cat)
        b = a + 1
        _put(cat, part, a)
        _put(cat, rest, b)
        _inherit(cat, old, a)
        _inherit(cat, old, b)
        _drop_blocks(cat, old)
        cat.db.execute("INSERT INTO blocks_apart(a, b) VALUES(?, ?) ON CONFLICT DO NOTHING", (a, b))
        return a, b


def store(cat: Catalog, groups: list[tuple[int | None, list[int], float]], replace: bool) -> list[int]:
    """Store people: each group is (person id, or None for a new person; face ids; cohesion similarity).

    With `replace` every face is first taken out of its person (a full clustering); else only the given faces
    move (an incremental one) and the other people keep theirs.
    """
    with cat.transaction():
        if replace:
            cat.db.execute("UPDATE faces SET person_id = NULL")
            cat.db.execute("DELETE FROM person_cohesion")
        ids = []
        new = [i for i, (pid, _, _) in enumerate(groups) if pid is None]
        if new:  # one INSERT per new person, but in one statement batch
            ts = now()
            fresh = cat.reserve_ids("people", len(new))
            cat.db.executemany("INSERT INTO people(id, created_at) VALUES(?, ?)", [(i, ts) for i in fresh])
        next_new = iter(fresh) if new else iter(())
        rows: list[tuple[int, int]] = []
        coh: list[tuple[int, float]] = []
        for pid, faces, c in groups:
            if pid is None:
                pid = next(next_new)
            ids.append(pid)
            rows += [(pid, f) for f in faces]
            coh.append((pid, float(c)))
        cat.db.executemany("UPDATE faces SET person_id=? WHERE id=?", rows)
        cat.db.executemany("INSERT INTO person_cohesion(person_id, similarity) VALUES(?, ?) "
                           "ON CONFLICT(person_id) DO UPDATE SET similarity=excluded.similarity", coh)
        cat.db.execute("DELETE FROM people WHERE name IS NULL AND id NOT IN "
                       "(SELECT DISTINCT person_id FROM faces WHERE person_id IS NOT NULL)")
        return ids


def count(cat: Catalog) -> int:
    """How many people have faces."""
    return int(cat.db.execute("SELECT COUNT(DISTINCT person_id) FROM faces WHERE person_id IS NOT NULL").fetchone()[0])


def assignments(cat: Catalog) -> dict[int, int]:
    """Face id -> person id of every face in a person."""
    return dict(cat.db.execute("SELECT id, person_id FROM faces WHERE person_id IS NOT NULL").fetchall())
