"""The proof a maker sees: a replayed build of the web player's "Add a dark mode toggle" sample is checked
in a sandboxed browser and reviewed against a checklist (the sample's own review, written by hand), and
its version page shows the checklist and pictures before and after the change, on desktop and phone."""

import re

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import keep_screenshot, sign_in, wait_for_finished_page

pytestmark = pytest.mark.e2e


def test_a_maker_sees_the_checklist_and_before_and_after_pictures_on_the_version_page(live_store, page):
    sign_in(page, live_store, "alice")
    page.goto(live_store + "/new/")
    page.get_by_role("button", name=re.compile("Dark mode toggle")).click()
    page.get_by_role("button", name="Build it").click()

    expect(page).to_have_url(re.compile(r"/builds/\d+/$"))
    # While it runs, the checklist and then the browser check appear live, without reloading the page.
    page.evaluate("window.__sameDocument = true")  # disappears if the page reloads
    expect(page.locator("#activity .checks li").first).to_be_visible(timeout=60_000)
    expect(page.locator("#smoke-headline")).to_contain_text("Checked in a browser", timeout=120_000)
    assert page.evaluate("window.__sameDocument") is True, "shown only once the finished build was loaded"
    expect(page.locator("#progress")).to_have_attribute("data-state", "succeeded", timeout=180_000)
    wait_for_finished_page(page)
    # The build page says the browser check passed, and the reviewer's checklist.
    expect(page.locator("#smoke-headline")).to_contain_text("Checked in a browser: 1 page opened without errors")
    expect(page.locator("#checklist-score")).to_have_text(re.compile(r"^(\d+) of \1 passed$"))

    page.get_by_role("link", name="Open the prototype").click()
    page.locator("a[id$='-proof']").first.click()
    expect(page).to_have_url(re.compile(r"/p/[^/]+/v/1/$"))
    expect(page.get_by_role("heading", name="Version 1")).to_be_visible()

    # The checklist written from the idea, every item passed, marked as the sample's review.
    items = page.locator("#checklist .checks li")
    expect(items.first).to_be_visible()
    assert items.count() >= 3
    for number in range(items.count()):
        expect(items.nth(number)).to_have_class("pass")
        expect(items.nth(number)).to_contain_text("✓")
    expect(page.locator("#checklist")).to_contain_text("A 'Dark mode' button is in the player's top bar")
    expect(page.locator("#sample-review")).to_be_visible()
    expect(page.locator("#smoke-headline")).to_contain_text("✓ Checked in a browser")

    # Before beside after, desktop and phone: each picture is there and has loaded.
    for size in ("Desktop", "Phone"):
        for moment in ("before", "after"):
            picture = page.locator(f"img[alt='{size}, {moment} the change, /']")
            expect(picture).to_be_visible()
            picture.scroll_into_view_if_needed()
            page.wait_for_function("(img) => img.complete && img.naturalWidth > 0", arg=picture.element_handle())
            assert picture.evaluate("(img) => img.naturalWidth") > 0, f"{size} {moment} did not load"
    keep_screenshot(page, "version")
