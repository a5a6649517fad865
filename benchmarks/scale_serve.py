"""Past one machine: search through `faceindex serve` on the cluster backends (PostgreSQL catalog + Milvus vectors)
against the embedded default (SQLite catalog + FAISS file), in the same run on the same machine.

    nice -n 10 python benchmarks/scale.py serve [--lfw-images 300] [--distractors 10000] [--requests 120]
                                                [--clients 1,8] [--pg URL]

Each backend gets the same gallery: `--lfw-images` LFW images indexed with `faceindex add` (real faces, so the
probes find their mates), then `--distractors` synthetic faces written through the catalog API (`add_image`, the
same seed for both; embeddings from a Gaussian fitted to the real ones, L2-normalised), which the vector store picks
up when the index next opens (Milvus: then flushed, and timed once its index covers every row). Probes: the held-out
last photo of the first `--probes` LFW people with 2+ images.
One `faceindex serve` per backend runs on 127.0.0.1 with an investigator key made by `faceindex keys create`;
`POST /v1/search` (probe upload, purpose and case, largest face, top 10) is timed with 1 and 8 concurrent clients
(threads with a keep-alive connection each; `benchmarks/serve.py`'s client). All rows run interleaved in rounds so
that they share the machine's drifting load alike; the cluster rows are shown as ratios to the embedded ones.

"server ms" is the server's own mean time per search (its /metrics histogram, read before and after each row): the
rest of a client's latency is HTTP and the client. The API reports no split inside a search, so the script also
times the engine's steps in-process on each backend (probe analysis = decode + detect + embed; the vector store's
search; the catalog's checks and records of the candidates; the audit record) and checks that the top candidate of
each probe is one of its mates.

PostgreSQL: `--pg` (a server URL without database; a database is created and dropped), else a throwaway cluster
from Debian's binaries (tests/pg_server.py, fsync on). Milvus: FACEINDEX_TEST_MILVUS (milvus://host:port) if set,
else the embedded server of the PyPI package `milvus` (only one can run on a machine: not while the tests use it).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CASE = "BENCH-SERVE"


@dataclass
class Backend:
    """One store configuration: its data folder, its global CLI options and the same as FaceIndex.open overrides."""

    name: str
    data: Path
    catalog: str | None = None
    vectors: str | None = None
    server: subprocess.Popen | None = None
    url: str = ""
    token: str = ""
    auditor: str = ""
    rows: dict = field(default_factory=dict)  # clients -> [latencies], wall s, errors, server s, server count

    @property
    def options(self) -> list[str]:
        return [*(["--catalog", self.catalog] if self.catalog else []),
                *(["--vectors", self.vectors] if self.vectors else [])]

    @property
    def overrides(self) -> dict:
        return {k: v for k, v in (("catalog", self.catalog), ("vectors", self.vectors)) if v}

    def cli(self, *args: str) -> str:
        """`faceindex --data DATA [OPTIONS] ARGS` as a subprocess, as an operator would run it; its stdout."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("FACEINDEX_")}
        cmd = [sys.executable, "-m", "faceindex", "--data", str(self.data), *self.options, *args]
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
        if done.returncode:
            sys.exit(f"{self.name}: {' '.join(args[:2])} failed ({done.returncode}): {done.stderr.strip()[-1500:]}")
        return done.stdout


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def load_avg() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def add_distractors(b: Backend, n: int, seed: int) -> tuple[int, float]:
    """n synthetic faces through the catalog API, then the vector store brought up to date; (faces, seconds)."""
    from faceindex.engine import FaceIndex
    from faceindex.types import Box, Face, Quality

    t = time.perf_counter()
    with FaceIndex.open(b.data, **b.overrides) as fi:
        if n:
            real = np.concatenate([v for _, v in fi.catalog.embeddings(dim=fi.spec.dim)]).astype(np.float64)
            rng = np.random.default_rng(seed)
            vecs = rng.multivariate_normal(real.mean(axis=0), np.cov(real, rowvar=False), size=n, method="eigh")
            vecs = (vecs / np.linalg.norm(vecs, axis=1, keepdims=True)).astype(np.float32)
            cat = fi.catalog
            src = cat.source_id("distractors", create=True)
            quality = Quality(160, 300.0, 0.9, 0.95, 0.9)
            for start in range(0, n, 64):  # 64 images per transaction, as `add` commits
                with cat.transaction():
                    for i in range(start, min(n, start + 64)):
                        sha = hashlib.sha256(f"distractor-{seed}-{i}".encode()).hexdigest()
                        face = Face(Box(600, 400, 760, 560), ((640.0, 450.0),) * 5, quality, vecs[i], 0)
                        cat.add_image(src, f"/distractors/{i // 1000:04d}/{i:07d}.jpg", 0, sha, 180_000, 1600, 1200,
                                      [face])
    with FaceIndex.open(b.data, **b.overrides) as fi:  # reopened: Milvus syncs with the catalog on open only
        index = fi.index  # sync the vector store with the catalog now (FAISS: rebuild; Milvus: write the new rows)
        fi.save()
        if hasattr(index, "flush"):  # Milvus: seal the segments and wait for their index, the steady state
            from scale_search import wait_indexed

            index.flush()
            wait_indexed(index, fi.catalog.face_count(), timeout=600)
        return fi.catalog.face_count(), time.perf_counter() - t


def server_seconds(b: Backend) -> tuple[float, float]:
    """(sum, count) of the server's latency histogram for POST /v1/search (needs an auditor's key)."""
    text = httpx.get(f"{b.url}/metrics", headers={"Authorization": f"Bearer {b.auditor}"}, timeout=30).text
    got = {}
    for part in ("sum", "count"):
        m = re.search(rf'^faceindex_http_request_seconds_{part}{{route="/v1/search"}} (\S+)$', text, re.M)
        got[part] = float(m.group(1)) if m else 0.0
    return got["sum"], got["count"]


def split(b: Backend, probes: list[tuple[str, bytes]], warmup: int) -> dict:
    """The steps of one FaceIndex.search in-process, per probe (ms lists; each step timed inside the same call by
    wrapping it), and how many probes' top candidate is one of their mates."""
    from faceindex import search as S
    from faceindex.engine import FaceIndex

    steps: dict[str, list[float]] = {k: [] for k in ("analysis", "vectors", "catalog", "audit", "total")}
    spent: dict[str, float] = {}

    def timed(key: str, fn):
        def wrapper(*a, **kw):
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                spent[key] = spent.get(key, 0.0) + time.perf_counter() - t
        return wrapper

    hits = 0
    originals = {k: getattr(S, k) for k in ("load", "probe_faces", "search_faces")}
    with FaceIndex.open(b.data, actor="bench-split", role="investigator", **b.overrides) as fi:
        for _name, data in probes[:warmup]:
            fi.search(data, 10, purpose="testing", case=CASE, largest=True)
        index = fi.index
        index.search = timed("vectors", index.search)  # this instance only
        fi._record = timed("audit", fi._record)
        S.load, S.probe_faces = timed("analysis", originals["load"]), timed("analysis", originals["probe_faces"])
        S.search_faces = timed("search_faces", originals["search_faces"])
        try:
            for name, data in probes:
                spent.clear()
                t = time.perf_counter()
                res = fi.search(data, 10, purpose="testing", case=CASE, largest=True)
                total = time.perf_counter() - t
                for k, v in (("analysis", spent["analysis"]), ("vectors", spent["vectors"]),
                             ("catalog", spent["search_faces"] - spent["vectors"]), ("audit", spent["audit"]),
                             ("total", total)):
                    steps[k].append(v * 1000)
                person = name.rsplit("_", 1)[0]
                top = res[0].matches[0] if res and res[0].matches else None
                hits += bool(top and Path(top.path).name.rsplit("_", 1)[0] == person)
        finally:
            for k, fn in originals.items():
                setattr(S, k, fn)
    return {"steps": steps, "hits": hits}


def run(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(ROOT))  # tests.pg_server
    from serve import LFW, free_port, ms, pick_images, run_http, start_server

    from tests.milvus_server import drop_all
    from tests.pg_server import PgServer, _start

    if not LFW.is_dir():
        sys.exit(f"LFW images not found at {LFW}")
    levels = [int(x) for x in args.clients.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="faceindex-scale-serve-", dir=args.tmp))
    pg_stop = milvus = pg_dir = None
    pg_url = None
    backends: list[Backend] = []
    try:
        if args.pg:
            pg = PgServer(args.pg)
        else:
            folder = pg_dir = Path(tempfile.mkdtemp(prefix="faceindex-scale-serve-pg-"))  # (in /tmp: the postgres
            # user must reach it, and `tmp` is root's alone when run as root)
            base, pg_stop = _start(folder, durable=True)
            pg = PgServer(base, own=True)
        pg_url = pg.database()
        milvus_base = os.environ.get("FACEINDEX_TEST_MILVUS")
        if not milvus_base:
            from milvus import default_server as milvus

            milvus.set_base_dir(str(tmp / "milvus"))
            milvus.start()
            milvus_base = f"milvus://127.0.0.1:{milvus.listen_port}"
        vectors = f"{milvus_base.rstrip('/')}/bench{uuid.uuid4().hex[:8]}"
        backends = [Backend("SQLite+FAISS", tmp / "data-embedded"),
                    Backend("PostgreSQL+Milvus", tmp / "data-cluster", catalog=pg_url, vectors=vectors)]

        gallery, probe_paths = pick_images(args.lfw_images, args.probes)
        photos = tmp / "gallery"
        photos.mkdir()
        for p in gallery:
            (photos / p.name).symlink_to(p)
        probes = [(p.name, p.read_bytes()) for p in probe_paths]
        print(f"# faceindex serve, cluster backends vs embedded: {cpu_name()}, {os.cpu_count()} cores, Python "
              f"{platform.python_version()}; PostgreSQL at {pg.base.split('@')[-1]}, Milvus at {vectors}; "
              f"load average {load_avg()}", flush=True)
        for b in backends:
            t = time.perf_counter()
            rep = json.loads(b.cli("add", str(photos), "--source", "lfw", "--workers", str(args.workers), "--json"))
            print(f"{b.name}: faceindex add: {rep['images_indexed']} LFW images, {rep['faces_found']} faces, "
                  f"{len(rep['errors'])} errors in {time.perf_counter() - t:.0f} s", flush=True)
            faces, secs = add_distractors(b, args.distractors, args.seed)
            print(f"{b.name}: {args.distractors:,} distractors through the catalog API + vector sync in {secs:.1f} s: "
                  f"{faces:,} faces", flush=True)
            b.token = json.loads(b.cli("keys", "create", "--role", "investigator", "--name", "bench", "--json"))["token"]
            b.auditor = json.loads(b.cli("keys", "create", "--role", "auditor", "--name", "bench-metrics",
                                         "--json"))["token"]
        for b in backends:
            port = free_port()
            b.server = start_server(b.data, port, tmp / f"server-{b.data.name}.log", b.options)
            b.url = f"http://127.0.0.1:{port}"
            run_http(b.url, b.token, probes, 1, args.warmup)
        print(f"gallery {faces:,} faces; {len(probes)} probe photos (held-out LFW), largest face, top 10; "
              f"{args.requests} searches per row in {args.rounds} interleaved rounds", flush=True)

        for r in range(args.rounds):
            n = args.requests // args.rounds + (1 if r < args.requests % args.rounds else 0)
            for clients in levels:
                for b in backends:
                    s0, c0 = server_seconds(b)
                    lat, wall, errors = run_http(b.url, b.token, probes, clients, n)
                    s1, c1 = server_seconds(b)
                    row = b.rows.setdefault(clients, [[], 0.0, 0, 0.0, 0.0])
                    row[0].append(lat)
                    row[1] += wall
                    row[2] += errors
                    row[3] += s1 - s0
                    row[4] += c1 - c0
            print(f"  round {r + 1}/{args.rounds}: {n} searches per row; load average {load_avg()}", flush=True)

        head = (f"{'backend':<18} {'clients':>7} {'ok':>4} {'err':>3} {'req/s':>6} {'p50 ms':>7} {'p99 ms':>7} "
                f"{'server ms':>9} {'req/s x':>7} {'p50 x':>6} {'p99 x':>6}")
        print("\n## POST /v1/search through faceindex serve; x = ratio to SQLite+FAISS at the same clients\n")
        print(head + "\n" + "-" * len(head))
        for clients in levels:
            base = None
            for b in backends:
                lats, wall, errors, ssum, scount = b.rows[clients]
                lat = np.concatenate(lats)
                fig = (len(lat) / wall, ms(lat, .5), ms(lat, .99))
                base = base or fig
                print(f"{b.name:<18} {clients:>7} {len(lat):>4} {errors:>3} {fig[0]:>6.1f} {fig[1]:>7.1f} "
                      f"{fig[2]:>7.1f} {ssum / max(scount, 1) * 1000:>9.1f} {fig[0] / base[0]:>7.2f} "
                      f"{fig[1] / base[1]:>6.2f} {fig[2] / base[2]:>6.2f}")
        for b in backends:  # servers off: the in-process split runs alone
            b.server.send_signal(signal.SIGTERM)
            b.server.wait(30)
        print(f"\n## one search's steps in-process (p50 ms over {len(probes)} probes; total = FaceIndex.search)\n")
        head = (f"{'backend':<18} {'analysis':>8} {'vectors':>8} {'catalog':>8} {'audit':>8} {'total':>8} "
                f"{'top-1 is a mate':>16}")
        print(head + "\n" + "-" * len(head))
        for b in backends:
            got = split(b, probes, args.warmup)
            p50 = {k: float(np.median(v)) for k, v in got["steps"].items()}
            print(f"{b.name:<18} {p50['analysis']:>8.1f} {p50['vectors']:>8.2f} {p50['catalog']:>8.2f} "
                  f"{p50['audit']:>8.2f} {p50['total']:>8.1f} {got['hits']:>9}/{len(probes)}")
        print("analysis = decode + detect + embed the probe; vectors = the vector store's search (Milvus: + the "
              "catalog check of its ids); catalog = opt-out check + candidate records; audit = the audit record")
        print(f"load average at end: {load_avg()}", flush=True)
    finally:
        for b in backends:
            if b.server is not None and b.server.poll() is None:
                b.server.kill()
                b.server.wait(10)
        if pg_url and not pg_stop:
            pg.drop(pg_url)
        if pg_stop:
            pg_stop()
        if milvus is not None:
            milvus.stop()
        elif backends and backends[1].vectors:
            drop_all(backends[1].vectors)
        shutil.rmtree(tmp, ignore_errors=True)
        if pg_dir:
            shutil.rmtree(pg_dir, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="part", required=True)
    sv = sub.add_parser("serve", help="faceindex serve on PostgreSQL+Milvus vs SQLite+FAISS: 1 and 8 clients")
    sv.add_argument("--lfw-images", type=int, default=300, help="LFW images indexed with `faceindex add`")
    sv.add_argument("--distractors", type=int, default=10_000, help="synthetic faces written through the catalog")
    sv.add_argument("--probes", type=int, default=24, help="distinct probe photos (held-out LFW images)")
    sv.add_argument("--requests", type=int, default=120, help="searches per row (backend x clients)")
    sv.add_argument("--clients", default="1,8", help="concurrent HTTP clients, comma-separated")
    sv.add_argument("--rounds", type=int, default=3, help="interleaved rounds each row's searches are split into")
    sv.add_argument("--warmup", type=int, default=3, help="untimed searches per server before timing")
    sv.add_argument("--workers", type=int, default=2, help="processes of `faceindex add`")
    sv.add_argument("--seed", type=int, default=0)
    sv.add_argument("--pg", help="postgresql://USER@HOST:PORT of a server to use (default: a throwaway cluster)")
    sv.add_argument("--tmp", type=Path, default=None, help="folder for the temporary data (default: the system's)")
    run(ap.parse_args())


if __name__ == "__main__":
    main()
