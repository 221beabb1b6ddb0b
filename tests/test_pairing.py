"""Full-stack previews (prototypes/pairing.py): a served version that names backends in its [serve] runs
beside them. By default a backend is its target's default branch (a baseline: built by its recipe alone,
once per commit); the prototype's owner may pick another version of it on the prototype page.

The last test runs the whole thing for real: web-player built by the real pipeline from a sample
conversation, podcast-api's main branch built as a baseline, both started in the sandbox by the preview
worker's code, and the player's page and API reached through the store's live proxy with a live URL."""

import hashlib
import os
import shutil
import subprocess
from dataclasses import asdict
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.files.base import ContentFile
from django.test import TestCase
from django.utils import timezone

from agents.recipe import Backend, Serve
from agents.serve import AppFailed
from prototypes import instances, live_proxy, pairing
from prototypes.models import Artifact, Baseline, Build, PreviewInstance, Prototype, Revision, Target
from prototypes.targets import example_repository, import_example
from store.previews import authorize, live_token
from tests import test_instances
from tests.test_instances import build_example, visit
from tests.test_live_proxy import call

pytestmark = pytest.mark.django_db
# The instance tests' fixtures: the starts asked for and cleanup of what started (Celery runs eagerly: conftest).
sent, cleanup = test_instances.sent, test_instances.cleanup
API = Backend(target="podcast-api", env="PODCAST_API_URL")
EPISODE_TITLES = ["Code Review Without Tears", "The On-Call Week"]  # from podcast_api/seed.py


@pytest.fixture
def podcast_api():
    return import_example(settings.EXAMPLES_DIR / "targets" / "podcast-api", settings.TARGET_REPO_ROOT)


@pytest.fixture
def counted_builds(monkeypatch) -> list[str]:
    """The baselines actually built (by commit), the real build still running."""
    built: list[str] = []
    real = pairing.agents.build_baseline

    def counting(spec):
        built.append(spec.commit)
        return real(spec)

    monkeypatch.setattr(pairing.agents, "build_baseline", counting)
    return built


def version(owner, target: Target, *, slug: str, visibility="company", backends=()) -> Artifact:
    """A succeeded, serveable version of a prototype of `target` (its file is not run here)."""
    prototype = Prototype.objects.create(slug=slug, title=slug.title(), owner=owner, target=target,
                                         visibility=visibility, listing="listed")  # fmt: skip
    revision = Revision.objects.create(prototype=prototype, number=1, prompt="An idea", author=owner)
    build = Build.objects.create(revision=revision)
    for state in ["preparing", "running", "verifying", "packaging", "succeeded"]:
        build.move(state)
    serve = Serve(command="node server.mjs", port=8080, backends=tuple(backends))
    artifact = Artifact(build=build, kind="web", filename="site.zip", size=3, sha256=hashlib.sha256(b"zip").hexdigest(),
                        content_type="application/zip", metadata={"serve": asdict(serve)})  # fmt: skip
    artifact.file.save("site.zip", ContentFile(b"zip"), save=True)
    Prototype.objects.filter(pk=prototype.pk).update(current_revision=revision)
    return artifact


def frontend(owner, **kwargs) -> Artifact:
    web, _ = Target.objects.get_or_create(slug="web-player", defaults={"name": "Web Player", "git_url": "/nowhere"})
    return version(owner, web, backends=(API,), **kwargs)


def own_target(tmp_path, slug: str, build_command: str | None = None) -> Target:
    """podcast-api in a repository of this test's own (its branch is moved or broken here, which the
    shared example repository must not be), registered as target `slug`."""
    folder = tmp_path / "src" / slug
    shutil.copytree(settings.EXAMPLES_DIR / "targets" / "podcast-api", folder)
    if build_command is not None:
        recipe = (folder / "prototype.toml").read_text()
        start = recipe.index('command = "rm -rf build')
        end = recipe.index("\n", start)
        (folder / "prototype.toml").write_text(recipe[:start] + f'command = "{build_command}"' + recipe[end:])
    repo = example_repository(folder, tmp_path / "repos")
    return Target.objects.create(slug=slug, name=slug.title(), kind="backend", git_url=str(repo))


def move_branch(repo: str) -> str:
    """A new commit on main (same files), as a push to the default branch would make."""

    def git(*args):
        return subprocess.check_output(["git", "--git-dir", repo, *args], text=True,
                                       env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
                                            "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}).strip()  # fmt: skip

    commit = git("commit-tree", "main^{tree}", "-p", "main", "-m", "Move main")
    git("update-ref", "refs/heads/main", commit)
    return commit


def test_the_baseline_is_built_once_per_commit_and_again_when_the_branch_moves(tmp_path, counted_builds, ada):
    target = own_target(tmp_path, "moving-api")
    first = pairing.ensure_baseline(target)

    assert first.baseline.state == Baseline.State.READY and first.build_id is None
    assert first.kind == "pyz" and instances.serve_spec(first).command.startswith("python3 podcast-api.pyz")
    assert pairing.ensure_baseline(target).pk == first.pk, "the same commit reuses its baseline"
    assert len(counted_builds) == 1
    # Never handed out as a file: it belongs to no prototype, so no visibility rule lets it through.
    assert not Artifact.objects.available().filter(pk=first.pk).exists()
    assert authorize(live_token(first, user=ada)[0]) is None, "nor opened live by itself, even by an admin"
    assert Artifact.objects.runnable().filter(pk=first.pk).exists()

    commit = move_branch(target.git_url)
    moved = pairing.ensure_baseline(target)

    assert moved.pk != first.pk and moved.baseline.commit == commit and len(counted_builds) == 2
    assert Baseline.objects.filter(target=target, state="ready").count() == 2


def test_a_baseline_that_cannot_be_built_fails_in_plain_words_once(tmp_path, counted_builds):
    target = own_target(tmp_path, "broken-api", build_command="echo no compiler here; exit 3")

    for _ in range(2):
        with pytest.raises(AppFailed, match="Broken-Api's main branch could not be built") as failure:
            pairing.ensure_baseline(target)
    assert "no compiler here" in failure.value.log_tail
    assert len(counted_builds) == 1, "a failed commit is not built again at every start"
    assert Baseline.objects.get(target=target).state == Baseline.State.FAILED
    # Tried again after a pause (the failure may have been ours, e.g. a sandbox that could not start).
    Baseline.objects.filter(target=target).update(finished_at=timezone.now() - timedelta(hours=1))
    with pytest.raises(AppFailed):
        pairing.ensure_baseline(target)
    assert len(counted_builds) == 2


def test_an_unreachable_repository_falls_back_to_the_last_baseline_built(tmp_path, counted_builds):
    target = own_target(tmp_path, "far-api")
    built = pairing.ensure_baseline(target)
    Target.objects.filter(pk=target.pk).update(git_url=str(tmp_path / "gone.git"))
    target.refresh_from_db()

    assert pairing.ensure_baseline(target).pk == built.pk and len(counted_builds) == 1


def test_a_new_instance_talks_to_the_backends_default_branch(alice, podcast_api, sent):
    baseline = pairing.ensure_baseline(podcast_api)
    site = frontend(alice, slug="player")

    instance = visit(site, "shared")

    assert instance.paired == {"PODCAST_API_URL": baseline.pk}
    [row] = pairing.describe(site.build.revision.prototype, site, alice)
    assert row["label"] == "Podcast API's main branch" and row["baseline_commit"] == baseline.baseline.commit[:10]


def test_the_owner_picks_another_version_and_the_page_says_so(client, alice, bob, podcast_api, sent):
    site = frontend(alice, slug="player")
    prototype = site.build.revision.prototype
    instance = visit(site, "shared")
    faster = version(bob, podcast_api, slug="faster-api")  # a colleague's listed version: alice may see it
    secret = version(bob, podcast_api, slug="secret-api", visibility="private")
    client.force_login(alice)
    url = f"/p/{prototype.slug}/live/pair/"

    page = client.get(f"/p/{prototype.slug}/").content.decode()
    assert "Talks to" in page and "Podcast API&#x27;s main branch" in page and "Faster-Api v1" in page
    assert "Secret-Api" not in page, "a version she may not see is not offered"

    client.post(url, {"env": "PODCAST_API_URL", "artifact": str(faster.pk)})

    prototype.refresh_from_db()
    instance.refresh_from_db()
    assert prototype.pairings == {"PODCAST_API_URL": faster.pk} and instance.paired == {"PODCAST_API_URL": faster.pk}
    assert instance.state == "starting", "a running preview starts again with the new backend"
    assert "selected>Faster-Api v1" in client.get(f"/p/{prototype.slug}/").content.decode()

    answer = client.post(url, {"env": "PODCAST_API_URL", "artifact": str(secret.pk)}, follow=True)
    assert "cannot be paired" in answer.content.decode()
    prototype.refresh_from_db()
    assert prototype.pairings == {"PODCAST_API_URL": faster.pk}

    # Her own private version: hers to pick, and its title is not shown to those who may not open it.
    mine = version(alice, podcast_api, slug="my-private-api", visibility="private")
    client.post(url, {"env": "PODCAST_API_URL", "artifact": str(mine.pk)})
    client.force_login(bob)
    seen = client.get(f"/p/{prototype.slug}/").content.decode()
    assert "another version of Podcast API" in seen and "My-Private-Api" not in seen
    client.force_login(alice)

    client.post(url, {"env": "PODCAST_API_URL", "artifact": ""})  # back to the default branch
    prototype.refresh_from_db()
    assert prototype.pairings == {}


def test_a_pick_no_longer_visible_to_the_owner_falls_back_to_the_default_branch(alice, bob, podcast_api, sent):
    site = frontend(alice, slug="player")
    prototype = site.build.revision.prototype
    prototype.refresh_from_db()  # with its current version
    bobs = version(bob, podcast_api, slug="bobs-api")
    pairing.choose(prototype, alice, "PODCAST_API_URL", bobs.pk)
    instance = visit(site, "shared")
    assert instance.paired == {"PODCAST_API_URL": bobs.pk}
    assert pairing.backend_artifact(instance, API).pk == bobs.pk

    Prototype.objects.filter(pk=bobs.build.revision.prototype_id).update(visibility="private")

    default = pairing.backend_artifact(instance, API)  # as the preview worker asks at the next start
    assert default.baseline is not None and default.baseline.target == podcast_api
    instance.refresh_from_db()
    assert instance.paired == {"PODCAST_API_URL": default.pk}


def test_nobody_but_the_owner_pairs(client, alice, bob, podcast_api, sent):
    site = frontend(alice, slug="player")
    prototype = site.build.revision.prototype
    other = version(bob, podcast_api, slug="bobs-api")
    client.force_login(bob)

    page = client.get(f"/p/{prototype.slug}/").content.decode()
    assert "Talks to" in page and "Pair with" not in page, "he sees what it is paired with, not the choice"
    answer = client.post(f"/p/{prototype.slug}/live/pair/", {"env": "PODCAST_API_URL", "artifact": str(other.pk)})

    assert answer.status_code == 403
    prototype.refresh_from_db()
    assert prototype.pairings == {}
    with pytest.raises(PermissionError):
        pairing.choose(prototype, bob, "PODCAST_API_URL", other.pk)


def test_a_web_player_preview_shows_episodes_from_podcast_api_through_the_proxy(
    settings,
    monkeypatch,
    alice,
    podcast_api,
    django_capture_on_commit_callbacks,
    eager_celery,
    sent,
    cleanup,
):
    import store.asgi
    from store.previews import live_url

    build = build_example("web-player", alice, "Add a dark mode toggle", django_capture_on_commit_callbacks)
    site = build.artifacts.get(kind=Artifact.Kind.WEB)
    assert instances.serve_spec(site).backends == (API,)
    settings.LIVE_PREVIEW_DOMAIN, settings.LIVE_PREVIEW_SCHEME, settings.LIVE_PREVIEW_ACCESS_CACHE = (
        "localhost:8000", "http", 0,
    )  # fmt: skip
    monkeypatch.setattr(live_proxy, "in_db_thread", sync_to_async)
    monkeypatch.setattr(store.asgi, "live_proxy", live_proxy.LiveProxy(store.asgi.authorize))
    app = store.asgi.application
    parts = urlsplit(live_url(site, user=alice))
    host = parts.netloc
    cookie = call(app, "GET", f"{parts.path}?{parts.query}", host=host).header("set-cookie")[0].split(";")[0]

    def get(path):
        with TestCase.captureOnCommitCallbacks(execute=True):
            return call(app, "GET", path, host=host, cookie=cookie)

    starting = get("/")  # the Starting page, saying what starts beside it; the start is asked for
    assert starting.status == 200 and b"podcast-api" in starting.body and len(sent) == 1
    instances.start_instance(sent[0])  # the preview worker: builds podcast-api's main, starts it, then the player

    instance = PreviewInstance.objects.get(pk=sent[0])
    assert instance.state == "running", (instance.error, instance.log_tail)
    baseline = Artifact.objects.get(baseline__target=podcast_api)
    assert instance.paired == {"PODCAST_API_URL": baseline.pk}
    page = get("/")
    assert page.status == 200 and b"Podcast episodes" in page.body and b"podcasts.js" in page.body
    episodes = get("/api/episodes")
    assert episodes.status == 200, episodes.body
    titles = [episode["title"] for episode in episodes.json()["episodes"]]
    assert set(EPISODE_TITLES) <= set(titles), titles
    companion = PreviewInstance.objects.get(artifact=baseline)
    assert companion.viewer == "shared" and companion.state == "running"
