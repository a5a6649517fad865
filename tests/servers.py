"""A real `faceindex serve` in a subprocess on loopback, shared by the server and security suites."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ENTRY = "import sys; sys.argv[0] = 'faceindex'; from faceindex.cli import main; main()"


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without FACEINDEX_* settings, plus `extra` (FACEINDEX_<KEY>=value)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACEINDEX_")}
    env.update({f"FACEINDEX_{k.upper()}": v for k, v in extra.items()})
    return env


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
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=clean_env(**settings),
                                     cwd=data.parent)
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
