"""The REST API: tokens for scripts, the same visibility as the pages, one error format, pages and
filters, and the entry points (starting a prototype queues a build, a share link's token is shown once)."""

import pytest
from django.core.cache import cache
from django.urls import reverse
from django.utils import timezone
from rest_framework.authtoken.models import Token

from prototypes import builds
from prototypes.models import Build, Prototype, Revision, Tag, Target, append_events
from store import feedback, moderation
from store.models import Comment, Flag, Reaction, ShareLink, Visit, hash_token
from store.sharing import resolve
from tests.test_pages import make_prototype, succeed

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _no_rate_limits(settings):
    """Rate limit counters live in the cache across tests; the test that wants a limit sets one."""
    settings.RATELIMIT_BUILDS = settings.RATELIMIT_COMMENTS = settings.RATELIMIT_SHARE_LINKS = ""
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    cache.clear()


@pytest.fixture
def enqueued(monkeypatch):
    sent = []
    monkeypatch.setattr(builds, "_enqueue", sent.append)
    return sent


@pytest.fixture
def target():
    return Target.objects.create(
        slug="web-player", name="Web Player", kind="web", git_url="/nowhere", recipe_checked_at=timezone.now()
    )


@pytest.fixture
def work(alice, target):
    """Alice's prototypes: one of each visibility, listed, each built once with a download and a comment."""
    made = {}
    for visibility in ["private", "link", "company"]:
        prototype, revision, build = make_prototype(alice, target, visibility=visibility, slug=f"{visibility}-one")
        artifact = succeed(build, {"index.html": b"<h1>hi</h1>"}, kind="archive", filename=f"{visibility}.zip")
        Revision.objects.filter(pk=revision.pk).update(result_commit="a" * 40)
        comment = Comment.objects.create(prototype=prototype, revision=revision, author=alice, body="First!")
        made[visibility] = {"prototype": prototype, "build": build, "artifact": artifact, "comment": comment,
                            "revision": revision}  # fmt: skip
    return made


def api(client, user):
    client.force_login(user)
    return client


def as_token(client, user):
    """A client that is not signed in, calling as a script does."""
    token, _ = Token.objects.get_or_create(user=user)
    client.logout()
    client.defaults["HTTP_AUTHORIZATION"] = f"Token {token.key}"
    return client


def slugs(response):
    assert response.status_code == 200, response.content
    return {item["slug"] for item in response.json()["results"]}


def ids(response):
    assert response.status_code == 200, response.content
    return {item["id"] for item in response.json()["results"]}


def error(response, status, code):
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "fields"}
    assert body["error"]["code"] == code, body
    assert body["error"]["message"]
    return body["error"]


# --- tokens ----------------------------------------------------------------------------------------


def test_a_person_gets_a_token_on_the_token_page_and_a_script_calls_the_api_with_it(client, alice, work):
    client.force_login(alice)
    assert "no token yet" in client.get("/api/token/").content.decode()
    assert client.post("/api/token/").status_code == 302
    key = Token.objects.get(user=alice).key
    assert key in client.get("/api/token/").content.decode()

    client.logout()
    response = client.get("/api/prototypes/", HTTP_AUTHORIZATION=f"Token {key}")
    assert slugs(response) == {"private-one", "link-one", "company-one"}  # her own, whatever the visibility

    client.force_login(alice)
    client.post("/api/token/")  # a new token: the old one stops working at once
    client.logout()
    new = Token.objects.get(user=alice).key
    assert new != key
    failed = error(client.get("/api/prototypes/", HTTP_AUTHORIZATION=f"Token {key}"), 401, "authentication_failed")
    assert "/api/token/" in failed["message"]
    assert client.get("/api/prototypes/", HTTP_AUTHORIZATION=f"Token {new}").status_code == 200


def test_the_token_page_asks_a_signed_out_visitor_to_sign_in(client):
    response = client.get("/api/token/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_without_credentials_the_api_answers_401_and_says_how_to_sign_in(client, work):
    response = client.get("/api/prototypes/")
    failed = error(response, 401, "not_authenticated")
    assert response["WWW-Authenticate"] == "Token"
    assert "Authorization: Token" in failed["message"]
    error(client.get(f"/api/builds/{work['company']['build'].pk}/"), 401, "not_authenticated")


# --- who sees what ---------------------------------------------------------------------------------


def test_carol_cannot_list_or_open_alices_private_prototype_or_anything_of_it(client, carol, work):
    private = work["private"]
    as_token(client, carol)
    assert "private-one" not in slugs(client.get("/api/prototypes/"))
    assert "private-one" not in slugs(client.get("/api/prototypes/", {"owner": "alice", "visibility": "private"}))
    error(client.get("/api/prototypes/private-one/"), 404, "not_found")
    for kind, pk in [("builds", private["build"].pk), ("artifacts", private["artifact"].pk),
                     ("comments", private["comment"].pk), ("revisions", private["revision"].pk)]:  # fmt: skip
        missing = error(client.get(f"/api/{kind}/{pk}/"), 404, "not_found")
        assert missing["message"] == "There is nothing here, or you are not allowed to see it."
        assert pk not in ids(client.get(f"/api/{kind}/"))
        assert ids(client.get(f"/api/{kind}/", {"prototype": "private-one"})) == set()
    error(client.get(f"/api/builds/{private['build'].pk}/events/"), 404, "not_found")
    error(client.get(f"/api/artifacts/{private['artifact'].pk}/download/"), 404, "not_found")
    # Nor can she act on it: naming it answers as if it did not exist.
    refused = error(client.post("/api/comments/", {"prototype": "private-one", "body": "hi"},
                                content_type="application/json"), 400, "invalid")  # fmt: skip
    assert "cannot see" in refused["fields"]["prototype"][0] or "not allowed" in refused["fields"]["prototype"][0]
    error(client.post("/api/reactions/", {"prototype": "private-one", "kind": "like"},
                      content_type="application/json"), 400, "invalid")  # fmt: skip
    error(client.post("/api/flags/", {"prototype": "private-one", "reason": "spam"},
                      content_type="application/json"), 400, "invalid")  # fmt: skip
    error(client.post(f"/api/builds/{private['build'].pk}/retry/"), 404, "not_found")


def test_a_link_prototype_opens_by_its_slug_but_is_never_listed(client, bob, work):
    link = work["link"]
    as_token(client, bob)
    assert slugs(client.get("/api/prototypes/")) == {"company-one"}
    assert client.get("/api/prototypes/link-one/").json()["visibility"] == "link"
    for kind, pk in [("builds", link["build"].pk), ("artifacts", link["artifact"].pk),
                     ("comments", link["comment"].pk), ("revisions", link["revision"].pk)]:  # fmt: skip
        assert client.get(f"/api/{kind}/{pk}/").status_code == 404  # an id alone is not the link…
        shown = client.get(f"/api/{kind}/{pk}/", {"prototype": "link-one"})  # …its slug is
        assert shown.status_code == 200 and shown.json()["url"].endswith(f"/{pk}/?prototype=link-one")
        assert pk not in ids(client.get(f"/api/{kind}/"))  # not in lists…
        assert ids(client.get(f"/api/{kind}/", {"prototype": "link-one"})) == {pk}  # …unless asked by its slug
    artifact = client.get(f"/api/artifacts/{link['artifact'].pk}/", {"prototype": "link-one"}).json()
    assert b"".join(client.get(artifact["download"]).streaming_content) == b"zip"


def test_a_hidden_prototype_is_gone_from_the_api_for_everyone_but_its_owner_and_moderators(
    client, alice, bob, mo, work
):
    company = work["company"]
    moderation.hide(company["prototype"], by=mo, reason="Shows a colleague's personal data")
    as_token(client, bob)
    assert "company-one" not in slugs(client.get("/api/prototypes/"))
    assert slugs(client.get("/api/prototypes/", {"q": "Tune"})) == set()
    error(client.get("/api/prototypes/company-one/"), 404, "not_found")
    error(client.get(f"/api/comments/{company['comment'].pk}/"), 404, "not_found")
    error(client.get(f"/api/artifacts/{company['artifact'].pk}/download/"), 404, "not_found")
    assert ids(client.get("/api/builds/", {"prototype": "company-one"})) == set()
    for person in (alice, mo):
        as_token(client, person)
        assert client.get("/api/prototypes/company-one/").json()["listing"] == "hidden"
        assert client.get(f"/api/builds/{company['build'].pk}/").status_code == 200


def test_hidden_comments_show_only_to_their_author_and_moderators(client, alice, bob, carol, mo, work):
    company = work["company"]
    said = feedback.add_comment(prototype=company["prototype"], revision=company["revision"], author=carol, body="Meh")
    Comment.objects.filter(pk=said.pk).update(hidden=True)
    for person, sees in [(bob, False), (alice, False), (carol, True), (mo, True)]:
        as_token(client, person)
        listed = ids(client.get("/api/comments/", {"prototype": "company-one"}))
        assert (said.pk in listed) is sees, person


def test_only_the_owner_sees_why_a_build_failed_in_detail(client, alice, bob, work):
    build = work["company"]["build"]
    Build.objects.filter(pk=build.pk).update(error_message="The tests failed.", error_detail="Traceback: secret path")
    as_token(client, bob)
    seen = client.get(f"/api/builds/{build.pk}/").json()
    assert seen["error_message"] == "The tests failed." and seen["error_detail"] == ""
    as_token(client, alice)
    assert client.get(f"/api/builds/{build.pk}/").json()["error_detail"] == "Traceback: secret path"


def test_targets_that_are_switched_off_are_shown_only_to_admins(client, bob, ada, target):
    Target.objects.create(
        slug="old-app", name="Old app", git_url="/nowhere", recipe_checked_at=timezone.now(), enabled=False
    )
    as_token(client, bob)
    assert slugs(client.get("/api/targets/")) == {"web-player"}
    error(client.get("/api/targets/old-app/"), 404, "not_found")
    as_token(client, ada)
    assert slugs(client.get("/api/targets/")) == {"web-player", "old-app"}


# --- one error format ------------------------------------------------------------------------------


def test_every_error_has_the_same_shape(client, alice, bob, work, enqueued):
    as_token(client, bob)
    refused = error(client.post("/api/prototypes/company-one/change/", {"idea": "Bigger buttons"},
                                content_type="application/json"), 403, "not_allowed")  # fmt: skip
    assert refused["message"].startswith("Only the prototype's owner can ask for changes.")
    edit = error(client.patch("/api/prototypes/company-one/", {"title": "Mine now"},
                              content_type="application/json"), 403, "permission_denied")  # fmt: skip
    assert edit["message"] == "Only the prototype's owner can edit it."
    invalid = error(client.post("/api/prototypes/", {"target": "nope", "visibility": "everyone"},
                                content_type="application/json"), 400, "invalid")  # fmt: skip
    assert set(invalid["fields"]) == {"target", "idea", "visibility"}
    assert invalid["message"] == "Some fields are not valid: idea, target, visibility."
    error(client.post("/api/prototypes/", "{not json", content_type="application/json"), 400, "parse_error")
    error(client.get("/api/prototypes/nothing-here/"), 404, "not_found")
    error(client.get("/api/no-such-thing/"), 404, "not_found")
    assert "end with a slash" in error(client.get("/api/prototypes"), 404, "not_found")["message"]
    error(client.delete("/api/prototypes/company-one/"), 405, "method_not_allowed")
    error(client.get("/api/prototypes/", {"page": 99}), 404, "not_found")
    error(client.get(f"/api/builds/{work['company']['build'].pk}/events/", {"after": "soon"}), 400, "invalid")
    assert enqueued == []


def test_even_our_own_failures_answer_in_the_error_format(client, bob, monkeypatch):
    from prototypes.api import TargetViewSet

    def broken(self):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(TargetViewSet, "get_queryset", broken)
    as_token(client, bob)
    failed = error(client.get("/api/targets/"), 500, "server_error")
    assert "the database" not in failed["message"]  # the details go to the log, not to the caller


def test_text_no_database_can_hold_answers_like_any_other_miss(client, bob, work):
    as_token(client, bob)  # PostgreSQL refuses NUL characters in text: a 404 or 400 here, never a 500
    error(client.get("/api/prototypes/company%00one/"), 404, "not_found")
    assert slugs(client.get("/api/prototypes/", {"owner": "ali\x00ce", "q": "Tu\x00ne"})) == {"company-one"}
    builds_of = ids(client.get("/api/builds/", {"prototype": "company-one\x00", "state": "\x00"}))
    assert builds_of == {work["company"]["build"].pk}  # NULs are dropped from filters
    bad = client.post(
        "/api/reactions/", {"prototype": "company\x00one", "kind": "like"}, content_type="application/json"
    )
    assert set(error(bad, 400, "invalid")["fields"]) == {"prototype"}
    bad = client.post("/api/prototypes/", {"target": "web\x00player", "idea": "x"}, content_type="application/json")
    assert set(error(bad, 400, "invalid")["fields"]) == {"target"}


def test_a_rate_limit_answers_429_in_the_error_format_with_when_to_try_again(client, alice, target, settings,
                                                                             enqueued):  # fmt: skip
    settings.RATELIMIT_BUILDS = "2/h"
    as_token(client, alice)
    for _ in range(2):
        assert client.post("/api/prototypes/", {"target": "web-player", "idea": "Dark mode"},
                           content_type="application/json").status_code == 201  # fmt: skip
    response = client.post("/api/prototypes/", {"target": "web-player", "idea": "Dark mode"},
                           content_type="application/json")  # fmt: skip
    limited = error(response, 429, "throttled")
    assert limited["message"].startswith("Too many new builds: at most 2 an hour. Try again in")
    assert int(response["Retry-After"]) > 0
    assert len(enqueued) == 2


# --- pages and filters -----------------------------------------------------------------------------


def test_lists_come_in_pages_of_25_or_as_many_as_asked_up_to_100(client, alice, bob, target):
    Prototype.objects.bulk_create([
        Prototype(slug=f"p-{i}", title=f"Prototype {i}", owner=alice, target=target, listing="listed")
        for i in range(105)
    ])  # fmt: skip
    as_token(client, bob)
    first = client.get("/api/prototypes/").json()
    assert first["count"] == 105 and len(first["results"]) == 25 and first["previous"] is None
    assert "page=2" in first["next"]
    assert len(client.get("/api/prototypes/", {"page_size": 10, "page": 3}).json()["results"]) == 10
    assert len(client.get("/api/prototypes/", {"page_size": 500}).json()["results"]) == 100
    everyone = set()
    for page in (1, 2, 3, 4, 5):
        everyone |= slugs(client.get("/api/prototypes/", {"page": page}))
    assert len(everyone) == 105


def test_lists_take_the_same_number_of_queries_for_5_or_40_items(client, alice, bob, target):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def queries(url):
        with CaptureQueriesContext(connection) as captured:
            assert client.get(url).status_code == 200
        return len(captured)

    def grow(n):
        for i in range(n):
            prototype, revision, build = make_prototype(alice, target, slug=f"grow-{Prototype.objects.count()}-{i}")
            prototype.tags.add(Tag.objects.get_or_create(name="audio")[0])
            Comment.objects.create(prototype=prototype, revision=revision, author=bob, body="Nice")
            Reaction.objects.create(prototype=prototype, user=bob)

    as_token(client, bob)
    urls = ["/api/prototypes/?page_size=100", "/api/builds/?page_size=100", "/api/revisions/?page_size=100",
            "/api/comments/?page_size=100", "/api/reactions/?page_size=100"]  # fmt: skip
    grow(5)
    few = [queries(url) for url in urls]
    grow(35)
    assert [queries(url) for url in urls] == few


def test_prototypes_filter_by_target_kind_owner_tag_visibility_listing_and_words(client, alice, bob, target):
    api_target = Target.objects.create(
        slug="podcast-api", name="Podcast API", kind="backend", git_url="/nowhere", recipe_checked_at=timezone.now()
    )
    timer, _, _ = make_prototype(alice, target, slug="sleep-timer")
    queue, revision, _ = make_prototype(bob, api_target, slug="queue")
    Revision.objects.filter(pk=revision.pk).update(prompt="Make the queue shuffle")
    draft, _, _ = make_prototype(bob, target, slug="draft", listing="draft", visibility="private")
    timer.tags.add(Tag.objects.create(name="audio"))
    as_token(client, bob)
    cases = {
        "target": ("podcast-api", {"queue"}),
        "kind": ("web", {"sleep-timer", "draft"}),
        "owner": ("alice", {"sleep-timer"}),
        "tag": ("audio", {"sleep-timer"}),
        "visibility": ("private", {"draft"}),
        "listing": ("draft", {"draft"}),
        "q": ("shuffle", {"queue"}),  # the words asked, through the catalog's search
    }
    for param, (value, expected) in cases.items():
        assert slugs(client.get("/api/prototypes/", {param: value})) == expected, param
    assert slugs(client.get("/api/prototypes/", {"owner": "bob", "kind": "backend"})) == {"queue"}


def test_builds_filter_by_state_and_prototype_and_events_by_sequence(client, alice, work):
    failed = Build.objects.create(revision=work["company"]["revision"], attempt=2)
    failed.move("failed")
    as_token(client, alice)
    assert ids(client.get("/api/builds/", {"state": "failed"})) == {failed.pk}
    assert ids(client.get("/api/builds/", {"prototype": "company-one"})) == {failed.pk, work["company"]["build"].pk}
    assert ids(client.get("/api/builds/", {"prototype": "company-one", "state": "succeeded"})) == {
        work["company"]["build"].pk
    }
    append_events(failed.pk, [("text", {"text": "Looking at the player"}), ("text", {"text": "Done"})])
    events = client.get(f"/api/builds/{failed.pk}/events/").json()
    assert [e["seq"] for e in events] == [1, 2, 3]
    later = client.get(f"/api/builds/{failed.pk}/events/", {"after": 1}).json()
    assert [(e["seq"], e["kind"], e["data"]) for e in later] == [(2, "text", {"text": "Looking at the player"}),
                                                                 (3, "text", {"text": "Done"})]  # fmt: skip


# --- making things ---------------------------------------------------------------------------------


def test_starting_a_prototype_queues_its_first_build(client, alice, target, enqueued):
    as_token(client, alice)
    response = client.post("/api/prototypes/", {"target": "web-player", "idea": "Add a sleep timer",
                                                "visibility": "private"}, content_type="application/json")  # fmt: skip
    assert response.status_code == 201, response.content
    build = response.json()
    assert build["state"] == "queued" and build["revision"] == 1 and build["attempt"] == 1
    assert response["Location"] == build["url"] and build["url"].endswith(f"/api/builds/{build['id']}/")
    assert [queued.pk for queued in enqueued] == [build["id"]]
    prototype = Prototype.objects.get(slug=build["prototype"])
    assert (prototype.owner, prototype.visibility, prototype.title) == (alice, "private", "Add a sleep timer")
    assert prototype.revisions.get().prompt == "Add a sleep timer"


def test_asking_for_a_change_retrying_and_cancelling_go_through_the_build_rules(client, alice, work, enqueued):
    company = work["company"]
    as_token(client, alice)
    response = client.post("/api/prototypes/company-one/change/", {"idea": "Bigger play button"},
                           content_type="application/json")  # fmt: skip
    assert response.status_code == 201 and response.json()["revision"] == 2
    change = Build.objects.get(pk=response.json()["id"])
    cancelled = client.post(f"/api/builds/{change.pk}/cancel/").json()
    assert cancelled["state"] == "cancelled"
    error(client.post(f"/api/builds/{change.pk}/cancel/"), 409, "conflict")
    retried = client.post(f"/api/builds/{change.pk}/retry/")
    assert retried.status_code == 201 and retried.json()["attempt"] == 2 and retried.json()["state"] == "queued"
    refused = error(client.post(f"/api/builds/{company['build'].pk}/retry/"), 403, "not_allowed")
    assert refused["message"] == "Only a failed or cancelled build can be tried again."
    assert [b.pk for b in enqueued] == [change.pk, retried.json()["id"]]


def test_remixing_a_version_starts_your_own_prototype(client, bob, work, enqueued):
    as_token(client, bob)
    revision = work["company"]["revision"]
    response = client.post(f"/api/revisions/{revision.pk}/remix/", {"idea": "In green"},
                           content_type="application/json")  # fmt: skip
    assert response.status_code == 201, response.content
    remix = Prototype.objects.get(slug=response.json()["prototype"])
    assert remix.owner == bob and remix.forked_from == revision
    shown = client.get(f"/api/prototypes/{remix.slug}/").json()
    assert shown["forked_from"] == {"prototype": "company-one", "number": 1}


def test_the_owner_edits_title_description_visibility_and_tags(client, alice, work):
    as_token(client, alice)
    response = client.patch("/api/prototypes/company-one/", {
        "title": "Tuned", "description": "**Loud**", "visibility": "link", "tags": ["Audio", "player", "audio"],
        "listing": "listed", "slug": "stolen",
    }, content_type="application/json")  # fmt: skip
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["title"], body["visibility"], body["tags"]) == ("Tuned", "link", ["audio", "player"])
    # Becoming link-only gives it a new slug nobody can guess (not "stolen": the slug is not writable).
    assert body["slug"].startswith("tuned-") and len(body["slug"]) == len("tuned-") + 16, body["slug"]
    assert client.get("/api/prototypes/company-one/").status_code == 404


def test_a_share_link_token_is_returned_once_and_never_again(client, alice, bob, work):
    as_token(client, alice)
    response = client.post("/api/share-links/", {"prototype": "company-one", "expires_in_days": 30},
                           content_type="application/json")  # fmt: skip
    assert response.status_code == 201, response.content
    made = response.json()
    token = made["token"]
    assert made["link"].endswith(reverse("shared", args=[token]))
    link = ShareLink.objects.get(pk=made["id"])
    assert link.token_hash == hash_token(token) and resolve(token) == link
    for again in (client.get(f"/api/share-links/{link.pk}/"), client.get("/api/share-links/")):
        assert token not in again.content.decode() and "token_hash" not in again.content.decode()
    revoked = client.post(f"/api/share-links/{link.pk}/revoke/").json()
    assert revoked["revoked"] is True and resolve(token) is None
    as_token(client, bob)  # only the owner shares, and sees the links
    assert ids(client.get("/api/share-links/")) == set()
    error(client.get(f"/api/share-links/{link.pk}/"), 404, "not_found")
    refused = error(client.post("/api/share-links/", {"prototype": "company-one"}, content_type="application/json"),
                    403, "not_allowed")  # fmt: skip
    assert refused["message"] == "Only the prototype's owner can share it by link."


def test_comments_reactions_and_flags(client, alice, bob, work):
    company = work["company"]
    as_token(client, bob)
    said = client.post("/api/comments/", {"prototype": "company-one", "body": "Love it"},
                       content_type="application/json")  # fmt: skip
    assert said.status_code == 201 and said.json()["author"] == "bob" and said.json()["revision"] == 1
    reply = client.post("/api/comments/", {"prototype": "company-one", "body": "Me too", "parent": said.json()["id"]},
                        content_type="application/json").json()  # fmt: skip
    assert reply["parent"] == said.json()["id"]

    liked = client.post(
        "/api/reactions/", {"prototype": "company-one", "kind": "love"}, content_type="application/json"
    )
    again = client.post(
        "/api/reactions/", {"prototype": "company-one", "kind": "love"}, content_type="application/json"
    )
    assert liked.status_code == again.status_code == 201 and liked.json()["id"] == again.json()["id"]
    assert Reaction.objects.filter(prototype=company["prototype"], user=bob).count() == 1

    flagged = client.post("/api/flags/", {"comment": company["comment"].pk, "reason": "Off topic"},
                          content_type="application/json")  # fmt: skip
    assert flagged.status_code == 201, flagged.content
    assert flagged.json()["prototype"] == "company-one" and flagged.json()["state"] == "open"
    error(client.post("/api/flags/", {"comment": company["comment"].pk, "reason": "Again"},
                      content_type="application/json"), 403, "not_allowed")  # fmt: skip

    as_token(client, alice)
    assert ids(client.get("/api/flags/")) == set()  # one sees the flags one raised
    error(client.delete(f"/api/reactions/{liked.json()['id']}/"), 403, "permission_denied")
    addressed = client.post(f"/api/comments/{said.json()['id']}/addressed/", {}, content_type="application/json")
    assert addressed.json()["addressed"] is True
    moderation.lock_comments(company["prototype"], by=_moderator(), reason="Heated")
    as_token(client, bob)
    assert client.delete(f"/api/reactions/{liked.json()['id']}/").status_code == 204
    assert not Reaction.objects.filter(user=bob).exists()
    locked = error(client.post("/api/comments/", {"prototype": "company-one", "body": "More"},
                               content_type="application/json"), 403, "not_allowed")  # fmt: skip
    assert "locked" in locked["message"]
    assert Flag.objects.filter(reporter=bob).count() == 1


def _moderator():
    from django.contrib.auth.models import Permission, User

    user = User.objects.create_user("mod2", password="x" * 12)
    user.user_permissions.add(Permission.objects.get(codename="moderate_prototype"))
    return User.objects.get(pk=user.pk)


def test_downloads_through_the_api_are_counted_like_the_pages(client, bob, work):
    artifact = work["company"]["artifact"]
    as_token(client, bob)
    listed = client.get("/api/artifacts/", {"prototype": "company-one"}).json()["results"]
    assert [a["id"] for a in listed] == [artifact.pk]
    response = client.get(listed[0]["download"])
    assert response.status_code == 200 and response.getvalue() == b"zip"
    assert "attachment" in response["Content-Disposition"]
    assert Visit.objects.filter(kind="download", user=bob, revision=work["company"]["revision"]).count() == 1
