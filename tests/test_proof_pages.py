"""The proof on the pages: the browser check on the build page (live and after), the version page with
its checklist, pictures before and after and attempts side by side, keeping an attempt, the Attempts
field of the forms, and what the pull request says was checked.

The checks, checklists and verdicts below are sample data written by hand in the shapes the engine
stores (agents.browser.SmokeReport.as_event(), agents.judge), not the output of a real build."""

import io
import os
import re
import shutil
from decimal import Decimal

import pytest
from django.contrib.messages import get_messages
from django.core.files.base import ContentFile
from django.test import override_settings
from django.utils import timezone
from PIL import Image

from prototypes import progress
from prototypes.graduation import pull_request_body
from prototypes.models import Build, BuildEvent, Prototype, Revision, Screenshot, Target, append_events
from store.forms import NewPrototypeForm
from tests.test_pages import succeed

pytestmark = pytest.mark.django_db

ERROR = "SyntaxError: Identifier 'browserStorage' has already been declared"
# Sample data: a browser check that failed on the remix's page, with one console error already there
# before the change (it must not be blamed on the change).
FAILED_CHECK = {
    "passed": False, "skipped": "", "headline": "The page shows problems in a browser", "duration": 2.1,
    "pages": [{"path": "/", "title": "Web Player", "text": "", "console_errors": ["favicon.ico: 404"],
               "exceptions": [ERROR], "failed_requests": [], "blank": True, "steps": []}],
    "before": [{"path": "/", "title": "Web Player", "text": "Tracks", "console_errors": ["favicon.ico: 404"],
                "exceptions": [], "failed_requests": [], "blank": False, "steps": []}],
}  # fmt: skip
PASSED_CHECK = {
    "passed": True, "skipped": "", "duration": 1.4,
    "pages": [{"path": "/", "title": "Web Player", "text": "Tracks Dark mode", "console_errors": [],
               "exceptions": [], "failed_requests": [], "blank": False,
               "steps": [{"step": 'on /: click "Dark mode", expect "Light mode"', "passed": True, "note": ""}]}],
    "before": [],
}  # fmt: skip
CHECKLIST = [
    {"item": "A 'Dark mode' button is in the top bar", "passed": True, "note": "Shown in the after picture."},
    {"item": "Clicking it turns the background dark", "passed": True, "note": "The step passed."},
    {"item": "The choice is kept after a reload", "passed": False, "note": "Nothing stores it."},
]
JUDGE = {"accepted": False, "rounds": 2, "score": 0.667, "verdict": "2 of 3 checklist items done.", "replayed": True}


@pytest.fixture
def target():
    return Target.objects.create(slug="web-player", name="Web Player", kind="web", git_url="/nowhere",
                                 recipe_checked_at=timezone.now(), default_attempts=1)  # fmt: skip


def png(color="navy", size=(8, 6)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def evidence(build, moment, size, page="/"):
    shot = Screenshot(revision=build.revision, build=build, moment=moment, size=size, page=page)
    shot.image.save(f"{moment}-{size}.png", ContentFile(png(), name="shot.png"), save=False)
    shot.thumbnail.save(f"{moment}-{size}.webp", ContentFile(png()), save=False)
    shot.save()
    return shot


def version_with_proof(owner, target, *, visibility="company", slug="dark-mode", attempts=1):
    """A version whose build succeeded with a browser check, a graded checklist and evidence pictures."""
    prototype = Prototype.objects.create(slug=slug, title="Dark mode", owner=owner, target=target,
                                         visibility=visibility, listing="listed")  # fmt: skip
    revision = Revision.objects.create(prototype=prototype, number=1, prompt="Add a dark mode toggle", author=owner,
                                       result_commit="a" * 40, summary="Added a theme toggle.", attempts=attempts)  # fmt: skip
    build = Build.objects.create(revision=revision, smoke=PASSED_CHECK, checklist=CHECKLIST, judge=JUDGE,
                                 result_commit="a" * 40, summary="Added a theme toggle.",
                                 verify={"passed": True, "headline": "Build and tests passed: 26 tests passed.",
                                         "counts": {"passed": 26, "failed": 0, "skipped": 0}, "tests": [], "steps": []})  # fmt: skip
    succeed(build, {"index.html": b"<h1>Dark</h1>"})
    revision.kept_build = build
    revision.save(update_fields=["kept_build"])
    shots = {(m, s): evidence(build, m, s) for m in ("before", "after") for s in ("desktop", "phone")}
    return prototype, revision, build, shots


# --- the build page -----------------------------------------------------------------------------------


def test_a_failed_browser_check_says_first_what_the_browser_saw(client, alice, target):
    prototype, revision, build, _ = version_with_proof(alice, target)
    failed = Build.objects.create(revision=revision, attempt=2, smoke=FAILED_CHECK)
    failed.move("preparing")
    failed.move("failed", error_code="smoke_failed", error_message="The page did not work when opened in a browser.")
    client.force_login(alice)
    page = client.get(f"/p/{prototype.slug}/builds/{failed.pk}/").content.decode()

    section = page[page.index('id="smoke"') :]
    assert "Checked in a browser" in section
    headline = re.search(r'id="smoke-headline">(.*?)</p>', section, re.S).group(1)
    assert "The browser saw a problem: the page / stopped with an error: SyntaxError: Identifier" in headline
    assert "browserStorage" in headline and "(and 1 more)" in headline  # the blank page is the other one
    assert "the page / was blank: nothing showed on it" in section
    # The same first line right under the build's error, and the console error that was there before the
    # change listed apart, not counted against it.
    assert re.search(r'id="smoke-failure">The browser saw a problem: the page / stopped with an error', page)
    before = section[section.index('id="smoke-before"') :]
    assert "Already there before the change" in before and "favicon.ico: 404" in before
    assert "favicon" not in section[: section.index('id="smoke-before"')]


@pytest.mark.skipif(
    not os.access("/usr/bin/chromium", os.X_OK) or shutil.which("bwrap") is None, reason="needs Chromium and bubblewrap"
)
def test_the_broken_remix_shows_on_its_build_page_what_the_real_browser_saw(client, alice, target, tmp_path):
    """The mistake of the broken remix (a module importing the same name twice), checked by the real
    sandboxed browser (agents.browser), stored as the pipeline stores it: the build page names the error."""
    from agents.browser import check_folder
    from agents.recipe import Check

    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text(
        '<!doctype html><title>Player</title><h1>Tracks</h1><script type="module" src="app.js"></script>'
    )
    (site / "storage.js").write_text("export const browserStorage = {};\n")
    (site / "app.js").write_text('import { browserStorage } from "./storage.js";\n' * 2)
    report, _ = check_folder(site, Check())
    assert not report.passed and not report.skipped

    prototype, revision, *_ = version_with_proof(alice, target)
    broken = Build.objects.create(revision=revision, attempt=2, smoke=report.as_event())
    broken.move("preparing")
    broken.move("failed", error_code="smoke_failed", error_message="The page did not work in a browser.")
    client.force_login(alice)
    page = client.get(f"/p/{prototype.slug}/builds/{broken.pk}/").content.decode()
    failure = re.search(r'id="smoke-failure">(.*?)</p>', page, re.S).group(1)
    assert failure.startswith("The browser saw a problem: the page / stopped with an error: ")
    assert "Identifier &#x27;browserStorage&#x27; has already been declared" in failure


def test_a_skipped_browser_check_says_why(client, alice, target):
    prototype, _, build, _ = version_with_proof(alice, target)
    build.smoke = {"passed": True, "skipped": "Chromium is not installed on this worker", "pages": [], "before": []}
    build.save(update_fields=["smoke"])
    client.force_login(alice)
    page = client.get(f"/p/{prototype.slug}/builds/{build.pk}/").content.decode()
    assert "Not checked in a browser: Chromium is not installed on this worker" in page


def test_while_a_build_runs_its_browser_check_and_checklist_arrive_as_events(client, alice, target):
    prototype, revision, _, _ = version_with_proof(alice, target)
    running = Build.objects.create(revision=revision, attempt=2)
    running.move("preparing")
    append_events(running.pk, [
        ("checklist", {"items": [c["item"] for c in CHECKLIST], "replayed": True, "fallback": False}),
        ("verify", {"passed": False, "headline": "The page shows problems", "steps": [], "tests": [],
                    "smoke": FAILED_CHECK}),
        ("judge", {"round": 1, "accepted": False, "items": CHECKLIST, "verdict": JUDGE["verdict"], "replayed": True}),
    ])  # fmt: skip
    events = list(BuildEvent.objects.filter(build=running).order_by("seq"))
    checklist, verify, judge = (progress.describe(e) for e in events if e.kind in ("checklist", "verify", "judge"))
    # What the websocket sends the page (build.js renders it like the templates do).
    assert checklist["kind"] == "checklist" and [i["passed"] for i in checklist["items"]] == [None, None, None]
    assert verify["smoke"]["status"] == "failed" and "browserStorage" in verify["smoke"]["headline"]
    assert judge["kind"] == "checklist" and "asked for changes (2 of 3 checks passed)" in judge["text"]

    # A page opened meanwhile shows the same from the events: the build has stored nothing yet.
    client.force_login(alice)
    page = client.get(f"/p/{prototype.slug}/builds/{running.pk}/").content.decode()
    assert 'id="smoke-headline">✗ The browser saw a problem' in page
    assert 'id="checklist-score">2 of 3 passed' in page


# --- the version page ---------------------------------------------------------------------------------


def test_the_version_page_shows_the_checklist_the_pictures_and_the_checks(client, alice, target):
    prototype, revision, build, shots = version_with_proof(alice, target)
    client.force_login(alice)
    response = client.get(f"/p/{prototype.slug}/v/1/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "Add a dark mode toggle" in page and "Added a theme toggle." in page

    checklist = page[page.index('id="checklist"') :]
    assert "2 of 3 passed" in checklist
    assert re.search(
        r"✓ A &#x27;Dark mode&#x27; button is in the top bar\s*<span class=\"small muted\">— Shown", checklist
    )
    assert re.search(
        r"✗ The choice is kept after a reload\s*<span class=\"small muted\">— Nothing stores it", checklist
    )
    assert "Sample review:</strong> 2 of 3 checklist items done." in checklist  # judge.replayed

    # Before beside after, desktop and phone, each served by the screenshot view under the prototype's address.
    for (moment, size), shot in shots.items():
        url = f"/p/{prototype.slug}/screenshots/{shot.pk}/"
        assert f'<img src="{url}" alt="{size.title()}, {moment} the change, /"' in page
        assert client.get(url).status_code == 200
    assert "Checked in a browser: 1 page opened without errors and 1 step worked." in page
    assert "on /: click &quot;Dark mode&quot;, expect &quot;Light mode&quot;" in page
    assert "Build and tests passed: 26 tests passed." in page
    assert f'href="/p/{prototype.slug}/v/1/changes/"' in page
    assert re.search(r'href="/preview/[^"]+"[^>]*>Open preview', page)


def test_the_build_page_shows_its_own_pictures_before_and_after(client, alice, target):
    prototype, revision, build, shots = version_with_proof(alice, target)
    other = Build.objects.create(revision=revision, attempt=2)  # a build without pictures shows none
    client.force_login(alice)

    page = client.get(f"/p/{prototype.slug}/builds/{build.pk}/").content.decode()

    assert 'id="pictures"' in page
    for (moment, size), shot in shots.items():
        assert (
            f'<img src="/p/{prototype.slug}/screenshots/{shot.pk}/" alt="{size.title()}, {moment} the change, /"'
            in page
        )
    assert 'id="pictures"' not in client.get(f"/p/{prototype.slug}/builds/{other.pk}/").content.decode()


def test_a_version_without_pictures_from_before_says_why(client, alice, target):
    prototype, _, build, shots = version_with_proof(alice, target)
    shots["before", "desktop"].delete()
    shots["before", "phone"].delete()
    client.force_login(alice)
    page = client.get(f"/p/{prototype.slug}/v/1/").content.decode()
    assert page.count("There is no picture from before the change: the version it started from could not") == 2


def test_a_version_the_judge_did_not_review_says_so(client, alice, target):
    prototype, _, build, _ = version_with_proof(alice, target)
    build.checklist, build.judge = [], {}
    build.save(update_fields=["checklist", "judge"])
    client.force_login(alice)
    page = client.get(f"/p/{prototype.slug}/v/1/").content.decode()
    assert "No reviewer checked this version against a checklist." in page and 'id="checklist"' not in page


def test_the_prototype_page_links_its_version_pages_and_keeps_evidence_out_of_its_gallery(client, alice, target):
    prototype, revision, build, shots = version_with_proof(alice, target)
    gallery = Screenshot(revision=revision, size="desktop")
    gallery.image.save("gallery.png", ContentFile(png(), name="gallery.png"), save=False)
    gallery.thumbnail.save("gallery.webp", ContentFile(png()), save=False)
    gallery.save()
    client.force_login(alice)
    page = client.get(f"/p/{prototype.slug}/").content.decode()
    assert f'href="/p/{prototype.slug}/v/1/"' in page
    assert f"/p/{prototype.slug}/screenshots/{gallery.pk}/thumbnail/" in page
    for shot in shots.values():
        assert f"/screenshots/{shot.pk}/" not in page  # evidence belongs on the version page
    home = client.get("/").content.decode()
    assert f"/screenshots/{gallery.pk}/thumbnail/" in home
    assert not any(f"/screenshots/{shot.pk}/" in home for shot in shots.values())


def test_evidence_is_seen_exactly_by_those_who_see_the_build(client, alice, bob, carol, target):
    private, _, build, shots = version_with_proof(alice, target, visibility="private", slug="private-dark")
    link_only, _, other, other_shots = version_with_proof(alice, target, visibility="link", slug="link-dark-x7k2p9")
    shot, other_shot = shots["after", "desktop"], other_shots["after", "desktop"]

    client.force_login(carol)  # sees neither: private to alice, and carol was never given the link
    for url in [f"/p/{private.slug}/v/1/", f"/screenshots/{shot.pk}/", f"/p/{private.slug}/screenshots/{shot.pk}/",
                f"/screenshots/{other_shot.pk}/", f"/builds/{other.pk}/"]:  # fmt: skip
        assert client.get(url).status_code == 404, url

    client.force_login(bob)  # has the link of the link-only one: its address opens the build and its evidence
    assert client.get(f"/p/{link_only.slug}/v/1/").status_code == 200
    assert client.get(f"/p/{link_only.slug}/builds/{other.pk}/").status_code == 200
    assert client.get(f"/p/{link_only.slug}/screenshots/{other_shot.pk}/").status_code == 200
    # By id alone, neither the build nor its evidence: an id never reveals a link-only prototype.
    assert client.get(f"/builds/{other.pk}/").status_code == 404
    assert client.get(f"/screenshots/{other_shot.pk}/").status_code == 404
    # Nor does one prototype's link open another's pictures.
    assert client.get(f"/p/{link_only.slug}/screenshots/{shot.pk}/").status_code == 404

    client.force_login(alice)
    assert client.get(f"/p/{private.slug}/v/1/").status_code == 200
    assert client.get(f"/screenshots/{shot.pk}/").status_code == 200

    # A picture filed under a version bob sees but taken of a build he may not see stays hidden from him.
    public, public_revision, *_ = version_with_proof(alice, target, slug="public-dark")
    stray = evidence(build, "after", "desktop", page="/other")
    Screenshot.objects.filter(pk=stray.pk).update(revision=public_revision)
    client.force_login(bob)
    assert client.get(f"/p/{public.slug}/v/1/").status_code == 200
    assert client.get(f"/screenshots/{stray.pk}/").status_code == 404
    assert client.get(f"/p/{public.slug}/screenshots/{stray.pk}/").status_code == 404


# --- attempts side by side ----------------------------------------------------------------------------


def two_attempts(owner, target):
    """Sample data: a version built twice; attempt 1 kept, attempt 2 succeeded too, attempt 3 failed."""
    prototype, revision, first, _ = version_with_proof(owner, target, attempts=3)
    second = Build.objects.create(revision=revision, attempt=2, result_commit="b" * 40, summary="A switch.",
                                  checklist=[dict(c, passed=True) for c in CHECKLIST], cost=Decimal("0.42"),
                                  turns=7, judge=dict(JUDGE, accepted=True, score=1.0))  # fmt: skip
    succeed(second, {"index.html": b"<h1>Second</h1>"})
    evidence(second, "after", "desktop")
    third = Build.objects.create(revision=revision, attempt=3)
    third.move("preparing")
    third.move("failed", error_code="tests_failed", error_message="The app's tests failed.")
    revision.kept_build = first
    revision.save(update_fields=["kept_build"])
    return prototype, revision, first, second, third


def test_attempts_are_shown_side_by_side_with_the_kept_one_marked(client, alice, target):
    prototype, revision, first, second, third = two_attempts(alice, target)
    client.force_login(alice)
    page = client.get(f"/p/{prototype.slug}/v/1/").content.decode()
    section = page[page.index('id="attempts"') :]
    columns = re.findall(r'<article class="card attempt( kept)?" id="attempt-(\d)">(.*?)</article>', section, re.S)
    assert [(kept, number) for kept, number, _ in columns] == [("", "2"), (" kept", "1"), ("", "3")]  # ranked
    by_number = {number: html for _, number, html in columns}
    assert "#1 · Attempt 2" in by_number["2"] and "3 of 3 passed" in by_number["2"] and "7 turns" in by_number["2"]
    assert "$0.42" in by_number["2"] and 'href="/preview/' in by_number["2"] and "<img" in by_number["2"]
    assert "kept</span>" in by_number["1"] and "2 of 3 passed" in by_number["1"] and "26 passed" in by_number["1"]
    assert "The app&#x27;s tests failed." in by_number["3"] and "Keep this one" not in by_number["3"]
    # The owner may keep the other succeeded attempt; never the kept one again, nor the failed one.
    assert "Keep this one" in by_number["2"] and "Keep this one" not in by_number["1"]
    # The prototype page says there were attempts, and links the page that compares them.
    assert "Version page (3 attempts)" in client.get(f"/p/{prototype.slug}/").content.decode()


def previewed(client, url) -> set[int]:
    """The builds whose web previews a page offers (each preview link carries a token naming its file)."""
    from store.previews import artifact_for_token

    tokens = re.findall(r'href="/preview/([^/"]+)/"', client.get(url).content.decode())
    return {artifact_for_token(token).build_id for token in tokens}


def test_the_owner_keeps_another_attempt(client, alice, target, django_capture_on_commit_callbacks):
    prototype, revision, first, second, _ = two_attempts(alice, target)
    client.force_login(alice)
    # The version is the kept attempt, not the newest one: its preview on the prototype's page.
    assert previewed(client, f"/p/{prototype.slug}/") == {first.pk}
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"/p/{prototype.slug}/v/1/attempts/2/keep/")
    assert response.status_code == 302 and response["Location"] == f"/p/{prototype.slug}/v/1/"
    revision.refresh_from_db()
    assert revision.kept_build == second and revision.result_commit == "b" * 40 and revision.summary == "A switch."
    assert [str(m) for m in get_messages(response.wsgi_request)] == ["Attempt 2 is now version 1."]
    page = client.get(f"/p/{prototype.slug}/v/1/").content.decode()
    assert '<article class="card attempt kept" id="attempt-2">' in page
    assert previewed(client, f"/p/{prototype.slug}/") == {second.pk}


def test_keeping_is_refused_to_everyone_but_the_owner_and_for_a_failed_attempt(client, alice, bob, carol, target):
    prototype, revision, first, second, third = two_attempts(alice, target)
    url = f"/p/{prototype.slug}/v/1/attempts/2/keep/"
    client.force_login(bob)  # sees the company prototype, is not its owner
    page = client.get(f"/p/{prototype.slug}/v/1/").content.decode()
    assert "Keep this one" not in page
    response = client.post(url, follow=True)
    assert "Only the prototype&#x27;s owner can choose which attempt is kept." in response.content.decode()
    assert client.get(url).status_code == 405  # a link never keeps anything: POST with its CSRF token only

    private = Prototype.objects.create(slug="private-one", title="Mine", owner=alice, target=target,
                                       visibility="private", listing="listed")  # fmt: skip
    hidden = Revision.objects.create(prototype=private, number=1, prompt="x", author=alice, attempts=2)
    Build.objects.create(revision=hidden, attempt=1)
    client.force_login(carol)
    assert client.post(f"/p/{private.slug}/v/1/attempts/1/keep/").status_code == 404

    client.force_login(alice)
    response = client.post(f"/p/{prototype.slug}/v/1/attempts/3/keep/", follow=True)
    assert "Only an attempt that was built successfully can be kept." in response.content.decode()
    revision.refresh_from_db()
    assert revision.kept_build == first


def test_the_keep_form_carries_a_csrf_token(alice, target):
    from django.test import Client

    prototype, *_ = two_attempts(alice, target)
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(alice)
    assert strict.post(f"/p/{prototype.slug}/v/1/attempts/2/keep/").status_code == 403
    page = strict.get(f"/p/{prototype.slug}/v/1/").content.decode()
    form = page[page.index('action="/p/dark-mode/v/1/attempts/2/keep/"') :]
    assert 'name="csrfmiddlewaretoken"' in form[: form.index("</form>")]


# --- the forms ----------------------------------------------------------------------------------------


@override_settings(MAX_ATTEMPTS=4)
def test_the_forms_offer_attempts_starting_at_the_apps_default(client, alice, target):
    target.default_attempts = 3
    target.save(update_fields=["default_attempts"])
    client.force_login(alice)
    page = client.get("/new/").content.decode()
    field = re.search(r'<input type="number" name="attempts"[^>]*>', page).group(0)
    assert 'value="3"' in field and 'min="1"' in field and 'max="4"' in field
    assert 'data-attempts="3"' in page  # store.js follows the app chosen
    prototype, revision, *_ = version_with_proof(alice, target)
    for url in [f"/p/{prototype.slug}/", f"/p/{prototype.slug}/v/1/remix/"]:
        field = re.search(r'<input type="number" name="attempts"[^>]*>', client.get(url).content.decode()).group(0)
        assert 'value="3"' in field, url


@override_settings(MAX_ATTEMPTS=4)
def test_a_maker_asks_for_several_attempts(client, alice, target, django_capture_on_commit_callbacks):
    client.force_login(alice)
    response = client.post("/new/", {"target": target.pk, "idea": "Add a dark mode toggle", "title": "",
                                     "visibility": "company", "attempts": "3"})  # fmt: skip
    assert response.status_code == 302
    revision = Revision.objects.get()
    assert revision.attempts == 3
    assert sorted(revision.builds.values_list("attempt", flat=True)) == [1, 2, 3]


@override_settings(MAX_ATTEMPTS=4)
def test_too_many_attempts_are_refused_and_what_was_typed_is_kept(client, alice, target):
    client.force_login(alice)
    response = client.post("/new/", {"target": target.pk, "idea": "Add a sleep timer", "title": "Timer",
                                     "visibility": "company", "attempts": "9"})  # fmt: skip
    page = response.content.decode()
    assert response.status_code == 200 and not Build.objects.exists()
    assert "Ensure this value is less than or equal to 4." in page
    assert "Add a sleep timer</textarea>" in page and 'value="Timer"' in page


@override_settings(MAX_ATTEMPTS=4, BUDGET_DAILY_BUILDS=2)
def test_a_budget_that_cannot_cover_all_attempts_refuses_them_and_keeps_the_text(client, alice, target):
    prototype, *_ = version_with_proof(alice, target)  # one build today already
    client.force_login(alice)
    response = client.post(f"/p/{prototype.slug}/change/", {"idea": "Make the toggle round", "attempts": "2"})
    page = response.content.decode()
    assert response.status_code == 200 and Build.objects.count() == 1
    error = re.search(r'<div class="error" role="alert">(.*?)</div>', page, re.S).group(1)
    assert "daily limit of 2" in error and "1 attempt fits, not 2" in error
    assert "Make the toggle round</textarea>" in page

    response = client.post(f"/p/{prototype.slug}/v/1/remix/", {"idea": "A louder remix", "attempts": "3"})
    page = response.content.decode()
    assert response.status_code == 200 and Build.objects.count() == 1
    assert "1 attempt fits, not 3" in page and "A louder remix</textarea>" in page


def test_the_new_form_starts_at_the_default_of_the_app_in_its_address(alice, target):
    other = Target.objects.create(slug="api", name="API", kind="backend", git_url="/x", default_attempts=2,
                                  recipe_checked_at=timezone.now())  # fmt: skip
    assert NewPrototypeForm(initial={"target": other.slug}).fields["attempts"].initial == 2
    assert NewPrototypeForm(initial={"target": target.slug}).fields["attempts"].initial == 1


@override_settings(MAX_ATTEMPTS=4)
def test_the_admin_sets_an_apps_default_attempts_within_the_maximum(target):
    from prototypes.admin import TargetForm

    data = {"git_url": "/nowhere", "default_branch": "main", "name": "Web Player", "slug": "web-player",
            "kind": "web", "enabled": "on", "concurrency_limit": 2, "egress_hosts": "[]",
            "github_api_url": "https://api.github.com"}  # fmt: skip
    assert not TargetForm({**data, "default_attempts": 5}, instance=target).is_valid()
    form = TargetForm({**data, "default_attempts": 3}, instance=target)
    assert form.is_valid(), form.errors
    assert form.save().default_attempts == 3


# --- the pull request ---------------------------------------------------------------------------------


@override_settings(SITE_URL="https://store.example.com")
def test_the_pull_request_says_what_was_checked_with_links_to_the_pictures(alice, target):
    prototype, revision, build, shots = version_with_proof(alice, target)
    body = pull_request_body(revision)
    assert "### Checked before publishing" in body
    assert "Checklist written from the request (2 of 3 passed, a sample review written by hand" in body
    assert "- ✓ A 'Dark mode' button is in the top bar — Shown in the after picture." in body
    assert "- ✗ The choice is kept after a reload — Nothing stores it." in body
    assert "Browser check: Checked in a browser: 1 page opened without errors and 1 step worked." in body
    base = f"https://store.example.com/p/{prototype.slug}/screenshots"
    desktop = (f"| `/` | Desktop | [before]({base}/{shots['before', 'desktop'].pk}/) | "
               f"[after]({base}/{shots['after', 'desktop'].pk}/) |")  # fmt: skip
    assert desktop in body
    assert f"| `/` | Phone | [before]({base}/{shots['before', 'phone'].pk}/) |" in body
