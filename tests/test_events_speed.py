"""What keeps live events fast as builds grow and viewers multiply (issue 16; timings live in
bench/events.py): a broadcast's summary continues a kept fold instead of re-reading the build's history,
pages following a build share one subscription per web process, and a page forwards the worker's frames
from the first one on, without a trip to the event table."""

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator

from prototypes import progress
from prototypes.consumers import BuildConsumer
from prototypes.live import group_name
from prototypes.models import Build, Prototype, Revision, Target, append_events
from prototypes.routing import websocket_urlpatterns

APP = URLRouter(websocket_urlpatterns)


@pytest.fixture
def build(alice):
    target = Target.objects.create(slug="web", name="Web", git_url="/nowhere")
    prototype = Prototype.objects.create(slug="p", title="P", owner=alice, target=target, visibility="private")
    revision = Revision.objects.create(prototype=prototype, number=1, prompt="idea", author=alice)
    return Build.objects.create(revision=revision)


def call(turn: int) -> tuple[str, dict]:
    return ("model_call", {"turn": turn, "model": "claude", "input_tokens": 100, "output_tokens": 20,
                           "cache_write_tokens": 0, "cache_read_tokens": 300, "cost": "0.0100", "latency_ms": 5,
                           "stop_reason": "tool_use", "price_version": "2025-01"})  # fmt: skip


# A build's life in events, flush by flush, as the worker writes them.
FLUSHES = [
    [("status", {"from": "queued", "to": "preparing"}), ("step", {"step": "workspace", "text": "Getting the code"})],
    [("step", {"step": "setup", "text": "npm ci"}), ("log", {"text": "added 12 packages"})],
    [("step", {"step": "smoke", "text": "Opening the app"}), ("status", {"from": "preparing", "to": "running"})],
    [call(1), ("agent_text", {"text": "Reading"}), ("tool_call", {"id": "a", "tool": "run", "command": "ls"})],
    [("tool_result", {"id": "a", "ok": True, "output": "src"}), call(2), call(3)],
    [("status", {"from": "running", "to": "verifying"}), ("step", {"step": "verify", "text": "Tests"})],
    [("verify", {"passed": True, "headline": "All passed", "steps": [], "smoke": {"passed": True, "pages": []}})],
    [("status", {"from": "verifying", "to": "packaging"}), ("step", {"step": "package", "text": "Packaging"})],
]


@pytest.mark.django_db
def test_a_broadcast_summary_matches_the_whole_history_and_reads_no_events(build, django_assert_num_queries):
    for flush, items in enumerate(FLUSHES):
        created = append_events(build.pk, items)
        last = created[-1].seq
        # The first flush reads the (short) history; each later one only the build row: its events are
        # handed over, the rest is kept.
        with django_assert_num_queries(2 if flush == 0 else 1):
            kept = progress.summary_as_of(build.pk, last, created)
        whole = progress.summary(build, list(build.events.filter(seq__lte=last).order_by("seq")))
        assert kept == whole
    assert kept["usage"]["turns"] == 3 and [s["status"] for s in kept["steps"]][-2:] == ["current", "todo"]


@pytest.mark.django_db
def test_a_summary_as_of_any_point_is_right_whatever_was_asked_before(build):
    seqs = [append_events(build.pk, items)[-1].seq for items in FLUSHES]
    progress.summary_as_of(build.pk, seqs[-1])  # the newest first: the kept fold is ahead of the next asks
    for last in seqs:  # a page catching up from the start asks for older points, then newer ones
        whole = progress.summary(build, list(build.events.filter(seq__lte=last).order_by("seq")))
        assert progress.summary_as_of(build.pk, last) == whole


@pytest.mark.django_db
def test_a_build_that_reuses_an_id_does_not_inherit_the_kept_summary(build, alice):
    created = append_events(build.pk, [call(1), call(2)])
    assert progress.summary_as_of(build.pk, created[-1].seq, created)["usage"]["turns"] == 2
    pk, revision = build.pk, build.revision
    build.delete()  # SQLite hands the highest id out again; a test database rolls back the same way
    again = Build.objects.create(pk=pk, revision=revision)
    created = append_events(again.pk, [("log", {"text": "hello"}), call(1)])
    assert progress.summary_as_of(again.pk, created[-1].seq)["usage"]["turns"] == 1


async def connect(build, user, after):
    communicator = WebsocketCommunicator(APP, f"/ws/builds/{build.pk}/?after={after}")
    communicator.scope["user"] = user
    connected, _ = await communicator.connect()
    assert connected
    return communicator


@pytest.mark.django_db(transaction=True)
def test_pages_following_a_build_in_one_process_share_one_subscription(build, alice, settings):
    settings.BUILD_EVENTS_POLL = 30  # only the broadcasts here
    layer = get_channel_layer()

    async def scenario():
        pages = [await connect(build, alice, after=0) for _ in range(3)]  # three tabs, or three people
        assert len(layer.groups[group_name(build.pk)]) == 1  # one channel for the process, not one per page
        created = await database_sync_to_async(append_events)(build.pk, [("agent_text", {"text": "Hello"})])
        for page in pages:
            message = await page.receive_json_from(timeout=3)
            assert [item["seq"] for item in message["items"]] == [created[0].seq]
        await pages[0].disconnect()
        assert len(layer.groups[group_name(build.pk)]) == 1  # the others still follow
        for page in pages[1:]:
            await page.disconnect()
        assert not layer.groups.get(group_name(build.pk))

    async_to_sync(scenario)()


@pytest.mark.django_db(transaction=True)
def test_the_first_broadcast_after_opening_is_forwarded_without_reading_the_table(build, alice, monkeypatch, settings):
    """A page opened up to date forwards the worker's ready-made frame (it carries the build's summary)
    rather than catching up from the table on the first event, as every page did at once before."""
    settings.BUILD_EVENTS_POLL = 30
    append_events(build.pk, [("log", {"text": "before the page opened"})])
    reads = []
    events_after = BuildConsumer.__dict__["_events_after"]

    async def counted(self, seq):
        reads.append(seq)
        return await events_after.__get__(self, BuildConsumer)(seq)

    monkeypatch.setattr(BuildConsumer, "_events_after", counted)

    async def scenario():
        page = await connect(build, alice, after=1)
        await database_sync_to_async(append_events)(build.pk, [("agent_text", {"text": "Hello"})])
        message = await page.receive_json_from(timeout=3)
        assert [item["seq"] for item in message["items"]] == [2] and message["build"]["state"] == "queued"
        await page.disconnect()

    async_to_sync(scenario)()
    assert reads == [1]  # once on opening (nothing new), never for the broadcast
