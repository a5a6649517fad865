"""The data folder's policy: what a search must declare and how opt-outs match. Changes are audited."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import PolicyError
from .text import check_text

POLICY_FILE = "policy.json"
BASES = ("consent", "owner", "contract", "legal-obligation", "vital-interest", "public-interest",
         "legitimate-interest", "unspecified")

# Who may do what (the server maps API keys to these roles; the local CLI operator is "owner").
PERMISSIONS: dict[str, frozenset[str]] = {
    "owner": frozenset({"ingest", "delete", "search", "verify", "people", "audit", "privacy", "policy", "keys"}),
    "admin": frozenset({"ingest", "delete", "keys", "policy"}),
    "investigator": frozenset({"search", "verify", "people"}),
    "auditor": frozenset({"audit"}),
    "privacy-officer": frozenset({"privacy"}),
}


class Policy(BaseModel):
    """Rules in `<data>/policy.json`."""

    model_config = ConfigDict(extra="forbid")

    require_purpose: bool = True
    require_case: bool = True
    allowed_purposes: list[str] = Field(
        default_factory=lambda: ["investigation", "journalism", "archive", "event-photos", "personal",
                                 "data-subject-request", "research", "testing"],
        description="purposes a search or verify may declare; empty = any",
    )
    require_source_basis: bool = Field(
        default=False, description="refuse `add` into a source that has no registered legal basis")
    optout_fmr: float = Field(
        default=1e-3, gt=0, lt=1,
        description="opt-out matching threshold as a false-match rate per template: looser than a 'strong "
                    "candidate' on purpose; see docs/benchmarks.md for its leak and over-removal rates")
    access_fmr: float = Field(default=1e-2, gt=0, lt=1, description="subject-access / erasure matching threshold")

    def check_purpose(self, purpose: str | None, case: str | None) -> None:
        """PolicyError when a required purpose or case is missing or the purpose is not allowed; ValueError when
        either is not clean text (control or bidirectional characters, invisible, over 200 characters)."""
        if purpose is not None and str(purpose).strip():  # blank counts as missing: the rules below say so
            purpose = check_text(purpose, "the purpose")
        if case is not None and str(case).strip():
            case = check_text(case, "the case reference")
        if self.require_purpose and not (purpose and purpose.strip()):
            raise PolicyError("a purpose is required (--purpose); allowed: " + ", ".join(self.allowed_purposes))
        if purpose and self.allowed_purposes and purpose not in self.allowed_purposes:
            raise PolicyError(f"purpose {purpose!r} is not allowed by policy; allowed: "
                              + ", ".join(self.allowed_purposes))
        if self.require_case and not (case and case.strip()):
            raise PolicyError("a case reference is required (--case)")


def check_permission(role: str, permission: str) -> None:
    from .errors import AccessDenied

    if permission not in PERMISSIONS.get(role, frozenset()):
        raise AccessDenied(f"role {role!r} may not {permission}")


def load(data: Path) -> tuple[Policy, str]:
    """The policy and the sha256 of its file ("" when the file does not exist: the defaults apply)."""
    path = data / POLICY_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return Policy(), ""
    except OSError as e:
        raise PolicyError(f"cannot read {path}: {e.strerror}") from e
    try:
        return Policy.model_validate_json(raw), hashlib.sha256(raw).hexdigest()
    except ValidationError as e:
        raise PolicyError(f"invalid policy file {path}: {e.errors()[0]['loc']}: {e.errors()[0]['msg']}") from e


def save(data: Path, policy: Policy) -> str:
    raw = (json.dumps(policy.model_dump(), indent=2) + "\n").encode()
    tmp = data / f"{POLICY_FILE}.tmp{os.getpid()}"
    tmp.write_bytes(raw)
    os.replace(tmp, data / POLICY_FILE)
    return hashlib.sha256(raw).hexdigest()
