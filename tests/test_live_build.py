"""The live build feed over a websocket: backlog after `?after=seq`, then live events, no gaps, no
duplicates, and only for people who may see the build."""

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator

from prototypes.live import frame, group_name
from prototypes.models import Build, BuildEvent, Prototype, Revision, Target, append_events
from prototypes.routing import websocket_urlpatterns

pytestmark = pytest.mark.django_db(transaction=True)
APP = URLRouter(websocket_urlpatterns)


@pytest.fixture
def build(alice):
    target = Target.objects.create(slug="web", name="Web", git_url="/nowhere")
    prototype = Prototype.objects.create(slug="p", title="P", owner=alice, target=target, visibility="private")
    revision = Revision.objects.create(prototype=prototype, number=1, prompt="idea", author=alice)
    build = Build.objects.create(revision=revision)
    append_events(build.pk, [("step", {"text": f"step {n}"}) for n in range(1, 6)])  # seq 1..5
    return build


async def connect(build, user, after=None):
    path = f"/ws/builds/{build.pk}/" + (f"?after={after}" if after is not None else "")
    communicator = WebsocketCommunicator(APP, path)
    communicator.scope["user"] = user
    connected, code = await communicator.connect()
    return communicator, connected, code


def seqs(message):
    return [item["seq"] for item in message["items"]]


def test_it_sends_only_the_events_after_the_given_seq(build, alice, settings):
    settings.BUILD_EVENTS_POLL = 30

    async def scenario():
        communicator, connected, _ = await connect(build, alice, after=3)
        assert connected
        message = await communicator.receive_json_from()
        assert seqs(message) == [4, 5]
        assert message["last"] == 5
        assert message["items"][0] == {"seq": 4, "kind": "note", "text": "step 4"}
        assert message["build"]["state"] == "queued" and not message["build"]["final"]
        assert await communicator.receive_nothing(timeout=0.3)
        await communicator.disconnect()

    async_to_sync(scenario)()


def test_new_events_arrive_live_once_each(build, alice, settings):
    settings.BUILD_EVENTS_POLL = 0.2  # the periodic check runs too, and must not repeat anything

    async def scenario():
        communicator, _, _ = await connect(build, alice, after=5)
        assert await communicator.receive_nothing(timeout=0.3)
        await database_sync_to_async(append_events)(build.pk, [("agent_text", {"text": "Hello"})])
        message = await communicator.receive_json_from(timeout=3)
        assert seqs(message) == [6]
        assert message["items"][0]["kind"] == "say"
        await database_sync_to_async(lambda: Build.objects.get(pk=build.pk).move("preparing"))()
        message = await communicator.receive_json_from(timeout=3)
        assert seqs(message) == [7]
        assert message["build"]["state"] == "preparing"
        assert message["build"]["steps"][0] == {"key": "preparing", "label": "Getting the code", "status": "current"}
        assert await communicator.receive_nothing(timeout=0.6)
        await communicator.disconnect()

    async_to_sync(scenario)()


def test_a_gap_in_the_broadcasts_is_filled_from_the_event_table(build, alice, settings):
    settings.BUILD_EVENTS_POLL = 30

    async def scenario():
        communicator, _, _ = await connect(build, alice, after=5)
        # Events 6..8 are written, but only 8 is broadcast (6 and 7 were lost on the way).
        await database_sync_to_async(
            lambda: BuildEvent.objects.bulk_create(
                [BuildEvent(build=build, seq=n, kind="log", data={"text": f"log {n}"}) for n in (6, 7, 8)]
            )
        )()
        message = {"type": "build.events", "first": 8, "last": 8, "frame": frame([], 8, None)}
        await get_channel_layer().group_send(group_name(build.pk), message)
        message = await communicator.receive_json_from(timeout=3)
        assert seqs(message) == [6, 7, 8]
        assert await communicator.receive_nothing(timeout=0.3)
        await communicator.disconnect()

    async_to_sync(scenario)()


def test_without_broadcasts_the_periodic_check_delivers_in_order(build, alice, settings):
    settings.BUILD_EVENTS_POLL = 0.2

    async def scenario():
        communicator, _, _ = await connect(build, alice)
        assert seqs(await communicator.receive_json_from()) == [1, 2, 3, 4, 5]
        await database_sync_to_async(
            lambda: BuildEvent.objects.bulk_create(
                [BuildEvent(build=build, seq=6, kind="log", data={"text": "from another process"})]
            )
        )()
        message = await communicator.receive_json_from(timeout=3)
        assert seqs(message) == [6]
        await communicator.disconnect()

    async_to_sync(scenario)()


def test_a_reconnect_resumes_where_the_page_left_off(build, alice, settings):
    settings.BUILD_EVENTS_POLL = 30

    async def scenario():
        first, _, _ = await connect(build, alice, after=0)
        assert seqs(await first.receive_json_from()) == [1, 2, 3, 4, 5]
        await first.disconnect()
        await database_sync_to_async(append_events)(build.pk, [("log", {"text": "while away"})])
        again, _, _ = await connect(build, alice, after=5)
        assert seqs(await again.receive_json_from()) == [6]
        await again.disconnect()

    async_to_sync(scenario)()


def test_people_who_cannot_see_the_prototype_cannot_follow_its_build(build, carol):
    async def scenario():
        communicator, connected, code = await connect(build, carol)
        assert not connected
        assert code == 4404

    async_to_sync(scenario)()


def test_signed_out_visitors_cannot_follow_a_build(build):
    from django.contrib.auth.models import AnonymousUser

    async def scenario():
        _, connected, _ = await connect(build, AnonymousUser())
        assert not connected

    async_to_sync(scenario)()
