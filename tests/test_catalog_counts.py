"""The catalog's counts kept on each prototype (store/counts.py), the trending job, the cards cached by what
they show, and pages that stop counting at a bound: a catalog page that stays flat with the store's size."""

import io
from datetime import timedelta
from importlib import import_module
from types import SimpleNamespace

import pytest
from django.apps import apps
from django.core.cache import cache
from django.core.files.base import ContentFile
from django.db import connection
from django.test.signals import template_rendered
from django.utils import timezone
from PIL import Image

from prototypes.models import Prototype, Revision, Screenshot, Target
from store import catalog, counts, feedback, moderation
from store.models import Comment, Reaction, Visit
from store.tasks import refresh_trending

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def empty_cache():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def target():
    return Target.objects.create(slug="web-player", name="Web Player", kind="web", git_url="/nowhere")


def make(owner, target, n=1, **extra) -> list[Prototype]:
    made = []
    for i in range(n):
        fields = {"title": f"Prototype {i}", "listing": "listed", "visibility": "company", **extra}
        prototype = Prototype.objects.create(slug=f"p-{owner.username}-{i}", owner=owner, target=target, **fields)
        prototype.current_revision = Revision.objects.create(prototype=prototype, number=1, prompt="idea", author=owner)
        prototype.save()
        made.append(prototype)
    return made


def counters(prototype) -> dict:
    prototype.refresh_from_db()
    return {
        name: getattr(prototype, name) for name in ("reaction_count", "comment_count", "view_count", "trending_score")
    }


def test_comments_reactions_and_views_move_the_counters_as_they_happen(client, alice, bob, carol, target):
    (prototype,) = make(alice, target)
    feedback.add_comment(prototype=prototype, revision=prototype.current_revision, author=bob, body="Nice")
    feedback.toggle_reaction(prototype=prototype, user=bob, kind="like")
    feedback.toggle_reaction(prototype=prototype, user=carol, kind="ship")
    client.force_login(bob)
    assert client.get(prototype.get_absolute_url()).status_code == 200  # a view
    Visit.objects.create(revision=prototype.current_revision, kind=Visit.Kind.DOWNLOAD, user=bob)
    assert counters(prototype) == {"reaction_count": 2, "comment_count": 1, "view_count": 1, "trending_score": 5}

    feedback.toggle_reaction(prototype=prototype, user=carol, kind="ship")  # taken back
    assert counters(prototype)["reaction_count"] == 1 and counters(prototype)["trending_score"] == 4


def test_activity_older_than_the_window_counts_but_does_not_trend(alice, bob, target):
    (prototype,) = make(alice, target)
    long_ago = timezone.now() - timedelta(days=counts.TRENDING_DAYS + 1)
    Comment.objects.create(prototype=prototype, revision=prototype.current_revision, author=bob, body="x",
                           created_at=long_ago)  # fmt: skip
    assert counters(prototype) == {"reaction_count": 0, "comment_count": 1, "view_count": 0, "trending_score": 0}


def test_moderators_hiding_a_comment_takes_it_off_the_counts_and_restoring_puts_it_back(alice, bob, mo, target):
    (prototype,) = make(alice, target)
    comment = feedback.add_comment(prototype=prototype, revision=prototype.current_revision, author=bob, body="x")
    moderation.hide_comment(comment, by=mo, reason="Off topic")
    assert counters(prototype)["comment_count"] == 0 and counters(prototype)["trending_score"] == 0
    with pytest.raises(feedback.NotAllowed):
        moderation.hide_comment(comment, by=mo, reason="Twice")  # refused, and counted once only
    assert counters(prototype)["comment_count"] == 0
    moderation.restore_comment(comment, by=mo, reason="Fine after all")
    assert counters(prototype)["comment_count"] == 1 and counters(prototype)["trending_score"] == 1
    comment.refresh_from_db()
    comment.delete()  # a hidden comment deleted later would not be taken off twice either
    assert counters(prototype)["comment_count"] == 0


def test_deletions_take_themselves_off_however_they_happen(alice, bob, carol, target):
    (prototype,) = make(alice, target)
    for person in (bob, carol):
        feedback.toggle_reaction(prototype=prototype, user=person, kind="like")
        Visit.objects.create(revision=prototype.current_revision, kind=Visit.Kind.VIEW, user=person)
    assert counters(prototype) == {"reaction_count": 2, "comment_count": 0, "view_count": 2, "trending_score": 4}
    Reaction.objects.filter(user=bob).delete()
    Visit.objects.filter(user=carol).delete()
    assert counters(prototype) == {"reaction_count": 1, "comment_count": 0, "view_count": 1, "trending_score": 2}
    carol.delete()  # her reaction goes with her
    assert counters(prototype)["reaction_count"] == 0
    prototype.delete()  # and a prototype takes its comments, reactions and visits without a fuss
    assert not Prototype.objects.filter(pk=prototype.pk).exists()


def test_the_trending_job_takes_off_activity_that_grew_older_than_the_window(alice, bob, carol, target):
    fading, fresh = make(alice, target, 2)
    feedback.toggle_reaction(prototype=fading, user=bob, kind="like")
    feedback.toggle_reaction(prototype=fading, user=carol, kind="like")
    feedback.toggle_reaction(prototype=fresh, user=bob, kind="like")
    Reaction.objects.filter(prototype=fading, user=bob).update(created_at=timezone.now() - timedelta(days=8))
    Prototype.objects.filter(pk=fresh.pk).update(trending_score=7)  # drifted somehow: the job puts it right
    refresh_trending()
    assert counters(fading)["trending_score"] == 1 and counters(fresh)["trending_score"] == 1
    Reaction.objects.update(created_at=timezone.now() - timedelta(days=8))
    refresh_trending()
    assert counters(fading)["trending_score"] == 0 and counters(fresh)["trending_score"] == 0
    assert counters(fading)["reaction_count"] == 2  # all-time counts stay


def test_the_migration_counts_what_was_there_before(alice, bob, carol, target):
    one, two = make(alice, target, 2)
    # written around save(), as rows from before the counters were
    Comment.objects.bulk_create([Comment(prototype=one, revision=one.current_revision, author=bob, body="x")] * 3)
    Comment.objects.bulk_create([Comment(prototype=one, revision=one.current_revision, author=bob, body="x",
                                         hidden=True)])  # fmt: skip
    Reaction.objects.bulk_create([Reaction(prototype=two, user=bob), Reaction(prototype=two, user=carol)])
    Visit.objects.bulk_create([Visit(revision=two.current_revision, kind="view")] * 2)
    assert counters(one)["comment_count"] == 0
    migration = import_module("prototypes.migrations.0016_catalog_counts")
    migration.count_existing(apps, SimpleNamespace(connection=connection))
    assert counters(one) == {"reaction_count": 0, "comment_count": 3, "view_count": 0, "trending_score": 3}
    assert counters(two) == {"reaction_count": 2, "comment_count": 0, "view_count": 2, "trending_score": 4}
    Prototype.objects.update(reaction_count=0, comment_count=0, view_count=0, trending_score=0)
    counts.recount()  # the same rule, for the store's own repairs
    assert counters(two) == {"reaction_count": 2, "comment_count": 0, "view_count": 2, "trending_score": 4}


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 5), "white").save(out, "PNG")
    return out.getvalue()


def rendered_cards(client, url="/") -> int:
    seen = []

    def count(sender, template, **kwargs):
        if template.name == "store/_card.html":
            seen.append(template)

    template_rendered.connect(count)
    try:
        assert client.get(url).status_code == 200
    finally:
        template_rendered.disconnect(count)
    return len(seen)


def test_cards_are_rendered_once_and_again_only_when_what_they_show_changes(client, alice, bob, target):
    prototypes = make(alice, target, 3)
    client.force_login(bob)
    assert rendered_cards(client) == 3
    assert rendered_cards(client) == 0  # all from the cache

    Prototype.objects.filter(pk=prototypes[0].pk).update(title="Sleep timer")  # no save(), no updated_at
    feedback.toggle_reaction(prototype=prototypes[1], user=bob, kind="like")
    shot = Screenshot(revision=prototypes[2].current_revision, size="desktop", width=8, height=5)
    shot.image.save("desktop.png", ContentFile(png(), name="desktop.png"), save=False)
    shot.thumbnail.save("desktop.webp", ContentFile(png(), name="desktop.png"), save=False)
    shot.save()  # the version's pictures arrive after it was built
    assert rendered_cards(client) == 3
    page = client.get("/").content.decode()
    assert "Sleep timer" in page and "1 reaction ·" in page and "/thumbnail" in page


def test_a_cached_card_carries_nothing_of_the_person_who_filled_the_cache(client, alice, bob, carol, target):
    (prototype,) = make(alice, target)
    feedback.toggle_reaction(prototype=prototype, user=bob, kind="like")
    client.force_login(bob)
    client.get("/")  # bob's visit fills the cache
    client.force_login(carol)
    warm = client.get("/").content.decode()
    cache.clear()
    cold = client.get("/").content.decode()
    card = warm[warm.index('<a class="card proto"') : warm.index("</a>", warm.index('<a class="card proto"'))]
    assert card in cold and "bob" not in card.lower()


def test_a_card_never_shows_work_the_person_may_not_see_even_when_cached(client, alice, bob, carol, target):
    (private,) = make(alice, target, visibility="private", title="Secret plan")
    client.force_login(alice)
    assert "Secret plan" in client.get("/?mine=1").content.decode()  # cached now
    client.force_login(carol)
    assert "Secret plan" not in client.get("/").content.decode()
    assert "Secret plan" not in client.get("/?q=Secret").content.decode()
    assert private.slug not in client.get("/?mine=1").content.decode()


def test_pages_count_only_a_few_pages_ahead_and_say_there_are_more(client, alice, bob, target, monkeypatch):
    monkeypatch.setattr(catalog.Pages, "AHEAD", 1)
    make(alice, target, 50)
    client.force_login(bob)
    page = client.get("/", {"q": "Prototype"}).content.decode()
    assert "48+ found" in page and "Page 1 of 2+" in page
    page = client.get("/", {"q": "Prototype", "page": 2}).content.decode()
    assert "50 found" in page and "Page 2 of 3<" in page and page.count('class="card proto"') == 24
    assert client.get("/", {"q": "Prototype", "page": 3}).content.decode().count('class="card proto"') == 2
    monkeypatch.setattr(catalog.Pages, "AHEAD", 4)
    page = client.get("/", {"q": "Prototype"}).content.decode()
    assert "50 found" in page and "Page 1 of 3<" in page


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's full-text search and its indexes")
def test_on_postgresql_search_and_each_sort_can_read_their_index(bob, alice, target):
    """The GIN indexes of migration 0016 are on the very expressions catalog.search uses (change one, change
    the other), and each sort reads its own index. Sequential scans are switched off so that the planner
    says whether an index can serve the query at all, whatever the table's size."""
    make(alice, target, 3)
    with connection.cursor() as cursor:
        cursor.execute("SET enable_seqscan = off")
        try:
            plans = {}
            for sort in ("newest", "trending", "liked", "discussed"):
                sql, params = catalog.catalog(bob, catalog.Filters(sort=sort))[:24].query.sql_with_params()
                cursor.execute("EXPLAIN " + sql, params)
                plans[sort] = "\n".join(row[0] for row in cursor.fetchall())
            sql, params = catalog.catalog(bob, catalog.Filters(q="dark timer"))[:24].query.sql_with_params()
            cursor.execute("EXPLAIN " + sql, params)
            plans["search"] = "\n".join(row[0] for row in cursor.fetchall())
        finally:
            cursor.execute("SET enable_seqscan = on")
    assert "catalog_newest" in plans["newest"] and "catalog_trending" in plans["trending"]
    assert "catalog_liked" in plans["liked"] and "catalog_discussed" in plans["discussed"]
    assert "prototype_words" in plans["search"] and "revision_words" in plans["search"], plans["search"]
