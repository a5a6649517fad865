"""The server stays up and serves only what it should: engine work off the event loop (health checks answer while a
search runs), no decoding of absurd shapes, no body read before authentication, body limits enforced on chunked
bodies as they stream, security headers on the web page, and no file served that changed since it was indexed."""

from __future__ import annotations

import io
import os
import socket
import struct
import threading
import time
import zlib
from pathlib import Path

import pytest
from PIL import Image

from .conftest import PEOPLE, WHY, Server, auth, lfw, needs_lfw, search

pytestmark = needs_lfw


def _big_probe() -> bytes:
    buf = io.BytesIO()
    Image.open(lfw(PEOPLE[1], 5)).resize((5000, 5000), Image.Resampling.BILINEAR).save(buf, "JPEG", quality=85)
    return buf.getvalue()


def test_health_checks_answer_while_a_search_runs(site, server) -> None:
    probe = _big_probe()
    finished: list[str] = []
    result: dict = {}

    def run_search() -> None:
        with __import__("httpx").Client(base_url=server.url, timeout=300) as c:
            result["search"] = search(c, site.tokens["alice"], probe, case="BUSY-1")
        finished.append("search")

    t = threading.Thread(target=run_search)
    t.start()
    time.sleep(0.5)  # the upload is in; the engine is decoding and detecting
    r = server.client.get("/healthz")
    finished.append("healthz")
    t.join(300)
    assert r.status_code == 200 and result["search"].status_code == 200, result["search"].text
    assert finished == ["healthz", "search"], finished


def _png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_a_long_thin_image_is_refused_without_decoding(site, server) -> None:
    for w, h in ((1, 60_000_000), (60_000_000, 1), (100, 5000)):
        r = search(server.client, site.tokens["alice"], _png(w, h))
        assert r.status_code == 422 and r.json()["error"]["code"] == "bad_image", r.text
        assert "aspect ratio" in r.json()["error"]["message"]


def _raw(server: Server, head: str, body: bytes, wait: float = 15.0) -> str:
    """Send request headers and the start of a body, then read what the server answers (without the rest)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=wait) as s:
        s.sendall(head.encode() + b"\r\n\r\n" + body)
        try:
            return s.recv(4096).decode("latin-1")
        except TimeoutError:
            return "(no answer: the server is waiting for the rest of the body)"


def test_no_body_is_read_before_authentication(server) -> None:
    host = f"Host: 127.0.0.1:{server.port}"
    cases = [
        ("POST /v1/search HTTP/1.1", [host, "Content-Type: multipart/form-data; boundary=xx",
                                      "Content-Length: 5000000"], b"--xx\r\n" + b"a" * 1000),
        ("POST /v1/ingest/upload HTTP/1.1", [host, "Content-Type: Multipart/Form-Data; boundary=xx",
                                             "Transfer-Encoding: chunked"], b"3e8\r\n" + b"a" * 1000 + b"\r\n"),
        ("POST /v1/keys HTTP/1.1", [host, "Content-Type: application/json", "Transfer-Encoding: chunked"],
         b"3e8\r\n" + b"[" * 1000 + b"\r\n"),
        ("POST /v1/keys HTTP/1.1", [host, "Authorization: Bearer fi_nope_nope", "Content-Type: application/json",
                                    "Content-Length: 5000000"], b"{" * 1000),
    ]
    for line, headers, body in cases:
        answer = _raw(server, "\r\n".join([line, *headers]), body)
        status = answer.split("\r\n", 1)[0]
        assert status in ("HTTP/1.1 401 Unauthorized", "HTTP/1.1 411 Length Required"), (line, headers, answer[:200])


@pytest.fixture(scope="module")
def small(site):
    s = Server(site.data, site.data.parent / "small.log", max_upload_bytes="100000", rate_limit="100000")
    yield s
    s.stop()


def test_a_chunked_body_over_the_limit_is_cut_off_as_it_streams(site, small) -> None:
    limit = 100_000 * 4 + 1_000_000

    def chunks():
        yield b'{"name": "'
        for _ in range(40):  # 4 MB, over the 1.4 MB limit, with no Content-Length
            yield b"a" * 100_000
        yield b'", "role": "auditor"}'

    r = small.client.post("/v1/keys", headers={**auth(site.tokens["root"]), "Content-Type": "application/json"},
                          content=chunks())
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large", r.text[:300]
    assert str(limit) in r.json()["error"]["message"]
    assert small.client.get("/healthz").status_code == 200


def test_the_web_page_has_security_headers_and_no_foreign_scripts(server) -> None:
    r = server.client.get("/")
    assert r.status_code == 200
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert r.headers["x-frame-options"] == "DENY" and r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "no-referrer"
    assert "<script>" not in r.text and "http" not in "".join(
        line for line in r.text.splitlines() if "<script" in line or "<link" in line)
    assert server.client.get("/docs").status_code == 404  # its page would load scripts from a CDN


def test_a_file_swapped_for_a_link_after_indexing_is_not_served(site, server) -> None:
    face = site.face_ids[PEOPLE[2]][0]
    victim = site.face_paths[face]
    outside = site.data.parent / "outside.jpg"
    outside.write_bytes(lfw(PEOPLE[1], 9).read_bytes())
    os.replace(victim, site.data.parent / "moved-away.jpg")
    Path(victim).symlink_to(outside)
    alice = auth(site.tokens["alice"])
    served = 0
    for fid in site.face_ids[PEOPLE[2]]:
        for kind in ("crop", "image"):
            r = server.client.get(f"/v1/faces/{fid}/{kind}", headers=alice, params=WHY)
            served += r.status_code == 200
    r = server.client.get(f"/v1/faces/{face}/image", headers=alice, params=WHY)
    assert served == 2 * (len(site.face_ids[PEOPLE[2]]) - 1), served  # all but the swapped file's face
    assert r.status_code == 404 and "changed since it was indexed" in r.json()["error"]["message"]
    assert "outside" not in r.text and str(site.data.parent) not in r.text
