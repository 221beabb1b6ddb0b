"""Several attempts of one idea: N builds made at once within a budget checked up front for all of them,
run side by side, ranked in the judge's order when all have ended, the best kept as the version at once;
the owner may keep another. One attempt (the default) goes through the same `keep` as it always did.

Builds with hand-written results (judge scores, test counts) are sample data; one test runs two real
replayed attempts of an example target through Celery, git and the sandbox."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.conf import settings
from django.utils import timezone

from agents import workspace as git
from prototypes import attempts, builds, pipeline, retention
from prototypes.builds import NotAllowed, create_prototype
from prototypes.models import Artifact, Build, Prototype, Revision, Target
from prototypes.targets import import_example
from store.budgets import check_build

pytestmark = pytest.mark.django_db


@pytest.fixture
def target():
    return Target.objects.create(slug="sample-app", name="Sample App", kind="web", git_url="/nowhere",
                                 recipe_checked_at=timezone.now())  # fmt: skip


@pytest.fixture
def limits(settings):
    settings.BUDGET_DAILY_BUILDS = 5
    settings.BUDGET_MONTHLY_BUILDS = 50
    settings.BUDGET_DAILY_DOLLARS = "10"
    settings.BUDGET_MONTHLY_DOLLARS = "100"
    settings.BUDGET_CONTACT = "#prototype-store"
    settings.AGENT_MAX_COST = "4"
    settings.MAX_ATTEMPTS = 4
    return settings


def spent(author, target, *, count=1, cost="0"):
    """Earlier builds of `author` today (sample rows), each costing `cost` dollars of a live model."""
    for _ in range(count):
        n = Prototype.objects.count() + 1
        prototype = Prototype.objects.create(slug=f"earlier-{n}", title=f"Earlier {n}", owner=author, target=target)
        revision = Revision.objects.create(prototype=prototype, number=1, prompt="An idea", author=author)
        Build.objects.create(revision=revision, state=Build.State.SUCCEEDED, cost=Decimal(cost))


def counts():
    return Prototype.objects.count(), Revision.objects.count(), Build.objects.count()


# --- asking for several ------------------------------------------------------------------------------


def test_asking_for_three_attempts_makes_three_queued_builds_of_one_revision(alice, target, limits):
    first = create_prototype(owner=alice, target=target, idea="Add a dark mode toggle", attempts=3)

    revision = first.revision
    assert revision.attempts == 3
    assert [(b.attempt, b.state) for b in revision.builds.order_by("attempt")] == [
        (1, Build.State.QUEUED), (2, Build.State.QUEUED), (3, Build.State.QUEUED),
    ]  # fmt: skip
    assert first.attempt == 1
    # Each commits to a ref of its own; keeping one points the version's ref at it.
    assert [attempts.result_ref(b) for b in revision.builds.order_by("attempt")] == [
        f"refs/prototype-attempts/{revision.prototype.slug}/1/{n}" for n in (1, 2, 3)
    ]


def test_without_a_number_the_target_default_is_used_and_one_attempt_commits_to_the_version_ref(alice, target, limits):
    single = create_prototype(owner=alice, target=target, idea="Add a dark mode toggle")
    assert single.revision.attempts == 1
    assert (
        pipeline.build_spec(single).result_ref
        == single.revision.result_ref
        == "refs/prototypes/add-a-dark-mode-toggle/1"
    )

    target.default_attempts = 2
    target.save()
    several = create_prototype(owner=alice, target=target, idea="Add a sleep timer")
    assert several.revision.attempts == 2
    assert several.revision.builds.count() == 2
    assert pipeline.build_spec(several).result_ref == "refs/prototype-attempts/add-a-sleep-timer/1/1"


def test_a_number_of_attempts_out_of_range_is_refused_and_nothing_is_made(alice, target, limits):
    before = counts()
    for wrong in (0, 5, -1):
        with pytest.raises(NotAllowed, match="Ask for 1 to 4 attempts."):
            create_prototype(owner=alice, target=target, idea="Add a dark mode toggle", attempts=wrong)
    assert counts() == before


def test_a_follow_up_and_a_remix_ask_for_attempts_too(alice, bob, target, limits):
    first = create_prototype(owner=alice, target=target, idea="Add a dark mode toggle")
    revision = first.revision
    Build.objects.filter(pk=first.pk).update(state=Build.State.SUCCEEDED, result_commit="c" * 40)
    Revision.objects.filter(pk=revision.pk).update(result_commit="c" * 40, kept_build=first)
    prototype = revision.prototype
    prototype.current_revision = revision
    prototype.listing = Prototype.Listing.LISTED  # bob sees it in the store
    prototype.save()
    revision.refresh_from_db()

    change = builds.ask_for_change(prototype, by=alice, idea="Bigger buttons", attempts=2)
    remix = builds.remix(revision, by=bob, idea="Add a sleep timer", attempts=3)

    assert (change.revision.number, change.revision.attempts, change.revision.builds.count()) == (2, 2, 2)
    assert (remix.revision.prototype.owner, remix.revision.attempts, remix.revision.builds.count()) == (bob, 3, 3)


def test_the_api_takes_the_number_of_attempts(client, alice, target, limits):
    client.force_login(alice)
    response = client.post("/api/prototypes/", {"target": target.slug, "idea": "Add a dark mode toggle",
                                                 "attempts": 2}, content_type="application/json")  # fmt: skip
    assert response.status_code == 201, response.content
    assert Revision.objects.get().attempts == 2
    assert Build.objects.count() == 2

    response = client.post("/api/prototypes/", {"target": target.slug, "idea": "Add a sleep timer", "attempts": 9},
                           content_type="application/json")  # fmt: skip
    assert response.status_code == 403
    assert "Ask for 1 to 4 attempts." in response.content.decode()


# --- the budget, checked up front for all of them --------------------------------------------------------


def test_attempts_over_the_build_limit_are_refused_up_front_saying_how_many_fit(alice, target, limits):
    spent(alice, target, count=3)  # 2 of the daily 5 left
    before = counts()

    with pytest.raises(NotAllowed) as refused:
        create_prototype(owner=alice, target=target, idea="Add a dark mode toggle", attempts=3)

    assert str(refused.value).startswith("You have 2 builds left of your daily limit of 5: 2 attempts fit, not 3.")
    assert "Ask for 2 or fewer." in str(refused.value)
    assert counts() == before  # nothing made, nothing charged
    assert (
        create_prototype(owner=alice, target=target, idea="Add a dark mode toggle", attempts=2).revision.attempts == 2
    )
    assert check_build(alice, target) is not None  # all 5 used now: a single build is refused as before


def test_attempts_the_dollars_left_cannot_cover_are_refused_up_front(alice, target, limits):
    limits.AGENT_PROVIDER = "anthropic"  # a live model: each attempt may cost up to AGENT_MAX_COST ($4)
    spent(alice, target, cost="3")  # $7 of the daily $10 left: two attempts can start, the second with $3 left

    message = check_build(alice, target, count=3)

    assert message.startswith(
        "You have $7.00 left of your daily budget of $10.00, and each attempt may cost up to $4.00: "
        "2 attempts fit, not 3. Ask for 2 or fewer. It resets tomorrow."
    )
    assert check_build(alice, target, count=2) is None
    assert check_build(alice, target) is None  # one build needs only some money left, as always
    before = counts()
    with pytest.raises(NotAllowed, match="2 attempts fit, not 3"):
        create_prototype(owner=alice, target=target, idea="Add a dark mode toggle", attempts=3)
    assert counts() == before


def test_replayed_attempts_cost_nothing_so_only_the_build_limits_count(alice, target, limits):
    assert limits.AGENT_PROVIDER == "replay"
    spent(alice, target, cost="3")
    assert check_build(alice, target, count=4) is None


def test_a_target_limit_is_checked_for_all_attempts_too(alice, bob, target, limits):
    from store.models import Budget

    Budget.objects.create(target=target, daily_builds=3)
    spent(bob, target, count=2)
    assert check_build(alice, target, count=2).startswith(
        "Sample App has 1 build left of its daily limit of 3: 1 attempt fits, not 2."
    )
    assert check_build(alice, target, count=1) is None


# --- ranking, keeping --------------------------------------------------------------------------------


def revision_with(owner, target, results, *, attempts_asked=None):
    """A revision whose attempts ended with the given sample results: (state, judge score, tests passed, turns)."""
    prototype = Prototype.objects.create(slug="dark-mode", title="Dark mode", owner=owner, target=target)
    revision = Revision.objects.create(prototype=prototype, number=1, prompt="Add a dark mode toggle", author=owner,
                                       attempts=attempts_asked or len(results))  # fmt: skip
    for n, (state, score, passed, turns) in enumerate(results, start=1):
        Build.objects.create(
            revision=revision, attempt=n, state=state, turns=turns, judge={"score": score} if score is not None else {},
            verify={"counts": {"passed": passed}}, base_commit="a" * 40,
            result_commit=f"{n}" * 40 if state == Build.State.SUCCEEDED else "", summary=f"Sample summary {n}.",
        )  # fmt: skip
    return revision


def by_attempt(revision):
    return {b.attempt: b for b in revision.builds.all()}


def test_when_all_attempts_ended_they_are_ranked_and_the_best_that_succeeded_is_kept(
    alice, target, django_capture_on_commit_callbacks
):
    S, F = Build.State.SUCCEEDED, Build.State.FAILED
    revision = revision_with(alice, target, [(S, 0.5, 30, 9), (F, None, 0, 20), (S, 1.0, 28, 14), (S, 1.0, 28, 11)])

    with django_capture_on_commit_callbacks(execute=True):
        kept = attempts.choose(revision)

    # Succeeded first, then the checklist score, then tests passed, then fewer turns.
    assert [b.attempt for b in attempts.ranked(revision)] == [4, 3, 1, 2]
    assert kept.attempt == 4
    revision.refresh_from_db()
    assert revision.kept_build == kept
    assert (revision.result_commit, revision.summary) == ("4" * 40, "Sample summary 4.")
    prototype = revision.prototype
    prototype.refresh_from_db()
    assert prototype.current_revision == revision
    assert prototype.listing == Prototype.Listing.LISTED
    logs = {n: b.events.filter(kind="log").last().data for n, b in by_attempt(revision).items()}
    assert logs[4]["text"] == "Attempt 4 ranked 1 of 4, 100% of the checklist passed; kept as the version."
    assert (logs[3]["rank"], logs[3]["of"]) == (2, 4)
    assert logs[2]["text"] == "Attempt 2 ranked 4 of 4 (it did not succeed)."


def test_nothing_is_decided_while_an_attempt_still_runs(alice, target):
    revision = revision_with(alice, target, [(Build.State.SUCCEEDED, 1.0, 30, 9), (Build.State.RUNNING, None, 0, 3)])

    assert attempts.choose(revision) is None
    assert not attempts.settled(revision)
    assert [b.attempt for b in attempts.ranked(revision)] == [1, 2]  # running ones last
    revision.refresh_from_db()
    assert revision.kept_build is None and revision.result_commit == ""


def test_when_no_attempt_succeeded_the_version_has_no_result(alice, target):
    F = Build.State.FAILED
    revision = revision_with(alice, target, [(F, None, 0, 5), (Build.State.CANCELLED, None, 0, 2), (F, 0.5, 3, 9)])

    assert attempts.choose(revision) is None

    revision.refresh_from_db()
    assert revision.kept_build is None and revision.result_commit == ""
    assert revision.prototype.current_revision is None
    assert [b.attempt for b in attempts.ranked(revision)] == [3, 2, 1]  # then fewer turns


def test_the_last_attempt_to_end_settles_the_revision_from_the_pipeline(alice, target):
    S = Build.State.SUCCEEDED
    revision = revision_with(alice, target, [(S, 1.0, 30, 9), (Build.State.RUNNING, None, 0, 3)])
    running = by_attempt(revision)[2]

    pipeline.fail(running, "sandbox_unavailable", "sample: the sandbox would not start")

    revision.refresh_from_db()
    assert revision.kept_build == by_attempt(revision)[1]


def test_cancelling_the_last_queued_attempt_settles_the_revision(alice, target):
    revision = revision_with(alice, target, [(Build.State.SUCCEEDED, 1.0, 30, 9), (Build.State.QUEUED, None, 0, 0)])

    assert builds.cancel_build(by_attempt(revision)[2], by=alice)

    revision.refresh_from_db()
    assert revision.kept_build == by_attempt(revision)[1]


def test_the_owner_keeps_another_attempt_and_it_becomes_the_version(alice, target, django_capture_on_commit_callbacks):
    S = Build.State.SUCCEEDED
    revision = revision_with(alice, target, [(S, 1.0, 30, 9), (S, 0.5, 30, 9)])
    attempts.choose(revision)
    second = by_attempt(revision)[2]

    with django_capture_on_commit_callbacks(execute=True):
        attempts.keep(second, by=alice)

    revision.refresh_from_db()
    assert revision.kept_build == second
    assert revision.result_commit == "2" * 40
    assert revision.summary == "Sample summary 2."
    assert second.events.filter(kind="log", data__text="Kept as version 1 by its owner.").exists()


def test_keeping_is_refused_to_others_and_for_attempts_that_did_not_succeed(alice, bob, carol, ada, target):
    revision = revision_with(alice, target, [(Build.State.SUCCEEDED, 1.0, 30, 9), (Build.State.FAILED, None, 0, 9)])
    good, failed = by_attempt(revision)[1], by_attempt(revision)[2]

    with pytest.raises(NotAllowed, match="Only the prototype's owner can choose which attempt is kept."):
        attempts.keep(good, by=bob)
    with pytest.raises(NotAllowed, match="Only the prototype's owner can choose which attempt is kept."):
        attempts.keep(good, by=ada)
    with pytest.raises(NotAllowed, match="Your role does not let you edit prototypes."):
        attempts.keep(good, by=carol)
    with pytest.raises(NotAllowed, match="Only an attempt that was built successfully can be kept."):
        attempts.keep(failed, by=alice)
    running = Build.objects.create(revision=revision, attempt=3, state=Build.State.RUNNING)
    with pytest.raises(NotAllowed, match="Only an attempt that was built successfully can be kept."):
        attempts.keep(running, by=alice)
    revision.refresh_from_db()
    assert revision.kept_build is None


def test_an_attempt_whose_files_expired_can_no_longer_be_kept(alice, target):
    revision = revision_with(alice, target, [(Build.State.SUCCEEDED, 1.0, 30, 9)])
    build = by_attempt(revision)[1]
    Artifact.objects.create(build=build, kind=Artifact.Kind.WEB, filename="app.zip", expired_at=timezone.now())

    with pytest.raises(NotAllowed, match="files have expired"):
        attempts.keep(build, by=alice)


def test_a_retried_attempt_is_ranked_with_the_others_but_does_not_replace_what_was_kept(alice, target, limits):
    S, F = Build.State.SUCCEEDED, Build.State.FAILED
    revision = revision_with(alice, target, [(F, None, 0, 9), (S, 0.5, 30, 9)])
    attempts.choose(revision)
    revision.refresh_from_db()
    assert revision.kept_build.attempt == 2

    retry = builds.retry_build(by_attempt(revision)[1], by=alice)

    assert retry.attempt == 3
    assert attempts.result_ref(retry) == "refs/prototype-attempts/dark-mode/1/3"
    Build.objects.filter(pk=retry.pk).update(state=S, judge={"score": 1.0}, result_commit="3" * 40)
    attempts.choose(revision)
    assert [b.attempt for b in attempts.ranked(revision)] == [3, 2, 1]
    revision.refresh_from_db()
    assert revision.kept_build.attempt == 2  # the choice stands; the owner may keep the retry


def test_a_retry_of_a_single_failed_build_becomes_the_version_as_before(alice, target, limits):
    revision = revision_with(alice, target, [(Build.State.FAILED, None, 0, 9)])
    retry = builds.retry_build(by_attempt(revision)[1], by=alice)
    assert attempts.result_ref(retry) == revision.result_ref  # one attempt asked: the version's own ref

    Build.objects.filter(pk=retry.pk).update(state=Build.State.PACKAGING)
    retry.refresh_from_db()
    import agents

    pipeline.store_result(retry, agents.BuildResult(base_commit="a" * 40, result_commit="e" * 40, summary="Sample."))

    revision.refresh_from_db()
    assert (revision.kept_build, revision.result_commit) == (retry, "e" * 40)
    assert not retry.events.filter(kind="log", data__has_key="rank").exists()  # one attempt: no ranks


def test_retention_expires_unkept_attempts_of_the_current_version_but_never_the_kept_one(alice, target):
    S = Build.State.SUCCEEDED
    revision = revision_with(alice, target, [(S, 1.0, 30, 9), (S, 0.5, 30, 9)])
    attempts.choose(revision)
    old = timezone.now() - timedelta(days=40)
    files = {}
    for n, build in by_attempt(revision).items():
        files[n] = Artifact.objects.create(build=build, kind=Artifact.Kind.WEB, filename=f"app-{n}.zip", size=10)
        Artifact.objects.filter(pk=files[n].pk).update(created_at=old)

    expired = retention.apply_retention(retention.Policy(days=30))

    assert [e.artifact.pk for e in expired] == [files[2].pk]
    assert retention.apply_retention(retention.Policy(keep_revisions=1)) == []  # the version is the newest


# --- two real attempts -------------------------------------------------------------------------------


def test_two_real_attempts_run_the_best_is_kept_and_the_owner_can_switch(
    alice, bob, eager_celery, django_capture_on_commit_callbacks
):
    player = import_example(settings.EXAMPLES_DIR / "targets" / "web-player", settings.TARGET_REPO_ROOT)
    with django_capture_on_commit_callbacks(execute=True):
        first = create_prototype(owner=alice, target=player, idea="Add a dark mode toggle", attempts=2)

    revision = Revision.objects.get(pk=first.revision_id)
    one, two = revision.builds.order_by("attempt")
    assert (one.state, two.state) == (Build.State.SUCCEEDED, Build.State.SUCCEEDED), (
        one.error_detail,
        two.error_detail,
    )
    assert one.task_id and two.task_id and one.task_id != two.task_id  # a task each
    mirror = settings.MIRROR_ROOT / "web-player.git"
    slug = revision.prototype.slug
    assert git.resolve(mirror, f"refs/prototype-attempts/{slug}/1/1") == one.result_commit
    assert git.resolve(mirror, f"refs/prototype-attempts/{slug}/1/2") == two.result_commit
    assert one.result_commit != two.result_commit
    # Equal samples rank in attempt order: the first is kept, the version's ref points at it.
    assert revision.kept_build == one
    assert revision.result_commit == one.result_commit
    assert git.resolve(mirror, revision.result_ref) == one.result_commit
    assert revision.prototype.current_revision == revision
    assert one.events.filter(kind="log", data__text__startswith="Attempt 1 ranked 1 of 2").exists()
    assert two.events.filter(kind="log", data__text__startswith="Attempt 2 ranked 2 of 2").exists()

    with pytest.raises(NotAllowed):
        attempts.keep(two, by=bob)
    with django_capture_on_commit_callbacks(execute=True):
        attempts.keep(two, by=alice)

    revision.refresh_from_db()
    assert (revision.kept_build, revision.result_commit) == (two, two.result_commit)
    assert git.resolve(mirror, revision.result_ref) == two.result_commit
    assert revision.prototype.current_revision == revision


def test_a_version_of_several_attempts_is_made_current_only_once_one_is_kept(alice, target):
    S = Build.State.SUCCEEDED
    revision = revision_with(alice, target, [(S, 1.0, 30, 9), (Build.State.RUNNING, None, 0, 3)])

    with pytest.raises(NotAllowed, match="Only a version that was built can be made current."):
        builds.make_current(revision, by=alice)
    attempts.keep(by_attempt(revision)[1], by=alice)
    revision.refresh_from_db()
    builds.make_current(revision, by=alice)
    assert Prototype.objects.get(pk=revision.prototype_id).current_revision == revision


def test_moving_a_ref_takes_only_real_refs_and_commits(tmp_path):
    mirror = tmp_path / "sample.git"
    git.git("init", "--bare", "--quiet", str(mirror))
    tree = git.git("mktree", git_dir=mirror, input="").strip()
    commit = git.git("commit-tree", tree, "-m", "sample", git_dir=mirror).strip()

    git.update_ref(mirror, "refs/prototypes/sample/1", commit)

    assert git.resolve(mirror, "refs/prototypes/sample/1") == commit
    for ref, sha in (("refs/prototypes/../../HEAD", commit), ("--upload-pack=touch x", commit),
                     ("HEAD", commit), ("refs/prototypes/sample/2", "0" * 40), ("refs/prototypes/x", "HEAD")):  # fmt: skip
        with pytest.raises(git.ServiceError):
            git.update_ref(mirror, ref, sha)
    assert not (tmp_path / "x").exists()
