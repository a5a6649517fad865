"""Past one machine: the store behind the engine at scale. Subcommands (each a separate part):

    python benchmarks/scale.py store [--images 200] [--workers 2] [--rows 20000] [--pg URL]

`store`: the PostgreSQL catalog vs the embedded SQLite catalog, in the same run on the same machine:
  1. catalog commits alone: `--rows` images of one synthetic 256-d face each, committed 64 per transaction as
     `add` does (Catalog.add_image), then reading every embedding back (what an index rebuild does) and the
     per-search join of 10 result ids with their records (face_records), p50 over 500 calls;
  2. a full `FaceIndex.add` of `--images` LFW images with `--workers` worker processes.
PostgreSQL: the server at `--pg` (a URL without database; a database is created and dropped), else a throwaway
local cluster (Debian's postgresql binaries, fsync ON so that both stores are durable: SQLite WAL with
synchronous=NORMAL, PostgreSQL with synchronous_commit on).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
LFW = ROOT.parent / "shared" / "data" / "lfw" / "images"
DIM = 256


def _faces(rng: np.random.Generator, n: int):
    from faceindex.types import Box, Face, Quality

    v = rng.normal(size=(n, DIM)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return [Face(Box(0, 0, 50, 50), ((1.0, 1.0),) * 5, Quality(50, 100.0, 0.9, 0.9, 0.8), v[i], 0) for i in range(n)]


def catalog_part(target: str, rows: int) -> dict:
    from faceindex.catalog import open_catalog

    rng = np.random.default_rng(0)
    cat = open_catalog(target)
    sid = cat.source_id("bench", create=True)
    faces = _faces(rng, rows)
    t = time.perf_counter()
    for start in range(0, rows, 64):
        with cat.transaction():
            for i in range(start, min(rows, start + 64)):
                cat.add_image(sid, f"/bench/{i}.jpg", 1, f"{i:064x}", 1000, 100, 100, [faces[i]])
    commit_s = time.perf_counter() - t
    t = time.perf_counter()
    n = sum(len(ids) for ids, _ in cat.embeddings(dim=DIM))
    read_s = time.perf_counter() - t
    ids = cat.face_ids()
    lat = []
    for _ in range(500):
        pick = rng.choice(ids, 10, replace=False).tolist()
        t = time.perf_counter()
        recs = cat.face_records(pick)
        lat.append(time.perf_counter() - t)
        assert len(recs) == 10
    cat.close()
    assert n == rows
    return {"commit_rows_s": rows / commit_s, "read_rows_s": rows / read_s, "records_p50_ms": statistics.median(lat) * 1e3}


def ingest_part(catalog: str | None, files: list[Path], workers: int, tmp: Path) -> tuple[float, int]:
    from faceindex import FaceIndex

    src = tmp / "photos"
    if not src.exists():
        src.mkdir()
        for f in files:
            (src / f.name).symlink_to(f)
    data = tmp / f"data-{'pg' if catalog else 'sqlite'}"
    with FaceIndex.open(data, catalog=catalog) as fi:
        t = time.perf_counter()
        rep = fi.add([src], "bench", workers=workers)
        secs = time.perf_counter() - t
        assert rep.ok and rep.images_indexed == len(files), rep.errors
        return len(files) / secs, rep.faces_found


def store(args: argparse.Namespace) -> None:
    from tests.pg_server import PgServer, _start

    tmp = Path(tempfile.mkdtemp(prefix="faceindex-scale-"))
    stop = None
    if args.pg:
        server = PgServer(args.pg)
    else:
        folder = Path(tempfile.mkdtemp(prefix="faceindex-scale-pg-"))
        base, stop = _start(folder, durable=True)
        server = PgServer(base, own=True)
    try:
        print(f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; Python "
              f"{platform.python_version()}; PostgreSQL at {server.base.split('@')[-1]}", flush=True)
        for label, make in (("sqlite", lambda: str(tmp / "bench.db")), ("postgresql", server.database)):
            r = catalog_part(make(), args.rows)
            print(f"catalog {label:10s}: commit {r['commit_rows_s']:8.0f} faces/s (64 per transaction), read "
                  f"{r['read_rows_s']:9.0f} embeddings/s, records of 10 ids p50 {r['records_p50_ms']:.2f} ms",
                  flush=True)
            if label == "sqlite":
                base_r = r
        print(f"ratio postgresql/sqlite: commit {r['commit_rows_s'] / base_r['commit_rows_s']:.2f}x, read "
              f"{r['read_rows_s'] / base_r['read_rows_s']:.2f}x, records latency "
              f"{r['records_p50_ms'] / base_r['records_p50_ms']:.2f}x", flush=True)
        if args.images:
            files = sorted(LFW.glob("*/*.jpg"))
            files = files[::max(1, len(files) // args.images)][:args.images]
            speeds = {}
            for label, catalog in (("sqlite", None), ("postgresql", server.database()),
                                   ("sqlite", None), ("postgresql", server.database())):
                for d in tmp.glob("data-*"):
                    shutil.rmtree(d)
                speed, faces = ingest_part(catalog, files, args.workers, tmp)
                speeds.setdefault(label, []).append(speed)
                print(f"add {len(files)} LFW images, {args.workers} workers, {label:10s}: {speed:6.1f} images/s "
                      f"({faces} faces)", flush=True)
            best = {k: max(v) for k, v in speeds.items()}
            print(f"ratio postgresql/sqlite (best of 2 each): {best['postgresql'] / best['sqlite']:.2f}x", flush=True)
    finally:
        if stop:
            stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="part", required=True)
    st = sub.add_parser("store", help="PostgreSQL catalog vs SQLite: commits, reads, a full add")
    st.add_argument("--rows", type=int, default=20_000)
    st.add_argument("--images", type=int, default=200)
    st.add_argument("--workers", type=int, default=2)
    st.add_argument("--pg", help="postgresql://USER@HOST:PORT of a server to use (default: a throwaway cluster)")
    args = ap.parse_args()
    {"store": store}[args.part](args)


if __name__ == "__main__":
    main()
