"""Notices inside the store: mentions, builds that finished, feedback on your prototype.

Who hears is decided once, by the code that sends the email (prototypes/notifications.py,
`email_about`): it sends the `told` signal for each person it lets through, and `record` below writes
their Notification. So the in-store notice and the email go to exactly the same people.

Reading is checked again (`Notification.objects.visible_to`): a prototype that became private to
someone since, or a comment a moderator hid, drops out of their inbox and their unread count, and the
words of a notice are made from the prototype as it is now, never from a copy taken when it was sent.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.dispatch import receiver
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path, reverse
from django.views.decorators.http import require_POST, require_safe

from prototypes.inputs import display_name
from prototypes.notifications import told
from store.models import Notification

INBOX_SIZE = 100  # the newest notices shown; older ones stay in the database, read or not


@receiver(told, dispatch_uid="store.inbox.record")
def record(*, prototype, user, notice: str, build=None, comment=None, **_kwargs) -> Notification:
    """Write the notice the email rule let through (a receiver of `told`)."""
    # A savepoint of its own: a notice that cannot be written must not spoil the caller's transaction.
    with transaction.atomic():
        return Notification.objects.create(user=user, kind=notice, prototype=prototype, build=build, comment=comment)


def notices_for(user):
    """A person's notices as they may read them now, newest first, with what their words need."""
    return Notification.objects.visible_to(user).select_related("prototype", "build__revision", "comment__author")


def unread_count(user) -> int:
    """The header's number: one COUNT query, access rule included."""
    if not user.is_authenticated:
        return 0
    return Notification.objects.visible_to(user).unread().count()


@dataclass(frozen=True)
class Notice:
    """One notice in words: what happened, an optional second line, where it leads."""

    pk: int
    kind: str
    text: str
    detail: str
    link: str
    read: bool
    created_at: object


def describe(notification: Notification) -> Notice:
    """A notice's words, from the prototype, build and comment as they are now."""
    prototype, title = notification.prototype, f"“{notification.prototype.title}”"
    detail = ""
    if notification.kind in (Notification.Kind.MENTION, Notification.Kind.COMMENT) and notification.comment:
        who = display_name(notification.comment.author)
        verb = "mentioned you on" if notification.kind == Notification.Kind.MENTION else "commented on"
        text = f"{who} {verb} {title}"
        link = f"{prototype.get_absolute_url()}#comment-{notification.comment_id}"
    elif notification.build is not None:
        number = notification.build.revision.number
        if notification.kind == Notification.Kind.BUILD_READY:
            text = f"{title} version {number} is ready to try"
            link = reverse("version", args=[prototype.slug, number])
        else:
            text = f"{title} version {number} could not be built"
            detail = (notification.build.error_message.strip().splitlines() or [""])[0]
            link = notification.build.get_absolute_url()
    else:  # what it pointed at was deleted since
        text, link = f"{notification.get_kind_display()}: {title}", prototype.get_absolute_url()
    return Notice(notification.pk, notification.kind, text, detail, link, notification.read, notification.created_at)


@login_required
@require_safe
def inbox(request):
    notices = [describe(n) for n in notices_for(request.user)[:INBOX_SIZE]]
    return render(request, "store/inbox.html", {
        "notices": notices, "unread": sum(not n.read for n in notices),
    })  # fmt: skip


@login_required
@require_safe
def open_notice(request, pk):
    """Mark one of your own notices read and go where it leads. Only ever your own row changes, and a
    notice about a prototype you may no longer see is a 404, like the prototype itself."""
    notification = get_object_or_404(notices_for(request.user), pk=pk)
    if not notification.read:
        Notification.objects.filter(pk=notification.pk, user=request.user).update(read=True)
    return redirect(describe(notification).link)


@login_required
@require_POST
def read_all(request):
    marked = Notification.objects.filter(user=request.user, read=False).update(read=True)
    if marked:
        messages.success(request, "All notifications are marked as read.")
    return redirect("inbox")


urlpatterns = [
    path("inbox/", inbox, name="inbox"),
    path("inbox/read/", read_all, name="inbox_read"),
    path("inbox/<int:pk>/", open_notice, name="inbox_open"),
]
