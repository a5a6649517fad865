"""The web page at / in a real browser (headless Debian Chromium driven by Playwright) against a real server.

A small LFW index is built through the Python API, `faceindex serve` runs as a subprocess, and the page is used the
way people use it: sign in with a key, search with a held-out photo, two-person confirmation, people, audit,
privacy. Screenshots of each page are saved (docs/screenshots/ with FACEINDEX_SCREENSHOTS=docs/screenshots).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

pytest.importorskip("playwright", reason="playwright is not installed (pip install playwright)")
from playwright.sync_api import Page, expect  # noqa: E402

from tests.web_support import (
    NARROW,
    PEOPLE,
    PER_PERSON,
    TIMEOUT_MS,
    accessibility_problems,
    lfw,
    open_page,
    shot,
    sign_in,
    sign_out,
    skip_unless_browser,
)

skip_unless_browser()


def run_search(pg: Page, probe: Path, case: str, purpose: str = "investigation") -> None:
    if not pg.locator("#page-search").is_visible():  # after sign-in every role lands on the Overview
        open_page(pg, "Search")
    pg.locator("#probe-file").set_input_files(str(probe))
    expect(pg.locator(".face-box")).to_have_count(1)
    expect(pg.locator(".face-box")).to_have_attribute("aria-pressed", "true")
    form = pg.locator("#page-search")  # the Verify page has a purpose and a case too
    form.get_by_label("Purpose").fill(purpose)
    form.get_by_label("Case reference").fill(case)
    pg.locator("#search-submit").click()
    expect(pg.locator(".cand").first).to_be_visible()
    expect(pg.locator(".crop.loading")).to_have_count(0)


def confirm_first(pg: Page) -> None:
    first = pg.locator(".cand").first
    first.get_by_role("button", name="Confirm").click()
    dialog = pg.locator("#confirm-dialog")
    expect(dialog).to_be_visible()
    dialog.get_by_role("button", name="Confirm candidate").click()
    expect(dialog).to_be_hidden()


def test_sign_in_page_and_wrong_key(page, server):
    base, _ = server
    page.goto(base)
    expect(page.locator("#page-signin")).to_be_visible()
    expect(page.locator("#notice")).to_contain_text("never identifications")
    expect(page.locator("#nav")).to_be_hidden()
    shot(page, "signin")
    assert accessibility_problems(page, "#page-signin") == []  # AA contrast, a name on every control
    page.get_by_label("API key").fill("fi_000000000000_not-a-real-key")
    page.get_by_role("button", name="Sign in").click()
    error = page.locator("#signin-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("invalid API key")
    expect(page.locator("#page-search")).to_be_hidden()
    assert page.evaluate("sessionStorage.getItem('faceindex.key')") is None


def test_two_person_confirmation_then_audit(page, server):
    base, keys = server
    probe = lfw("Tony_Blair", 10)  # not in the index (images 1..6 are)
    case = "WEB-1"

    sign_in(page, base, keys["inv1"])
    nav = page.get_by_role("navigation", name="Pages")
    expect(nav.get_by_role("link", name="Search")).to_be_visible()
    expect(nav.get_by_role("link", name="People")).to_be_visible()
    expect(nav.get_by_role("link", name="Audit")).to_be_hidden()
    expect(nav.get_by_role("link", name="Privacy")).to_be_hidden()

    run_search(page, probe, case)
    expect(page.locator("#results-model")).to_have_text("yunet-omz95")  # which pack made the embeddings
    first = page.locator(".cand").first
    expect(first.locator(".cand-file")).to_contain_text("Tony_Blair_")
    expect(first).to_contain_text("1 in ")  # FMR shown as "1 in N"
    expect(first.locator(".badge")).to_have_text("not confirmed")
    assert page.locator(".cand .crop:not(.broken)").count() == page.locator(".cand").count()  # crops loaded

    confirm_first(page)
    expect(first.locator(".badge")).to_have_text("awaiting second confirmation (1 of 2)")
    expect(first.get_by_role("button", name="You confirmed")).to_be_disabled()
    expect(page.locator(".badge-ok")).to_have_count(0)  # one confirmation never shows as confirmed

    # the full image with the face outlined, fetched with the key
    first.get_by_role("button", name="View in photo").click()
    expect(page.locator("#image-dialog")).to_be_visible()
    page.wait_for_function("document.getElementById('image-full').src.startsWith('blob:')")
    page.keyboard.press("Escape")
    expect(page.locator("#image-dialog")).to_be_hidden()

    sign_out(page)
    sign_in(page, base, keys["inv2"])
    run_search(page, probe, case)
    first = page.locator(".cand").first
    expect(first.locator(".cand-file")).to_contain_text("Tony_Blair_")
    expect(first.locator(".badge")).to_have_text("awaiting second confirmation (1 of 2)")  # from the search result
    confirm_first(page)
    expect(first.locator(".badge")).to_have_text("✓ confirmed")
    expect(first.get_by_role("button", name="Confirmed")).to_be_disabled()
    shot(page, "search")
    assert accessibility_problems(page, "#page-search") == []  # AA contrast, a name on every control

    sign_out(page)
    sign_in(page, base, keys["aud"])
    expect(page.locator("#page-overview")).to_be_visible()
    open_page(page, "Audit")
    expect(nav.get_by_role("link", name="Search")).to_be_hidden()
    expect(page.locator("#verify-pill")).to_have_text("✓ Chain intact")
    rows = page.locator("#audit-rows tr")
    expect(rows.first).to_be_visible()
    searches = page.locator('#audit-rows tr[data-action="search"]', has_text=case)
    confirms = page.locator('#audit-rows tr[data-action="confirm"]', has_text=case)
    expect(searches).to_have_count(2)
    expect(confirms).to_have_count(2)
    by = lambda name: confirms.filter(has=page.locator('td[data-label="Actor"]', has_text=f"{name} (key"))  # noqa: E731
    expect(by("inv1").locator(".detail-sum")).to_have_text(re.compile(r"awaiting second confirmation \(1 of 2\)$"))
    expect(by("inv2").locator(".detail-sum")).to_have_text(re.compile(r"· confirmed$"))
    shot(page, "audit")
    assert accessibility_problems(page, "#page-audit") == []  # AA contrast, a name on every control

    filters = page.locator("#audit-form")
    filters.get_by_label("Case").fill(case)
    filters.get_by_label("Action").fill("confirm")
    filters.get_by_role("button", name="Apply").click()
    expect(rows).to_have_count(2)
    expect(page.locator("#audit-count")).to_have_text("2 records, newest first")


def give_purpose_and_case(page, case: str = "WEB-PEOPLE") -> None:
    """Viewing people and faces is audited: the page sends the search form's purpose and case with those reads."""
    if not page.locator("#page-search").is_visible():
        open_page(page, "Search")
    page.locator("#purpose").fill("investigation")
    page.locator("#case").fill(case)


def test_people_after_clustering(page, server):
    base, keys = server
    sign_in(page, base, keys["inv1"])
    give_purpose_and_case(page)
    page.get_by_role("navigation", name="Pages").get_by_role("link", name="People").click()
    expect(page.locator("#page-people")).to_be_visible()
    page.locator("#cluster-btn").click()
    cards = page.locator(".person-card")
    expect(cards.first).to_be_visible()
    n_people = cards.count()
    assert len(PEOPLE) - 1 <= n_people <= len(PEOPLE) + 2, n_people  # about one person per enrolled name
    expect(page.locator("#people-count")).to_have_text(f"{n_people} people")
    first_faces = int(re.match(r"(\d+) faces", cards.first.locator(".person-meta").inner_text()).group(1))
    assert first_faces >= PER_PERSON - 1  # largest first
    expect(page.locator(".mosaic .tile").first).to_be_visible()
    expect(page.locator(".mosaic .tile.loading")).to_have_count(0)
    expect(cards.first.locator(".person-cohesion")).to_contain_text("weakest link 1 in")
    shot(page, "people")
    assert accessibility_problems(page, "#page-people") == []  # AA contrast, a name on every control

    # reviewers can see the least cohesive groups first
    with page.expect_response(lambda r: "sort=weakest" in r.url):
        page.get_by_label("Order").select_option("weakest")
    expect(page.locator("#people-count")).to_have_text(f"{n_people} people")
    shown = [float(re.search(r"similarity ([0-9.]+)", t).group(1))
             for t in page.locator(".person-cohesion").all_inner_texts()]
    assert shown == sorted(shown) and len(shown) >= n_people - 1
    page.get_by_label("Order").select_option("size")
    expect(page.locator("#people-count")).to_have_text(f"{n_people} people")

    # rename a person from its detail view; the name shows on the list
    cards.first.locator(".person-open").click()
    expect(page.locator("#person-view")).to_be_visible()
    expect(page.locator("#person-faces .face-tile")).to_have_count(first_faces)
    page.get_by_label("Name", exact=True).fill("Subject A")
    page.get_by_role("button", name="Save name").click()
    expect(page.locator("#person-title")).to_have_text("Subject A")
    page.get_by_role("button", name="All people").click()
    expect(page.locator(".person-card", has_text="Subject A")).to_have_count(1)

    # merge needs two selected people; it asks first, and cancelling changes nothing
    expect(page.locator("#merge-btn")).to_be_disabled()
    cards.nth(0).get_by_text("Select to merge").click()
    cards.nth(1).get_by_text("Select to merge").click()
    expect(page.locator("#merge-btn")).to_have_text("Merge 2 selected")
    page.locator("#merge-btn").click()
    page.get_by_role("button", name="Cancel").click()
    expect(page.locator("#confirm-dialog")).to_be_hidden()
    expect(cards).to_have_count(n_people)


def test_privacy_access_lists_the_persons_faces(page, server):
    base, keys = server
    sign_in(page, base, keys["priv"])
    open_page(page, "Privacy")
    page.get_by_label("Request reference").first.fill("SAR-WEB-1")
    page.locator("#access-photos").set_input_files(str(lfw("Colin_Powell", 10)))
    page.get_by_role("button", name="Review and run access…").click()
    dialog = page.locator("#confirm-dialog")
    expect(dialog).to_contain_text("Nothing is deleted")
    dialog.get_by_role("button", name="Run access").click()
    faces = page.locator("#access-out .access-face")
    expect(faces.first).to_be_visible()
    names = faces.locator(".cand-file").all_text_contents()  # most similar first
    assert names[0].startswith("Colin_Powell_"), names
    assert sum(n.startswith("Colin_Powell_") for n in names) >= PER_PERSON - 1, names
    expect(page.locator("#access-out .receipt-big strong").first).to_have_text(str(len(names)))
    expect(page.locator("#access-out")).to_contain_text("SAR-WEB-1")
    expect(page.locator("#access-out .tile.loading")).to_have_count(0)
    shot(page, "privacy")
    assert accessibility_problems(page, "#page-privacy") == []  # AA contrast, a name on every control


def test_mobile_search_fits_390px(browser, server):
    base, keys = server
    ctx = browser.new_context(viewport=NARROW, device_scale_factor=1)
    pg = ctx.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    try:
        sign_in(pg, base, keys["inv1"])
        run_search(pg, lfw("Gerhard_Schroeder", 12), "WEB-MOBILE")
        expect(pg.locator(".cand").first.locator(".cand-file")).to_contain_text("Gerhard_Schroeder_")
        assert pg.evaluate("document.documentElement.scrollWidth") <= NARROW["width"]  # no sideways scrolling
        shot(pg, "search-390")
    finally:
        ctx.close()


def test_rate_limit_and_expired_key_messages(page, server):
    base, keys = server
    sign_in(page, base, keys["inv1"])
    give_purpose_and_case(page)
    slow = json.dumps({"error": {"code": "rate_limited", "message": "too many requests for this key"}})
    page.route("**/v1/people?*", lambda r: r.fulfill(status=429, headers={"Retry-After": "7"}, body=slow,
                                                      content_type="application/json"))
    page.goto(base + "#people")
    expect(page.locator("#people-error")).to_contain_text("Retry in 7 s")
    page.unroute("**/v1/people?*")

    gone = json.dumps({"error": {"code": "unauthorized", "message": "this API key has been revoked"}})
    page.route("**/v1/people/cluster?*", lambda r: r.fulfill(status=401, body=gone, content_type="application/json"))
    page.locator("#cluster-btn").click()
    expect(page.locator("#page-signin")).to_be_visible()
    expect(page.locator("#signin-error")).to_contain_text("revoked")
    assert page.evaluate("sessionStorage.getItem('faceindex.key')") is None


def test_privacy_optout_receipt_list_and_withdraw(page, server):
    """Last: it deletes faces from the shared index."""
    base, keys = server
    sign_in(page, base, keys["priv"])
    open_page(page, "Privacy")
    page.get_by_role("tab", name="Opt-out").click()
    panel = page.locator("#panel-optout")
    panel.get_by_label("Request reference").fill("REQ-WEB-1")
    panel.locator("#optout-photos").set_input_files(str(lfw("Ariel_Sharon", 10)))
    panel.get_by_role("button", name="Review opt-out…").click()
    dialog = page.locator("#confirm-dialog")
    expect(dialog).to_contain_text("cannot be undone")
    dialog.get_by_role("button", name="Delete faces and register opt-out").click()
    receipt = page.locator("#optout-out .receipt")
    expect(receipt).to_contain_text("faces removed")
    removed = int(receipt.locator(".receipt-big strong").first.inner_text())
    assert removed >= PER_PERSON - 1
    row = page.locator("#optout-rows tr", has_text="REQ-WEB-1")
    expect(row).to_have_count(1)
    row.get_by_role("button", name="Withdraw opt-out REQ-WEB-1").click()
    dialog.get_by_role("button", name="Withdraw opt-out").click()
    expect(row).to_have_count(0)
    expect(page.locator("#optout-empty")).to_be_visible()

