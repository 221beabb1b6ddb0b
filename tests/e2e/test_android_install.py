"""An Android prototype from a suggested idea, installed the way a person does it on a phone: at a phone's
viewport with an Android browser, alice builds it, opens its install page, gets the Install button and
the help for a blocked "install unknown apps", downloads an APK that `apksigner verify` accepts, and
tries the app's web part in the phone frame; on a computer the same page shows a QR code."""

import re
import subprocess

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import keep_screenshot, sign_in

pytestmark = pytest.mark.e2e
PIXEL = {
    "viewport": {"width": 412, "height": 915},
    "device_scale_factor": 2.625,
    "is_mobile": True,
    "has_touch": True,
    "user_agent": (
        "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/124.0.0.0 Mobile Safari/537.36"
    ),
}


@pytest.fixture
def phone(browser, request):
    context = browser.new_context(accept_downloads=True, **PIXEL)
    page = context.new_page()
    yield page
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        from tests.e2e.conftest import RESULTS

        RESULTS.mkdir(exist_ok=True)
        page.screenshot(path=str(RESULTS / f"{request.node.name}-phone.png"), full_page=True)
    context.close()


def test_alice_installs_her_android_prototype_from_a_phone(live_store, phone, page, tmp_path):
    sign_in(phone, live_store, "alice")
    phone.goto(live_store + "/new/")
    phone.get_by_role("button", name=re.compile("When each note was taken")).click()
    expect(phone.locator("textarea[name=idea]")).to_have_value("Show when each note was taken")
    phone.get_by_role("button", name="Build it").click()
    expect(phone).to_have_url(re.compile(r"/builds/\d+/$"))
    expect(phone.locator("#progress")).to_have_attribute("data-state", "succeeded", timeout=120_000)

    phone.get_by_role("link", name="Open the prototype").click()
    phone.get_by_role("link", name="Install", exact=True).click()
    expect(phone.get_by_role("heading", name="Field Notes")).to_be_visible()
    install = phone.locator("#download-apk")
    expect(install).to_be_visible()
    expect(phone.locator("img[alt^='QR code']")).to_have_count(0)  # a phone gets the button, not a code
    expect(phone.locator("#android-help")).to_have_attribute("open", "")
    expect(phone.get_by_text("is greyed out or says it is blocked by your admin")).to_be_visible()
    fits = phone.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    assert fits, "the install page scrolls sideways on a phone"
    keep_screenshot(phone, "install-android")

    with phone.expect_download() as started:
        install.click()
    download = started.value
    assert download.suggested_filename == "field-notes.apk"
    apk = tmp_path / "field-notes.apk"
    download.save_as(apk)
    checked = subprocess.run(["apksigner", "verify", "-v", str(apk)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    # No Android phone at hand: the app's screens in the phone frame, with the change in them.
    install_url = phone.url
    phone.get_by_role("link", name="Try it in the browser").click()
    app = phone.frame_locator(".phone iframe")
    # The app has drawn its (empty) list, so its scripts are running and "Add note" is theirs to handle:
    # clicked any sooner, on a busy machine, the form would be sent as a plain page load and lose the note.
    expect(app.locator("#note-count")).to_have_text("0 notes")
    app.locator("#text").fill("A heron by the pond")
    app.locator("#place").fill("the north meadow")
    app.get_by_role("button", name="Add note").click()
    expect(app.locator("#notes li")).to_have_count(1)
    expect(app.locator("#notes li time.when")).to_have_text(re.compile(r"^\d{1,2} [A-Z][a-z]{2} \d{4}, \d\d:\d\d$"))
    expect(app.locator("#note-count")).to_have_text("1 note")

    # On a computer, the same page offers a QR code that opens it on the phone.
    sign_in(page, live_store, "alice")
    page.goto(install_url)
    qr = page.locator("img[alt^='QR code']")
    expect(qr).to_be_visible()
    assert page.evaluate("img => img.naturalWidth", qr.element_handle()) > 100
    expect(page.locator("#download-apk")).to_have_count(0)
    expect(page.locator("#direct-download")).to_have_text("Or download field-notes.apk")
