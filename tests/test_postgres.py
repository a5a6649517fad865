"""PostgreSQL catalog: bad input, concurrent writers from many processes and threads, several engines sharing
one catalog (caches follow generation changes), keys, two-person confirmation and people on a real server."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from faceindex import FaceIndex
from faceindex.audit import AuditLog
from faceindex.catalog import open_catalog
from faceindex.catalog.postgres import WRITER_LOCK
from faceindex.errors import AccessDenied, CatalogError

from .conftest import lfw, needs_lfw, person_of
from .pg_server import PASSWORD_USER
from .test_catalog_contract import DIM, faces

WHY = {"purpose": "testing", "case": "T-1"}
CLI = (shutil.which("faceindex") or f"{sys.executable} -m faceindex").split()


# --- bad input: one line naming the problem, an exit code, nothing written ----------------------------------------
def _refused(target: str, match: str) -> CatalogError:
    with pytest.raises(CatalogError, match=match) as e:
        open_catalog(target)
    assert "\n" not in str(e.value)
    return e.value


def test_unknown_scheme_is_refused():
    _refused("mysql://u@h/db", "unknown scheme 'mysql'")


def test_unreachable_server_is_one_line():
    _refused("postgresql://postgres@127.0.0.1:1/faces", "cannot connect to the catalog .*unreachable")


def test_missing_database_is_named(pg_server):
    _refused(pg_server.url("no_such_db"), 'database "no_such_db" does not exist')


def test_wrong_credentials_are_named_without_the_password(pg_server):
    if not pg_server.own:
        pytest.skip("needs the tests' own cluster (its pg_hba.conf checks one role's password)")
    pg_server.admin(f"DROP ROLE IF EXISTS {PASSWORD_USER}")
    pg_server.admin(f"CREATE ROLE {PASSWORD_USER} LOGIN PASSWORD 'right-secret'")
    url = pg_server.url("postgres").replace("postgres@", f"{PASSWORD_USER}:wrong-secret@")
    e = _refused(url, "wrong credentials")
    assert "wrong-secret" not in str(e) and "***" in str(e)


def test_newer_schema_refused_by_the_cli_with_exit_code(pg_url, tmp_path):
    cat = open_catalog(pg_url)
    with cat.transaction():
        cat.set_meta("schema_version", "99")
    cat.close()
    p = subprocess.run([*CLI, "--data", str(tmp_path / "d"), "--catalog", pg_url, "stats"], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == CatalogError.exit_code, p.stderr
    assert "schema version 99" in p.stderr and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def test_unreachable_server_through_the_cli(tmp_path):
    p = subprocess.run([*CLI, "--data", str(tmp_path / "d"), "--catalog", "postgresql://fi:pw@127.0.0.1:1/x",
                        "stats"], capture_output=True, text=True, timeout=120)
    assert p.returncode == CatalogError.exit_code and "unreachable" in p.stderr and "pw@" not in p.stderr


# --- concurrency --------------------------------------------------------------------------------------------------
APPENDER = """
import sys
from faceindex.audit import AuditLog
from faceindex import anchor
from faceindex.catalog import open_catalog
from faceindex.catalog.postgres import WRITER_LOCK
url, who, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
cat = open_catalog(url)
log = anchor.open_audit(cat, url, None)
for i in range(n):
    log.append("search", actor=who, role="owner", details={"i": i})
log.close(); cat.close()
"""


def test_audit_chain_stays_one_chain_under_concurrent_processes(pg_url):
    from faceindex import anchor

    cat = open_catalog(pg_url)
    anchor.open_audit(cat, pg_url, None).close()
    procs = [subprocess.Popen([sys.executable, "-c", APPENDER, pg_url, f"p{i}", "40"]) for i in range(4)]
    assert [p.wait(timeout=300) for p in procs] == [0] * 4
    with AuditLog(pg_url) as log:
        assert log.count() == 160
        result = log.verify(anchor.read_anchor(cat))
        assert result.ok and result.records_checked == 160, result.problem
        assert [r.seq for r in log.query()] == list(range(1, 161))
        assert anchor.read_anchor(cat) == log.head()  # the catalog's anchor follows the last append
    cat.close()


def test_audit_log_refuses_update_delete_truncate(pg_url):
    import psycopg

    with AuditLog(pg_url) as log:
        log.append("search", actor="a", role="owner")
    with psycopg.connect(pg_url, autocommit=True) as db:
        for sql in ("UPDATE audit SET actor='x'", "DELETE FROM audit", "TRUNCATE audit", "DELETE FROM audit_head",
                    "UPDATE audit_info SET value='x'", "UPDATE audit_head SET seq=5"):
            with pytest.raises(psycopg.Error, match="append-only"):
                db.execute(sql)


def test_threads_adding_the_same_images_store_each_once(pg_url):
    """Eight writers, each on its own connection, add overlapping content: one image and one set of faces per
    sha256, and the generation counts every committed change (no lost update)."""
    open_catalog(pg_url).close()
    errors: list[BaseException] = []

    def writer(k: int) -> None:
        cat = open_catalog(pg_url)
        try:
            sid = cat.source_id(f"s{k % 2}", create=True)
            for j in range(12):
                cat.add_image(sid, f"/w{k}/{j}.jpg", 1, f"sha-{j}", 100, 64, 64, faces(2, seed=j))
        except BaseException as e:
            errors.append(e)
        finally:
            cat.close()

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    cat = open_catalog(pg_url)
    counts = cat.counts()
    assert (counts["images"], counts["faces"], counts["files"], counts["sources"]) == (12, 24, 96, 2)
    assert cat.generation == 12  # one bump per image that added faces, none lost
    ids, vecs = next(cat.embeddings(dim=DIM))
    assert len(ids) == 24 and np.isfinite(vecs).all()
    cat.close()


@needs_lfw
def test_ingest_processes_at_once_store_no_duplicate(pg_url, tmp_path):
    """Three `faceindex add` processes (own data folders, one PostgreSQL catalog) over the same photos."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("Tony_Blair", "Serena_Williams"):
        for i in range(1, 5):
            shutil.copy(lfw(name, i), photos / f"{name}_{i}.jpg")
    env = {**os.environ, "FACEINDEX_CATALOG": pg_url}
    procs = [subprocess.Popen([*CLI, "--data", str(tmp_path / f"d{k}"), "add", str(photos), "--source", "s",
                               "--workers", "1"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for k in range(3)]
    assert [p.wait(timeout=600) for p in procs] == [0, 0, 0], [p.stderr.read() for p in procs]
    with FaceIndex.open(tmp_path / "d0", catalog=pg_url) as fi:
        assert fi.catalog.counts()["images"] == 8
        dup = fi.catalog.db.execute("SELECT COUNT(*) FROM (SELECT image_id, idx FROM faces GROUP BY image_id, idx "
                                    "HAVING COUNT(*) > 1) AS d").fetchone()[0]
        assert dup == 0 and fi.index.count == fi.catalog.face_count() >= 8
        assert fi.audit_verify().ok


# --- several engines on one catalog -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shared_pg(pg_server, tmp_path_factory):
    """A small index (4 people x 5 photos) in a PostgreSQL catalog, built once for this module."""
    if not (Path(lfw("Tony_Blair", 1)).is_file()):
        pytest.skip("LFW images not found (../shared/data)")
    url = pg_server.database()
    photos = tmp_path_factory.mktemp("photos")
    for name in ("Tony_Blair", "Serena_Williams", "Colin_Powell", "Hugo_Chavez"):
        for i in range(1, 6):
            shutil.copy(lfw(name, i), photos / f"{name}_{i:04d}.jpg")
    with FaceIndex.open(tmp_path_factory.mktemp("a"), catalog=url) as fi:
        assert fi.add([photos], "lfw", workers=2).ok
    yield url
    pg_server.drop(url)


def test_second_server_sees_ingest_optout_and_keys_of_the_first(shared_pg, tmp_path):
    """Two engines with their own data folders (vector index files) on one catalog: each follows the other's
    changes through the catalog's generations, without a restart."""
    a = FaceIndex.open(tmp_path / "a", catalog=shared_pg)
    b = FaceIndex.open(tmp_path / "b", catalog=shared_pg)
    try:
        assert b.index.count == a.catalog.face_count()  # b's index built from the catalog on first open
        probe = lfw("Ariel_Sharon", 10)
        assert not any(person_of(m.path) == "Ariel_Sharon"
                       for m in b.search(probe, top=5, largest=True, **WHY)[0].matches)
        extra = tmp_path / "extra"
        extra.mkdir()
        for i in range(1, 4):
            shutil.copy(lfw("Ariel_Sharon", i), extra / f"Ariel_Sharon_{i:04d}.jpg")
        a.add([extra], "lfw", workers=1)
        top = b.search(probe, top=3, largest=True, **WHY)[0].matches  # b reconciles its index by generation
        assert person_of(top[0].path) == "Ariel_Sharon"
        a.optout_add([lfw("Ariel_Sharon", 5)], "OPT-A")
        assert not any(person_of(m.path) == "Ariel_Sharon"
                       for m in b.search(probe, top=5, largest=True, **WHY)[0].matches)
        assert b.index.count == b.catalog.face_count()
        key_id, token = a.create_key("desk", "investigator")
        assert b.authenticate(token)["role"] == "investigator"
        a.revoke_key(key_id)
        with pytest.raises(AccessDenied, match="revoked"):
            b.authenticate(token)
        a.set_policy(allowed_purposes=["testing", "journalism"])
        assert b.policy.allowed_purposes == ["testing", "journalism"]  # the policy is the catalog's
        with FaceIndex.open(tmp_path / "c", catalog=shared_pg) as c:  # a new server adopts it, records nothing
            assert c.policy.allowed_purposes == ["testing", "journalism"]
        assert [r.details.get("how") for r in b.audit.query(action="policy.change")][-1] is None
        assert b.audit_verify().ok and b.audit.head() == a.audit.head()
    finally:
        a.close()
        b.close()


def test_two_person_confirmation_across_servers(shared_pg, tmp_path):
    with FaceIndex.open(tmp_path / "a", catalog=shared_pg, role="investigator", actor="ann") as ann, \
            FaceIndex.open(tmp_path / "b", catalog=shared_pg, role="investigator", actor="bob") as bob:
        face = int(ann.catalog.face_ids()[0])
        first = ann.confirm("C-9", face)
        assert first["status"].startswith("awaiting") and ann.confirm("C-9", face)["confirmed_by"] == ["ann"]
        assert bob.confirm("C-9", face)["status"] == "confirmed"
        assert ann.confirmations("C-9")[face]["confirmed_by"] == ["ann", "bob"]


def test_people_clustering_merge_and_split(shared_pg, tmp_path):
    with FaceIndex.open(tmp_path / "a", catalog=shared_pg) as fi:
        people = fi.cluster(full=True, **WHY)
        big = [p for p in people if p.face_count >= 4]
        assert len(big) >= 3
        for p in big:
            _, recs = fi.person(p.id, **WHY)
            assert len({person_of(r.path) for r in recs}) == 1  # no mixed person
        a, b = big[0], big[1]
        merged = fi.merge_people([a.id, b.id])
        _, recs = fi.person(merged.id, **WHY)
        part = [r.id for r in recs if person_of(r.path) == person_of(recs[-1].path)]
        new = fi.split_person(merged.id, part)
        again = fi.cluster(full=True, **WHY)  # reviewers' decisions survive a full run
        ids_of = {p.id: set(r.id for r in fi.person(p.id, **WHY)[1]) for p in again}
        assert any(set(part) == faces_ for faces_ in ids_of.values()) and new.id


@needs_lfw
def test_lost_server_connection_mid_ingest_then_rerun_completes(pg_url, pg_server, tmp_path):
    """The catalog's connections are cut (a server restart, a failover) while `add` commits batches: the run
    stops with one line and exit code 74; re-running completes it with no duplicate and nothing lost."""
    import time

    import psycopg

    photos = tmp_path / "photos"
    photos.mkdir()
    names = ("Tony_Blair", "Colin_Powell", "Donald_Rumsfeld")
    for name in names:
        for i in range(1, 21):
            shutil.copy(lfw(name, i), photos / f"{name}_{i:04d}.jpg")
    env = {**os.environ, "FACEINDEX_CATALOG": pg_url}
    cmd = [*CLI, "--data", str(tmp_path / "d"), "add", str(photos), "--source", "s", "--workers", "1"]
    open_catalog(pg_url).close()  # the schema, so that the watcher below can count
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    dbname = pg_url.rsplit("/", 1)[1]
    deadline = time.time() + 300
    with psycopg.connect(pg_url, autocommit=True) as watch:
        while watch.execute("SELECT COUNT(*) FROM images").fetchone()[0] < 1:
            assert proc.poll() is None and time.time() < deadline, proc.communicate()
            time.sleep(0.1)
        # hold the writer lock so that the next batch waits for it, then cut every faceindex connection
        watch.execute(f"SELECT pg_advisory_lock({WRITER_LOCK})")
        assert proc.poll() is None, "the run finished in one batch; nothing to interrupt"
        watch.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                      "AND application_name = 'faceindex'", (dbname,))
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == CatalogError.exit_code, err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("error: catalog postgresql:")
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    with FaceIndex.open(tmp_path / "d", catalog=pg_url) as fi:
        assert fi.catalog.counts()["images"] == 3 * 20 and fi.catalog.counts()["files"] == 3 * 20
        dup = fi.catalog.db.execute("SELECT COUNT(*) FROM (SELECT image_id, idx FROM faces GROUP BY image_id, idx "
                                    "HAVING COUNT(*) > 1) AS d").fetchone()[0]
        assert dup == 0 and fi.index.count == fi.catalog.face_count()
        assert fi.audit_verify().ok


@needs_lfw
def test_two_servers_on_one_catalog(pg_url, tmp_path):
    """Two `faceindex serve` processes (own data folders) on one PostgreSQL catalog: a job ingested through one
    is searchable through the other; keys made once work on both; the job is visible from both."""
    from .servers import Server

    root = tmp_path / "root"
    (root / "photos").mkdir(parents=True)
    for i in range(1, 5):
        shutil.copy(lfw("Tony_Blair", i), root / "photos" / f"Tony_Blair_{i}.jpg")
    with FaceIndex.open(tmp_path / "admin", catalog=pg_url) as fi:
        admin = fi.create_key("admin-desk", "admin")[1]
        inv = fi.create_key("inv-desk", "investigator")[1]
    headers = {"Authorization": f"Bearer {admin}"}
    servers = [Server(tmp_path / f"s{k}", tmp_path / f"s{k}.log", ingest_root=root, catalog=pg_url, workers="1")
               for k in range(2)]
    try:
        a, b = servers
        r = a.client.post("/v1/ingest/path", headers=headers, json={"path": str(root / "photos"), "source": "lfw"})
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        import time

        deadline = time.monotonic() + 300
        while (job := b.client.get(f"/v1/jobs/{job_id}", headers=headers).json())["state"] not in ("done", "failed"):
            assert time.monotonic() < deadline
            time.sleep(0.5)
        assert job["state"] == "done" and job["faces"] >= 4, job
        r = b.client.post("/v1/search", headers={"Authorization": f"Bearer {inv}"},
                          files={"probe": ("p.jpg", lfw("Tony_Blair", 9).read_bytes(), "image/jpeg")},
                          data={"purpose": "testing", "case": "T-1"})
        assert r.status_code == 200, r.text
        assert "Tony_Blair" in r.json()["results"][0]["candidates"][0]["path"]
    finally:
        for s in servers:
            s.stop()
    with FaceIndex.open(tmp_path / "admin", catalog=pg_url) as fi:
        assert fi.audit_verify().ok
        assert {r.action for r in fi.audit.query()} >= {"ingest.batch", "search"}


def test_dropped_audit_tables_stop_the_engine_until_a_recorded_reset(pg_url, tmp_path):
    """The anchor in the catalog catches an audit log dropped from the database; `audit reset` starts a new,
    recorded chain and keeps the old tables aside."""
    import psycopg

    from faceindex.errors import AuditTrailError

    with FaceIndex.open(tmp_path / "d", catalog=pg_url) as fi:
        fi.set_source("s", basis="owner")
        fi.set_policy(require_case=False)
        assert fi.audit.head()[0] >= 2
    with psycopg.connect(pg_url, autocommit=True) as db:
        db.execute("DROP TABLE audit, audit_head, audit_info")
    with pytest.raises(AuditTrailError, match="ends at record 0"):
        FaceIndex.open(tmp_path / "d", catalog=pg_url)
    env = {**os.environ, "FACEINDEX_CATALOG": pg_url}
    p = subprocess.run([*CLI, "--data", str(tmp_path / "d"), "audit", "reset", "--reason", "tables dropped"],
                       capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == 0, p.stderr
    with FaceIndex.open(tmp_path / "d", catalog=pg_url) as fi:
        first = fi.audit.record_at(1)
        assert first.action == "audit.reset" and first.details["reason"] == "tables dropped"
        assert fi.audit_verify().ok
