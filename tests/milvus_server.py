"""A real Milvus server for the tests: the server binary that the PyPI package `milvus` ships (with its embedded
etcd), one per test session; each test makes its own collections (a prefix of its own in the URL).

Only one such server can run on a machine (its etcd peer port is fixed), so a server given by the environment
variable FACEINDEX_TEST_MILVUS (`milvus://host:port`) is used instead when set, and nothing is started.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory) -> Iterator[str]:
    """`milvus://127.0.0.1:PORT` of a running Milvus server (first start ~15 s, ~250 MB of memory)."""
    given = os.environ.get("FACEINDEX_TEST_MILVUS")
    if given:
        yield given.rstrip("/")
        return
    pytest.importorskip("pymilvus", reason="pymilvus is not installed (pip install '.[test]')")
    server_mod = pytest.importorskip("milvus", reason="the milvus server package is not installed (pip install "
                                                      "'.[test]')")
    server = server_mod.default_server
    server.set_base_dir(str(tmp_path_factory.mktemp("milvus")))
    try:
        server.start()
    except Exception as e:  # noqa: BLE001 (any failure to start is reported as such, with its reason)
        pytest.fail(f"the embedded Milvus server did not start: {e} (another one running? set "
                    "FACEINDEX_TEST_MILVUS=milvus://host:port to use it)")
    try:
        yield f"milvus://127.0.0.1:{server.listen_port}"
    finally:
        server.stop()


@pytest.fixture
def milvus_url(milvus_server: str) -> Iterator[str]:
    """The server's URL with a collection prefix of this test's own (`t<hex>`): tests never share collections;
    they are dropped afterwards."""
    url = f"{milvus_server}/t{uuid.uuid4().hex[:12]}"
    yield url
    drop_all(url)


def drop_all(url: str) -> None:
    """Drop the collections under this URL's prefix (tests clean up after themselves)."""
    from pymilvus import MilvusClient

    from faceindex.vectors.milvus import MilvusURL

    u = MilvusURL(url)
    client = MilvusClient(uri=f"http://{u.host}:{u.port}")
    try:
        for name in client.list_collections():
            if name.startswith(u.prefix + "_"):
                client.drop_collection(name)
    finally:
        client.close()
