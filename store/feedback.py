"""Feedback on prototypes: comments with one level of replies, @mentions, reactions, marking feedback
addressed, and sending a comment to the agent as the next change."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction

from prototypes import builds
from prototypes.inputs import display_name, is_visibly_empty
from prototypes.models import Build, Prototype, Revision
from prototypes.notifications import email_about, post_to_slack
from store.markdown import mentions
from store.models import Comment, Reaction

MAX_COMMENT_CHARS = 5000
NotAllowed = builds.NotAllowed


def add_comment(
    *, prototype: Prototype, revision: Revision, author, body: str, parent: Comment | None = None
) -> Comment:
    if prototype.comments_locked:
        raise NotAllowed("A moderator locked the comments on this prototype, so no new ones can be added.")
    body = body.strip()
    if is_visibly_empty(body):
        raise NotAllowed("Write something first.")
    if len(body) > MAX_COMMENT_CHARS:
        raise NotAllowed(f"Keep comments under {MAX_COMMENT_CHARS} characters.")
    if revision.prototype_id != prototype.pk:
        raise NotAllowed("That version belongs to another prototype.")
    if parent is not None:
        if parent.prototype_id != prototype.pk:
            raise NotAllowed("That comment belongs to another prototype.")
        parent = parent.parent or parent  # replies stay one level deep
    comment = Comment.objects.create(prototype=prototype, revision=revision, author=author, body=body, parent=parent)
    transaction.on_commit(lambda: notify_feedback(comment.pk))
    return comment


def notify_feedback(comment_id: int) -> None:
    """The owner hears about feedback on their prototype; people @mentioned who can see it without its
    link, too; the shared channel only when the prototype is company-visible and listed."""
    comment = Comment.objects.select_related("prototype__owner", "author").get(pk=comment_id)
    prototype, author = comment.prototype, comment.author
    link = f"{settings.SITE_URL}{prototype.get_absolute_url()}#comment-{comment.pk}"
    who = display_name(author)
    if author.pk != prototype.owner_id:
        email_about(prototype, prototype.owner, f"{who} commented on “{prototype.title}”",
                    f"{comment.body}\n\nReply: {link}\n", notice="comment", comment=comment)  # fmt: skip
        post_to_slack(f"💬 {who} commented on “{prototype.title}”: {link}", about=prototype)
    names = {name.rstrip(".") for name in mentions(comment.body)} - {author.username, prototype.owner.username}
    for user in get_user_model().objects.filter(username__in=names, is_active=True):
        email_about(prototype, user, f"{who} mentioned you on “{prototype.title}”",
                    f"{comment.body}\n\nSee it: {link}\n", by_link=False, notice="mention", comment=comment)  # fmt: skip


def toggle_reaction(*, prototype: Prototype, user, kind: str) -> bool:
    """React once per kind; reacting again takes it back. Returns whether the reaction is now there."""
    if kind not in Reaction.Kind.values:
        raise NotAllowed("Unknown reaction.")
    deleted, _ = Reaction.objects.filter(prototype=prototype, user=user, kind=kind).delete()
    if deleted:
        return False
    try:
        with transaction.atomic():
            Reaction.objects.create(prototype=prototype, user=user, kind=kind)
    except IntegrityError:
        pass  # a double click: the reaction is there once, as wanted
    return True


def set_addressed(comment: Comment, *, by, addressed: bool = True) -> None:
    if comment.prototype.owner_id != by.pk:
        raise NotAllowed("Only the prototype's owner can mark feedback as addressed.")
    comment.addressed = addressed
    comment.save(update_fields=["addressed"])


def send_to_agent(comment: Comment, *, by) -> Build:
    """Turn a comment into the next change request, built on the current version."""
    prototype = comment.prototype
    if prototype.owner_id != by.pk:
        raise NotAllowed("Only the prototype's owner can send feedback to the agent.")
    if comment.follow_up_id:
        raise NotAllowed("This comment was already sent to the agent.")
    who = display_name(comment.author)
    build = builds.ask_for_change(prototype, by=by, idea=f"{comment.body}\n\n(Feedback from {who}.)")
    comment.follow_up = build.revision
    comment.addressed = True
    comment.save(update_fields=["follow_up", "addressed"])
    return build
