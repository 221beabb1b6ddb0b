"""Scale-out on a real redis-server: the Channels layer carries a worker's events to the build page in
another process, and builds queued through the Celery broker spread over two worker processes that
share the database."""

import asyncio
import shutil
import subprocess
import sys
from collections import Counter

import pytest
from asgiref.sync import async_to_sync
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings

from prototypes.builds import trigger_build
from prototypes.models import Build, Prototype, Revision, Target, append_events
from prototypes.routing import websocket_urlpatterns
from prototypes.targets import import_example
from store.settings import redis_channel_layer
from tests.services import ROOT, CeleryWorker, celery_broker, redis_server, shared_database_env, wait_until

pytestmark = [
    pytest.mark.django_db(transaction=True),  # other processes must see the rows: commit them
    pytest.mark.skipif(not shutil.which("redis-server"), reason="needs redis-server (scripts/system-deps.sh)"),
]


@pytest.fixture
def redis():
    with redis_server() as server:
        yield server


@pytest.fixture
def broker(redis):
    with celery_broker(redis.url) as app:
        yield app


def start_workers(tmp_path, names, **env):
    workers = [CeleryWorker(name, shared_database_env(**env), tmp_path / f"{name}.log") for name in names]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.wait_ready()
    return workers


def queue_build(owner, target_name: str, idea: str, n: int) -> Build:
    """A new prototype's first build, queued through the broker (what the "new prototype" page does,
    without its per-person rate limits)."""
    target = import_example(django_settings.EXAMPLES_DIR / "targets" / target_name, django_settings.TARGET_REPO_ROOT)
    prototype = Prototype.objects.create(slug=f"scale-{n}", title=idea, owner=owner, target=target)
    revision = Revision.objects.create(prototype=prototype, number=1, prompt=idea, author=owner)
    return trigger_build(revision)  # outside a transaction: sent at once


def test_a_workers_events_reach_the_build_page_through_the_redis_channel_layer(redis, alice, settings):
    settings.CHANNEL_LAYERS = {"default": redis_channel_layer(redis.url)}  # as with REDIS_URL
    settings.BUILD_EVENTS_POLL = 60  # the page's periodic check cannot deliver within this test: only Redis can
    target = Target.objects.create(slug="web", name="Web", git_url="/nowhere")
    prototype = Prototype.objects.create(slug="p", title="P", owner=alice, target=target)
    revision = Revision.objects.create(prototype=prototype, number=1, prompt="idea", author=alice)
    build = Build.objects.create(revision=revision)
    append_events(build.pk, [("status", {"from": None, "to": "queued"})])
    # Another process writes the events, as a worker on another machine does.
    worker = [sys.executable, "-c", "import django; django.setup()\n"
              "from prototypes.models import Build, append_events\n"
              f"append_events({build.pk}, [('step', {{'text': 'Getting the code'}})])\n"
              f"Build.objects.get(pk={build.pk}).move('preparing')\n"]  # fmt: skip
    env = shared_database_env(REDIS_URL=redis.url, DJANGO_SETTINGS_MODULE="store.settings")

    async def scenario():
        communicator = WebsocketCommunicator(URLRouter(websocket_urlpatterns), f"/ws/builds/{build.pk}/")
        communicator.scope["user"] = alice
        connected, _ = await communicator.connect()
        assert connected
        backlog = await communicator.receive_json_from(timeout=5)
        assert [item["seq"] for item in backlog["items"]] == [1]
        # The page waits longer than Redis blocks a read (5 s): its feed must survive being idle.
        await asyncio.sleep(6)
        done = await asyncio.to_thread(subprocess.run, worker, env=env, cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        received = []
        while len(received) < 2:
            message = await communicator.receive_json_from(timeout=10)
            received += [item["seq"] for item in message["items"]]
        assert received == [2, 3]
        assert message["build"]["state"] == "preparing"
        await communicator.disconnect()

    async_to_sync(scenario)()


def test_two_worker_processes_share_the_queued_builds(redis, broker, alice, tmp_path):
    workers = start_workers(tmp_path, ["w1", "w2"], REDIS_URL=redis.url, REPLAY_PACE="0.3")
    try:
        ideas = [
            ("web-player", "Add a dark mode toggle"),
            ("podcast-api", "Show the episode count per show"),
            ("web-player", "Show the total playlist duration"),
            ("podcast-api", "Add search of episodes by title"),
            ("web-player", "Add a dark mode toggle"),
            ("podcast-api", "Show the episode count per show"),
        ]
        builds = [queue_build(alice, target, idea, n) for n, (target, idea) in enumerate(ideas)]
        assert all(Build.objects.get(pk=b.pk).task_id for b in builds)  # sent through Redis

        def all_final():
            states = list(Build.objects.filter(pk__in=[b.pk for b in builds]).values_list("state", flat=True))
            return all(state in Build.FINAL_STATES for state in states)

        wait_until(all_final, timeout=150, what="six builds on two workers", every=0.5)
    finally:
        for worker in workers:
            worker.stop()
    done = Build.objects.filter(pk__in=[b.pk for b in builds])
    assert [(b.state, b.error_code) for b in done] == [("succeeded", "")] * 6, [b.error_detail for b in done]
    ran = Counter(b.worker_host.split("@")[0] for b in done)
    assert set(ran) == {"w1", "w2"}, ran  # both workers built some: the queue spreads over them
    assert sum(ran.values()) == 6
