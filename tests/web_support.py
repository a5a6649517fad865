"""Shared support for the browser tests (tests/test_web*.py): Debian Chromium driven by Playwright against a real
`faceindex serve` over a small LFW index.

The fixtures (`server`, `browser`, `page`) are registered for every test module by tests/conftest.py
(`pytest_plugins`); module-scoped ones are built once per test module that uses them. Test modules import the
helpers and constants they need from here, and skip themselves with `skip_unless_browser()`.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

try:
    from playwright.sync_api import Page, expect, sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    Page = expect = sync_playwright = None

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
LFW = DATA / "lfw" / "images"
CHROMIUM = Path("/usr/bin/chromium")
# Screenshots go to a temp folder; FACEINDEX_SCREENSHOTS=docs/screenshots refreshes the ones in the docs.
SHOTS = Path(os.environ.get("FACEINDEX_SCREENSHOTS") or Path(tempfile.gettempdir()) / "faceindex-screenshots")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]



def skip_unless_browser() -> None:
    """Skip the calling test module, with the reason, when Playwright, Chromium or the test data is missing."""
    if sync_playwright is None:
        pytest.skip("playwright is not installed (pip install playwright; the browser is Debian's chromium)",
                    allow_module_level=True)
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found (apt-get install -y chromium)", allow_module_level=True)
    if not DATA.is_dir():
        pytest.skip(f"test data not found at {DATA} (../shared/data)", allow_module_level=True)


PEOPLE = ["Colin_Powell", "Tony_Blair", "Donald_Rumsfeld", "Gerhard_Schroeder", "Ariel_Sharon"]
PER_PERSON = 6  # images 1..6 of each person are indexed; later ones are probes the index has never seen
WIDE = {"width": 1440, "height": 900}
NARROW = {"width": 390, "height": 844}
TIMEOUT_MS = 45_000


def lfw(name: str, i: int) -> Path:
    return LFW / name / f"{name}_{i:04d}.jpg"


def lfw_gallery(folder: Path, people: list[str], per_person: int) -> Path:
    """`folder` with one sub-folder per person holding links to their first `per_person` LFW images."""
    for name in people:
        (folder / name).mkdir(parents=True)
        for i in range(1, per_person + 1):
            (folder / name / lfw(name, i).name).symlink_to(lfw(name, i))
    return folder


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve_command(data: Path, port: int) -> list[str]:
    exe = Path(sys.executable).with_name("faceindex")
    if not exe.exists():
        found = shutil.which("faceindex")
        exe = Path(found) if found else None
    head = [str(exe)] if exe else [sys.executable, "-c", "from faceindex.cli import main; main()"]
    return [*head, "--data", str(data), "serve", "--host", "127.0.0.1", "--port", str(port)]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real `faceindex serve` over 5 LFW people x 6 images; yields (base URL, {key name: token})."""
    from faceindex import FaceIndex

    root = tmp_path_factory.mktemp("web")
    gallery = lfw_gallery(root / "gallery", PEOPLE, PER_PERSON)
    data = root / "data"
    fi = FaceIndex.open(data)
    try:
        report = fi.add([gallery], "lfw", workers=2)
        assert report.ok and report.faces_found >= len(PEOPLE) * PER_PERSON - 2, report.as_dict()
        keys = {name: fi.create_key(name, role)[1] for name, role in [
            ("inv1", "investigator"), ("inv2", "investigator"), ("aud", "auditor"), ("priv", "privacy-officer"),
            ("adm", "admin")]}
    finally:
        fi.close()

    port = _free_port()
    log = (root / "server.log").open("wb")
    env = {**os.environ, "FACEINDEX_WORKERS": "2"}
    proc = subprocess.Popen(_serve_command(data, port), stdout=log, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(base + "healthz", timeout=2) as r:
                    if json.load(r)["status"] == "ok":
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                pytest.fail("server did not start:\n" + (root / "server.log").read_text()[-3000:])
            time.sleep(0.25)
        yield base, keys
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    """A fresh browser tab (own sessionStorage) at 1440 px.

    Fails the test on any JavaScript error, console error or failed request. An HTTP error status from the API
    (a 401 for a wrong key, say) is an answer that the page must show as a message, so Chromium's "Failed to load
    resource: the server responded with a status of ..." console line is not counted; an unanswered request is.
    """
    ctx = browser.new_context(viewport=WIDE)
    pg = ctx.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(f"exception: {e}"))
    pg.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error"
          and "the server responded with a status of" not in m.text else None)
    pg.on("requestfailed", lambda r: errors.append(f"request failed: {r.method} {r.url} ({r.failure})"))
    # Playwright turns file-chooser interception on when the first "filechooser" listener is added, fire-and-forget
    # (updateSubscription), and off again when `expect_file_chooser` drops its listener. A key press sent right
    # after `expect_file_chooser()` can reach the page before interception is on, and the chooser then opens
    # unseen (the keyboard tests timed out so, now and then, in full runs). One listener for the tab's whole life
    # keeps interception on from before the first navigation.
    pg.on("filechooser", lambda _chooser: None)
    yield pg
    ctx.close()
    assert not errors, f"errors on the page: {errors}"


if expect is not None:
    expect.set_options(timeout=TIMEOUT_MS)


def shot(pg: Page, name: str) -> None:
    """Save a full-page screenshot for docs/web.md (the transient status toast hidden)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    pg.evaluate("document.getElementById('status').classList.remove('show')")
    pg.wait_for_timeout(250)
    pg.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def sign_in(pg: Page, base: str, key: str) -> None:
    pg.goto(base)
    pg.get_by_label("API key").fill(key)
    pg.get_by_role("button", name="Sign in").click()
    expect(pg.locator("#who")).to_be_visible()


def sign_out(pg: Page) -> None:
    pg.get_by_role("button", name="Sign out").click()
    expect(pg.locator("#page-signin")).to_be_visible()




def two_faces(left: Path, right: Path, out: Path) -> Path:
    """A photo of two people side by side (two LFW photos pasted into one JPEG): a probe with two faces."""
    from PIL import Image

    a, b = Image.open(left).convert("RGB"), Image.open(right).convert("RGB")
    canvas = Image.new("RGB", (a.width + b.width, max(a.height, b.height)), (128, 128, 128))
    canvas.paste(a, (0, 0))
    canvas.paste(b, (a.width, 0))
    canvas.save(out, "JPEG", quality=92)
    return out


def open_page(pg: Page, name: str) -> None:
    """Go to a page with its link in the navigation (after sign-in every role lands on the Overview)."""
    pg.get_by_role("navigation", name="Pages").get_by_role("link", name=name, exact=True).click()
    expect(pg.locator(f"#page-{name.lower()}")).to_be_visible()


# --- accessibility: WCAG AA contrast of every shown text, an accessible name on every control ------------------
AUDIT_PAGE_JS = """(root) => {
    const lum = (c) => {
        const [r, g, b] = c.map((v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
        return 0.2126 * r + 0.7152 * g + 0.0722 * b;
    };
    const rgba = (s) => (s.match(/[\\d.]+/g) || []).map(Number);
    const background = (el) => {
        for (; el; el = el.parentElement) {
            const c = rgba(getComputedStyle(el).backgroundColor);
            if (c.length === 3 || (c.length === 4 && c[3] > 0.5)) return c.slice(0, 3);
        }
        return [255, 255, 255];
    };
    const problems = [];
    const page = document.querySelector(root);
    for (const el of page.querySelectorAll("*")) {
        if (!el.offsetParent && getComputedStyle(el).position !== "fixed") continue;  // not shown
        const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
        if (own && !el.closest(".visually-hidden")) {
            const s = getComputedStyle(el);
            const fg = rgba(s.color).slice(0, 3);
            const [a, b] = [lum(fg), lum(background(el))].sort((x, y) => y - x);
            const ratio = (a + 0.05) / (b + 0.05);
            const large = parseFloat(s.fontSize) >= 24 || (parseFloat(s.fontSize) >= 18.66 && Number(s.fontWeight) >= 700);
            const disabled = el.closest("button:disabled");
            if (!disabled && ratio < (large ? 3 : 4.5)) {
                const text = el.textContent.trim().slice(0, 30);
                problems.push(`contrast ${ratio.toFixed(2)}: ${el.tagName}.${el.className} "${text}"`);
            }
        }
        if (el.matches("input:not([type=hidden]), select, textarea, button, [role=meter], canvas[role=img]")) {
            const named = el.labels?.length || el.getAttribute("aria-label") || el.getAttribute("aria-labelledby")
                || (el.tagName === "BUTTON" && el.textContent.trim());
            if (!named) problems.push(`no label: ${el.outerHTML.slice(0, 80)}`);
        }
    }
    return problems;
}"""


def accessibility_problems(pg: Page, root: str) -> list[str]:
    """Text below WCAG AA contrast against its background, and controls without an accessible name, in `root`."""
    return pg.evaluate(AUDIT_PAGE_JS, root)
