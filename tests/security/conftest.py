"""Helpers for the security suite: the real `faceindex` entry point in a subprocess."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ..servers import ENTRY, Server, clean_env, free_port  # noqa: F401 - the suite's tests import them from here


def cli(data: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """`faceindex --data DATA ARGS...`; never a traceback."""
    p = subprocess.run([sys.executable, "-c", ENTRY, "--data", str(data), *map(str, args)], capture_output=True,
                       text=True, timeout=timeout, env=env if env is not None else clean_env())
    assert "Traceback" not in p.stderr, p.stderr
    return p


# --- a real server over a small LFW index ---------------------------------------------------------------------------
import shutil  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402

import httpx  # noqa: E402
import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
LFW = ROOT.parent / "shared" / "data" / "lfw" / "images"
needs_lfw = pytest.mark.skipif(not LFW.is_dir(), reason=f"LFW images not found at {LFW} (../shared/data is absent)")
PEOPLE = ["Colin_Powell", "Tony_Blair", "Donald_Rumsfeld"]
PER_PERSON = 3
WHY = {"purpose": "investigation", "case": "C-1"}


def lfw(name: str, i: int) -> Path:
    return LFW / name / f"{name}_{i:04d}.jpg"


@dataclass
class Site:
    data: Path
    gallery: Path
    tokens: dict[str, str]  # key name -> token
    key_ids: dict[str, int]
    face_ids: dict[str, list[int]]  # person -> face ids
    face_paths: dict[int, Path]  # face id -> the file it was indexed from
    servers: list[Server] = field(default_factory=list)


# (key name, role): alice has two investigator keys, to check that they share one budget
KEYS = [("alice", "investigator"), ("alice-2", "investigator"), ("bob", "investigator"), ("carol", "investigator"),
        ("root", "admin"), ("audra", "auditor"), ("dana", "privacy-officer")]


def build_site(base: Path) -> Site:
    """PER_PERSON photos of each of PEOPLE, copied (so that they can be deleted), indexed and clustered."""
    from faceindex import FaceIndex

    gallery = base / "gallery"
    for name in PEOPLE:
        (gallery / name).mkdir(parents=True)
        for i in range(1, PER_PERSON + 1):
            shutil.copy(lfw(name, i), gallery / name / lfw(name, i).name)
    data = base / "data"
    with FaceIndex.open(data) as fi:
        assert fi.add([gallery], "lfw", workers=1).ok
        fi.cluster()
        tokens, ids = {}, {}
        for name, role in KEYS:
            ids[name], tokens[name] = fi.create_key(name.split("-")[0] if name == "alice-2" else name, role)
        recs = fi.catalog.face_records(fi.catalog.face_ids().tolist())
        faces = {p: sorted(i for i, r in recs.items() if Path(r.path).name.startswith(p)) for p in PEOPLE}
    return Site(data, gallery, tokens, ids, faces, {i: Path(r.path) for i, r in recs.items()})


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def search(client: httpx.Client, token: str, image: bytes, **form: str) -> httpx.Response:
    return client.post("/v1/search", headers=auth(token), files={"probe": ("probe.jpg", image, "image/jpeg")},
                       data={**WHY, **form})


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Site:
    if not LFW.is_dir():
        pytest.skip(f"LFW images not found at {LFW} (../shared/data is absent)")
    return build_site(tmp_path_factory.mktemp("site"))


@pytest.fixture(scope="module")
def server(site: Site):
    s = Server(site.data, site.data.parent / "server.log", rate_limit="100000")
    yield s
    s.stop()
