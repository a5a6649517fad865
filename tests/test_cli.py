"""The `faceindex` command through its real entry point: exit codes, --json, bad input, usage errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from PIL import Image

from .conftest import PER_PERSON, lfw, needs_lfw, person_of

pytestmark = needs_lfw

WHY = ("--purpose", "testing", "--case", "T-1")
EXE = shutil.which("faceindex") or f"{sys.executable} -m faceindex"


def run(*args, data, check=None, env=None):
    cmd = [*EXE.split(), "--data", str(data), *map(str, args)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, **(env or {})})
    if check is not None:
        assert p.returncode == check, (p.returncode, p.stdout, p.stderr)
    assert "Traceback" not in p.stderr, p.stderr
    return p


@pytest.fixture(scope="module")
def bad_folder(tmp_path_factory):
    """Good LFW photos mixed with every kind of bad file."""
    root = tmp_path_factory.mktemp("mixed")
    for name in ("Tony_Blair", "Serena_Williams"):
        for i in range(1, 4):
            shutil.copy(lfw(name, i), root / f"{name}_{i}.jpg")
    (root / "zero.jpg").write_bytes(b"")
    data = lfw("Colin_Powell", 1).read_bytes()
    (root / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (root / "notes.jpg").write_text("not really a photo")
    # a PNG that claims 100000 x 100000 pixels: refused before decoding
    from .test_images import _png_header_only

    (root / "huge.png").write_bytes(_png_header_only(100_000, 100_000))
    os.mkfifo(root / "unreadable.jpg")  # cannot be read as a file (chmod 000 does not stop root)
    os.symlink("loop.jpg", root / "loop.jpg")
    Image.new("RGB", (300, 200), (30, 120, 200)).save(root / "sky.png")  # an image with no face
    return root


def test_add_bad_input_indexes_the_good_and_reports_the_bad(tmp_path, bad_folder):
    data = tmp_path / "data"
    # something indexed before must survive a batch with bad files
    run("add", lfw("Hugo_Chavez", 1), "--source", "before", data=data, check=0)
    p = run("add", bad_folder, "--source", "mixed", "--json", data=data, check=3)
    rep = json.loads(p.stdout)
    bad = {os.path.basename(e["path"]): e["reason"] for e in rep["errors"]}
    assert set(bad) == {"zero.jpg", "truncated.jpg", "notes.jpg", "huge.png", "unreadable.jpg", "loop.jpg"}
    assert "empty" in bad["zero.jpg"] and "truncated" in bad["truncated.jpg"]
    assert "not an image" in bad["notes.jpg"] and "too large" in bad["huge.png"]
    assert "not a regular file" in bad["unreadable.jpg"] and "symbolic links" in bad["loop.jpg"]
    assert rep["images_indexed"] == 7 and rep["images_without_faces"] == 1 and rep["faces_found"] >= 6
    stats = json.loads(run("stats", "--json", data=data, check=0).stdout)
    assert stats["images"] == 8 and stats["sources"] == 2
    # human-readable output names each bad file on stderr
    p = run("add", bad_folder, "--source", "mixed", data=data, check=3)
    assert "truncated.jpg" in p.stderr and "7 unchanged" in p.stdout


def test_search_verify_people_remove(tmp_path):
    data = tmp_path / "data"
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("Tony_Blair", "Serena_Williams", "Colin_Powell"):
        for i in range(1, 7):
            shutil.copy(lfw(name, i), photos / f"{name}_{i:04d}.jpg")
    run("add", photos, "--source", "news", "-j", "2", data=data, check=0)

    p = run("search", lfw("Serena_Williams", PER_PERSON + 1), lfw("Tony_Blair", 20), "--top", "3", "--json",
            "--largest", *WHY, data=data, check=0)
    out = json.loads(p.stdout)
    assert "not identifications" in out["notice"] and out["model"] == "yunet-omz95"
    assert [person_of(r["candidates"][0]["path"]) for r in out["results"]] == ["Serena_Williams", "Tony_Blair"]
    c = out["results"][0]["candidates"][0]
    assert set(c) >= {"similarity", "fmr", "label", "path", "source", "box", "expected_false"}
    assert c["source"] == "news" and len(out["results"][0]["candidates"]) == 3

    crops = tmp_path / "crops"
    run("search", lfw("Colin_Powell", 10), "--largest", "--top", "2", "--crops", crops, *WHY, data=data, check=0)
    written = sorted(f.name for f in crops.iterdir())
    assert len(written) == 3 and any("probe" in n for n in written)
    assert Image.open(crops / written[0]).size == (160, 160)

    p = run("verify", lfw("Tony_Blair", 1), lfw("Tony_Blair", 30), "--json", *WHY, data=data, check=0)
    v = json.loads(p.stdout)
    assert v["same_person_candidate"] is True and v["fmr"] < 1e-3
    pairs = tmp_path / "pairs.txt"
    pairs.write_text(f"{lfw('Tony_Blair', 1)}\t{lfw('Tony_Blair', 30)}\n"
                     f"{lfw('Tony_Blair', 1)} {lfw('Serena_Williams', 9)}\n")
    rows = json.loads(run("verify", "--pairs", pairs, "--json", *WHY, data=data, check=0).stdout)
    assert [r["same_person_candidate"] for r in rows] == [True, False]

    people = json.loads(run("people", "--json", data=data, check=0).stdout)
    assert len(people) == 3 and all(5 <= p["faces"] <= 6 for p in people)  # a hard photo may stay on its own
    for p in people:  # each group is one person
        shown = json.loads(run("people", "show", p["id"], "--json", data=data, check=0).stdout)
        assert len({person_of(f["path"]) for f in shown["faces"]}) == 1
    pid = people[0]["id"]
    run("people", "name", pid, "Ada", data=data, check=0)
    shown = json.loads(run("people", "show", pid, "--json", data=data, check=0).stdout)
    assert shown["name"] == "Ada" and len(shown["faces"]) == people[0]["faces"]
    people = json.loads(run("people", "--recluster", "--json", data=data, check=0).stdout)
    assert any(p["name"] == "Ada" for p in people)

    p = run("remove", photos / "Serena_Williams_0001.jpg", "--source", "news", "--json", data=data, check=0)
    assert json.loads(p.stdout) == {"files": 1, "images": 1, "faces": 1}
    assert json.loads(run("stats", "--json", data=data, check=0).stdout)["faces"] == 17


def test_probe_without_face_and_bad_probe(tmp_path):
    data = tmp_path / "data"
    run("add", lfw("Tony_Blair", 1), data=data, check=0)
    sky = tmp_path / "sky.png"
    Image.new("RGB", (300, 200), (30, 120, 200)).save(sky)
    p = run("search", sky, *WHY, data=data, check=4)
    assert "no face found" in p.stderr
    p = run("search", tmp_path / "missing.jpg", *WHY, data=data)
    assert p.returncode == 65 and f"{tmp_path / 'missing.jpg'}: cannot read file" in p.stderr
    notes = tmp_path / "notes.jpg"
    notes.write_text("not a photo")
    p = run("search", lfw("Tony_Blair", 2), notes, *WHY, data=data)  # each probe's own error, named; the good one runs
    assert p.returncode == 65 and f"{notes}: " in p.stderr and "Tony_Blair_0001.jpg" in p.stdout
    p = run("verify", sky, lfw("Tony_Blair", 2), *WHY, data=data, check=4)
    assert "no face found" in p.stderr


def test_usage_errors(tmp_path):
    data = tmp_path / "data"
    assert run("search", data=data).returncode == 2  # no probe
    assert run("search", lfw("Tony_Blair", 1), "--top", "0", *WHY, data=data).returncode == 2
    p = run("search", lfw("Tony_Blair", 1), data=data)  # purpose and case are required by the default policy
    assert p.returncode == 77 and "purpose is required" in p.stderr
    p = run("search", lfw("Tony_Blair", 1), "--purpose", "curiosity", "--case", "X", data=data)
    assert p.returncode == 77 and "not allowed" in p.stderr
    assert run("verify", lfw("Tony_Blair", 1), data=data).returncode == 2
    assert run("frobnicate", data=data).returncode == 2
    assert run("--detector", "sift", "stats", data=data).returncode == 2
    assert run("people", "show", "not-a-number", data=data).returncode == 2
    p = run("people", "show", "12345", data=data)
    assert p.returncode == 6 and "no person 12345" in p.stderr


def test_worker_crash_does_not_stop_the_batch(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(1, 9):
        shutil.copy(lfw("Tony_Blair", i), photos / f"t{i}.jpg")
    shutil.copy(lfw("Tony_Blair", 9), photos / "boom.jpg")
    p = run("add", photos, "-j", "2", "--json", data=tmp_path / "data", check=3,
            env={"_FACEINDEX_TEST_CRASH_ON": "boom.jpg"})
    rep = json.loads(p.stdout)
    assert rep["images_indexed"] == 8
    assert [os.path.basename(e["path"]) for e in rep["errors"]] == ["boom.jpg"]
    assert "crashed" in rep["errors"][0]["reason"]
