"""The counts the catalog sorts and shows, kept on each Prototype so that a page of the store reads 24 rows
and never counts comments, reactions or visits per row.

- `reaction_count`, `comment_count` (not hidden by a moderator) and `view_count` (views, not downloads)
  move with F() increments in the same transaction as the row that changes them: `Comment`, `Reaction`
  and `Visit` call `added` from their save(), deletions arrive through `post_delete` (which Django sends
  inside the deletion's own transaction), and hiding or restoring a comment calls `comment_hidden`.
- `trending_score` is the activity of the last TRENDING_DAYS (reactions, comments, views and downloads).
  New activity adds to it at once, the same way; activity growing older than the window is taken off by
  `refresh_trending`, a periodic Celery beat job (store/tasks.py). A job rather than a rule applied when
  the catalog is read: a score that decays on read cannot be kept in an index, and the index is what makes
  a page of "Trending" cost the same with 1,000 or 100,000 prototypes. With an index on the
  `created_at` of comments, reactions and visits (not there yet) the job reads only the last
  TRENDING_DAYS of activity, so its cost follows how busy the store is, not how big; without one it scans
  those three tables once per run, off the request path. Between two runs a
  score may still include activity up to 10 minutes (its schedule) older than the window, and the job
  recomputes every active score from the rows themselves, so no drift accumulates.

Rows written with bulk_create or changed with QuerySet.update() bypass this (as Django documents for
save() and signals): `recount` puts every counter right again (migration prototypes/0016 does the same with the
historical models).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta

from django.db.models import Count, F, IntegerField, OuterRef, Subquery, Value
from django.db.models.functions import Coalesce, Greatest
from django.utils import timezone

from prototypes.models import Prototype, Revision

TRENDING_DAYS = 7


def _in_window(created_at: datetime, now: datetime | None = None) -> bool:
    return created_at >= (now or timezone.now()) - timedelta(days=TRENDING_DAYS)


def _changes(instance, sign: int) -> tuple[int | None, dict]:
    """Which prototype a comment, reaction or visit counts for, and how its counters move."""
    from store.models import Comment, Reaction, Visit

    recent = sign if _in_window(instance.created_at) else 0
    if isinstance(instance, Comment):
        if instance.hidden:  # hidden comments count nowhere
            return instance.prototype_id, {}
        return instance.prototype_id, {"comment_count": sign, "trending_score": recent}
    if isinstance(instance, Reaction):
        return instance.prototype_id, {"reaction_count": sign, "trending_score": recent}
    if isinstance(instance, Visit):
        moved = {"trending_score": recent}
        if instance.kind == Visit.Kind.VIEW:
            moved["view_count"] = sign
        # the revision's prototype without fetching the revision again when the caller had it
        revision = instance.revision if Visit._meta.get_field("revision").is_cached(instance) else None
        if revision is None:
            revision = Revision.objects.filter(pk=instance.revision_id).only("prototype_id").first()
        return (revision.prototype_id if revision else None), moved
    raise TypeError(f"{type(instance).__name__} is not counted")


def _move(prototype_id: int | None, changes: dict) -> None:
    # Greatest(…, 0): a counter never goes below zero, even for a row that was never counted (one written
    # by bulk_create, or deleted while the trending job had already aged it out).
    moved = {field: Greatest(F(field) + by, 0) for field, by in changes.items() if by}
    if prototype_id and moved:
        Prototype.objects.filter(pk=prototype_id).update(**moved)


def added(instance) -> None:
    """A comment, reaction or visit was just inserted: call inside the insert's transaction."""
    _move(*_changes(instance, +1))


def removed(sender, instance, origin=None, **kwargs) -> None:
    """post_delete receiver (store/apps.py). A deleted prototype takes its counters with it, so its
    comments, reactions and visits deleted with it move nothing."""
    if isinstance(origin, Prototype) or getattr(origin, "model", None) is Prototype:
        return
    _move(*_changes(instance, -1))


def comment_hidden(comment, *, hidden: bool) -> None:
    """A moderator hid (or restored) a comment: call inside the moderation's transaction, after the update.
    `comment` carries the new state."""
    sign = -1 if hidden else +1
    recent = sign if _in_window(comment.created_at) else 0
    _move(comment.prototype_id, {"comment_count": sign, "trending_score": recent})


def _recent_activity(since: datetime) -> dict[int, int]:
    """Activity since `since` per prototype, counted from the rows: three grouped queries."""
    from store.models import Comment, Reaction, Visit

    sources = [
        (Reaction.objects.filter(created_at__gte=since), "prototype_id"),
        (Comment.objects.filter(created_at__gte=since, hidden=False), "prototype_id"),
        (Visit.objects.filter(created_at__gte=since), "revision__prototype_id"),
    ]
    activity: dict[int, int] = defaultdict(int)
    for rows, field in sources:
        for prototype_id, n in rows.order_by().values(field).annotate(n=Count("*")).values_list(field, "n"):
            activity[prototype_id] += n
    return activity


def refresh_trending(now: datetime | None = None) -> int:
    """Recompute the trending score of every prototype with recent activity, and zero the scores whose
    activity has all grown older than the window; only scores that differ are written. Returns how many
    changed. Activity arriving while it runs may be counted once too few or too many until the next run
    (its increment and this recount race); each run starts again from the rows, so nothing accumulates."""
    activity = _recent_activity((now or timezone.now()) - timedelta(days=TRENDING_DAYS))
    scored = dict(Prototype.objects.filter(trending_score__gt=0).values_list("pk", "trending_score"))
    changed: dict[int, list[int]] = defaultdict(list)
    for prototype_id in scored.keys() | activity.keys():
        score = activity.get(prototype_id, 0)
        if scored.get(prototype_id, 0) != score:
            changed[score].append(prototype_id)
    for score, ids in changed.items():
        for start in range(0, len(ids), 500):  # under every database's limit on query parameters
            Prototype.objects.filter(pk__in=ids[start : start + 500]).update(trending_score=score)
    return sum(len(ids) for ids in changed.values())


def _counted(rows, field: str = "prototype"):
    counted = rows.filter(**{field: OuterRef("pk")}).order_by().values(field).annotate(n=Count("*")).values("n")
    return Coalesce(Subquery(counted, output_field=IntegerField()), Value(0))


def recount(prototypes=None) -> None:
    """Count everything again from the rows (all prototypes, or the given queryset), in one UPDATE."""
    from store.models import Comment, Reaction, Visit

    since = timezone.now() - timedelta(days=TRENDING_DAYS)
    prototypes = Prototype.objects.all() if prototypes is None else prototypes
    prototypes.update(
        reaction_count=_counted(Reaction.objects.all()),
        comment_count=_counted(Comment.objects.filter(hidden=False)),
        view_count=_counted(Visit.objects.filter(kind=Visit.Kind.VIEW), "revision__prototype"),
        trending_score=_counted(Reaction.objects.filter(created_at__gte=since))
        + _counted(Comment.objects.filter(created_at__gte=since, hidden=False))
        + _counted(Visit.objects.filter(created_at__gte=since), "revision__prototype"),
    )
