"""Iterating: follow-ups built on the previous version, remixes that leave the original alone,
choosing the current version, the code changes page, image attachments and notifications."""

import io
import json
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from django.conf import settings
from django.core import mail
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from agents import workspace as git
from prototypes import builds
from prototypes.models import Build, Prototype
from prototypes.pipeline import build_spec
from prototypes.targets import import_example

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("eager_celery")]


@pytest.fixture
def web_player():
    return import_example(settings.EXAMPLES_DIR / "targets" / "web-player", settings.TARGET_REPO_ROOT)


def run(capture, action, *args, **kwargs) -> Build:
    with capture(execute=True):
        build = action(*args, **kwargs)
    build.refresh_from_db()
    assert build.state == Build.State.SUCCEEDED, (build.error_code, build.error_detail)
    return build


def bundle_page(build) -> str:
    with zipfile.ZipFile(build.artifacts.get(kind="web").file.path) as bundle:
        return bundle.read("index.html").decode() + bundle.read("app.js").decode()


def png(width=40, height=30, color=(200, 60, 90)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, "PNG")
    return out.getvalue()


@pytest.fixture
def dark_mode(alice, web_player, django_capture_on_commit_callbacks):
    return run(django_capture_on_commit_callbacks, builds.create_prototype, owner=alice, target=web_player,
               idea="Add a dark mode toggle")  # fmt: skip


def test_a_follow_up_is_built_on_top_of_the_previous_version_and_keeps_its_change(
    alice, dark_mode, django_capture_on_commit_callbacks
):
    prototype = dark_mode.revision.prototype
    prototype.refresh_from_db()
    second = run(django_capture_on_commit_callbacks, builds.ask_for_change, prototype, by=alice,
                 idea="Show the total playlist duration")  # fmt: skip

    revision = second.revision
    assert revision.number == 2 and revision.parent == dark_mode.revision
    page = bundle_page(second)
    assert "Dark mode" in page  # the first change is still there
    assert "Total" in page  # and the new one is added
    mirror = settings.MIRROR_ROOT / "web-player.git"
    parent_of_second = git.git("rev-parse", f"{revision.result_commit}^", git_dir=mirror).strip()
    assert parent_of_second == dark_mode.revision.result_commit
    assert "src/theme.js" not in [f["path"] for f in revision.diffstat["files"]]  # only this version's change
    prototype.refresh_from_db()
    assert prototype.current_revision == revision
    spec = build_spec(second)
    assert [p.prompt for p in spec.history] == ["Add a dark mode toggle"]


def test_a_follow_up_waits_for_a_first_version_and_is_for_the_owner_only(alice, bob, web_player, dark_mode):
    prototype = dark_mode.revision.prototype
    with pytest.raises(builds.NotAllowed, match="owner"):
        builds.ask_for_change(prototype, by=bob, idea="Make it pink")
    fresh = Prototype.objects.create(slug="fresh", title="Fresh", owner=alice, target=web_player)
    with pytest.raises(builds.NotAllowed, match="first version"):
        builds.ask_for_change(fresh, by=alice, idea="Make it pink")


def test_a_remix_starts_from_the_revision_and_never_changes_the_original(
    alice, bob, dark_mode, django_capture_on_commit_callbacks
):
    original = dark_mode.revision
    before = (original.result_commit, list(original.builds.values_list("pk", "state")),
              list(dark_mode.artifacts.values_list("sha256", flat=True)))  # fmt: skip
    mirror = settings.MIRROR_ROOT / "web-player.git"
    ref_before = git.resolve(mirror, original.result_ref)

    remixed = run(django_capture_on_commit_callbacks, builds.remix, original, by=bob,
                  idea="Show the total playlist duration")  # fmt: skip

    mine = remixed.revision.prototype
    assert mine.owner == bob and mine.forked_from == original and mine != original.prototype
    page = bundle_page(remixed)
    assert "Dark mode" in page and "Total" in page
    original.refresh_from_db()
    after = (original.result_commit, list(original.builds.values_list("pk", "state")),
             list(dark_mode.artifacts.values_list("sha256", flat=True)))  # fmt: skip
    assert after == before
    assert git.resolve(mirror, original.result_ref) == ref_before
    assert git.resolve(mirror, remixed.revision.result_ref) == remixed.revision.result_commit
    original.prototype.refresh_from_db()
    assert original.prototype.current_revision == original


def test_nobody_can_remix_what_they_cannot_see(bob, dark_mode):
    prototype = dark_mode.revision.prototype
    prototype.visibility = Prototype.Visibility.PRIVATE
    prototype.save()
    with pytest.raises(builds.NotAllowed, match="cannot see"):  # bob is a maker: only seeing stops him
        builds.remix(dark_mode.revision, by=bob, idea="Mine now")


def test_make_current_restores_an_earlier_version(client, alice, dark_mode, django_capture_on_commit_callbacks):
    prototype = dark_mode.revision.prototype
    prototype.refresh_from_db()
    run(django_capture_on_commit_callbacks, builds.ask_for_change, prototype, by=alice,
        idea="Show the total playlist duration")  # fmt: skip
    client.force_login(alice)
    response = client.post(f"/p/{prototype.slug}/v/1/make-current/")
    assert response.status_code == 302
    prototype.refresh_from_db()
    assert prototype.current_revision.number == 1
    assert prototype.revisions.count() == 2  # nothing was lost


def test_the_changes_page_shows_highlighted_diffs_and_offers_the_patch(client, bob, dark_mode):
    prototype = dark_mode.revision.prototype
    client.force_login(bob)
    page = client.get(f"/p/{prototype.slug}/v/1/changes/").content.decode()
    assert "src/theme.js" in page and "tests/theme.test.mjs" in page
    assert 'class="add"' in page
    assert '<span class="k' in page  # Pygments marked up the JavaScript keywords
    patch = client.get(f"/p/{prototype.slug}/v/1/patch/")
    assert patch["Content-Disposition"].startswith("attachment;")
    body = b"".join(patch.streaming_content).decode()
    assert body.startswith("diff --git") and "+++ b/src/theme.js" in body


def test_a_mockup_is_kept_shown_and_passed_to_the_agent(client, alice, web_player):
    client.force_login(alice)
    upload = SimpleUploadedFile("mockup.png", png(), content_type="image/png")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("prototypes.builds._enqueue", lambda build: None)
        response = client.post("/new/", {"target": web_player.pk, "idea": "Make it look like this", "title": "",
                                         "visibility": "company", "images": [upload]})  # fmt: skip
    assert response.status_code == 302, response.content.decode()[:2000]
    build = Build.objects.get()
    image = build.revision.attachments.get()
    assert (image.media_type, image.width, image.height) == ("image/png", 40, 30)
    spec = build_spec(build)
    assert [a.media_type for a in spec.attachments] == ["image/png"]
    assert spec.attachments[0].path.read_bytes() == png()
    shown = client.get(f"/attachments/{image.pk}/")
    assert shown["Content-Type"] == "image/png"


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("notes.png", b"this is not an image", "not an image we can read"),
        ("huge.png", None, "megapixels"),
        ("big.png", b"\x89PNG" + b"0" * (5 * 1024 * 1024 + 1), "larger than 5 MB"),
        ("icon.bmp", None, "BMP image"),
    ],
)
def test_bad_attachments_are_refused_clearly_and_the_words_are_kept(client, alice, web_player, name, data, message):
    if name == "huge.png":
        out = io.BytesIO()
        Image.new("1", (6000, 6000)).save(out, "PNG")  # small file, 36 megapixels
        data = out.getvalue()
    if name == "icon.bmp":
        out = io.BytesIO()
        Image.new("RGB", (10, 10)).save(out, "BMP")
        data = out.getvalue()
    client.force_login(alice)
    upload = SimpleUploadedFile(name, data, content_type="image/png")
    response = client.post("/new/", {"target": web_player.pk, "idea": "Keep these words", "title": "",
                                     "visibility": "company", "images": [upload]})  # fmt: skip
    page = response.content.decode()
    assert response.status_code == 200
    assert message in page
    assert "Keep these words" in page
    assert Build.objects.count() == 0


def test_more_than_four_images_are_refused(client, alice, web_player):
    client.force_login(alice)
    uploads = [SimpleUploadedFile(f"m{i}.png", png(), content_type="image/png") for i in range(5)]
    response = client.post("/new/", {"target": web_player.pk, "idea": "Five", "visibility": "company",
                                     "images": uploads})  # fmt: skip
    assert "at most 4 images" in response.content.decode()


class SlackHook(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):
        SlackHook.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


def test_the_owner_hears_when_a_build_finishes_by_email_and_slack(
    alice, web_player, settings, django_capture_on_commit_callbacks
):
    server = HTTPServer(("127.0.0.1", 0), SlackHook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    settings.SLACK_WEBHOOK_URL = f"http://127.0.0.1:{server.server_port}/hook"
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    SlackHook.received.clear()
    try:
        run(django_capture_on_commit_callbacks, builds.create_prototype, owner=alice, target=web_player,
            idea="Add a dark mode toggle")  # fmt: skip
        with django_capture_on_commit_callbacks(execute=True):
            failed = builds.create_prototype(owner=alice, target=web_player, idea="Something never recorded")
    finally:
        server.shutdown()
    failed.refresh_from_db()
    assert failed.state == Build.State.FAILED
    subjects = [m.subject for m in mail.outbox]
    assert subjects == ["Your prototype “Add a dark mode toggle” is ready",
                        "“Something never recorded” could not be built"]  # fmt: skip
    assert mail.outbox[0].to == ["alice@example.com"]
    assert "/p/add-a-dark-mode-toggle/" in mail.outbox[0].body
    # The channel hears of the listed prototype only: the one that never built is a draft nobody else sees.
    assert [m["text"].split(" version")[0] for m in SlackHook.received] == ["✅ “Add a dark mode toggle”"]
