"""The faults production brings, with real processes: a worker killed in the middle of a build, Redis
restarted while builds run, the model service down. After each, no build is left in a non-final state
and no request is lost."""

import os
import shutil
import signal
import time
from pathlib import Path

import pytest
from django.conf import settings as django_settings

from prototypes import pipeline
from prototypes.builds import trigger_build
from prototypes.models import Build, ModelCall, Prototype, Revision
from prototypes.targets import import_example
from tests.services import CeleryWorker, celery_broker, redis_server, shared_database_env, wait_until

pytestmark = [
    pytest.mark.django_db(transaction=True),  # the workers must see the rows: commit them
    pytest.mark.skipif(not shutil.which("redis-server"), reason="needs redis-server (scripts/system-deps.sh)"),
]
RECORDINGS = Path(__file__).parent / "recordings"  # a long command; a model service answering 529
LONG_COMMAND = "sleep 173"


@pytest.fixture
def redis():
    with redis_server() as server:
        yield server


@pytest.fixture
def broker(redis):
    with celery_broker(redis.url) as app:
        yield app


@pytest.fixture
def recordings(tmp_path):
    """The example recordings and the fault tests' own, in one folder."""
    folder = tmp_path / "recordings"
    shutil.copytree(django_settings.EXAMPLES_DIR / "recordings", folder)
    shutil.copytree(RECORDINGS, folder, dirs_exist_ok=True)
    return folder


def start_worker(tmp_path, redis, recordings, **env) -> CeleryWorker:
    worker = CeleryWorker("w1", shared_database_env(REDIS_URL=redis.url, RECORDINGS_DIR=str(recordings), **env),
                          tmp_path / "w1.log")  # fmt: skip
    worker.start()
    worker.wait_ready()
    return worker


def queue_build(owner, idea: str, n: int, target_name: str = "web-player") -> Build:
    target = import_example(django_settings.EXAMPLES_DIR / "targets" / target_name, django_settings.TARGET_REPO_ROOT)
    prototype = Prototype.objects.create(slug=f"fault-{n}", title=idea, owner=owner, target=target)
    revision = Revision.objects.create(prototype=prototype, number=1, prompt=idea, author=owner)
    return trigger_build(revision)  # outside a transaction: sent at once


def assert_no_build_is_stuck():
    stuck = Build.objects.exclude(state__in=Build.FINAL_STATES).values_list("pk", "state")
    assert list(stuck) == []


def processes_running(words: str) -> list[int]:
    """Live (not zombie) processes whose command line contains `words`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if words in cmdline and state != "Z" and entry.name != str(os.getpid()):
            found.append(int(entry.name))
    return found


def test_a_build_whose_worker_is_killed_fails_as_worker_lost_and_keeps_its_events(
    redis, broker, recordings, alice, tmp_path, settings
):
    settings.BUILD_HEARTBEAT_LIMIT = 5  # for the stale-build check this test runs (beat does in production)
    worker = start_worker(tmp_path, redis, recordings, BUILD_HEARTBEAT_LIMIT="5")
    try:
        build = queue_build(alice, "Look around for a long while", 1)
        wait_until(lambda: processes_running(LONG_COMMAND), timeout=60, what="the build's long command")
        # A long command is not a lost worker: the heartbeat goes on while it runs.
        time.sleep(settings.BUILD_HEARTBEAT_LIMIT + 1)
        assert pipeline.fail_stale_builds() == 0
        assert Build.objects.get(pk=build.pk).state == Build.State.RUNNING

        os.kill(worker.process.pid, signal.SIGKILL)  # the worker's main process, as the OOM killer would
        killed = time.monotonic()
        # The pool process running the build dies with it, and the sandbox with its parent.
        wait_until(lambda: not processes_running(LONG_COMMAND), timeout=15, what="the sandboxed command to stop")
        # The periodic check (every 30 s in production) notices once the heartbeat is older than the limit.
        wait_until(pipeline.fail_stale_builds, timeout=60, what="the stale-build check to fail the build", every=1)
        assert time.monotonic() - killed < 120
    finally:
        worker.stop()
    build.refresh_from_db()
    assert (build.state, build.error_code, build.charged) == (Build.State.FAILED, "worker_lost", False)
    assert "stopped answering" in build.error_message and "not charged" in build.error_message
    assert build.worker_host.startswith("w1@")
    events = list(build.events.order_by("seq"))
    # What happened before the kill is kept: Claude's words and the command it started.
    assert any(e.kind == "tool_call" and LONG_COMMAND in str(e.data) for e in events), [e.kind for e in events]
    statuses = [e.data["to"] for e in events if e.kind == "status"]
    assert statuses == ["queued", "preparing", "running", "failed"]
    assert_no_build_is_stuck()


def test_builds_survive_a_redis_restart_and_no_request_is_lost(
    redis, broker, recordings, alice, client, tmp_path, settings
):
    settings.QUEUED_RESEND_AFTER = 3
    worker = start_worker(tmp_path, redis, recordings, REPLAY_PACE="0.2")
    try:
        ideas = [
            "Show the episode count per show",
            "Add search of episodes by title",
            "Show the episode count per show",
        ]
        builds = [queue_build(alice, idea, n, "podcast-api") for n, idea in enumerate(ideas)]
        wait_until(lambda: Build.objects.get(pk=builds[0].pk).state == Build.State.RUNNING, timeout=60,
                   what="the first build to run")  # fmt: skip
        # Redis goes away with every message in it (no persistence): the two builds waiting in its queue,
        # and the running build's unacknowledged one.
        redis.stop()
        # Someone asks for a prototype meanwhile: they get their build's page, not an error.
        client.force_login(alice)
        started = time.monotonic()
        response = client.post("/new/", {"target": builds[0].revision.prototype.target_id, "title": "While down",
                                         "idea": "Add search of episodes by title", "visibility": "company"})  # fmt: skip
        assert response.status_code == 302, response.content[-2000:]
        assert time.monotonic() - started < 15
        asked = Build.objects.get(revision__prototype__title="While down")
        assert (asked.state, asked.task_id) == (Build.State.QUEUED, "")
        assert response["Location"] == asked.get_absolute_url()
        redis.start()  # the same port: the worker and the web process reconnect by themselves
        builds.append(asked)

        def all_final():
            # What beat does every 30 s in production: send again what stayed queued too long.
            pipeline.requeue_lost_builds()
            return not Build.objects.filter(pk__in=[b.pk for b in builds]).exclude(state__in=Build.FINAL_STATES)

        wait_until(all_final, timeout=150, what="every build to finish after the restart", every=1)
    finally:
        worker.stop()
    done = Build.objects.filter(pk__in=[b.pk for b in builds])
    assert [(b.state, b.error_code) for b in done] == [("succeeded", "")] * 4, [b.error_detail for b in done]
    for build in done:  # each ran once, however many times its task was sent
        assert [e.data["to"] for e in build.events.filter(kind="status")].count("preparing") == 1
    assert_no_build_is_stuck()


def test_with_the_model_service_down_a_build_fails_after_bounded_retries_and_is_not_charged(
    redis, broker, recordings, alice, tmp_path
):
    worker = start_worker(tmp_path, redis, recordings)
    try:
        build = queue_build(alice, "Add a sleep timer while the model service is down", 1)
        wait_until(lambda: Build.objects.get(pk=build.pk).is_final, timeout=60, what="the build to end")
    finally:
        worker.stop()
    build.refresh_from_db()
    assert (build.state, build.error_code, build.charged) == (Build.State.FAILED, "model_unavailable", False)
    assert "Claude's service was unavailable" in build.error_message and "not charged" in build.error_message
    assert build.error_detail == "HTTP 529 after 4 attempts"  # the recording had 6 errors: only 4 were asked
    busy = [e for e in build.events.filter(kind="log") if "service is busy" in e.data.get("text", "")]
    assert len(busy) == 3
    assert not ModelCall.objects.filter(build=build).exists() and build.cost == 0
    assert_no_build_is_stuck()


def test_a_queued_build_is_sent_again_only_after_a_while_and_only_while_queued(alice, settings, monkeypatch):
    from prototypes import tasks

    sent = []
    monkeypatch.setattr(tasks.run_build, "delay", lambda build_id: sent.append(build_id) or _Result())
    settings.QUEUED_RESEND_AFTER = 300
    target = import_example(settings.EXAMPLES_DIR / "targets" / "web-player", settings.TARGET_REPO_ROOT)
    fresh, old, started, cancelled = [
        trigger_build(Revision.objects.create(
            prototype=Prototype.objects.create(slug=f"p{n}", title="P", owner=alice, target=target),
            number=1, prompt="idea", author=alice,
        ))
        for n in range(4)
    ]  # fmt: skip
    sent.clear()
    long_ago = old.created_at.replace(year=old.created_at.year - 1)
    Build.objects.filter(pk__in=[old.pk, started.pk, cancelled.pk]).update(created_at=long_ago)
    Build.objects.get(pk=started.pk).move(Build.State.PREPARING)
    Build.objects.get(pk=cancelled.pk).move(Build.State.CANCELLED)

    assert pipeline.requeue_lost_builds() == 1
    assert sent == [old.pk]
    assert pipeline.requeue_lost_builds() == 0  # sent again just now: not again until the delay has passed
    assert sent == [old.pk]
    assert fresh.pk not in sent


class _Result:
    id = "resent-task"
