"""The catalog's accountability records: opt-outs (templates of people who must not be indexed), API keys and
two-person confirmations. A mixin of `Catalog` (it uses `db`, `transaction` and `now`)."""

from __future__ import annotations

import json

import numpy as np

from ..errors import CatalogError, NotFoundError
from .util import now


class AccountsMixin:
    """Opt-outs, API keys and confirmations."""

    # --- opt-outs ---------------------------------------------------------------------------------------------
    def add_optout(self, reference: str, actor: str, templates: np.ndarray, receipt: dict) -> None:
        with self.transaction():
            if self.db.execute("SELECT 1 FROM optouts WHERE reference=?", (reference,)).fetchone():
                raise CatalogError(f"an opt-out with reference {reference!r} already exists")
            t = np.ascontiguousarray(templates, dtype=np.float32)
            self.db.execute(
                "INSERT INTO optouts(reference, created_at, actor, templates, n_templates, receipt) VALUES(?,?,?,?,?,?)",
                (reference, receipt["time"], actor, t.tobytes(), len(t), json.dumps(receipt)))

    def optouts(self) -> list[dict]:
        rows = self.db.execute("SELECT reference, created_at, actor, n_templates, receipt FROM optouts ORDER BY id")
        return [{"reference": r, "created_at": c, "actor": a, "templates": n, "receipt": json.loads(rc)}
                for r, c, a, n, rc in rows]

    def remove_optout(self, reference: str) -> None:
        with self.transaction():
            if self.db.execute("DELETE FROM optouts WHERE reference=?", (reference,)).rowcount == 0:
                raise NotFoundError(f"no opt-out with reference {reference!r}")

    def optout_generation(self) -> tuple[int, int]:
        """Changes whenever an opt-out is added or removed (count, highest id): cheap to poll per batch."""
        row = self.db.execute("SELECT count(*), coalesce(max(id), 0) FROM optouts").fetchone()
        return int(row[0]), int(row[1])

    def optout_templates(self, dim: int = 128) -> np.ndarray:
        blobs = [r[0] for r in self.db.execute("SELECT templates FROM optouts")]
        if not blobs:
            return np.zeros((0, dim), np.float32)
        return np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(-1, dim)

    # --- API keys and confirmations --------------------------------------------------------------------------
    def add_key(self, name: str, role: str, prefix: str, secret_sha256: str, created_by: str) -> int:
        with self.transaction():
            return self.db.execute(
                "INSERT INTO api_keys(name, role, prefix, secret_sha256, created_at, created_by) VALUES(?,?,?,?,?,?)",
                (name, role, prefix, secret_sha256, now(), created_by)).lastrowid

    def keys(self) -> list[dict]:
        rows = self.db.execute("SELECT id, name, role, prefix, created_at, created_by, revoked_at, last_used_at "
                               "FROM api_keys ORDER BY id")
        cols = ("id", "name", "role", "prefix", "created_at", "created_by", "revoked_at", "last_used_at")
        return [dict(zip(cols, r)) for r in rows]

    def key_by_prefix(self, prefix: str) -> tuple | None:
        return self.db.execute("SELECT id, name, role, secret_sha256, revoked_at, last_used_at FROM api_keys WHERE prefix=?",
                               (prefix,)).fetchone()

    def touch_key(self, key_id: int) -> None:
        with self.transaction():
            self.db.execute("UPDATE api_keys SET last_used_at=? WHERE id=?", (now(), key_id))

    def revoke_key(self, key_id: int) -> None:
        with self.transaction():
            if self.db.execute("UPDATE api_keys SET revoked_at=? WHERE id=? AND revoked_at IS NULL",
                               (now(), key_id)).rowcount == 0:
                raise NotFoundError(f"no active key {key_id}")

    def add_confirmation(self, case_ref: str, face_id: int, actor: str) -> list[str]:
        """Record one investigator's confirmation; returns the distinct actors who confirmed."""
        with self.transaction():
            self.db.execute("INSERT INTO confirmations(case_ref, face_id, actor, created_at) VALUES(?,?,?,?) "
                            "ON CONFLICT DO NOTHING", (case_ref, face_id, actor, now()))
            return self.confirmers(case_ref, face_id)

    def confirmers(self, case_ref: str, face_id: int) -> list[str]:
        return [r[0] for r in self.db.execute(
            "SELECT actor FROM confirmations WHERE case_ref=? AND face_id=? ORDER BY id", (case_ref, face_id))]

    def confirmations(self, case_ref: str) -> dict[int, list[str]]:
        out: dict[int, list[str]] = {}
        for fid, actor in self.db.execute("SELECT face_id, actor FROM confirmations WHERE case_ref=? ORDER BY id",
                                          (case_ref,)):
            out.setdefault(fid, []).append(actor)
        return out
