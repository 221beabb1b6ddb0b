"""Budgets: the pause switch, per-person and per-app limits on builds and dollars, checked before anything
is created, so a request over budget costs nothing; and per-app concurrency when a build starts."""

import contextlib
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from prototypes import builds, pipeline
from prototypes.models import Build, BuildEvent, ModelCall, Prototype, Revision, Target
from store.budgets import check_build, period_starts, user_limits, user_usage
from store.models import Budget, Control

pytestmark = pytest.mark.django_db


@pytest.fixture
def target():
    return Target.objects.create(
        slug="web-player", name="Web Player", kind="web", git_url="/nowhere", recipe_checked_at=timezone.now()
    )


@pytest.fixture
def limits(settings):
    settings.BUDGET_DAILY_BUILDS = 3
    settings.BUDGET_MONTHLY_BUILDS = 10
    settings.BUDGET_DAILY_DOLLARS = "2"
    settings.BUDGET_MONTHLY_DOLLARS = "5"
    settings.BUDGET_CONTACT = ""
    return settings


def spend(author, target, *, builds=1, cost="0", charged=True, when=None, state=Build.State.SUCCEEDED, replayed=False):
    """Builds by `author` on `target`, each costing `cost` dollars."""
    made = []
    for _ in range(builds):
        n = Prototype.objects.count() + 1
        prototype = Prototype.objects.create(slug=f"p{n}", title=f"P{n}", owner=author, target=target)
        revision = Revision.objects.create(prototype=prototype, number=1, prompt="An idea", author=author)
        made.append(Build.objects.create(revision=revision, state=state, cost=Decimal(cost), charged=charged,
                                         created_at=when or timezone.now(), replayed=replayed))  # fmt: skip
    return made


def test_a_person_within_their_limits_may_build(alice, target, limits):
    spend(alice, target, builds=2, cost="0.50")
    assert check_build(alice, target) is None


def test_replayed_builds_count_as_builds_but_never_as_dollars_spent(alice, target, limits):
    # Priced from the sample's token counts, as the store once recorded them: nothing was spent.
    spend(alice, target, builds=1, cost="4.90", replayed=True)
    spend(alice, target, builds=1, cost="0.50")

    used = user_usage(alice)

    assert (used.daily_dollars, used.monthly_dollars) == (Decimal("0.50"), Decimal("0.50"))
    assert (used.daily_builds, used.monthly_builds) == (2, 2)  # they took a worker all the same
    assert check_build(alice, target) is None  # the daily $2 and monthly $5 are far off


def test_it_refuses_every_new_build_while_an_admin_has_paused_them(alice, target, limits):
    control = Control.get()
    control.builds_paused, control.pause_message = True, "Back on Monday."
    control.save()
    assert check_build(alice, target) == "New builds are paused. Back on Monday."


def test_it_refuses_a_build_over_the_daily_build_limit_and_says_when_it_resets_and_whom_to_ask(
    alice, ada, target, limits
):
    spend(alice, target, builds=3)
    message = check_build(alice, target)
    assert message.startswith("You have reached your daily limit of 3 builds (3 started today).")
    assert "It resets tomorrow." in message
    assert "Ask an admin (Ada) to raise it." in message


def test_the_message_names_whom_to_ask_when_the_store_says(alice, target, limits):
    limits.BUDGET_CONTACT = "#prototype-store on Slack"
    spend(alice, target, builds=3)
    assert check_build(alice, target).endswith("Ask #prototype-store on Slack to raise it.")


def test_queued_and_running_builds_count_from_the_moment_they_are_asked_for(alice, target, limits):
    spend(alice, target, builds=2, state=Build.State.QUEUED)
    spend(alice, target, builds=1, state=Build.State.RUNNING)
    assert "daily limit of 3 builds" in check_build(alice, target)


def test_builds_that_failed_through_our_fault_are_free(alice, target, limits):
    spend(alice, target, builds=5, cost="3", charged=False, state=Build.State.FAILED)
    assert check_build(alice, target) is None


def test_it_refuses_a_build_over_the_daily_dollar_budget(alice, target, limits):
    spend(alice, target, builds=2, cost="1.25")
    assert check_build(alice, target).startswith(
        "You have reached your daily budget of $2.00 ($2.50 spent today). It resets tomorrow."
    )


def test_it_refuses_a_build_over_the_monthly_budget_and_names_the_first_of_next_month(alice, target, limits):
    limits.BUDGET_DAILY_DOLLARS = "0"  # no daily limit
    spend(alice, target, builds=1, cost="5.10")
    first = (period_starts()[1] + timedelta(days=32)).replace(day=1)
    message = check_build(alice, target)
    assert message.startswith("You have reached your monthly budget of $5.00 ($5.10 spent this month).")
    assert f"It resets on {first.day} {first:%B}." in message


def test_what_was_spent_yesterday_or_last_month_does_not_count_today(alice, target, limits):
    day, month = period_starts()
    spend(alice, target, builds=3, cost="1", when=day - timedelta(minutes=1))
    assert "daily" not in (check_build(alice, target) or "")
    Build.objects.update(created_at=month - timedelta(minutes=1))
    assert check_build(alice, target) is None


def test_other_peoples_builds_do_not_count_toward_mine(alice, bob, target, limits):
    spend(bob, target, builds=5, cost="3")
    assert check_build(alice, target) is None


def test_a_persons_limits_come_from_their_budget_then_the_company_default_then_the_settings(alice, bob, limits):
    Budget.objects.create(daily_builds=5, daily_dollars=Decimal("4"))  # the company default
    Budget.objects.create(user=alice, daily_builds=8)
    mine, bobs = user_limits(alice), user_limits(bob)
    assert (mine.daily_builds, mine.daily_dollars, mine.monthly_builds) == (8, Decimal("4"), 10)
    assert (bobs.daily_builds, bobs.daily_dollars, bobs.monthly_dollars) == (5, Decimal("4"), Decimal("5"))


def test_zero_means_no_limit_in_the_settings_and_in_a_budget(alice, target, limits):
    limits.BUDGET_DAILY_BUILDS = 0
    Budget.objects.create(user=alice, daily_dollars=Decimal("0"))
    spend(alice, target, builds=4, cost="0.5")
    assert check_build(alice, target) is None


def test_an_apps_budget_caps_the_builds_of_everyone_on_it(alice, bob, target, limits):
    limits.BUDGET_DAILY_BUILDS = 0
    Budget.objects.create(target=target, daily_builds=4)
    spend(alice, target, builds=2)
    spend(bob, target, builds=2)
    message = check_build(bob, target)
    assert message.startswith("Web Player has reached its daily limit of 4 builds (4 started today).")
    other = Target.objects.create(slug="api", name="API", git_url="/nowhere", recipe_checked_at=timezone.now())
    assert check_build(bob, other) is None


def test_every_way_to_make_a_build_asks_the_gate_first(alice, target, limits):
    (build,) = spend(alice, target, state=Build.State.FAILED)
    revision = build.revision
    Revision.objects.filter(pk=revision.pk).update(result_commit="abc")
    revision.refresh_from_db()
    prototype = revision.prototype
    prototype.current_revision = revision
    prototype.save()
    Control.objects.update_or_create(pk=1, defaults={"builds_paused": True, "pause_message": "Maintenance."})
    before = Build.objects.count()
    attempts = [
        lambda: builds.create_prototype(owner=alice, target=target, idea="Add a dark mode toggle"),
        lambda: builds.ask_for_change(prototype, by=alice, idea="Bigger buttons"),
        lambda: builds.remix(revision, by=alice, idea="Add a sleep timer"),
        lambda: builds.retry_build(build, by=alice),
    ]
    for attempt in attempts:
        with pytest.raises(builds.NotAllowed, match="New builds are paused. Maintenance."):
            attempt()
    assert Build.objects.count() == before


def test_without_a_gate_nothing_is_checked(alice, target, limits):
    limits.BUILD_GATE = ""
    Control.objects.update_or_create(pk=1, defaults={"builds_paused": True})
    builds.create_prototype(owner=alice, target=target, idea="Add a dark mode toggle")


def test_the_new_prototype_form_over_budget_shows_why_keeps_the_text_and_costs_nothing(
    client, alice, target, limits, eager_celery, django_capture_on_commit_callbacks
):
    assert limits.AGENT_PROVIDER == "replay"
    spend(alice, target, builds=3)
    counts = (Prototype.objects.count(), Revision.objects.count(), Build.objects.count())
    client.force_login(alice)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = client.post("/new/", {"target": target.pk, "idea": "Add a sleep timer to the player",
                                         "title": "Sleep timer", "visibility": "company"})  # fmt: skip
    page = response.content.decode()
    assert response.status_code == 200
    assert "You have reached your daily limit of 3 builds (3 started today)." in page
    assert "It resets tomorrow." in page
    assert "Add a sleep timer to the player</textarea>" in page and 'value="Sleep timer"' in page
    assert (Prototype.objects.count(), Revision.objects.count(), Build.objects.count()) == counts
    assert callbacks == [] and not ModelCall.objects.exists()


# --- per-app concurrency, when a build starts --------------------------------------------------------


class Sent:
    def __init__(self):
        self.calls = []

    def __call__(self, args, countdown=None):
        self.calls.append((args, countdown))


def test_a_build_waits_while_its_app_runs_as_many_builds_as_it_may(
    alice, target, monkeypatch, django_capture_on_commit_callbacks
):
    from prototypes.tasks import run_build

    target.concurrency_limit = 1
    target.save()
    (running,) = spend(alice, target, state=Build.State.RUNNING)
    (waiting,) = spend(alice, target, state=Build.State.QUEUED)
    sent = Sent()
    monkeypatch.setattr(run_build, "apply_async", sent)
    for _ in range(2):
        with django_capture_on_commit_callbacks(execute=True):
            pipeline.run_build(waiting.pk)
    waiting.refresh_from_db()
    assert waiting.state == Build.State.QUEUED and waiting.started_at is None
    assert sent.calls == [((waiting.pk,), pipeline.WAIT_SECONDS)] * 2
    logs = BuildEvent.objects.filter(build=waiting, kind="log").values_list("data__text", flat=True)
    assert list(logs) == ["Waiting: 1 build of this app is running; this one starts when one ends."]
    # A slot frees up: the next try starts it.
    running.move(Build.State.FAILED)
    monkeypatch.setattr(pipeline, "build_spec", lambda build: (_ for _ in ()).throw(RuntimeError("stop here")))
    with contextlib.suppress(RuntimeError):
        pipeline.run_build(waiting.pk)
    statuses = BuildEvent.objects.filter(build=waiting, kind="status").values_list("data__to", flat=True)
    assert list(statuses) == ["preparing", "failed"] and sent.calls == [((waiting.pk,), pipeline.WAIT_SECONDS)] * 2
