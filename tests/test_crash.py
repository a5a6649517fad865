"""kill -9 during `add`: the next command opens cleanly, the index is repaired, re-running completes the job."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time

import pytest

from .conftest import PEOPLE, needs_lfw
from .test_cli import EXE, run

pytestmark = needs_lfw


def _faces(db) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as c:
            return c.execute("SELECT COUNT(*) FROM faces").fetchone()[0]
    except sqlite3.Error:
        return 0


@pytest.mark.parametrize("workers", [1, 2])
def test_kill_during_add(tmp_path, gallery_dir, workers):
    data = tmp_path / "data"
    photos = [gallery_dir / p for p in PEOPLE[:6]]  # 96 images
    cmd = [*EXE.split(), "--data", str(data), "add", *map(str, photos), "-j", str(workers)]
    # Every file takes at least 0.15 s, so on any machine the batch runs for seconds after its first commit
    # (the catalog commits every 2 s or 64 images) and the kill lands mid-run.
    env = {**os.environ, "_FACEINDEX_TEST_SLOW_S": "0.15"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=env)
    deadline = time.monotonic() + 300
    while _faces(data / "catalog.db") < 1:
        assert proc.poll() is None, "add finished before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the CLI and its worker processes, mid-batch
    proc.wait()

    with sqlite3.connect(data / "catalog.db") as c:
        assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        partial = c.execute("SELECT COUNT(*) FROM images").fetchone()[0]
    assert 0 < partial < 96

    stats = json.loads(run("stats", "--json", data=data, check=0).stdout)  # opens cleanly, repairs the index
    assert stats["index_count"] == stats["faces"]

    rep = json.loads(run("add", *photos, "-j", str(workers), "--json", data=data, check=0).stdout)
    assert rep["unchanged"] == partial and rep["images_indexed"] == 96 - partial

    with sqlite3.connect(data / "catalog.db") as c:
        q = c.execute
        assert q("SELECT COUNT(*) FROM images").fetchone()[0] == 96
        assert q("SELECT COUNT(*) FROM files").fetchone()[0] == 96
        n = q("SELECT COUNT(*) FROM faces").fetchone()[0]
        assert n == q("SELECT SUM(face_count) FROM images").fetchone()[0]
        assert n == q("SELECT COUNT(*) FROM (SELECT DISTINCT image_id, idx FROM faces)").fetchone()[0]
    stats = json.loads(run("stats", "--json", data=data, check=0).stdout)
    assert stats["faces"] == n and stats["index_count"] == n
