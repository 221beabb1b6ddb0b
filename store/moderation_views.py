"""Moderation pages: flagging, the moderation queue, and the audit trail. Thin: the rules live in
store/moderation.py.

Who may open what: anyone signed in may flag what they can see; the queue and its actions are for
moderators (everyone else gets a 404, as if the pages did not exist); moderators and admins read the
audit trail; only admins export it as CSV (moderators get a 403 there, everyone else a 404)."""

from __future__ import annotations

import csv
from functools import wraps

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import Http404, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path, reverse
from django.utils import timezone
from django.views.decorators.http import require_POST, require_safe

from prototypes.inputs import parse_int
from prototypes.models import Prototype
from store import moderation
from store.models import Comment, Flag, ModerationAction

AUDIT_PAGE_SIZE = 50
PROTOTYPE_ACTIONS = {
    "approve": moderation.approve,
    "hide": moderation.hide,
    "remove": moderation.remove,
    "restore": moderation.restore,
    "lock-comments": moderation.lock_comments,
    "unlock-comments": moderation.unlock_comments,
}
COMMENT_ACTIONS = {"hide": moderation.hide_comment, "restore": moderation.restore_comment}
TAKES_FLAG = {moderation.approve, moderation.hide, moderation.remove, moderation.lock_comments, moderation.hide_comment}
CSV_COLUMNS = ["time", "moderator", "action", "subject", "reason", "prototype", "comment"]


def moderator_required(view):
    """Signed in (else the sign-in page) and a moderator (else a 404: the pages are not advertised)."""

    @wraps(view)
    @login_required
    def wrapper(request, *args, **kwargs):
        if not moderation.is_moderator(request.user):
            raise Http404("No such page.")
        return view(request, *args, **kwargs)

    return wrapper


def _back(request, default: str) -> str:
    """Where to go after a form: the queue when it came from there, else the subject's page."""
    return reverse("moderation_queue") if request.POST.get("from") == "queue" else default


# --- flagging (anyone signed in) ---------------------------------------------------------------------------


@login_required
@require_POST
def flag_prototype(request, slug):
    prototype = get_object_or_404(Prototype.objects.visible_to(request.user, by_link=True), slug=slug)
    try:
        moderation.flag(reporter=request.user, prototype=prototype, reason=request.POST.get("reason", ""))
    except moderation.NotAllowed as exc:
        messages.error(request, str(exc))
    else:
        messages.info(request, "Thanks for flagging it. A moderator will take a look.")
    return redirect(prototype)


@login_required
@require_POST
def flag_comment(request, pk, slug=""):
    comment = get_object_or_404(Comment.objects.visible_to(request.user, slug=slug).select_related("prototype"), pk=pk)
    try:
        moderation.flag(reporter=request.user, comment=comment, reason=request.POST.get("reason", ""), slug=slug)
    except moderation.NotAllowed as exc:
        messages.error(request, str(exc))
    else:
        messages.info(request, "Thanks for flagging the comment. A moderator will take a look.")
    return redirect(f"{comment.prototype.get_absolute_url()}#comment-{comment.pk}")


# --- the queue and its actions (moderators) ---------------------------------------------------------------


@moderator_required
@require_safe
def queue(request):
    return render(request, "store/moderation_queue.html", moderation.queue(request.user))


def _act(request, function, subject, default_next: str, **kwargs):
    if function in TAKES_FLAG and parse_int(request.POST.get("flag")):
        kwargs["flag_id"] = parse_int(request.POST["flag"])
    try:
        entry = function(subject, by=request.user, reason=request.POST.get("reason", ""), **kwargs)
    except moderation.NotAllowed as exc:
        messages.error(request, str(exc))
    else:
        messages.info(request, f"{entry.get_action_display()}: {entry.subject}.")
    return redirect(_back(request, default_next))


@moderator_required
@require_POST
def act_on_prototype(request, slug, action):
    function = PROTOTYPE_ACTIONS.get(action)
    if function is None:
        raise Http404("No such moderation action.")
    prototype = get_object_or_404(Prototype.objects.visible_to(request.user, by_link=True), slug=slug)
    return _act(request, function, prototype, prototype.get_absolute_url())


@moderator_required
@require_POST
def act_on_comment(request, pk, action):
    function = COMMENT_ACTIONS.get(action)
    if function is None:
        raise Http404("No such moderation action.")
    comment = get_object_or_404(Comment.objects.visible_to(request.user).select_related("prototype"), pk=pk)
    return _act(request, function, comment, f"{comment.prototype.get_absolute_url()}#comment-{comment.pk}")


@moderator_required
@require_POST
def dismiss_flag(request, pk):
    visible = Prototype.objects.visible_to(request.user, by_link=True).values("pk")
    item = get_object_or_404(Flag.objects.filter(prototype__in=visible).select_related("prototype"), pk=pk)
    return _act(request, moderation.dismiss_flag, item, reverse("moderation_queue"))


# --- the audit trail ---------------------------------------------------------------------------------------


@moderator_required
@require_safe
def audit(request):
    entries = moderation.audit_trail(request.user)
    action = request.GET.get("action", "")
    if action in ModerationAction.Action.values:
        entries = entries.filter(action=action)
    page = Paginator(entries, AUDIT_PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "store/moderation_audit.html", {
        "page": page, "action": action, "actions": ModerationAction.Action.choices,
        "can_export": moderation.is_admin(request.user),
    })  # fmt: skip


def _cell(value) -> str:
    """A CSV cell a spreadsheet will not run as a formula: reasons and titles are written by people."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


class _Echo:
    def write(self, value):
        return value


@moderator_required
@require_safe
def audit_csv(request):
    if not moderation.is_admin(request.user):
        raise PermissionDenied("Only admins can export the audit trail.")
    writer = csv.writer(_Echo())

    def rows():
        yield writer.writerow(CSV_COLUMNS)
        for entry in moderation.audit_trail(request.user).order_by("created_at", "pk").iterator(chunk_size=500):
            yield writer.writerow([_cell(value) for value in (
                entry.created_at.isoformat(), entry.moderator.username, entry.action, entry.subject, entry.reason,
                entry.prototype.slug if entry.prototype else "", entry.comment_id or "",
            )])  # fmt: skip

    response = StreamingHttpResponse(rows(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="moderation-audit-{timezone.now():%Y-%m-%d}.csv"'
    response["Cache-Control"] = "private, no-store"
    return response


urlpatterns = [
    path("p/<slug:slug>/flag/", flag_prototype, name="flag_prototype"),
    path("comments/<int:pk>/flag/", flag_comment, name="flag_comment"),
    path("p/<slug:slug>/comments/<int:pk>/flag/", flag_comment, name="flag_comment"),  # opened by its link
    path("moderation/", queue, name="moderation_queue"),
    path("moderation/p/<slug:slug>/<str:action>/", act_on_prototype, name="moderate_prototype"),
    path("moderation/comments/<int:pk>/<str:action>/", act_on_comment, name="moderate_comment"),
    path("moderation/flags/<int:pk>/dismiss/", dismiss_flag, name="dismiss_flag"),
    path("moderation/audit/", audit, name="moderation_audit"),
    path("moderation/audit.csv", audit_csv, name="moderation_audit_csv"),
]
