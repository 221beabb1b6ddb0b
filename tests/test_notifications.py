"""Notifications never leak: a shared Slack channel hears only about prototypes everyone in the
company sees in the store (company-visible and listed); emails about a prototype reach only people
who may see it. Slack is a real HTTP server here, so nothing but the boundary is replaced."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from django.core import mail

from prototypes import notifications
from prototypes.models import Build, Prototype, Revision, Target
from store import feedback, moderation

pytestmark = pytest.mark.django_db

KINDS = {  # name -> (visibility, listing)
    "private": ("private", "listed"),
    "link-only": ("link", "listed"),
    "draft": ("company", "draft"),
    "pending": ("company", "pending"),
    "hidden": ("company", "hidden"),
    "removed": ("company", "removed"),
    "company and listed": ("company", "listed"),
}


class Channel(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):
        Channel.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"])))["text"])
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def channel(settings):
    server = HTTPServer(("127.0.0.1", 0), Channel)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    settings.SLACK_WEBHOOK_URL = f"http://127.0.0.1:{server.server_port}/hook"
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    Channel.received = []
    yield Channel.received
    server.shutdown()


@pytest.fixture
def target():
    return Target.objects.create(slug="web", name="Web", git_url="/nowhere")


def prototype_of(owner, target, kind) -> Prototype:
    visibility, listing = KINDS[kind]
    prototype = Prototype.objects.create(slug="secret-plan", title="Secret plan", owner=owner, target=target,
                                         visibility=visibility, listing=listing)  # fmt: skip
    revision = Revision.objects.create(prototype=prototype, number=1, prompt="idea", author=owner)
    prototype.current_revision = revision
    prototype.save()
    return prototype


@pytest.mark.parametrize("kind", list(KINDS))
def test_the_shared_channel_hears_only_of_company_listed_prototypes(kind, channel, alice, bob, target,
                                                                   django_capture_on_commit_callbacks):  # fmt: skip
    prototype = prototype_of(alice, target, kind)
    prototype.collaborators.add(bob)  # bob may comment on every kind
    with django_capture_on_commit_callbacks(execute=True):
        feedback.add_comment(prototype=prototype, revision=prototype.current_revision, author=bob, body="Nice")
        build = Build.objects.create(revision=prototype.current_revision)
        build.move("failed", error_message="The tests failed.")
    if kind == "company and listed":
        assert len(channel) == 2 and all("Secret plan" in text for text in channel)
    else:
        assert channel == [], f"the channel heard of a {kind} prototype: {channel}"
    # The owner always hears, by email: they may see their own work whatever its state.
    assert sorted(m.subject for m in mail.outbox) == ["Bob commented on “Secret plan”",
                                                      "“Secret plan” could not be built"]  # fmt: skip


def test_the_channel_follows_the_prototype_as_it_is_when_the_message_leaves(channel, alice, target):
    prototype = prototype_of(alice, target, "company and listed")
    stale = Prototype.objects.get(pk=prototype.pk)
    Prototype.objects.filter(pk=prototype.pk).update(visibility="private")  # made private meanwhile
    assert notifications.post_to_slack("“Secret plan” is ready", about=stale) is False
    assert channel == []


@pytest.mark.parametrize("kind", ["private", "link-only", "pending", "hidden"])
def test_a_mention_of_someone_who_may_not_see_the_prototype_sends_nothing(kind, channel, alice, carol, target,
                                                                         django_capture_on_commit_callbacks):  # fmt: skip
    # carol (a viewer colleague) was never invited and never got the link: the store must not be the
    # one that gives her the title, the words and the address.
    prototype = prototype_of(alice, target, kind)
    with django_capture_on_commit_callbacks(execute=True):
        feedback.add_comment(prototype=prototype, revision=prototype.current_revision, author=alice,
                             body="what do you think, @carol?")  # fmt: skip
    assert [m.to for m in mail.outbox] == []


def test_a_mention_of_someone_who_sees_the_prototype_tells_them(channel, alice, carol, target,
                                                                django_capture_on_commit_callbacks):  # fmt: skip
    prototype = prototype_of(alice, target, "link-only")
    prototype.collaborators.add(carol)
    with django_capture_on_commit_callbacks(execute=True):
        feedback.add_comment(prototype=prototype, revision=prototype.current_revision, author=alice,
                             body="what do you think, @carol?")  # fmt: skip
    assert [(m.to, m.subject) for m in mail.outbox] == [(["carol@example.com"], "Alice mentioned you on “Secret plan”")]


def test_a_commenter_who_lost_sight_of_the_prototype_is_not_told_of_moderation(channel, alice, bob, ada, target,
                                                                               django_capture_on_commit_callbacks):  # fmt: skip
    prototype = prototype_of(alice, target, "company and listed")
    comment = feedback.add_comment(prototype=prototype, revision=prototype.current_revision, author=bob, body="Hm")
    Prototype.objects.filter(pk=prototype.pk).update(visibility="private")
    mail.outbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        moderation.hide_comment(comment, by=ada, reason="off topic")  # only admins moderate private work
    assert [m.to for m in mail.outbox] == []


def test_bidi_controls_in_titles_never_reorder_a_notification(channel, alice, bob, target,
                                                              django_capture_on_commit_callbacks):  # fmt: skip
    prototype = prototype_of(alice, target, "company and listed")
    Prototype.objects.filter(pk=prototype.pk).update(title="Invoice \u202egpj.exe\u202c plan")
    prototype.refresh_from_db()
    with django_capture_on_commit_callbacks(execute=True):
        feedback.add_comment(prototype=prototype, revision=prototype.current_revision, author=bob, body="Nice")
    sent = [*channel, *(m.subject for m in mail.outbox), *(m.body for m in mail.outbox)]
    assert sent and all("Invoice gpj.exe plan" in text or "Invoice" not in text for text in sent)
    assert not any(ch in text for text in sent for ch in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
