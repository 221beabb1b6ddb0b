"""The store: the catalog (search, filters, sorts, pages, constant queries), safe rendering of what
people write, share links, feedback and counts."""

from datetime import timedelta

import pytest
from django.core import mail
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from prototypes.models import Build, Prototype, Revision, Tag, Target
from store import feedback
from store.models import Comment, Reaction, ShareLink, Visit
from store.sharing import create_link
from tests.test_pages import succeed

pytestmark = pytest.mark.django_db
XSS = '<script>alert("x")</script><img src=x onerror=alert(1)>'


@pytest.fixture
def target():
    return Target.objects.create(slug="web-player", name="Web Player", kind="web", git_url="/nowhere")


def listed(owner, target, n, **extra):
    prototypes = Prototype.objects.bulk_create([
        Prototype(slug=f"p-{owner.username}-{i}", title=f"Prototype {i}", summary=f"Summary {i}", owner=owner,
                  target=target, listing="listed", visibility="company", **extra)
        for i in range(n)
    ])  # fmt: skip
    revisions = Revision.objects.bulk_create(
        [Revision(prototype=p, number=1, prompt=f"idea {p.pk}", author=owner) for p in prototypes]
    )
    for prototype, revision in zip(prototypes, revisions, strict=True):
        prototype.current_revision = revision
    Prototype.objects.bulk_update(prototypes, ["current_revision"])
    return prototypes


def queries_for(client, url):
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200
    return len(captured)


def test_the_catalog_takes_the_same_number_of_queries_for_10_or_1000_prototypes(client, alice, bob, target):
    listed(alice, target, 10)
    client.force_login(bob)
    few = queries_for(client, "/?sort=trending")
    listed(bob, target, 990)
    many = queries_for(client, "/?sort=trending")
    assert few == many
    assert queries_for(client, "/?sort=liked&q=Prototype") == queries_for(client, "/?sort=discussed")


def test_the_catalog_pages_24_at_a_time(client, alice, bob, target):
    listed(alice, target, 30)
    client.force_login(bob)
    first = client.get("/").content.decode()
    assert first.count('class="card proto"') == 24 and "Page 1 of 2" in first
    assert client.get("/?page=2").content.decode().count('class="card proto"') == 6


def test_search_finds_titles_summaries_and_the_words_asked(client, alice, bob, target):
    one, two, three = listed(alice, target, 3)
    Prototype.objects.filter(pk=one.pk).update(title="Sleep timer")
    Prototype.objects.filter(pk=two.pk).update(summary="Counts episodes per show")
    Revision.objects.filter(prototype=three).update(prompt="Make the queue shuffle")
    client.force_login(bob)
    for words, expected in [("sleep", one), ("episodes", two), ("shuffle", three)]:
        page = client.get("/", {"q": words}).content.decode()
        assert f"/p/{expected.slug}/" in page and page.count('class="card proto"') == 1


def test_filters_narrow_the_catalog(client, alice, bob, target):
    backend = Target.objects.create(slug="api", name="Podcast API", kind="backend", git_url="/nowhere")
    web = listed(alice, target, 2)
    api = listed(bob, backend, 1)
    tag = Tag.objects.create(name="audio")
    web[0].tags.add(tag)
    client.force_login(bob)

    def cards(query):
        return client.get("/", query).content.decode().count('class="card proto"')

    assert cards({"target": "api"}) == 1
    assert cards({"kind": "web"}) == 2
    assert cards({"owner": "alice"}) == 2
    assert cards({"tag": "audio"}) == 1
    assert cards({"mine": "1"}) == 1 and api[0].slug in client.get("/", {"mine": "1"}).content.decode()


def test_sorts_order_by_likes_discussion_and_recent_activity(client, alice, bob, carol, target):
    quiet, liked, discussed = listed(alice, target, 3)
    Reaction.objects.create(prototype=liked, user=bob, kind="like")
    Reaction.objects.create(prototype=liked, user=carol, kind="like")
    month_ago = timezone.now() - timedelta(days=30)
    for n in range(3):
        Comment.objects.create(prototype=discussed, revision=discussed.current_revision, author=bob, body=f"c{n}",
                               created_at=month_ago)  # fmt: skip
    client.force_login(bob)

    def order(sort):
        page = client.get("/", {"sort": sort}).content.decode()
        return sorted([quiet, liked, discussed], key=lambda p: page.index(f"/p/{p.slug}/"))

    assert order("liked")[0] == liked
    assert order("discussed")[0] == discussed
    assert order("trending")[0] == liked  # its reactions are recent; the comments are a month old


def test_what_people_write_is_rendered_inert(client, alice, bob, target):
    prototype = Prototype.objects.create(slug="x", title=XSS, summary=XSS, description=f"**hi** {XSS} [a](javascript:alert(1))",
                                         owner=alice, target=target, listing="listed")  # fmt: skip
    revision = Revision.objects.create(prototype=prototype, number=1, prompt=XSS, author=alice, summary=XSS)
    prototype.current_revision = revision
    prototype.save()
    Comment.objects.create(prototype=prototype, revision=revision, author=bob, body=f"*hey* {XSS}")
    build = Build.objects.create(revision=revision)
    client.force_login(bob)
    for url in ["/", f"/p/{prototype.slug}/", f"/builds/{build.pk}/", "/?q=script"]:
        page = client.get(url).content.decode()
        assert "<script>alert" not in page and "onerror=alert" not in page.replace("onerror=alert(1)&gt;", "")
        assert "<img src=x" not in page and "javascript:alert" not in page
    page = client.get(f"/p/{prototype.slug}/").content.decode()
    assert "<strong>hi</strong>" in page and "<em>hey</em>" in page  # markdown still works


def test_a_share_link_grants_one_prototype_to_anyone_and_nothing_else(client, alice, target):
    mine, other = Prototype.objects.create(slug="mine", title="Mine", owner=alice, target=target, visibility="private"), \
        Prototype.objects.create(slug="other", title="Other", owner=alice, target=target, visibility="private")  # fmt: skip
    revs = [Revision.objects.create(prototype=p, number=1, prompt="idea", author=alice) for p in (mine, other)]
    artifacts = []
    for p, r in zip((mine, other), revs, strict=True):
        p.current_revision = r
        p.save()
        artifacts.append(succeed(Build.objects.create(revision=r), {}, kind="pyz", filename="app.pyz"))
    link, token = create_link(mine, by=alice, days=7)
    assert link.token_hash != token and token not in link.hint + link.token_hash

    page = client.get(f"/s/{token}/")  # signed out
    assert page.status_code == 200 and "Mine" in page.content.decode()
    assert client.get(f"/s/{token}/artifacts/{artifacts[0].pk}/download/").status_code == 200
    assert client.get(f"/s/{token}/artifacts/{artifacts[1].pk}/download/").status_code == 404  # another prototype
    for url in ["/", "/p/mine/", "/p/other/", f"/artifacts/{artifacts[0].pk}/download/"]:
        assert client.get(url).status_code == 302  # the link opens nothing else: sign in first
    link.refresh_from_db()
    assert link.uses == 1
    assert Visit.objects.filter(share_link=link, kind="view").count() == 1
    assert Visit.objects.filter(share_link=link, kind="download").count() == 1


def test_share_links_expire_and_can_be_revoked(client, alice, target):
    prototype = Prototype.objects.create(slug="p", title="P", owner=alice, target=target)
    expired, old = create_link(prototype, by=alice, days=1)
    ShareLink.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    assert client.get(f"/s/{old}/").status_code == 404
    link, token = create_link(prototype, by=alice, days=None)
    assert client.get(f"/s/{token}/").status_code == 200
    client.force_login(alice)
    client.post(f"/p/p/share/{link.pk}/revoke/")
    client.logout()
    assert client.get(f"/s/{token}/").status_code == 404
    assert client.get("/s/not-a-token/").status_code == 404


def test_only_the_owner_creates_share_links_and_taken_down_prototypes_stop_answering(client, alice, bob, target):
    prototype = Prototype.objects.create(slug="p", title="P", owner=alice, target=target, listing="listed")
    with pytest.raises(feedback.NotAllowed):
        create_link(prototype, by=bob)
    link, token = create_link(prototype, by=alice)
    Prototype.objects.filter(pk=prototype.pk).update(listing="hidden")
    assert client.get(f"/s/{token}/").status_code == 404


def test_the_owner_creates_a_share_link_on_the_page_and_sees_it_once(client, alice, target):
    Prototype.objects.create(slug="p", title="P", owner=alice, target=target)
    client.force_login(alice)
    page = client.post("/p/p/share/", {"expires": "7"}).content.decode()
    assert "/s/" in page and "cannot show it again" in page
    link = ShareLink.objects.get()
    assert link.expires_at is not None


def test_comments_reply_one_level_and_notify_the_owner_and_mentions(alice, bob, carol, target, settings,
                                                                    django_capture_on_commit_callbacks):  # fmt: skip
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    prototype = Prototype.objects.create(slug="p", title="P", owner=alice, target=target, listing="listed")
    revision = Revision.objects.create(prototype=prototype, number=1, prompt="idea", author=alice)
    with django_capture_on_commit_callbacks(execute=True):
        top = feedback.add_comment(prototype=prototype, revision=revision, author=bob, body="Nice, @carol look")
        reply = feedback.add_comment(prototype=prototype, revision=revision, author=carol, body="agreed", parent=top)
        deeper = feedback.add_comment(prototype=prototype, revision=revision, author=bob, body="!", parent=reply)
    assert reply.parent == top and deeper.parent == top  # one level of replies
    recipients = sorted((m.to[0], m.subject) for m in mail.outbox)
    assert ("alice@example.com", "Bob commented on “P”") in recipients
    assert ("carol@example.com", "Bob mentioned you on “P”") in recipients


def test_a_mention_of_someone_who_cannot_see_the_prototype_tells_them_nothing(alice, carol, target, settings,
                                                                             django_capture_on_commit_callbacks):  # fmt: skip
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    prototype = Prototype.objects.create(slug="p", title="Secret", owner=alice, target=target, visibility="private")
    revision = Revision.objects.create(prototype=prototype, number=1, prompt="idea", author=alice)
    with django_capture_on_commit_callbacks(execute=True):
        feedback.add_comment(prototype=prototype, revision=revision, author=alice, body="ping @carol")
    assert [m.to for m in mail.outbox] == []


def test_a_reaction_counts_once_per_person(client, alice, bob, target):
    prototype = Prototype.objects.create(slug="p", title="P", owner=alice, target=target, listing="listed")
    client.force_login(bob)
    client.post("/p/p/react/", {"kind": "like"})
    assert Reaction.objects.filter(prototype=prototype).count() == 1
    client.post("/p/p/react/", {"kind": "like"})  # again: taken back
    assert Reaction.objects.filter(prototype=prototype).count() == 0
    assert feedback.toggle_reaction(prototype=prototype, user=bob, kind="like") is True
    with pytest.raises(feedback.NotAllowed):
        feedback.toggle_reaction(prototype=prototype, user=bob, kind="angry")


def test_the_owner_marks_feedback_addressed_and_sends_it_to_the_agent(client, alice, bob, target):
    prototype = Prototype.objects.create(slug="p", title="P", owner=alice, target=target, listing="listed")
    revision = Revision.objects.create(
        prototype=prototype, number=1, prompt="idea", author=alice, result_commit="a" * 40
    )
    prototype.current_revision = revision
    prototype.save()
    comment = Comment.objects.create(prototype=prototype, revision=revision, author=bob, body="Make it bigger")
    client.force_login(bob)
    client.post(f"/comments/{comment.pk}/addressed/")
    comment.refresh_from_db()
    assert not comment.addressed  # only the owner
    client.force_login(alice)
    client.post(f"/comments/{comment.pk}/addressed/", {"addressed": "1"})
    comment.refresh_from_db()
    assert comment.addressed
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("prototypes.builds._enqueue", lambda build: None)
        response = client.post(f"/comments/{comment.pk}/send-to-agent/")
    comment.refresh_from_db()
    follow_up = comment.follow_up
    assert follow_up.number == 2 and follow_up.parent == revision
    assert follow_up.prompt.startswith("Make it bigger") and "Feedback from Bob" in follow_up.prompt
    assert response["Location"] == f"/p/{revision.prototype.slug}/builds/{follow_up.builds.get().pk}/"


def test_views_unique_viewers_and_downloads_are_counted_per_version(client, alice, bob, carol, target):
    prototype = Prototype.objects.create(slug="p", title="P", owner=alice, target=target, listing="listed")
    revision = Revision.objects.create(prototype=prototype, number=1, prompt="idea", author=alice)
    artifact = succeed(Build.objects.create(revision=revision), {}, kind="pyz", filename="app.pyz")
    for person in (bob, bob, carol):
        client.force_login(person)
        client.get("/p/p/")
    client.get(f"/artifacts/{artifact.pk}/download/")
    client.force_login(alice)
    page = client.get("/p/p/").content.decode()
    assert "4 views by 3 people · 1 download" in page


def test_a_share_link_opens_the_install_page_and_its_files_for_that_app_only(client, alice, target):
    prototype = Prototype.objects.create(slug="app", title="App", owner=alice, target=target, visibility="private")
    revision = Revision.objects.create(prototype=prototype, number=1, prompt="idea", author=alice)
    prototype.current_revision = revision
    prototype.save()
    apk = succeed(Build.objects.create(revision=revision), {}, kind="apk", filename="player.apk")
    apk.content_type = "application/vnd.android.package-archive"
    apk.metadata = {"package": "com.example.player", "version_name": "1.4", "version_code": 14}
    apk.save()
    _, token = create_link(prototype, by=alice)
    page = client.get(f"/s/{token}/artifacts/{apk.pk}/install/", HTTP_USER_AGENT="Mozilla/5.0 (Linux; Android 14)")
    assert page.status_code == 200 and "com.example.player" in page.content.decode()
    file = client.get(f"/s/{token}/artifacts/{apk.pk}/file/player.apk")
    assert file["Content-Type"] == "application/vnd.android.package-archive"
    assert client.get(f"/s/{token}/artifacts/{apk.pk}/qr.png")["Content-Type"] == "image/png"
    assert client.get(f"/artifacts/{apk.pk}/install/").status_code == 302  # not without the link
