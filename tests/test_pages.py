"""The pages a person uses: sign-in, the store, starting a prototype, following a build, previews and
downloads — and who may see what through them."""

import re

import pytest
from django.core.files.base import ContentFile
from django.urls import reverse
from django.utils import timezone

from prototypes.models import Artifact, Build, Prototype, Revision, Target
from prototypes.pipeline import fail, preview_dir
from store.previews import preview_token

pytestmark = pytest.mark.django_db


@pytest.fixture
def target():
    return Target.objects.create(
        slug="web-player", name="Web Player", kind="web", git_url="/nowhere", recipe_checked_at=timezone.now()
    )


def make_prototype(owner, target, *, visibility="company", listing="listed", slug="tune"):
    prototype = Prototype.objects.create(slug=slug, title="Tune up", owner=owner, target=target,
                                         visibility=visibility, listing=listing)  # fmt: skip
    revision = Revision.objects.create(prototype=prototype, number=1, prompt="Add a dark mode toggle", author=owner)
    build = Build.objects.create(revision=revision)
    return prototype, revision, build


def succeed(build, files: dict[str, bytes], kind="web", filename="bundle.zip"):
    for state in ["preparing", "running", "verifying", "packaging", "succeeded"]:
        build.move(state)
    artifact = Artifact(build=build, kind=kind, filename=filename, size=1, sha256="0" * 64,
                        content_type="application/zip", metadata={"entry": "index.html"})  # fmt: skip
    artifact.file.save(filename, ContentFile(b"zip"), save=True)
    folder = preview_dir(artifact)
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    revision = build.revision
    revision.prototype.current_revision = revision
    revision.prototype.save()
    return artifact


def test_every_page_asks_a_signed_out_visitor_to_sign_in(client):
    for url in ["/", "/new/", "/p/anything/", "/builds/1/"]:
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_the_sign_in_page_signs_a_person_in(client, alice):
    from tests.conftest import PASSWORD

    response = client.post("/accounts/login/", {"username": "alice", "password": PASSWORD})
    assert response.status_code == 302
    assert client.get("/").status_code == 200
    wrong = client.post("/accounts/login/", {"username": "alice", "password": "nope"})
    assert "didn't match" in wrong.content.decode()


def test_submitting_an_idea_creates_a_queued_build_and_shows_its_page(
    client, alice, target, django_capture_on_commit_callbacks
):
    client.force_login(alice)
    with django_capture_on_commit_callbacks() as callbacks:
        response = client.post("/new/", {"target": target.pk, "idea": "Add a dark mode toggle", "title": "",
                                         "visibility": "company"})  # fmt: skip
    build = Build.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/p/add-a-dark-mode-toggle/builds/{build.pk}/"
    assert build.state == Build.State.QUEUED
    # The Celery task is sent only once the transaction commits.
    names = [getattr(getattr(c, "func", c), "__qualname__", "") for c in callbacks]
    assert sum("send" in name for name in names) == 1, names
    assert build.revision.prototype.title == "Add a dark mode toggle"
    page = client.get(response["Location"]).content.decode()
    assert "Waiting to start" in page and "Add a dark mode toggle" in page


def test_an_empty_idea_is_refused_and_what_was_typed_is_kept(client, alice, target):
    client.force_login(alice)
    response = client.post("/new/", {"target": target.pk, "idea": "   ", "title": "My title", "visibility": "company"})
    assert response.status_code == 200
    assert Build.objects.count() == 0
    assert 'value="My title"' in response.content.decode()


def test_the_offline_form_offers_the_sample_ideas_and_says_they_were_written_by_hand(client, alice, target):
    client.force_login(alice)
    page = client.get("/new/").content.decode()
    assert "Builds replay sample conversations, written by hand in the API's format (not recorded with Claude)" in page
    assert "nothing is spent" in page and "Try a sample idea" in page
    assert "recorded conversations" not in page and "recorded idea" not in page
    assert 'data-suggest-idea="Add a dark mode toggle"' in page


def test_a_failed_build_explains_itself_in_plain_words(client, alice, target):
    _, _, build = make_prototype(alice, target)
    build.move("preparing")
    fail(build, "sandbox_unavailable", "bwrap: setting up uid map: Permission denied")
    client.force_login(alice)
    page = client.get(f"/builds/{build.pk}/").content.decode()
    assert "could not start its safe sandbox" in page
    assert "not charged" in page
    assert "Try again" in page


def test_a_private_prototype_is_invisible_to_others_everywhere(client, alice, carol, target):
    prototype, _, build = make_prototype(alice, target, visibility="private")
    artifact = succeed(build, {"index.html": b"<h1>hi</h1>"})
    client.force_login(carol)
    assert "Tune up" not in client.get("/").content.decode()
    assert client.get(f"/p/{prototype.slug}/").status_code == 404
    assert client.get(f"/builds/{build.pk}/").status_code == 404
    assert client.get(f"/artifacts/{artifact.pk}/download/").status_code == 404
    client.force_login(alice)
    assert client.get(f"/p/{prototype.slug}/").status_code == 200


def test_a_company_prototype_is_in_the_store_for_colleagues(client, alice, bob, target):
    prototype, _, build = make_prototype(alice, target)
    succeed(build, {"index.html": b"<h1>hi</h1>"})
    client.force_login(bob)
    home = client.get("/").content.decode()
    assert "Tune up" in home
    page = client.get(f"/p/{prototype.slug}/").content.decode()
    assert "Open preview" in page


def test_the_preview_runs_in_an_opaque_origin_through_a_signed_link(client, alice, target):
    prototype, _, build = make_prototype(alice, target)
    artifact = succeed(build, {"index.html": b"<h1>hi</h1>", "app.js": b"console.log(1)"})
    client.force_login(alice)
    page = client.get(f"/p/{prototype.slug}/").content.decode()
    url = re.search(r'href="(/preview/[^"]+/)"', page).group(1)
    client.logout()  # the sandboxed page gets no cookies: the link itself grants access
    response = client.get(url)
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == b"<h1>hi</h1>"
    assert response["Content-Security-Policy"].startswith("sandbox allow-scripts")
    assert "allow-same-origin" not in response["Content-Security-Policy"]
    script = client.get(url + "app.js")
    assert script["Content-Type"].startswith("text/javascript")
    assert client.get(url + "../../etc/passwd").status_code == 404
    assert client.get(f"/preview/{preview_token(artifact, user=alice)}x/").status_code == 404
    assert client.get(f"/preview/{artifact.pk}/").status_code == 404


def test_a_backend_prototype_downloads_as_an_attachment(client, alice, bob, target):
    prototype, _, build = make_prototype(alice, target)
    artifact = succeed(build, {}, kind="pyz", filename="podcast-api.pyz")
    client.force_login(bob)
    response = client.get(reverse("download", args=[artifact.pk]))
    assert response.status_code == 200
    assert response["Content-Disposition"] == 'attachment; filename="podcast-api.pyz"'


def test_only_the_owner_can_cancel_a_build(client, alice, bob, target):
    _, _, build = make_prototype(alice, target)
    client.force_login(bob)
    client.post(f"/builds/{build.pk}/cancel/")
    build.refresh_from_db()
    assert build.state == Build.State.QUEUED
    client.force_login(alice)
    client.post(f"/builds/{build.pk}/cancel/")
    build.refresh_from_db()
    assert build.state == Build.State.CANCELLED


def test_with_a_preview_origin_previews_open_there_and_nothing_else_answers_there(client, alice, target, settings):
    settings.PREVIEW_ORIGIN = "http://previews.test:8000"
    settings.PREVIEW_HOST = "previews.test"
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "previews.test"]
    prototype, _, build = make_prototype(alice, target)
    succeed(build, {"index.html": b"<h1>hi</h1>"})
    client.force_login(alice)
    page = client.get(f"/p/{prototype.slug}/").content.decode()
    url = re.search(r'href="(http://previews\.test:8000/preview/[^"]+/)"', page).group(1)
    path = url.removeprefix("http://previews.test:8000")
    assert client.get(path, HTTP_HOST="previews.test:8000").status_code == 200
    assert client.get("/", HTTP_HOST="previews.test:8000").status_code == 404
    assert client.get(f"/p/{prototype.slug}/", HTTP_HOST="previews.test:8000").status_code == 404
