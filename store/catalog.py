"""The catalog: which prototypes a person sees in the store, searched, filtered and sorted, in a
fixed number of queries however many there are."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.db import connections
from django.db.models import Count, F, IntegerField, OuterRef, Prefetch, Q, Subquery, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from prototypes.models import Prototype, Revision, Screenshot, Target
from store.models import Comment, Reaction, Visit

SORTS = {
    "newest": "Newest",
    "liked": "Most liked",
    "discussed": "Most discussed",
    "trending": "Trending",
}
TRENDING_DAYS = 7
SEARCH_CONFIG = "english"  # PostgreSQL's text search configuration: English word forms and stop words


@dataclass(frozen=True)
class Filters:
    q: str = ""
    target: str = ""
    kind: str = ""
    owner: str = ""
    tag: str = ""
    mine: bool = False
    sort: str = "newest"

    @classmethod
    def from_query(cls, query) -> Filters:
        sort = query.get("sort", "newest")
        return cls(
            q=query.get("q", "").strip()[:200],
            target=query.get("target", "").strip(),
            kind=query.get("kind", "").strip(),
            owner=query.get("owner", "").strip(),
            tag=query.get("tag", "").strip(),
            mine=query.get("mine") in {"1", "on", "true"},
            sort=sort if sort in SORTS else "newest",
        )

    @property
    def active(self) -> bool:
        return any([self.q, self.target, self.kind, self.owner, self.tag, self.mine])


def _count(queryset, field: str = "prototype"):
    """A correlated COUNT(*) per prototype, as a subquery: no join fan-out, one query for the page."""
    counted = queryset.filter(**{field: OuterRef("pk")}).order_by().values(field).annotate(n=Count("*")).values("n")
    return Coalesce(Subquery(counted, output_field=IntegerField()), Value(0))


def search(queryset, q: str):
    """Titles, summaries, descriptions and the words asked in any revision: PostgreSQL's full-text search
    where the store runs on it (word forms, "quoted phrases", -excluded words), else plain substrings."""
    if connections[queryset.db].vendor == "postgresql":
        return _full_text_search(queryset, q)
    asked = Revision.objects.filter(prompt__icontains=q).values("prototype_id")
    return queryset.filter(
        Q(title__icontains=q) | Q(summary__icontains=q) | Q(description__icontains=q) | Q(pk__in=asked)
    )


def _full_text_search(queryset, q: str):
    from django.contrib.postgres.search import SearchQuery, SearchVector

    query = SearchQuery(q, search_type="websearch", config=SEARCH_CONFIG)
    asked = (
        Revision.objects.alias(words=SearchVector("prompt", config=SEARCH_CONFIG))
        .filter(words=query)
        .values("prototype_id")
    )
    words = SearchVector("title", "summary", "description", config=SEARCH_CONFIG)
    return queryset.alias(words=words).filter(Q(words=query) | Q(pk__in=asked))


def catalog(user, filters: Filters):
    """The prototypes this person may see in the store, annotated with their counts."""
    listed = Q(listing=Prototype.Listing.LISTED, visibility=Prototype.Visibility.COMPANY)
    queryset = Prototype.objects.visible_to(user)
    queryset = queryset.filter(owner=user) if filters.mine else queryset.filter(listed)
    if filters.q:
        queryset = search(queryset, filters.q)
    if filters.target:
        queryset = queryset.filter(target__slug=filters.target)
    if filters.kind:
        queryset = queryset.filter(target__kind=filters.kind)
    if filters.owner:
        queryset = queryset.filter(owner__username=filters.owner)
    if filters.tag:
        queryset = queryset.filter(tags__name=filters.tag)
    since = timezone.now() - timedelta(days=TRENDING_DAYS)
    queryset = queryset.annotate(
        like_count=_count(Reaction.objects.all()),
        comment_count=_count(Comment.objects.filter(hidden=False)),
    )
    if filters.sort == "trending":
        queryset = queryset.annotate(
            recent=_count(Reaction.objects.filter(created_at__gte=since))
            + _count(Comment.objects.filter(created_at__gte=since, hidden=False))
            + _count(Visit.objects.filter(created_at__gte=since), "revision__prototype")
        )
    order = {
        "newest": ["-created_at"],
        "liked": ["-like_count", "-created_at"],
        "discussed": ["-comment_count", "-created_at"],
        "trending": [F("recent").desc(), "-created_at"],
    }[filters.sort]
    thumbnails = Screenshot.objects.gallery().filter(size=Screenshot.Size.DESKTOP)
    return (
        queryset.select_related("owner", "target", "current_revision")
        .prefetch_related(Prefetch("current_revision__screenshots", queryset=thumbnails), "tags")
        .order_by(*order, "-pk")
    )


def facets() -> dict:
    """What the filter bar offers."""
    return {
        "targets": list(Target.objects.offered().values_list("slug", "name")),
        "kinds": Target.Kind.choices,
        "sorts": list(SORTS.items()),
    }
