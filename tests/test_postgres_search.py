"""On PostgreSQL the catalog's search is full-text: other forms of a word, "quoted phrases" and -excluded
words, over titles, summaries, descriptions and the words asked in any revision. (On SQLite it stays a
plain substring search, tested in test_store.py.)"""

import pytest
from django.db import connection

from prototypes.models import Prototype, Revision, Target
from store.catalog import search

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(
        connection.vendor != "postgresql",
        reason="PostgreSQL's full-text search: runs in the PostgreSQL pass (scripts/test-postgres.sh, make test)",
    ),
]


@pytest.fixture
def prototypes(alice):
    target = Target.objects.create(slug="web-player", name="Web Player", kind="web", git_url="/nowhere")
    made = {}
    for slug, title, summary, description, prompt in [
        ("timer", "Sleep timers for the player", "", "", "Stop playback later"),
        ("counts", "Show stats", "Counts the episodes of each show", "", "Add numbers"),
        ("shuffle", "Queue tweaks", "", "Works with **podcasts** too", "Make the queue shuffle its songs"),
    ]:
        prototype = Prototype.objects.create(slug=slug, title=title, summary=summary, description=description,
                                             owner=alice, target=target, listing="listed", visibility="company")  # fmt: skip
        revision = Revision.objects.create(prototype=prototype, number=1, prompt=prompt, author=alice)
        prototype.current_revision = revision
        prototype.save()
        made[slug] = prototype
    return made


def found(q):
    return sorted(search(Prototype.objects.all(), q).values_list("slug", flat=True))


def test_search_matches_other_forms_of_the_words(prototypes):
    assert found("sleeping timer") == ["timer"]  # "Sleep timers": not a substring of it, the same words
    assert found("counting episode") == ["counts"]
    assert found("shuffled song") == ["shuffle"]  # the words asked in a revision
    assert found("podcast") == ["shuffle"]  # the description


def test_search_understands_phrases_and_excluded_words(prototypes):
    assert found('"queue shuffle"') == ["shuffle"]
    assert found('"shuffle queue"') == []
    assert found("show -episodes") == []
    assert found("show") == ["counts"]
    assert found("timer or show") == ["counts", "timer"]


def test_the_catalog_page_searches_with_it(client, bob, prototypes):
    client.force_login(bob)
    page = client.get("/", {"q": "timers"}).content.decode()
    assert page.count('class="card proto"') == 1 and "/p/timer/" in page
