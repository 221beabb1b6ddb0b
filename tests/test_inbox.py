"""Notifications inside the store: written by the code that sends the email, to exactly the people the
email goes to; an unread count in the header; marking read; and the access rule checked again when the
inbox is read."""

import pytest
from django.core import mail
from django.urls import reverse
from django.utils import timezone

from prototypes.models import Build, Prototype, Revision, Target
from store import feedback, moderation
from store.inbox import unread_count
from store.models import Notification

pytestmark = pytest.mark.django_db

KINDS = {  # name -> (visibility, listing)
    "private": ("private", "listed"),
    "link-only": ("link", "listed"),
    "draft": ("company", "draft"),
    "hidden": ("company", "hidden"),
    "company and listed": ("company", "listed"),
}


@pytest.fixture
def target():
    return Target.objects.create(slug="web", name="Web", git_url="/nowhere", recipe_checked_at=timezone.now())


def prototype_of(owner, target, kind="company and listed", title="Secret plan") -> Prototype:
    visibility, listing = KINDS[kind]
    prototype = Prototype.objects.create(slug="secret-plan", title=title, owner=owner, target=target,
                                         visibility=visibility, listing=listing)  # fmt: skip
    prototype.current_revision = Revision.objects.create(prototype=prototype, number=1, prompt="idea", author=owner)
    prototype.save()
    return prototype


def comment(prototype, author, body, capture):
    with capture(execute=True):
        return feedback.add_comment(prototype=prototype, revision=prototype.current_revision, author=author, body=body)


def finish(prototype, state, capture, **fields) -> Build:
    attempt = Build.objects.filter(revision=prototype.current_revision).count() + 1
    build = Build.objects.create(revision=prototype.current_revision, attempt=attempt, state="packaging")
    with capture(execute=True):
        build.move(state, **fields)
    return build


def notices():
    return sorted((n.user.email, n.kind) for n in Notification.objects.select_related("user"))


def emails(subject_word: str):
    return sorted(to for m in mail.outbox if subject_word in m.subject for to in m.to)


@pytest.mark.parametrize("kind", list(KINDS))
def test_notices_go_to_exactly_the_people_the_email_goes_to(kind, alice, bob, carol, target,
                                                            django_capture_on_commit_callbacks):  # fmt: skip
    prototype = prototype_of(alice, target, kind)
    prototype.collaborators.add(bob)  # bob may comment on every kind; carol was never invited
    comment(prototype, bob, "Nice. What do you think, @carol?", django_capture_on_commit_callbacks)
    finish(prototype, "failed", django_capture_on_commit_callbacks, error_message="The tests failed.")

    assert [n for n in notices() if n[1] == "comment"] == [(e, "comment") for e in emails("commented")]
    assert [n for n in notices() if n[1] == "mention"] == [(e, "mention") for e in emails("mentioned")]
    assert [n for n in notices() if n[1] == "build_failed"] == [(e, "build_failed") for e in emails("could not")]
    # The owner always hears; carol only where she may see the prototype without its link.
    expected = [("alice@example.com", "build_failed"), ("alice@example.com", "comment")]
    if kind == "company and listed":
        expected.append(("carol@example.com", "mention"))
    assert notices() == sorted(expected)


def test_a_finished_build_tells_its_owner_ready_or_failed_and_a_cancelled_one_nobody(
    alice, target, django_capture_on_commit_callbacks
):
    prototype = prototype_of(alice, target)
    ready = finish(prototype, "succeeded", django_capture_on_commit_callbacks)
    failed = finish(prototype, "failed", django_capture_on_commit_callbacks, error_message="Nope.")
    finish(prototype, "cancelled", django_capture_on_commit_callbacks)
    assert sorted(Notification.objects.values_list("user__username", "kind", "build")) == [
        ("alice", "build_failed", failed.pk),
        ("alice", "build_ready", ready.pk),
    ]
    assert len(mail.outbox) == 2


def test_a_reaction_sends_no_email_and_so_no_notice(alice, bob, target):
    prototype = prototype_of(alice, target)
    feedback.toggle_reaction(prototype=prototype, user=bob, kind="like")
    assert mail.outbox == [] and not Notification.objects.exists()


def test_moderation_emails_do_not_fill_the_inbox(alice, bob, ada, target, django_capture_on_commit_callbacks):
    prototype = prototype_of(alice, target)
    note = comment(prototype, bob, "Hm", django_capture_on_commit_callbacks)
    Notification.objects.all().delete()
    mail.outbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        moderation.hide_comment(note, by=ada, reason="off topic")
    assert len(mail.outbox) == 1 and not Notification.objects.exists()


def test_someone_without_an_email_address_still_gets_the_notice(alice, bob, target,
                                                                django_capture_on_commit_callbacks):  # fmt: skip
    alice.email = ""
    alice.save()
    prototype = prototype_of(alice, target)
    comment(prototype, bob, "Nice", django_capture_on_commit_callbacks)
    assert mail.outbox == []
    assert list(Notification.objects.values_list("user__username", "kind")) == [("alice", "comment")]


def test_the_header_shows_the_unread_count(client, alice, bob, target, django_capture_on_commit_callbacks):
    prototype = prototype_of(alice, target)
    comment(prototype, bob, "Nice", django_capture_on_commit_callbacks)
    finish(prototype, "succeeded", django_capture_on_commit_callbacks)
    client.force_login(alice)
    page = client.get(reverse("home")).content.decode()
    assert 'data-unread="2"' in page and 'aria-label="Notifications, 2 unread"' in page
    client.force_login(bob)
    assert 'data-unread="0"' in client.get(reverse("home")).content.decode()


def test_the_unread_count_is_one_query(alice, bob, target, django_capture_on_commit_callbacks,
                                       django_assert_num_queries):  # fmt: skip
    prototype = prototype_of(alice, target)
    for n in range(3):
        comment(prototype, bob, f"Note {n}", django_capture_on_commit_callbacks)
    alice.has_perm("prototypes.moderate_prototype")  # a page has read the person's permissions already
    with django_assert_num_queries(1):
        assert unread_count(alice) == 3


def test_the_inbox_words_each_notice_and_opening_one_marks_it_read(client, alice, bob, target,
                                                                   django_capture_on_commit_callbacks):  # fmt: skip
    prototype = prototype_of(alice, target)
    note = comment(prototype, bob, "Nice", django_capture_on_commit_callbacks)
    failed = finish(prototype, "failed", django_capture_on_commit_callbacks,
                    error_message="The app's tests failed.\nDetails follow.")  # fmt: skip
    client.force_login(alice)
    page = client.get(reverse("inbox")).content.decode()
    assert "Bob commented on “Secret plan”" in page
    assert "“Secret plan” version 1 could not be built" in page
    assert "The app&#x27;s tests failed." in page and "Details follow" not in page

    notice = Notification.objects.get(kind="comment")
    response = client.get(reverse("inbox_open", args=[notice.pk]))
    assert response.status_code == 302
    assert response["Location"] == f"{prototype.get_absolute_url()}#comment-{note.pk}"
    notice.refresh_from_db()
    assert notice.read and unread_count(alice) == 1
    response = client.get(reverse("inbox_open", args=[Notification.objects.get(kind="build_failed").pk]))
    assert response["Location"] == failed.get_absolute_url()


def test_nobody_opens_or_marks_someone_elses_notice(client, alice, bob, target, django_capture_on_commit_callbacks):
    prototype = prototype_of(alice, target)
    comment(prototype, bob, "Nice", django_capture_on_commit_callbacks)
    notice = Notification.objects.get()
    client.force_login(bob)
    assert client.get(reverse("inbox_open", args=[notice.pk])).status_code == 404
    client.post(reverse("inbox_read"))
    notice.refresh_from_db()
    assert not notice.read


def test_mark_all_read(client, alice, bob, target, django_capture_on_commit_callbacks):
    prototype = prototype_of(alice, target)
    comment(prototype, bob, "Nice", django_capture_on_commit_callbacks)
    finish(prototype, "succeeded", django_capture_on_commit_callbacks)
    client.force_login(alice)
    assert client.get(reverse("inbox_read")).status_code == 405  # a link can never mark things read
    response = client.post(reverse("inbox_read"))
    assert response.status_code == 302 and response["Location"] == reverse("inbox")
    assert unread_count(alice) == 0 and Notification.objects.filter(read=True).count() == 2
    assert 'data-unread="0"' in client.get(reverse("inbox")).content.decode()


def test_a_prototype_made_private_since_drops_out_of_the_inbox_title_and_all(
    client, alice, bob, target, django_capture_on_commit_callbacks
):
    prototype = prototype_of(alice, target)
    comment(prototype, alice, "@bob have a look", django_capture_on_commit_callbacks)
    notice = Notification.objects.get(user=bob)
    client.force_login(bob)
    assert "Secret plan" in client.get(reverse("inbox")).content.decode()

    Prototype.objects.filter(pk=prototype.pk).update(visibility="private")
    page = client.get(reverse("inbox")).content.decode()
    assert "Secret plan" not in page and 'data-unread="0"' in page
    assert unread_count(bob) == 0
    assert client.get(reverse("inbox_open", args=[notice.pk])).status_code == 404
    notice.refresh_from_db()
    assert not notice.read


def test_a_notice_of_a_hidden_comment_goes_with_the_comment(alice, bob, ada, target,
                                                            django_capture_on_commit_callbacks):  # fmt: skip
    prototype = prototype_of(alice, target)
    note = comment(prototype, bob, "Nice", django_capture_on_commit_callbacks)
    assert unread_count(alice) == 1
    moderation.hide_comment(note, by=ada, reason="spam")
    assert unread_count(alice) == 0


@pytest.mark.parametrize("method, path", [("get", "/start/"), ("get", "/mine/"), ("get", "/inbox/"),
                                          ("get", "/inbox/1/"), ("post", "/inbox/read/")])  # fmt: skip
def test_someone_signed_out_is_sent_to_sign_in_and_sees_nothing(client, method, path):
    response = getattr(client, method)(path)

    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")
