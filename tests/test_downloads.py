"""Downloads: every artifact route streams through prototypes/downloads.py, answers single byte ranges
(resumed downloads), and can hand the file to nginx with X-Accel-Redirect."""

import os

import pytest
from asgiref.sync import async_to_sync
from django.core.files.base import ContentFile
from django.test import AsyncClient

from prototypes.downloads import CHUNK, parse_range
from prototypes.models import Artifact, Build, Prototype, Revision, Target
from store.sharing import create_link

pytestmark = pytest.mark.django_db
DATA = os.urandom(3 * CHUNK + 1234)  # several chunks and a ragged end


@pytest.fixture(autouse=True)
def quick_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # the personas, quickly


@pytest.fixture
def artifact(alice):
    target = Target.objects.create(slug="podcast-api", name="Podcast API", kind="backend", git_url="/nowhere")
    prototype = Prototype.objects.create(slug="tune", title="Tune up", owner=alice, target=target,
                                         visibility="company", listing="listed")  # fmt: skip
    revision = Revision.objects.create(prototype=prototype, number=1, prompt="Count episodes", author=alice)
    build = Build.objects.create(revision=revision)
    for state in ["preparing", "running", "verifying", "packaging", "succeeded"]:
        build.move(state)
    prototype.current_revision = revision
    prototype.save()
    artifact = Artifact(build=build, kind="pyz", filename="podcast-api.pyz", size=len(DATA), sha256="0" * 64,
                        content_type="application/zip")  # fmt: skip
    artifact.file.save("podcast-api.pyz", ContentFile(DATA), save=True)
    return artifact


def routes(artifact, owner):
    _link, token = create_link(artifact.build.revision.prototype, by=owner)
    return {
        "download": f"/artifacts/{artifact.pk}/download/",
        "install": f"/artifacts/{artifact.pk}/file/{artifact.filename}",
        "shared": f"/s/{token}/artifacts/{artifact.pk}/download/",
        "in its prototype": f"/p/{artifact.build.revision.prototype.slug}/artifacts/{artifact.pk}/download/",
        "api": f"/api/artifacts/{artifact.pk}/download/",  # the API streams through the same function
    }


def body(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def test_every_download_route_sends_the_whole_file_and_says_ranges_are_welcome(client, alice, bob, artifact):
    client.force_login(bob)
    for name, url in routes(artifact, alice).items():
        response = client.get(url)
        assert response.status_code == 200, name
        assert response.streaming, name  # never read whole into memory
        assert body(response) == DATA, name
        assert response["Content-Length"] == str(len(DATA))
        assert response["Accept-Ranges"] == "bytes"
        assert response["Content-Disposition"] == 'attachment; filename="podcast-api.pyz"'
        assert response["X-Content-Type-Options"] == "nosniff"


def test_every_download_route_answers_a_range_with_206_and_just_those_bytes(client, alice, bob, artifact):
    client.force_login(bob)
    size = len(DATA)
    for name, url in routes(artifact, alice).items():
        response = client.get(url, HTTP_RANGE="bytes=100-199")
        assert response.status_code == 206, name
        assert body(response) == DATA[100:200]
        assert response["Content-Range"] == f"bytes 100-199/{size}"
        assert response["Content-Length"] == "100"
        assert response["Content-Disposition"] == 'attachment; filename="podcast-api.pyz"'


@pytest.mark.parametrize(
    "header, start, end",
    [
        ("bytes=0-0", 0, 0),
        (f"bytes={CHUNK - 10}-{2 * CHUNK + 10}", CHUNK - 10, 2 * CHUNK + 10),  # across chunk boundaries
        ("bytes=1000-", 1000, len(DATA) - 1),  # resume from byte 1000
        ("bytes=-500", len(DATA) - 500, len(DATA) - 1),  # the last 500 bytes
        ("bytes=5-999999999", 5, len(DATA) - 1),  # an end past the file is clipped
        (f"bytes=-{10 * len(DATA)}", 0, len(DATA) - 1),  # more than there is: all of it
    ],
)
def test_single_ranges_of_each_form_are_served(client, bob, artifact, header, start, end):
    client.force_login(bob)
    response = client.get(f"/artifacts/{artifact.pk}/download/", HTTP_RANGE=header)
    assert response.status_code == 206
    assert body(response) == DATA[start : end + 1]
    assert response["Content-Range"] == f"bytes {start}-{end}/{len(DATA)}"
    assert int(response["Content-Length"]) == end - start + 1


@pytest.mark.parametrize("header", [f"bytes={len(DATA)}-", f"bytes={len(DATA) + 10}-{len(DATA) + 20}", "bytes=-0"])
def test_a_range_past_the_end_is_refused_with_416_and_the_size(client, bob, artifact, header):
    client.force_login(bob)
    response = client.get(f"/artifacts/{artifact.pk}/download/", HTTP_RANGE=header)
    assert response.status_code == 416
    assert response["Content-Range"] == f"bytes */{len(DATA)}"


@pytest.mark.parametrize("header", ["bytes=0-1,5-6", "bytes=9-3", "items=0-5", "bytes=abc", "bytes=-"])
def test_several_ranges_or_a_malformed_one_get_the_whole_file(client, bob, artifact, header):
    client.force_login(bob)
    response = client.get(f"/artifacts/{artifact.pk}/download/", HTTP_RANGE=header)
    assert response.status_code == 200
    assert body(response) == DATA


def test_parse_range_of_an_empty_file_satisfies_nothing():
    assert parse_range("bytes=0-", 0) == "unsatisfiable"
    assert parse_range("bytes=-5", 0) == "unsatisfiable"
    assert parse_range("", 0) is None


def test_a_head_request_gets_the_headers_without_reading_the_file(client, alice, artifact):
    client.force_login(alice)
    response = client.head(f"/artifacts/{artifact.pk}/file/{artifact.filename}")
    assert response.status_code == 200
    assert response["Content-Length"] == str(len(DATA))
    assert response.content == b""


def test_people_who_cannot_see_the_prototype_get_no_bytes_even_with_a_range(client, carol, artifact):
    artifact.build.revision.prototype.visibility = Prototype.Visibility.PRIVATE
    artifact.build.revision.prototype.save()
    client.force_login(carol)
    assert client.get(f"/artifacts/{artifact.pk}/download/", HTTP_RANGE="bytes=0-10").status_code == 404


def test_a_file_gone_from_storage_is_a_404_not_an_error(client, alice, artifact):
    artifact.file.storage.delete(artifact.file.name)
    client.force_login(alice)
    assert client.get(f"/artifacts/{artifact.pk}/download/").status_code == 404


def test_under_asgi_the_body_is_an_async_stream_so_django_does_not_buffer_it(alice, artifact):
    # Django collects a synchronous iterator into a list before sending it over ASGI: the whole file in
    # memory. An async iterator is sent chunk by chunk.
    client = AsyncClient()
    client.force_login(alice)

    async def fetch(headers=None):
        response = await client.get(f"/artifacts/{artifact.pk}/download/", headers=headers)
        chunks = [chunk async for chunk in response.streaming_content]
        return response, chunks

    response, chunks = async_to_sync(fetch)()
    assert response.status_code == 200 and response.is_async
    assert b"".join(chunks) == DATA
    assert max(len(chunk) for chunk in chunks) <= CHUNK
    response, chunks = async_to_sync(fetch)({"Range": "bytes=-10"})
    assert response.status_code == 206 and b"".join(chunks) == DATA[-10:]


def test_with_accel_redirect_nginx_is_told_which_file_to_send(client, alice, bob, artifact, settings):
    settings.DOWNLOAD_ACCEL_REDIRECT = "/protected/"
    client.force_login(bob)
    for name, url in routes(artifact, alice).items():
        response = client.get(url, HTTP_RANGE="bytes=0-10")  # nginx answers ranges itself
        assert response.status_code == 200, name
        assert response.content == b""
        assert response["X-Accel-Redirect"] == f"/protected/{artifact.file.name}"
        assert response["Content-Type"] == "application/zip"
        assert response["Content-Disposition"] == 'attachment; filename="podcast-api.pyz"'
    assert (settings.MEDIA_ROOT / artifact.file.name).read_bytes() == DATA  # what nginx's alias points at


def test_a_filename_with_spaces_and_accents_is_described_for_every_browser(client, alice, artifact):
    artifact.filename = "Podcast app – v1.pyz"
    artifact.save()
    client.force_login(alice)
    response = client.get(f"/artifacts/{artifact.pk}/download/", HTTP_RANGE="bytes=0-3")
    assert response.status_code == 206
    assert response["Content-Disposition"] == "attachment; filename*=utf-8''Podcast%20app%20%E2%80%93%20v1.pyz"
