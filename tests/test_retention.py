"""Retention: the files of old versions expire by age, count or total size unless pinned or current; the
pages then say so; admins see the storage used."""

import os
import sys
import types
from datetime import timedelta
from io import StringIO

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.management import call_command
from django.urls import include, path
from django.utils import timezone

from prototypes import retention, tasks
from prototypes.models import Artifact, Build, Prototype, Revision, Screenshot, Target
from prototypes.pipeline import preview_dir
from prototypes.retention import Policy
from store.sharing import create_link

pytestmark = pytest.mark.django_db
NOW = timezone.now()


@pytest.fixture(autouse=True)
def routes(settings):
    """The storage page's route, whether or not store/urls.py includes it yet."""
    module = types.ModuleType("retention_test_urls")
    module.urlpatterns = [path("", include("store.storage_views")), path("", include("store.urls"))]
    sys.modules[module.__name__] = module
    settings.ROOT_URLCONF = module.__name__


@pytest.fixture
def target():
    return Target.objects.create(slug="web-player", name="Web Player", kind="web", git_url="/nowhere")


def version(prototype, number, *, age_days=0, size=100, kind="web", patch=True, current=True):
    """A built version of `prototype` with one artifact of `kind` (and its patch), made `age_days` ago."""
    made = NOW - timedelta(days=age_days)
    revision = Revision.objects.create(prototype=prototype, number=number, prompt=f"idea {number}",
                                       author=prototype.owner, created_at=made)  # fmt: skip
    build = Build.objects.create(revision=revision, state=Build.State.SUCCEEDED, created_at=made)
    artifact = Artifact(build=build, kind=kind, filename=f"v{number}.zip", size=size, sha256="0" * 64,
                        content_type="application/zip", metadata={"entry": "index.html"}, created_at=made)  # fmt: skip
    artifact.file.save(f"v{number}.zip", ContentFile(b"x" * size), save=True)
    if kind == "web":
        (preview_dir(artifact)).mkdir(parents=True, exist_ok=True)
        (preview_dir(artifact) / "index.html").write_text(f"<h1>version {number}</h1>")
    if patch:
        diff = Artifact(build=build, kind="patch", filename="change.patch", size=10, sha256="1" * 64,
                        content_type="text/x-diff", created_at=made)  # fmt: skip
        diff.file.save("change.patch", ContentFile(b"--- a\n+++ b\n"), save=True)
    if current:
        prototype.current_revision = revision
        prototype.save()
    return artifact


@pytest.fixture
def player(alice, target):
    """Alice's prototype with versions 1 (200 days old), 2 (100 days) and 3 (current, 150 days)."""
    prototype = Prototype.objects.create(slug="player", title="Player", owner=alice, target=target,
                                         visibility="company", listing="listed")  # fmt: skip
    old = version(prototype, 1, age_days=200)
    middle = version(prototype, 2, age_days=100)
    current = version(prototype, 3, age_days=150)
    return prototype, old, middle, current


def expired_ids():
    return set(Artifact.objects.filter(expired_at__isnull=False).values_list("pk", flat=True))


def test_files_older_than_the_age_limit_expire_but_not_the_current_versions_nor_pinned_ones(player):
    _prototype, old, middle, current = player
    middle.pinned = True
    middle.save()
    done = retention.apply_retention(Policy(days=90))
    assert [e.artifact.pk for e in done] == [old.pk]
    assert expired_ids() == {old.pk}  # not the pinned one, not the current version's, never the patches
    assert retention.apply_retention(Policy(days=90)) == []  # nothing twice


def test_only_the_newest_versions_of_each_prototype_keep_their_files(player, bob, target):
    _prototype, old, middle, current = player
    other = Prototype.objects.create(slug="other", title="Other", owner=bob, target=target)
    others = [version(other, n, age_days=1) for n in (1, 2, 3)]
    retention.apply_retention(Policy(keep_revisions=2))
    # Player keeps versions 3 and 2; the other prototype keeps its 2 and 3: counted per prototype.
    assert expired_ids() == {old.pk, others[0].pk}


def test_over_the_size_limit_the_oldest_files_go_first_until_it_fits(player, bob, target):
    _prototype, old, middle, current = player
    other = Prototype.objects.create(slug="other", title="Other", owner=bob, target=target)
    first, second, _current = (version(other, n, age_days=d, size=1000) for n, d in ((1, 50), (2, 40), (3, 30)))
    # Live: 3 x 100 + 3 x 1000 + 6 patches x 10 = 3360 bytes. Oldest first: old (200 days), middle (100
    # days), then `first` (50 days) brings it to 2160; the current versions and the patches stay.
    done = retention.apply_retention(Policy(max_bytes=2500))
    assert [e.artifact.pk for e in done] == [old.pk, middle.pk, first.pk]
    assert "storage over 2500 bytes" in done[0].reason


def test_expiring_removes_the_file_and_the_unpacked_preview_but_keeps_screenshots(player):
    _prototype, old, _middle, _current = player
    picture = default_storage.save("screenshots/desktop.png", ContentFile(b"png"))
    shot = Screenshot.objects.create(revision=old.build.revision, size="desktop", image=picture, thumbnail=picture,
                                     width=4, height=3)  # fmt: skip
    file_path = old.file.path
    retention.apply_retention(Policy(days=90))
    old.refresh_from_db()
    assert old.expired_at is not None
    assert not (preview_dir(old)).exists()
    assert not os.path.exists(file_path)
    assert shot.image.storage.exists(shot.image.name)


def test_the_dry_run_lists_what_would_expire_and_changes_nothing(player, settings):
    settings.RETENTION_DAYS = 150
    out = StringIO()
    call_command("retention", "--dry-run", stdout=out)
    assert "Would expire 1 file," in out.getvalue() and "older than 150 days" in out.getvalue()
    assert expired_ids() == set()
    call_command("retention", stdout=StringIO())
    assert len(expired_ids()) == 1


def test_the_daily_task_applies_the_settings_and_beat_runs_it(player, settings):
    from store.celery import app

    settings.RETENTION_DAYS, settings.RETENTION_KEEP_REVISIONS, settings.RETENTION_MAX_BYTES = 0, 1, 0
    assert tasks.apply_retention() == 2  # versions 1 and 2; 3 is current
    entries = {entry["task"] for entry in app.conf.beat_schedule.values()}
    assert "prototypes.tasks.apply_retention" in entries


def test_pages_say_a_versions_files_have_expired_and_links_to_them_stop(client, player, bob, alice):
    prototype, old, _middle, _current = player
    prototype.visibility = "private"
    prototype.save()
    _link, token = create_link(prototype, by=alice, revision=old.build.revision)
    retention.apply_retention(Policy(days=90))
    client.force_login(alice)
    page = client.get(f"/p/{prototype.slug}/").content.decode()
    assert "This version's files have expired" in page  # in the list of versions
    shared = client.get(f"/s/{token}/").content.decode()
    assert "This version's files have expired" in shared
    assert client.get(f"/artifacts/{old.pk}/download/").status_code == 404
    from store.previews import preview_url

    assert "expired" in client.get(preview_url(old, user=alice)).content.decode()
    # Making an expired version current shows the message in place of the preview.
    prototype.current_revision = old.build.revision
    prototype.save()
    assert 'id="files-expired"' in client.get(f"/p/{prototype.slug}/").content.decode()


def test_admins_see_the_storage_used_and_nobody_else_does(client, player, ada, alice):
    _prototype, old, middle, current = player
    current.pinned = True
    current.save()
    retention.apply_retention(Policy(days=150))  # expires version 1 only (2 is 100 days old, 3 is current)
    client.force_login(alice)
    assert client.get("/admin-tools/storage/").status_code == 403
    client.force_login(ada)
    page = client.get("/admin-tools/storage/")
    assert page.status_code == 200
    summary = page.context["summary"]
    assert summary["live"] == {"files": 5, "bytes": 2 * 100 + 3 * 10}
    assert summary["pinned"] == {"files": 1, "bytes": 100}
    assert summary["expired"] == {"files": 1, "bytes": 100}
    assert summary["by_target"][0]["name"] == "Web Player" and summary["by_target"][0]["freed"] == 100
    text = page.content.decode()
    assert "Storage used" in text and "1 file expired, 100\xa0bytes freed" in text
