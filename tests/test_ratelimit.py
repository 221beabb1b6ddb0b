"""Rate limits on starting builds, commenting and opening share links: a plain 429 page with Retry-After,
counted per person (per client address for share links), in memory or in Redis."""

import runpy
from pathlib import Path

import pytest
from django.test import override_settings
from django.utils import timezone

from prototypes.models import Build, Prototype, Revision, Target
from store.models import Comment, ShareLink
from store.ratelimit import client_ip, describe_wait, hit, parse_rate
from tests.services import redis_server

pytestmark = pytest.mark.django_db


@pytest.fixture
def target():
    return Target.objects.create(
        slug="web-player", name="Web Player", kind="web", git_url="/nowhere", recipe_checked_at=timezone.now()
    )


@pytest.fixture
def prototype(alice, target):
    prototype = Prototype.objects.create(slug="tune", title="Tune up", owner=alice, target=target, listing="listed")
    revision = Revision.objects.create(prototype=prototype, number=1, prompt="Add a dark mode toggle", author=alice)
    prototype.current_revision = revision
    prototype.save()
    return prototype


def new_prototype(client, target, idea="Add a dark mode toggle"):
    return client.post("/new/", {"target": target.pk, "idea": idea, "title": "", "visibility": "company"})


def test_a_rate_is_a_count_per_second_minute_hour_or_day():
    assert parse_rate("10/h") == (10, 3600)
    assert parse_rate("120/m") == (120, 60)
    assert parse_rate(" 5 / d ") == (5, 86400)
    assert parse_rate("") is None and parse_rate("0/h") is None
    with pytest.raises(ValueError):
        parse_rate("ten an hour")


def test_a_window_lets_the_count_through_then_says_how_long_to_wait_until_the_next():
    start = 7200.0  # the start of an hour
    assert [hit("t", "k", "2/h", now=start + s) for s in (0, 10)] == [0, 0]
    assert hit("t", "k", "2/h", now=start + 600) == 3000
    assert hit("t", "other", "2/h", now=start + 600) == 0
    assert hit("t", "k", "2/h", now=start + 3600) == 0  # the next hour


def test_waits_read_as_people_say_them():
    assert [describe_wait(s) for s in (1, 45, 600, 7200)] == ["1 second", "45 seconds", "10 minutes", "2 hours"]


def test_a_person_who_starts_too_many_builds_gets_a_plain_429_with_retry_after(client, alice, bob, target, settings):
    settings.RATELIMIT_BUILDS = "2/h"
    client.force_login(alice)
    assert [new_prototype(client, target).status_code for _ in range(2)] == [302, 302]
    assert client.get("/new/").status_code == 200  # looking at the form does not count
    response = new_prototype(client, target, "A third idea")
    assert response.status_code == 429
    assert 0 < int(response["Retry-After"]) <= 3600
    page = response.content.decode()
    assert "Too many new builds: at most 2 an hour." in page and "Please try again in" in page
    assert "Back button" in page
    assert Build.objects.count() == 2
    client.force_login(bob)  # counted per person
    assert new_prototype(client, target).status_code == 302


def test_asking_for_changes_and_retrying_count_as_new_builds(client, alice, prototype, settings):
    settings.RATELIMIT_BUILDS = "1/h"
    Revision.objects.filter(prototype=prototype).update(result_commit="a" * 40)  # built: changes are accepted
    client.force_login(alice)
    assert client.post("/p/tune/change/", {"idea": "Bigger buttons"}).status_code == 302
    assert client.post("/p/tune/change/", {"idea": "Bigger buttons"}).status_code == 429
    assert client.post("/builds/1/retry/").status_code == 429


def test_only_accepted_builds_count_not_refused_submissions(client, alice, target, settings, monkeypatch):
    """Three uploads refused (not images) and an idea over budget cost nothing; the builds made count,
    on the pages and through the API alike."""
    from django.core.files.uploadedfile import SimpleUploadedFile
    from rest_framework.authtoken.models import Token

    from prototypes import builds

    monkeypatch.setattr(builds, "_enqueue", lambda build: None)
    settings.RATELIMIT_BUILDS = "2/h"
    client.force_login(alice)
    for _ in range(3):
        junk = SimpleUploadedFile("mockup.png", b"not an image", content_type="image/png")
        response = client.post("/new/", {"target": target.pk, "idea": "A timer", "visibility": "company",
                                         "images": junk})  # fmt: skip
        assert response.status_code == 200 and "not an image we can read" in response.content.decode()
    assert client.post("/new/", {"target": target.pk, "idea": "", "visibility": "company"}).status_code == 200
    assert Build.objects.count() == 0
    assert new_prototype(client, target).status_code == 302  # the first build of the hour
    api = {"HTTP_AUTHORIZATION": f"Token {Token.objects.create(user=alice).key}"}
    refused = client.post("/api/prototypes/", {"target": "nowhere", "idea": "x"}, content_type="application/json",
                          **api)  # fmt: skip
    assert refused.status_code == 400
    made = client.post("/api/prototypes/", {"target": target.slug, "idea": "A second timer"},
                       content_type="application/json", **api)  # fmt: skip
    assert made.status_code == 201  # the second
    assert new_prototype(client, target).status_code == 429
    over = client.post("/api/prototypes/", {"target": target.slug, "idea": "A third"}, content_type="application/json",
                       **api)  # fmt: skip
    assert over.status_code == 429 and "at most 2 an hour" in over.json()["error"]["message"]
    assert Build.objects.count() == 2


def test_a_person_who_comments_too_often_gets_a_429(client, bob, prototype, settings):
    settings.RATELIMIT_COMMENTS = "2/h"
    client.force_login(bob)
    for body in ["Love it", "And the colours"]:
        assert client.post("/p/tune/comment/", {"body": body}).status_code == 302
    response = client.post("/p/tune/comment/", {"body": "One more"})
    assert response.status_code == 429 and "Too many comments: at most 2 an hour." in response.content.decode()
    assert Comment.objects.count() == 2


def test_share_links_are_limited_per_client_address_even_for_tokens_that_do_not_exist(
    client, alice, prototype, settings
):
    settings.RATELIMIT_SHARE_LINKS = "3/m"
    _link, token = ShareLink.create(prototype=prototype, created_by=alice)
    assert client.get(f"/s/{token}/").status_code == 200
    assert client.get("/s/guessed-token/").status_code == 404
    assert client.get(f"/s/{token}/").status_code == 200
    response = client.get(f"/s/{token}/")
    assert response.status_code == 429 and 0 < int(response["Retry-After"]) <= 60
    assert "Too many requests to shared prototypes: at most 3 a minute." in response.content.decode()
    assert client.get("/s/another-guess/").status_code == 429
    assert client.get(f"/s/{token}/", REMOTE_ADDR="10.0.0.7").status_code == 200


def test_an_empty_rate_turns_a_limit_off(client, bob, prototype, settings):
    settings.RATELIMIT_COMMENTS = ""
    client.force_login(bob)
    assert {client.post("/p/tune/comment/", {"body": f"Note {n}"}).status_code for n in range(5)} == {302}


def test_behind_a_proxy_the_address_it_adds_is_the_client(rf, settings):
    request = rf.get("/", HTTP_X_FORWARDED_FOR="6.6.6.6, 203.0.113.9", REMOTE_ADDR="10.0.0.1")
    assert client_ip(request) == "10.0.0.1"
    settings.RATELIMIT_CLIENT_IP_HEADER = "X-Forwarded-For"
    assert client_ip(request) == "203.0.113.9"  # the first one is whatever the client wrote
    assert client_ip(rf.get("/", REMOTE_ADDR="10.0.0.1")) == "10.0.0.1"


def test_with_redis_the_counters_are_shared_by_every_web_process():
    with redis_server() as redis:
        caches = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": redis.url}}
        with override_settings(CACHES=caches):
            assert [hit("t", "k", "2/m", now=60.0) for _ in range(3)][:2] == [0, 0]
            assert hit("t", "k", "2/m", now=61.0) == 59
            import redis as client

            keys = client.Redis.from_url(redis.url).keys("*ratelimit:t:k*")
            assert len(keys) == 1


def test_the_cache_is_redis_when_redis_url_is_set_and_memory_otherwise(monkeypatch):
    settings_file = Path(__file__).resolve().parents[1] / "store" / "settings.py"
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    assert runpy.run_path(str(settings_file))["CACHES"]["default"]["BACKEND"] == (
        "django.core.cache.backends.redis.RedisCache"
    )
    monkeypatch.delenv("REDIS_URL")
    assert runpy.run_path(str(settings_file))["CACHES"]["default"]["BACKEND"] == (
        "django.core.cache.backends.locmem.LocMemCache"
    )
