"""The store as people use it: browse, search, open, preview, share a link, open it signed out,
comment, react — and a prototype's code kept away from the store."""

import re
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import keep_screenshot, sign_in

pytestmark = pytest.mark.e2e

PROBE = """async () => {
  const out = {};
  try { out.cookie = document.cookie; } catch (error) { out.cookie = "blocked: " + error.name; }
  try { localStorage.setItem("probe", "1"); out.storage = "open"; } catch (error) { out.storage = "blocked"; }
  const store = new URL("/", location.href).href;
  for (const path of ["", "p/", "new/", "admin/"]) {
    try {
      const response = await fetch(store + path, {credentials: "include"});
      out[path || "home"] = response.status + " " + (await response.text()).slice(0, 2000);
    } catch (error) { out[path || "home"] = "blocked: " + error.name; }
  }
  return out;
}"""


def build_suggestion(page, base, suggestion):
    page.goto(base + "/new/")
    page.get_by_role("button", name=re.compile(suggestion)).click()
    page.get_by_role("button", name="Build it").click()
    expect(page.locator("#progress")).to_have_attribute("data-state", "succeeded", timeout=120_000)
    page.get_by_role("link", name="Open the prototype").click()
    return page.url


def test_browse_search_open_preview_share_comment_react(live_store, browser, page):
    sign_in(page, live_store, "alice")
    prototype_url = build_suggestion(page, live_store, "Episode count per show")

    # Bob finds it in the store and tries it.
    bob = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    sign_in(bob, live_store, "bob")
    expect(bob.locator(".card.proto").first).to_be_visible()
    keep_screenshot(bob, "store-home")
    bob.get_by_role("searchbox", name="Search").fill("episode count")
    bob.get_by_role("button", name="Search").click()
    expect(bob.locator(".card.proto", has_text="Episode count per show").first).to_be_visible()
    # Other tests of the session may have built the same sample: this card is the one alice just made.
    card = bob.locator(f'.card.proto[href="{urlsplit(prototype_url).path}"]')
    expect(card).to_have_count(1)
    card.click()
    expect(bob).to_have_url(prototype_url)
    expect(bob.get_by_role("link", name=re.compile("Download podcast-api.pyz"))).to_be_visible()
    bob.get_by_role("button", name=re.compile("👍")).click()
    expect(bob.get_by_role("button", name=re.compile("👍 1"))).to_have_attribute("aria-pressed", "true")
    bob.get_by_label(re.compile("Comment on version 1")).fill("Handy! **Could** it show the newest episode too? @alice")
    bob.get_by_role("button", name="Comment", exact=True).click()
    expect(bob.locator(".comment-body strong", has_text="Could")).to_be_visible()

    # Alice sees the feedback, shares a link, and someone signed out opens it.
    page.reload()
    expect(page.get_by_text("Handy!")).to_be_visible()
    page.get_by_role("button", name="Create a share link").click()
    link = page.locator("#share-url").input_value()
    assert "/s/" in link
    stranger = browser.new_context().new_page()
    stranger.goto(link)
    expect(stranger.get_by_role("heading", name="Episode count per show")).to_be_visible()
    expect(stranger.get_by_role("link", name=re.compile("Download podcast-api.pyz"))).to_be_visible()
    stranger.goto(live_store + "/")
    expect(stranger).to_have_url(re.compile("/accounts/login/"))  # the link opened nothing else


def test_a_web_prototype_previews_and_cannot_reach_the_store(live_store, page):
    sign_in(page, live_store, "alice")
    build_suggestion(page, live_store, "Dark mode toggle")
    frame = page.frame_locator("iframe")
    expect(frame.get_by_role("button", name=re.compile("Dark mode"))).to_be_visible()
    page.get_by_role("heading", name="Dark mode toggle").scroll_into_view_if_needed()
    keep_screenshot(page, "prototype-page")
    assert any(c["name"] == "sessionid" for c in page.context.cookies())

    with page.context.expect_page() as opened:
        page.get_by_role("link", name="Open preview").click()
    preview = opened.value
    preview.wait_for_load_state()
    expect(preview.get_by_role("button", name=re.compile("Dark mode"))).to_be_visible()
    # Run code in the prototype's own page, as its scripts would.
    found = preview.evaluate(PROBE)
    assert found["cookie"] in ("", "blocked: SecurityError")
    assert found["storage"] == "blocked"
    for path in ("home", "p/", "new/", "admin/"):
        assert "Sign out" not in found[path] and "csrfmiddlewaretoken" not in found[path], (path, found[path][:200])

    page.goto(page.url.rstrip("/") + "/phone/")
    expect(page.frame_locator(".phone iframe").get_by_role("button", name=re.compile("Dark mode"))).to_be_visible()
