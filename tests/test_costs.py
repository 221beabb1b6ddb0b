"""The admin cost page: tokens and dollars by person, app and day with a chart drawn on the server, the
switch that pauses new builds, and the budgets people and apps have. Admins only."""

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import include, path
from django.utils import timezone

from prototypes.models import Build, ModelCall, Prototype, Revision, Target
from store.budgets import check_build
from store.costs import nice_ceiling
from store.models import Budget, Control

pytestmark = [pytest.mark.django_db, pytest.mark.urls(__name__)]

# The site's pages plus the cost page, whether or not store/urls.py includes it yet.
urlpatterns = [path("", include("store.costs")), path("", include("store.urls"))]


@pytest.fixture
def player():
    return Target.objects.create(slug="web-player", name="Web Player", kind="web", git_url="/nowhere")


@pytest.fixture
def api():
    return Target.objects.create(slug="orders-api", name="Orders API", kind="backend", git_url="/nowhere")


def build_with_calls(author, target, *, costs, days_ago=0, charged=True, replayed=False):
    """A build whose model calls cost `costs` dollars each (1,000 tokens a call), `days_ago` days ago."""
    when = timezone.now() - timedelta(days=days_ago)
    n = Prototype.objects.count() + 1
    prototype = Prototype.objects.create(slug=f"p{n}", title=f"P{n}", owner=author, target=target)
    revision = Revision.objects.create(prototype=prototype, number=1, prompt="An idea", author=author)
    build = Build.objects.create(revision=revision, state=Build.State.SUCCEEDED, created_at=when, charged=charged,
                                 cost=sum(Decimal(c) for c in costs), replayed=replayed)  # fmt: skip
    for turn, cost in enumerate(costs, 1):
        ModelCall.objects.create(build=build, turn=turn, model="claude-sonnet-5-5", input_tokens=400, output_tokens=100,
                                 cache_write_tokens=200, cache_read_tokens=300, cost=Decimal(cost), created_at=when)  # fmt: skip
    return build


def test_only_admins_find_the_cost_page(client, alice, mo, ada):
    assert client.get("/costs/")["Location"].startswith("/accounts/login/")
    for person in (alice, mo):
        client.force_login(person)
        assert client.get("/costs/").status_code == 404
        assert client.post("/costs/pause/", {"paused": "1"}).status_code == 404
        assert client.post("/costs/budgets/", {"daily_builds": "1"}).status_code == 404
    assert not Control.get().builds_paused and not Budget.objects.exists()
    client.force_login(ada)
    assert client.get("/costs/").status_code == 200


def test_it_shows_tokens_and_dollars_by_person_app_and_day(client, alice, bob, ada, player, api):
    build_with_calls(alice, player, costs=["1.50", "0.50"])
    build_with_calls(alice, api, costs=["0.25"], days_ago=3)
    build_with_calls(bob, player, costs=["0.75"], days_ago=3, charged=False)
    build_with_calls(bob, player, costs=["9"], days_ago=45)  # before the period
    client.force_login(ada)
    page = client.get("/costs/").content.decode()
    assert "<strong>$3.00</strong> · 4,000 tokens · 4 model calls · 3 builds" in page
    person = page[page.index('id="by-person"') : page.index('id="by-app"')]
    assert re.search(r"Alice</td><td>2</td><td>3,000</td><td>\$2\.25</td>", person)
    assert re.search(r"Bob</td><td>1 <span[^>]*>\(1 free\)</span></td><td>1,000</td><td>\$0\.75</td>", person)
    assert person.index("Alice") < person.index("Bob")  # the most expensive first
    app = page[page.index('id="by-app"') :]
    assert re.search(r"Web Player</td><td>2 <span[^>]*>\(1 free\)</span></td><td>3,000</td><td>\$2\.75</td>", app)
    assert re.search(r"Orders API</td><td>1</td><td>1,000</td><td>\$0\.25</td>", app)
    three_days_ago = timezone.localdate() - timedelta(days=3)
    assert (
        f"<td>{three_days_ago:%a} {three_days_ago.day} {three_days_ago:%b %Y}</td><td>2</td><td>2,000</td><td>$1.00</td>"
        in page
    )


def test_the_chart_has_a_bar_for_every_day_of_the_period_and_the_busiest_is_the_tallest(client, alice, ada, player):
    build_with_calls(alice, player, costs=["3"])
    build_with_calls(alice, player, costs=["1"], days_ago=2)
    client.force_login(ada)
    for days in (30, 7):
        page = client.get("/costs/" if days == 30 else f"/costs/?days={days}").content.decode()
        svg = page[page.index('<svg id="cost-chart"') : page.index("</svg>")]
        bars = re.findall(r'<rect class="cost-bar" x="[\d.]+" y="([\d.]+)" width="[\d.]+" height="([\d.]+)"', svg)
        assert len(bars) == days
        heights = [float(h) for _y, h in bars]
        assert heights[-1] == max(heights) and heights[-3] == pytest.approx(heights[-1] / 3)
        assert heights.count(0) == days - 2
        assert "$4.00 in all, at most $3.00 a day" in svg
        assert "<script" not in page[page.index("<main>") :]  # drawn on the server


def test_replayed_builds_spent_nothing_and_are_left_out_of_totals_chart_and_rows(client, alice, bob, ada, player):
    build_with_calls(alice, player, costs=["1.50"])
    # Replayed builds of the offline demo, priced from their sample token counts as the store once did (the
    # engine now records them at $0): none of it was spent.
    build_with_calls(bob, player, costs=["0.10", "0.08"], replayed=True)
    build_with_calls(alice, player, costs=["0.20"], replayed=True, days_ago=1)
    client.force_login(ada)

    page = client.get("/costs/").content.decode()

    assert "<strong>$1.50</strong> · 1,000 tokens · 1 model calls · 1 builds" in page
    person = page[page.index('id="by-person"') : page.index('id="by-app"')]
    assert re.search(r"Alice</td><td>1</td><td>1,000</td><td>\$1\.50</td>", person)
    assert "Bob" not in person
    assert re.search(r"Web Player</td><td>1</td><td>1,000</td><td>\$1\.50</td>", page[page.index('id="by-app"') :])
    svg = page[page.index('<svg id="cost-chart"') : page.index("</svg>")]
    assert "$1.50 in all, at most $1.50 a day" in svg
    yesterday = timezone.localdate() - timedelta(days=1)
    assert f"<td>{yesterday:%a} {yesterday.day} {yesterday:%b %Y}</td><td>0</td><td>0</td><td>$0.00</td>" in page
    assert "Not counted here: 2 replayed builds of the offline demo" in page


def test_a_replayed_builds_page_says_it_cost_nothing_and_its_token_counts_are_the_samples(client, alice, player):
    replayed = build_with_calls(alice, player, costs=["0.18"], replayed=True)  # as once priced: shown nowhere
    live = build_with_calls(alice, player, costs=["0.25"])
    client.force_login(alice)

    page = client.get(replayed.get_absolute_url()).content.decode()
    usage = page[page.index('id="usage"') : page.index("</section>", page.index('id="usage"'))]
    assert "Replayed a sample conversation" in usage and "not recorded from Claude" in usage
    assert "nothing was spent, cost $0.00" in usage and "$0.18" not in usage
    assert "The sample's own token counts, not measurements" in usage

    page = client.get(live.get_absolute_url()).content.decode()
    usage = page[page.index('id="usage"') : page.index("</section>", page.index('id="usage"'))]
    assert "cost $0.2500" in usage and "sample" not in usage


def test_the_axis_tops_out_at_a_round_number():
    assert [nice_ceiling(v) for v in (0, 0.3, 3, 3.5, 7, 10, 123)] == [1, 0.4, 4, 4, 10, 10, 200]


def test_an_admin_pauses_and_resumes_all_new_builds_with_a_message(client, alice, ada, player):
    client.force_login(ada)
    response = client.post("/costs/pause/", {"paused": "1", "message": "Back on Monday: we are over budget."})
    assert response.status_code == 302
    assert check_build(alice, player) == "New builds are paused. Back on Monday: we are over budget."
    page = client.get("/costs/").content.decode()
    assert "New builds are paused" in page and "Let new builds start again" in page
    client.post("/costs/pause/", {"paused": "0"})
    assert not Control.get().builds_paused
    assert check_build(alice, player) is None


def test_an_admin_sets_and_removes_limits_for_a_person_an_app_and_the_company(client, alice, ada, player, settings):
    settings.BUDGET_DAILY_BUILDS = 20
    client.force_login(ada)
    build_with_calls(alice, player, costs=["0.40"])
    assert client.post("/costs/budgets/", {"username": "alice", "daily_builds": "1"}).status_code == 302
    assert client.post("/costs/budgets/", {"target": player.pk, "monthly_dollars": "50"}).status_code == 302
    assert client.post("/costs/budgets/", {"daily_builds": "5"}).status_code == 302  # the company default
    assert Budget.objects.get(user=alice).daily_builds == 1
    assert "daily limit of 1 build (1 started today)" in check_build(alice, player)
    client.post("/costs/budgets/", {"username": "alice", "daily_builds": "3"})  # changes her row
    assert Budget.objects.filter(user=alice).count() == 1 and Budget.objects.get(user=alice).daily_builds == 3
    page = client.get("/costs/").content.decode()
    rows = page[page.index('id="budget-rows"') : page.index('id="budget-form"')]
    assert "Alice" in rows and "Web Player" in rows and "Everyone (company default)" in rows
    assert '<td>3 <span class="muted small">(used 1)</span></td>' in rows
    assert '<td>$50.00 <span class="muted small">(used $0.40)</span></td>' in rows
    assert "<td>200 (default) <span" in rows  # her monthly builds: from the settings
    assert "<td>No limit <span" in rows  # the app has no daily dollar limit
    assert "Each person may start 20 builds a day" in page
    mine = Budget.objects.get(user=alice)
    client.post(f"/costs/budgets/{mine.pk}/delete/")
    assert not Budget.objects.filter(user=alice).exists()


def test_a_budget_for_nobody_known_or_for_both_a_person_and_an_app_is_refused(client, ada, player):
    client.force_login(ada)
    response = client.post("/costs/budgets/", {"username": "zed", "daily_builds": "1"})
    assert response.status_code == 400 and "Nobody is called “zed”." in response.content.decode()
    response = client.post("/costs/budgets/", {"username": "ada", "target": player.pk, "daily_builds": "1"})
    assert response.status_code == 400 and "not both" in response.content.decode()
    assert not Budget.objects.exists()
