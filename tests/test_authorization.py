"""Who may do what, asserted from one table: every role and a share-link holder × every kind of
prototype × every action, through the pages and the API. The same rule must answer everywhere:
a page that opens must never come with a download, build or API answer that refuses, or the reverse.

Two halves make each expectation. TABLE says who may, by their relation to the prototype (owner,
invited, colleague, moderator, admin, link holder) and what they see; the store's role table
(prototypes.access.ROLE_ACTIONS) says which roles may do the action at all. An actor is allowed
exactly when both say yes (ALLOWED), so changing the role table changes what this test expects."""

import pytest
from django.contrib.auth.models import Permission
from django.core.files.base import ContentFile
from django.test import Client
from django.utils import timezone
from rest_framework.authtoken.models import Token

from prototypes.access import ROLE_ACTIONS
from prototypes.models import Artifact, Build, Prototype, Revision, Target
from store.models import Comment
from store.sharing import create_link
from tests.conftest import _person

pytestmark = pytest.mark.django_db

ACTORS = ["owner", "collaborator", "colleague", "viewer", "moderator", "admin", "anonymous", "link_holder"]
# Each signed-in actor's role (a group of the role table); every role has an actor. The collaborator is
# a viewer invited to the prototypes; `viewer` is a colleague with the viewer role and no invitation.
ROLE_OF = {"owner": "maker", "collaborator": "viewer", "colleague": "maker", "viewer": "viewer",
           "moderator": "moderator", "admin": "admin"}  # fmt: skip
# What a share link lets its holder do without any role: open that prototype and try it.
LINK_GRANTS = {"browse", "try"}
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
SIGNED_IN = {"owner", "collaborator", "colleague", "viewer", "moderator", "admin"}
TABLE = {
    kind: {
        "page": SEE[kind] - {"link_holder"},
        "shared_page": {"link_holder"} & SEE[kind],
        "build_page": LISTED[kind],  # /builds/<id>/: an id alone never reaches through a link-only prototype
        "download": LISTED[kind],  # /artifacts/<id>/download/: the same
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
        "api_builds": LISTED[kind],  # /api/builds/<id>/: the same
        "new": SIGNED_IN,
        "new_api": SIGNED_IN,
        "change_api": {"owner"},
        "remix": SEE[kind] & SIGNED_IN,
        "remix_api": LISTED[kind],  # a revision by its id: as in lists, never through a link-only prototype
        "retry": {"owner", "admin"},
        "retry_api": {"owner", "admin"},
        "send_to_agent": {"owner"},
        "send_to_agent_api": {"owner"},
        "share_api": {"owner"} if kind != "hidden" else set(),
        "graduate": {"owner"},
        "edit_api": {"owner"},
    }
    for kind in KINDS
}
# Which action of the role table each action here is (prototypes/access.py).
NEEDS = {
    "page": "browse", "shared_page": "browse", "build_page": "browse", "catalog": "browse", "mine": "browse",
    "api_retrieve": "browse", "api_list": "browse", "api_builds": "browse",
    "download": "try", "shared_download": "try",
    "comment": "comment", "react": "react", "moderate": "moderate",
    "ask_for_change": "build", "change_api": "build", "new": "build", "new_api": "build", "remix": "build",
    "remix_api": "build", "retry": "build", "retry_api": "build", "send_to_agent": "build",
    "send_to_agent_api": "build",
    "share": "share", "share_api": "share", "graduate": "graduate", "edit": "edit", "edit_api": "edit",
}  # fmt: skip


def holders(role_action: str) -> set[str]:
    """The actors the role table (or, for a link holder, the share link) lets do `role_action`."""
    actors = {actor for actor, role in ROLE_OF.items() if role_action in ROLE_ACTIONS[role]}
    return actors | ({"link_holder"} if role_action in LINK_GRANTS else set())


def as_colleagues(actors: set[str]) -> set[str]:
    """The viewer colleague stands where the maker colleague stands: seeing never depends on the role."""
    return actors | ({"viewer"} if "colleague" in actors else set())


ALLOWED = {
    kind: {action: as_colleagues(actors) & holders(NEEDS[action]) for action, actors in TABLE[kind].items()}
    for kind in KINDS
}


@pytest.fixture
def world(django_user_model, alice, bob, carol, mo, ada, settings):
    # Every actor tries every build action on every kind: no rate limit or budget may refuse first.
    settings.RATELIMIT_BUILDS = "1000/h"
    settings.BUDGET_DAILY_BUILDS = settings.BUDGET_MONTHLY_BUILDS = 0
    cole = _person(django_user_model, "cole", "viewer")
    target = Target.objects.create(slug="web", name="Web", git_url="/nowhere", recipe_checked_at=timezone.now())
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
        failed = Build.objects.create(revision=revision, attempt=2)  # for "Try again"
        failed.move("failed")
        prototype.current_revision = revision
        prototype.save()
        _link, token = create_link(prototype, by=alice, days=None)
        Prototype.objects.filter(pk=prototype.pk).update(listing=listing)  # taken down after the link was made
        things[kind] = {"prototype": prototype, "build": build, "artifact": artifact, "token": token, "failed": failed}
    people = {"owner": alice, "collaborator": cole, "colleague": bob, "viewer": carol, "moderator": mo, "admin": ada,
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


def api_post(api: Client, url: str, data: dict) -> int:
    return api.post(url, data, content_type="application/json").status_code


def feedback_for(prototype) -> Comment:
    """A fresh comment to send to the agent (one can be sent only once)."""
    return Comment.objects.create(prototype=prototype, revision=prototype.current_revision, author=prototype.owner,
                                  body="Make it green")  # fmt: skip


def attempt(action, thing, actor, person, monkeypatch) -> bool:
    """Try one action; True when it was allowed."""
    prototype, build, artifact, token = thing["prototype"], thing["build"], thing["artifact"], thing["token"]
    slug = prototype.slug
    if NEEDS[action] == "build":
        monkeypatch.setattr("prototypes.builds._enqueue", lambda build: None)  # queued, never run
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
    if action == "new":
        before = Prototype.objects.count()
        web.post("/new/", {"target": prototype.target_id, "idea": "A new idea", "visibility": "company"})
        return Prototype.objects.count() == before + 1
    if action == "remix":
        before = Prototype.objects.count()
        web.post(f"/p/{slug}/v/1/remix/", {"idea": "My own take"})
        return Prototype.objects.count() == before + 1
    if action == "retry":
        before = Build.objects.count()
        web.post(f"/builds/{thing['failed'].pk}/retry/")
        return Build.objects.count() == before + 1
    if action == "send_to_agent":
        before = prototype.revisions.count()
        web.post(f"/comments/{feedback_for(prototype).pk}/send-to-agent/")
        return prototype.revisions.count() == before + 1
    if action == "graduate":  # the page opens (it then says the app is not connected to GitHub)
        return web.get(f"/p/{slug}/v/1/graduate/").status_code == 200
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
    if action == "new_api":
        return api_post(api, "/api/prototypes/", {"target": prototype.target.slug, "idea": "A new idea"}) == 201
    if action == "change_api":
        return api_post(api, f"/api/prototypes/{slug}/change/", {"idea": "Make it blue"}) == 201
    if action == "remix_api":
        return api_post(api, f"/api/revisions/{prototype.current_revision_id}/remix/", {"idea": "Mine"}) == 201
    if action == "retry_api":
        return api_post(api, f"/api/builds/{thing['failed'].pk}/retry/", {}) == 201
    if action == "send_to_agent_api":
        return api_post(api, f"/api/comments/{feedback_for(prototype).pk}/send-to-agent/", {}) == 201
    if action == "share_api":
        return api_post(api, "/api/share-links/", {"prototype": slug, "expires_in_days": 7}) == 201
    if action == "edit_api":
        response = api.patch(f"/api/prototypes/{slug}/", {"title": "Renamed"}, content_type="application/json")
        return response.status_code == 200
    raise AssertionError(f"unknown action {action}")


@pytest.mark.parametrize("kind", KINDS)
def test_every_role_gets_exactly_what_the_table_says(world, kind, monkeypatch):
    things, people = world
    wrong = []
    for action, allowed in ALLOWED[kind].items():
        for actor in ACTORS:
            got = attempt(action, things[kind], actor, people[actor], monkeypatch)
            if got != (actor in allowed):
                wrong.append(f"{actor} {'could' if got else 'could not'} {action} a {kind} prototype")
    assert not wrong, "Not what the table says:\n" + "\n".join(wrong)


@pytest.mark.parametrize("role", list(ROLE_ACTIONS))
def test_an_owner_does_to_their_own_prototype_only_what_their_role_allows(world, role, monkeypatch):
    """Owning is not a role: a maker made a viewer (or a moderator) keeps seeing their prototypes but
    builds on them, shares, graduates and edits them only as the role table allows the new role."""
    from store.auth import set_roles

    things, people = world
    set_roles(people["owner"], {role})
    wrong = []
    for action in ALLOWED["company"]:
        if "owner" not in TABLE["company"][action]:
            continue
        expected = NEEDS[action] in ROLE_ACTIONS[role]
        got = attempt(action, things["company"], "owner", people["owner"], monkeypatch)
        if got != expected:
            wrong.append(f"an owner who is a {role} {'could' if got else 'could not'} {action} their prototype")
    assert not wrong, "Not what the role table says:\n" + "\n".join(wrong)


def test_every_role_has_an_actor_in_the_matrix():
    assert set(ROLE_OF.values()) == set(ROLE_ACTIONS), "add an actor for each role of prototypes/access.py"
    assert set(NEEDS) >= set(TABLE["company"]), "say which role-table action each action of TABLE is"


def test_moderators_have_the_permission_the_table_relies_on(mo):
    assert mo.has_perm("prototypes.moderate_prototype")
    assert Permission.objects.filter(codename="moderate_prototype").exists()
