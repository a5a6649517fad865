"""`faceindex migrate --to-catalog postgresql://...`: an embedded index moved over, verified; refusals."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from faceindex import FaceIndex
from faceindex.catalog import open_catalog

from .conftest import lfw, needs_lfw, person_of
from .test_postgres import CLI

pytestmark = needs_lfw
WHY = {"purpose": "testing", "case": "T-1"}


def cli(*args, data, check=None):
    env = {k: v for k, v in os.environ.items() if k != "FACEINDEX_CATALOG"}
    p = subprocess.run([*CLI, "--data", str(data), *args], capture_output=True, text=True, timeout=300, env=env)
    if check is not None:
        assert p.returncode == check, (p.returncode, p.stdout, p.stderr)
    assert "Traceback" not in p.stderr, p.stderr
    return p


@pytest.fixture
def embedded(tmp_path):
    """A small embedded index with people, a name, an opt-out, a key, a confirmation and audit records."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("Tony_Blair", "Serena_Williams", "Hugo_Chavez"):
        for i in range(1, 4):
            shutil.copy(lfw(name, i), photos / f"{name}_{i:04d}.jpg")
    data = tmp_path / "data"
    with FaceIndex.open(data) as fi:
        assert fi.add([photos], "lfw", workers=1).ok
        people = fi.cluster(full=True, **WHY)
        fi.name_person(people[0].id, "first", **WHY)
        fi.optout_add([lfw("Hugo_Chavez", 10)], "OPT-1")
        fi.create_key("desk", "investigator")
        fi.search(lfw("Tony_Blair", 9), **WHY)
        before = {"counts": fi.catalog.counts(), "head": fi.audit.head(), "names": fi.catalog.person_names()}
    return data, before


def test_migrate_copies_everything_verified(embedded, pg_url, tmp_path):
    data, before = embedded
    p = cli("migrate", "--to-catalog", pg_url, "--json", data=data, check=0)
    report = json.loads(p.stdout)
    assert report["audit_verified"] and report["rows"]["faces"] == before["counts"]["faces"]
    assert report["audit_records"] == before["head"][0]
    for folder in (data, tmp_path / "fresh"):  # the same data folder, and a new one that builds its index
        with FaceIndex.open(folder, catalog=pg_url) as fi:
            assert fi.catalog.counts() == before["counts"]
            assert fi.catalog.person_names() == before["names"]
            assert fi.audit_verify().ok and fi.audit.head()[0] >= before["head"][0]
            assert fi.index.count == fi.catalog.face_count()
            top = fi.search(lfw("Tony_Blair", 9), top=1, largest=True, **WHY)[0].matches[0]
            assert person_of(top.path) == "Tony_Blair"
            assert fi.catalog.optouts()[0]["reference"] == "OPT-1" and fi.api_keys()[0]["name"] == "desk"
            fi.create_key(f"k-{folder.name}", "auditor")  # ids continue above the copied ones
    assert cli("--catalog", pg_url, "audit", "verify", data=tmp_path / "x", check=0)


def test_migrate_to_postgresql_and_milvus(embedded, pg_url, milvus_url, tmp_path):
    """--to-vectors fills the Milvus collection from the migrated catalog, and the copy searches the same."""
    data, before = embedded
    p = cli("migrate", "--to-catalog", pg_url, "--to-vectors", milvus_url, "--json", data=data, check=0)
    report = json.loads(p.stdout)
    assert report["vectors"] == {"url": milvus_url, "vectors": before["counts"]["faces"], "verified": True}
    with FaceIndex.open(tmp_path / "fresh", catalog=pg_url, vectors=milvus_url) as fi:
        assert fi.index.count == before["counts"]["faces"]
        top = fi.search(lfw("Tony_Blair", 9), top=1, largest=True, **WHY)[0].matches[0]
        assert person_of(top.path) == "Tony_Blair"


def test_migrate_refuses_a_non_empty_target_and_changes_nothing(embedded, pg_url):
    data, _ = embedded
    cli("migrate", "--to-catalog", pg_url, data=data, check=0)
    cat = open_catalog(pg_url)
    counts = cat.counts()
    cat.close()
    p = cli("migrate", "--to-catalog", pg_url, data=data, check=74)
    assert "not empty" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    cat = open_catalog(pg_url)
    assert cat.counts() == counts
    cat.close()


def test_migrate_bad_targets(embedded, tmp_path):
    data, _ = embedded
    p = cli("migrate", "--to-catalog", str(tmp_path / "x.db"), data=data, check=74)
    assert "postgresql://" in p.stderr
    p = cli("migrate", "--to-catalog", "postgresql://fi:secret@127.0.0.1:1/faces", data=data, check=74)
    assert "unreachable" in p.stderr and "secret" not in p.stderr
