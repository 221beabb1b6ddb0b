"""Who may do what, asserted from one table: every role and a share-link holder × every kind of
prototype × every action, through the pages and the API. The same rule must answer everywhere:
a page that opens must never come with a download, build or API answer that refuses, or the reverse."""

import pytest
from django.contrib.auth.models import Permission
from django.core.files.base import ContentFile
from django.test import Client
from rest_framework.authtoken.models import Token

from prototypes.models import Artifact, Build, Prototype, Revision, Target
from store.models import Comment
from store.sharing import create_link
from tests.conftest import _person

pytestmark = pytest.mark.django_db

ACTORS = ["owner", "collaborator", "colleague", "moderator", "admin", "anonymous", "link_holder"]
KINDS = ["private", "link", "company", "pending", "hidden"]

# kind -> action -> the actors allowed. Everyone else must be refused.
SEE = {
    "private": {"owner", "collaborator", "admin", "link_holder"},
    "link": {"owner", "collaborator", "colleague", "moderator", "admin", "link_holder"},
    "company": {"owner", "collaborator", "colleague", "moderator", "admin", "link_holder"},
    "pending": {"owner", "collaborator", "moderator", "admin", "link_holder"},
    "hidden": {"owner", "collaborator", "moderator", "admin"},
}
LISTED = {  # shown in the catalog and API lists (not only reachable by address)
    "private": {"owner", "collaborator", "admin"},
    "link": {"owner", "collaborator", "moderator", "admin"},
    "company": {"owner", "collaborator", "colleague", "moderator", "admin"},
    "pending": {"owner", "collaborator", "moderator", "admin"},
    "hidden": {"owner", "collaborator", "moderator", "admin"},
}
SIGNED_IN = {"owner", "collaborator", "colleague", "moderator", "admin"}
TABLE = {
    kind: {
        "page": SEE[kind] - {"link_holder"},
        "shared_page": {"link_holder"} & SEE[kind],
        "build_page": SEE[kind] - {"link_holder"},
        "download": SEE[kind] - {"link_holder"},
        "shared_download": {"link_holder"} & SEE[kind],
        "catalog": LISTED[kind] & {"owner", "collaborator", "colleague", "moderator", "admin"}
        if kind == "company"
        else set(),
        "mine": {"owner"},
        "comment": SEE[kind] & SIGNED_IN,
        "react": SEE[kind] & SIGNED_IN,
        "ask_for_change": {"owner"},
        "share": {"owner"} if kind != "hidden" else set(),
        "edit": {"owner"},
        "moderate": {"admin"} if kind == "private" else {"moderator", "admin"},
        "api_retrieve": SEE[kind] & SIGNED_IN,
        "api_list": LISTED[kind],
        "api_builds": SEE[kind] & SIGNED_IN,
    }
    for kind in KINDS
}


@pytest.fixture
def world(django_user_model, alice, bob, mo, ada):
    cole = _person(django_user_model, "cole", "viewer")
    target = Target.objects.create(slug="web", name="Web", git_url="/nowhere")
    things = {}
    for kind in KINDS:
        visibility = kind if kind in ("private", "link") else "company"
        listing = {"pending": "pending", "hidden": "hidden"}.get(kind, "listed")
        prototype = Prototype.objects.create(slug=f"p-{kind}", title=f"Proto {kind}", owner=alice, target=target,
                                             visibility=visibility, listing="listed")  # fmt: skip
        prototype.collaborators.add(cole)
        revision = Revision.objects.create(prototype=prototype, number=1, prompt="idea", author=alice,
                                           result_commit="a" * 40)  # fmt: skip
        build = Build.objects.create(revision=revision)
        for state in ["preparing", "running", "verifying", "packaging", "succeeded"]:
            build.move(state)
        artifact = Artifact(build=build, kind="pyz", filename="app.pyz", size=3, sha256="0" * 64,
                            content_type="application/octet-stream")  # fmt: skip
        artifact.file.save("app.pyz", ContentFile(b"zip"), save=True)
        prototype.current_revision = revision
        prototype.save()
        _link, token = create_link(prototype, by=alice, days=None)
        Prototype.objects.filter(pk=prototype.pk).update(listing=listing)  # taken down after the link was made
        things[kind] = {"prototype": prototype, "build": build, "artifact": artifact, "token": token}
    people = {"owner": alice, "collaborator": cole, "colleague": bob, "moderator": mo, "admin": ada,
              "anonymous": None, "link_holder": None}  # fmt: skip
    return things, people


def client_for(person) -> Client:
    client = Client()
    if person is not None:
        client.force_login(person)
    return client


def api_client(person) -> Client:
    client = Client()
    if person is not None:
        token, _ = Token.objects.get_or_create(user=person)
        client.defaults["HTTP_AUTHORIZATION"] = f"Token {token.key}"
    return client


def attempt(action, thing, actor, person, monkeypatch) -> bool:
    """Try one action; True when it was allowed."""
    prototype, build, artifact, token = thing["prototype"], thing["build"], thing["artifact"], thing["token"]
    slug = prototype.slug
    web = client_for(person)
    if action == "page":
        return web.get(f"/p/{slug}/").status_code == 200
    if action == "shared_page":
        return actor == "link_holder" and web.get(f"/s/{token}/").status_code == 200
    if action == "build_page":
        return web.get(f"/builds/{build.pk}/").status_code == 200
    if action == "download":
        return web.get(f"/artifacts/{artifact.pk}/download/").status_code == 200
    if action == "shared_download":
        return actor == "link_holder" and web.get(f"/s/{token}/artifacts/{artifact.pk}/download/").status_code == 200
    if action == "catalog":
        return person is not None and f"/p/{slug}/" in web.get("/").content.decode()
    if action == "mine":
        return person is not None and f"/p/{slug}/" in web.get("/?mine=1").content.decode()
    if action == "comment":
        before = Comment.objects.count()
        web.post(f"/p/{slug}/comment/", {"body": "hello", "revision": "1"})
        return Comment.objects.count() == before + 1
    if action == "react":
        before = prototype.reactions.count()
        web.post(f"/p/{slug}/react/", {"kind": "like"})
        return prototype.reactions.count() == before + 1
    if action == "ask_for_change":
        monkeypatch.setattr("prototypes.builds._enqueue", lambda build: None)
        before = prototype.revisions.count()
        web.post(f"/p/{slug}/change/", {"idea": "Make it blue"})
        return prototype.revisions.count() == before + 1
    if action == "share":
        return web.post(f"/p/{slug}/share/", {"expires": "7"}).status_code == 200
    if action == "edit":
        return web.get(f"/p/{slug}/edit/").status_code == 200
    if action == "moderate":
        Prototype.objects.filter(pk=prototype.pk).update(comments_locked=False)
        web.post(f"/moderation/p/{slug}/lock-comments/", {"reason": "test"})
        locked = Prototype.objects.get(pk=prototype.pk).comments_locked
        Prototype.objects.filter(pk=prototype.pk).update(comments_locked=False)
        return locked
    api = api_client(person)
    if action == "api_retrieve":
        return api.get(f"/api/prototypes/{slug}/").status_code == 200
    if action == "api_list":
        response = api.get("/api/prototypes/", {"page_size": 100})
        return response.status_code == 200 and slug in [p["slug"] for p in response.json()["results"]]
    if action == "api_builds":
        return api.get(f"/api/builds/{build.pk}/").status_code == 200
    raise AssertionError(f"unknown action {action}")


@pytest.mark.parametrize("kind", KINDS)
def test_every_role_gets_exactly_what_the_table_says(world, kind, monkeypatch):
    things, people = world
    wrong = []
    for action, allowed in TABLE[kind].items():
        for actor in ACTORS:
            got = attempt(action, things[kind], actor, people[actor], monkeypatch)
            if got != (actor in allowed):
                wrong.append(f"{actor} {'could' if got else 'could not'} {action} a {kind} prototype")
    assert wrong == []


def test_moderators_have_the_permission_the_table_relies_on(mo):
    assert mo.has_perm("prototypes.moderate_prototype")
    assert Permission.objects.filter(codename="moderate_prototype").exists()
