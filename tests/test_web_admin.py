"""The admin pages (Collections, Add photos, Keys, Policy) in a real browser against a real server.

The server starts on an empty data folder that holds only an admin key and an auditor key (the first run): the
page's empty states, then sources made and edited, photos uploaded in chunks (one chunk refused once and retried;
a thousand photos), a job cancelled, a server folder refused and indexed, keys created, copied and revoked, the
policy changed, each through the keyboard alone, each checked against the API and the audit trail. Screenshots
go to docs/screenshots/ with FACEINDEX_SCREENSHOTS=docs/screenshots.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import httpx
import pytest

pytest.importorskip("playwright", reason="playwright is not installed (pip install playwright)")
from playwright.sync_api import Page, expect  # noqa: E402

from tests.servers import Server  # noqa: E402
from tests.web_support import (  # noqa: E402
    LFW,
    NARROW,
    accessibility_problems,
    lfw,
    shot,
    sign_in,
    skip_unless_browser,
)

skip_unless_browser()

ADMIN_PAGES = ["collections", "photos", "keys", "policy"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A fresh data folder with no photos, an admin and an auditor key, and a server folder it may ingest from;
    yields (base URL, {name: token}, the ingest root). Replaces web_support's LFW server for this module."""
    from faceindex import FaceIndex

    root = tmp_path_factory.mktemp("webadmin")
    data, ingest = root / "data", root / "ingest"
    (ingest / "album").mkdir(parents=True)
    for name in ("Ariel_Sharon", "Hugo_Chavez"):
        for i in (1, 2):
            shutil.copy(lfw(name, i), ingest / "album" / lfw(name, i).name)
    fi = FaceIndex.open(data)
    try:
        keys = {name: fi.create_key(name, role)[1] for name, role in [("root-admin", "admin"), ("aud", "auditor")]}
    finally:
        fi.close()
    # small uploads (200 kB a file, so 1.8 MB a request) to make many chunks; a high rate limit for 1000 photos
    s = Server(data, root / "server.log", ingest_root=ingest, max_upload_bytes="200000", rate_limit="100000",
               workers="2")
    try:
        yield s.url + "/", keys, ingest
    finally:
        s.stop()


def api(base: str, token: str, method: str, path: str, **kw) -> httpx.Response:
    return httpx.request(method, base + path, headers={"Authorization": f"Bearer {token}"}, timeout=60, **kw)


def audit_actions(base: str, keys: dict, action: str) -> list[dict]:
    return api(base, keys["aud"], "GET", "v1/audit", params={"action": action, "limit": 50}).json()


def go(pg: Page, page_id: str) -> None:
    pg.get_by_role("navigation", name="Pages").get_by_role("link", name={
        "collections": "Collections", "photos": "Add photos", "keys": "Keys", "policy": "Policy"}[page_id]).click()
    expect(pg.locator(f"#page-{page_id}")).to_be_visible()


def tab_to(pg: Page, selector: str, limit: int = 60) -> None:
    """Press Tab until `selector` has the focus (keyboard only: no clicks)."""
    target = pg.locator(selector)
    for _ in range(limit):
        pg.keyboard.press("Tab")
        if target.evaluate("el => el === document.activeElement"):
            return
    raise AssertionError(f"{selector} never got the focus by Tab")


def focus_audit(pg: Page, section: str) -> list[str]:
    """Tab through a page: every control reached has a visible focus outline and an accessible name. Returns
    the problems."""
    pg.locator("#main").focus()
    problems, seen = [], set()
    for _ in range(80):
        pg.keyboard.press("Tab")
        info = pg.evaluate("""(sel) => {
            const el = document.activeElement;
            if (!el || !document.querySelector(sel).contains(el)) return null;
            const label = el.labels && el.labels.length ? el.labels[0].textContent.trim()
                : (el.getAttribute('aria-label') || el.getAttribute('aria-labelledby') && document.getElementById(
                   el.getAttribute('aria-labelledby'))?.textContent || el.textContent || '').trim();
            const ring = (x) => x && getComputedStyle(x).outlineStyle !== 'none'
                && parseFloat(getComputedStyle(x).outlineWidth) >= 2;
            // a visually hidden file input shows its focus on its drop zone or on its label styled as a button
            const outline = ring(el) || ring(el.closest('.dropzone')) || ring(el.labels && el.labels[0]);
            return {id: el.id || el.outerHTML.slice(0, 60), label, outline};
        }""", f"#page-{section}")
        if info is None:
            if seen:
                break
            continue
        if info["id"] in seen:
            break
        seen.add(info["id"])
        if not info["label"]:
            problems.append(f"{section}: {info['id']} has no label")
        if not info["outline"]:
            problems.append(f"{section}: {info['id']} shows no focus outline")
    if not seen:
        problems.append(f"{section}: nothing reachable by Tab")
    return problems


# --- first run: empty states, sources --------------------------------------------------------------------------------
def test_first_run_empty_states_and_sources_by_keyboard(page, server):
    base, keys, _ = server
    sign_in(page, base, keys["root-admin"])
    nav = page.get_by_role("navigation", name="Pages")
    for name in ("Collections", "Add photos", "Keys", "Policy"):
        expect(nav.get_by_role("link", name=name)).to_be_visible()
    expect(nav.get_by_role("link", name="Search")).to_be_hidden()
    go(page, "collections")
    empty = page.locator("#src-empty")
    expect(empty).to_contain_text("No sources yet")
    expect(empty.get_by_role("link", name="Add photos")).to_be_visible()
    shot(page, "admin-empty")

    # a new source, by keyboard alone
    tab_to(page, "#src-new")
    page.keyboard.press("Enter")
    expect(page.locator("#src-name")).to_be_focused()
    page.keyboard.type("press archive")
    page.keyboard.press("Tab")
    expect(page.locator("#src-basis")).to_be_focused()  # the legal basis keeps its default (consent)
    expect(page.locator("#src-basis")).to_have_value("consent")
    page.keyboard.press("Tab")
    page.keyboard.type("0")
    page.keyboard.press("Tab")
    page.keyboard.type("Photos from the 2026 press days; see the notice at the entrance.")
    page.keyboard.press("Tab")
    expect(page.locator("#src-save")).to_be_focused()
    page.keyboard.press("Enter")
    row = page.locator("#src-rows tr", has_text="press archive")
    expect(row).to_contain_text("consent")
    expect(row).to_contain_text("kept until deleted")
    expect(page.locator("#src-empty")).to_be_hidden()

    # the same name again: the error is shown next to the form, and the name field gets the focus
    page.locator("#src-new").focus()
    page.keyboard.press("Enter")
    page.keyboard.type("press archive")
    page.locator("#src-save").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#src-form-error")).to_contain_text("already exists")
    expect(page.locator("#src-name")).to_be_focused()
    page.keyboard.press("Escape")
    expect(page.locator("#src-form")).to_be_hidden()

    # edit: retention 30 days; an API error (a notice with a control character) shows next to the form
    row.get_by_role("button", name="Edit press archive").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#src-basis")).to_be_focused()
    page.locator("#src-notice").fill("bad \u0007 notice")
    page.locator("#src-save").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#src-form-error")).to_be_visible()
    expect(page.locator("#src-form-error")).not_to_be_empty()
    page.locator("#src-notice").fill("Press days 2026.")
    page.locator("#src-retention").fill("30")
    page.locator("#src-save").focus()
    page.keyboard.press("Enter")
    expect(row).to_contain_text("30 days")
    sources = api(base, keys["root-admin"], "GET", "v1/sources/summary").json()
    assert [(s["name"], s["basis"], s["retention_days"], s["notice"]) for s in sources] == [
        ("press archive", "consent", 30, "Press days 2026.")]
    changes = audit_actions(base, keys, "source.change")
    assert [c["details"]["retention_days"] for c in changes][:1] == [30]


# --- add photos ---------------------------------------------------------------------------------------------------------
def lfw_files(n: int) -> list[Path]:
    people = sorted(p for p in LFW.iterdir() if p.is_dir())
    out: list[Path] = []
    for person in people:
        out += sorted(person.glob("*.jpg"))
        if len(out) >= n:
            return out[:n]
    pytest.skip(f"fewer than {n} LFW photos")


def test_upload_in_chunks_retries_a_failed_chunk_and_reports_bad_files(page, server, tmp_path):
    base, keys, _ = server
    photos = lfw_files(45)  # 3 chunks of at most 20
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"this is not a photo")
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    failed_once: list[str] = []

    def flaky(route):  # the second chunk fails once with a 503: the page must send it again
        if "chunk=1" in route.request.url and not failed_once:
            failed_once.append(route.request.url)
            route.fulfill(status=503, content_type="application/json", headers={"Retry-After": "1"},
                          body=json.dumps({"error": {"code": "busy", "message": "the server is busy; retry shortly"}}))
        else:
            route.continue_()

    page.route(re.compile(r".*/v1/ingest/uploads/[0-9a-f]+/files\?chunk=\d+$"), flaky)
    sign_in(page, base, keys["root-admin"])
    go(page, "photos")
    expect(page.locator("#jobs-empty")).to_be_visible()
    page.get_by_label("Source", exact=True).fill("press archive")
    page.locator("#up-files").set_input_files([str(p) for p in photos] + [str(bad), str(notes)])
    expect(page.locator("#up-picked")).to_contain_text("46 photos chosen")
    expect(page.locator("#up-picked")).to_contain_text("notes.txt (not an image)")
    chunks: list[str] = []
    page.on("request", lambda r: chunks.append(r.url) if "/files?chunk=" in r.url else None)
    page.locator("#up-submit").focus()
    page.keyboard.press("Enter")
    view = page.locator("#job-view")
    expect(view).to_be_visible()
    expect(page.locator("#job-state")).to_have_text("done", timeout=120_000)
    assert failed_once, "the flaky chunk was never sent"
    sent = sorted(int(u.rsplit("=", 1)[1]) for u in chunks)
    assert sent == [0, 1, 1, 2], sent  # chunk 1 twice: refused once, then retried
    expect(page.locator("#job-kv")).to_contain_text("46 of 46")
    expect(page.locator("#job-files")).to_contain_text("broken.jpg")
    expect(page.locator("#job-files")).to_contain_text("not an image")
    assert page.locator("#job-bar").evaluate("el => el.value") == 1
    shot(page, "admin-photos")
    jobs = api(base, keys["root-admin"], "GET", "v1/jobs").json()
    assert jobs[0]["state"] == "done" and jobs[0]["done"] == 46 and jobs[0]["faces"] >= 40
    assert jobs[0]["error_files"] == [{"file": "broken.jpg", "reason": jobs[0]["error_files"][0]["reason"]}]

    # after a reload the job is still listed, with its state
    page.reload()
    expect(page.locator("#page-photos")).to_be_visible()
    expect(page.locator("#jobs-rows tr").first).to_contain_text("done")
    expect(page.locator("#jobs-rows tr").first).to_contain_text("46 / 46")

    # the collection now counts them
    go(page, "collections")
    expect(page.locator("#src-rows tr", has_text="press archive")).to_contain_text("45")


def test_a_thousand_photos_upload_then_cancel(page, server):
    base, keys, _ = server
    photos = lfw_files(1000)
    sign_in(page, base, keys["root-admin"])
    go(page, "photos")
    page.get_by_label("Source", exact=True).fill("bulk")
    page.locator("#up-files").set_input_files([str(p) for p in photos])
    expect(page.locator("#up-picked")).to_contain_text("1,000 photos chosen")
    page.locator("#up-submit").click()
    expect(page.locator("#job-phase")).to_contain_text("of 1,000 photos", timeout=300_000)  # indexing
    expect(page.locator("#job-state")).to_have_text("indexing")
    page.locator("#job-cancel").focus()
    page.keyboard.press("Enter")
    dialog = page.locator("#confirm-dialog")
    expect(dialog).to_be_visible()
    dialog.get_by_role("button", name="Cancel job").click()
    expect(page.locator("#job-state")).to_have_text("cancelled", timeout=60_000)
    expect(page.locator("#job-error")).to_contain_text("cancelled by root-admin")
    job = api(base, keys["root-admin"], "GET", "v1/jobs").json()[0]
    assert job["state"] == "cancelled" and job["received"] == 1000, job
    assert job["done"] < 1000
    assert audit_actions(base, keys, "ingest.cancel")[0]["details"]["job"] == job["id"]


def test_server_folder_refused_outside_the_root_then_indexed(page, server):
    base, keys, ingest = server
    sign_in(page, base, keys["root-admin"])
    go(page, "photos")
    expect(page.locator("#path-roots")).to_contain_text(str(ingest))
    page.get_by_label("Folder on the server", exact=True).fill("/etc")
    page.locator("#path-source").fill("album")
    page.locator("#path-submit").click()
    err = page.locator("#path-error")
    expect(err).to_contain_text("outside the allowed ingest roots")  # the API's message, next to the form
    expect(page.locator("#path-submit")).to_be_focused()
    page.get_by_label("Folder on the server", exact=True).fill(str(ingest / "album"))
    page.locator("#path-submit").click()
    expect(page.locator("#job-state")).to_have_text("done", timeout=120_000)
    expect(page.locator("#job-kv")).to_contain_text("4 of 4")
    expect(err).to_be_hidden()


def test_delete_a_sources_images_shows_what_goes_and_asks_first(page, server):
    base, keys, _ = server
    sign_in(page, base, keys["root-admin"])
    go(page, "collections")
    row = page.locator("#src-rows tr", has_text="album")
    expect(row).to_contain_text("4")
    shot(page, "admin-collections")
    button = row.get_by_role("button", name="Delete the images of album")
    button.focus()
    page.keyboard.press("Enter")
    dialog = page.locator("#confirm-dialog")
    expect(dialog).to_contain_text("4 images and 4 faces will be deleted")
    expect(dialog).to_contain_text("4 files of this source will be forgotten")
    page.keyboard.press("Escape")  # asks first: nothing happens
    expect(dialog).to_be_hidden()
    expect(button).to_be_focused()
    assert api(base, keys["root-admin"], "GET", "v1/sources/album/images").json()["images"] == 4
    page.keyboard.press("Enter")
    dialog.get_by_role("button", name="Delete images").click()
    expect(page.locator("#status")).to_contain_text("Deleted 4 images and 4 faces of album")
    expect(row.locator("td[data-label=Images]")).to_have_text("0")
    expect(row.get_by_role("button", name="Delete the images of album")).to_be_disabled()
    rec = audit_actions(base, keys, "source.delete_images")[0]
    assert rec["details"]["source"] == "album" and len(rec["details"]["face_ids"]) == 4


# --- keys ------------------------------------------------------------------------------------------------------------------
def test_keys_create_copy_and_revoke_by_keyboard(page, server):
    base, keys, _ = server
    sign_in(page, base, keys["root-admin"])
    go(page, "keys")
    you = page.locator("#keys-rows tr", has_text="root-admin")
    expect(you).to_contain_text("(you)")
    expect(you).to_contain_text("active")
    tab_to(page, "#key-name")
    page.keyboard.type("ada")
    page.keyboard.press("Tab")
    expect(page.locator("#key-role")).to_be_focused()
    expect(page.locator("#key-role")).to_have_value("investigator")
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    card = page.locator("#key-token")
    expect(card).to_be_visible()
    expect(card).to_be_focused()
    expect(card).to_contain_text("shown only this once")
    token = page.locator("#key-token-value").input_value()
    assert re.fullmatch(r"fi_[0-9a-f]{12}_\S+", token)
    assert api(base, token, "GET", "v1/me").json()["name"] == "ada"  # the key shown works
    tab_to(page, "#key-copy")
    page.keyboard.press("Enter")
    expect(page.locator("#status")).to_contain_text(re.compile("copied|Ctrl\\+C"))
    shot(page, "admin-keys")
    page.locator("#key-token-done").focus()
    page.keyboard.press("Enter")
    expect(card).to_be_hidden()
    assert page.locator("#key-token-value").input_value() == ""  # not left in the page

    row = page.locator("#keys-rows tr", has_text="ada")
    ada = next(k for k in api(base, keys["root-admin"], "GET", "v1/keys").json() if k["name"] == "ada")
    assert ada["last_used_at"]  # the /v1/me above
    row.get_by_role("button", name=re.compile("Revoke key")).focus()
    page.keyboard.press("Enter")
    dialog = page.locator("#confirm-dialog")
    expect(dialog).to_contain_text("stops working at once")
    expect(page.locator("#confirm-cancel")).to_be_focused()
    page.keyboard.press("Escape")  # asks first: Escape keeps the key
    expect(dialog).to_be_hidden()
    assert api(base, token, "GET", "v1/me").status_code == 200
    row.get_by_role("button", name=re.compile("Revoke key")).focus()
    page.keyboard.press("Enter")
    dialog.get_by_role("button", name="Revoke key").focus()
    page.keyboard.press("Enter")
    expect(row).to_contain_text("revoked")
    assert api(base, token, "GET", "v1/me").status_code == 401
    assert audit_actions(base, keys, "key.revoke")[0]["details"]["key_id"] == ada["id"]


# --- policy --------------------------------------------------------------------------------------------------------------
def test_policy_shows_measured_rates_and_changes_are_confirmed_and_audited(page, server):
    base, keys, _ = server
    sign_in(page, base, keys["root-admin"])
    go(page, "policy")
    optout = page.get_by_label("Opt-out threshold")
    expect(optout).to_have_value("0.001")
    expect(page.locator("#pol-optout-hint")).to_contain_text("leak 0.42%, over-removal 0.16%")
    expect(page.locator("#pol-rates-rows tr")).to_have_count(9)
    expect(page.locator("#pol-rates-rows tr", has_text="opt-out")).to_contain_text("1 in 1,000")
    shot(page, "admin-policy")
    optout.focus()
    optout.select_option("0.0003")
    page.locator("#pol-save").focus()
    page.keyboard.press("Enter")
    dialog = page.locator("#confirm-dialog")
    expect(dialog).to_contain_text("Opt-out threshold")
    expect(dialog).to_contain_text("over-removal 0.049%")
    dialog.get_by_role("button", name="Save policy").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#pol-optout-hint")).to_contain_text("leak 0.54%")
    assert api(base, keys["root-admin"], "GET", "v1/policy").json()["optout_fmr"] == pytest.approx(3e-4)
    rec = audit_actions(base, keys, "policy.change")[0]
    assert rec["details"]["before"]["optout_fmr"] == pytest.approx(1e-3)
    assert rec["details"]["after"]["optout_fmr"] == pytest.approx(3e-4)
    # an invalid change from the API is shown next to the form, and nothing changes
    page.get_by_label("Allowed purposes").fill("investigation\nbad purpose!")
    page.locator("#pol-save").click()
    page.locator("#confirm-dialog").get_by_role("button", name="Save policy").click()
    expect(page.locator("#pol-error")).to_contain_text("The policy was not changed")
    assert "bad purpose!" not in api(base, keys["root-admin"], "GET", "v1/policy").json()["allowed_purposes"]


# --- every page: keyboard, focus, labels; 390 px -------------------------------------------------------------------------
def test_every_admin_page_keyboard_focus_labels_and_contrast(page, server):
    base, keys, _ = server
    sign_in(page, base, keys["root-admin"])
    problems = []
    for pid in ADMIN_PAGES:
        go(page, pid)
        page.wait_for_timeout(300)
        problems += focus_audit(page, pid)
        problems += [f"{pid}: {x}" for x in accessibility_problems(page, f"#page-{pid}")]
    assert not problems, "\n".join(problems)
    # the check itself finds pale text (it would pass anything if it were broken)
    page.evaluate("document.querySelector('#page-policy .page-head').append(Object.assign("
                  "document.createElement('span'), {id: 'pale', textContent: 'pale', style: 'color:#bbb'}))")
    assert any('"pale"' in x for x in accessibility_problems(page, "#page-policy"))


def test_admin_pages_fit_390px(browser, server):
    base, keys, _ = server
    ctx = browser.new_context(viewport=NARROW)
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    try:
        sign_in(pg, base, keys["root-admin"])
        for pid in ADMIN_PAGES:
            pg.goto(f"{base}#{pid}")
            expect(pg.locator(f"#page-{pid}")).to_be_visible()
            pg.wait_for_timeout(500)
            width = pg.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, f"{pid} scrolls sideways at 390 px ({width} px)"
            shot(pg, f"admin-{pid}-390")
    finally:
        ctx.close()
    assert not errors, errors
