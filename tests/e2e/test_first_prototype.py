"""A maker's first prototype, the way a person does it: sign in, pick a suggested idea, watch the
build, open the preview and try the change."""

import re

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import keep_screenshot, sign_in, wait_for_finished_page

pytestmark = pytest.mark.e2e


def test_a_maker_builds_a_suggested_idea_and_tries_it_in_the_preview(live_store, page):
    sign_in(page, live_store, "alice")
    page.get_by_role("link", name="New prototype").first.click()
    expect(page.get_by_text("Builds replay sample conversations, written by hand")).to_be_visible()

    page.get_by_role("button", name=re.compile("Dark mode toggle")).click()
    expect(page.locator("textarea[name=idea]")).to_have_value("Add a dark mode toggle")
    page.get_by_role("button", name="Build it").click()

    # The build page follows the build to the end (it polls), then shows what happened.
    expect(page).to_have_url(re.compile(r"/builds/\d+/$"))
    expect(page.locator("#progress")).to_have_attribute("data-state", "succeeded", timeout=120_000)
    wait_for_finished_page(page)
    expect(page.get_by_role("heading", name=re.compile(r"Build and tests passed: \d+ tests passed"))).to_be_visible()
    expect(page.locator(".testlist li.pass").first).to_be_visible()
    expect(page.get_by_text("Created src/theme.js", exact=True)).to_be_visible()
    expect(page.get_by_text("Ran the app's own build and tests", exact=True)).to_be_visible()
    keep_screenshot(page, "build")

    page.get_by_role("link", name="Open the prototype").click()
    expect(page.get_by_role("heading", name="Dark mode toggle")).to_be_visible()
    page.frame_locator("iframe").get_by_role("button", name=re.compile("Dark mode")).wait_for()
    with page.context.expect_page() as opened:
        page.get_by_role("link", name="Open preview").click()
    preview = opened.value
    preview.wait_for_load_state()
    toggle = preview.get_by_role("button", name=re.compile("Dark mode"))
    expect(toggle).to_be_visible()
    expect(toggle).to_have_attribute("aria-pressed", "false")
    toggle.click()
    expect(toggle).to_have_attribute("aria-pressed", "true")
    expect(preview.locator("html")).to_have_attribute("data-theme", "dark")
