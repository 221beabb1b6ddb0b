"""Preview URLs follow the visibility rule at every request. A preview is served to an opaque origin
that sends no cookies, so its URL names on whose behalf it was issued (a person, or a share link);
each request, for every file of the preview, checks that principal's access again. Taking access away
— private, a collaborator removed, a link revoked or expired, a takedown — stops every URL issued
before at once."""

import re
from datetime import timedelta

import pytest
from django.core import signing
from django.utils import timezone

from prototypes.models import Build, Prototype, Revision, Target
from store import moderation
from store.models import ShareLink
from store.previews import MAX_AGE, SALT
from tests.test_pages import succeed

pytestmark = pytest.mark.django_db


@pytest.fixture
def prototype(alice):
    target = Target.objects.create(slug="web-player", name="Web Player", kind="web", git_url="/nowhere")
    prototype = Prototype.objects.create(slug="sleep-timer", title="Sleep timer", owner=alice, target=target,
                                         visibility="company", listing="listed")  # fmt: skip
    revision = Revision.objects.create(prototype=prototype, number=1, prompt="Add a sleep timer", author=alice)
    succeed(Build.objects.create(revision=revision), {"index.html": b"<h1>Timer</h1>", "app.js": b"tick()"})
    prototype.refresh_from_db()
    return prototype


def preview_from(client, page_url: str) -> str:
    """The preview URL a page hands out (the iframe's)."""
    page = client.get(page_url)
    assert page.status_code == 200, page_url
    return re.search(r'src="(/preview/[^"]+/)"', page.content.decode()).group(1)


def opens(client, url: str) -> dict[str, int]:
    """What the preview's page and one of its assets answer to a visitor without cookies."""
    client.logout()
    return {"page": client.get(url).status_code, "asset": client.get(url + "app.js").status_code}


OPEN = {"page": 200, "asset": 200}
SHUT = {"page": 404, "asset": 404}


def test_a_preview_url_stops_when_the_owner_makes_the_prototype_private(client, bob, prototype):
    client.force_login(bob)
    url = preview_from(client, f"/p/{prototype.slug}/")
    assert opens(client, url) == OPEN
    Prototype.objects.filter(pk=prototype.pk).update(visibility="private")
    assert opens(client, url) == SHUT
    Prototype.objects.filter(pk=prototype.pk).update(visibility="company")
    assert opens(client, url) == OPEN  # it names bob, who may see it again


def test_a_preview_url_stops_when_a_collaborator_is_removed(client, alice, carol, prototype):
    Prototype.objects.filter(pk=prototype.pk).update(visibility="private")
    prototype.collaborators.add(carol)
    client.force_login(carol)
    url = preview_from(client, f"/p/{prototype.slug}/")
    assert opens(client, url) == OPEN
    prototype.collaborators.remove(carol)
    assert opens(client, url) == SHUT
    client.force_login(alice)
    assert opens(client, preview_from(client, f"/p/{prototype.slug}/")) == OPEN  # the owner's still opens


def test_a_preview_url_from_a_share_link_stops_when_the_link_is_revoked_or_expires(client, alice, prototype):
    Prototype.objects.filter(pk=prototype.pk).update(visibility="private")
    for stop in ("revoked", "expired"):
        link, token = ShareLink.create(prototype=prototype, created_by=alice)
        url = preview_from(client, f"/s/{token}/")
        assert opens(client, url) == OPEN, stop
        if stop == "revoked":
            ShareLink.objects.filter(pk=link.pk).update(revoked=True)
        else:
            ShareLink.objects.filter(pk=link.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
        assert opens(client, url) == SHUT, stop


def test_a_takedown_stops_preview_urls_issued_to_others_and_through_links(client, alice, bob, mo, prototype):
    client.force_login(bob)
    bobs = preview_from(client, f"/p/{prototype.slug}/")
    _link, token = ShareLink.create(prototype=prototype, created_by=alice)
    shared = preview_from(client, f"/s/{token}/")
    client.force_login(alice)
    alices = preview_from(client, f"/p/{prototype.slug}/")
    moderation.hide(prototype, by=mo, reason="Shows customer data")
    assert opens(client, bobs) == SHUT
    assert opens(client, shared) == SHUT
    assert opens(client, alices) == OPEN  # the owner still sees her hidden work, as on its page


def test_a_preview_url_names_the_link_it_was_opened_through(client, bob, prototype):
    """Opened by its link, a link-only prototype's preview works for bob; once the owner gives it a new
    address (making it link-only again), the URL issued through the old one stops."""
    Prototype.objects.filter(pk=prototype.pk).update(visibility="link")
    client.force_login(bob)
    url = preview_from(client, f"/p/{prototype.slug}/")
    assert opens(client, url) == OPEN
    Prototype.objects.filter(pk=prototype.pk).update(slug="sleep-timer-n3wadd7e55n0tgu3")
    assert opens(client, url) == SHUT


def test_a_token_that_names_no_one_opens_nothing(client, prototype):
    """A token for the artifact alone (as issued before principals were named) is no capability."""
    artifact = prototype.current_revision.builds.get().artifacts.get()
    bare = signing.dumps(artifact.pk, salt=SALT, compress=True)
    assert opens(client, f"/preview/{bare}/") == SHUT
    forged = signing.dumps({"a": artifact.pk, "u": 999999, "p": ""}, salt=SALT, compress=True)
    assert opens(client, f"/preview/{forged}/") == SHUT
    assert MAX_AGE <= 12 * 3600  # a backstop only: the check above is what stops access
