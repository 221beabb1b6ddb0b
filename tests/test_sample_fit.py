"""The offline demo stays honest: a sample idea is offered, and replayed, only on the code it was written
for. A follow-up or a remix of a version that already has dark mode is not offered dark mode again; asking
for it anyway is refused in the form with the reason, keeping what was typed; and a build that gets there
all the same fails at once with "sample_does_not_fit", not charged, before any model call."""

import pytest
from django.conf import settings
from django.urls import reverse

from prototypes import builds
from prototypes.models import Build, ModelCall, Revision
from prototypes.targets import import_example

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("eager_celery")]

DARK = "Add a dark mode toggle"
TOTAL = "Show the total playlist duration"
REASON = "it creates src/theme.js, which this version already has"


@pytest.fixture
def web_player():
    return import_example(settings.EXAMPLES_DIR / "targets" / "web-player", settings.TARGET_REPO_ROOT)


@pytest.fixture
def dark_version(alice, web_player, django_capture_on_commit_callbacks):
    """Alice's prototype whose current version was built from the dark-mode sample (a real build)."""
    with django_capture_on_commit_callbacks(execute=True):
        build = builds.create_prototype(owner=alice, target=web_player, idea=DARK)
    build.refresh_from_db()
    assert build.state == Build.State.SUCCEEDED, (build.error_code, build.error_detail)
    return build.revision


def chips(html: str) -> list[str]:
    return [part.split('"', 1)[0] for part in html.split('data-suggest-idea="')[1:]]


def test_the_new_prototype_page_offers_every_sample_of_the_app(client, alice, web_player):
    client.force_login(alice)

    page = client.get(reverse("new")).content.decode()

    assert DARK in chips(page) and TOTAL in chips(page)


def test_the_follow_up_form_of_a_dark_mode_version_offers_only_what_fits_it(client, alice, dark_version):
    client.force_login(alice)

    page = client.get(dark_version.prototype.get_absolute_url()).content.decode()

    assert chips(page) == [TOTAL]
    assert 'data-suggest-form="ask-for-change"' in page


def test_asking_for_dark_mode_again_is_refused_with_the_reason_and_the_words_are_kept(
    client, alice, dark_version, django_capture_on_commit_callbacks
):
    client.force_login(alice)
    prototype = dark_version.prototype
    typed = "add a dark mode toggle!"  # the sample's idea, as a person might type it

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("ask_for_change", args=[prototype.slug]), {"idea": typed})

    assert response.status_code == 200
    page = response.content.decode()
    assert "cannot be replayed here" in page and REASON in page
    assert f"{typed}</textarea>" in page  # the words typed are kept
    assert list(Revision.objects.filter(prototype=prototype).values_list("number", flat=True)) == [1]
    with pytest.raises(builds.NotAllowed, match="src/theme.js"):  # the API goes through the same function
        builds.ask_for_change(prototype, by=alice, idea=DARK)


def test_a_remix_of_a_dark_mode_version_is_offered_and_refused_the_same_way(client, bob, dark_version):
    client.force_login(bob)
    url = reverse("remix", args=[dark_version.prototype.slug, dark_version.number])

    assert chips(client.get(url).content.decode()) == [TOTAL]
    response = client.post(url, {"idea": DARK, "title": "Mine"})

    page = response.content.decode()
    assert response.status_code == 200 and REASON in page
    assert f"{DARK}</textarea>" in page and 'value="Mine"' in page
    assert not Revision.objects.filter(prototype__forked_from=dark_version).exists()


def test_a_build_of_a_sample_that_does_not_fit_fails_at_once_and_is_not_charged(
    alice, dark_version, django_capture_on_commit_callbacks
):
    # Past the form (a sample idea sent straight to the build): the engine checks again before anything runs.
    with django_capture_on_commit_callbacks(execute=True):
        revision = Revision.objects.create(prototype=dark_version.prototype, number=2, parent=dark_version,
                                           prompt=DARK, author=alice)  # fmt: skip
        build = builds.trigger_build(revision)
    build.refresh_from_db()

    assert build.state == Build.State.FAILED
    assert build.error_code == "sample_does_not_fit"
    assert REASON in build.error_message and "Web Player" in build.error_message
    assert build.charged is False
    assert ModelCall.objects.filter(build=build).count() == 0
    assert build.turns == 0
    assert not build.events.filter(kind="status", data__to="running").exists()
