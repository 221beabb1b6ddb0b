"""Issue 12, as a new user finds it after `make run`: a server prototype (the notes-app example) built from a
suggested idea opens live through the store. Each person gets their own instance on demo data; someone
without access, and a preview whose access was taken away, gets the refusal page, never the app."""

import re
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import keep_screenshot, sign_in

pytestmark = pytest.mark.e2e

APP_PASSWORD = "alice-notes-2026"
ALICE_NOTE = "Buy a birthday card for Sam"
DEMO_NOTE = "Welcome! Sign up for your own account, or keep using this demo one."
PHONE = {"width": 390, "height": 844}
# What sticks out past the right edge of the screen (empty when the page does not scroll sideways).
WIDER_THAN_THE_SCREEN = """() => {
  const width = document.documentElement.clientWidth;
  if (document.documentElement.scrollWidth <= width) return [];
  return [...document.querySelectorAll("body *")].filter((e) => e.getBoundingClientRect().right > width + 1)
    .map((e) => e.tagName.toLowerCase() + (e.id ? "#" + e.id : "") + (e.className ? "." + e.className : "")
      + " " + Math.round(e.getBoundingClientRect().right) + "px").slice(0, 12);
}"""


def build_suggestion(page, base, suggestion) -> str:
    """Build a suggested idea from /new/ and return its prototype page's URL once it is Ready."""
    page.goto(base + "/new/")
    page.get_by_role("button", name=re.compile(suggestion)).click()
    page.get_by_role("button", name="Build it").click()
    expect(page).to_have_url(re.compile(r"/builds/\d+/$"))
    expect(page.locator("#progress")).to_have_attribute("data-state", "succeeded", timeout=120_000)
    page.get_by_role("link", name="Open the prototype").click()
    expect(page.locator("#open-live")).to_be_visible()
    return page.url


def open_live(page):
    """Click Open on a prototype page: the live app opens in a new page, on an origin of its own. Returns
    that page and the HTML pages it showed (the first is what the person saw before the app answered)."""
    documents = []

    def keep(response):
        if response.request.resource_type == "document" and ".localhost:" in response.url and response.status == 200:
            documents.append(response.text())  # now: a page navigated away from keeps no body

    page.context.on("response", keep)  # on the context: the new page's first answer comes before it is handed over
    with page.context.expect_page() as opened:
        page.locator("#open-live").click()
    live = opened.value
    live.wait_for_load_state()
    page.context.remove_listener("response", keep)
    return live, documents


def test_a_server_prototype_opens_live_for_each_person_and_never_without_access(live_store, browser, page):
    sign_in(page, live_store, "alice")
    prototype_url = build_suggestion(page, live_store, "Pin a note to the top")
    expect(page.locator("#open-live")).to_have_text("Open")

    # Alice clicks Open: the Starting page, then her own fresh instance of the app.
    alice, documents = open_live(page)
    live_origin = "{0.scheme}://{0.netloc}".format(urlsplit(alice.url))
    assert re.fullmatch(r"http://[a-z0-9]{20}\.localhost:\d+", live_origin), live_origin
    expect(alice.get_by_role("heading", name="Sign in")).to_be_visible(timeout=30_000)
    assert documents and "Starting Pin a note to the top" in documents[0], "the Starting page did not come first"
    assert "demo-notes" in alice.content()  # the recipe's seed ran: the demo account is offered

    alice.get_by_role("link", name="Create an account").click()
    alice.get_by_label("Username").fill("alice")
    alice.get_by_label("Password").fill(APP_PASSWORD)
    alice.get_by_role("button", name="Sign up").click()
    expect(alice.get_by_role("heading", name="Your notes")).to_be_visible()
    alice.get_by_label("New note").fill(ALICE_NOTE)
    alice.get_by_role("button", name="Add note").click()
    note = alice.locator("li.note", has_text=ALICE_NOTE)
    expect(note).to_be_visible()
    alice.get_by_label("New note").fill("Water the plants")
    alice.get_by_role("button", name="Add note").click()
    expect(alice.locator("li.note").first).to_contain_text("Water the plants")  # newest first
    # The idea she built: pin a note and it goes first, with a badge.
    note.get_by_role("button", name="Pin to top").click()
    expect(alice.locator("li.note").first).to_contain_text(ALICE_NOTE)
    expect(alice.locator("li.note").first).to_contain_text("Pinned")
    keep_screenshot(alice, "live-preview")

    # Bob, a colleague, opens the same version: his own instance, with the demo data, not Alice's notes.
    bob_context = browser.new_context(viewport={"width": 1280, "height": 900})
    bob_store = bob_context.new_page()
    sign_in(bob_store, live_store, "bob")
    bob_store.goto(prototype_url)
    bob, _ = open_live(bob_store)
    expect(bob.get_by_role("heading", name="Sign in")).to_be_visible(timeout=30_000)
    assert not bob.url.startswith(live_origin), "Bob got Alice's instance"
    bob.get_by_label("Username").fill("alice")  # Alice's account lives in her instance only
    bob.get_by_label("Password").fill(APP_PASSWORD)
    bob.get_by_role("button", name="Sign in").click()
    expect(bob.get_by_role("alert")).to_be_visible()
    bob.get_by_label("Username").fill("demo")
    bob.get_by_label("Password").fill("demo-notes")
    bob.get_by_role("button", name="Sign in").click()
    expect(bob.get_by_text(DEMO_NOTE)).to_be_visible()
    expect(bob.locator("li.note")).to_have_count(4)
    expect(bob.get_by_text(ALICE_NOTE)).to_have_count(0)
    bob_url = bob.url

    # Alice makes the prototype private: from the next request on, Bob's open preview is refused (his
    # preview cookie is set, but the person it names may no longer see the version).
    page.goto(prototype_url)
    page.get_by_role("link", name="Edit").click()
    page.get_by_label("Who can see it").select_option("private")
    page.get_by_role("button", name=re.compile("Save")).click()
    expect(page.locator(".crumbs")).to_contain_text("Only me")
    response = bob.goto(bob_url)
    assert response.status == 403, f"Bob's live preview answered {response.status} after access was taken away"
    expect(bob.get_by_role("heading", name="You cannot open this preview")).to_be_visible()
    expect(bob.get_by_text(DEMO_NOTE)).to_have_count(0)
    bob_context.close()
    # Alice, its owner, still has hers: the refusal was about access, not a broken proxy.
    alice.reload()
    expect(alice.locator("li.note").first).to_contain_text(ALICE_NOTE)

    # Carol cannot reach it: not its page in the store, not the address of Alice's live app (what Alice's
    # address bar shows) pasted into her browser. (Open is minted by the store on the click, and the
    # proxy takes that link for two minutes only: tests/test_live_proxy.py checks an old one.)
    carol_context = browser.new_context(viewport={"width": 1280, "height": 900})
    carol = carol_context.new_page()
    sign_in(carol, live_store, "carol")
    assert carol.goto(prototype_url).status == 404
    expect(carol.locator("#open-live")).to_have_count(0)
    for path in ("/", "/api/notes", "/__preview/status"):
        response = carol.goto(live_origin + path)
        assert response.status == 403, f"{path} on Alice's live origin answered {response.status} for Carol"
        expect(carol.get_by_role("heading", name="You cannot open this preview")).to_be_visible()
        assert ALICE_NOTE not in carol.content()
    carol_context.close()


def test_open_and_the_starting_page_fit_a_phone(live_store, browser):
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    page = context.new_page()
    sign_in(page, live_store, "alice")
    build_suggestion(page, live_store, "How many notes I have")
    page.locator("#open-live").scroll_into_view_if_needed()
    box = page.locator("#open-live").bounding_box()
    assert box and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], f"Open is off screen: {box}"
    assert page.evaluate(WIDER_THAN_THE_SCREEN) == [], "the prototype page scrolls sideways on a phone"

    # Hold the Starting page (its status poll keeps answering "starting") to look at it, then let it go.
    context.route("**/__preview/status", lambda route: route.fulfill(json={"state": "starting"}))
    live, _ = open_live(page)
    expect(live.get_by_role("heading", name=re.compile("Starting How many notes I have"))).to_be_visible()
    assert live.evaluate(WIDER_THAN_THE_SCREEN) == [], "the Starting page scrolls sideways on a phone"
    context.unroute("**/__preview/status")
    expect(live.get_by_role("heading", name="Sign in")).to_be_visible(timeout=30_000)
    assert live.evaluate(WIDER_THAN_THE_SCREEN) == [], "the app's sign-in page scrolls sideways on a phone"
    context.close()


def test_a_frontend_prototype_shows_data_from_its_live_backend(live_store, page):
    # web-player names podcast-api as its backend: Open starts the player's server and podcast-api's main
    # branch (built as a baseline on first use) in one private preview network, and the page lists the
    # episodes the real backend serves.
    sign_in(page, live_store, "alice")
    build_suggestion(page, live_store, "Total playlist duration")
    expect(page.locator("#pairings")).to_contain_text("Podcast API")
    player, documents = open_live(page)
    expect(player.get_by_role("heading", name="Podcast episodes")).to_be_visible(timeout=120_000)
    expect(player.locator("#episode-list li").first).to_be_visible()
    expect(player.get_by_text("Code Review Without Tears")).to_be_visible()
    assert documents and "Starting" in documents[0], "the Starting page did not come first"
    # The sample's own change is in the running version too: it is this prototype, not the original.
    expect(player.get_by_text(re.compile(r"[Tt]otal"))).to_be_visible()
