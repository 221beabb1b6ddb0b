"""Install pages: the right button for each device, a manifest iOS accepts, a QR code that opens the
page, counted downloads — and the same answer from every route for people who may not see the app."""

import base64
import html
import io
import plistlib
import re
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from django.core.files.base import ContentFile
from django.test import Client
from PIL import Image

from prototypes.models import Artifact, Build, Prototype, Revision, Target
from store import install
from store.models import Visit

pytestmark = pytest.mark.django_db

SITE = "https://store.example.com"
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Mobile/15E148 Safari/604.1"
)
IPHONE_SLACK = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148"
)
IPAD_DESKTOP_MODE = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Safari/605.1.15"
)
ANDROID = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Mobile Safari/537.36"
)
WINDOWS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
)
IPA_META = {"bundle_id": "com.example.player", "version": "1.4", "build": "57", "min_os": "16.0",
            "display_name": "Player"}  # fmt: skip
APK_META = {"package": "com.example.player", "version_name": "1.4", "version_code": 57, "min_sdk": 26}


@pytest.fixture(autouse=True)
def https_site(settings):
    settings.SITE_URL = SITE


def make_app(owner, *, kind="ipa", metadata=None, filename=None, visibility="company", listing="listed",
             slug="timer", revision=None):  # fmt: skip
    """A prototype with one successful build holding one artifact of `kind`; pass `revision` to add
    another build to an existing revision."""
    if revision is None:
        target_kind = {"ipa": "ios", "apk": "android"}.get(kind, "backend")
        target, _ = Target.objects.get_or_create(slug=f"app-{target_kind}", defaults={
            "name": f"App ({target_kind})", "kind": target_kind, "git_url": "/nowhere"})  # fmt: skip
        prototype = Prototype.objects.create(slug=slug, title="Sleep timer", owner=owner, target=target,
                                             visibility=visibility, listing=listing)  # fmt: skip
        revision = Revision.objects.create(prototype=prototype, number=1, prompt="Add a sleep timer", author=owner,
                                           summary="Adds a sleep timer to the player.", result_commit="a1b2c3d4e5f6")  # fmt: skip
    build = Build.objects.create(revision=revision, attempt=revision.builds.count() + 1)
    for state in ["preparing", "running", "verifying", "packaging", "succeeded"]:
        assert build.move(state)
    filename = filename or {"ipa": "Player.ipa", "apk": "player.apk", "pyz": "api.pyz"}.get(kind, "api.whl")
    data = b"PK\x03\x04 not really an app"
    artifact = Artifact(build=build, kind=kind, filename=filename, size=len(data), sha256="0" * 64,
                        content_type="application/octet-stream", metadata=metadata if metadata is not None else {})  # fmt: skip
    artifact.file.save(filename, ContentFile(data), save=True)
    revision.prototype.current_revision = revision
    revision.prototype.save()
    return artifact


def urls(artifact):
    base = f"/artifacts/{artifact.pk}/"
    return {
        "page": base + "install/",
        "manifest": base + "manifest.plist",
        "qr": base + "qr.png",
        "file": base + f"file/{artifact.filename}",
        "icon": base + "icon-57.png",
    }


def page(client, artifact, user_agent):
    response = client.get(urls(artifact)["page"], HTTP_USER_AGENT=user_agent)
    assert response.status_code == 200
    return response.content.decode()


def href(content, element_id):
    tag = re.search(rf'<a [^>]*id="{element_id}"[^>]*>', content)
    match = tag and re.search(r'href="([^"]*)"', tag.group(0))
    assert match, f"no #{element_id} link on the page"
    return html.unescape(match.group(1))


def png_base64(size=1024):
    buffer = io.BytesIO()
    Image.new("RGBA", (size, size), (79, 70, 229, 255)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def device():
    """A phone fetching on its own: no session cookie."""
    return Client()


@pytest.mark.parametrize(
    "user_agent, expected",
    [(IPHONE, "ios"), (IPHONE_SLACK, "ios"), (ANDROID, "android"), (IPAD_DESKTOP_MODE, "mac"), (WINDOWS, "desktop"),
     ("", "desktop")],
)  # fmt: skip
def test_it_tells_phones_from_computers_by_their_user_agent(user_agent, expected):
    assert install.detect_device(user_agent) == expected


def test_an_iphone_gets_an_install_button_with_a_url_encoded_manifest_link(client, alice):
    artifact = make_app(alice, metadata=IPA_META)
    client.force_login(alice)
    content = page(client, artifact, IPHONE)
    link = href(content, "install-ios")
    prefix = "itms-services://?action=download-manifest&url="
    assert link.startswith(prefix)
    encoded = link.removeprefix(prefix)
    # Encoded whole: the manifest URL's own "?" and "&" cannot be mistaken for the link's.
    assert not set(":/?&=") & set(encoded)
    manifest_url = unquote(encoded)
    assert manifest_url.startswith(f"{SITE}/artifacts/{artifact.pk}/manifest.plist?t=")
    assert 'id="qr"' not in content and "qr.png" not in content
    assert "Open this page in <strong>Safari</strong>" in content  # the troubleshooting notes


def test_the_manifest_names_the_app_by_its_build_number_and_points_to_https_urls(client, alice):
    artifact = make_app(alice, metadata=IPA_META)
    client.force_login(alice)
    response = client.get(urls(artifact)["manifest"])
    assert response.status_code == 200 and response["Content-Type"] == "text/xml"
    (item,) = plistlib.loads(response.content)["items"]
    assert item["metadata"] == {"bundle-identifier": "com.example.player", "bundle-version": "57",
                                "kind": "software", "title": "Sleep timer"}  # fmt: skip
    (asset,) = item["assets"]
    assert asset["kind"] == "software-package"
    assert asset["url"].startswith(f"{SITE}/artifacts/{artifact.pk}/file/Player.ipa?t=")


def test_the_bundle_version_falls_back_to_the_marketing_version(client, alice):
    artifact = make_app(alice, metadata={"bundle_id": "com.example.player", "version": "1.4"})
    client.force_login(alice)
    (item,) = plistlib.loads(client.get(urls(artifact)["manifest"]).content)["items"]
    assert item["metadata"]["bundle-version"] == "1.4"


def test_a_phone_without_a_session_follows_the_link_to_the_manifest_and_the_app(client, alice):
    """iOS fetches the manifest and the .ipa itself, without Safari's cookies: the install token in
    the URLs carries the access, and the download is counted for the person who was shown the page."""
    artifact = make_app(alice, metadata=IPA_META)
    client.force_login(alice)
    manifest_url = unquote(href(page(client, artifact, IPHONE), "install-ios").split("url=", 1)[1])
    phone = device()
    response = phone.get(manifest_url.removeprefix(SITE))
    assert response.status_code == 200
    ipa_url = plistlib.loads(response.content)["items"][0]["assets"][0]["url"]
    download = phone.get(ipa_url.removeprefix(SITE))
    assert download.status_code == 200 and download["Content-Type"] == "application/octet-stream"
    assert b"".join(download.streaming_content) == b"PK\x03\x04 not really an app"
    visit = Visit.objects.get()
    assert (visit.kind, visit.user, visit.revision) == ("download", alice, artifact.build.revision)
    # Without the token, the same URLs give nothing away.
    assert phone.get(urls(artifact)["manifest"]).status_code == 404
    assert phone.get(urls(artifact)["file"]).status_code == 404


def test_the_manifest_offers_the_icon_when_the_app_has_one(client, alice):
    artifact = make_app(alice, metadata={**IPA_META, "icon": png_base64()})
    client.force_login(alice)
    assets = plistlib.loads(client.get(urls(artifact)["manifest"]).content)["items"][0]["assets"]
    images = {a["kind"]: a["url"] for a in assets if a["kind"] != "software-package"}
    assert set(images) == {"display-image", "full-size-image"}
    assert all(url.startswith(f"{SITE}/artifacts/{artifact.pk}/icon-") for url in images.values())
    for url, size in [(images["display-image"], 57), (images["full-size-image"], 512)]:
        response = device().get(url.removeprefix(SITE))
        assert response.status_code == 200 and response["Content-Type"] == "image/png"
        assert Image.open(io.BytesIO(response.content)).size == (size, size)
    assert '<img class="app-icon"' in page(client, artifact, IPHONE)


def test_an_app_without_an_icon_gets_a_letter_tile_and_a_manifest_without_images(client, alice):
    artifact = make_app(alice, metadata={**IPA_META, "icon": "not base64 at all!"})
    client.force_login(alice)
    assets = plistlib.loads(client.get(urls(artifact)["manifest"]).content)["items"][0]["assets"]
    assert [a["kind"] for a in assets] == ["software-package"]
    assert 'app-icon tile kind-ipa" aria-hidden="true">S<' in page(client, artifact, IPHONE)
    assert client.get(urls(artifact)["icon"]).status_code == 404


def test_a_store_not_served_over_https_explains_instead_of_offering_install(client, alice, settings):
    settings.SITE_URL = "http://127.0.0.1:8000"
    artifact = make_app(alice, metadata=IPA_META)
    client.force_login(alice)
    content = page(client, artifact, IPHONE)
    assert "itms-services" not in content and 'id="install-ios"' not in content
    assert "needs the store to be served over HTTPS" in content
    assert client.get(urls(artifact)["manifest"]).status_code == 404


def test_an_ipa_without_a_bundle_id_cannot_be_installed_over_the_air(client, alice):
    artifact = make_app(alice, metadata={"version": "1.4"})
    client.force_login(alice)
    content = page(client, artifact, IPHONE)
    assert "itms-services" not in content and "bundle identifier" in content
    assert client.get(urls(artifact)["manifest"]).status_code == 404


def test_an_ipad_in_desktop_mode_gets_both_the_install_button_and_the_qr_code(client, alice):
    artifact = make_app(alice, metadata=IPA_META)
    client.force_login(alice)
    content = page(client, artifact, IPAD_DESKTOP_MODE)
    assert href(content, "install-ios").startswith("itms-services://")
    assert f'src="/artifacts/{artifact.pk}/qr.png"' in content


def test_a_chat_apps_browser_is_asked_to_open_the_page_in_safari(client, alice):
    artifact = make_app(alice, metadata=IPA_META)
    client.force_login(alice)
    assert "If nothing happens, open this page in <strong>Safari</strong>" in page(client, artifact, IPHONE_SLACK)
    assert "If nothing happens" not in page(client, artifact, IPHONE)


def test_an_android_phone_downloads_the_apk_as_an_android_package(client, alice):
    artifact = make_app(alice, kind="apk", metadata=APK_META)
    client.force_login(alice)
    content = page(client, artifact, ANDROID)
    link = href(content, "download-apk")
    assert link.startswith(f"/artifacts/{artifact.pk}/file/player.apk?t=")
    assert "Install unknown apps" in content and "itms-services" not in content
    response = client.get(link)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/vnd.android.package-archive"
    assert response["Content-Disposition"] == 'attachment; filename="player.apk"'
    assert response["X-Content-Type-Options"] == "nosniff"
    assert Visit.objects.filter(kind="download", user=alice, revision=artifact.build.revision).count() == 1


def test_an_app_bundle_is_not_offered_for_install(client, alice):
    artifact = make_app(alice, kind="apk", filename="player.aab", metadata=APK_META)
    client.force_login(alice)
    content = page(client, artifact, ANDROID)
    assert 'id="download-apk"' not in content and "cannot install app bundles" in content


def test_a_computer_gets_a_qr_code_of_the_install_page_and_a_direct_download(client, alice):
    artifact = make_app(alice, kind="apk", metadata=APK_META)
    client.force_login(alice)
    content = page(client, artifact, WINDOWS)
    assert f'src="/artifacts/{artifact.pk}/qr.png"' in content
    assert href(content, "direct-download") == f"/artifacts/{artifact.pk}/file/player.apk"
    assert 'id="download-apk"' not in content and 'id="install-ios"' not in content


def test_the_qr_code_opens_the_install_page_not_the_file(client, alice):
    artifact = make_app(alice, kind="apk", metadata=APK_META)
    payload = install.qr_payload(artifact, base_url=f"/artifacts/{artifact.pk}/")
    assert payload == f"{SITE}/artifacts/{artifact.pk}/install/"
    client.force_login(alice)
    response = client.get(urls(artifact)["qr"])
    assert response.status_code == 200 and response["Content-Type"] == "image/png"
    # qrcode's output is deterministic: the view's image is the one for exactly the install page URL.
    assert response.content == install.qr_png(payload)
    assert response.content != install.qr_png(f"{SITE}/artifacts/{artifact.pk}/file/player.apk")
    image = Image.open(io.BytesIO(response.content))
    assert image.format == "PNG" and image.size[0] == image.size[1] > 100


def test_the_page_shows_what_was_built_by_whom_and_for_which_system(client, alice):
    artifact = make_app(alice, kind="apk", metadata=APK_META)
    client.force_login(alice)
    content = page(client, artifact, ANDROID)
    for expected in ["1.4 (build 57)", "Android 8.0 (API 26) or later", "com.example.player", "Alice",
                     ">a1b2c3d<", "Adds a sleep timer to the player.", "Add a sleep timer"]:  # fmt: skip
        assert expected in content


def test_missing_metadata_shows_only_what_is_known(client, alice):
    artifact = make_app(alice, metadata={})
    client.force_login(alice)
    content = page(client, artifact, WINDOWS)
    assert "App version" not in content and "Needs" not in content and "Sleep timer" in content


def test_a_backend_package_is_a_download_with_the_command_to_run_it(client, alice):
    pyz = make_app(alice, kind="pyz", metadata={"run": "python3 api.pyz"})
    wheel = make_app(alice, kind="wheel", filename="api-0.1-py3-none-any.whl", slug="wheel")
    client.force_login(alice)
    content = page(client, pyz, WINDOWS)
    assert href(content, "download") == f"/artifacts/{pyz.pk}/file/api.pyz"
    assert "<pre>python3 api.pyz</pre>" in content and "qr.png" not in content
    assert "<pre>python3 -m pip install ./api-0.1-py3-none-any.whl</pre>" in page(client, wheel, WINDOWS)
    response = client.get(urls(pyz)["file"])
    assert response["Content-Disposition"] == 'attachment; filename="api.pyz"'


def test_download_instructions_follow_how_the_version_starts_and_name_its_runtime(client, alice):
    node = make_app(alice, kind="archive", filename="player.tar.gz", slug="node",
                    metadata={"serve": {"command": "node server.mjs", "port": 8080}})  # fmt: skip
    notes = make_app(alice, kind="pyz", filename="notes-app.pyz", slug="notes",
                     metadata={"serve": {"command": "python3 notes-app.pyz --port 8080 --data data", "port": 8080}})  # fmt: skip
    bare = make_app(alice, kind="archive", filename="site.zip", slug="bare")
    client.force_login(alice)
    content = page(client, node, WINDOWS)
    assert (
        "<pre>mkdir player &amp;&amp; tar xzf player.tar.gz -C player\ncd player &amp;&amp; node server.mjs</pre>"
        in content
    )
    assert "with Node.js 20 or newer" in content and "Python" not in content
    content = page(client, notes, WINDOWS)
    assert "<pre>python3 notes-app.pyz --port 8080 --data data</pre>" in content and "with Python 3.11" in content
    content = page(client, bare, WINDOWS)
    assert "<pre>unzip site.zip -d site</pre>" in content and "Then run it:" in content


def test_an_older_build_points_to_the_newer_one(client, alice):
    older = make_app(alice, kind="apk", metadata=APK_META)
    newer = make_app(alice, kind="apk", metadata=APK_META, revision=older.build.revision)
    client.force_login(alice)
    content = page(client, older, ANDROID)
    assert "A newer build exists" in content and f'href="/artifacts/{newer.pk}/install/"' in content
    assert "A newer build exists" not in page(client, newer, ANDROID)


def test_a_build_of_a_version_that_is_not_current_is_not_nagged_by_an_older_current_one(client, alice):
    first = make_app(alice, kind="apk", metadata=APK_META)
    revision = first.build.revision
    second_revision = Revision.objects.create(prototype=revision.prototype, number=2, prompt="More", author=alice)
    second = make_app(alice, kind="apk", metadata=APK_META, revision=second_revision)
    # The owner made version 1 current again: version 2's newer build has no newer build to point to.
    Prototype.objects.filter(pk=revision.prototype_id).update(current_revision=revision)
    client.force_login(alice)
    assert "A newer build exists" not in page(client, second, ANDROID)
    assert "A newer build exists" not in page(client, first, ANDROID)


def test_someone_who_cannot_see_the_prototype_gets_the_same_404_from_every_route(client, alice, bob, carol):
    artifact = make_app(alice, metadata={**IPA_META, "icon": png_base64(64)}, visibility="private")
    routes = [*urls(artifact).values(), f"/artifacts/{artifact.pk}/download/"]
    for person in (bob, carol):
        client.force_login(person)
        assert [client.get(url, HTTP_USER_AGENT=IPHONE).status_code for url in routes] == [404] * len(routes)
    client.force_login(alice)
    assert [client.get(url, HTTP_USER_AGENT=IPHONE).status_code for url in routes] == [200] * len(routes)
    assert Visit.objects.filter(user__in=[bob, carol]).count() == 0


def test_a_signed_out_visitor_is_asked_to_sign_in_and_gets_nothing_else(alice):
    artifact = make_app(alice, metadata=IPA_META)
    visitor = device()
    response = visitor.get(urls(artifact)["page"])
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    assert visitor.get(urls(artifact)["qr"]).status_code == 302
    for url in [urls(artifact)["manifest"], urls(artifact)["file"], urls(artifact)["icon"]]:
        assert visitor.get(url).status_code == 404


def test_an_install_token_stops_working_when_its_holder_loses_access(client, alice, bob):
    artifact = make_app(alice, metadata=IPA_META)
    client.force_login(bob)
    manifest_url = unquote(href(page(client, artifact, IPHONE), "install-ios").split("url=", 1)[1])
    assert device().get(manifest_url.removeprefix(SITE)).status_code == 200
    Prototype.objects.filter(pk=artifact.build.revision.prototype_id).update(visibility="private")
    assert device().get(manifest_url.removeprefix(SITE)).status_code == 404


def test_an_install_token_opens_only_its_own_artifact(alice):
    first = make_app(alice, metadata=IPA_META)
    second = make_app(alice, metadata=IPA_META, slug="other")
    token = install.install_token(first, alice)
    assert device().get(urls(first)["manifest"], {"t": token}).status_code == 200
    assert device().get(urls(second)["manifest"], {"t": token}).status_code == 404
    assert device().get(urls(first)["manifest"], {"t": token + "x"}).status_code == 404


def test_artifacts_of_builds_that_did_not_succeed_are_not_offered(client, alice):
    artifact = make_app(alice, metadata=IPA_META)
    Build.objects.filter(pk=artifact.build_id).update(state=Build.State.FAILED)
    client.force_login(alice)
    assert client.get(urls(artifact)["page"]).status_code == 404
    assert client.get(urls(artifact)["file"]).status_code == 404


def test_the_manifest_url_in_the_install_link_keeps_its_token_intact(client, alice):
    artifact = make_app(alice, metadata=IPA_META)
    client.force_login(alice)
    link = href(page(client, artifact, IPHONE), "install-ios")
    query = parse_qs(urlsplit(link.replace("itms-services://", "https://x/")).query)
    assert set(query) == {"action", "url"}
    assert install.user_for_token(parse_qs(urlsplit(query["url"][0]).query)["t"][0], artifact.pk) == alice
