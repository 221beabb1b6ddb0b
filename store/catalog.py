"""The catalog: which prototypes a person sees in the store, searched, filtered and sorted, in a
fixed number of queries however many there are."""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

from django.core.cache import cache
from django.core.paginator import Paginator
from django.db import connections
from django.db.models import Exists, OuterRef, Prefetch, Q, Subquery
from django.template.loader import get_template, render_to_string
from django.utils.functional import cached_property
from django.utils.safestring import mark_safe

from prototypes.models import Prototype, Revision, Screenshot, Target

SORTS = {
    "newest": "Newest",
    "liked": "Most liked",
    "discussed": "Most discussed",
    "trending": "Trending",
}
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


def search(queryset, q: str):
    """Titles, summaries, descriptions and the words asked in any revision: PostgreSQL's full-text search
    where the store runs on it (word forms, "quoted phrases", -excluded words), else plain substrings."""
    if connections[queryset.db].vendor == "postgresql":
        return _full_text_search(queryset, q)
    # SQLite: one EXISTS per row, served by the revisions' prototype index. The catalog reads its rows in
    # the order of an index and stops after a page, so a common word is found after a few hundred rows
    # at any size; a word nobody used reads them all (SQLite has no full-text index here).
    asked = Revision.objects.filter(prototype=OuterRef("pk"), prompt__icontains=q)
    return queryset.filter(
        Q(title__icontains=q) | Q(summary__icontains=q) | Q(description__icontains=q) | Exists(asked)
    )


def _full_text_search(queryset, q: str):
    """Both sides read a GIN index on the very expressions used here (prototypes migration 0016: change
    one, change the other), then the catalog keeps its order and filters over the matching ids."""
    from django.contrib.postgres.search import SearchQuery, SearchVector

    query = SearchQuery(q, search_type="websearch", config=SEARCH_CONFIG)
    described = (
        Prototype.objects.alias(words=SearchVector("title", "summary", "description", config=SEARCH_CONFIG))
        .filter(words=query)
        .values("pk")
    )
    asked = (
        Revision.objects.alias(words=SearchVector("prompt", config=SEARCH_CONFIG))
        .filter(words=query)
        .values("prototype_id")
    )
    return queryset.filter(Q(pk__in=described) | Q(pk__in=asked))


def catalog(user, filters: Filters):
    """The prototypes this person may see in the store, in the order asked. Counts are columns of the
    prototype (store/counts.py) and each sort has an index (Prototype.Meta), so a page costs the same
    with 1,000 or 100,000 prototypes."""
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
    order = {
        "newest": [],
        "liked": ["-reaction_count"],
        "discussed": ["-comment_count"],
        "trending": ["-trending_score"],
    }[filters.sort]
    # select_related serves callers that read objects (store/makers.py); cards() reads values and ignores it
    return queryset.select_related("owner", "target", "current_revision").order_by(*order, "-created_at", "-pk")


class Pages(Paginator):
    """Pages of the catalog that count matches only a few pages past the one shown. Counting every match
    reads every matching row (for a search, every row), the one part of a page that would still grow with
    the store; this way a page reads at most (page + AHEAD) pages of rows, and says "Page 1 of 5+" when
    there are more. People page on, or narrow with a search or a filter."""

    AHEAD = 4

    asked = 1

    def get_page(self, number):
        try:
            self.asked = max(1, int(number))
        except (TypeError, ValueError):
            self.asked = 1
        return super().get_page(number)

    @property
    def most_counted(self) -> int:
        return (self.asked + self.AHEAD) * self.per_page

    @cached_property
    def count(self) -> int:
        return self.object_list[: self.most_counted + 1].count()

    @property
    def more(self) -> bool:
        """There are more matches than were counted (the last page shown is not the last there is)."""
        return self.count > self.most_counted

    @cached_property
    def num_pages(self) -> int:
        return -(-self.most_counted // self.per_page) if self.more else super().num_pages


# What a card shows, read as plain values: the key of its cached HTML is made of them, and a page whose
# cards are all cached never builds a model instance.
CARD_FIELDS = (
    "pk", "slug", "title", "summary", "listing", "visibility", "reaction_count", "comment_count",
    "current_revision_id", "target__name", "target__kind", "owner_id", "owner__username", "owner__first_name",
    "owner__last_name",
)  # fmt: skip
CARD_SECONDS = 3600


def cards(page) -> list[str]:
    """The cards of a page of `catalog(...)`, as HTML, from the cache where it has them.

    A card shows only what belongs to the prototype (title, summary, app, owner, counts, its picture) and is
    rendered without the request, so it holds nothing about the person looking (a "you liked this" would
    need the request and cannot slip in here). Which cards are on the page is decided by `catalog`, through
    `visible_to`, before the cache is asked: a cached card is only ever shown to someone who may see it.
    The key is made of everything the card shows, so a new title, count, version or picture is a new key;
    nothing needs invalidating, and old entries age out."""
    # The card's picture (the first desktop one of the gallery, as the card shows) read in the same query:
    # a subquery for each of the page's rows only, one query fewer on every page than reading them apart.
    first_picture = (
        Screenshot.objects.gallery()
        .filter(size=Screenshot.Size.DESKTOP, revision=OuterRef("current_revision_id"))
        .order_by("pk")
        .values("pk")[:1]
    )
    rows = list(page.annotate(card_picture=Subquery(first_picture)).values_list(*CARD_FIELDS, "card_picture"))
    keys = [_card_key(row[:-1], row[-1]) for row in rows]
    cached = cache.get_many(keys)
    missing = [(key, row[0]) for key, row in zip(keys, rows, strict=True) if key not in cached]
    if missing:
        thumbnails = Screenshot.objects.gallery().filter(size=Screenshot.Size.DESKTOP)
        prototypes = (
            Prototype.objects.filter(pk__in=[pk for _, pk in missing])
            .select_related("owner", "target", "current_revision")
            .prefetch_related(Prefetch("current_revision__screenshots", queryset=thumbnails))
        )
        by_pk = {p.pk: p for p in prototypes}
        rendered = {key: render_to_string("store/_card.html", {"p": by_pk[pk]}) for key, pk in missing}
        cache.set_many(rendered, CARD_SECONDS)
        cached.update(rendered)
    return [mark_safe(cached[key]) for key in keys]  # noqa: S308 (rendered by our template, autoescaped)


def _card_key(row: tuple, picture_id: int | None) -> str:
    digest = hashlib.blake2b(repr((row, picture_id)).encode(), digest_size=16).hexdigest()
    return f"card:{_card_template_version()}:{row[0]}:{digest}"


@functools.cache
def _card_template_version() -> str:
    """A changed card template (a deploy) makes new keys, so a shared cache never serves the old cards."""
    source = get_template("store/_card.html").template.source
    return hashlib.blake2b(source.encode(), digest_size=6).hexdigest()


def facets() -> dict:
    """What the filter bar offers."""
    return {
        "targets": list(Target.objects.offered().values_list("slug", "name")),
        "kinds": Target.Kind.choices,
        "sorts": list(SORTS.items()),
    }
