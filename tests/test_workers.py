"""The worker pool from every place a user calls the library: an unguarded script, stdin, `python -c`, IPython,
a thread; a worker killed mid-batch; workers that cannot start. Each runs a real Python subprocess."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from .conftest import lfw, needs_lfw

pytestmark = needs_lfw

# The README's example as a new user saves it: top-level code, no `if __name__ == "__main__":` guard.
SCRIPT = textwrap.dedent("""\
    from faceindex import FaceIndex

    fi = FaceIndex.open("data")
    report = fi.add(["photos"], source="archive", workers=2)
    print("RESULT", report.images_indexed, len(report.errors), [e.reason for e in report.errors])
""")

THREAD = textwrap.dedent("""\
    import threading
    from faceindex import FaceIndex

    def job():
        fi = FaceIndex.open("data")
        report = fi.add(["photos"], source="archive", workers=2)
        print("RESULT", report.images_indexed, len(report.errors), [e.reason for e in report.errors])

    t = threading.Thread(target=job)  # as a server's request thread would
    t.start()
    t.join()
""")

IPYTHON = textwrap.dedent("""\
    from IPython.core.interactiveshell import InteractiveShell
    shell = InteractiveShell.instance()
    shell.run_cell(open("t.py").read()).raise_error()
""")


@pytest.fixture
def folder(tmp_path) -> Path:
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(1, 5):
        shutil.copy(lfw("Tony_Blair", i), photos / f"t{i}.jpg")
    (tmp_path / "t.py").write_text(SCRIPT)
    (tmp_path / "thread.py").write_text(THREAD)
    return tmp_path


def _python(folder: Path, *args: str, stdin: str | None = None, env: dict | None = None):
    return subprocess.run([sys.executable, *args], cwd=folder, input=stdin, capture_output=True, text=True,
                          timeout=600, env={**os.environ, **(env or {})})


def _check(p: subprocess.CompletedProcess, indexed: int = 4) -> None:
    assert p.returncode == 0, p.stderr[-3000:]
    assert f"RESULT {indexed} 0 []" in p.stdout, p.stdout + p.stderr[-3000:]
    assert "Traceback" not in p.stderr, p.stderr[-3000:]


@pytest.mark.parametrize("how", ["script", "stdin", "-c", "thread"])
def test_add_with_workers_from_an_unguarded_main(folder, how):
    if how == "script":
        p = _python(folder, "t.py")
    elif how == "stdin":
        p = _python(folder, "-", stdin=SCRIPT)
    elif how == "-c":
        p = _python(folder, "-c", SCRIPT)
    else:
        p = _python(folder, "thread.py")
    _check(p)


def test_add_with_workers_from_ipython(folder):
    pytest.importorskip("IPython", reason="IPython is not installed (pip install '.[test]')")
    _check(_python(folder, "-c", IPYTHON))


def _workers_of(pid: int) -> list[int]:
    out = []
    for k in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        try:
            if b"faceindex.workers" in Path(f"/proc/{k}/cmdline").read_bytes():
                out.append(int(k))
        except OSError:
            continue
    return out


def test_a_worker_killed_mid_batch_costs_nothing(folder):
    """A worker killed from outside (the OOM killer, say) is a worker failure: its file is retried, none is lost."""
    for i in range(5, 11):
        shutil.copy(lfw("Tony_Blair", i), folder / "photos" / f"t{i}.jpg")
    script = SCRIPT.replace('workers=2)', 'workers=2, progress=lambda e, i: e == "file" and print("FILE", flush=True))')
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=folder, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "_FACEINDEX_TEST_SLOW_S": "1.0"})
    # Two files done: a worker that did them has its models and a file in flight (each file takes at least 1 s and
    # 8 remain). Both workers are killed, so one of the killed ones surely had a file (the other may still have been
    # loading its models: it is replaced too).
    assert proc.stdout.readline().strip() == "FILE"
    assert proc.stdout.readline().strip() == "FILE"
    workers = _workers_of(proc.pid)
    assert len(workers) == 2
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    assert "RESULT 10 0 []" in out, out + err[-3000:]
    assert "a worker process died (killed by signal SIGKILL) while analysing" in err, err[-3000:]


def test_workers_that_cannot_start_fall_back_in_process_with_one_warning(folder):
    # An embedding interpreter (uWSGI, say) whose sys.executable is not a Python: no worker can start.
    script = "import sys\nsys.executable = '/bin/false'\n" + SCRIPT
    p = _python(folder, "-c", script)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "RESULT 4 0 []" in p.stdout, p.stdout + p.stderr
    assert p.stderr.count("could not start worker processes") == 1, p.stderr
    assert "crashed" not in p.stdout + p.stderr
