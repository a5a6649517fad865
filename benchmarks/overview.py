"""GET /v1/overview: what verifying the audit chain costs the landing page, and what running it in the background on
its own connection spares the searches that append audit records meanwhile.

An empty data folder gets N audit records (synthetic `search` records, appended through AuditLog.append as the
engine does). Then, through the app (FastAPI's TestClient, in process): the median GET /v1/stats (the baseline:
counts, no chain), GET /v1/overview with the last check still fresh, and with a check due at every request (it
starts one and waits at most CHAIN_WAIT_S). And the verification alone, plus the median latency of an audit append
(what every search pays) while nothing else runs, while a verification runs on a connection of its own (as the
overview does it), and while it runs on the engine's own AuditLog (which holds its lock for the whole walk).

    nice -n 10 python benchmarks/overview.py [--records 1000 10000 50000] [--repeats 5]
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from embed import cpu_name  # benchmarks/ is on sys.path when a script of it runs

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def appends_during(fi, verify, n: int = 30) -> float:
    """Median ms of `n` audit appends while `verify` runs in a thread over and over (None: nothing runs)."""
    import threading

    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            verify()

    t = threading.Thread(target=loop) if verify else None
    if t:
        t.start()
        time.sleep(0.05)
    times = []
    try:
        for i in range(n):
            t0 = time.perf_counter()
            fi.audit.append("search", actor="bench (key 1)", role="investigator", purpose="investigation",
                            case_ref="C-LAT", details={"probe_sha256": f"{i:064x}"})
            times.append((time.perf_counter() - t0) * 1000)
    finally:
        stop.set()
        if t:
            t.join()
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, nargs="+", default=[1000, 10_000, 50_000])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    from fastapi.testclient import TestClient

    from faceindex import FaceIndex
    from faceindex.audit import AuditLog
    from faceindex.config import Settings
    from faceindex.server import routes_overview
    from faceindex.server.app import create_app

    print(f"machine: {cpu_name()}; medians of {args.repeats} requests / verifications, of 30 appends")
    print(f"{'records':>8} {'stats ms':>9} {'overview ms':>12} {'/stats':>7} {'check due ms':>13} {'/stats':>7} "
          f"{'verify ms':>10} {'append ms':>10} {'own conn':>9} {'/idle':>6} {'engine lock':>12} {'/idle':>6}")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        with FaceIndex.open(data) as fi:
            _, token = fi.create_key("bench", "admin")
        have = 0
        for n in sorted(args.records):
            with FaceIndex.open(data) as fi:
                for i in range(have, n):
                    fi.audit.append("search", actor="bench (key 1)", role="investigator", purpose="investigation",
                                    case_ref=f"C-{i % 97}", details={"probe_sha256": f"{i:064x}", "faces": 1,
                                                                     "results": [[[i, 0.5]]]})
                have = n

                def own() -> None:
                    with AuditLog(data / "audit.db") as log:
                        log.verify()

                verify = ms(own, args.repeats)
                idle = appends_during(fi, None)
                during_own = appends_during(fi, own)
                during_engine = appends_during(fi, fi.audit.verify)
                have += 90
            settings = Settings(data=data, rate_limit=1_000_000, workers=1)
            with TestClient(create_app(settings)) as c:
                h = {"Authorization": f"Bearer {token}"}
                c.get("/v1/overview", headers=h)  # warm: index, model, connections, the first check
                stats = ms(lambda c=c, h=h: c.get("/v1/stats", headers=h), args.repeats)
                fresh = ms(lambda c=c, h=h: c.get("/v1/overview", headers=h), args.repeats)
                saved = routes_overview.CHAIN_CACHE_S
                routes_overview.CHAIN_CACHE_S = 0.0  # a check is due at every request
                try:
                    due = ms(lambda c=c, h=h: c.get("/v1/overview", headers=h), args.repeats)
                finally:
                    routes_overview.CHAIN_CACHE_S = saved
            print(f"{n:>8} {stats:>9.1f} {fresh:>12.1f} {fresh / stats:>7.2f} {due:>13.1f} {due / stats:>7.1f} "
                  f"{verify:>10.1f} {idle:>10.2f} {during_own:>9.2f} {during_own / idle:>6.1f} {during_engine:>12.2f} "
                  f"{during_engine / idle:>6.1f}")


if __name__ == "__main__":
    main()
