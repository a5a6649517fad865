"""Past one machine (issue 9): figures for the cluster backends, one subcommand per part.

`ingest`: `FaceIndex.add` of the same LFW images into a fresh index, with the local process pool (`-j CPUS`)
against Ray worker actors on a two-node Ray cluster on loopback addresses of this machine (one CPU per node, so
the same cores), alternating, in the same run. Figures: wall seconds, CPU seconds (the driver and every process
of the pool or of the Ray nodes, including Ray's own daemons), images/s and faces/s, and the ratios Ray / pool.
Start-up (worker processes or actors loading their models) is included in both, as a user sees it.

    nice -n 10 python benchmarks/scale.py ingest [--images 300] [--repeat 2] [--address HOST:PORT]

Without --address, the two nodes are started (and stopped) by the helper the tests use (tests/ray_cluster.py),
with token authentication and a fresh token, as in the tests.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LFW = ROOT.parent / "shared" / "data" / "lfw" / "images"


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


# --- ingest: Ray vs the process pool -------------------------------------------------------------------------
def lfw_images(n: int) -> list[Path]:
    """`n` LFW images, spread over people (every person's first images first), deterministic."""
    people = sorted(p for p in LFW.iterdir() if p.is_dir())
    by_person = [sorted(p.glob("*.jpg")) for p in people]
    out: list[Path] = []
    rank = 0
    while len(out) < n:
        for files in by_person:
            if rank < len(files):
                out.append(files[rank])
                if len(out) == n:
                    break
        rank += 1
    return out


def _clock_ticks(pid: int) -> int:
    """utime + stime + cutime + cstime of one process (its reaped children included), in clock ticks."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return sum(int(x) for x in fields[11:15])


class NodeCpu:
    """CPU seconds used by the processes of some Ray nodes, sampled every 0.2 s in a thread.

    Ray's worker processes exit (and are reaped without accounting) when their job ends, so their CPU time is
    taken from the last sample of each process: at most 0.2 s per process is missed."""

    def __init__(self, nodes) -> None:
        self.nodes, self.last = nodes, {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        for n in self.nodes:
            for pid in n.pids():
                self.last[pid] = max(self.last.get(pid, 0), _clock_ticks(pid))

    def _run(self) -> None:
        while not self.stop.wait(0.2):
            self._sample()

    def __enter__(self) -> NodeCpu:
        self._sample()
        self.start = dict(self.last)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()
        self._sample()
        self.seconds = sum(t - self.start.get(pid, 0) for pid, t in self.last.items()) / os.sysconf("SC_CLK_TCK")


def _self_cpu() -> float:
    r, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime + c.ru_utime + c.ru_stime


def _one_add(folder: Path, *, workers: int, ray: str | None, nodes: list) -> dict:
    from faceindex import FaceIndex

    with tempfile.TemporaryDirectory(prefix="fi-scale-") as data:
        fi = FaceIndex.open(data)
        try:
            with NodeCpu(nodes if ray else []) as node_cpu:
                stamps: list[float] = []

                def on(event: str, info: dict) -> None:
                    if event == "file":
                        stamps.append(time.perf_counter())

                cpu0, t0 = _self_cpu(), time.perf_counter()
                rep = fi.add([folder], "bench", workers=workers, ray=ray, progress=on)
                wall = time.perf_counter() - t0
                cpu = _self_cpu() - cpu0
        finally:
            fi.close()
    assert not rep.errors, rep.errors
    # steady state: from the first result to the last (start-up and model loading excluded), per image
    steady = (stamps[-1] - stamps[0]) / max(1, len(stamps) - 1)
    return {"wall": wall, "cpu": cpu + node_cpu.seconds, "images": rep.images_indexed, "faces": rep.faces_found,
            "steady": steady, "startup": stamps[0] - t0}


def ingest(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(ROOT))
    from tests.ray_cluster import HEAD_IP, WORKER_IP, RayNode, token_auth, wait_for_cpus

    if not LFW.is_dir():
        sys.exit(f"LFW not found at {LFW}")
    images = lfw_images(args.images)
    nodes: list[RayNode] = []
    with tempfile.TemporaryDirectory(prefix="fi-scale-photos-") as tmp, token_auth():
        folder = Path(tmp)
        for p in images:
            (folder / p.name).symlink_to(p)
        try:
            if args.address:
                address, cpus = args.address, args.cpus
            else:
                nodes = [RayNode(HEAD_IP)]
                nodes.append(RayNode(WORKER_IP, head=nodes[0].address))
                address, cpus = nodes[0].address, 2
                wait_for_cpus(address, cpus)
            runs: dict[str, list[dict]] = {"pool": [], "ray": []}
            for i in range(args.repeat):
                for name in ("pool", "ray"):
                    r = _one_add(folder, workers=cpus, ray=address if name == "ray" else None, nodes=nodes)
                    runs[name].append(r)
                    print(f"run {i + 1} {name:4s}: {r['wall']:6.1f} s wall, {r['cpu']:6.1f} s CPU, "
                          f"first result after {r['startup']:.1f} s, then {1 / r['steady']:.1f} images/s; "
                          f"{r['images']} images, {r['faces']} faces", flush=True)
        finally:
            for n in reversed(nodes):
                n.stop()

    def best(name: str, key: str) -> float:
        return min(r[key] for r in runs[name])

    pool, ray_ = runs["pool"][0], runs["ray"][0]
    assert pool["faces"] == ray_["faces"], (pool, ray_)
    print(f"\nmachine: {cpu_name()}, {os.cpu_count()} logical CPUs; Python {platform.python_version()}; "
          f"{len(images)} LFW images, {pool['faces']} faces; {cpus} CPUs for each executor; best of {args.repeat}")
    per_face = pool["images"] / pool["faces"]
    print(f"{'executor':24s} {'wall s':>7s} {'CPU s':>7s} {'start s':>8s} {'images/s':>9s} {'faces/s':>8s} "
          f"{'steady faces/s/CPU':>19s}")
    for name, label in (("pool", f"process pool (-j {cpus})"), ("ray", f"Ray, {cpus} nodes x 1 CPU")):
        w, c, st = best(name, "wall"), best(name, "cpu"), best(name, "startup")
        steady = 1 / best(name, "steady") / per_face / cpus
        print(f"{label:24s} {w:7.1f} {c:7.1f} {st:8.1f} {pool['images'] / w:9.1f} {pool['faces'] / w:8.1f} "
              f"{steady:19.1f}")
    print(f"Ray / pool: wall x{best('ray', 'wall') / best('pool', 'wall'):.2f}, "
          f"CPU x{best('ray', 'cpu') / best('pool', 'cpu'):.2f}, "
          f"steady-state time per image x{best('ray', 'steady') / best('pool', 'steady'):.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("ingest", help="Ray (two local nodes) vs the process pool on the same cores and images")
    s.add_argument("--images", type=int, default=300, help="LFW images to index (default 300)")
    s.add_argument("--repeat", type=int, default=2, help="runs of each executor, alternating (default 2)")
    s.add_argument("--address", help="use this Ray cluster (HOST:PORT) instead of starting two local nodes")
    s.add_argument("--cpus", type=int, default=2, help="with --address: its CPUs (and -j of the pool)")
    s.set_defaults(run=ingest)
    args = ap.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
