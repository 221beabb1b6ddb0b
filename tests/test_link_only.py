"""Link-only means link-only: ids are sequential, so an id-addressed page, API resource, download,
install page, picture, event feed or comment never reveals a link-only prototype to someone who was
not given its link — and people who opened it by its link reach everything its page links to."""

import io
import re

import pytest
from asgiref.sync import async_to_sync
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.core.files.base import ContentFile
from django.utils import timezone
from django.utils.text import slugify
from PIL import Image
from rest_framework.authtoken.models import Token

from prototypes import builds
from prototypes.models import Artifact, Attachment, Build, Prototype, Revision, Screenshot, Target, append_events
from prototypes.routing import websocket_urlpatterns
from store.models import Comment
from store.sharing import create_link
from tests.test_pages import succeed

pytestmark = pytest.mark.django_db
TITLE = "Secret sleep timer"


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), "navy").save(buffer, format="PNG")
    return buffer.getvalue()


def make_link_only(owner, *, slug="secret-sleep-timer-k3x9q2m7w4z8r5t1"):
    """A listed link-only prototype with everything a prototype has: a web preview and an installable
    package, a picture, an attached image, a comment, a build with events."""
    target = Target.objects.get_or_create(
        slug="web-player", defaults={"name": "Web Player", "git_url": "/x", "recipe_checked_at": timezone.now()}
    )[0]
    prototype = Prototype.objects.create(slug=slug, title=TITLE, owner=owner, target=target, visibility="link",
                                         listing="listed")  # fmt: skip
    revision = Revision.objects.create(prototype=prototype, number=1, prompt="Add a sleep timer", author=owner,
                                       result_commit="a" * 40)  # fmt: skip
    build = Build.objects.create(revision=revision)
    web = succeed(build, {"index.html": b"<h1>Sleep timer</h1>", "app.js": b"console.log(1)"})
    package = Artifact(build=build, kind="pyz", filename="timer.pyz", size=3, sha256="0" * 64,
                       content_type="application/octet-stream")  # fmt: skip
    package.file.save("timer.pyz", ContentFile(b"pyz"), save=True)
    shot = Screenshot(revision=revision, size="desktop")
    shot.image.save("desktop.png", ContentFile(png(), name="desktop.png"), save=False)
    shot.thumbnail.save("desktop.webp", ContentFile(png()), save=False)
    shot.save()
    image = Attachment(revision=revision, media_type="image/png", size=10)
    image.image.save("mockup.png", ContentFile(png(), name="mockup.png"), save=True)
    comment = Comment.objects.create(prototype=prototype, revision=revision, author=owner, body="First!")
    append_events(build.pk, [("step", {"text": "Reading the code"})])
    return {"prototype": prototype, "revision": revision, "build": build, "web": web, "package": package,
            "shot": shot, "image": image, "comment": comment}  # fmt: skip


@pytest.fixture
def secret(alice):
    return make_link_only(alice)


def api_client(client, user):
    token, _ = Token.objects.get_or_create(user=user)
    client.defaults["HTTP_AUTHORIZATION"] = f"Token {token.key}"
    return client


def by_id_urls(thing) -> dict[str, str]:
    """Every address of the prototype's things that names only ids."""
    build, web, package, shot = thing["build"], thing["web"], thing["package"], thing["shot"]
    return {
        "build page": f"/builds/{build.pk}/",
        "build log": f"/builds/{build.pk}/log/",
        "download": f"/artifacts/{web.pk}/download/",
        "install page": f"/artifacts/{package.pk}/install/",
        "install QR": f"/artifacts/{package.pk}/qr.png",
        "install file": f"/artifacts/{package.pk}/file/{package.filename}",
        "screenshot": f"/screenshots/{shot.pk}/",
        "thumbnail": f"/screenshots/{shot.pk}/thumbnail/",
        "attachment": f"/attachments/{thing['image'].pk}/",
        "api build": f"/api/builds/{build.pk}/",
        "api events": f"/api/builds/{build.pk}/events/",
        "api revision": f"/api/revisions/{thing['revision'].pk}/",
        "api artifact": f"/api/artifacts/{web.pk}/",
        "api download": f"/api/artifacts/{web.pk}/download/",
        "api comment": f"/api/comments/{thing['comment'].pk}/",
    }


def body(response) -> str:
    content = b"".join(response.streaming_content) if response.streaming else response.content
    return content.decode(errors="replace")


def test_walking_ids_never_reveals_a_link_only_prototype(client, bob, secret):
    """Bob was never given the link: every id-addressed address answers 404 and names nothing."""
    client.force_login(bob)
    api_client(client, bob)
    slug = secret["prototype"].slug
    leaks = {}
    for name, url in by_id_urls(secret).items():
        response = client.get(url)
        text = body(response)
        if response.status_code != 404 or slug in text or TITLE in text:
            leaks[name] = (response.status_code, url)
    assert leaks == {}, f"reachable without the link: {leaks}"
    # Nor can he act on its things by id.
    assert client.post(f"/comments/{secret['comment'].pk}/flag/", {"reason": "spam"}).status_code == 404
    refused = client.post("/api/comments/", {"prototype": "company-x", "parent": secret["comment"].pk, "body": "hi"},
                          content_type="application/json")  # fmt: skip
    assert refused.status_code == 400


def test_an_id_with_another_prototypes_slug_reaches_nothing(client, alice, bob, secret):
    """The slug given must be the thing's own prototype's: a link to one prototype opens no other."""
    other = make_link_only(alice, slug="another-link-only-prototype-q8w7e6r5")
    client.force_login(bob)
    api_client(client, bob)
    build = secret["build"]
    wrong = other["prototype"].slug
    assert client.get(f"/p/{wrong}/builds/{build.pk}/").status_code == 404
    assert client.get(f"/p/{wrong}/artifacts/{secret['web'].pk}/download/").status_code == 404
    assert client.get(f"/p/{wrong}/artifacts/{secret['package'].pk}/install/").status_code == 404
    assert client.get(f"/api/builds/{build.pk}/", {"prototype": wrong}).status_code == 404


def test_people_with_the_link_reach_everything_its_page_links_to(client, bob, secret):
    client.force_login(bob)
    slug = secret["prototype"].slug
    page = client.get(f"/p/{slug}/")
    assert page.status_code == 200
    html = page.content.decode()
    links = set(re.findall(r'(?:href|src)="(/(?:p|preview)/[^"#]+)"', html))
    links = {link.replace("&amp;", "&") for link in links if not link.endswith(("/edit/", "/remix/"))}
    expected = {
        f"/p/{slug}/builds/{secret['build'].pk}/",
        f"/p/{slug}/artifacts/{secret['package'].pk}/download/",
        f"/p/{slug}/screenshots/{secret['shot'].pk}/",
        f"/p/{slug}/screenshots/{secret['shot'].pk}/thumbnail/",
        f"/p/{slug}/attachments/{secret['image'].pk}/",
        f"/p/{slug}/v/1/changes/",
    }
    assert expected <= links, f"the page no longer links to {expected - links}"
    previews = {link for link in links if link.startswith("/preview/")}
    assert previews, "the page offers no preview"
    failed = {link: client.get(link).status_code for link in links if client.get(link).status_code != 200}
    assert failed == {}
    client.logout()  # the preview runs in an opaque origin: no cookies, the URL itself carries the access
    for link in previews:
        assert client.get(link).status_code == 200 and client.get(link + "app.js").status_code == 200

    # The build page's own links and its live feed carry the link too.
    client.force_login(bob)
    build_page = client.get(f"/p/{slug}/builds/{secret['build'].pk}/").content.decode()
    assert f"/p/{slug}/builds/{secret['build'].pk}/log/" in build_page
    assert f'data-prototype="{slug}"' in build_page
    # The install page of the package, and what it hands to a device.
    install = client.get(f"/p/{slug}/artifacts/{secret['package'].pk}/install/")
    assert install.status_code == 200
    for url in set(re.findall(rf'(?:href|src)="(/p/{slug}/artifacts/[^"#]+)"', install.content.decode())):
        assert client.get(url.replace("&amp;", "&")).status_code == 200, url


def test_the_api_reaches_a_link_only_prototypes_things_with_its_slug(client, bob, secret):
    api_client(client, bob)
    slug = secret["prototype"].slug
    for kind, pk in [("builds", secret["build"].pk), ("revisions", secret["revision"].pk),
                     ("artifacts", secret["web"].pk), ("comments", secret["comment"].pk)]:  # fmt: skip
        assert client.get(f"/api/{kind}/{pk}/").status_code == 404, kind
        shown = client.get(f"/api/{kind}/{pk}/", {"prototype": slug})
        assert shown.status_code == 200, kind
        # The address the API hands out works for him as it is.
        assert client.get(shown.json()["url"]).status_code == 200, kind
    assert client.get(f"/api/builds/{secret['build'].pk}/events/", {"prototype": slug}).json()[0]["seq"] == 1
    # A reply to a comment of a link-only prototype names the prototype, so its parent is found.
    reply = client.post("/api/comments/", {"prototype": slug, "parent": secret["comment"].pk, "body": "Agreed"},
                        content_type="application/json")  # fmt: skip
    assert reply.status_code == 201, reply.content


@pytest.mark.django_db(transaction=True)
def test_the_live_feed_of_a_link_only_build_needs_the_link(bob, alice):
    thing = make_link_only(alice)
    build_id, slug = thing["build"].pk, thing["prototype"].slug

    async def connects(query: str) -> bool:
        communicator = WebsocketCommunicator(URLRouter(websocket_urlpatterns), f"/ws/builds/{build_id}/{query}")
        communicator.scope["user"] = bob
        connected, _code = await communicator.connect()
        if connected:
            await communicator.disconnect()
        return connected

    assert not async_to_sync(connects)("")
    assert not async_to_sync(connects)("?prototype=some-other-prototype")
    assert async_to_sync(connects)(f"?prototype={slug}")


def test_a_link_only_prototypes_slug_cannot_be_guessed_from_its_title(alice, monkeypatch):
    monkeypatch.setattr("prototypes.builds._enqueue", lambda build: None)
    target = Target.objects.create(slug="web", name="Web", git_url="/nowhere", recipe_checked_at=timezone.now())
    made = [builds.create_prototype(owner=alice, target=target, idea="Add a sleep timer", visibility=visibility)
            for visibility in ("link", "link", "company")]  # fmt: skip
    first, second, company = (build.revision.prototype.slug for build in made)
    assert company == slugify("Add a sleep timer")
    for slug in (first, second):
        assert slug != company and not re.fullmatch(r"add-a-sleep-timer(-\d+)?", slug), slug
        assert re.fullmatch(r"add-a-sleep-timer-[a-z2-7]{16}", slug), slug  # 80 random bits
    assert first != second


def test_becoming_link_only_gives_a_new_address_and_the_old_one_stops(client, alice, bob):
    target = Target.objects.create(slug="web", name="Web", git_url="/nowhere", recipe_checked_at=timezone.now())
    prototype = Prototype.objects.create(slug="sleep-timer", title="Sleep timer", owner=alice, target=target,
                                         visibility="company", listing="listed")  # fmt: skip
    _link, token = create_link(prototype, by=alice)
    client.force_login(alice)
    response = client.post("/p/sleep-timer/edit/", {"title": "Sleep timer", "description": "", "tags": "",
                                                    "visibility": "link"})  # fmt: skip
    prototype.refresh_from_db()
    assert prototype.visibility == "link" and re.fullmatch(r"sleep-timer-[a-z2-7]{16}", prototype.slug)
    assert response.status_code == 302 and response["Location"] == f"/p/{prototype.slug}/"
    client.force_login(bob)
    assert client.get("/p/sleep-timer/").status_code == 404  # the address he may have seen in the catalog
    assert client.get(f"/p/{prototype.slug}/").status_code == 200  # the new one, once alice sends it
    client.logout()
    assert client.get(f"/s/{token}/").status_code == 200  # share links keep working
    # Going back to company keeps the (unguessable) address: nothing to hide any more.
    prototype.set_visibility("company")
    assert re.fullmatch(r"sleep-timer-[a-z2-7]{16}", prototype.slug)


def test_a_remix_does_not_hand_out_its_link_only_sources_address(client, bob, carol, secret):
    """Bob had the link and remixed it for everyone; carol sees the remix, not where it came from."""
    remix = Prototype.objects.create(slug="bobs-timer", title="Bob's timer", owner=bob, visibility="company",
                                     listing="listed", target=secret["prototype"].target,
                                     forked_from=secret["revision"])  # fmt: skip
    slug = secret["prototype"].slug
    client.force_login(carol)
    page = client.get(f"/p/{remix.slug}/")
    assert page.status_code == 200 and slug not in page.content.decode()
    api_client(client, carol)
    shown = client.get(f"/api/prototypes/{remix.slug}/")
    assert shown.status_code == 200 and shown.json()["forked_from"] is None and slug not in shown.content.decode()
