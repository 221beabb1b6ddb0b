"""Android in the store, as a new user meets it after `make run`: the example Android app is offered with
its suggested ideas; alice builds one; the build (real sandbox, replayed sample conversation) gives an APK
the store signed, which `apksigner verify` accepts, and the app's web part as a web preview; the install
page offers it with a QR code on a computer and an Install button on Android, lists every version, and
links to the web part in the phone frame."""

import html
import io
import re
import shutil
import subprocess
import zipfile

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from prototypes.builds import ask_for_change, create_prototype
from prototypes.models import Artifact, Build
from prototypes.pipeline import preview_dir
from prototypes.signing import apk_signing_key
from prototypes.targets import import_example

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.usefixtures("eager_celery"),
    pytest.mark.skipif(
        any(shutil.which(t) is None for t in ("aapt", "apksigner", "zipalign", "smali", "keytool")),
        reason="needs Debian's Android tools (scripts/system-deps.sh installs them)",
    ),
]
TARGET = "field-notes-android"
ANDROID = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Mobile Safari/537.36"
)
DESKTOP = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"


@pytest.fixture
def target():
    return import_example(settings.EXAMPLES_DIR / "targets" / TARGET, settings.TARGET_REPO_ROOT)


@pytest.fixture
def built(alice, target, django_capture_on_commit_callbacks):
    """Alice's first Android prototype, built from the first suggested idea."""
    with django_capture_on_commit_callbacks(execute=True):
        build = create_prototype(owner=alice, target=target, idea="Show when each note was taken")
    build.refresh_from_db()
    assert build.state == Build.State.SUCCEEDED, (build.error_code, build.error_detail)
    return build


def href(content, element_id):
    tag = re.search(rf'<a [^>]*id="{element_id}"[^>]*>', content)
    assert tag, f"no #{element_id} link on the page"
    return html.unescape(re.search(r'href="([^"]*)"', tag.group(0)).group(1))


def framed_page(client, phone_url):
    """The page the phone frame at `phone_url` shows (its iframe's document)."""
    phone = client.get(phone_url)
    assert phone.status_code == 200
    src = re.search(r'<iframe [^>]*src="([^"]*)"', phone.content.decode()).group(1)
    response = client.get(src)
    assert response.status_code == 200, src
    body = b"".join(response.streaming_content) if response.streaming else response.content
    return body.decode()


def test_seed_registers_the_android_example_as_an_offered_target(settings):
    from django.core.management import call_command

    from prototypes.models import Target

    settings.DEMO_USERS = False
    call_command("seed", stdout=io.StringIO())
    target = Target.objects.offered().get(slug=TARGET)
    assert (target.kind, target.name, target.recipe_error) == ("android", "Field Notes (Android)", "")


def test_the_android_example_is_offered_with_its_two_suggested_ideas(client, alice, target):
    assert target.kind == "android" and target.recipe_error == ""
    client.force_login(alice)
    content = client.get("/new/").content.decode()
    for idea in ("Show when each note was taken", "Let me search my notes"):
        assert f'data-suggest-target="{TARGET}" data-suggest-idea="{idea}"' in content, idea


def test_alice_builds_an_android_prototype_and_gets_an_apk_that_apksigner_accepts(built, tmp_path):
    apk = built.artifacts.get(kind=Artifact.Kind.APK)
    checked = subprocess.run(["apksigner", "verify", "-v", apk.file.path], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    badging = subprocess.run(["aapt", "dump", "badging", apk.file.path], capture_output=True, text=True).stdout
    assert "package: name='com.example.fieldnotes' versionCode='1' versionName='1.0'" in badging
    assert "application-label:'Field Notes'" in badging
    assert apk.metadata["package"] == "com.example.fieldnotes" and apk.metadata["display_name"] == "Field Notes"
    assert apk.metadata["signed_with"] == "debug" and len(apk.metadata["signer_sha256"]) == 64
    assert apk.filename == "field-notes.apk" and apk.content_type == "application/vnd.android.package-archive"
    with zipfile.ZipFile(apk.file.path) as archive:
        assert "function formatWhen" in archive.read("assets/www/notes.js").decode()
    assert any("formatWhen" in t["name"] for t in built.verify["tests"]), built.verify


def test_the_web_part_is_stored_as_a_web_preview_of_the_same_version(built):
    web = built.artifacts.get(kind=Artifact.Kind.WEB)
    assert web.metadata["web_part_of"] == "apk"
    assert "formatWhen(note.at)" in (preview_dir(web) / "app.js").read_text()
    assert (preview_dir(web) / "index.html").exists()


def test_the_store_signs_every_version_with_the_same_key(built, alice, django_capture_on_commit_callbacks):
    prototype = built.revision.prototype
    with django_capture_on_commit_callbacks(execute=True):
        second = ask_for_change(prototype, by=alice, idea="Let me search my notes")
    second.refresh_from_db()
    assert second.state == Build.State.SUCCEEDED, (second.error_code, second.error_detail)
    first_apk, second_apk = (b.artifacts.get(kind=Artifact.Kind.APK) for b in (built, second))
    # Android installs a new version over an older one only when both carry the same signature.
    assert first_apk.metadata["signer_sha256"] == second_apk.metadata["signer_sha256"]
    assert (settings.ANDROID_DEBUG_KEY_DIR / "debug.p12").exists()


def test_on_a_computer_the_install_page_shows_a_qr_code_and_the_phone_frame(client, alice, built):
    apk = built.artifacts.get(kind=Artifact.Kind.APK)
    client.force_login(alice)
    content = client.get(f"/artifacts/{apk.pk}/install/", HTTP_USER_AGENT=DESKTOP).content.decode()
    assert f'src="/artifacts/{apk.pk}/qr.png"' in content
    assert 'id="download-apk"' not in content
    qr = client.get(f"/artifacts/{apk.pk}/qr.png")
    assert qr.status_code == 200 and qr["Content-Type"] == "image/png"
    assert "this store&#x27;s own key" in content or "this store's own key" in content
    assert "native parts (the back button" in client.get(href(content, "try-in-phone-frame")).content.decode()
    page = framed_page(client, href(content, "try-in-phone-frame"))
    assert "<title>Field Notes</title>" in page and '<script src="app.js">' in page


def test_the_prototype_page_offers_install_and_the_web_part_not_a_bare_preview(client, alice, built):
    prototype = built.revision.prototype
    client.force_login(alice)
    content = client.get(prototype.get_absolute_url()).content.decode()
    apk = built.artifacts.get(kind=Artifact.Kind.APK)
    assert f'href="/p/{prototype.slug}/artifacts/{apk.pk}/install/">Install</a>' in content
    assert href(content, "web-part") == f"/p/{prototype.slug}/phone/?version=1"
    assert ">Open preview</a>" not in content  # the web part is the app's screens, not the prototype itself


def test_on_android_the_install_button_downloads_the_signed_apk(client, alice, built):
    apk = built.artifacts.get(kind=Artifact.Kind.APK)
    client.force_login(alice)
    content = client.get(f"/artifacts/{apk.pk}/install/", HTTP_USER_AGENT=ANDROID).content.decode()
    assert "blocked by your admin" in content and "Install unknown apps" in content
    response = client.get(href(content, "download-apk"), HTTP_USER_AGENT=ANDROID)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/vnd.android.package-archive"
    assert b"".join(response.streaming_content) == open(apk.file.path, "rb").read()


def test_the_install_page_lists_every_version_with_its_own_install_page(
    client, alice, built, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        second = ask_for_change(built.revision.prototype, by=alice, idea="Let me search my notes")
    second.refresh_from_db()
    first_apk, second_apk = (b.artifacts.get(kind=Artifact.Kind.APK) for b in (built, second))
    client.force_login(alice)
    content = client.get(f"/artifacts/{second_apk.pk}/install/", HTTP_USER_AGENT=ANDROID).content.decode()
    versions = content[content.index('id="versions"') :]
    assert f'href="/artifacts/{first_apk.pk}/install/">Version 1</a>' in versions
    assert "<strong>Version 2</strong> · this page" in versions
    # Each version's phone frame shows that version's web part, not the newest one.
    older = client.get(f"/artifacts/{first_apk.pk}/install/", HTTP_USER_AGENT=DESKTOP).content.decode()
    frame = client.get(href(older, "try-in-phone-frame")).content.decode()
    app_js = client.get(re.search(r'<iframe [^>]*src="([^"]*)"', frame).group(1) + "app.js")
    script = b"".join(app_js.streaming_content).decode()
    assert "formatWhen" in script and "search" not in script, "version 1's web part, without version 2's search"


def test_a_company_keystore_from_settings_is_the_signing_key(settings, tmp_path):
    settings.ANDROID_SIGNING_KEYSTORE = str(tmp_path / "company.p12")
    settings.ANDROID_SIGNING_KEY_ALIAS = "release"
    settings.ANDROID_SIGNING_KEYSTORE_PASSWORD = "from-a-secret-file"
    key = apk_signing_key()
    assert (key.keystore, key.alias, key.store_password, key.kind) == (
        tmp_path / "company.p12", "release", "from-a-secret-file", "company",
    )  # fmt: skip
    assert "from-a-secret-file" not in repr(key)

    settings.ANDROID_SIGNING_KEY_ALIAS = ""
    with pytest.raises(ImproperlyConfigured, match="ANDROID_SIGNING_KEY_ALIAS"):
        apk_signing_key()


def test_the_company_keystore_password_can_come_from_a_file(monkeypatch, tmp_path):
    from store.settings import secret

    (tmp_path / "password").write_text("s3cret-from-file\n")
    monkeypatch.setenv("ANDROID_SIGNING_KEYSTORE_PASSWORD_FILE", str(tmp_path / "password"))
    assert secret("ANDROID_SIGNING_KEYSTORE_PASSWORD") == "s3cret-from-file"
