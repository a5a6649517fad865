"""The Overview, Verify and multi-face Search pages in a real browser (Debian Chromium driven by Playwright) against a
real `faceindex serve` (the shared fixtures of tests/web_support.py): what each role sees on landing, verifying
chosen faces of two photos with the keyboard alone, searching several faces of one probe, errors shown next to
their cause, and the 390 px layout. Screenshots go to docs/screenshots/ with FACEINDEX_SCREENSHOTS=docs/screenshots.
"""

from __future__ import annotations

import json
import re
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("playwright", reason="playwright is not installed (pip install playwright)")
from playwright.sync_api import Page, expect  # noqa: E402

from tests.web_support import (  # noqa: E402
    NARROW,
    PEOPLE,
    PER_PERSON,
    TIMEOUT_MS,
    accessibility_problems,
    lfw,
    open_page,
    shot,
    sign_in,
    skip_unless_browser,
    two_faces,
)

skip_unless_browser()


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, Path]:
    """Held-out photos (never indexed): Tony Blair and Colin Powell side by side, Powell alone, a photo with no face."""
    from PIL import Image

    root = tmp_path_factory.mktemp("photos")
    gray = root / "wall.jpg"
    Image.new("RGB", (200, 160), (128, 128, 128)).save(gray, "JPEG")
    return {"pair": two_faces(lfw("Tony_Blair", 10), lfw("Colin_Powell", 10), root / "blair-and-powell.jpg"),
            "powell": lfw("Colin_Powell", 11), "wall": gray}


def api(base: str, key: str, path: str) -> object:
    req = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)


def tab_to(pg: Page, selector: str, limit: int = 60, back: bool = False) -> None:
    """Press Tab (or Shift+Tab) until the focused element matches `selector`; fail when it never does."""
    for _ in range(limit):
        if pg.evaluate("(s) => !!document.activeElement && document.activeElement.matches(s)", selector):
            return
        pg.keyboard.press("Shift+Tab" if back else "Tab")
    pytest.fail(f"{selector} was not reached with the keyboard")


def focus_is_visible(pg: Page) -> bool:
    """The focused element (or, for a visually hidden file input, its drop zone) draws a focus outline."""
    return pg.evaluate("""() => {
        const el = document.activeElement;
        const target = el.matches('input[type=file]') ? el.closest('.dropzone') : el;
        const s = getComputedStyle(target);
        return s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) >= 2;
    }""")


def choose_with_keyboard(pg: Page, input_selector: str, photo: Path) -> None:
    tab_to(pg, input_selector)
    assert focus_is_visible(pg)
    with pg.expect_file_chooser() as fc:
        pg.keyboard.press("Space")
    fc.value.set_files(str(photo))


def sign_in_with_keyboard(pg: Page, base: str, key: str) -> None:
    pg.goto(base)
    expect(pg.locator("#api-key")).to_be_focused()
    pg.keyboard.type(key)
    pg.keyboard.press("Enter")
    expect(pg.locator("#who")).to_be_visible()


def main_faces(pg: Page, boxes, img: str) -> tuple[str, str]:
    """Detector indexes of the largest face in the left and in the right half of the two-person photo (LFW photos
    also show bits of other people's faces)."""
    pic = pg.locator(img).bounding_box()
    mid = pic["x"] + pic["width"] / 2
    found = [(b.get_attribute("data-index"), b.bounding_box()) for b in boxes.all()]
    size = lambda f: f[1]["width"] * f[1]["height"]  # noqa: E731
    left = max((f for f in found if f[1]["x"] + f[1]["width"] / 2 < mid), key=size)
    right = max((f for f in found if f[1]["x"] + f[1]["width"] / 2 >= mid), key=size)
    return left[0], right[0]


def test_overview_is_every_roles_landing_page(page, server):
    base, keys = server
    seen = {}
    for name in ("inv1", "aud", "priv", "adm"):
        sign_in(page, base, keys[name])
        expect(page.locator("#page-overview")).to_be_visible()
        expect(page.get_by_role("navigation", name="Pages").get_by_role("link", name="Overview")).to_have_attribute(
            "aria-current", "page")
        expect(page.locator("#ov-gallery")).to_have_text(re.compile(r"^\d+ faces$"))
        expect(page.locator("#ov-chain")).to_have_text("✓ Audit chain intact")
        expect(page.locator("#ov-model")).to_have_text("yunet-omz95")
        seen[name] = {"sources": page.locator("#ov-sources").count(), "jobs": page.locator("#ov-jobs, #ov-no-jobs")
                      .count(), "head": page.locator("#ov-body code").count(),
                      "attention": page.locator("#ov-attention").count()}
        if name == "adm":
            expect(page.locator("#ov-attention")).to_contain_text("Nothing needs attention")
            expect(page.locator('#ov-sources tr[data-source="lfw"] td[data-label="Files"]')).to_have_text(
                str(len(PEOPLE) * PER_PERSON))
            assert accessibility_problems(page, "#page-overview") == []
            shot(page, "overview")
            # the check itself finds pale text and an unlabelled control
            page.evaluate("""() => {  // (the page's CSP refuses inline style attributes; the CSSOM is allowed)
                document.getElementById('ov-body').insertAdjacentHTML('beforeend', '<p id=pale>pale</p><input id=nolabel>');
                document.getElementById('pale').style.color = '#aaa';
            }""")
            found = accessibility_problems(page, "#page-overview")
            assert len(found) == 2 and found[0].startswith("contrast 2.") and "nolabel" in found[1], found
            page.evaluate("document.getElementById('pale').remove(); document.getElementById('nolabel').remove()")
        page.get_by_role("button", name="Sign out").click()
    assert seen["inv1"] == {"sources": 0, "jobs": 0, "head": 0, "attention": 0}  # gallery, model, chain only
    assert seen["aud"] == {"sources": 1, "jobs": 0, "head": 1, "attention": 0}  # the chain's head to keep elsewhere
    assert seen["priv"] == {"sources": 1, "jobs": 0, "head": 0, "attention": 0}
    assert seen["adm"] == {"sources": 1, "jobs": 1, "head": 0, "attention": 1}


def test_overview_shows_the_admins_warnings_and_its_errors(page, server):
    """The warnings themselves are made real (a failed job, expired files, a tampered log) in
    tests/test_server_overview.py; here the page must show what the API says, and an API error next to it."""
    base, keys = server
    warnings = [{"kind": "job_failed", "page": "photos", "message": "Ingest job 1234abcd (lfw) failed: disk full."},
                {"kind": "audit_broken", "page": "audit", "message": "The audit chain is broken at record 3."}]

    def with_warnings(route):
        o = route.fetch().json()
        o["attention"] = warnings
        o["audit"].update(ok=False, first_bad_seq=3, problem="Record 3 was edited.")
        route.fulfill(json=o)

    page.route("**/v1/overview", with_warnings)
    sign_in(page, base, keys["adm"])
    att = page.locator("#ov-attention")
    expect(att).to_contain_text("Needs attention (2)")
    expect(att.locator('li[data-kind="job_failed"]')).to_contain_text("disk full")
    expect(att.locator('li[data-kind="audit_broken"]')).to_contain_text("record 3")
    expect(page.locator("#ov-chain")).to_have_text("✕ Audit chain broken")
    expect(page.locator("#ov-body")).to_contain_text("first bad record #3")
    assert accessibility_problems(page, "#page-overview") == []
    shot(page, "overview-attention")
    page.unroute("**/v1/overview")

    slow = json.dumps({"error": {"code": "rate_limited", "message": "too many requests for this user"}})
    page.route("**/v1/overview", lambda r: r.fulfill(status=429, headers={"Retry-After": "9"}, body=slow,
                                                      content_type="application/json"))
    tab_to(page, "#ov-refresh")
    assert focus_is_visible(page)
    page.keyboard.press("Enter")
    expect(page.locator("#ov-error")).to_contain_text("Could not load the overview: Slow down")
    expect(page.locator("#ov-error")).to_contain_text("Retry in 9 s")
    page.unroute("**/v1/overview")
    page.locator("#ov-refresh").click()
    expect(page.locator("#ov-error")).to_be_hidden()
    expect(page.locator("#ov-chain")).to_have_text("✓ Audit chain intact")

    # while the chain's first check runs the page says so, and asks again by itself (every 5 s) until it is done
    def checking(route):
        o = route.fetch().json()
        o["audit"].update(ok=None, checked_at=None)
        route.fulfill(json=o)

    page.route("**/v1/overview", checking, times=1)
    page.locator("#ov-refresh").click()
    expect(page.locator("#ov-chain")).to_have_text("Checking…")
    expect(page.locator("#ov-body")).to_contain_text("is being verified")
    expect(page.locator("#ov-chain")).to_have_text("✓ Audit chain intact", timeout=15_000)


def test_verify_two_chosen_faces_with_the_keyboard_alone(page, server, photos):
    base, keys = server
    sign_in_with_keyboard(page, base, keys["inv1"])
    tab_to(page, 'a[href="#verify"]')
    assert focus_is_visible(page)
    page.keyboard.press("Enter")
    expect(page.locator("#page-verify")).to_be_visible()

    # photo A: two people; the largest face is selected, the other is picked with Tab and Enter
    choose_with_keyboard(page, "#vf-a-file", photos["pair"])
    boxes = page.locator("#page-verify .vf-photo").first.locator(".face-box")
    expect(page.locator("#page-verify .vf-photo").first.locator('.face-box[aria-pressed="true"]')).to_have_count(1)
    assert boxes.count() >= 2
    left_i, right_i = main_faces(page, boxes, "#vf-a-img")
    right = page.locator(f'#page-verify .vf-photo:first-child .face-box[data-index="{right_i}"]')  # Colin Powell
    left = page.locator(f'#page-verify .vf-photo:first-child .face-box[data-index="{left_i}"]')  # Tony Blair
    tab_to(page, f'#page-verify .vf-photo:first-child .face-box[data-index="{right_i}"]')
    assert focus_is_visible(page)
    page.keyboard.press("Enter")
    expect(right).to_have_attribute("aria-pressed", "true")
    expect(left).to_have_attribute("aria-pressed", "false")

    choose_with_keyboard(page, "#vf-b-file", photos["powell"])
    expect(page.locator("#page-verify .vf-photo").nth(1).locator('.face-box[aria-pressed="true"]')).to_have_count(1)
    tab_to(page, "#vf-purpose")
    page.keyboard.type("investigation")
    tab_to(page, "#vf-case")
    page.keyboard.type("WEB-VERIFY")
    page.keyboard.press("Enter")
    out = page.locator("#vf-result .vf-out")
    expect(out).to_be_visible()
    expect(page.locator("#vf-decision")).to_have_text(re.compile("strong candidate|possible candidate"))
    expect(page.locator("#vf-fmr")).to_contain_text("1 in ")
    expect(out).to_contain_text("may be the same person")
    expect(out.locator("canvas.crop")).to_have_count(2)  # both faces, side by side
    expect(out.locator("figcaption").first).to_contain_text("Photo A")
    same = float(page.locator("#vf-similarity").inner_text())
    assert accessibility_problems(page, "#page-verify") == []
    assert accessibility_problems(page, "header") == []
    shot(page, "verify")

    # the other face of photo A (Tony Blair) is not a candidate for Colin Powell
    tab_to(page, f'#page-verify .vf-photo:first-child .face-box[data-index="{left_i}"]', back=True)
    page.keyboard.press("Enter")
    tab_to(page, "#vf-submit")
    page.keyboard.press("Enter")
    expect(page.locator("#vf-decision")).to_have_text("no candidate")
    assert float(page.locator("#vf-similarity").inner_text()) < same
    expect(out).to_contain_text("Not similar enough")

    # both comparisons are in the audit trail with their purpose, case and the faces chosen
    records = api(base, keys["aud"], "v1/audit?" + urllib.parse.urlencode({"action": "verify", "case": "WEB-VERIFY"}))
    assert len(records) == 2 and all(r["purpose"] == "investigation" for r in records)
    assert {r["details"]["face_a"] for r in records} == {int(left_i), int(right_i)}
    page.get_by_role("button", name="Sign out").click()
    sign_in(page, base, keys["aud"])
    open_page(page, "Audit")
    filters = page.locator("#audit-form")
    filters.get_by_label("Case").fill("WEB-VERIFY")
    filters.get_by_label("Action").fill("verify")
    filters.get_by_role("button", name="Apply").click()
    summaries = page.locator('#audit-rows tr[data-action="verify"] .detail-sum')
    expect(summaries).to_have_count(2)
    # newest first: the second comparison (Tony Blair's face against Colin Powell's) is on top
    expect(summaries.first).to_have_text(re.compile(rf"^no candidate · similarity [0-9.]+ · faces {left_i} / \d+$"))
    expect(summaries.nth(1)).to_have_text(re.compile(rf"candidate · similarity [0-9.]+ · faces {right_i} / \d+$"))


def test_verify_errors_are_shown_next_to_their_cause(page, server, photos):
    base, keys = server
    sign_in(page, base, keys["inv1"])
    open_page(page, "Verify")
    page.locator("#vf-a-file").set_input_files(str(photos["wall"]))
    expect(page.locator("#vf-a-error")).to_contain_text("No face found in wall.jpg")
    expect(page.locator("#vf-submit")).to_be_disabled()
    page.locator("#vf-a-file").set_input_files(str(photos["powell"]))
    expect(page.locator("#vf-a-error")).to_be_hidden()
    page.locator("#vf-b-file").set_input_files(str(photos["pair"]))
    expect(page.locator("#vf-submit")).to_be_enabled()
    page.locator("#page-verify").get_by_label("Purpose").fill("curiosity")  # not an allowed purpose: the API refuses (403)
    page.locator("#page-verify").get_by_label("Case reference").fill("WEB-VERIFY-2")
    page.locator("#vf-submit").click()
    expect(page.locator("#vf-error")).to_contain_text("curiosity")
    expect(page.locator("#vf-result .vf-out")).to_have_count(0)
    page.locator("#page-verify").get_by_label("Case reference").fill("bad case ref!")
    page.locator("#page-verify").get_by_label("Purpose").fill("investigation")
    page.locator("#vf-submit").click()
    expect(page.locator("#vf-error")).to_contain_text("Give a case reference")
    expect(page.locator("#vf-case")).to_be_focused()


def test_search_several_faces_shows_one_group_per_face(page, server, photos):
    base, keys = server
    sign_in(page, base, keys["inv1"])
    open_page(page, "Search")
    page.locator("#probe-file").set_input_files(str(photos["pair"]))
    boxes = page.locator("#face-boxes .face-box")
    expect(page.locator('#face-boxes .face-box[aria-pressed="true"]')).to_have_count(1)  # the largest
    left, right = main_faces(page, boxes, "#probe-img")
    for i in (left, right):  # select both (keyboard: Tab to the unselected box, Enter)
        box = page.locator(f'#face-boxes .face-box[data-index="{i}"]')
        if box.get_attribute("aria-pressed") == "false":
            tab_to(page, f'#face-boxes .face-box[data-index="{i}"]', back=True)
            assert focus_is_visible(page)
            page.keyboard.press("Enter")
    expect(page.locator('#face-boxes .face-box[aria-pressed="true"]')).to_have_count(2)
    expect(page.locator("#search-submit")).to_have_text("Search 2 faces")
    page.locator("#page-search").get_by_label("Purpose").fill("investigation")
    page.locator("#page-search").get_by_label("Case reference").fill("WEB-MULTI")
    page.locator("#page-search").get_by_label("Candidates").fill("4")
    page.locator("#search-submit").click()
    groups = page.locator("#results .face-group")
    expect(groups).to_have_count(2)
    expect(groups.locator(".cand").first).to_be_visible()
    expect(page.locator("#results .crop.loading")).to_have_count(0)
    tops = {}
    for i in range(2):
        g = groups.nth(i)
        expect(g.locator("h3")).to_have_text(re.compile(r"^Face \d+$"))
        tops[g.get_attribute("data-face")] = g.locator(".cand-file").first.inner_text()
    assert "Tony_Blair_" in tops[left] and "Colin_Powell_" in tops[right], tops
    assert accessibility_problems(page, "#page-search") == []
    shot(page, "search-groups")
    records = api(base, keys["aud"], "v1/audit?" + urllib.parse.urlencode({"action": "search", "case": "WEB-MULTI"}))
    assert sorted(str(r["details"]["face"]) for r in records) == sorted([left, right])  # one record per face


def test_one_failed_face_is_reported_in_its_group(page, server, photos):
    base, keys = server
    sign_in(page, base, keys["inv1"])
    open_page(page, "Search")
    page.locator("#probe-file").set_input_files(str(photos["pair"]))
    expect(page.locator('#face-boxes .face-box[aria-pressed="true"]')).to_have_count(1)
    left, right = main_faces(page, page.locator("#face-boxes .face-box"), "#probe-img")
    for i in (left, right):
        box = page.locator(f'#face-boxes .face-box[data-index="{i}"]')
        if box.get_attribute("aria-pressed") == "false":
            box.click()
    calls = []

    def second_fails(route):
        calls.append(1)
        if len(calls) == 2:
            route.fulfill(status=503, headers={"Retry-After": "2"}, content_type="application/json",
                          body=json.dumps({"error": {"code": "busy", "message": "the server is busy; retry shortly"}}))
        else:
            route.continue_()

    page.route("**/v1/search", second_fails)
    page.locator("#page-search").get_by_label("Purpose").fill("investigation")
    page.locator("#page-search").get_by_label("Case reference").fill("WEB-MULTI-2")
    page.locator("#search-submit").click()
    groups = page.locator("#results .face-group")
    expect(groups.nth(1).locator(".alert-error")).to_contain_text(re.compile(
        r"Face \d+ could not be searched: the server is busy"))
    expect(groups.nth(0).locator(".cand").first).to_be_visible()
    expect(page.locator("#search-error")).to_be_hidden()
    expect(page.locator("#results .crop.loading")).to_have_count(0)


@pytest.mark.parametrize("who", ["adm", "inv1"])
def test_pages_fit_390px(browser, server, photos, who):
    base, keys = server
    ctx = browser.new_context(viewport=NARROW, device_scale_factor=1)
    pg = ctx.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    try:
        sign_in(pg, base, keys[who])
        expect(pg.locator("#ov-chain")).to_be_visible()
        assert pg.evaluate("document.documentElement.scrollWidth") <= NARROW["width"]
        shot(pg, f"overview-390-{who}")
        if who == "inv1":
            open_page(pg, "Verify")
            pg.locator("#vf-a-file").set_input_files(str(photos["powell"]))
            pg.locator("#vf-b-file").set_input_files(str(lfw("Colin_Powell", 12)))
            expect(pg.locator('.vf-photo .face-box[aria-pressed="true"]')).to_have_count(2)
            pg.locator("#page-verify").get_by_label("Purpose").fill("investigation")
            pg.locator("#page-verify").get_by_label("Case reference").fill("WEB-VERIFY-390")
            pg.locator("#vf-submit").click()
            expect(pg.locator("#vf-decision")).to_be_visible()
            assert pg.evaluate("document.documentElement.scrollWidth") <= NARROW["width"]
            shot(pg, "verify-390")
            open_page(pg, "Search")  # two faces of one probe, in groups
            pg.locator("#probe-file").set_input_files(str(photos["pair"]))
            expect(pg.locator('#face-boxes .face-box[aria-pressed="true"]')).to_have_count(1)
            for i in main_faces(pg, pg.locator("#face-boxes .face-box"), "#probe-img"):
                box = pg.locator(f'#face-boxes .face-box[data-index="{i}"]')
                if box.get_attribute("aria-pressed") == "false":
                    box.click()
            search = pg.locator("#page-search")
            search.get_by_label("Purpose").fill("investigation")
            search.get_by_label("Case reference").fill("WEB-MULTI-390")
            search.get_by_label("Candidates").fill("2")
            pg.locator("#search-submit").click()
            expect(pg.locator("#results .face-group .cand")).to_have_count(4)
            assert pg.evaluate("document.documentElement.scrollWidth") <= NARROW["width"]
    finally:
        ctx.close()
    assert not errors, errors
