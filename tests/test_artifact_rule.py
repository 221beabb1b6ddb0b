"""One rule for handing out files: an artifact is handed out when its prototype is visible (by id, or
through the slug of a link-only prototype's address), its build succeeded and retention has not
removed it — `Artifact.objects.available_to`, asked by the pages, previews, install routes and the
API alike (share links, which have no person, ask `available()` on their one prototype)."""

import pytest
from django.core.files.base import ContentFile
from django.utils import timezone
from rest_framework.authtoken.models import Token

from prototypes.models import Artifact, Build, Prototype, Revision, Target
from prototypes.pipeline import preview_dir
from store.previews import preview_url
from store.sharing import create_link

pytestmark = pytest.mark.django_db


def made(owner, target, *, slug, visibility="company", state="succeeded", expired=False, kind="pyz"):
    prototype = Prototype.objects.create(slug=slug, title=slug, owner=owner, target=target, visibility=visibility,
                                         listing="listed")  # fmt: skip
    revision = Revision.objects.create(prototype=prototype, number=1, prompt="idea", author=owner)
    prototype.current_revision = revision
    prototype.save()
    build = Build.objects.create(revision=revision, state=state)
    artifact = Artifact(build=build, kind=kind, filename="app.bin", size=3, sha256="0" * 64,
                        content_type="application/octet-stream", metadata={"entry": "index.html"})  # fmt: skip
    artifact.file.save("app.bin", ContentFile(b"app"), save=True)
    if expired:
        artifact.file.delete(save=False)
        Artifact.objects.filter(pk=artifact.pk).update(expired_at=timezone.now())
    return artifact


@pytest.fixture
def files(alice):
    target = Target.objects.create(slug="web", name="Web", git_url="/nowhere")
    return {
        "ready": made(alice, target, slug="ready"),
        "failed": made(alice, target, slug="failed", state="failed"),
        "expired": made(alice, target, slug="expired", expired=True),
        "private": made(alice, target, slug="private", visibility="private"),
        "link": made(alice, target, slug="link-k3x9q2m7w4z8r5t1", visibility="link"),
    }


def names(queryset, files) -> set[str]:
    pks = set(queryset.values_list("pk", flat=True))
    return {name for name, artifact in files.items() if artifact.pk in pks}


def test_one_queryset_says_which_files_a_person_may_have(alice, bob, files):
    assert names(Artifact.objects.available_to(alice), files) == {"ready", "private", "link"}
    assert names(Artifact.objects.available_to(bob), files) == {"ready"}
    assert names(Artifact.objects.available_to(bob, slug="link-k3x9q2m7w4z8r5t1"), files) == {"link"}
    assert names(Artifact.objects.available_to(bob, slug="private"), files) == set()
    assert names(Artifact.objects.available(), files) == {"ready", "private", "link"}  # no person: share links


def test_the_api_hands_out_no_file_that_retention_removed(client, alice, files):
    """The API's copy of the rule forgot expiry: expired files were listed and opened."""
    token, _ = Token.objects.get_or_create(user=alice)
    client.defaults["HTTP_AUTHORIZATION"] = f"Token {token.key}"
    listed = {item["id"] for item in client.get("/api/artifacts/", {"page_size": 100}).json()["results"]}
    assert files["expired"].pk not in listed and files["ready"].pk in listed
    for url in (f"/api/artifacts/{files['expired'].pk}/", f"/api/artifacts/{files['expired'].pk}/download/",
                f"/api/artifacts/{files['failed'].pk}/"):  # fmt: skip
        assert client.get(url).status_code == 404, url


def test_every_surface_answers_the_same_for_the_same_file(client, alice, bob, files):
    """Pages, install routes, previews, share links and the API agree, file by file."""
    surfaces = {}
    token, _ = Token.objects.get_or_create(user=bob)
    for name, artifact in files.items():
        _link, share = create_link(artifact.build.revision.prototype, by=alice)
        client.force_login(bob)
        got = {
            "page": client.get(f"/artifacts/{artifact.pk}/download/").status_code,
            "install": client.get(f"/artifacts/{artifact.pk}/file/app.bin").status_code,
            "api": client.get(
                f"/api/artifacts/{artifact.pk}/download/", HTTP_AUTHORIZATION=f"Token {token.key}"
            ).status_code,
            "shared": client.get(f"/s/{share}/artifacts/{artifact.pk}/download/").status_code,
        }
        Artifact.objects.filter(pk=artifact.pk).update(kind="web")  # the same file, as a web preview
        artifact.kind = "web"
        preview_dir(artifact).mkdir(parents=True, exist_ok=True)  # unpacked on this host already
        (preview_dir(artifact) / "index.html").write_text("<h1>app</h1>")
        client.logout()
        got["preview"] = client.get(preview_url(artifact, user=bob)).status_code
        surfaces[name] = got
    found = {name: {surface for surface, status in got.items() if status != 404} for name, got in surfaces.items()}
    assert found == {
        "ready": {"page", "install", "api", "shared", "preview"},
        "failed": set(),
        "expired": set(),
        "private": {"shared"},  # only through alice's share link
        "link": {"shared"},  # an id alone is not the link
    }
