"""Moderation: flags, the moderation queue, every action's audit entry, the CSV export, who may do
what, locked comments, MODERATION_REQUIRED — and the journey: a moderator hides a prototype and it is
gone from the catalog, search, its page, its preview, its share links and its downloads for everyone
but its owner and moderators, until it is restored."""

import csv
import io
from datetime import datetime

import pytest
from django.core import mail
from django.urls import reverse
from django.utils import timezone

import agents
from prototypes.models import Artifact, Build, Prototype, Revision, Target
from prototypes.pipeline import store_result
from store import feedback, moderation
from store.models import Comment, Flag, ModerationAction
from store.previews import preview_token
from store.sharing import create_link
from tests.test_pages import succeed

pytestmark = pytest.mark.django_db
REASON = "Shows personal data of a colleague"


@pytest.fixture(autouse=True)
def _fast(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # the personas, quickly


@pytest.fixture
def target():
    return Target.objects.create(slug="web-player", name="Web Player", kind="web", git_url="/nowhere")


def published(owner, target, *, slug="sleep-timer", title="Sleep timer", **fields):
    """A listed company prototype with a web preview and a downloadable package."""
    fields = {"visibility": "company", "listing": "listed", **fields}
    prototype = Prototype.objects.create(slug=slug, title=title, owner=owner, target=target, **fields)
    revision = Revision.objects.create(prototype=prototype, number=1, prompt="Add a sleep timer", author=owner)
    build = Build.objects.create(revision=revision)
    web = succeed(build, {"index.html": b"<h1>Sleep timer</h1>"})
    app = Artifact(build=build, kind="pyz", filename="player.pyz", size=3, sha256="0" * 64,
                   content_type="application/octet-stream", metadata={})  # fmt: skip
    app.file.save("player.pyz", io.BytesIO(b"pyz"), save=True)
    prototype.refresh_from_db()
    return prototype, web, app


def comment_on(prototype, author, body="Nice work"):
    return Comment.objects.create(prototype=prototype, revision=prototype.current_revision, author=author, body=body)


def act(client, user, url, reason=REASON, **data):
    client.force_login(user)
    return client.post(url, {"reason": reason, **data})


# --- the journey ---------------------------------------------------------------------------------------


def what_they_reach(client, user, prototype, web, app, token, preview_of=None) -> dict:
    """What a person gets from every place the prototype shows up. The preview URL is the one the
    person was handed by the prototype's page (signed out: the one `preview_of` was handed)."""
    if user is None:
        client.logout()
    else:
        client.force_login(user)
    catalog = client.get("/").content.decode() if user else ""
    search = client.get("/", {"q": "sleep"}).content.decode() if user else ""
    urls = {
        "page": f"/p/{prototype.slug}/",
        "preview": reverse("preview", args=[preview_token(web, user=user or preview_of, slug=prototype.slug)]),
        "phone": f"/p/{prototype.slug}/phone/",
        "download": f"/artifacts/{app.pk}/download/",
        "install page": f"/artifacts/{app.pk}/install/",
        "install file": f"/artifacts/{app.pk}/file/{app.filename}",
        "build": f"/builds/{web.build_id}/",
        "share link": f"/s/{token}/",
        "shared download": f"/s/{token}/artifacts/{app.pk}/download/",
    }
    if user is None:
        urls = {name: url for name, url in urls.items() if name in ("preview", "share link", "shared download")}
    seen = {name: client.get(url).status_code for name, url in urls.items()}
    seen["catalog"] = f"/p/{prototype.slug}/" in catalog
    seen["search"] = f"/p/{prototype.slug}/" in search
    return seen


def test_a_moderator_hides_a_prototype_and_it_is_gone_for_everyone_but_its_owner_and_moderators(
    client, alice, bob, carol, mo, target, django_capture_on_commit_callbacks
):
    prototype, web, app = published(alice, target)
    _link, token = create_link(prototype, by=alice)
    before = what_they_reach(client, bob, prototype, web, app, token)
    assert before == {
        "page": 200, "preview": 200, "phone": 200, "download": 200, "install page": 200, "install file": 200,
        "build": 200, "share link": 200, "shared download": 200, "catalog": True, "search": True,
    }  # fmt: skip

    with django_capture_on_commit_callbacks(execute=True):
        response = act(client, mo, f"/moderation/p/{prototype.slug}/hide/")
    assert response.status_code == 302
    prototype.refresh_from_db()
    assert prototype.listing == "hidden"

    gone = {name: 404 for name in before} | {"catalog": False, "search": False}
    for person in (bob, carol):
        assert what_they_reach(client, person, prototype, web, app, token) == gone, person
    assert what_they_reach(client, None, prototype, web, app, token, preview_of=bob) == {
        "preview": 404,
        "share link": 404,
        "shared download": 404,
        "catalog": False,
        "search": False,
    }  # a preview token or share link handed out before no longer opens anything

    for person in (alice, mo):  # the owner and moderators still see it, through their session
        reached = what_they_reach(client, person, prototype, web, app, token)
        assert {name: reached[name] for name in ("page", "preview", "phone", "download", "install file")} == {
            "page": 200,
            "preview": 200,
            "phone": 200,
            "download": 200,
            "install file": 200,
        }, person
        assert reached["share link"] == 404 and not reached["catalog"]  # the link is down for everyone
    client.force_login(alice)
    assert f"/p/{prototype.slug}/" in client.get("/", {"mine": "1"}).content.decode()

    (message,) = mail.outbox  # the owner is told why
    assert message.to == ["alice@example.com"] and "hidden" in message.subject and REASON in message.body
    notice = moderation.moderation_notice(prototype, alice)
    assert notice["kind"] == "hidden" and notice["reason"] == REASON and notice["moderator"] == ""
    assert moderation.moderation_notice(prototype, mo)["moderator"] == "Mo"
    assert moderation.moderation_notice(prototype, bob) is None

    act(client, mo, f"/moderation/p/{prototype.slug}/restore/", reason="Checked with Alice: test data only")
    assert what_they_reach(client, bob, prototype, web, app, token) == before  # restore brings all of it back
    prototype.refresh_from_db()
    assert moderation.moderation_notice(prototype, alice)["title"] == "A moderator restored this prototype"


def test_removed_prototypes_are_gone_the_same_way_and_refuse_new_share_links(client, alice, bob, mo, target):
    prototype, web, app = published(alice, target)
    moderation.remove(prototype, by=mo, reason="Duplicate of the official sleep timer")
    _link, token = create_link(Prototype.objects.create(slug="other", title="Other", owner=alice, target=target),
                               by=alice)  # fmt: skip
    reached = what_they_reach(client, bob, prototype, web, app, token)
    assert reached["page"] == reached["preview"] == reached["download"] == 404 and not reached["catalog"]
    with pytest.raises(moderation.NotAllowed):
        create_link(prototype, by=alice)


# --- the audit trail -----------------------------------------------------------------------------------

ACTIONS = {
    # action: (how the prototype starts, what is acted on, the URL)
    "approve": ({"listing": "pending"}, "prototype", "/moderation/p/{slug}/approve/"),
    "hide": ({}, "prototype", "/moderation/p/{slug}/hide/"),
    "remove": ({}, "prototype", "/moderation/p/{slug}/remove/"),
    "restore": ({"listing": "hidden"}, "prototype", "/moderation/p/{slug}/restore/"),
    "lock_comments": ({}, "prototype", "/moderation/p/{slug}/lock-comments/"),
    "unlock_comments": ({"comments_locked": True}, "prototype", "/moderation/p/{slug}/unlock-comments/"),
    "hide_comment": ({}, "comment", "/moderation/comments/{comment}/hide/"),
    "restore_comment": ({}, "hidden comment", "/moderation/comments/{comment}/restore/"),
    "dismiss_flag": ({}, "flag", "/moderation/flags/{flag}/dismiss/"),
}


@pytest.mark.parametrize("action", ACTIONS)
def test_every_moderation_action_writes_who_what_why_and_when(client, alice, bob, mo, target, action):
    start, subject, url = ACTIONS[action]
    prototype, _web, _app = published(alice, target, **start)
    comment = comment_on(prototype, bob, body="Buy cheap watches at example.com")
    comment.hidden = subject == "hidden comment"
    comment.save()
    flag = Flag.objects.create(prototype=prototype, reporter=bob, reason="Looks like spam")
    before = timezone.now()

    response = act(client, mo, url.format(slug=prototype.slug, comment=comment.pk, flag=flag.pk),
                   reason=f"Reason for {action}")  # fmt: skip

    assert response.status_code == 302
    entry = ModerationAction.objects.get()
    assert entry.moderator == mo  # who
    assert entry.action == action  # what
    assert entry.reason == f"Reason for {action}"  # why
    assert before <= entry.created_at <= timezone.now()  # when
    assert entry.prototype == prototype and "Sleep timer" in entry.subject  # on what, named as it was then
    if "comment" in subject:
        assert entry.comment == comment and "Buy cheap watches" in entry.subject
    else:
        assert entry.comment is None
    if subject == "flag":
        assert entry.flag == flag
        flag.refresh_from_db()
        assert flag.state == "dismissed" and flag.resolved_at is not None


def test_the_effects_of_each_action(alice, bob, mo, target):
    prototype, _web, _app = published(alice, target, listing="pending")
    moderation.approve(prototype, by=mo)
    assert prototype.listing == "listed"
    moderation.lock_comments(prototype, by=mo, reason="Heated thread")
    assert Prototype.objects.get(pk=prototype.pk).comments_locked
    moderation.unlock_comments(prototype, by=mo, reason="Calmer now")
    assert not Prototype.objects.get(pk=prototype.pk).comments_locked
    comment = comment_on(prototype, bob)
    moderation.hide_comment(comment, by=mo, reason="Rude")
    assert Comment.objects.get(pk=comment.pk).hidden
    moderation.restore_comment(comment, by=mo, reason="Edited")
    assert not Comment.objects.get(pk=comment.pk).hidden
    assert list(ModerationAction.objects.order_by("created_at", "pk").values_list("action", flat=True)) == [
        "approve", "lock_comments", "unlock_comments", "hide_comment", "restore_comment",
    ]  # fmt: skip


def test_an_action_needs_a_reason_except_approving(alice, mo, target):
    prototype, _web, _app = published(alice, target, listing="pending")
    for function in (moderation.hide, moderation.remove, moderation.lock_comments):
        with pytest.raises(moderation.NotAllowed, match="Say why"):
            function(prototype, by=mo, reason="  ")
    moderation.approve(prototype, by=mo, reason="")
    assert ModerationAction.objects.get().reason == ""


def test_two_moderators_acting_at_once_act_once(alice, mo, ada, target):
    prototype, _web, _app = published(alice, target)
    stale = Prototype.objects.get(pk=prototype.pk)
    moderation.hide(prototype, by=mo, reason="Spam")
    with pytest.raises(moderation.NotAllowed, match="already hidden"):
        moderation.hide(stale, by=ada, reason="Spam too")
    assert ModerationAction.objects.count() == 1


def test_admins_export_the_audit_trail_as_csv(client, alice, bob, mo, ada, target):
    prototype, _web, _app = published(alice, target)
    comment = comment_on(prototype, bob)
    moderation.hide(prototype, by=mo, reason='=HYPERLINK("http://evil"), with a comma\nand a new line')
    moderation.hide_comment(comment, by=ada, reason="Rude")

    client.force_login(ada)
    response = client.get("/moderation/audit.csv")
    assert response.status_code == 200 and response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith('attachment; filename="moderation-audit-')
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[0] == ["time", "moderator", "action", "subject", "reason", "prototype", "comment"]
    hid, hid_comment = rows[1:]
    assert datetime.fromisoformat(hid[0]) <= datetime.fromisoformat(hid_comment[0])  # oldest first
    assert hid[1:3] == ["mo", "hide"] and hid[3] == "Prototype “Sleep timer” (sleep-timer)"
    assert hid[4] == '\'=HYPERLINK("http://evil"), with a comma\nand a new line'  # never run as a formula
    assert hid[5:] == ["sleep-timer", ""]
    assert hid_comment[1:3] == ["ada", "hide_comment"] and hid_comment[5:] == ["sleep-timer", str(comment.pk)]


def test_moderators_read_the_audit_trail_only_admins_export_it_and_nobody_else_sees_either(
    client, alice, bob, carol, mo, ada, target
):
    prototype, _web, _app = published(alice, target)
    moderation.hide(prototype, by=mo, reason=REASON)
    client.force_login(mo)
    page = client.get("/moderation/audit/").content.decode()
    assert REASON in page and "Hid the prototype" in page and "Export as CSV" not in page
    assert client.get("/moderation/audit.csv").status_code == 403
    client.force_login(ada)
    assert "Export as CSV" in client.get("/moderation/audit/").content.decode()
    for person in (alice, bob, carol):
        client.force_login(person)
        assert client.get("/moderation/audit/").status_code == 404
        assert client.get("/moderation/audit.csv").status_code == 404
    client.logout()
    assert client.get("/moderation/audit.csv")["Location"].startswith("/accounts/login/")


def test_moderators_do_not_read_admins_actions_on_private_prototypes(alice, mo, ada, target):
    secret, _web, _app = published(alice, target, slug="secret", title="Secret project", visibility="private")
    moderation.hide(secret, by=ada, reason="Leaked credentials")
    assert moderation.audit_trail(ada).count() == 1
    assert moderation.audit_trail(mo).count() == 0


# --- who may do what -------------------------------------------------------------------------------------


def test_people_who_are_not_moderators_get_a_404_from_the_queue_and_every_action(client, alice, bob, carol, target):
    prototype, _web, _app = published(alice, target, listing="pending")
    comment = comment_on(prototype, bob)
    flag = Flag.objects.create(prototype=prototype, reporter=bob, reason="Spam")
    actions = [f"/moderation/p/{prototype.slug}/{a}/" for a in moderation_views_actions()] + [
        f"/moderation/comments/{comment.pk}/hide/", f"/moderation/comments/{comment.pk}/restore/",
        f"/moderation/flags/{flag.pk}/dismiss/",
    ]  # fmt: skip
    for person in (alice, bob, carol):  # the owner included
        client.force_login(person)
        assert client.get("/moderation/").status_code == 404
        for url in actions:
            assert client.post(url, {"reason": "because"}).status_code == 404, url
    client.logout()
    assert client.get("/moderation/")["Location"].startswith("/accounts/login/")
    assert client.post(actions[0], {"reason": "x"})["Location"].startswith("/accounts/login/")
    assert ModerationAction.objects.count() == 0
    prototype.refresh_from_db()
    assert prototype.listing == "pending" and not prototype.comments_locked
    with pytest.raises(moderation.NotAllowed, match="Only moderators"):
        moderation.hide(prototype, by=bob, reason="I don't like it")


def moderation_views_actions():
    from store.moderation_views import PROTOTYPE_ACTIONS

    return list(PROTOTYPE_ACTIONS)


def test_moderators_cannot_see_or_act_on_private_prototypes_but_admins_can(client, alice, mo, ada, target):
    secret, _web, _app = published(alice, target, slug="secret", visibility="private")
    client.force_login(mo)
    assert client.post("/moderation/p/secret/hide/", {"reason": "x"}).status_code == 404
    with pytest.raises(moderation.NotAllowed):
        moderation.hide(secret, by=mo, reason="x")
    moderation.hide(secret, by=ada, reason="Admins see everything")
    assert Prototype.objects.get(pk=secret.pk).listing == "hidden"


def test_a_moderator_does_not_approve_their_own_prototype(mo, ada, target):
    prototype, _web, _app = published(mo, target, listing="pending")
    with pytest.raises(moderation.NotAllowed, match="another moderator"):
        moderation.approve(prototype, by=mo)
    moderation.approve(prototype, by=ada)
    assert prototype.listing == "listed"


# --- flags and the queue ----------------------------------------------------------------------------------


def test_anyone_who_sees_a_prototype_flags_it_once_with_a_reason(client, alice, bob, carol, target):
    prototype, _web, _app = published(alice, target)
    client.force_login(bob)
    response = client.post(f"/p/{prototype.slug}/flag/", {"reason": "Plays ads at full volume"}, follow=True)
    assert "A moderator will take a look" in response.content.decode()
    again = client.post(f"/p/{prototype.slug}/flag/", {"reason": "Really"}, follow=True).content.decode()
    assert "You already flagged this" in again
    assert client.post(f"/p/{prototype.slug}/flag/", {"reason": ""}, follow=True).status_code == 200
    (flag,) = Flag.objects.all()
    assert (flag.reporter, flag.reason, flag.state, flag.comment) == (bob, "Plays ads at full volume", "open", None)
    client.force_login(carol)
    client.post(f"/p/{prototype.slug}/flag/", {"reason": "Me too"})
    assert Flag.objects.count() == 2  # one open flag per person
    with pytest.raises(moderation.NotAllowed, match="your own"):
        moderation.flag(reporter=alice, prototype=prototype, reason="Oops")


def test_nobody_flags_what_they_cannot_see(client, alice, bob, carol, target):
    secret, _web, _app = published(alice, target, slug="secret", visibility="private")
    comment = comment_on(secret, alice)
    client.force_login(carol)
    assert client.post("/p/secret/flag/", {"reason": "x"}).status_code == 404
    assert client.post(f"/comments/{comment.pk}/flag/", {"reason": "x"}).status_code == 404
    with pytest.raises(moderation.NotAllowed):
        moderation.flag(reporter=carol, prototype=secret, reason="x")
    assert Flag.objects.count() == 0


def test_the_queue_shows_pending_listings_and_open_flags_newest_first(client, alice, bob, carol, mo, target):
    pending, _web, _app = published(alice, target, slug="waiting", title="Waiting one", listing="pending")
    flagged, _web2, _app2 = published(alice, target, slug="flagged", title="Flagged one")
    comment = comment_on(flagged, bob, body="Rude words here")
    moderation.flag(reporter=bob, prototype=flagged, reason="Old flag about the prototype")
    moderation.flag(reporter=carol, comment=comment, reason="New flag about a comment")
    client.force_login(mo)
    page = client.get("/moderation/").content.decode()
    assert "Waiting one" in page and "/moderation/p/waiting/approve/" in page
    assert page.index("New flag about a comment") < page.index("Old flag about the prototype")
    assert f"/moderation/comments/{comment.pk}/hide/" in page and "Rude words here" in page


def test_acting_from_a_flag_resolves_it_and_dismissing_closes_it(client, alice, bob, carol, mo, target):
    prototype, _web, _app = published(alice, target)
    comment = comment_on(prototype, bob)
    on_prototype = moderation.flag(reporter=bob, prototype=prototype, reason="Spam")
    on_comment = moderation.flag(reporter=carol, comment=comment, reason="Rude")
    other = moderation.flag(reporter=carol, prototype=prototype, reason="Not useful")
    act(client, mo, f"/moderation/comments/{comment.pk}/hide/", flag=on_comment.pk, **{"from": "queue"})
    act(client, mo, f"/moderation/flags/{other.pk}/dismiss/", reason="A matter of taste", **{"from": "queue"})
    states = dict(Flag.objects.values_list("pk", "state"))
    assert states == {on_prototype.pk: "open", on_comment.pk: "resolved", other.pk: "dismissed"}
    assert ModerationAction.objects.get(action="hide_comment").flag == on_comment
    response = act(client, mo, f"/moderation/p/{prototype.slug}/hide/", flag=on_prototype.pk, **{"from": "queue"})
    assert response["Location"] == "/moderation/"
    assert Flag.objects.get(pk=on_prototype.pk).state == "resolved"


def test_a_hidden_comment_is_seen_only_by_its_author_and_moderators_who_are_told_why(
    client, alice, bob, carol, mo, target, django_capture_on_commit_callbacks
):
    prototype, _web, _app = published(alice, target)
    comment = comment_on(prototype, bob, body="Something rude")
    with django_capture_on_commit_callbacks(execute=True):
        moderation.hide_comment(comment, by=mo, reason="Please keep it kind")
    for person, sees in [(carol, False), (alice, False), (bob, True), (mo, True)]:
        client.force_login(person)
        assert ("Something rude" in client.get(f"/p/{prototype.slug}/").content.decode()) is sees, person
    (message,) = mail.outbox
    assert message.to == ["bob@example.com"] and "Please keep it kind" in message.body


# --- locked comments ------------------------------------------------------------------------------------


def test_locked_comments_refuse_new_ones_until_unlocked(client, alice, bob, mo, target):
    prototype, _web, _app = published(alice, target)
    moderation.lock_comments(prototype, by=mo, reason="The thread got heated")
    with pytest.raises(feedback.NotAllowed, match="locked"):
        feedback.add_comment(prototype=prototype, revision=prototype.current_revision, author=alice, body="Hi")
    client.force_login(bob)
    page = client.post(f"/p/{prototype.slug}/comment/", {"body": "One more thing"}).content.decode()
    assert "A moderator locked the comments" in page and Comment.objects.count() == 0
    notice = moderation.moderation_notice(prototype, alice)
    assert notice["kind"] == "comments_locked" and notice["reason"] == "The thread got heated"
    moderation.unlock_comments(prototype, by=mo, reason="Calmer now")
    prototype.refresh_from_db()
    feedback.add_comment(prototype=prototype, revision=prototype.current_revision, author=bob, body="Thanks")
    assert Comment.objects.count() == 1


# --- MODERATION_REQUIRED ----------------------------------------------------------------------------------


def finish_first_build(owner, target, *, visibility="company", slug="new-idea"):
    """A new prototype's first build succeeding, stored by the pipeline's own function."""
    prototype = Prototype.objects.create(slug=slug, title="New idea", owner=owner, target=target,
                                         visibility=visibility)  # fmt: skip
    revision = Revision.objects.create(prototype=prototype, number=1, prompt="An idea", author=owner)
    build = Build.objects.create(revision=revision)
    for state in ["preparing", "running", "verifying", "packaging"]:
        build.move(state)
    store_result(build, agents.BuildResult(summary="Does the thing."))
    prototype.refresh_from_db()
    return prototype


def test_without_moderation_required_a_first_build_lists_the_prototype(settings, alice, target):
    settings.MODERATION_REQUIRED = False
    assert finish_first_build(alice, target).listing == "listed"


def test_with_moderation_required_a_company_prototype_waits_for_approval_then_is_listed(
    client, settings, alice, bob, mo, target, django_capture_on_commit_callbacks
):
    settings.MODERATION_REQUIRED = True
    prototype = finish_first_build(alice, target)
    assert prototype.listing == "pending"
    assert finish_first_build(alice, target, visibility="link", slug="by-link").listing == "listed"

    client.force_login(bob)
    assert client.get(f"/p/{prototype.slug}/").status_code == 404
    assert f"/p/{prototype.slug}/" not in client.get("/").content.decode()
    client.force_login(alice)
    assert client.get(f"/p/{prototype.slug}/").status_code == 200
    assert moderation.moderation_notice(prototype, alice)["title"] == "Waiting for review"
    client.force_login(mo)
    assert "New idea" in client.get("/moderation/").content.decode()

    with django_capture_on_commit_callbacks(execute=True):
        act(client, mo, f"/moderation/p/{prototype.slug}/approve/", reason="")
    prototype.refresh_from_db()
    assert prototype.listing == "listed"
    client.force_login(bob)
    assert f"/p/{prototype.slug}/" in client.get("/").content.decode()
    assert [m.subject for m in mail.outbox] == ["“New idea” is in the store"]
    assert moderation.moderation_notice(prototype, alice)["title"] == "A moderator approved this prototype"


def test_the_flag_form_is_offered_to_everyone_but_the_author(rf, alice, bob, target):
    from django.template.loader import render_to_string

    prototype, _web, _app = published(alice, target)
    comment = comment_on(prototype, bob)

    def form(user, **extra):
        request = rf.get("/")
        request.user = user
        return render_to_string("store/_flag_form.html", {"prototype": prototype, **extra}, request=request)

    assert f'action="/p/{prototype.slug}/flag/"' in form(bob) and 'name="reason"' in form(bob)
    assert "Flag" not in form(alice)  # not your own prototype
    assert f'action="/p/{prototype.slug}/comments/{comment.pk}/flag/"' in form(alice, flag_comment=comment)
    assert "Flag" not in form(bob, flag_comment=comment)  # not your own comment
