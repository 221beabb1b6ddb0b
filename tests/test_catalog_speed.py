"""The catalog page's fixed cost (issue 16): what every signed-in page pays whatever the store holds, cut
without changing who sees what."""

import io
import runpy
from pathlib import Path

import pytest
from django.core.cache import cache
from django.core.files.base import ContentFile
from django.db import connection
from django.test.utils import CaptureQueriesContext
from PIL import Image

from prototypes.models import Prototype, Revision, Screenshot, Target

pytestmark = pytest.mark.django_db


@pytest.fixture
def prototype(alice):
    target = Target.objects.create(slug="web-player", name="Web Player", kind="web", git_url="/nowhere")
    prototype = Prototype.objects.create(
        slug="sleep-timer", title="Sleep timer", owner=alice, target=target, listing="listed", visibility="company"
    )
    prototype.current_revision = Revision.objects.create(prototype=prototype, number=1, prompt="idea", author=alice)
    prototype.save()
    return prototype


def picture(revision, size: str) -> Screenshot:
    out = io.BytesIO()
    Image.new("RGB", (8, 5), "white").save(out, "PNG")
    shot = Screenshot(revision=revision, size=size, width=8, height=5)
    shot.image.save(f"{size}.png", ContentFile(out.getvalue(), name=f"{size}.png"), save=False)
    shot.thumbnail.save(f"{size}.webp", ContentFile(out.getvalue(), name=f"{size}.png"), save=False)
    shot.save()
    return shot


def test_a_catalog_page_reads_its_cards_and_their_pictures_in_one_query(client, alice, bob, prototype):
    cache.clear()
    shown = picture(prototype.current_revision, "desktop")
    phone_only = Prototype.objects.create(
        slug="queue", title="Queue", owner=alice, target=prototype.target, listing="listed", visibility="company"
    )
    phone_only.current_revision = Revision.objects.create(prototype=phone_only, number=1, prompt="q", author=alice)
    phone_only.save()
    picture(phone_only.current_revision, "mobile")  # a card shows desktop pictures only
    client.force_login(bob)
    client.get("/")  # the cards are cached now, as in a running store
    with CaptureQueriesContext(connection) as captured:
        page = client.get("/").content.decode()
    assert not [q["sql"] for q in captured if q["sql"].startswith('SELECT "prototypes_screenshot"')]
    assert page.count("/thumbnail") == 1 and f"/{shown.pk}/thumbnail" in page
    cache.clear()


def test_sessions_are_read_from_the_cache_only_when_every_web_process_shares_it(monkeypatch):
    settings_file = Path(__file__).resolve().parents[1] / "store" / "settings.py"
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    shared = runpy.run_path(str(settings_file))
    assert shared["SESSION_ENGINE"] == "django.contrib.sessions.backends.cached_db"
    monkeypatch.delenv("REDIS_URL")
    # per-process memory: a sign-out in one process would not reach another's copy, so the database alone
    assert "SESSION_ENGINE" not in runpy.run_path(str(settings_file))
