"""Ray executor: analyse image files on Ray worker actors (many machines), for `add --ray auto|HOST:PORT`.

Imported only when Ray is chosen. The driver (the `faceindex add` process) lists the files and commits the results
(`ingest.add`); this module only analyses:

- The driver reads each file (size limit, and the ingest-root check on the open descriptor, exactly as the local
  path does) and sends its bytes; workers never open paths. So no shared storage is needed, a worker cannot be
  pointed outside the allowed roots, and what is analysed is what the driver checked (the sha256 the worker
  computes is compared with the one the driver listed, in `ingest.add`'s commit).
- One actor per CPU of the cluster, each with one single-threaded model pack, loaded once. Batches of a few files
  go to the actors; at most two batches per actor and `MAX_INFLIGHT_BYTES` in all are in flight, so the driver's
  memory stays flat however large the collection.
- An actor that dies (its node was killed, a native crash) loses only its batches in flight: their files are sent
  again, one per batch, to the surviving actors (and a replacement is started where the cluster has room). A file
  in flight in two dead actors is reported as failed, as the local pool does. When every actor is gone, the run
  stops with an ExecutorError; what was committed stays, and re-running completes the job.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from . import images
from .errors import ExecutorError, ImageError

if TYPE_CHECKING:
    from .config import Settings
    from .pipeline import FileFailure, ImageResult

log = logging.getLogger(__name__)

BATCH_FILES = 8  # files per actor call: amortises the call overhead, keeps a lost batch cheap
BATCH_BYTES = 16_000_000  # and at most this many bytes per call (one large photo may exceed it alone)
PER_ACTOR = 2  # batches in flight per actor: one being analysed, one waiting, so an actor never idles
MAX_INFLIGHT_BYTES = 256_000_000  # file bytes in flight in all: the driver's memory stays flat
STARTUP_TIMEOUT_S = 180.0  # actors that have not loaded their models by then: the cluster cannot run us
CONNECT_TIMEOUT_S = 5.0


class _Analyser:
    """A Ray actor: one FacePipeline (single-threaded models), analysing batches of (path, bytes)."""

    def __init__(self, settings_json: str, hooks: dict[str, str]) -> None:
        os.environ.update(hooks)  # test hooks (_FACEINDEX_TEST_*) of the driver; this process is the actor's own
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        from . import pipeline
        from .config import Settings

        self.pipe = pipeline.FacePipeline(Settings.model_validate_json(settings_json))

    def ready(self) -> dict[str, Any]:
        """The model key this actor embeds with (must be the index's) and where it runs."""
        from . import __version__

        return {"model": self.pipe.pack.key, "version": __version__, "node": socket.gethostname()}

    def analyse(self, batch: list[tuple[str, bytes]]) -> list[ImageResult | FileFailure]:
        from .pipeline import analyse_bytes

        out = []
        for path, data in batch:
            crash_on = os.environ.get("_FACEINDEX_TEST_CRASH_ON")
            if crash_on and crash_on in path:
                os._exit(139)  # test hook: a native decoder or model crashing on one file
            out.append(analyse_bytes(self.pipe, data, path))
        return out


def _import_ray():
    try:
        import ray
    except ImportError as e:
        raise ExecutorError("Ray is not installed; install the cluster extra: pip install 'faceindex[cluster]'") from e
    return ray


def _check_reachable(address: str) -> None:
    """Fail fast, in one line, on an address nothing listens on (Ray itself would retry for a minute)."""
    if address == "auto" or address.startswith("ray://"):
        return
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ExecutorError(f"bad Ray address {address!r}: expected auto or HOST:PORT (the head node's GCS port)")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as e:
        raise ExecutorError(f"cannot reach the Ray cluster at {address}: {e.strerror or e}") from e


class RayExecutor:
    """Analyses files on Ray worker actors; see the module docstring for the guarantees."""

    def __init__(self, address: str, settings: Settings, *, within: list[str] | None, expect_model: str) -> None:
        self.ray = _import_ray()
        _check_reachable(address)
        self.settings, self.within, self.expect_model = settings, within, expect_model
        self._owns_connection = not self.ray.is_initialized()
        self._restore: Callable[[], None] = lambda: None
        if self._owns_connection:
            self._restore = _errors_to_log(self.ray)
            try:
                # the driver joins the cluster; Ray's own logging stays out of the CLI's output
                with _native_logs_held():
                    self.ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR,
                                  configure_logging=False, namespace="faceindex")
            except Exception as e:  # ConnectionError, RuntimeError, auth errors: one line says which
                self._restore()
                hint = "" if address == "auto" else (
                    " (it answers, but refused us: if its nodes use token authentication, set RAY_AUTH_MODE=token "
                    "and their token in RAY_AUTH_TOKEN or ~/.ray/auth_token here too; the Ray versions must match)")
                raise ExecutorError(f"cannot join the Ray cluster at {address}: {_first_line(e)}{hint}") from e
        # else: a caller that joined a cluster itself (a notebook, say): use it, and leave it joined

    def close(self) -> None:
        """Leave the cluster (actors made by this driver end with it)."""
        if self._owns_connection and self.ray.is_initialized():
            self.ray.shutdown()
        self._restore()

    def cluster_cpus(self) -> int:
        return int(self.ray.cluster_resources().get("CPU", 0))

    def analyse(self, paths: Sequence[str]) -> Iterator[ImageResult | FileFailure]:
        """Analyse `paths` on the cluster's actors, yielding results as batches complete."""
        from .pipeline import FileFailure

        if not paths:
            return
        ray = self.ray
        exc = ray.exceptions
        died = tuple(getattr(exc, n) for n in ("RayActorError", "ActorDiedError", "ActorUnavailableError",
                                                "WorkerCrashedError", "NodeDiedError", "ObjectLostError",
                                                "OutOfMemoryError")
                     if hasattr(exc, n))
        remote = ray.remote(num_cpus=1, max_restarts=0, max_task_retries=0)(_Analyser)
        hooks = {k: v for k, v in os.environ.items() if k.startswith("_FACEINDEX_TEST_")}
        settings_json = self.settings.model_dump_json()
        n_actors = max(1, min(self.cluster_cpus(), len(paths)))

        starting: dict[Any, Any] = {}  # ready ref -> actor, not yet usable
        live: dict[Any, int] = {}  # actor -> batches in flight
        inflight: dict[Any, tuple[Any, list[str], int]] = {}  # result ref -> (actor, paths, bytes)
        queue: deque[str] = deque(paths)
        retry: deque[str] = deque()  # in flight in an actor that died: sent again, one per batch
        retried: set[str] = set()
        ever_ready = False
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        last_reason = ""

        def start_actor() -> None:
            a = remote.remote(settings_json, hooks)
            starting[a.ready.remote()] = a

        def next_batch() -> tuple[list[tuple[str, bytes]], list[FileFailure]]:
            """Read the next files (checked here, on the driver) into one batch; unreadable ones fail at once."""
            batch: list[tuple[str, bytes]] = []
            failed: list[FileFailure] = []
            size = 0
            source = retry if retry else queue
            limit = 1 if source is retry else BATCH_FILES
            while source and len(batch) < limit and size < BATCH_BYTES:
                p = source.popleft()
                if source is retry:
                    retried.add(p)
                try:
                    data = images.read_bytes(p, self.settings.max_file_bytes, self.within)
                except ImageError as e:
                    failed.append(FileFailure(p, str(e)))
                    continue
                batch.append((p, data))
                size += len(data)
            return batch, failed

        def inflight_bytes() -> int:
            return sum(b for _, _, b in inflight.values())

        def lost(actor, why: str) -> None:
            nonlocal last_reason
            last_reason = why
            live.pop(actor, None)
            with contextlib.suppress(Exception):
                ray.kill(actor)

        try:
            for _ in range(n_actors):
                start_actor()
            while queue or retry or inflight:
                # fill every live actor up to PER_ACTOR batches, within the byte budget
                for actor in list(live):
                    while live.get(actor, PER_ACTOR) < PER_ACTOR and (queue or retry) and \
                            (not inflight or inflight_bytes() < MAX_INFLIGHT_BYTES):
                        batch, failed = next_batch()
                        yield from failed
                        if batch:
                            ref = actor.analyse.remote(batch)
                            inflight[ref] = (actor, [p for p, _ in batch], sum(len(d) for _, d in batch))
                            live[actor] += 1
                if not live and not starting:
                    raise ExecutorError(f"every Ray worker actor is gone ({last_reason or 'none could start'}); "
                                        f"what was committed is kept: run add again to finish")
                waiting = list(inflight) + list(starting)
                if not waiting:
                    continue
                timeout = None if ever_ready and live else max(1.0, deadline - time.monotonic())
                done, _ = ray.wait(waiting, num_returns=1, timeout=timeout)
                if not done:
                    if not live:
                        raise ExecutorError(f"no Ray worker actor was ready after {STARTUP_TIMEOUT_S:.0f} s "
                                            f"({last_reason or 'the cluster has no free CPU'})")
                    continue
                ref = done[0]
                if ref in starting:
                    actor = starting.pop(ref)
                    try:
                        info = ray.get(ref)
                    except Exception as e:  # the model pack does not load on that node, or the node died
                        last_reason = f"a worker actor could not start: {_first_line(e)}"
                        log.warning("%s", last_reason)
                        continue
                    if info["model"] != self.expect_model:
                        raise ExecutorError(f"a Ray worker on {info['node']} embeds with {info['model']}, this index "
                                            f"with {self.expect_model}: install the same faceindex on every node")
                    live[actor] = 0
                    ever_ready = True
                    continue
                actor, batch_paths, _ = inflight.pop(ref)
                try:
                    results = ray.get(ref)
                except died as e:
                    lost(actor, f"a worker actor died: {_first_line(e)}")
                    lost_paths = list(batch_paths)
                    for r, (a, ps, _b) in list(inflight.items()):  # its other batch went down with it
                        if a is actor:
                            del inflight[r]
                            lost_paths += ps
                    for p in lost_paths:
                        if p in retried:
                            yield FileFailure(p, "the image decoder or face model crashed on this file: the Ray "
                                                 "worker analysing it died twice")
                        else:
                            retry.append(p)
                    log.warning("a Ray worker actor died (%s); sending its %d files again", _first_line(e),
                                len(lost_paths))
                    if queue or retry:
                        start_actor()  # scheduled where the cluster has a free CPU (a node that rejoined)
                        deadline = time.monotonic() + STARTUP_TIMEOUT_S
                    continue
                if actor in live:
                    live[actor] -= 1
                yield from results
        finally:
            for a in [*live, *starting.values()]:
                with contextlib.suppress(Exception):
                    ray.kill(a)


_NATIVE_LOG = re.compile(rb"^\[\d{4}-\d\d-\d\d [^\]]*\] \S+\.cc:\d+:")  # Ray's C++ log lines


@contextlib.contextmanager
def _native_logs_held() -> Iterator[None]:
    """Hold what is written to file descriptor 2 (where Ray's C++ side logs) while joining, then write it back.

    Written back whole, a moment late; if the block fails, without Ray's C++ log lines (a refused join logs one
    warning a second for ~20 s; the error we raise says it in one line), but with anything else written meanwhile.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable stderr: nothing to hold
        yield
        return
    keep_native = True
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        except BaseException:
            keep_native = False
            raise
        finally:
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            lines = tmp.read().splitlines(keepends=True)
            out = b"".join(ln for ln in lines if keep_native or not _NATIVE_LOG.match(ln))
            if out:
                with contextlib.suppress(OSError):
                    os.write(2, out)


def _errors_to_log(ray) -> Callable[[], None]:
    """Send the cluster's error messages (a node died, say) to our log, on stderr, not to stdout.

    Ray's driver prints them to sys.stdout from a thread of its own, whatever `log_to_driver` says, which would
    corrupt `add --json`. Returns the undo. If Ray's internals differ from 2.60's, nothing is changed.
    """
    mod = getattr(getattr(ray, "_private", None), "worker", None)
    original = getattr(mod, "print_to_stdstream", None)
    if original is None:
        return lambda: None

    def to_log(data: dict, ignore_prefix: bool) -> None:
        for line in data.get("lines", []):
            log.warning("Ray (%s): %s", data.get("pid", "?"), line)

    mod.print_to_stdstream = to_log
    return lambda: setattr(mod, "print_to_stdstream", original)


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0][:300]
