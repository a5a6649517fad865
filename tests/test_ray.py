"""Ingest on a real two-node Ray cluster (loopback): same results as the process pool, faults, bad input."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from faceindex import FaceIndex

from .conftest import DETECTION, LFW, lfw, needs_detection, needs_lfw
from .ray_cluster import RayNode, ray_cluster, wait_for_cpus  # noqa: F401  (ray_cluster: the fixture)
from .test_cli import EXE, run

pytestmark = [needs_lfw, needs_detection]

PEOPLE = ["Colin_Powell", "Tony_Blair", "Donald_Rumsfeld", "Ariel_Sharon", "Hugo_Chavez", "Junichiro_Koizumi",
          "Jean_Chretien"]


def _faces_by_path(data: Path) -> dict[str, list[tuple[tuple[int, int, int, int], np.ndarray]]]:
    """path -> [(box, embedding)] in face order, straight from the catalog."""
    with sqlite3.connect(f"file:{data / 'catalog.db'}?mode=ro", uri=True) as c:
        rows = c.execute("SELECT f.path, x1, y1, x2, y2, embedding FROM files f JOIN faces ON faces.image_id = "
                         "f.image_id ORDER BY f.path, faces.idx").fetchall()
    out: dict[str, list] = {}
    for path, x1, y1, x2, y2, emb in rows:
        out.setdefault(path, []).append(((x1, y1, x2, y2), np.frombuffer(emb, np.float32)))
    return out


def _count(db: Path, table: str) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as c:
            return c.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
    except sqlite3.Error:
        return 0


def _check_whole(data: Path, images: int) -> int:
    """Every file indexed exactly once, every face once; the vector index holds exactly the catalog's faces."""
    with sqlite3.connect(data / "catalog.db") as c:
        q = c.execute
        assert q("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert q("SELECT COUNT(*) FROM images").fetchone()[0] == images
        assert q("SELECT COUNT(*) FROM files").fetchone()[0] == images
        n = q("SELECT COUNT(*) FROM faces").fetchone()[0]
        assert n == q("SELECT SUM(face_count) FROM images").fetchone()[0]
        assert n == q("SELECT COUNT(*) FROM (SELECT DISTINCT image_id, idx FROM faces)").fetchone()[0]
    stats = json.loads(run("stats", "--json", data=data, check=0).stdout)
    assert stats["faces"] == n and stats["index_count"] == n
    return n


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """24 LFW photos (3 people x 8), the multi-face detection photos, and one corrupt file."""
    root = tmp_path_factory.mktemp("ray-photos")
    for name in PEOPLE[:3]:
        for i in range(1, 9):
            (root / lfw(name, i).name).symlink_to(lfw(name, i))
    for p in sorted((DETECTION / "dlib_faces").glob("*.jpg")):
        (root / p.name).symlink_to(p)
    (root / "truncated.jpg").write_bytes(lfw("Tony_Blair", 9).read_bytes()[:3000])
    return root


def test_ray_matches_the_process_pool(ray_cluster, photos, tmp_path):  # noqa: F811
    with FaceIndex.open(tmp_path / "ray") as fi:
        on_ray = fi.add([photos], "s", ray=ray_cluster)
        again = fi.add([photos], "s", ray=ray_cluster)  # incremental: nothing is analysed twice
    with FaceIndex.open(tmp_path / "pool") as fi:
        pooled = fi.add([photos], "s", workers=2)
    assert on_ray.images_indexed == pooled.images_indexed == pooled.files_seen - 1
    assert on_ray.faces_found == pooled.faces_found > 50  # the group photos hold many faces
    assert [(e.path, e.reason) for e in on_ray.errors] == [(e.path, e.reason) for e in pooled.errors]
    assert [Path(e.path).name for e in on_ray.errors] == ["truncated.jpg"]
    assert again.images_indexed == 0 and again.unchanged == on_ray.images_indexed

    a, b = _faces_by_path(tmp_path / "ray"), _faces_by_path(tmp_path / "pool")
    assert a.keys() == b.keys() and len(a) == on_ray.images_indexed - on_ray.images_without_faces
    for path in a:
        assert len(a[path]) == len(b[path]), path
        for (box_a, emb_a), (box_b, emb_b) in zip(a[path], b[path]):
            assert max(abs(u - v) for u, v in zip(box_a, box_b)) <= 1, (path, box_a, box_b)
            assert float(emb_a @ emb_b) > 0.9999, path


def test_optout_is_enforced_on_ray_ingest(ray_cluster, tmp_path):  # noqa: F811
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("Tony_Blair", "Colin_Powell"):
        for i in range(1, 7):
            (folder / lfw(name, i).name).symlink_to(lfw(name, i))
    with FaceIndex.open(tmp_path / "data") as fi:
        fi.optout_add([lfw("Tony_Blair", 20), lfw("Tony_Blair", 21)], "request-1")
        report = fi.add([folder], "s", ray=ray_cluster)
    assert report.skipped_opted_out >= 5  # Tony Blair's faces were refused, Colin Powell's indexed
    indexed = {Path(p).name.rsplit("_", 1)[0] for p in _faces_by_path(tmp_path / "data")}
    assert indexed == {"Colin_Powell"}


def test_a_file_that_kills_its_worker_twice_fails_alone(ray_cluster, tmp_path):  # noqa: F811
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(1, 11):
        (folder / lfw("Colin_Powell", i).name).symlink_to(lfw("Colin_Powell", i))
    (folder / "poison.jpg").symlink_to(lfw("Tony_Blair", 1))
    # the actor analysing poison.jpg dies (a native crash): the files of its batch are sent again, a replacement
    # actor starts on the freed CPU, and only the file that killed two actors is reported
    p = run("add", folder, "--ray", ray_cluster, "--json", data=tmp_path / "data",
            env={"_FACEINDEX_TEST_CRASH_ON": "poison"})
    assert p.returncode == 3, p.stderr
    rep = json.loads(p.stdout)
    assert rep["images_indexed"] == 10
    assert [(Path(e["path"]).name, "died twice" in e["reason"]) for e in rep["errors"]] == [("poison.jpg", True)]
    _check_whole(tmp_path / "data", 10)


def _slow_add(data: Path, folders: list[Path], address: str) -> subprocess.Popen:
    # Every file takes at least 0.2 s on its actor (the hook reaches the actors), so the kill lands mid-run.
    env = {**os.environ, "_FACEINDEX_TEST_SLOW_S": "0.2"}
    cmd = [*EXE.split(), "--data", str(data), "add", *map(str, folders), "--ray", address, "--json"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env=env)


def _wait_for_first_commit(proc: subprocess.Popen, data: Path) -> None:
    deadline = time.monotonic() + 300
    while _count(data / "catalog.db", "faces") < 1:
        assert proc.poll() is None, f"add finished before it could be killed: {proc.communicate()}"
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_kill_the_driver_then_rerun(ray_cluster, tmp_path):  # noqa: F811
    data = tmp_path / "data"
    folders = [LFW / p for p in PEOPLE[3:5]]  # 148 photos
    total = sum(len(list(f.glob("*.jpg"))) for f in folders)
    proc = _slow_add(data, folders, ray_cluster)
    _wait_for_first_commit(proc, data)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver dies mid-batch; its actors end with it
    proc.communicate()
    partial = _count(data / "catalog.db", "images")
    assert 0 < partial < total

    rep = json.loads(run("add", *folders, "--ray", ray_cluster, "--json", data=data, check=0).stdout)
    assert rep["unchanged"] == partial and rep["images_indexed"] == total - partial
    _check_whole(data, total)


@pytest.mark.skipif(os.environ.get("FACEINDEX_TEST_RAY", "127.").split(":")[0].startswith("127.") is False,
                    reason="adds a node on a loopback address: needs the cluster on this machine")
def test_kill_a_worker_node_mid_run(ray_cluster, tmp_path):  # noqa: F811
    extra = RayNode("127.0.0.4", head=ray_cluster)  # a third node, killed below; the shared two stay up
    try:
        wait_for_cpus(ray_cluster, 3)
        data = tmp_path / "data"
        folders = [LFW / p for p in PEOPLE[5:7]]  # 115 photos
        total = sum(len(list(f.glob("*.jpg"))) for f in folders)
        proc = _slow_add(data, folders, ray_cluster)
        _wait_for_first_commit(proc, data)
        extra.kill()  # the node and its actor die as a machine would; the run goes on on the others
        out, errs = proc.communicate(timeout=600)
    finally:
        extra.stop()
    assert proc.returncode == 0, errs
    assert "a Ray worker actor died" in errs  # the killed node had a batch in flight: it was sent again
    rep = json.loads(out)
    assert rep["images_indexed"] == total and rep["errors"] == []
    n = _check_whole(data, total)
    assert n == rep["faces_found"]
    rerun = json.loads(run("add", *folders, "--ray", ray_cluster, "--json", data=data, check=0).stdout)
    assert rerun["unchanged"] == total and rerun["images_indexed"] == 0


def test_unreachable_cluster_is_one_line_and_writes_nothing(tmp_path):
    data = tmp_path / "data"
    p = run("add", lfw("Tony_Blair", 1), "--source", "news", "--ray", "127.0.0.9:1", "--json", data=data)
    assert p.returncode == 69, (p.returncode, p.stderr)
    assert p.stderr.strip().count("\n") == 0 and "cannot reach the Ray cluster at 127.0.0.9:1" in p.stderr
    assert _count(data / "catalog.db", "images") == 0 and _count(data / "catalog.db", "sources") == 0
    p = run("add", lfw("Tony_Blair", 1), "--ray", "nonsense", "--json", data=data)
    assert p.returncode == 69 and "bad Ray address 'nonsense'" in p.stderr


@pytest.mark.skipif(os.environ.get("FACEINDEX_TEST_RAY") is not None, reason="the fixture's own cluster uses a token")
def test_wrong_token_is_one_line_and_writes_nothing(ray_cluster, tmp_path):  # noqa: F811
    assert os.environ.get("RAY_AUTH_MODE") == "token"  # the fixture's cluster: token authentication
    data = tmp_path / "data"
    p = run("add", lfw("Tony_Blair", 1), "--source", "news", "--ray", ray_cluster, "--json", data=data,
            env={"RAY_AUTH_TOKEN": "0" * 64})
    assert p.returncode == 69, (p.returncode, p.stderr)
    assert p.stderr.strip().count("\n") == 0, p.stderr
    assert p.stderr.startswith(f"error: cannot join the Ray cluster at {ray_cluster}") and "RAY_AUTH_TOKEN" in p.stderr
    assert _count(data / "catalog.db", "images") == 0 and _count(data / "catalog.db", "sources") == 0


def test_ray_not_installed_is_one_line(tmp_path):
    # a `ray` package that fails to import stands for one that is absent
    fake = tmp_path / "site"
    (fake / "ray").mkdir(parents=True)
    (fake / "ray" / "__init__.py").write_text("raise ImportError('No module named ray')\n")
    env = {"PYTHONPATH": os.pathsep.join([str(fake), *filter(None, [os.environ.get("PYTHONPATH")])])}
    p = run("add", lfw("Tony_Blair", 1), "--source", "news", "--ray", "auto", "--json", data=tmp_path / "data", env=env)
    assert p.returncode == 69, (p.returncode, p.stderr)
    assert p.stderr.strip() == ("error: Ray is not installed; install the cluster extra: "
                                "pip install 'faceindex[cluster]'")
    assert _count(tmp_path / "data" / "catalog.db", "sources") == 0


def test_without_ray_nothing_imports_it(tmp_path):
    code = ("import sys; from faceindex import FaceIndex; import faceindex.cli, faceindex.server.app\n"
            f"fi = FaceIndex.open({str(tmp_path / 'd')!r}); r = fi.add([{str(lfw('Tony_Blair', 1))!r}], workers=1)\n"
            "assert r.faces_found == 1, r; fi.close()\n"
            "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.strip() == "[]"
