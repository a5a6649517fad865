"""API keys (hashed, shown once, revocable), authentication, and two-person confirmation of candidates."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from . import policy as policies
from .errors import AccessDenied
from .privacy import check_reference
from .text import check_identity, identity_key

if TYPE_CHECKING:
    from .engine import FaceIndex


def create_key(fi: FaceIndex, name: str, role: str) -> tuple[int, str]:
    """A new API key for `role`; returns (id, token). Only the token's hash is stored: show it once."""
    fi._allow("keys")
    if role not in policies.PERMISSIONS or role == "owner":
        raise ValueError(f"unknown role {role!r}; one of: admin, investigator, auditor, privacy-officer")
    # A name is an identity: plain characters (no "alice (key 2)" look-alike of another actor string), and one
    # spelling per identity (no "Alice" beside "alice"). Several keys may share a name: they are one user.
    name = check_identity(name)
    for other in fi.catalog.keys():  # noqa: SIM118 (a method, not a dict)
        if identity_key(other["name"]) == identity_key(name) and other["name"] != name:
            raise ValueError(f"key name {name!r} reads like the existing key name {other['name']!r}")
    prefix = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    key_id = fi.catalog.add_key(name, role, prefix, _sha256(secret), fi.settings.actor)
    fi._record("key.create", details={"key_id": key_id, "name": name, "role": role, "prefix": prefix,
                                      "created_by": fi.settings.actor})
    return key_id, f"fi_{prefix}_{secret}"


def api_keys(fi: FaceIndex) -> list[dict]:
    fi._allow("keys")
    return fi.catalog.keys()


def revoke_key(fi: FaceIndex, key_id: int) -> None:
    fi._allow("keys")
    fi.catalog.revoke_key(key_id)
    fi._record("key.revoke", details={"key_id": key_id})


def authenticate(fi: FaceIndex, token: str) -> dict:
    """The key behind a token ({id, name, role}); AccessDenied for unknown, malformed or revoked keys."""
    parts = (token or "").split("_", 2)
    if len(parts) != 3 or parts[0] != "fi":
        raise AccessDenied("invalid API key")
    row = fi.catalog.key_by_prefix(parts[1])
    if row is None or not hmac.compare_digest(row[3], _sha256(parts[2])):
        raise AccessDenied("invalid API key")
    if row[4] is not None:
        raise AccessDenied("this API key has been revoked")
    last = row[5]
    if last is None or datetime.fromisoformat(last) < datetime.now(UTC) - timedelta(minutes=1):
        fi.catalog.touch_key(row[0])  # at most once a minute: no write per request
    return {"id": row[0], "name": row[1], "role": row[2]}


def confirm(fi: FaceIndex, case: str, face_id: int) -> dict:
    """Confirm a candidate for a case. It counts as confirmed only once two different investigators have."""
    fi._allow("search")
    case = check_reference(case)
    fi.catalog.face_record(face_id)  # must exist
    actors = fi.catalog.add_confirmation(case, face_id, fi.settings.actor)
    status = _confirmation_status(actors)
    fi._record("confirm", case=case, details={"face_id": face_id, "confirmed_by": actors, "status": status})
    return {"case": case, "face_id": face_id, "confirmed_by": actors, "status": status}


def confirmations(fi: FaceIndex, case: str) -> dict[int, dict]:
    fi._allow("search")
    return {fid: {"confirmed_by": a, "status": _confirmation_status(a)}
            for fid, a in fi.catalog.confirmations(check_reference(case)).items()}


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _confirmation_status(actors: list[str]) -> str:
    return "confirmed" if len(set(actors)) >= 2 else f"awaiting second confirmation ({len(set(actors))} of 2)"
