"""A pool of worker processes that analyse image files, started without ever running the caller's `__main__`.

`multiprocessing`'s spawn and forkserver start methods re-run the parent's main module in every worker (they send
its path, or its module name, as "preparation data"; see `multiprocessing.spawn.get_preparation_data` and
`_fixup_main_from_path`). An unguarded script then starts its whole job again inside each worker, and a script
read from stdin (`python -`) cannot be re-run at all: the workers die before doing any work. The fork method
avoids that but is unsafe once threads exist (a server, BLAS, ONNX Runtime).

So the workers here are plain `python -m faceindex.workers` processes that talk to the parent over two pipes with
`multiprocessing.connection.Connection` (length-prefixed pickles). Nothing of the caller's main module, thread
or notebook reaches them. Each worker has one file in flight at a time, so a worker that dies points at exactly
one file; that file is retried once in a fresh worker before it is reported as failed, so a worker killed from
outside (the OOM killer, say) costs nothing. Workers that cannot start at all are a worker failure, never a bad
image: the batch then goes on in this process, with one warning.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import tempfile
import warnings
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the parent imports the models lazily (only the in-process fallback needs them)
    from .config import Settings
    from .pipeline import FileFailure, ImageResult

log = logging.getLogger(__name__)

STARTUP_TIMEOUT_S = 120.0  # a worker that has not said "ready" by then is taken as unable to start
_PACKAGE_PARENT = str(Path(__file__).resolve().parent.parent)  # so that workers import this very faceindex


class WorkerStartError(RuntimeError):
    """No worker process could be started (the reason is the workers' last line on stderr)."""


def _signal_text(code: int | None) -> str:
    if code is None:
        return "it stopped answering"
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class _Worker:
    """One worker process and its two pipe ends."""

    def __init__(self, init: dict[str, Any]) -> None:
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the worker; shown only if the worker dies (tracebacks, native errors)
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
               "PYTHONPATH": os.pathsep.join(p for p in (_PACKAGE_PARENT, os.environ.get("PYTHONPATH")) if p)}
        try:
            # -P: the caller's working folder is not put first on the worker's sys.path (no shadowing modules).
            self.proc = subprocess.Popen(
                [_executable(), "-P", "-m", "faceindex.workers", str(to_child_r), str(from_child_w)],
                stdin=subprocess.DEVNULL, stdout=self.stderr, stderr=self.stderr, env=env,
                pass_fds=(to_child_r, from_child_w), close_fds=True)
        except BaseException:
            for fd in (to_child_w, from_child_r):
                os.close(fd)
            self.stderr.close()
            raise
        finally:
            for fd in (to_child_r, from_child_w):  # the child's ends: the child has its own copies now
                os.close(fd)
        self.send = Connection(to_child_w, readable=False)
        self.recv = Connection(from_child_r, writable=False)
        self.ready = False
        self.task: str | None = None
        with contextlib.suppress(OSError):  # if it died already, the reader sees EOF and says why
            self.send.send(init)

    def last_error_line(self) -> str:
        try:
            self.stderr.seek(0)
            lines = [ln.strip() for ln in self.stderr.read().decode("utf-8", "replace").splitlines() if ln.strip()]
        except (OSError, ValueError):
            return ""
        return lines[-1] if lines else ""

    def exit_code(self, timeout: float = 5.0) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def close(self, kill: bool = False) -> None:
        """Ask the worker to stop (or kill it) and release its pipes and files."""
        if not kill:
            with contextlib.suppress(OSError):
                self.send.send(None)
        for c in (self.send, self.recv):
            with contextlib.suppress(OSError):
                c.close()
        if kill or self.exit_code(5.0) is None:
            self.proc.kill()
            self.proc.wait()
        self.stderr.close()


def _executable() -> str:
    exe = sys.executable
    if not exe or not os.access(exe, os.X_OK):
        raise WorkerStartError(f"no Python executable to start workers with (sys.executable is {exe!r})")
    return exe


def run_pool(paths: Sequence[str], settings: Settings, workers: int,
             in_process: Callable[[str], ImageResult | FileFailure]) -> Iterator[ImageResult | FileFailure]:
    """Analyse `paths` in `workers` processes, yielding a result per path as each completes.

    A worker that dies with a file in flight is replaced, and the file is retried once in the fresh worker; if it
    kills that one too it is reported as failed (the decoder or model crashed on it). If no worker can start,
    one RuntimeWarning says why and the remaining files are analysed in this process with `in_process`.
    """
    from .pipeline import FileFailure

    queue: deque[str] = deque(paths)
    retry: deque[str] = deque()  # in flight when their worker died: go first, to a fresh worker
    retried: set[str] = set()
    init = {"settings": settings.model_dump_json(), "sys_path": list(sys.path)}
    pool: list[_Worker] = []
    startup_failures = 0  # workers that died before saying "ready"
    ever_ready = False
    last_reason = ""

    def start() -> None:
        nonlocal startup_failures, last_reason
        try:
            pool.append(_Worker(init))
        except (OSError, WorkerStartError) as e:
            startup_failures += 1
            last_reason = str(e)

    def pending() -> int:
        return len(queue) + len(retry)

    def assign(w: _Worker) -> None:
        if retry:
            w.task = retry.popleft()
            retried.add(w.task)
        elif queue:
            w.task = queue.popleft()
        else:
            w.task = None
            return
        with contextlib.suppress(OSError):  # if it died meanwhile, its EOF is handled by the loop
            w.send.send(w.task)

    try:
        for _ in range(min(workers, len(queue))):
            start()
        while pool and (pending() or any(w.task is not None for w in pool)):
            ready = wait([w.recv for w in pool], timeout=None if ever_ready else STARTUP_TIMEOUT_S)
            if not ready:  # nobody got ready in time: a worker failure, whatever the files are
                last_reason = f"no worker process was ready after {STARTUP_TIMEOUT_S:.0f} s"
                for w in pool:
                    w.close(kill=True)
                pool.clear()
                break
            for conn in ready:
                w = next(w for w in pool if w.recv is conn)
                try:
                    kind, payload = conn.recv()
                except (EOFError, OSError):
                    kind = payload = None
                if kind == "ready":
                    w.ready = ever_ready = True
                elif kind == "result":
                    w.task = None
                    yield payload
                if kind is not None:
                    if w.task is None:
                        assign(w)
                        if w.task is None:  # nothing left for it
                            pool.remove(w)
                            w.close()
                    continue
                # the worker died
                pool.remove(w)
                code = w.exit_code()
                how = _signal_text(code)
                detail = w.last_error_line()
                w.close(kill=True)
                if not w.ready:
                    startup_failures += 1
                    last_reason = f"a worker process could not start ({how})" + (f": {detail}" if detail else "")
                elif w.task is not None:
                    if w.task in retried:
                        yield FileFailure(w.task, f"the image decoder or face model crashed on this file: the worker "
                                                  f"process analysing it died twice ({how})")
                    else:
                        log.warning("a worker process died (%s) while analysing %s; retrying it in a fresh worker",
                                    how, w.task)
                        retry.append(w.task)
                # replace it; one that could not start only while others could (a transient failure, not a broken
                # set-up) and not without end
                if pending() and len(pool) < workers and (w.ready or (ever_ready and startup_failures <= workers)):
                    start()
    finally:
        for w in pool:
            w.close(kill=w.task is not None)  # the caller stopped early: do not wait for files in flight
    if pending():
        warnings.warn(f"faceindex could not start worker processes ({last_reason or 'unknown reason'}); analysing "
                      f"the remaining {len(queue)} files in this process, on one core", RuntimeWarning, stacklevel=3)
        for p in retry:  # it killed a worker already: here it could take the caller's process down with it
            yield FileFailure(p, "a worker process died while analysing this file and no new worker could start; "
                                 "not analysed in this process, where a crash would end the caller")
        for p in queue:
            yield in_process(p)


def _serve(read_fd: int, write_fd: int) -> None:
    """The worker's side: build one pipeline, then analyse one path per message until told to stop (None)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it stops the workers
    inbox = Connection(read_fd, writable=False)
    outbox = Connection(write_fd, readable=False)
    init = inbox.recv()
    # the parent's import path (as multiprocessing does), less its working folder ('')
    sys.path[:] = [p for p in init["sys_path"] if p] or sys.path
    from . import pipeline
    from .config import Settings

    pipe = pipeline.FacePipeline(Settings.model_validate_json(init["settings"]))
    outbox.send(("ready", None))
    while True:
        try:
            path = inbox.recv()
        except EOFError:  # the parent is gone
            return
        if path is None:
            return
        if os.environ.get("_FACEINDEX_TEST_CRASH_ON") and os.environ["_FACEINDEX_TEST_CRASH_ON"] in path:
            os._exit(139)  # test hook: a native decoder or model crashing on one file
        outbox.send(("result", pipeline._analyse(pipe, path)))


if __name__ == "__main__":
    _serve(int(sys.argv[1]), int(sys.argv[2]))
