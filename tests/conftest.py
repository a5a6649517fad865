"""Shared fixtures: real faces from ../shared/data (skipped with a reason when absent) and synthetic images."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# the browser tests' fixtures (server, browser, page), for every tests/test_web*.py; a PostgreSQL server; a
# Milvus server
pytest_plugins = ["tests.web_support", "tests.pg_server", "tests.milvus_server"]

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
LFW = DATA / "lfw" / "images"
DETECTION = DATA / "detection"

needs_lfw = pytest.mark.skipif(not LFW.is_dir(), reason=f"LFW images not found at {LFW} (../shared/data)")
needs_detection = pytest.mark.skipif(not DETECTION.is_dir(), reason=f"detection photos not found at {DETECTION}")

# People with many LFW images: enrolled in the shared test index
PEOPLE = ["Colin_Powell", "Tony_Blair", "Donald_Rumsfeld", "Gerhard_Schroeder", "Ariel_Sharon", "Hugo_Chavez",
          "Junichiro_Koizumi", "Jean_Chretien", "John_Ashcroft", "Serena_Williams"]
PER_PERSON = 16  # images indexed per person; the following ones are held out as probes


def lfw(name: str, i: int) -> Path:
    return LFW / name / f"{name}_{i:04d}.jpg"


def distractors(n: int) -> list[Path]:
    """Single-image LFW people (not in PEOPLE), deterministic."""
    out = []
    for d in sorted(LFW.iterdir()):
        files = list(d.glob("*.jpg"))
        if len(files) == 1:
            out.append(files[0])
            if len(out) == n:
                break
    return out


def jpeg_bytes(arr: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", **kw)
    return buf.getvalue()


@pytest.fixture(scope="session")
def gallery_dir(tmp_path_factory) -> Path:
    """A folder of symlinks: PER_PERSON images of each of PEOPLE, plus 80 single-image distractors."""
    if not LFW.is_dir():
        pytest.skip(f"LFW images not found at {LFW} (../shared/data)")
    root = tmp_path_factory.mktemp("gallery")
    for name in PEOPLE:
        (root / name).mkdir()
        for i in range(1, PER_PERSON + 1):
            (root / name / lfw(name, i).name).symlink_to(lfw(name, i))
    (root / "others").mkdir()
    for p in distractors(80):
        (root / "others" / p.name).symlink_to(p)
    return root


@pytest.fixture(scope="session")
def built_index(gallery_dir, tmp_path_factory):
    """A FaceIndex over gallery_dir, built once (all cores) for the read-only tests."""
    from faceindex import FaceIndex

    data = tmp_path_factory.mktemp("data")
    fi = FaceIndex.open(data)
    report = fi.add([gallery_dir], "lfw", workers=os.cpu_count())
    assert report.ok, report.errors
    yield fi
    fi.close()


def person_of(path: str) -> str:
    """LFW person name from an indexed path (parent folder for gallery links)."""
    return Path(path).stem.rsplit("_", 1)[0]


def annotations() -> dict:
    return json.loads((DETECTION / "dlib_faces" / "annotations_xywh.json").read_text())
