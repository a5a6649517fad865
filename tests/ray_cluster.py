"""A real Ray cluster for the tests: two nodes on loopback addresses of this machine (head 127.0.0.2, worker 127.0.0.3).

`ray_cluster` (session-scoped) yields the head's address. With FACEINDEX_TEST_RAY=HOST:PORT the tests use that
cluster instead and leave it running. Each node is one `ray start` in its own process group, so a node is stopped
(or killed mid-run, to test fault tolerance: `RayNode.kill`) by its process group and the descendants of those
processes, and nothing else on the machine running Ray is touched (no `ray stop`, which stops every Ray node of
the machine). Every node is stopped at the end of the session, whatever happened.

Authentication: Ray 2.60 runs a cluster without a token unless RAY_AUTH_MODE=token is set, or a token file
(~/.ray/auth_token, written by a local `ray.init()`) exists; then `ray start --address`, `ray status` and every
driver need the same token. So that neither a developer's ~/.ray nor a clean CI machine decides, the fixture runs
its cluster with token authentication and a fresh random token, given to the nodes and, for the session, to this
process and the CLI processes it starts (RAY_AUTH_MODE=token, RAY_AUTH_TOKEN); nothing is written to ~/.ray.
Each node: ~5 s to start, ~0.3 GB.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

HEAD_IP = "127.0.0.2"
WORKER_IP = "127.0.0.3"
OBJECT_STORE = "500000000"  # bytes per node: the smallest Ray accepts comfortably; our batches are small
START_TIMEOUT_S = 120


def ray_cli() -> str | None:
    """The `ray` command of this interpreter's environment (None when Ray is not installed)."""
    exe = Path(sys.executable).parent / "ray"
    return str(exe) if exe.exists() else shutil.which("ray")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("_FACEINDEX_TEST_")}
    env["RAY_USAGE_STATS_ENABLED"] = "0"  # nothing leaves the machine
    return env


@contextlib.contextmanager
def token_auth() -> Iterator[str]:
    """RAY_AUTH_MODE=token with a fresh token in this process's environment (inherited by what it starts)."""
    saved = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")}
    token = secrets.token_hex(32)
    os.environ.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token})
    os.environ.pop("RAY_AUTH_TOKEN_PATH", None)
    try:
        yield token
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class RayNode:
    """One `ray start` node of a test cluster, in its own process group."""

    def __init__(self, ip: str, head: str | None = None, cpus: int = 1) -> None:
        self.ip = ip
        args = [ray_cli() or "ray", "start", f"--node-ip-address={ip}", f"--num-cpus={cpus}",
                f"--object-store-memory={OBJECT_STORE}", "--disable-usage-stats"]
        if head is None:
            self.address = f"{ip}:{_free_port(ip)}"
            args += ["--head", f"--port={self.address.rsplit(':', 1)[1]}", "--include-dashboard=false"]
        else:
            self.address = head
            args += [f"--address={head}"]
        # its own process group (every process of the node keeps it: raylet, workers, agents), in our session: the
        # same scheduling group (autogroup) as the test or benchmark, so a benchmark compares like with like
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     process_group=0, env=_env())
        try:
            out, _ = self.proc.communicate(timeout=START_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RuntimeError(f"ray start for {ip} did not finish within {START_TIMEOUT_S} s") from None
        if self.proc.returncode != 0:
            self.kill()
            raise RuntimeError(f"ray start for {ip} failed: {out.strip().splitlines()[-1:]}")

    def pids(self) -> set[int]:
        """Every process of this node: its process group, and their descendants (Ray's worker processes, which
        the raylet starts in process groups of their own)."""
        parents: dict[int, int] = {}
        found: set[int] = set()
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                parents[int(d.name)] = int(fields[1])
                if int(fields[2]) == self.proc.pid:
                    found.add(int(d.name))
        grew = True
        while grew:
            more = {pid for pid, ppid in parents.items() if ppid in found and pid not in found}
            found |= more
            grew = bool(more)
        return found

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal every process of this node at once (SIGKILL: the node dies as a machine would)."""
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def alive(self) -> bool:
        return bool(self.pids())

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 5 s."""
        self.kill(signal.SIGTERM)
        deadline = time.monotonic() + 5
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        self.kill()


def wait_for_cpus(address: str, cpus: int, timeout: float = 60) -> None:
    """Until the cluster at `address` counts `cpus` CPUs (a node that started has registered)."""
    code = ("import ray,sys,time\n"
            f"ray.init(address={address!r}, logging_level='ERROR', log_to_driver=False)\n"
            f"t=time.time()\n"
            f"while ray.cluster_resources().get('CPU',0) != {cpus} and time.time()-t < {timeout}: time.sleep(0.3)\n"
            f"sys.exit(0 if ray.cluster_resources().get('CPU',0) == {cpus} else 1)\n")
    res = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True,
                         timeout=timeout + 60)
    if res.returncode != 0:
        raise RuntimeError(f"the Ray cluster at {address} did not reach {cpus} CPUs: {res.stderr.strip()[-300:]}")


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[str]:
    """Address (HOST:PORT) of a two-node Ray cluster on loopback, one CPU per node."""
    given = os.environ.get("FACEINDEX_TEST_RAY")
    if given:
        yield given
        return
    if ray_cli() is None:
        pytest.skip("Ray is not installed (pip install '.[test]' or '.[cluster]')")
    nodes: list[RayNode] = []
    with token_auth():
        try:
            nodes.append(RayNode(HEAD_IP))
            nodes.append(RayNode(WORKER_IP, head=nodes[0].address))
            wait_for_cpus(nodes[0].address, 2)
            yield nodes[0].address
        finally:
            for n in reversed(nodes):
                n.stop()
