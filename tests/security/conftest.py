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
