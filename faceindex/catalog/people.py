"""The catalog's people: named and unnamed groups of faces (what `faceindex people` writes), their names, samples
and moves. A mixin of `Catalog` (it uses `db`, `transaction`, `face_records` and `_drop_empty_people`)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..errors import NotFoundError
from .util import chunks, now

if TYPE_CHECKING:
    from .base import FaceRecord


class PeopleMixin:
    """People: listing, samples, one person's faces, moving faces between people, names."""

    def person_names(self) -> dict[int, str]:
        return dict(self.db.execute("SELECT id, name FROM people WHERE name IS NOT NULL").fetchall())

    def people(self, limit: int | None = None, min_faces: int = 1) -> list[tuple[int, str | None, int, int]]:
        """(id, name, faces, images) of people with at least `min_faces` faces, by size, largest first."""
        sql = ("SELECT p.id, p.name, COUNT(f.id), COUNT(DISTINCT f.image_id) FROM people p "
               "JOIN faces f ON f.person_id = p.id GROUP BY p.id HAVING COUNT(f.id) >= ? "
               "ORDER BY COUNT(f.id) DESC, p.id")
        if limit:
            sql += f" LIMIT {int(limit)}"
        return self.db.execute(sql, (int(min_faces),)).fetchall()

    def sample_faces(self, per_person: int = 4, person_ids: list[int] | None = None) -> dict[int, list[int]]:
        """The best-quality face ids of each person (or of the given people)."""
        sql = ("SELECT person_id, id FROM (SELECT person_id, id, ROW_NUMBER() OVER (PARTITION BY person_id "
               "ORDER BY quality DESC, id) AS rn FROM faces WHERE {}) AS ranked WHERE rn <= ?")
        out: dict[int, list[int]] = {}
        if person_ids is None:
            parts: Iterable[list[int]] = [[]]
        else:
            parts = chunks(list(person_ids), 900)
        for chunk in parts:
            where = f"person_id IN ({','.join('?' * len(chunk))})" if person_ids is not None else \
                "person_id IS NOT NULL"
            for pid, fid in self.db.execute(sql.format(where), (*chunk, per_person)):
                out.setdefault(pid, []).append(fid)
        return out

    def person(self, person_id: int) -> tuple[str | None, list[FaceRecord]]:
        row = self.db.execute("SELECT name FROM people WHERE id=?", (person_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no person {person_id}")
        ids = [r[0] for r in self.db.execute("SELECT id FROM faces WHERE person_id=? ORDER BY quality DESC",
                                             (person_id,))]
        recs = self.face_records(ids)
        return row[0], [recs[i] for i in ids if i in recs]

    def move_faces(self, face_ids: list[int], person_id: int | None = None) -> int:
        """Put faces into a person (a new one when None); returns the person id."""
        with self.transaction():
            if person_id is None:
                person_id = self.db.execute("INSERT INTO people(created_at) VALUES(?)", (now(),)).lastrowid
            self.db.executemany("UPDATE faces SET person_id=? WHERE id=?", [(person_id, f) for f in face_ids])
            self._drop_empty_people()
            return person_id

    def person_face_images(self, person_ids: list[int]) -> list[tuple[int, int, int]]:
        """(person id, face id, image id) of the given people."""
        marks = ",".join("?" * len(person_ids))
        return self.db.execute(f"SELECT person_id, id, image_id FROM faces WHERE person_id IN ({marks})",
                               person_ids).fetchall()

    def name_person(self, person_id: int, name: str | None) -> None:
        with self.transaction():
            if self.db.execute("UPDATE people SET name=? WHERE id=?", (name, person_id)).rowcount == 0:
                raise NotFoundError(f"no person {person_id}")
