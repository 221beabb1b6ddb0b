"""A new maker's way in: the first-run page (/start/) with what makes a good idea and ideas per app, the
"Start here" card on the home page, and "My prototypes" (/mine/) with where each build stands."""

from datetime import timedelta
from html import unescape

import pytest
from django.urls import reverse
from django.utils import timezone

from prototypes.models import Build, Prototype, Revision, Target

pytestmark = pytest.mark.django_db


@pytest.fixture
def apps():
    now = timezone.now()
    return {
        "web": Target.objects.create(
            slug="web-player", name="Web Player", kind="web", git_url="/nowhere", recipe_checked_at=now
        ),  # fmt: skip
        "api": Target.objects.create(
            slug="podcast-api", name="Podcast API", kind="backend", git_url="/nowhere", recipe_checked_at=now
        ),  # fmt: skip
        "off": Target.objects.create(
            slug="old-app", name="Old App", git_url="/nowhere", recipe_checked_at=now, enabled=False
        ),  # fmt: skip
    }


def make(owner, target, title, state=None, *, visibility="company", when=None, **build_fields) -> Prototype:
    prototype = Prototype.objects.create(slug=title.lower().replace(" ", "-"), title=title, owner=owner,
                                         target=target, visibility=visibility, listing="listed")  # fmt: skip
    revision = Revision.objects.create(prototype=prototype, number=1, prompt="idea", author=owner)
    Prototype.objects.filter(pk=prototype.pk).update(current_revision=revision, updated_at=when or timezone.now())
    if state:
        Build.objects.create(revision=revision, state=state, created_at=when or timezone.now(), **build_fields)
    return prototype


# --- /start/ ---------------------------------------------------------------------------------------


def test_the_start_page_says_what_makes_a_good_idea_and_lists_offered_apps_with_samples(client, alice, apps,
                                                                                        settings):  # fmt: skip
    settings.AGENT_PROVIDER = "replay"
    client.force_login(alice)
    page = unescape(client.get(reverse("start")).content.decode())
    for point in ("Concrete.", "Something you can see or check.", "One change at a time.", "Attach what helps."):
        assert point in page
    assert "Web Player" in page and "Podcast API" in page
    assert "Old App" not in page  # switched off: not offered
    # The offline demo's sample ideas, labelled as samples, each filling the new-prototype form.
    assert 'Sample</span> <a href="/new/?target=web-player&idea=' in page
    assert "Search episodes by title" in page  # examples/recordings/podcast-api/episode-search.json
    assert "only build its sample ideas" in page


def test_with_claude_the_start_page_offers_examples_per_kind_not_samples(client, alice, apps, settings):
    settings.AGENT_PROVIDER = "anthropic"
    client.force_login(alice)
    page = unescape(client.get(reverse("start")).content.decode())
    assert "Sample</span>" not in page and "Search episodes by title" not in page
    assert "Add a dark mode switch to the header" in page  # a web app's example
    assert "Refuse a negative quantity" in page  # a backend's example


def test_an_idea_link_fills_the_new_prototype_form(client, alice, apps):
    client.force_login(alice)
    url = reverse("new") + "?target=podcast-api&idea=Add+search+of+episodes&title=Episode+search"
    page = client.get(url).content.decode()
    assert ">\nAdd search of episodes</textarea>" in page
    assert 'value="Episode search"' in page
    assert f'value="{apps["api"].pk}" data-slug="podcast-api" data-attempts="1" selected' in page
    assert 'href="/start/"' in page  # the form points at the first-run page


def test_a_maker_with_no_prototypes_is_pointed_at_the_start_page(client, alice, carol, apps):
    client.force_login(alice)
    assert "Start here" in client.get(reverse("home")).content.decode()
    make(alice, apps["web"], "First try")
    assert "Start here" not in client.get(reverse("home")).content.decode()
    client.force_login(carol)  # a viewer cannot build: nothing to start
    assert "Start here" not in client.get(reverse("home")).content.decode()
    assert client.get(reverse("start")).status_code == 200  # but the page is always reachable


def test_the_header_links_to_my_prototypes_and_the_inbox(client, carol):
    client.force_login(carol)
    page = client.get(reverse("home")).content.decode()
    assert f'href="{reverse("mine")}">My prototypes</a>' in page
    assert f'href="{reverse("inbox")}"' in page


# --- /mine/ ----------------------------------------------------------------------------------------


def test_my_prototypes_lists_only_my_own_with_their_build_states_newest_activity_first(client, alice, bob, apps):
    now = timezone.now()
    make(alice, apps["web"], "Waiting one", "queued", when=now - timedelta(hours=4))
    make(alice, apps["web"], "Busy one", "running", when=now - timedelta(hours=3))
    make(alice, apps["web"], "Good one", "succeeded", when=now - timedelta(hours=1))
    make(alice, apps["api"], "Broken one", "failed", when=now - timedelta(hours=2),
         error_message="The app's tests failed.\nSecond line of detail.")  # fmt: skip
    make(alice, apps["web"], "Secret one", "succeeded", visibility="private", when=now - timedelta(hours=5))
    make(bob, apps["web"], "Bobs one", "succeeded")

    client.force_login(alice)
    page = unescape(client.get(reverse("mine")).content.decode())
    titles = ["Good one", "Broken one", "Busy one", "Waiting one", "Secret one"]
    assert [page.index(t) for t in titles] == sorted(page.index(t) for t in titles), "newest activity first"
    assert "Bobs one" not in page
    assert 'data-state="queued"' in page and "Waiting to start" in page
    assert 'data-state="running"' in page and "Building: Claude is working" in page
    assert 'data-state="succeeded"' in page and ">Ready<" in page
    assert 'data-state="failed"' in page and "The app's tests failed." in page
    assert "Second line of detail" not in page
    good = Prototype.objects.get(title="Good one")
    assert f'href="{reverse("version", args=[good.slug, 1])}"' in page
    assert f'href="{good.current_revision.builds.get().get_absolute_url()}"' in page


def test_activity_on_an_old_prototype_brings_it_to_the_top(client, alice, apps):
    now = timezone.now()
    old = make(alice, apps["web"], "Old one", "succeeded", when=now - timedelta(days=3))
    make(alice, apps["web"], "New one", "succeeded", when=now - timedelta(hours=1))
    Build.objects.create(revision=old.revisions.get(), attempt=2, created_at=now)  # a retry just now
    client.force_login(alice)
    page = client.get(reverse("mine")).content.decode()
    assert page.index("Old one") < page.index("New one")


def test_my_prototypes_when_i_have_none_points_at_the_start_page(client, alice):
    client.force_login(alice)
    page = client.get(reverse("mine")).content.decode()
    assert "You have no prototypes yet." in page and f'href="{reverse("start")}"' in page


def test_my_prototypes_is_a_fixed_number_of_queries(client, alice, apps, django_assert_max_num_queries):
    for n in range(6):
        make(alice, apps["web"], f"Idea {n}", "succeeded")
    client.force_login(alice)
    with django_assert_max_num_queries(10):  # the same for one prototype or many
        client.get(reverse("mine"))
