"""The worker pool (faceindex.workers) against the ProcessPoolExecutor pool it replaced, in the same run.

The baseline is the previous `analyse_files`: a forkserver ProcessPoolExecutor, one FacePipeline per worker built
in the pool initializer, up to 4 files in flight per worker. The new pool starts `python -m faceindex.workers`
processes and keeps one file in flight per worker (so that a dying worker points at one file). Both analyse the
same LFW images with the same settings; the figures are wall-clock seconds from the first call to the last result
(worker start-up and model loading included), and the time to the first result.

    python benchmarks/pool.py [--images 300] [--workers 2] [--repeat 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LFW = ROOT.parent / "shared" / "data" / "lfw" / "images"

_pipe = None


def _init(settings_json: str) -> None:
    global _pipe
    from faceindex.config import Settings
    from faceindex.pipeline import FacePipeline

    _pipe = FacePipeline(Settings.model_validate_json(settings_json))


def _work(path: str):
    from faceindex.pipeline import _analyse

    return _analyse(_pipe, path)


def baseline(paths: list[str], settings, workers: int):
    """The replaced pool (crash handling left out: it costs nothing when no worker dies)."""
    import multiprocessing as mp

    queue = deque(paths)
    inflight: set = set()
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("forkserver"), initializer=_init,
                             initargs=(settings.model_dump_json(),)) as pool:
        while queue or inflight:
            while queue and len(inflight) < workers * 4:
                inflight.add(pool.submit(_work, queue.popleft()))
            done, inflight = wait(inflight, return_when=FIRST_COMPLETED)
            for fut in done:
                yield fut.result()


def timed(results) -> tuple[float, float, int]:
    t0 = time.perf_counter()
    first, faces = None, 0
    for r in results:
        first = first or time.perf_counter() - t0
        faces += len(getattr(r, "faces", []))
    return time.perf_counter() - t0, first or 0.0, faces


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    from faceindex.config import Settings
    from faceindex.pipeline import analyse_files

    files = sorted(LFW.glob("*/*.jpg"))
    paths = [str(p) for p in files[:: max(1, len(files) // args.images)][: args.images]]
    settings = Settings(data="/nonexistent")  # the pipeline reads no data folder
    print(f"# worker pool: {len(paths)} LFW images, {args.workers} workers, {platform.machine()}, "
          f"{os.cpu_count()} cores, backend {settings.backend}; best of {args.repeat}")
    print(f"{'pool':<38} {'seconds':>8} {'images/s':>9} {'first s':>8} {'faces':>6} {'vs baseline':>12}")
    rows = {}
    for name, run in (("ProcessPoolExecutor forkserver (before)", lambda: baseline(paths, settings, args.workers)),
                      ("faceindex.workers (now)", lambda: analyse_files(paths, settings, args.workers))):
        best = min((timed(run()) for _ in range(args.repeat)), key=lambda t: t[0])
        rows[name] = best
    base = rows["ProcessPoolExecutor forkserver (before)"][0]
    for name, (secs, first, faces) in rows.items():
        print(f"{name:<38} {secs:8.2f} {len(paths) / secs:9.2f} {first:8.2f} {faces:6d} {base / secs:11.2f}x")


if __name__ == "__main__":
    main()
