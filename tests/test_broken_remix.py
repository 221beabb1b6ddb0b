"""The broken remix, reproduced end to end: the dark-mode sample replayed on top of a version that already
has dark mode (what the store did before samples were checked against their base) imports the same names
twice into src/app.js. The app's own unit tests still pass; the browser check inside the sandbox sees the
page throw on load, so the remix is not published, and its build page says what the browser saw."""

import dataclasses

import pytest

from prototypes import builds, pipeline
from prototypes.models import Build, Prototype
from prototypes.targets import import_example

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("eager_celery")]

DARK = "Add a dark mode toggle"
ERROR = "Identifier 'browserStorage' has already been declared"


def test_the_sample_replayed_on_its_own_result_is_stopped_by_the_browser_check(
    client, alice, bob, monkeypatch, settings, django_capture_on_commit_callbacks
):
    settings.BROWSER_CHECK = True
    web_player = import_example(settings.EXAMPLES_DIR / "targets" / "web-player", settings.TARGET_REPO_ROOT)
    with django_capture_on_commit_callbacks(execute=True):
        first = builds.create_prototype(owner=alice, target=web_player, idea=DARK)
    first.refresh_from_db()
    assert first.state == Build.State.SUCCEEDED, (first.error_code, first.error_detail)

    # The old behaviour: no check that the sample fits the version it is replayed on.
    monkeypatch.setattr(builds, "sample_refusal", lambda *args: None)
    configured = pipeline.provider_config
    monkeypatch.setattr(pipeline, "provider_config", lambda t: dataclasses.replace(configured(t), check_fit=False))
    with django_capture_on_commit_callbacks(execute=True):
        remix = builds.remix(first.revision, by=bob, idea=DARK, title="Dark player, again")
    remix.refresh_from_db()

    assert remix.state == Build.State.FAILED
    assert remix.error_code == "smoke_failed"
    assert ERROR in remix.error_detail
    tests = remix.events.filter(kind="verify").last().data
    assert tests["smoke"]["passed"] is False
    assert [step["step"] for step in tests["steps"]][:2] == ["build", "test"]  # build and unit tests passed
    assert all(step["exit_code"] == 0 for step in tests["steps"] if step["step"] in ("build", "test"))
    prototype = remix.revision.prototype
    prototype.refresh_from_db()
    assert prototype.current_revision is None and prototype.listing == Prototype.Listing.DRAFT  # not published

    client.force_login(bob)
    page = client.get(remix.get_absolute_url()).content.decode()
    assert "Identifier &#x27;browserStorage&#x27; has already been declared" in page
