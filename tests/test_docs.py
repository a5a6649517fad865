"""Every ```bash and ```python block of README.md and docs/*.md runs as written.

Each document's blocks run in order in one sandbox folder (a user following the page from the top), where the
files the examples name exist: `photos/`, `probe.jpg`, `a.jpg`, `b.jpg`, `group.jpg`, `selfie.jpg`, `pairs.tsv`
and `my-labelled-faces/`, all cut from the demo photo shipped in the package (so no test data is needed), and
`../shared` points at the project's test data (a block that uses `../shared/data` is skipped with a reason where it
is absent). Install steps in a block (`python3 -m venv`, `. .venv/bin/activate`, `pip install`) are taken as
done: the test runs in the installed environment. A block preceded by `<!-- doctest: skip REASON -->` is skipped
with that reason (a server, a long run). Python blocks run twice: as a script file and through stdin.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image, ImageOps

from faceindex import demo

from .conftest import DATA, ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SKIP = re.compile(r"<!--\s*doctest:\s*skip\s*(.*?)\s*-->")
INSTALL = re.compile(r"^(python3? -m venv \S+|\. \S*\.venv/bin/activate|source \S*\.venv/bin/activate|pip install .*)$")


@dataclass(frozen=True)
class Block:
    doc: Path
    line: int
    lang: str
    code: str
    skip: str | None

    @property
    def id(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}:{self.lang}"


def blocks(doc: Path) -> list[Block]:
    """The ```bash and ```python blocks of `doc`, with the skip reason of a `<!-- doctest: skip ... -->` before it."""
    out: list[Block] = []
    lines = doc.read_text().splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"^```(\w+)\s*$", lines[i])
        if not m:
            i += 1
            continue
        start, lang = i, m.group(1)
        j = i + 1
        while j < len(lines) and not lines[j].startswith("```"):
            j += 1
        prev = next((ln for ln in reversed(lines[:start]) if ln.strip()), "")
        skip = SKIP.search(prev)
        if lang in ("bash", "python"):
            out.append(Block(doc, start + 1, lang, "\n".join(lines[start + 1:j]) + "\n",
                             (skip.group(1) or "marked skip") if skip else None))
        i = j + 1
    return out


ALL = [b for doc in DOCS for b in blocks(doc)]


def _without_install_steps(code: str) -> str:
    kept = []
    for line in code.splitlines():
        parts = [p for p in line.split(" && ") if not INSTALL.match(p.strip())]
        if parts:
            kept.append(" && ".join(parts))
    return "\n".join(kept) + "\n"


def _crop(img: Image.Image, box, margin: float) -> Image.Image:
    mx, my = round(box.width * margin), round(box.height * margin)
    return img.crop((max(0, box.x1 - mx), max(0, box.y1 - my), min(img.width, box.x2 + mx),
                     min(img.height, box.y2 + my)))


def _scaled(img: Image.Image, f: float) -> Image.Image:
    return img.resize((round(img.width * f), round(img.height * f)), Image.Resampling.LANCZOS)


@pytest.fixture(scope="session")
def example_files(tmp_path_factory) -> Path:
    """The files the examples name, made once from the demo photo (faces found once, in this process)."""
    from faceindex import FaceIndex

    root = tmp_path_factory.mktemp("doc-files")
    photo = root / "group.jpg"
    photo.write_bytes(demo.sample_bytes())
    with FaceIndex.open(root / "scratch") as fi:
        faces = fi.faces(photo)
    shutil.rmtree(root / "scratch")
    assert len(faces) >= 6, f"the demo photo gave {len(faces)} faces"
    img = Image.open(photo).convert("RGB")
    boxes = [f.box for f in faces]  # largest first
    (root / "photos" / "old").mkdir(parents=True)
    (root / "photos" / demo.SAMPLE).write_bytes(demo.sample_bytes())
    img.crop((0, 0, img.width // 2, img.height)).save(root / "photos" / "old" / "left-half.jpg", quality=90)
    a = _crop(img, boxes[0], 0.35)
    ImageOps.mirror(_scaled(a, 2)).save(root / "probe.jpg", quality=90)
    a.save(root / "a.jpg", quality=90)
    ImageOps.mirror(_scaled(a, 0.8)).save(root / "b.jpg", quality=90)
    ImageOps.mirror(_crop(img, boxes[1], 0.35)).save(root / "selfie.jpg", quality=90)
    (root / "pairs.tsv").write_text("a.jpg\tb.jpg\nprobe.jpg\tselfie.jpg\n")
    for n, box in enumerate(boxes[2:6]):
        person = root / "my-labelled-faces" / f"person{n + 1}"
        person.mkdir(parents=True)
        c = _crop(img, box, 0.35)
        c.save(person / "1.jpg", quality=90)
        ImageOps.mirror(_scaled(c, 1.5)).save(person / "2.jpg", quality=90)
    return root


_sandboxes: dict[Path, Path] = {}


@pytest.fixture
def sandbox(example_files, tmp_path_factory, request) -> Path:
    """One working folder per document, shared by its blocks in order; `../shared` is the test data."""
    doc = request.node.callspec.params["block"].doc
    if doc not in _sandboxes:
        base = tmp_path_factory.mktemp("docs-" + doc.stem)
        work = base / "work"
        shutil.copytree(example_files, work, symlinks=True)
        if DATA.is_dir():
            (base / "shared").symlink_to(DATA.parent, target_is_directory=True)
        _sandboxes[doc] = work
    return _sandboxes[doc]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACEINDEX_")}
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")  # this venv's faceindex
    env["MPLBACKEND"] = "Agg"
    return env


def _check(p: subprocess.CompletedProcess, what: str) -> None:
    assert p.returncode == 0, f"{what} exited {p.returncode}\n--- stdout\n{p.stdout[-4000:]}\n--- stderr\n{p.stderr[-4000:]}"
    assert "Traceback" not in p.stderr, f"{what}\n{p.stderr[-4000:]}"


def test_the_docs_have_runnable_blocks():
    # a renamed fence or a broken parser would silently test nothing
    readme = [b for b in ALL if b.doc.name == "README.md"]
    assert sum(b.skip is None for b in readme) >= 4 and any(b.lang == "python" for b in readme)
    assert any(b.skip for b in readme), "the test-suite block is marked skip"
    assert all(b.skip for b in readme if "pytest" in b.code)


@pytest.mark.parametrize("block", ALL, ids=lambda b: b.id)
def test_block_runs_as_written(block: Block, sandbox: Path):
    if block.skip:
        pytest.skip(f"{block.id}: {block.skip}")
    if "../shared/data" in block.code and not DATA.is_dir():
        pytest.skip(f"{block.id} uses ../shared/data, which is absent ({DATA})")
    if block.lang == "bash":
        code = _without_install_steps(block.code)
        p = subprocess.run(["bash", "-e", "-c", code], cwd=sandbox, capture_output=True, text=True, timeout=900,
                           env=_env())
        _check(p, f"{block.id} (bash -e)")
        return
    script = sandbox / f"block_{block.doc.stem}_{block.line}.py"
    script.write_text(block.code)
    p = subprocess.run([sys.executable, script.name], cwd=sandbox, capture_output=True, text=True, timeout=900,
                       env=_env())
    _check(p, f"{block.id} (as a script file)")
    p = subprocess.run([sys.executable, "-"], input=block.code, cwd=sandbox, capture_output=True, text=True,
                       timeout=900, env=_env())
    _check(p, f"{block.id} (through stdin)")
    if block.doc.name == "notebook.md":
        _run_in_ipython(block, sandbox)


IPYTHON = """
import sys
from IPython.core.interactiveshell import InteractiveShell
from PIL import Image
shell = InteractiveShell.instance()
result = shell.run_cell(open(sys.argv[1]).read())
result.raise_error()
shown = result.result
print("SHOWN", type(shown).__name__, isinstance(shown, Image.Image) and shown.size)
"""


def _run_in_ipython(block: Block, sandbox: Path) -> None:
    """A notebook cell ends with an image, which is what the notebook shows."""
    pytest.importorskip("IPython", reason="IPython is not installed (pip install '.[test]')")
    script = sandbox / f"block_{block.doc.stem}_{block.line}.py"
    p = subprocess.run([sys.executable, "-c", IPYTHON, script.name], cwd=sandbox, capture_output=True, text=True,
                       timeout=900, env=_env())
    _check(p, f"{block.id} (in IPython)")
    last = [ln for ln in block.code.splitlines() if ln.strip() and not ln.startswith(" ")][-1].split("#")[0].strip()
    if "=" not in last and not last.startswith(("import", "from")):  # the cell ends with an expression
        assert "SHOWN Image (" in p.stdout, p.stdout[-2000:]
