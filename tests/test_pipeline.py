"""Real builds of the example targets: Celery task, replayed conversation through the real SDK, real git,
real bubblewrap sandbox, the target's own build and tests, a stored artifact."""

import io
import zipfile
from decimal import Decimal

import pytest
from django.conf import settings

from agents import workspace as git
from prototypes.builds import create_prototype
from prototypes.models import Artifact, Build, ModelCall, Prototype
from prototypes.pipeline import preview_dir
from prototypes.targets import import_example

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("eager_celery")]


def target(name):
    return import_example(settings.EXAMPLES_DIR / "targets" / name, settings.TARGET_REPO_ROOT)


def build_idea(owner, target_name, idea, capture):
    with capture(execute=True):
        build = create_prototype(owner=owner, target=target(target_name), idea=idea)
    build.refresh_from_db()
    return build


def states(build):
    return [e.data["to"] for e in build.events.filter(kind="status").order_by("seq")]


def test_a_web_idea_becomes_a_previewable_bundle_with_the_change(alice, django_capture_on_commit_callbacks):
    build = build_idea(alice, "web-player", "Add a dark mode toggle", django_capture_on_commit_callbacks)

    assert build.state == Build.State.SUCCEEDED, (build.error_code, build.error_detail)
    assert states(build) == ["queued", "preparing", "running", "verifying", "packaging", "succeeded"]
    assert build.task_id  # enqueued through Celery
    # The target's own tests ran, and they are named on the build.
    assert build.verify["passed"] is True
    assert build.verify["counts"]["passed"] >= 20
    assert any("theme" in t["name"].lower() for t in build.verify["tests"])
    # The artifact really holds the recorded change.
    artifact = build.artifacts.exclude(kind=Artifact.Kind.PATCH).get()
    assert artifact.kind == Artifact.Kind.WEB
    with zipfile.ZipFile(artifact.file.path) as bundle:
        page = bundle.read("index.html").decode()
        names = bundle.namelist()
    assert "Dark mode" in page
    assert "theme.js" in names
    assert (preview_dir(artifact) / "index.html").read_text() == page
    # The result is committed in the mirror under the prototype's ref, and the revision describes it.
    revision = build.revision
    mirror = settings.MIRROR_ROOT / "web-player.git"
    assert git.resolve(mirror, revision.result_ref) == revision.result_commit
    assert "src/theme.js" in [f["path"] for f in revision.diffstat["files"]]
    assert "dark" in revision.summary.lower()
    patch = build.artifacts.get(kind=Artifact.Kind.PATCH)
    assert "+++ b/src/theme.js" in open(patch.file.path).read()
    # Every model request is accounted for: the agent's 11 and the judge's sample review (AGENT_JUDGE is on by
    # default), its checklist and its one grade.
    calls = ModelCall.objects.filter(build=build)
    assert calls.count() == build.turns == 13
    assert list(calls.order_by("turn").values_list("purpose", flat=True)) == ["judge"] + ["agent"] * 11 + ["judge"]
    # A replayed sample conversation spent nothing: the sample's token counts are kept, priced at $0.
    assert build.replayed
    assert build.cache_read_tokens > 0 and build.cost == 0
    assert {(c.cost, c.price_version) for c in calls} == {(Decimal(0), "sample")}
    prototype = revision.prototype
    prototype.refresh_from_db()
    assert prototype.current_revision == revision
    assert prototype.listing == Prototype.Listing.LISTED


def test_a_backend_idea_becomes_a_runnable_pyz_with_the_change(alice, django_capture_on_commit_callbacks, tmp_path):
    build = build_idea(alice, "podcast-api", "Show the episode count per show", django_capture_on_commit_callbacks)

    assert build.state == Build.State.SUCCEEDED, (build.error_code, build.error_detail)
    assert build.verify["counts"]["passed"] >= 20
    assert any("episode_count" in t["name"] or "count" in t["name"].lower() for t in build.verify["tests"])
    artifact = build.artifacts.exclude(kind=Artifact.Kind.PATCH).get()
    assert artifact.kind == Artifact.Kind.PYZ
    assert artifact.filename == "podcast-api.pyz"
    with zipfile.ZipFile(io.BytesIO(open(artifact.file.path, "rb").read())) as app:
        catalog = app.read("podcast_api/catalog.py").decode()
    assert "episode_count" in catalog


def test_an_idea_without_a_recording_fails_with_how_to_configure_a_model(alice, django_capture_on_commit_callbacks):
    build = build_idea(alice, "web-player", "Turn the player into a spaceship", django_capture_on_commit_callbacks)

    assert build.state == Build.State.FAILED
    assert build.error_code == "no_recording"
    assert "ANTHROPIC_API_KEY" in build.error_message
    assert build.charged is True
    assert ModelCall.objects.filter(build=build).count() == 0


def test_a_web_build_leaves_screenshots_for_the_store(alice, django_capture_on_commit_callbacks, settings):
    settings.SCREENSHOTS = True
    build = build_idea(alice, "web-player", "Show the total playlist duration", django_capture_on_commit_callbacks)
    assert build.state == Build.State.SUCCEEDED
    shots = {s.size: s for s in build.revision.screenshots.all()}
    assert set(shots) == {"desktop", "phone"}
    assert (shots["desktop"].width, shots["desktop"].height) == (1280, 800)
    assert build.events.filter(kind="log", data__text="Screenshots taken for the store.").exists()
