"""A real PostgreSQL 15 server for the tests: one per test session, a fresh database per test.

`FACEINDEX_TEST_PG=postgresql://USER@HOST:PORT/DB` reuses a running server (the tests create and drop their own
databases on it; the user needs CREATEDB). Otherwise the Debian server binaries (`apt-get install postgresql`;
/usr/lib/postgresql/NN/bin) start a throwaway cluster in a temporary folder, owned by the `postgres` user when
the tests run as root (initdb refuses root). Tests that need PostgreSQL are skipped, with the reason, when
neither is available.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ENV = "FACEINDEX_TEST_PG"


def _bindir() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    roots = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    return roots[0] if roots else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PASSWORD_USER = "fi_password_user"  # the one role our own cluster checks passwords of (for the credentials test)


class PgServer:
    """A server URL without a database; `database()` makes a fresh one. `own`: started by these tests."""

    def __init__(self, base: str, own: bool = False) -> None:
        self.base = base.rstrip("/")
        self.own = own

    def url(self, db: str) -> str:
        return f"{self.base}/{db}"

    def admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(sql)

    def database(self) -> str:
        name = "fi_" + uuid.uuid4().hex[:12]
        self.admin(f"CREATE DATABASE {name}")
        return self.url(name)

    def drop(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        self.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _start(folder: Path, durable: bool = False) -> tuple[str, callable]:
    """initdb + pg_ctl start in `folder`; (base URL, stop). Tests run without fsync; benchmarks `durable`."""
    bindir = _bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries not found (apt-get install postgresql) and FACEINDEX_TEST_PG unset")
    pgdata = folder / "pgdata"
    as_root = os.geteuid() == 0

    def run(*cmd: str) -> None:
        line = " ".join(cmd)
        full = ["su", "postgres", "-s", "/bin/sh", "-c", line] if as_root else ["sh", "-c", line]
        subprocess.run(full, check=True, capture_output=True, timeout=120)

    if as_root:
        shutil.chown(folder, "postgres", "postgres")
    folder.chmod(0o755)
    port = _free_port()
    run(str(bindir / "initdb"), "-D", str(pgdata), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
    hba = pgdata / "pg_hba.conf"  # passwords checked for one role, trust for the rest
    hba.write_text(f"host all {PASSWORD_USER} 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
    run(str(bindir / "pg_ctl"), "-D", str(pgdata), "-l", str(folder / "log"), "-w", "-o",
        f"\"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c max_connections=200 "
        + ("" if durable else "-c fsync=off -c full_page_writes=off -c synchronous_commit=off") + "\"", "start")

    def stop() -> None:
        run(str(bindir / "pg_ctl"), "-D", str(pgdata), "-m", "immediate", "stop")

    return f"postgresql://postgres@127.0.0.1:{port}", stop


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """The session's PostgreSQL server (FACEINDEX_TEST_PG, or a throwaway cluster)."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg not installed (pip install 'faceindex[test]')")
    given = os.environ.get(ENV)
    if given:
        yield PgServer(given.rsplit("/", 1)[0] if given.count("/") > 2 else given)
        return
    folder = Path(tempfile.mkdtemp(prefix="faceindex-pg-"))
    try:
        base, stop = _start(folder)
    except subprocess.CalledProcessError as e:
        shutil.rmtree(folder, ignore_errors=True)
        pytest.skip(f"cannot start PostgreSQL: {e.stderr.decode(errors='replace').strip()[:300]}")
    try:
        yield PgServer(base, own=True)
    finally:
        stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    """A fresh, empty database on the session's server, dropped after the test."""
    url = pg_server.database()
    yield url
    pg_server.drop(url)


@pytest.fixture(params=["sqlite", "postgres"])
def catalog_backend(request, monkeypatch) -> str | None:
    """Run a test on the embedded SQLite catalog and again on PostgreSQL: FACEINDEX_CATALOG is set for the test
    (and for the CLI processes it starts). Returns the PostgreSQL URL, None for SQLite."""
    if request.param == "sqlite":
        monkeypatch.delenv("FACEINDEX_CATALOG", raising=False)
        return None
    url = request.getfixturevalue("pg_url")
    monkeypatch.setenv("FACEINDEX_CATALOG", url)
    return url
