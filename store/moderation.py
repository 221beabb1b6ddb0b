"""Moderation: flags, the moderators' actions, the audit trail, and telling owners why.

Every action a moderator takes goes through one function here, which checks who may take it, moves
the subject with a conditional update (two moderators clicking at once cannot both act), writes a
`ModerationAction` (who, what, why, when), resolves the flags it answers, and — once the transaction
commits — emails the person whose work it touched, with the reason. What hidden or removed content
looks like to everyone else is not decided here: `Prototype.objects.visible_to` already shows a
prototype that is not listed only to its owner, its collaborators and moderators, and everything in
the store (pages, search, builds, artifacts, previews, comments, share links) follows it.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from prototypes import access, builds
from prototypes.inputs import display_name
from prototypes.models import Prototype
from prototypes.notifications import email_about
from store import counts
from store.models import Comment, Flag, ModerationAction

NotAllowed = builds.NotAllowed
Action = ModerationAction.Action
Listing = Prototype.Listing

MAX_REASON_CHARS = 2000
GONE = (Listing.HIDDEN, Listing.REMOVED)
PROTOTYPE_ACTIONS = (
    Action.APPROVE, Action.HIDE, Action.REMOVE, Action.RESTORE, Action.LOCK_COMMENTS, Action.UNLOCK_COMMENTS,
)  # fmt: skip
COMMENT_ACTIONS = (Action.HIDE_COMMENT, Action.RESTORE_COMMENT)
NOTICE_DAYS = 14  # how long an owner keeps seeing "approved" / "restored" on their page


def is_moderator(user) -> bool:
    return access.can(user, "moderate")  # the role table (prototypes/access.py)


def is_admin(user) -> bool:
    return user.is_authenticated and user.is_active and user.is_superuser


def _name(user) -> str:
    return display_name(user)


def _reason(reason: str | None, *, required: bool = True) -> str:
    reason = (reason or "").strip()
    if required and not reason:
        raise NotAllowed("Say why in a few words: the person affected is told the reason.")
    if len(reason) > MAX_REASON_CHARS:
        raise NotAllowed(f"Keep the reason under {MAX_REASON_CHARS} characters.")
    return reason


def _can_see(user, prototype: Prototype) -> bool:
    return Prototype.objects.visible_to(user, by_link=True).filter(pk=prototype.pk).exists()


def _check_moderator(user, prototype: Prototype) -> None:
    if not is_moderator(user):
        raise NotAllowed("Only moderators can do this.")
    if not _can_see(user, prototype):
        # Moderators do not see private prototypes (only admins do), so they cannot act on them either.
        raise NotAllowed("You cannot see this prototype, so you cannot moderate it.")


# --- flags -------------------------------------------------------------------------------------------


def flag(
    *, reporter, reason: str, prototype: Prototype | None = None, comment: Comment | None = None, slug: str = ""
) -> Flag:
    """Ask moderators to look at a prototype or one comment on it. Anyone signed in who can see it
    may flag it, once: a second open flag by the same person on the same thing is refused. `slug` is
    the link the request carried, for a comment on a link-only prototype."""
    if comment is not None:
        if prototype is not None and comment.prototype_id != prototype.pk:
            raise NotAllowed("That comment belongs to another prototype.")
        prototype = comment.prototype
    if prototype is None:
        raise NotAllowed("Say what you are flagging.")
    reason = _reason(reason)
    if not reporter.is_authenticated:
        raise NotAllowed("Sign in to flag something.")
    if comment is not None:
        if not Comment.objects.visible_to(reporter, slug=slug).filter(pk=comment.pk).exists():
            raise NotAllowed("You cannot see this comment.")
        if comment.author_id == reporter.pk:
            raise NotAllowed("You cannot flag your own comment; you can ask a moderator to hide it.")
    elif not _can_see(reporter, prototype):
        raise NotAllowed("You cannot see this prototype.")
    elif prototype.owner_id == reporter.pk:
        raise NotAllowed("You cannot flag your own prototype.")
    with transaction.atomic():
        # Taking the prototype's row lock makes "one open flag per person" hold under double clicks
        # on databases that lock rows (PostgreSQL); SQLite serialises writers anyway.
        Prototype.objects.select_for_update().filter(pk=prototype.pk).first()
        if Flag.objects.filter(reporter=reporter, prototype=prototype, comment=comment, state=Flag.State.OPEN).exists():
            raise NotAllowed("You already flagged this. A moderator will look at it soon.")
        return Flag.objects.create(prototype=prototype, comment=comment, reporter=reporter, reason=reason)


def _close_flags(flags, state: str) -> list[int]:
    """Close open flags (resolved: acted on; dismissed: nothing to do). Returns their ids."""
    ids = list(flags.filter(state=Flag.State.OPEN).values_list("pk", flat=True))
    Flag.objects.filter(pk__in=ids, state=Flag.State.OPEN).update(state=state, resolved_at=timezone.now())
    return ids


def _answered_flag(flag_id, *, prototype: Prototype, comment: Comment | None = None) -> Flag | None:
    """The flag a moderator acted from (in the queue), when it is about this prototype — or, for an
    action on a comment, about this comment."""
    if not flag_id:
        return None
    flags = Flag.objects.filter(prototype=prototype)
    if comment is not None:
        flags = flags.filter(comment=comment)
    return flags.filter(pk=flag_id).first()


# --- the audit trail -----------------------------------------------------------------------------------


def _subject(prototype: Prototype, comment: Comment | None = None) -> str:
    """The subject as it was named when acted on: titles and comments change or vanish later."""
    if comment is None:
        return f"Prototype “{prototype.title}” ({prototype.slug})"[:300]
    words = " ".join(comment.body.split())
    snippet = words[:80] + ("…" if len(words) > 80 else "")
    return f"Comment {comment.pk} by {comment.author.username} on “{prototype.title}”: {snippet}"[:300]


def _audit(by, action: str, reason: str, *, prototype, comment=None, flag_=None) -> ModerationAction:
    return ModerationAction.objects.create(
        moderator=by, action=action, prototype=prototype, comment=comment, flag=flag_,
        subject=_subject(prototype, comment), reason=reason,
    )  # fmt: skip


def audit_trail(user):
    """The audit entries this person may read: all of them for admins; for moderators, those about
    prototypes they can see (an admin's action on a private prototype names it)."""
    entries = ModerationAction.objects.select_related("moderator", "prototype", "comment")
    if is_admin(user):
        return entries
    if is_moderator(user):
        visible = Prototype.objects.visible_to(user, by_link=True).values("pk")
        return entries.filter(Q(prototype__isnull=True) | Q(prototype__in=visible))
    return entries.none()


# --- telling people why ---------------------------------------------------------------------------------

OWNER_MESSAGES = {
    Action.APPROVE: ("“{title}” is in the store", "A moderator approved your prototype “{title}”: everyone in the company can find it in the store now."),
    Action.HIDE: ("“{title}” was hidden by a moderator", "A moderator hid your prototype “{title}”. Until it is restored, only you, people you invited and moderators can see it: it is gone from the store, and its previews, downloads and share links stop working for everyone else."),
    Action.REMOVE: ("“{title}” was removed by a moderator", "A moderator removed your prototype “{title}” from the store. Only you, people you invited and moderators can see it now: its previews, downloads and share links stop working for everyone else."),
    Action.RESTORE: ("“{title}” is back in the store", "A moderator restored your prototype “{title}”: people can see it again, and its share links work again."),
    Action.LOCK_COMMENTS: ("Comments on “{title}” were locked", "A moderator locked the comments on your prototype “{title}”: nobody can add new ones for now. Earlier comments stay."),
    Action.UNLOCK_COMMENTS: ("Comments on “{title}” are open again", "A moderator unlocked the comments on your prototype “{title}”."),
    Action.HIDE_COMMENT: ("Your comment on “{title}” was hidden", "A moderator hid your comment on “{title}”. Only you and moderators can see it now."),
    Action.RESTORE_COMMENT: ("Your comment on “{title}” is visible again", "A moderator restored your comment on “{title}”."),
}  # fmt: skip


def _tell(entry_id: int) -> None:
    """Email the person an action touched — the prototype's owner, or the comment's author — with the
    reason. Not when they took the action themselves."""
    entry = ModerationAction.objects.select_related("prototype__owner", "comment__author").filter(pk=entry_id).first()
    if entry is None or entry.prototype is None or entry.action not in OWNER_MESSAGES:
        return
    prototype = entry.prototype
    if entry.action in COMMENT_ACTIONS:
        if entry.comment is None:  # deleted since
            return
        person = entry.comment.author
    else:
        person = prototype.owner
    if person.pk == entry.moderator_id:
        return
    subject, text = (part.format(title=prototype.title) for part in OWNER_MESSAGES[entry.action])
    link = f"{settings.SITE_URL}{prototype.get_absolute_url()}"
    if entry.comment_id:
        link += f"#comment-{entry.comment_id}"
    reason = f"\n\nThe moderator's reason:\n{entry.reason}" if entry.reason else ""
    # A comment's author may have lost sight of the prototype since (made private): then nothing is sent.
    email_about(prototype, person, subject, f"{text}{reason}\n\nSee it: {link}\n")


def _done(by, action: str, reason: str, *, prototype, comment=None, flag_=None) -> ModerationAction:
    entry = _audit(by, action, reason, prototype=prototype, comment=comment, flag_=flag_)
    transaction.on_commit(lambda: _tell(entry.pk))
    return entry


# --- the actions ----------------------------------------------------------------------------------------


def _move(prototype: Prototype, *, allowed_from, refused: str, **fields) -> None:
    """Change the prototype only if it is still in one of `allowed_from` (a conditional update), so
    two moderators acting at once cannot both move it. `allowed_from` is a dict of field lookups."""
    updated = Prototype.objects.filter(pk=prototype.pk, **allowed_from).update(updated_at=timezone.now(), **fields)
    prototype.refresh_from_db()
    if not updated:
        raise NotAllowed(refused)


def approve(prototype: Prototype, *, by, reason: str = "", flag_id=None) -> ModerationAction:
    """List a prototype that is waiting for review."""
    _check_moderator(by, prototype)
    reason = _reason(reason, required=False)
    if prototype.owner_id == by.pk and not by.is_superuser:
        raise NotAllowed("Ask another moderator to review your own prototype.")
    with transaction.atomic():
        _move(prototype, allowed_from={"listing": Listing.PENDING}, listing=Listing.LISTED,
              refused="Only a prototype waiting for review can be approved.")  # fmt: skip
        answered = _answered_flag(flag_id, prototype=prototype)
        if answered:
            _close_flags(Flag.objects.filter(pk=answered.pk), Flag.State.RESOLVED)
        return _done(by, Action.APPROVE, reason, prototype=prototype, flag_=answered)


def _take_down(prototype: Prototype, *, by, reason: str, flag_id, listing: str, action: str) -> ModerationAction:
    _check_moderator(by, prototype)
    reason = _reason(reason)
    word = "hidden" if listing == Listing.HIDDEN else "removed"
    with transaction.atomic():
        _move(prototype, allowed_from={"listing__in": [s for s in Listing.values if s != listing]}, listing=listing,
              refused=f"This prototype is already {word}.")  # fmt: skip
        answered = _answered_flag(flag_id, prototype=prototype)
        # Taking the prototype down answers every open flag about the prototype itself; flags about
        # single comments stay open (unless acted from), as the comments come back with a restore.
        answers = Q(comment=None) | Q(pk=answered.pk) if answered else Q(comment=None)
        _close_flags(Flag.objects.filter(answers, prototype=prototype), Flag.State.RESOLVED)
        return _done(by, action, reason, prototype=prototype, flag_=answered)


def hide(prototype: Prototype, *, by, reason: str, flag_id=None) -> ModerationAction:
    """Take a prototype out of sight while it is looked into: only its owner, collaborators and
    moderators see it, everywhere (pages, search, the API, previews, downloads, share links)."""
    return _take_down(prototype, by=by, reason=reason, flag_id=flag_id, listing=Listing.HIDDEN, action=Action.HIDE)


def remove(prototype: Prototype, *, by, reason: str, flag_id=None) -> ModerationAction:
    """Take a prototype down for good (it can still be restored): seen as for `hide`."""
    return _take_down(prototype, by=by, reason=reason, flag_id=flag_id, listing=Listing.REMOVED, action=Action.REMOVE)


def restore(prototype: Prototype, *, by, reason: str) -> ModerationAction:
    """Bring a hidden or removed prototype back: listed again, or a draft if it never had a version."""
    _check_moderator(by, prototype)
    reason = _reason(reason)
    listing = Listing.LISTED if prototype.current_revision_id else Listing.DRAFT
    with transaction.atomic():
        _move(prototype, allowed_from={"listing__in": GONE}, listing=listing,
              refused="Only a hidden or removed prototype can be restored.")  # fmt: skip
        return _done(by, Action.RESTORE, reason, prototype=prototype)


def lock_comments(prototype: Prototype, *, by, reason: str, flag_id=None) -> ModerationAction:
    """No new comments on this prototype (store.feedback.add_comment refuses them); old ones stay."""
    _check_moderator(by, prototype)
    reason = _reason(reason)
    with transaction.atomic():
        _move(prototype, allowed_from={"comments_locked": False}, comments_locked=True,
              refused="Comments on this prototype are already locked.")  # fmt: skip
        answered = _answered_flag(flag_id, prototype=prototype)
        if answered:
            _close_flags(Flag.objects.filter(pk=answered.pk), Flag.State.RESOLVED)
        return _done(by, Action.LOCK_COMMENTS, reason, prototype=prototype, flag_=answered)


def unlock_comments(prototype: Prototype, *, by, reason: str) -> ModerationAction:
    _check_moderator(by, prototype)
    reason = _reason(reason)
    with transaction.atomic():
        _move(prototype, allowed_from={"comments_locked": True}, comments_locked=False,
              refused="Comments on this prototype are not locked.")  # fmt: skip
        return _done(by, Action.UNLOCK_COMMENTS, reason, prototype=prototype)


def _set_comment_hidden(comment: Comment, *, by, reason: str, hidden: bool, flag_id=None) -> ModerationAction:
    prototype = comment.prototype
    _check_moderator(by, prototype)
    reason = _reason(reason)
    with transaction.atomic():
        updated = Comment.objects.filter(pk=comment.pk, hidden=not hidden).update(hidden=hidden)
        comment.refresh_from_db()
        if not updated:
            raise NotAllowed("This comment is already hidden." if hidden else "This comment is not hidden.")
        counts.comment_hidden(comment, hidden=hidden)
        answered = None
        if hidden:
            answered = _answered_flag(flag_id, prototype=prototype, comment=comment)
            _close_flags(Flag.objects.filter(comment=comment), Flag.State.RESOLVED)
        action = Action.HIDE_COMMENT if hidden else Action.RESTORE_COMMENT
        return _done(by, action, reason, prototype=prototype, comment=comment, flag_=answered)


def hide_comment(comment: Comment, *, by, reason: str, flag_id=None) -> ModerationAction:
    """Only the comment's author and moderators see it afterwards."""
    return _set_comment_hidden(comment, by=by, reason=reason, hidden=True, flag_id=flag_id)


def restore_comment(comment: Comment, *, by, reason: str) -> ModerationAction:
    return _set_comment_hidden(comment, by=by, reason=reason, hidden=False)


def dismiss_flag(flag_: Flag, *, by, reason: str) -> ModerationAction:
    """Close a flag without acting on what it points at."""
    _check_moderator(by, flag_.prototype)
    reason = _reason(reason)
    with transaction.atomic():
        if not _close_flags(Flag.objects.filter(pk=flag_.pk), Flag.State.DISMISSED):
            raise NotAllowed("This flag was already dealt with.")
        flag_.refresh_from_db()
        # The reporter is not emailed: a dismissal says nothing to the owner, and nothing changed.
        return _audit(by, Action.DISMISS_FLAG, reason, prototype=flag_.prototype, comment=flag_.comment, flag_=flag_)


# --- what the queue and the prototype page show --------------------------------------------------------


def queue(user) -> dict:
    """What a moderator has to look at, newest first."""
    visible = Prototype.objects.visible_to(user, by_link=True)
    return {
        "pending": visible.filter(listing=Listing.PENDING).select_related("owner", "target").order_by("-updated_at"),
        "flags": Flag.objects.filter(state=Flag.State.OPEN, prototype__in=visible.values("pk"))
        .select_related("prototype__owner", "comment__author", "reporter")
        .order_by("-created_at"),
        "taken_down": visible.filter(listing__in=GONE).select_related("owner").order_by("-updated_at")[:50],
        "locked": visible.filter(comments_locked=True).exclude(listing__in=GONE).order_by("-updated_at")[:50],
        "hidden_comments": Comment.objects.filter(hidden=True, prototype__in=visible.values("pk"))
        .select_related("prototype", "author")
        .order_by("-created_at")[:50],
    }


def moderation_notice(prototype: Prototype, user) -> dict | None:
    """What the prototype's page tells its owner (and collaborators and moderators) about moderation:
    waiting for review, hidden or removed and why, comments locked and why, or recently approved or
    restored. None for everyone else, and when there is nothing to say.

    Keys: kind (the listing or action it is about), tone ("warn" or "info"), title, text, reason,
    moderator (a name, for moderators only: owners are told "a moderator"), when."""
    if not user.is_authenticated:
        return None
    moderator = is_moderator(user)
    if not (moderator or prototype.owner_id == user.pk or prototype.collaborators.filter(pk=user.pk).exists()):
        return None
    actions = ModerationAction.objects.filter(prototype=prototype).select_related("moderator")

    def notice(kind, tone, title, text, entry=None):
        return {
            "kind": kind, "tone": tone, "title": title, "text": text,
            "reason": entry.reason if entry else "",
            "moderator": _name(entry.moderator) if entry and moderator else "",
            "when": entry.created_at if entry else None,
        }  # fmt: skip

    if prototype.listing in GONE:
        entry = actions.filter(action__in=[Action.HIDE, Action.REMOVE]).first()
        word = "hid" if prototype.listing == Listing.HIDDEN else "removed"
        return notice(prototype.listing, "warn", f"A moderator {word} this prototype",
                      "Only you, people you invited and moderators can see it: it is not in the store, and its "
                      "previews, downloads and share links do not work for anyone else.", entry)  # fmt: skip
    if prototype.listing == Listing.PENDING:
        return notice(Listing.PENDING, "info", "Waiting for review",
                      "A moderator looks at new prototypes before they appear in the store. Until then only you, "
                      "people you invited and moderators can see it.")  # fmt: skip
    if prototype.comments_locked:
        entry = actions.filter(action=Action.LOCK_COMMENTS).first()
        return notice("comments_locked", "warn", "A moderator locked the comments",
                      "Nobody can add new comments for now; earlier ones stay.", entry)  # fmt: skip
    entry = actions.filter(action__in=PROTOTYPE_ACTIONS).first()
    recent = timezone.now() - timedelta(days=NOTICE_DAYS)
    if entry and entry.created_at >= recent and entry.action in (Action.APPROVE, Action.RESTORE):
        verb = "approved" if entry.action == Action.APPROVE else "restored"
        if prototype.visibility == Prototype.Visibility.COMPANY:
            text = "It is in the store for everyone in the company."
        elif prototype.visibility == Prototype.Visibility.LINK:
            text = "Anyone signed in who has its address can open it."
        else:
            text = "Only you and people you invited can see it, as you chose."
        return notice(entry.action, "info", f"A moderator {verb} this prototype", text, entry)
    return None
