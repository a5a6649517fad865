"""Search throughput and latency through the HTTP API, against calling the engine in-process.

A gallery of LFW images is indexed with the Python API (`FaceIndex.add`), then synthetic distractor faces are
written straight into the catalog (embeddings drawn from a Gaussian fitted to the real ones, L2-normalised) to make
it bigger. `faceindex --data DIR serve` then runs as a subprocess on 127.0.0.1, and `POST /v1/search` (multipart
probe upload, `largest=true`, top 10, an investigator key) is timed with 1, 4 and 16 concurrent clients, each a thread
with its own keep-alive connection. The same probes are searched in-process with `FaceIndex.search` (the same work:
decode, detect, embed, index search, audit record), and the HTTP figures are shown as ratios to it. All rows run
interleaved, in rounds, so that they share the (shared, drifting) load of the machine alike.

The server serves one engine call at a time (app.py holds a lock around the engine), so more clients add queueing,
not throughput, beyond overlapping the HTTP work. Client threads and server share this machine's cores.

    python benchmarks/serve.py [--lfw-images 240] [--distractors 20000] [--requests 200] [--clients 1,4,16]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import numpy as np

from faceindex.catalog import now
from faceindex.engine import FaceIndex

ROOT = Path(__file__).resolve().parents[1]
LFW = ROOT.parent / "shared" / "data" / "lfw" / "images"
TOP = 10
LANDMARKS = json.dumps([[640.0, 450.0], [610.0, 452.0], [690.0, 450.0], [720.0, 452.0], [665.0, 500.0]])


def pick_images(n_gallery: int, n_probes: int) -> tuple[list[Path], list[Path]]:
    """Gallery: all but the last image of LFW people with 2+ images (sorted), up to n_gallery; probes: the held-out
    last image of the first n_probes of those people (so each probe has mates in the gallery)."""
    gallery, probes = [], []
    for person in sorted(LFW.iterdir()):
        files = sorted(person.glob("*.jpg"))
        if len(files) < 2:
            continue
        take = files[:-1][: n_gallery - len(gallery)]
        gallery += take
        if len(probes) < n_probes:
            probes.append(files[-1])
        if len(gallery) >= n_gallery and len(probes) >= n_probes:
            break
    return gallery, probes


def add_distractors(fi: FaceIndex, n: int, seed: int) -> int:
    """Write n synthetic faces (one image and one file each) into the catalog; returns how many faces it holds."""
    parts = list(fi.catalog.embeddings(dim=fi.spec.dim))
    real = np.concatenate([p[1] for p in parts]).astype(np.float64)
    rng = np.random.default_rng(seed)
    vecs = rng.multivariate_normal(real.mean(axis=0), np.cov(real, rowvar=False), size=n, method="eigh")
    vecs = (vecs / np.linalg.norm(vecs, axis=1, keepdims=True)).astype(np.float32)
    cat, ts = fi.catalog, now()
    src = cat.source_id("distractors", create=True)
    with cat.transaction() as db:
        img0 = (db.execute("SELECT COALESCE(MAX(id), 0) FROM images").fetchone()[0] or 0) + 1
        face0 = (db.execute("SELECT COALESCE(MAX(id), 0) FROM faces").fetchone()[0] or 0) + 1
        ids = range(n)
        db.executemany(
            "INSERT INTO images(id, sha256, size, width, height, face_count, added_at) VALUES(?,?,?,?,?,?,?)",
            ((img0 + i, f"distractor-{seed}-{i:064d}", 180_000, 1600, 1200, 1, ts) for i in ids))
        db.executemany(
            "INSERT INTO files(source_id, path, image_id, size, mtime_ns, added_at) VALUES(?,?,?,?,?,?)",
            ((src, f"/distractors/{i // 1000:04d}/{i:07d}.jpg", img0 + i, 180_000, 0, ts) for i in ids))
        db.executemany(
            "INSERT INTO faces(id, image_id, idx, x1, y1, x2, y2, landmarks, det_score, q_size, q_sharpness, "
            "q_frontal, quality, embedding, created_at) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            ((face0 + i, img0 + i, 0, 600, 400, 760, 560, LANDMARKS, 1.2, 160, 300.0, 0.95, 0.9,
              vecs[i].tobytes(), ts) for i in ids))
        db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key='generation'")
    _ = fi.index  # reconcile the vector index with the catalog now, not in the first timed search
    fi.save()
    return cat.face_count()


def build(data: Path, args: argparse.Namespace, gallery: list[Path]) -> None:
    folder = data.parent / "gallery"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for p in gallery:
        (folder / p.name).symlink_to(p)
    t = time.perf_counter()
    with FaceIndex.open(data) as fi:
        report = fi.add([folder], "lfw", workers=args.workers)
        print(f"indexed {report.images_indexed} LFW images, {report.faces_found} faces, {len(report.errors)} errors "
              f"in {time.perf_counter() - t:.0f} s ({args.workers} workers)", flush=True)
        if args.distractors:
            t = time.perf_counter()
            total = add_distractors(fi, args.distractors, args.seed)
            print(f"added {args.distractors:,} synthetic distractor faces in {time.perf_counter() - t:.1f} s: "
                  f"{total:,} faces", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(data: Path, port: int, log: Path, options: Sequence[str] = ()) -> subprocess.Popen:
    """`faceindex --data DATA [OPTIONS] serve` on 127.0.0.1:port (OPTIONS: global ones, e.g. --catalog URL)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACEINDEX_")}
    env.update(FACEINDEX_RATE_LIMIT="100000000", FACEINDEX_WORKERS="1")
    cmd = [sys.executable, "-c", "import sys; sys.argv[0] = 'faceindex'; from faceindex.cli import main; main()",
           "--data", str(data), *options, "serve", "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"server exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    sys.exit("server did not answer /healthz within 90 s")


def run_http(url: str, token: str, probes: list[tuple[str, bytes]], clients: int, n: int) -> tuple[np.ndarray, float, int]:
    """n searches shared by `clients` threads; returns (latencies in s of the successful ones, wall s, errors)."""
    lat: list[float] = []
    errors = [0]
    lock = threading.Lock()
    counter = iter(range(n))

    def work() -> None:
        with httpx.Client(base_url=url, timeout=300, headers={"Authorization": f"Bearer {token}"}) as c:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                name, data = probes[i % len(probes)]
                t = time.perf_counter()
                r = c.post("/v1/search", files={"probe": (name, data, "image/jpeg")},
                           data={"purpose": "testing", "case": "BENCH-HTTP", "top": str(TOP), "largest": "true"})
                dt = time.perf_counter() - t
                with lock:
                    if r.status_code == 200:
                        lat.append(dt)
                    else:
                        errors[0] += 1
                        if errors[0] <= 3:
                            print(f"  error {r.status_code}: {r.text[:200]}", file=sys.stderr)

    threads = [threading.Thread(target=work) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return np.array(lat), time.perf_counter() - t0, errors[0]


def run_direct(fi: FaceIndex, probes: list[tuple[str, bytes]], n: int, offset: int = 0) -> tuple[np.ndarray, float]:
    lat = []
    t0 = time.perf_counter()
    for i in range(n):
        _, data = probes[(offset + i) % len(probes)]
        t = time.perf_counter()
        fi.search(data, TOP, purpose="testing", case="BENCH-DIRECT", largest=True)
        lat.append(time.perf_counter() - t)
    return np.array(lat), time.perf_counter() - t0


def ms(a: np.ndarray, q: float) -> float:
    return float(np.quantile(a, q) * 1000) if len(a) else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lfw-images", type=int, default=240, help="LFW images indexed through FaceIndex.add")
    ap.add_argument("--distractors", type=int, default=20_000, help="synthetic faces written into the catalog")
    ap.add_argument("--probes", type=int, default=16, help="distinct probe photos (held-out LFW images)")
    ap.add_argument("--requests", type=int, default=200, help="searches per concurrency level (and in-process)")
    ap.add_argument("--clients", default="1,4,16", help="concurrent HTTP clients, comma-separated")
    ap.add_argument("--rounds", type=int, default=4, help="interleaved rounds the searches of each row are split into")
    ap.add_argument("--warmup", type=int, default=5, help="untimed searches before timing (each path)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes for indexing LFW")
    ap.add_argument("--data", type=Path, default=None,
                    help="data folder to build (or reuse, when it already holds faces); default: a temporary one")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if not LFW.is_dir():
        sys.exit(f"LFW images not found at {LFW}")
    levels = [int(x) for x in args.clients.split(",")]
    tmp = None
    if args.data is None:
        tmp = Path(tempfile.mkdtemp(prefix="faceindex-serve-bench-"))
        data = tmp / "data"
    else:
        data = args.data.resolve()
    gallery, probe_paths = pick_images(args.lfw_images, args.probes)
    probes = [(p.name, p.read_bytes()) for p in probe_paths]
    server = None
    try:
        with FaceIndex.open(data) as fi:
            have = fi.catalog.face_count()
        if have:
            print(f"reusing {data}: {have:,} faces", flush=True)
        else:
            build(data, args, gallery)
        with FaceIndex.open(data, actor="bench-admin") as fi:
            _, token = fi.create_key("serve-benchmark", "investigator")
            faces = fi.catalog.face_count()
        print(f"# faceindex search over HTTP vs in-process: {platform.processor() or platform.machine()}, "
              f"{os.cpu_count()} cores, Python {platform.python_version()}; load average "
              f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")
        print(f"gallery {faces:,} faces; {len(probes)} probe photos (held-out LFW, ~250x250 JPEG, ~"
              f"{np.mean([len(d) for _, d in probes]) / 1000:.0f} kB), largest face, top {TOP}; "
              f"{args.requests} searches per row", flush=True)

        direct = FaceIndex.open(data, actor="bench-direct", role="investigator")
        for i in range(args.warmup):
            direct.search(probes[i % len(probes)][1], TOP, purpose="testing", case="BENCH-DIRECT", largest=True)
        port = free_port()
        log = data.parent / "serve-bench-server.log"
        server = start_server(data, port, log)
        url = f"http://127.0.0.1:{port}"
        run_http(url, token, probes, 1, args.warmup)
        # interleaved rounds, so that every row sees the same (shared, drifting) machine load
        d_lat: list[np.ndarray] = []
        d_wall = 0.0
        h: dict[int, list] = {c: [[], 0.0, 0] for c in levels}
        for r in range(args.rounds):
            n = args.requests // args.rounds + (1 if r < args.requests % args.rounds else 0)
            lat, wall = run_direct(direct, probes, n, offset=r * n)
            d_lat.append(lat)
            d_wall += wall
            for clients in levels:
                lat, wall, errors = run_http(url, token, probes, clients, n)
                h[clients][0].append(lat)
                h[clients][1] += wall
                h[clients][2] += errors
            print(f"  round {r + 1}/{args.rounds}: {n} searches per row; load average "
                  f"{os.getloadavg()[0]:.1f}", flush=True)
        direct.close()
        d_all = np.concatenate(d_lat)
        d_rps = len(d_all) / d_wall
        rows = [(c, np.concatenate(v[0]), v[1], v[2]) for c, v in h.items()]

        head = (f"{'path':<22} {'clients':>7} {'ok':>5} {'err':>4} {'req/s':>7} {'p50 ms':>8} {'p99 ms':>8} "
                f"{'req/s ratio':>11} {'p50 ratio':>9} {'p99 ratio':>9}")
        print("\n" + head + "\n" + "-" * len(head))
        print(f"{'FaceIndex.search':<22} {1:>7} {len(d_all):>5} {0:>4} {d_rps:>7.1f} {ms(d_all, .5):>8.1f} "
              f"{ms(d_all, .99):>8.1f} {1:>11.2f} {1:>9.2f} {1:>9.2f}")
        for clients, lat, wall, errors in rows:
            rps = len(lat) / wall
            print(f"{'HTTP POST /v1/search':<22} {clients:>7} {len(lat):>5} {errors:>4} {rps:>7.1f} {ms(lat, .5):>8.1f} "
                  f"{ms(lat, .99):>8.1f} {rps / d_rps:>11.2f} {ms(lat, .5) / ms(d_all, .5):>9.2f} "
                  f"{ms(lat, .99) / ms(d_all, .99):>9.2f}")
        print(f"ratios are HTTP / in-process (req/s: higher is better; latency: lower is better). In-process runs one "
              f"search at a time; all rows interleaved in {args.rounds} rounds.")
        print(f"load average at end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    finally:
        if server is not None and server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                server.kill()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
