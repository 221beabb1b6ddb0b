"""Roles are real: the role table (prototypes/access.py) decides what a viewer, maker, moderator and
admin may do, and the buttons, refusals and role groups all follow it. (What each actor gets on each
kind of prototype is asserted in tests/test_authorization.py.)"""

import pytest
from django.contrib.auth.models import Group, Permission
from django.core.management import call_command
from django.test import Client
from rest_framework.authtoken.models import Token

from prototypes import access, builds
from prototypes.models import Build, Prototype, Revision, Target
from store.auth import set_roles
from store.models import Comment, ShareLink
from store.sharing import create_link

pytestmark = pytest.mark.django_db


@pytest.fixture
def target():
    return Target.objects.create(slug="web", name="Web", git_url="/nowhere")


def built(owner, target, slug="p", **extra) -> Prototype:
    prototype = Prototype.objects.create(slug=slug, title="Sleep timer", owner=owner, target=target,
                                         listing="listed", **extra)  # fmt: skip
    revision = Revision.objects.create(prototype=prototype, number=1, prompt="idea", author=owner,
                                       result_commit="a" * 40)  # fmt: skip
    build = Build.objects.create(revision=revision)
    build.move("failed")
    prototype.current_revision = revision
    prototype.save()
    return prototype


def signed_in(person) -> Client:
    client = Client()
    client.force_login(person)
    return client


def test_the_table_gives_viewers_only_browse_try_comment_react_and_flag():
    assert access.ROLE_ACTIONS["viewer"] == {"browse", "try", "comment", "react", "flag"}
    assert access.ROLE_ACTIONS["moderator"] == access.ROLE_ACTIONS["viewer"] | {"moderate"}
    assert access.ROLE_ACTIONS["admin"] == access.ACTIONS


def test_role_groups_carry_the_tables_permissions(carol, alice, mo, ada):
    for person, role in [(carol, "viewer"), (alice, "maker"), (mo, "moderator"), (ada, "admin")]:
        allowed = {action for action in access.ACTIONS if access.can(person, action)}
        assert allowed == access.ROLE_ACTIONS[role], f"a {role} may do {sorted(allowed)}"


def test_roles_add_up(django_user_model, carol):
    set_roles(carol, {"viewer", "moderator"})
    carol = django_user_model.objects.get(pk=carol.pk)  # permissions are cached on the object
    assert access.can(carol, "moderate") and not access.can(carol, "build")
    set_roles(carol, {"moderator", "maker"})
    carol = django_user_model.objects.get(pk=carol.pk)
    assert access.can(carol, "moderate") and access.can(carol, "build")


def test_someone_with_no_role_at_all_is_a_viewer(django_user_model):
    nobody = django_user_model.objects.create_user("nobody", password="x" * 12)
    assert access.can(nobody, "comment") and access.can(nobody, "flag")
    assert not any(access.can(nobody, action) for action in ("build", "share", "graduate", "edit", "moderate"))


def test_an_existing_database_gets_the_tables_permissions_when_migrated(alice):
    maker = Group.objects.get(name="maker")
    maker.permissions.clear()  # a database from before the role table: makers had no permissions
    maker.permissions.add(Permission.objects.get(codename="moderate_prototype"))  # and one too many
    call_command("migrate", verbosity=0)
    alice = type(alice).objects.get(pk=alice.pk)
    assert {p.codename for p in Group.objects.get(name="maker").permissions.all()} == {
        "build_prototype", "share_prototype", "graduate_prototype", "edit_prototype",
    }  # fmt: skip
    assert access.can(alice, "build") and not access.can(alice, "moderate")


def test_seed_gives_the_demo_people_their_roles_permissions(settings, django_user_model):
    settings.DEMO_USERS = True
    settings.EXAMPLES_DIR = settings.VAR_DIR / "no-examples"  # only roles and people
    call_command("seed")
    carol, alice = (django_user_model.objects.get(username=name) for name in ("carol", "alice"))
    assert not access.can(carol, "build") and access.can(carol, "comment")
    assert access.can(alice, "build") and access.can(alice, "share")


def test_a_viewer_is_refused_the_new_prototype_page_with_the_reason(carol):
    response = signed_in(carol).get("/new/")
    assert response.status_code == 403
    assert "maker role" in response.content.decode()


def test_a_viewer_cannot_build_through_the_build_entry_points(carol, alice, target):
    prototype = built(alice, target, visibility="company")
    with pytest.raises(builds.NotAllowed, match="not build them"):
        builds.create_prototype(owner=carol, target=target, idea="Add a sleep timer")
    with pytest.raises(builds.NotAllowed, match="not build them"):
        builds.remix(prototype.current_revision, by=carol, idea="Mine")
    assert Prototype.objects.filter(owner=carol).count() == 0


def test_the_api_refuses_a_viewer_before_reading_the_request(carol, target):
    token, _ = Token.objects.get_or_create(user=carol)
    response = Client().post("/api/prototypes/", {}, content_type="application/json",
                             HTTP_AUTHORIZATION=f"Token {token.key}")  # fmt: skip
    assert response.status_code == 403
    error = response.json()["error"]
    assert error["code"] == "not_allowed" and "maker role" in error["message"] and error["fields"] == {}


def test_a_viewer_sees_no_buttons_for_what_their_role_does_not_allow(carol, alice, target):
    prototype = built(alice, target, visibility="company")
    client = signed_in(carol)
    home = client.get("/").content.decode()
    assert 'href="/new/"' not in home
    page = client.get(prototype.get_absolute_url()).content.decode()
    assert "/remix/" not in page
    assert f"/p/{prototype.slug}/comment/" in page and f"/p/{prototype.slug}/react/" in page  # a viewer's part
    maker_page = signed_in(alice).get(prototype.get_absolute_url()).content.decode()
    assert "/remix/" in maker_page and "/edit/" in maker_page and "/share/" in maker_page


def test_an_owner_made_a_viewer_sees_no_maker_buttons_but_can_still_revoke_links(alice, target):
    prototype = built(alice, target, visibility="company")
    Comment.objects.create(prototype=prototype, revision=prototype.current_revision, author=alice, body="note")
    link, _token = create_link(prototype, by=alice)
    build = prototype.current_revision.builds.get()
    buttons = ["/edit/", "/remix/", "/graduate/", "Ask for a change", "Create a share link", "send-to-agent"]
    client = signed_in(alice)
    page = client.get(prototype.get_absolute_url()).content.decode()
    assert [b for b in buttons if b not in page] == [], "a maker owner is offered every button"
    assert "/retry/" in client.get(f"/builds/{build.pk}/").content.decode()
    set_roles(alice, {"viewer"})
    page = client.get(prototype.get_absolute_url()).content.decode()
    assert [b for b in buttons if b in page] == [], "a viewer who owns the prototype is offered these"
    assert "/retry/" not in client.get(f"/builds/{build.pk}/").content.decode()
    client.post(f"/p/{prototype.slug}/share/{link.pk}/revoke/")  # taking access away is never refused
    assert ShareLink.objects.get(pk=link.pk).revoked
    assert client.get(f"/p/{prototype.slug}/edit/").status_code == 403
    assert client.get(f"/p/{prototype.slug}/v/1/graduate/").status_code == 403


@pytest.mark.parametrize("role, builds_allowed", [("viewer", False), ("maker", True)])
def test_people_created_at_first_sign_in_get_their_default_roles_permissions(settings, role, builds_allowed):
    from store.auth import StoreOIDCBackend

    settings.OIDC_DEFAULT_ROLE = role
    backend = StoreOIDCBackend.__new__(StoreOIDCBackend)  # its create_user, without a provider round trip
    person = backend.create_user({"email": "dana@example.com", "email_verified": True, "name": "Dana Example"})
    assert access.can(person, "build") is builds_allowed and access.can(person, "comment")
