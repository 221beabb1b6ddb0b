"""Onboarding a target by command and API: the recipe check runs at once, a target whose check fails stays
out of makers' reach everywhere (pages, API, catalog, remix, the pipeline), and admins have a page per
target with its last check, recipe, builds, success rate and median build time."""

import html
from datetime import timedelta

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.utils import timezone
from rest_framework.authtoken.models import Token

from prototypes import builds, pipeline
from prototypes.models import Build, Prototype, Revision, Target
from prototypes.targets import build_stats, import_example
from store.catalog import facets
from tests.test_targets_admin import BROKEN, GOOD, commit, git_repo, register

pytestmark = pytest.mark.django_db
NO_RECIPE = {"README.md": "An app with no recipe yet."}


def run(*args) -> str:
    """`manage.py target ...`: what it printed (a failure raises CommandError, the command's non-zero exit)."""
    from io import StringIO

    out = StringIO()
    call_command("target", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def failing(*args) -> str:
    with pytest.raises(CommandError) as failed:
        run(*args)
    return str(failed.value)


def offered() -> set[str]:
    return set(Target.objects.offered().values_list("slug", flat=True))


@pytest.fixture
def enqueued(monkeypatch):
    monkeypatch.setattr(builds, "_enqueue", lambda build: None)


def as_token(client, user):
    client.defaults["HTTP_AUTHORIZATION"] = f"Token {Token.objects.get_or_create(user=user)[0].key}"


# --- the command ---------------------------------------------------------------------------------------


def test_target_add_registers_checks_at_once_and_says_what_it_found(tmp_path):
    repo = git_repo(tmp_path / "podcast-api.git", {"prototype.toml": GOOD})
    out = run("add", "--git", str(repo), "--allow-host", "pypi.org", "*.Example.com", "--allow-host", "pypi.org")
    target = Target.objects.get()
    assert (target.slug, target.name, target.kind) == ("podcast-api", "Podcast API", "backend")
    assert target.egress_hosts == ["pypi.org", "*.example.com"]
    assert target.recipe_checked_at is not None and target.recipe_error == ""
    assert "Registered target 'podcast-api'" in out
    assert "name:      Podcast API" in out and "kind:      backend" in out
    assert "test:      python3 -m unittest" in out and "artifact:  pyz dist/podcast.pyz" in out
    assert out.rstrip().endswith("ready: makers can build on it.")
    assert offered() == {"podcast-api"}


def test_a_target_whose_check_fails_is_registered_disabled_and_the_exit_code_says_so(tmp_path):
    repo = git_repo(tmp_path / "phone", {"prototype.toml": BROKEN})
    message = failing("add", "--git", str(repo), "--name", "Our phone app")
    assert "prototype.toml line 7, key 'artifact.kind'" in message
    assert "'phone' stays disabled" in message and "manage.py target check phone" in message
    target = Target.objects.get(slug="phone")
    assert target.name == "Our phone app" and target.state == Target.State.CHECK_FAILED
    assert offered() == set()
    # The admin fixes the recipe in the repository: a passing check offers it, with no other step.
    commit(repo, {"prototype.toml": BROKEN.replace('kind = "web"', 'kind = "apk"')}, "Fix the recipe")
    assert "ready: makers can build on it." in run("check", "phone")
    assert offered() == {"phone"}


def test_a_recipe_file_stands_in_for_a_missing_prototype_toml_and_re_running_add_updates(tmp_path):
    repo = git_repo(tmp_path / "bare-app", NO_RECIPE)
    message = failing("add", "--git", str(repo))
    assert "has no prototype.toml at the root of its 'main' branch" in message and "--recipe FILE" in message
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(GOOD)
    out = run("add", "--git", str(repo), "--recipe", str(recipe))  # the same URL: updates the same target
    assert "Updated target 'bare-app'" in out and "Recipe (the recipe override):" in out
    target = Target.objects.get()
    assert target.recipe_override == GOOD and target.state == Target.State.READY
    assert "Could not read the recipe file" in failing("add", "--git", str(repo), "--recipe", str(tmp_path / "nope"))


def test_the_admin_chooses_the_slug_and_a_taken_one_is_refused(tmp_path):
    first = git_repo(tmp_path / "app", {"prototype.toml": GOOD})
    other_root = tmp_path / "elsewhere"
    other_root.mkdir()
    second = git_repo(other_root / "app", {"prototype.toml": GOOD})
    run("add", "--git", str(first))
    message = failing("add", "--git", str(second))
    assert f"The slug 'app' is already taken by Podcast API ({first}): choose another with --slug." in message
    run("add", "--git", str(second), "--slug", "app-two")
    assert set(Target.objects.values_list("slug", "git_url")) == {("app", str(first)), ("app-two", str(second))}
    assert "cannot be a target's slug" in failing("add", "--git", str(second), "--slug", "not a slug")
    assert "Allowed hosts:" in failing("add", "--git", str(second), "--slug", "x", "--allow-host", "10.0.0.1")
    assert not Target.objects.filter(slug="x").exists()  # nothing half-registered


def test_a_passing_check_never_turns_on_a_target_an_admin_switched_off(tmp_path):
    repo = git_repo(tmp_path / "player", {"prototype.toml": GOOD})
    run("add", "--git", str(repo))
    assert "switched off" in run("disable", "player")
    assert offered() == set()
    out = run("check", "player")
    assert "switched off by an admin" in out and "ready" not in out
    assert Target.objects.get().state == Target.State.DISABLED and offered() == set()
    assert "makers can build on it" in run("enable", "player")
    assert offered() == {"player"}


def test_target_list_shows_slug_kind_state_last_check_and_problem(tmp_path):
    assert "No targets yet" in run("list")
    run("add", "--git", str(git_repo(tmp_path / "good", {"prototype.toml": GOOD})))
    failing("add", "--git", str(git_repo(tmp_path / "bad", {"prototype.toml": BROKEN})))
    Target.objects.create(slug="legacy", name="Legacy", git_url="/nowhere")
    lines = run("list").splitlines()
    assert lines[0].split() == ["SLUG", "KIND", "STATE", "LAST", "CHECK", "PROBLEM"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert rows["good"].split()[1:3] == ["backend", "ready"]
    assert rows["bad"].split()[1:3] == ["web", "check_failed"] and "line 7, key 'artifact.kind'" in rows["bad"]
    assert rows["legacy"].split()[1:4] == ["web", "not_checked", "never"]
    assert "The check failed for: bad, legacy." in failing("check", "--all")  # /nowhere cannot be read
    assert "There is no target 'nope'" in failing("check", "nope")


def test_a_git_url_or_branch_git_would_read_as_an_option_is_refused_everywhere(client, ada, tmp_path):
    ran = tmp_path / "ran"
    evil = f"--upload-pack=touch {ran}"  # fetching from it would run `touch` on this machine
    assert "cannot start with “-”" in failing("add", f"--git={evil}", "--slug", "evil")
    repo = git_repo(tmp_path / "app", {"prototype.toml": GOOD})
    assert "The branch '-x' cannot be used" in failing("add", "--git", str(repo), "--branch=-x")
    as_token(client, ada)
    answer = client.post("/api/targets/", {"git_url": evil, "slug": "evil"}, content_type="application/json")
    assert answer.status_code == 400 and "git_url" in answer.json()["error"]["fields"]
    answer = client.post("/api/targets/", {"git_url": str(repo), "default_branch": "main\n--upload-pack=x"},
                         content_type="application/json")  # fmt: skip
    assert answer.status_code == 400 and "control characters" in answer.json()["error"]["fields"]["default_branch"][0]
    client.force_login(ada)
    page = register(client, evil, slug="evil")
    assert "cannot start with “-”" in page
    assert not Target.objects.exists() and not ran.exists()


# --- the API -------------------------------------------------------------------------------------------


def test_an_admin_registers_a_target_through_the_api_and_the_answer_carries_the_check(client, ada, tmp_path):
    as_token(client, ada)
    good = git_repo(tmp_path / "podcast-api.git", {"prototype.toml": GOOD})
    answer = client.post("/api/targets/", {"git_url": str(good), "egress_hosts": ["PyPI.org"]},
                         content_type="application/json")  # fmt: skip
    assert answer.status_code == 201, answer.content
    data = answer.json()
    assert (data["slug"], data["name"], data["kind"], data["state"], data["problem"]) == (
        "podcast-api", "Podcast API", "backend", "ready", "")  # fmt: skip
    assert data["egress_hosts"] == ["pypi.org"] and data["checked_at"]
    assert data["page"].endswith("/targets/podcast-api/")

    bad = git_repo(tmp_path / "phone", {"prototype.toml": BROKEN})
    data = client.post("/api/targets/", {"git_url": str(bad), "slug": "phone-app", "default_branch": "main"},
                       content_type="application/json").json()  # fmt: skip
    assert data["state"] == "check_failed" and "line 7, key 'artifact.kind'" in data["problem"]
    taken = client.post("/api/targets/", {"git_url": str(good)}, content_type="application/json")
    assert taken.status_code == 400 and "already a target “podcast-api”" in taken.json()["error"]["fields"]["slug"][0]
    hosts = client.post("/api/targets/", {"git_url": str(good), "slug": "x", "egress_hosts": ["10.0.0.1"]},
                        content_type="application/json")  # fmt: skip
    assert hosts.status_code == 400 and "IP address" in hosts.json()["error"]["fields"]["egress_hosts"][0]


def test_changing_where_the_recipe_comes_from_checks_again_and_other_changes_do_not(client, ada, tmp_path):
    as_token(client, ada)
    repo = git_repo(tmp_path / "phone", {"prototype.toml": BROKEN})
    client.post("/api/targets/", {"git_url": str(repo)}, content_type="application/json")
    commit(repo, {"prototype.toml": BROKEN.replace('kind = "web"', 'kind = "apk"')}, "Fix the recipe")
    data = client.patch("/api/targets/phone/", {"concurrency_limit": 3}, content_type="application/json").json()
    assert data["state"] == "check_failed" and data["concurrency_limit"] == 3  # not read again: still the old result
    # A branch that does not exist fails the check at once, saying so; back on main it passes.
    data = client.patch("/api/targets/phone/", {"default_branch": "nope"}, content_type="application/json").json()
    assert data["state"] == "check_failed" and "branch 'nope'" in data["problem"]
    data = client.patch("/api/targets/phone/", {"default_branch": "main"}, content_type="application/json").json()
    assert (data["state"], data["problem"], data["kind"]) == ("ready", "", "android")
    data = client.patch("/api/targets/phone/", {"enabled": False}, content_type="application/json").json()
    assert data["state"] == "disabled"
    renamed = client.patch("/api/targets/phone/", {"slug": "phone-2"}, content_type="application/json")
    assert renamed.status_code == 400 and "cannot change" in renamed.json()["error"]["fields"]["slug"][0]


def test_only_admins_register_or_change_targets(client, alice, ada, tmp_path):
    Target.objects.create(slug="web", name="Web", git_url="/nowhere", recipe_checked_at=timezone.now())
    as_token(client, alice)
    refused = client.post("/api/targets/", {"git_url": "/srv/app.git"}, content_type="application/json")
    assert refused.status_code == 403
    assert refused.json()["error"] == {
        "code": "not_allowed", "message": "Only admins can register targets or change them.", "fields": {}}  # fmt: skip
    refused = client.patch("/api/targets/web/", {"git_url": "/srv/evil.git"}, content_type="application/json")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "not_allowed"
    assert Target.objects.get().git_url == "/nowhere" and not Target.objects.filter(slug="app").exists()
    seen = client.get("/api/targets/web/").json()
    assert "git_url" not in seen and "problem" not in seen  # makers read what the new page shows, no more


# --- a failed target is offered nowhere ----------------------------------------------------------------


@pytest.fixture
def failed_target(tmp_path):
    repo = git_repo(tmp_path / "phone", {"prototype.toml": BROKEN})
    with pytest.raises(CommandError):
        run("add", "--git", str(repo), "--name", "Phone App")
    return Target.objects.get(slug="phone")


@pytest.fixture
def ready_target():
    return Target.objects.create(slug="web", name="Web", git_url="/nowhere", recipe_checked_at=timezone.now())


def test_a_failed_target_is_not_on_the_new_page_nor_in_the_catalog_filter(client, alice, failed_target, ready_target):
    client.force_login(alice)
    page = client.get("/new/").content.decode()
    assert 'data-slug="web"' in page and 'data-slug="phone"' not in page
    answer = client.post("/new/", {"target": failed_target.pk, "idea": "Add a sleep timer", "visibility": "company"})
    assert answer.status_code == 200 and not Prototype.objects.exists()
    assert "Select a valid choice" in html.unescape(answer.content.decode())
    assert [slug for slug, _name in facets()["targets"]] == ["web"]


def test_the_api_refuses_a_failed_target_with_a_clear_400_and_lists_it_only_for_admins(
    client, alice, ada, failed_target, ready_target, enqueued
):
    as_token(client, alice)
    answer = client.post("/api/prototypes/", {"target": "phone", "idea": "Add a sleep timer"},
                         content_type="application/json")  # fmt: skip
    assert answer.status_code == 400
    assert answer.json()["error"]["fields"] == {
        "target": ["Phone App cannot be built right now: its setup has a problem an admin needs to fix."]}  # fmt: skip
    assert not Prototype.objects.exists()
    unknown = client.post("/api/prototypes/", {"target": "nope", "idea": "Hi"}, content_type="application/json")
    assert "There is no app “nope” to build on." in unknown.json()["error"]["fields"]["target"][0]
    assert [t["slug"] for t in client.get("/api/targets/").json()["results"]] == ["web"]
    assert client.get("/api/targets/phone/").status_code == 404
    as_token(client, ada)
    assert {t["slug"]: t["state"] for t in client.get("/api/targets/").json()["results"]} == {
        "phone": "check_failed", "web": "ready"}  # fmt: skip


def test_remixes_changes_and_retries_of_a_failed_target_are_refused(alice, bob, ready_target, enqueued):
    build = builds.create_prototype(owner=alice, target=ready_target, idea="Add a sleep timer")
    revision = build.revision
    Revision.objects.filter(pk=revision.pk).update(result_commit="a" * 40)
    Prototype.objects.filter(pk=revision.prototype_id).update(current_revision=revision, listing="listed")
    build.move(Build.State.FAILED)
    Target.objects.filter(pk=ready_target.pk).update(recipe_error="The repository has no prototype.toml.")
    revision.refresh_from_db()
    refusal = "Web cannot be built right now: its setup has a problem an admin needs to fix."
    with pytest.raises(builds.NotAllowed, match=refusal):
        builds.remix(revision, by=bob, idea="My own version")
    with pytest.raises(builds.NotAllowed, match=refusal):
        builds.ask_for_change(revision.prototype, by=alice, idea="Bigger buttons")
    with pytest.raises(builds.NotAllowed, match=refusal):
        builds.retry_build(build, by=alice)
    # Switched off by hand only stops new prototypes: the owner may still ask for changes.
    Target.objects.filter(pk=ready_target.pk).update(recipe_error="", enabled=False)
    revision.prototype.refresh_from_db()
    with pytest.raises(builds.NotAllowed, match="Web is not taking new prototypes right now."):
        builds.remix(revision, by=bob, idea="My own version")
    assert builds.ask_for_change(revision.prototype, by=alice, idea="Bigger buttons").state == Build.State.QUEUED


def test_the_pipeline_refuses_a_queued_build_of_a_target_whose_check_failed_since(alice, ready_target, enqueued,
                                                                                 monkeypatch):  # fmt: skip
    build = builds.create_prototype(owner=alice, target=ready_target, idea="Add a sleep timer")
    Target.objects.filter(pk=ready_target.pk).update(recipe_error="Could not read the repository.")
    monkeypatch.setattr(pipeline.agents, "build", lambda *a, **k: pytest.fail("the engine must not be called"))
    pipeline.run_build(build.pk)
    build.refresh_from_db()
    assert (build.state, build.error_code, build.charged) == (Build.State.FAILED, "recipe_invalid", False)
    assert build.error_detail == "Web cannot be built right now: its setup has a problem an admin needs to fix."


def test_offered_and_each_targets_state_say_the_same():
    now = timezone.now()
    for enabled in (True, False):
        for checked in (now, None):
            for error in ("", "broken"):
                Target.objects.create(slug=f"t-{enabled}-{bool(checked)}-{bool(error)}".lower(), name="T",
                                      git_url="/x", enabled=enabled, recipe_checked_at=checked, recipe_error=error)  # fmt: skip
    ready = {t.slug for t in Target.objects.all() if t.state == Target.State.READY and not t.refusal()}
    assert offered() == ready == {"t-true-true-false"}


def test_seeded_examples_are_checked_and_offered_without_a_fetch():
    target = import_example(settings.EXAMPLES_DIR / "targets" / "web-player", settings.TARGET_REPO_ROOT)
    assert target.recipe_checked_at is not None and target.state == Target.State.READY
    assert "web-player" in offered()


# --- the admins' target page ---------------------------------------------------------------------------


def finished(target, owner, state, *, minutes: float, ended_days_ago: float, slug: str):
    prototype = Prototype.objects.create(slug=slug, title=slug.title(), owner=owner, target=target)
    revision = Revision.objects.create(prototype=prototype, number=1, prompt="Idea", author=owner)
    end = timezone.now() - timedelta(days=ended_days_ago)
    return Build.objects.create(revision=revision, state=state, started_at=end - timedelta(minutes=minutes),
                                finished_at=end, created_at=end - timedelta(minutes=minutes))  # fmt: skip


def test_build_stats_count_the_last_30_days_success_rate_and_median_build_time(alice, ready_target):
    assert build_stats(ready_target).finished == 0 and build_stats(ready_target).median_seconds is None
    finished(ready_target, alice, "succeeded", minutes=2, ended_days_ago=1, slug="a")
    finished(ready_target, alice, "succeeded", minutes=4, ended_days_ago=2, slug="b")
    finished(ready_target, alice, "succeeded", minutes=10, ended_days_ago=3, slug="c")
    finished(ready_target, alice, "failed", minutes=1, ended_days_ago=4, slug="d")
    finished(ready_target, alice, "cancelled", minutes=1, ended_days_ago=4, slug="e")  # says nothing of the app
    finished(ready_target, alice, "succeeded", minutes=60, ended_days_ago=31, slug="f")  # too old
    other = Target.objects.create(slug="other", name="Other", git_url="/x")
    finished(other, alice, "failed", minutes=1, ended_days_ago=1, slug="g")
    stats = build_stats(ready_target)
    assert (stats.finished, stats.succeeded, stats.success_rate, stats.median_seconds) == (4, 3, 0.75, 240)


def test_the_target_page_shows_admins_the_check_recipe_hosts_builds_and_numbers(client, alice, ada, tmp_path):
    repo = git_repo(tmp_path / "phone", {"prototype.toml": BROKEN})
    with pytest.raises(CommandError):
        run("add", "--git", str(repo), "--allow-host", "dl.google.com")
    target = Target.objects.get()
    client.force_login(alice)
    assert client.get("/targets/phone/").status_code == 404 and client.get("/targets/").status_code == 404
    client.force_login(ada)
    page = html.unescape(client.get("/targets/phone/").content.decode())
    assert "Its check failed" in page and target.recipe_error in page  # the problem in full
    assert 'kind = "web"' in page and "dl.google.com" in page and "No builds yet." in page
    finished(target, alice, "succeeded", minutes=3, ended_days_ago=1, slug="one")
    finished(target, alice, "failed", minutes=1, ended_days_ago=2, slug="two")
    finished(target, alice, "succeeded", minutes=5, ended_days_ago=3, slug="three")
    page = html.unescape(client.get("/targets/phone/").content.decode())
    assert "67% succeeded (2 of 3 builds that ended" in page and "Median build time: 4 min" in page
    assert page.count("<tr><td><a href=") == 3 and "One" in page and "3 min" in page
    listing = html.unescape(client.get("/targets/").content.decode())
    assert 'href="/targets/phone/"' in listing and "Its check failed" in listing
    assert 'href="/targets/"' in client.get("/").content.decode()  # in the admins' navigation
    admin_page = client.get(f"/admin/prototypes/target/{target.pk}/change/").content.decode()
    assert 'href="/targets/phone/"' in admin_page
