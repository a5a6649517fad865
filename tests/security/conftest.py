"""Helpers for the security suite: the real `faceindex` entry point in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ENTRY = "import sys; sys.argv[0] = 'faceindex'; from faceindex.cli import main; main()"


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without FACEINDEX_* settings, plus `extra` (FACEINDEX_<KEY>=value)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACEINDEX_")}
    env.update({f"FACEINDEX_{k.upper()}": v for k, v in extra.items()})
    return env


def cli(data: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """`faceindex --data DATA ARGS...`; never a traceback."""
    p = subprocess.run([sys.executable, "-c", ENTRY, "--data", str(data), *map(str, args)], capture_output=True,
                       text=True, timeout=timeout, env=env if env is not None else clean_env())
    assert "Traceback" not in p.stderr, p.stderr
    return p


# --- a real server over a small LFW index ---------------------------------------------------------------------------
import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import time  # noqa: E402
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`faceindex --data DIR serve` in a subprocess on 127.0.0.1."""

    def __init__(self, data: Path, log: Path, ingest_root: Path | None = None, **settings: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = open(log, "wb")  # noqa: SIM115 (closed in stop)
        self.log_path = log
        cmd = [sys.executable, "-c", ENTRY, "--data", str(data), "serve", "--host", "127.0.0.1", "--port",
               str(self.port), *(["--ingest-root", str(ingest_root)] if ingest_root else [])]
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=clean_env(**settings))
        deadline = time.monotonic() + 90
        while True:
            if self.proc.poll() is not None:
                self._log.close()
                pytest.fail(f"server exited with {self.proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"server did not answer /healthz within 90 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        self.client = httpx.Client(base_url=self.url, timeout=120)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(15)

    def stop(self) -> None:
        if getattr(self, "client", None) is not None:
            self.client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()


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
