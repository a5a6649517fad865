"""`faceindex demo`: the shipped public-domain sample, indexed, searched and verified with no test data at all."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

from faceindex import demo

from .test_cli import EXE


def _run(args: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in {**os.environ, **(env or {})}.items() if k != "FACEINDEX_DATA"}
    return subprocess.run([*EXE.split(), *args], cwd=cwd, capture_output=True, text=True, timeout=600, env=env)


def test_the_sample_ships_in_the_package_with_its_notice():
    raw = demo.sample_bytes()
    assert raw[:2] == b"\xff\xd8" and 100_000 < len(raw) < 1_000_000  # a JPEG, small enough to ship
    notice = (Path(demo.__file__).parent / "samples" / "README.md").read_text()
    assert "public domain" in notice and "1927" in notice


def test_demo_indexes_searches_and_verifies_in_an_empty_folder(tmp_path):
    # tmp_path has no ../shared next to it: the demo must need nothing but the package.
    p = _run(["demo"], cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    out = p.stdout
    data = tmp_path / "faceindex-demo"
    assert (data / "photos" / demo.SAMPLE).read_bytes() == demo.sample_bytes()
    faces = int(re.search(r"(\d+) faces in the index", out).group(1))
    assert faces == 29, out  # every face of the sample is found (the sample's README says so)
    # the probe (a mirrored, enlarged crop of one face) finds that face first, as a strong candidate
    box = re.search(r"the face at (\[[\d, ]+\])", out).group(1)
    first = re.search(r"^\s+1\. (\S+)\s+FMR .*?(strong candidate|possible candidate|no candidate).*box (\[[\d, ]+\])",
                      out, re.M)
    assert first is not None, out
    assert first.group(2) == "strong candidate" and first.group(3) == box, out
    verdicts = re.findall(r"similarity (\S+)\s+FMR .*-> (.+)$", out, re.M)
    assert len(verdicts) == 2, out
    (same_sim, same_label), (other_sim, other_label) = verdicts
    assert same_label == "strong candidate" and float(same_sim) > float(other_sim), out
    assert "faceindex --data faceindex-demo stats" in out  # how to explore the folder
    assert "Candidates are leads" in p.stderr

    # the folder is a normal data folder: the other commands work on it, and the audit trail holds the demo
    stats = json.loads(_run(["--data", str(data), "stats", "--json"], cwd=tmp_path).stdout)
    assert stats["faces"] == 29 and stats["images"] == 1
    audit = _run(["--data", str(data), "audit", "show", "--json"], cwd=tmp_path)
    assert audit.returncode == 0 and audit.stdout.count("\"case_ref\": \"demo\"") == 3, audit.stdout[-2000:]

    again = _run(["demo"], cwd=tmp_path)  # re-running is incremental
    assert again.returncode == 0, again.stderr[-3000:]
    assert "0 images indexed, 1 unchanged, 29 faces in the index" in again.stdout


def test_demo_data_folder_from_either_option(tmp_path):
    p = _run(["--data", "mine", "demo"], cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert (tmp_path / "mine" / "photos" / demo.SAMPLE).is_file()
    assert not (tmp_path / "faceindex-demo").exists()
    assert "faceindex --data mine stats" in p.stdout
